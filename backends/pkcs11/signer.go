//go:build cgo

package pkcs11

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/pkcs11"

	"github.com/ib1/provenanced/backends"
	"github.com/ib1/provenanced/conf"
)

// Name is the backend's name in the config.
const Name = "pkcs11"

func init() { backends.Register(Name, backends.Backend{Open: Open, Generate: Generate, URI: true}) }

// retryInterval is how often a key that cannot sign tries its token again, whoever asks
// (a request, the readiness check, which Ready starts for a key that cannot sign).
const retryInterval = time.Second

// Signer is a P-256 private key on a PKCS#11 token.
type Signer struct {
	cfg  *config
	loc  string
	mod  *module
	pub  *ecdsa.PublicKey // fixed at Open: a key that comes back must be this key
	pool *pool

	cur    atomic.Pointer[conn] // nil while the key cannot sign
	lastOK atomic.Int64         // UnixNano of the last good signature
	closed atomic.Bool

	// connecting is held by whoever (re)connects, so that a burst of failing requests
	// makes one attempt, not one each.
	connecting chan struct{}
	// anchorMu serialises the anchor session's users (signatures on it when the token
	// has no other session to give, closing).
	anchorMu sync.Mutex

	// stuck counts signatures whose caller gave up at its deadline while the call was
	// still inside the module: while any is, the key is degraded (not ready, and new
	// signatures fail at once rather than queue behind a hung token).
	stuck atomic.Int64
	// checking is set while a readiness check runs: at most one is in flight.
	checking atomic.Bool
	stop     chan struct{} // closed by Close: ends the readiness checker
	waitObs  atomic.Pointer[func(time.Duration)]

	mu      sync.Mutex
	cause   error     // what stopped the key signing
	downErr error     // why it cannot sign now: cause, and what reconnecting ran into
	lastTry time.Time // of the last attempt to connect
	epoch   uint64
	stale   []*conn // replaced connections whose anchor sessions are still open
	guard   pinGuard
}

// conn is one working connection to the key: its token's slot, the key's handle, and the
// logged-in anchor session. It does not change; a reconnection makes a new one.
type conn struct {
	epoch      uint64
	gen        uint64 // module generation
	slot       uint
	token      string
	key        pkcs11.ObjectHandle
	anchor     *session
	alwaysAuth bool
	pin        string // kept only for a key that wants CKU_CONTEXT_SPECIFIC at each signature
}

// Open finds the key that spec describes, logs in once, checks that the key is EC P-256
// and that it signs what its public key verifies.
func Open(ctx context.Context, spec *conf.Key) (backends.Signer, error) {
	cfg, err := parseConfig(spec)
	if err != nil {
		return nil, err
	}
	if err := checkModule(spec, cfg); err != nil {
		return nil, err
	}
	m, err := openModule(cfg.module)
	if err != nil {
		return nil, spec.Errorf(cfg.field("module"), "%v", err)
	}
	s := &Signer{cfg: cfg, loc: cfg.location(), mod: m, pool: newPool(cfg.maxSessions - 1), connecting: make(chan struct{}, 1), stop: make(chan struct{})}
	s.guard.dir = cfg.stateDir
	c, _, err := s.connect(ctx)
	if err != nil {
		m.release(nil)
		var ce *connectError
		if errors.As(err, &ce) && ce.field != "" {
			return nil, spec.Errorf(cfg.field(ce.field), "%s", ce.Error())
		}
		return nil, fmt.Errorf("keys.%s: %s: %w", spec.Name, s.loc, err)
	}
	s.cur.Store(c)
	m.addUser(s)
	go s.watch()
	return s, nil
}

// Public returns the key's *ecdsa.PublicKey.
func (s *Signer) Public() crypto.PublicKey { return s.pub }

// Location says where the key is, for messages.
func (s *Signer) Location() string { return s.loc }

// Concurrency is the number of signing sessions (max_sessions less the anchor): a batch
// spread over more workers than that would only queue for sessions.
func (s *Signer) Concurrency() int { return s.cfg.maxSessions - 1 }

// Sign signs a SHA-256 digest; opts must say SHA-256 (or be nil).
func (s *Signer) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if opts != nil && opts.HashFunc() != crypto.SHA256 {
		return nil, fmt.Errorf("%w: %s signs SHA-256 digests only, not %v", backends.ErrInvalidDigest, s.loc, opts.HashFunc())
	}
	return s.SignContext(context.Background(), digest)
}

var ecdsaMechanism = []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_ECDSA, nil)}

// SignContext signs a 32-byte digest and returns a DER signature.
//
// A PKCS#11 call cannot be interrupted: a token that hangs (a wedged device, a TPM whose
// resource manager stopped answering) holds the calling thread for as long as it likes.
// So the work runs in a goroutine of its own and the caller waits no longer than ctx
// allows: at the deadline it gets backends.ErrUnavailable, and if the call is still
// inside the module the key is marked degraded until the call returns.
func (s *Signer) SignContext(ctx context.Context, digest []byte) ([]byte, error) {
	// CKM_ECDSA signs whatever it is given, and SoftHSM quietly signs the first 32 bytes
	// of a longer input: the length is checked here, whoever the caller is.
	if len(digest) != sha256.Size {
		return nil, fmt.Errorf("%w: a SHA-256 digest is 32 bytes, got %d", backends.ErrInvalidDigest, len(digest))
	}
	if err := s.hung(); err != nil {
		return nil, err
	}
	type result struct {
		sig []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		sig, err := s.signWithin(ctx, digest)
		done <- result{sig, err}
	}()
	select {
	case r := <-done:
		return r.sig, r.err
	case <-ctx.Done():
	}
	// Waiting for a session, or for another request's reconnection, ends with ctx at
	// once; a call inside the module does not.
	select {
	case r := <-done:
		return r.sig, r.err
	case <-time.After(abandonGrace):
	}
	s.stuck.Add(1)
	go func() {
		<-done
		s.stuck.Add(-1)
	}()
	return nil, s.unavailable(fmt.Errorf("the token did not answer within the request's deadline (%w)", ctx.Err()))
}

// closeWait bounds Close's wait for a reconnection in progress.
const closeWait = 5 * time.Second

// abandonGrace is how long a caller whose deadline passed waits for its signature to
// come back before it counts the call as stuck in the module.
const abandonGrace = 20 * time.Millisecond

// hung is the error of a key with calls stuck in its module, or nil.
func (s *Signer) hung() error {
	if n := s.stuck.Load(); n > 0 {
		return s.unavailable(fmt.Errorf("%d call(s) into the PKCS#11 module have not returned since their requests gave up; the token, or the way to it, is hung", n))
	}
	return nil
}

// signWithin is SignContext's work, run in a goroutine of its own. It waits for a session
// no longer than ctx allows. When the session or the key's handle breaks, it reconnects
// (once, shared with any other request that saw the same break) and tries again once;
// while the token cannot be reached it fails at once with backends.ErrUnavailable.
//
// It stays one loop: its branches are the states of one retry (no connection, the anchor
// session only, no session, a broken or a busy session), and the counters they share
// bound it; in pieces, those counters would travel between functions.
func (s *Signer) signWithin(ctx context.Context, digest []byte) ([]byte, error) {
	var failure error
	busy := 0
	for tries, reconnects := 0, 0; tries < 2 && reconnects < 3; {
		c := s.cur.Load()
		if c == nil {
			if s.closed.Load() {
				return nil, fmt.Errorf("%s: the key is closed", s.loc)
			}
			reconnects++
			if err := s.recover(ctx); err != nil {
				return nil, err
			}
			continue
		}
		sess, c, err := s.session(ctx, c)
		if errors.Is(err, errUseAnchor) {
			raw, err := s.signOnAnchor(c, digest)
			if err == nil {
				s.lastOK.Store(time.Now().UnixNano())
				return derSignature(raw)
			}
			if !brokenSession(err) {
				return nil, s.signError(err)
			}
			failure = fmt.Errorf("C_Sign: %w", err)
			s.markDown(c, failure)
			tries++
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("%s: waiting for one of its %d signing sessions: %w", s.loc, s.cfg.maxSessions-1, err)
			}
			failure = fmt.Errorf("C_OpenSession: %w", err)
			s.markDown(c, failure)
			tries++
			continue
		}
		raw, err := s.sign(sess, c, digest[:])
		if err == nil {
			s.pool.put(sess)
			s.lastOK.Store(time.Now().UnixNano())
			return derSignature(raw)
		}
		if !brokenSession(err) {
			s.pool.put(sess)
			return nil, s.signError(err)
		}
		s.discard(sess, err)
		if busySession(err) && busy < 3 {
			// This session is in a state it should not be in; the token is fine.
			busy++
			continue
		}
		failure = fmt.Errorf("C_Sign: %w", err)
		s.markDown(c, failure)
		tries++
	}
	if failure == nil {
		failure = s.lastError()
	}
	return nil, s.unavailable(failure)
}

// errUseAnchor: the token allows no session beyond the anchor; sign on that.
var errUseAnchor = errors.New("the token has no session to spare")

// signOnAnchor signs on the key's logged-in anchor session, one signature at a time.
func (s *Signer) signOnAnchor(c *conn, digest []byte) ([]byte, error) {
	m := s.mod
	s.anchorMu.Lock()
	defer s.anchorMu.Unlock()
	m.mu.RLock()
	defer m.mu.RUnlock()
	if c.gen != m.gen {
		return nil, pkcs11.Error(pkcs11.CKR_SESSION_HANDLE_INVALID)
	}
	return signRaw(m.p, c.anchor.h, c, digest)
}

// signError is the error of a signature the token refused while the key stays usable.
func (s *Signer) signError(err error) error {
	if isCode(err, pkcs11.CKR_MECHANISM_INVALID, pkcs11.CKR_MECHANISM_PARAM_INVALID) {
		return fmt.Errorf("%s: the token cannot make or use P-256 ECDSA keys (C_SignInit with CKM_ECDSA: %w); provenanced needs a token with EC P-256 support", s.loc, err)
	}
	return fmt.Errorf("%s: C_Sign: %w", s.loc, err)
}

// sign runs one CKM_ECDSA signature on sess and returns r||s.
func (s *Signer) sign(sess *session, c *conn, digest []byte) ([]byte, error) {
	m := s.mod
	m.mu.RLock()
	defer m.mu.RUnlock()
	if sess.gen != m.gen {
		return nil, pkcs11.Error(pkcs11.CKR_SESSION_HANDLE_INVALID)
	}
	return signRaw(m.p, sess.h, c, digest)
}

func signRaw(p cryptoki, sh pkcs11.SessionHandle, c *conn, digest []byte) ([]byte, error) {
	if err := p.SignInit(sh, ecdsaMechanism, c.key); err != nil {
		return nil, err
	}
	if c.alwaysAuth {
		if err := p.Login(sh, pkcs11.CKU_CONTEXT_SPECIFIC, c.pin); err != nil {
			// The operation is still active; the session is not usable as it is.
			return nil, fmt.Errorf("C_Login(CKU_CONTEXT_SPECIFIC): %w", err)
		}
	}
	return p.Sign(sh, digest)
}

// session borrows a session of the current connection, opening one if the pool has
// room. Sessions of an older connection are closed on the way.
func (s *Signer) session(ctx context.Context, c *conn) (*session, *conn, error) {
	m := s.mod
	start := time.Now()
	defer func() {
		if f := s.waitObs.Load(); f != nil {
			(*f)(time.Since(start))
		}
	}()
	full := false // the token has no session to spare: wait for one of ours
	for {
		var sess *session
		var err error
		if full {
			sess, err = s.pool.getIdle(ctx)
		} else {
			sess, err = s.pool.get(ctx)
		}
		if err != nil {
			return nil, c, err
		}
		if cur := s.cur.Load(); cur != nil {
			c = cur
		}
		if sess == nil {
			m.mu.RLock()
			if c.gen != m.gen {
				m.mu.RUnlock()
				s.pool.drop()
				return nil, c, pkcs11.Error(pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED)
			}
			sess, err = m.openSession(c.slot, 0, c.epoch)
			m.mu.RUnlock()
			if err != nil {
				s.pool.drop()
				// The token's (or the library's) limit on sessions, below max_sessions: not
				// a lost token. Wait for a session this key has open; with none open, the
				// anchor session signs.
				if isCode(err, pkcs11.CKR_SESSION_COUNT) {
					if s.pool.empty() {
						return nil, c, errUseAnchor
					}
					full = true
					continue
				}
				return nil, c, err
			}
			return sess, c, nil
		}
		if sess.epoch == c.epoch {
			return sess, c, nil
		}
		m.mu.RLock()
		m.closeSession(sess)
		m.mu.RUnlock()
		s.pool.drop()
	}
}

// discard closes a session that failed; one the library says is gone is only forgotten.
func (s *Signer) discard(sess *session, err error) {
	m := s.mod
	m.mu.RLock()
	if isCode(err, pkcs11.CKR_SESSION_HANDLE_INVALID, pkcs11.CKR_SESSION_CLOSED) {
		m.forgetSession(sess)
	} else {
		m.closeSession(sess)
	}
	m.mu.RUnlock()
	s.pool.drop()
}

// brokenSession reports whether err means the session, the key's handle or the token is
// no longer good, rather than that this one request was refused.
func brokenSession(err error) bool {
	var e pkcs11.Error
	if !errors.As(err, &e) {
		return true
	}
	switch uint(e) {
	case pkcs11.CKR_DATA_INVALID, pkcs11.CKR_DATA_LEN_RANGE, pkcs11.CKR_ARGUMENTS_BAD,
		pkcs11.CKR_KEY_FUNCTION_NOT_PERMITTED, pkcs11.CKR_MECHANISM_INVALID, pkcs11.CKR_KEY_TYPE_INCONSISTENT:
		return false
	}
	return true
}

// busySession reports whether err is about one session's state (an operation left
// active, the library's session table full) rather than the token: another session will
// do.
func busySession(err error) bool {
	return isCode(err, pkcs11.CKR_OPERATION_ACTIVE, pkcs11.CKR_SESSION_COUNT)
}

// markDown records that c stopped working, once, however many requests saw it.
func (s *Signer) markDown(c *conn, err error) {
	if c == nil || !s.cur.CompareAndSwap(c, nil) {
		return
	}
	s.mu.Lock()
	s.cause, s.downErr = err, err
	s.lastTry = time.Time{} // the first attempt to reconnect is not held back
	s.stale = append(s.stale, c)
	s.mu.Unlock()
}

func (s *Signer) lastError() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.downErr == nil {
		return errors.New("the key cannot sign")
	}
	return s.downErr
}

func (s *Signer) unavailable(err error) error {
	return fmt.Errorf("%w: %s: %w", backends.ErrUnavailable, s.loc, err)
}

// recover connects the key again, at most once per retryInterval whoever asks. If the
// token cannot be found as it is, the library is re-initialised first: SoftHSM, and HSM
// clients that lost their connection, see a token that came back only then.
func (s *Signer) recover(ctx context.Context) error {
	select {
	case s.connecting <- struct{}{}:
	case <-ctx.Done():
		return s.unavailable(ctx.Err())
	}
	defer func() { <-s.connecting }()
	if s.cur.Load() != nil {
		return nil
	}
	if s.closed.Load() {
		return fmt.Errorf("%s: the key is closed", s.loc)
	}
	s.mu.Lock()
	if !s.lastTry.IsZero() && time.Since(s.lastTry) < retryInterval {
		err := s.downErr
		s.mu.Unlock()
		return s.unavailable(err)
	}
	s.lastTry = time.Now()
	s.mu.Unlock()

	c, gen, err := s.connect(ctx)
	var ce *connectError
	if err != nil && !(errors.As(err, &ce) && ce.final) {
		if rerr := s.mod.reinit(ctx, s, gen); rerr == nil {
			c, _, err = s.connect(ctx)
		} else if !errors.Is(rerr, errReinitPaced) {
			err = fmt.Errorf("%w (and re-initialising the library failed: %v)", err, rerr)
		}
	}
	if err != nil {
		s.mu.Lock()
		if s.cause != nil {
			err = fmt.Errorf("%w; reconnecting: %w", s.cause, err)
		}
		s.downErr = err
		s.mu.Unlock()
		return s.unavailable(err)
	}
	s.mu.Lock()
	s.cause, s.downErr = nil, nil
	s.mu.Unlock()
	s.closeStale()
	s.cur.Store(c)
	return nil
}

// closeStale closes what replaced connections left open: their anchors and idle
// sessions. Sessions in use are closed when they come back.
func (s *Signer) closeStale() {
	s.mu.Lock()
	stale := s.stale
	s.stale = nil
	s.mu.Unlock()
	m := s.mod
	s.anchorMu.Lock()
	m.mu.RLock()
	for _, c := range stale {
		m.closeSession(c.anchor)
	}
	for _, sess := range s.pool.takeIdle() {
		m.closeSession(sess)
	}
	m.mu.RUnlock()
	s.anchorMu.Unlock()
}

// connect finds the token and the key, opens and logs in the anchor session, and checks
// with a signature that the key is the one it was (or, the first time, that its private
// and public halves match). It returns the generation it ran in.
//
// It stays whole: it holds the module's read lock throughout, and the anchor session it
// opens must be closed on any later step's failure, which one deferred check does.
func (s *Signer) connect(ctx context.Context) (*conn, uint64, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	m := s.mod
	m.mu.RLock()
	defer m.mu.RUnlock()
	gen := m.gen
	cfg := s.cfg
	slot, ti, err := cfg.findToken(m.p)
	if err != nil {
		return nil, gen, err
	}
	s.mu.Lock()
	s.epoch++
	epoch := s.epoch
	s.mu.Unlock()
	anchor, err := m.openSession(slot, 0, epoch)
	if err != nil {
		return nil, gen, errorf("", false, err, "C_OpenSession on token %q failed", ti.Label)
	}
	ok := false
	defer func() {
		if !ok {
			m.closeSession(anchor)
		}
	}()
	pin, err := s.login(m.p, anchor.h, ti)
	if err != nil {
		return nil, gen, err
	}
	k, err := cfg.findKey(m.p, anchor.h, ti.Label, pin != "")
	if err != nil {
		return nil, gen, err
	}
	pub, err := cfg.publicKey(m.p, anchor.h, k, ti.Label)
	if err != nil {
		return nil, gen, err
	}
	if s.pub != nil && !s.pub.Equal(pub) {
		return nil, gen, errorf(cfg.keyField(), true, nil, "the key with %s on token %q is no longer the key provenanced started with: its public key differs. Restart provenanced to use the new key (with a certificate issued for it)", cfg.keyWanted(), ti.Label)
	}
	c := &conn{epoch: epoch, gen: gen, slot: slot, token: ti.Label, key: k.handle, anchor: anchor, alwaysAuth: k.alwaysAuth}
	if k.alwaysAuth {
		c.pin = pin
	}
	raw, err := signRaw(m.p, anchor.h, c, probeDigest[:])
	if isCode(err, pkcs11.CKR_MECHANISM_INVALID, pkcs11.CKR_MECHANISM_PARAM_INVALID) {
		return nil, gen, errorf(cfg.keyField(), true, err, "token %q cannot make or use P-256 ECDSA keys (C_SignInit with CKM_ECDSA refused); provenanced needs a token with EC P-256 support", ti.Label)
	}
	if err != nil {
		return nil, gen, errorf("", false, err, "a test signature with the key with %s on token %q failed", cfg.keyWanted(), ti.Label)
	}
	der, err := derSignature(raw)
	if err != nil || !ecdsa.VerifyASN1(pub, probeDigest[:], der) {
		return nil, gen, errorf(cfg.keyField(), true, err, "the private key with %s on token %q does not match its public key object: a test signature does not verify", cfg.keyWanted(), ti.Label)
	}
	if s.pub == nil {
		s.pub = pub
	}
	ok = true
	return c, gen, nil
}

// login logs the anchor session in with the PIN, reading it from its source each time so
// that a corrected PIN file is picked up. A PIN the token rejected is never offered again:
// tokens lock after a few wrong PINs, and a daemon that retried on its own would lock it.
func (s *Signer) login(p cryptoki, sh pkcs11.SessionHandle, ti pkcs11.TokenInfo) (string, error) {
	src := s.cfg.pin
	if !src.set() {
		if ti.Flags&pkcs11.CKF_LOGIN_REQUIRED != 0 {
			return "", errorf("pin", true, nil, "token %q requires a login; set pin = \"env:NAME\" or \"file:PATH\"", ti.Label)
		}
		return "", nil
	}
	pin, err := src.read()
	if err != nil {
		return "", errorf("pin", true, nil, "%v", err)
	}
	id := tokenID(s.cfg.module, ti)
	if refused, at := s.guard.refused(id, pin); refused {
		return "", errorf("pin", true, nil, "token %q rejected the PIN from %s before (at %s), and provenanced does not offer a rejected PIN again, so as not to lock the token; put the right PIN there (it is read again at the next attempt)", ti.Label, src, at.Format(time.RFC3339))
	}
	if ti.Flags&pkcs11.CKF_USER_PIN_LOCKED != 0 {
		return "", errorf("pin", true, nil, "token %q has locked its user PIN after too many wrong ones; %s", ti.Label, s.unlockAdvice())
	}
	if ti.Flags&pkcs11.CKF_USER_PIN_FINAL_TRY != 0 {
		return "", errorf("pin", true, nil, "token %q will lock its user PIN at the next wrong one, so provenanced will not try; check the PIN in %s by hand (a good login, such as pkcs11-tool --login --list-objects, resets the count)", ti.Label, src)
	}
	// A wrong PIN since the last good login: perhaps this daemon's own, before a restart.
	// A service manager that restarts a daemon whose PIN is wrong would lock the token
	// one restart at a time; this stops it after the first. (Tokens that never set the
	// flag, tpm2-pkcs11 among them, have the guard's record instead.)
	if ti.Flags&pkcs11.CKF_USER_PIN_COUNT_LOW != 0 {
		return "", errorf("pin", true, nil, "token %q has seen a wrong user PIN since its last good login, so provenanced will not try another; check the PIN in %s by hand (a good login, such as pkcs11-tool --login --list-objects, resets the count)", ti.Label, src)
	}
	err = p.Login(sh, pkcs11.CKU_USER, pin)
	switch {
	case err == nil, isCode(err, pkcs11.CKR_USER_ALREADY_LOGGED_IN):
		s.guard.forget(id)
		return pin, nil
	case isCode(err, pkcs11.CKR_PIN_INCORRECT, pkcs11.CKR_PIN_INVALID, pkcs11.CKR_PIN_LEN_RANGE):
		kept := "it is recorded (as a salted hash) in " + s.guard.dir + ", so a restart will not offer it either"
		if werr := s.guard.remember(id, ti.Label, pin); werr != nil {
			kept = "this process will not offer it again, but it could not be recorded for a restart (" + werr.Error() + "); set state_dir to a folder provenanced may write"
		}
		return "", errorf("pin", true, err, "token %q rejected the PIN from %s; provenanced tried once and will not try that PIN again, so as not to lock the token: %s", ti.Label, src, kept)
	case isCode(err, pkcs11.CKR_PIN_LOCKED):
		return "", errorf("pin", true, err, "token %q has locked its user PIN; %s", ti.Label, s.unlockAdvice())
	case isCode(err, pkcs11.CKR_PIN_EXPIRED):
		return "", errorf("pin", true, err, "the user PIN of token %q has expired; set a new one (pkcs11-tool --change-pin)", ti.Label)
	}
	return "", errorf("", false, err, "C_Login on token %q failed", ti.Label)
}

// unlockAdvice says how to get out of a PIN lockout on this kind of token.
func (s *Signer) unlockAdvice() string {
	if s.mod != nil && s.mod.tpm {
		// The TPM's dictionary-attack lockout covers every authorisation, the SO PIN's
		// included; it ends by itself, or at once with the lockout hierarchy's password.
		return "the TPM is in dictionary-attack lockout, which the SO PIN cannot undo: wait for its recovery time (tpm2_getcap properties-variable shows TPM2_PT_LOCKOUT_RECOVERY) or clear it with tpm2_dictionarylockout --clear-lockout (and the lockout password, if one is set); fix the PIN first. The key comes back by itself, without a restart"
	}
	return "unlock it with the SO PIN (for example pkcs11-tool --init-pin --login --login-type so), then start provenanced again"
}

// Ready reports, from the key's state and without calling the module, whether the key
// can sign now: it never waits on a token that hangs. The state is kept fresh by the
// readiness checker (see watch) and by every signature; a key that cannot sign has a
// check started now, so that it comes back soon after its token does.
func (s *Signer) Ready(ctx context.Context) error {
	if s.closed.Load() {
		return fmt.Errorf("%s: the key is closed", s.loc)
	}
	if err := s.hung(); err != nil {
		return err
	}
	if s.cur.Load() == nil {
		s.check()
		return s.unavailable(s.lastError())
	}
	return nil
}

// watch runs the readiness check every ready_check_interval until Close.
func (s *Signer) watch() {
	t := time.NewTicker(s.cfg.readyEvery)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.check()
		}
	}
}

// checkTimeout bounds one readiness check: a token that takes longer is hung.
func (s *Signer) checkTimeout() time.Duration { return min(s.cfg.readyEvery, 5*time.Second) }

// check starts a readiness check unless one is running. A key that cannot sign tries to
// reconnect; a key that has not signed within the interval makes a test signature, since
// a token's and session's information may come from the library's cache (tpm2-pkcs11's
// does) and only a signature reaches the device. Either way the work is bounded like a
// request's: a hung module leaves the key degraded, not the checker stuck.
func (s *Signer) check() {
	if s.closed.Load() || !s.checking.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer s.checking.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), s.checkTimeout())
		defer cancel()
		if s.hung() != nil {
			return
		}
		if s.cur.Load() == nil {
			s.bounded(ctx, func() { s.recover(ctx) })
			return
		}
		if time.Since(time.Unix(0, s.lastOK.Load())) < s.cfg.readyEvery {
			return
		}
		// Failures mark the key down inside SignContext; a deadline marks it degraded.
		s.SignContext(ctx, probeDigest[:])
	}()
}

// bounded runs f, waiting no longer than ctx allows; if f is still running then, the key
// counts it as stuck until it returns.
func (s *Signer) bounded(ctx context.Context, f func()) {
	done := make(chan struct{})
	go func() { f(); close(done) }()
	select {
	case <-done:
		return
	case <-ctx.Done():
	}
	select {
	case <-done:
		return
	case <-time.After(abandonGrace):
	}
	s.stuck.Add(1)
	go func() {
		<-done
		s.stuck.Add(-1)
	}()
}

// ObserveSessionWait has the key report how long each signature waited for a session.
func (s *Signer) ObserveSessionWait(f func(time.Duration)) { s.waitObs.Store(&f) }

// Close closes the key's sessions and lets go of the library (the last key of a library
// finalizes it).
func (s *Signer) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return nil
	}
	close(s.stop)
	// A reconnection in progress finishes first: once the library is let go, no call may
	// reach it. (Signatures check the generation, which release changes.) A module that
	// hangs would hold Close, and the daemon's shutdown, for ever: past closeWait the
	// sessions and the library are left to the process's exit.
	select {
	case s.connecting <- struct{}{}:
	case <-time.After(closeWait):
		return fmt.Errorf("%s: the PKCS#11 module did not return within %v; its sessions are left open", s.loc, closeWait)
	}
	defer func() { <-s.connecting }()
	if s.stuck.Load() > 0 {
		return fmt.Errorf("%s: calls into the PKCS#11 module have not returned; its sessions are left open", s.loc)
	}
	if c := s.cur.Swap(nil); c != nil {
		s.mu.Lock()
		s.stale = append(s.stale, c)
		s.mu.Unlock()
	}
	s.closeStale()
	s.mod.release(s)
	return nil
}
