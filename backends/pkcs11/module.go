//go:build cgo

package pkcs11

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/miekg/pkcs11"
)

// cryptoki is the part of the PKCS#11 API this backend calls. *pkcs11.Ctx implements it;
// tests wrap it to produce the faults a real token cannot be made to produce on demand
// (CKR_DEVICE_REMOVED in the middle of a signature, a call that hangs).
type cryptoki interface {
	Initialize(...pkcs11.InitializeOption) error
	Finalize() error
	GetInfo() (pkcs11.Info, error)
	GetSlotList(tokenPresent bool) ([]uint, error)
	GetTokenInfo(slotID uint) (pkcs11.TokenInfo, error)
	OpenSession(slotID uint, flags uint) (pkcs11.SessionHandle, error)
	CloseSession(sh pkcs11.SessionHandle) error
	GetSessionInfo(sh pkcs11.SessionHandle) (pkcs11.SessionInfo, error)
	Login(sh pkcs11.SessionHandle, userType uint, pin string) error
	FindObjectsInit(sh pkcs11.SessionHandle, temp []*pkcs11.Attribute) error
	FindObjects(sh pkcs11.SessionHandle, max int) ([]pkcs11.ObjectHandle, bool, error)
	FindObjectsFinal(sh pkcs11.SessionHandle) error
	GetAttributeValue(sh pkcs11.SessionHandle, o pkcs11.ObjectHandle, a []*pkcs11.Attribute) ([]*pkcs11.Attribute, error)
	SignInit(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, o pkcs11.ObjectHandle) error
	Sign(sh pkcs11.SessionHandle, message []byte) ([]byte, error)
	GenerateKeyPair(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, public, private []*pkcs11.Attribute) (pkcs11.ObjectHandle, pkcs11.ObjectHandle, error)
	DestroyObject(sh pkcs11.SessionHandle, oh pkcs11.ObjectHandle) error
}

// wrapModule, when set (by tests), wraps every module as it is loaded.
var wrapModule func(path string, p cryptoki) cryptoki

// A module is one loaded PKCS#11 library, shared by every key that names the same path:
// a library is initialised once per process, and C_Finalize ends it for everyone.
//
// Rules this type keeps, learnt from the specification and from SoftHSM:
//   - No call may run while the library is finalized and initialised again, so every
//     call holds mu for reading and reinit holds it for writing.
//   - After C_Finalize every session and object handle is dead, and the library hands
//     out the same numbers again: a handle is only good with the generation it came from.
//   - Even within a generation a library reuses the handle of a closed session, so a
//     session that broke behind our back must never be closed by its old number: it may
//     now be someone else's. sessions records which live session owns each number.
//   - The login belongs to the token and the application, not to one session; it lasts
//     while any session of the application on that token is open.
type module struct {
	path  string
	raw   *pkcs11.Ctx
	owned bool // this process's C_Initialize is ours (not another library's in the process)
	tpm   bool // tpm2-pkcs11: wrong PINs count towards the TPM's dictionary-attack lockout

	mu  sync.RWMutex
	p   cryptoki
	gen uint64 // incremented by every reinit; guarded by mu

	regMu    sync.Mutex
	sessions map[pkcs11.SessionHandle]*session // live sessions of the current generation
	// openMu makes one C_OpenSession at a time: tpm2-pkcs11 1.9 has been seen to hand
	// the same handle to two sessions opened at once (CKF_OS_LOCKING_OK notwithstanding),
	// and two signatures then share one session. Sessions are opened rarely (a pool keeps
	// them), so this costs nothing that shows.
	openMu sync.Mutex

	// Guarded by modulesMu.
	refs  int
	users map[*Signer]struct{}

	// Guarded by reinitMu.
	reinitMu   sync.Mutex
	lastReinit time.Time
	backoff    time.Duration
}

var (
	modulesMu sync.Mutex
	modules   = map[string]*module{}
)

// openModule loads and initialises the library at path, or returns the module already
// loaded from there.
func openModule(path string) (*module, error) {
	modulesMu.Lock()
	defer modulesMu.Unlock()
	if m, ok := modules[path]; ok {
		m.refs++
		return m, nil
	}
	quietTSS()
	raw := pkcs11.New(path)
	if raw == nil {
		return nil, fmt.Errorf("cannot load the PKCS#11 library %s (dlopen failed: is it a PKCS#11 module for this architecture?)", path)
	}
	var p cryptoki = raw
	if wrapModule != nil {
		p = wrapModule(path, p)
	}
	m := &module{path: path, raw: raw, p: p, owned: true, refs: 1, users: map[*Signer]struct{}{}, sessions: map[pkcs11.SessionHandle]*session{}}
	if err := p.Initialize(); err != nil {
		// Another library in this process (crypto11, say) has initialised it already;
		// use it, but leave C_Finalize to its owner.
		if !errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)) {
			raw.Destroy()
			return nil, fmt.Errorf("C_Initialize of %s failed: %w", path, err)
		}
		m.owned = false
	}
	if info, err := p.GetInfo(); err == nil {
		m.tpm = strings.Contains(info.ManufacturerID, "tpm2-software") || strings.Contains(info.LibraryDescription, "TPM2")
	}
	modules[path] = m
	return m, nil
}

func (m *module) addUser(s *Signer) {
	modulesMu.Lock()
	m.users[s] = struct{}{}
	modulesMu.Unlock()
}

// release drops one reference; the last one finalizes and unloads the library.
func (m *module) release(s *Signer) {
	modulesMu.Lock()
	defer modulesMu.Unlock()
	if s != nil {
		delete(m.users, s)
	}
	m.refs--
	if m.refs > 0 {
		return
	}
	delete(modules, m.path)
	m.mu.Lock()
	if m.owned {
		m.p.Finalize()
	}
	m.gen++
	m.mu.Unlock()
	m.raw.Destroy()
}

// othersUp reports whether another key of this module can sign now: re-initialising the
// library would cost them their sessions.
func (m *module) othersUp(s *Signer) bool {
	modulesMu.Lock()
	defer modulesMu.Unlock()
	for u := range m.users {
		if u != s && u.cur.Load() != nil {
			return true
		}
	}
	return false
}

// Reinit pacing: a library that must be re-initialised to see a token come back is
// re-initialised at most once a second while no other key of it can sign; while others
// can, the wait doubles from reinitMin to reinitMax, since each time costs them their
// sessions and login.
const (
	reinitMin = 5 * time.Second
	reinitMax = 5 * time.Minute
)

var errReinitPaced = errors.New("not re-initialising the PKCS#11 library again yet")

// reinit finalizes and initialises the library again, which is what it takes for
// SoftHSM (and HSM clients that lose their connection) to see a token that went away
// and came back. seen is the generation in which the caller failed: if another key has
// re-initialised since, that is enough.
func (m *module) reinit(ctx context.Context, s *Signer, seen uint64) error {
	m.reinitMu.Lock()
	defer m.reinitMu.Unlock()
	m.mu.RLock()
	gen := m.gen
	m.mu.RUnlock()
	if gen != seen {
		return nil
	}
	if !m.owned {
		return errors.New("the PKCS#11 library was initialised by other code in this process, so provenanced cannot re-initialise it")
	}
	now := time.Now()
	if m.othersUp(s) {
		if m.backoff == 0 {
			m.backoff = reinitMin
		}
		if now.Sub(m.lastReinit) < m.backoff {
			return errReinitPaced
		}
		m.backoff = min(2*m.backoff, reinitMax)
	} else {
		m.backoff = 0
	}
	if err := lockContext(ctx, &m.mu); err != nil {
		return err
	}
	defer m.mu.Unlock()
	m.lastReinit = now
	m.p.Finalize() // an error here (not initialised) changes nothing below
	m.gen++
	m.regMu.Lock()
	m.sessions = map[pkcs11.SessionHandle]*session{}
	m.regMu.Unlock()
	if err := m.p.Initialize(); err != nil {
		return fmt.Errorf("C_Initialize of %s failed: %w", m.path, err)
	}
	return nil
}

// lockContext takes mu for writing unless ctx ends first. A call in flight may hold a
// read lock for as long as the token takes; the caller should not wait longer than its
// own deadline, and a lock taken after it gave up is let go at once.
func lockContext(ctx context.Context, mu *sync.RWMutex) error {
	locked := make(chan struct{})
	go func() {
		mu.Lock()
		select {
		case locked <- struct{}{}:
		case <-ctx.Done():
			mu.Unlock()
		}
	}()
	select {
	case <-locked:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// session is one PKCS#11 session owned by a key.
type session struct {
	h     pkcs11.SessionHandle
	gen   uint64 // the module generation it was opened in
	epoch uint64 // the key's connection it belongs to
}

// openSession opens a session in the current generation and records it as the owner of
// its handle. The caller holds m.mu for reading.
func (m *module) openSession(slot uint, flags uint, epoch uint64) (*session, error) {
	m.openMu.Lock()
	h, err := m.p.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|flags)
	m.openMu.Unlock()
	if err != nil {
		return nil, err
	}
	s := &session{h: h, gen: m.gen, epoch: epoch}
	m.regMu.Lock()
	// If the number was someone's before, the library has closed that session (a
	// C_CloseAllSessions, a token that went away): it is dead, and now this one's.
	m.sessions[h] = s
	m.regMu.Unlock()
	return s, nil
}

// closeSession closes s if it is still the session its number belongs to. The caller
// holds m.mu for reading.
func (m *module) closeSession(s *session) {
	if s == nil || s.gen != m.gen {
		return
	}
	m.regMu.Lock()
	mine := m.sessions[s.h] == s
	if mine {
		delete(m.sessions, s.h)
	}
	m.regMu.Unlock()
	if mine {
		m.p.CloseSession(s.h)
	}
}

// forgetSession drops s without closing it: the library has closed it already
// (CKR_SESSION_HANDLE_INVALID), and its number may be handed out again.
func (m *module) forgetSession(s *session) {
	if s == nil || s.gen != m.gen {
		return
	}
	m.regMu.Lock()
	if m.sessions[s.h] == s {
		delete(m.sessions, s.h)
	}
	m.regMu.Unlock()
}

// quietTSS keeps the TPM software stack's own logging (tpm2-tss's "WARNING:esys:" and
// "ERROR:tcti:" lines, which it writes to the process's stderr, between our JSON log
// lines) off unless the operator asked for it: TSS2_LOG is tpm2-tss's documented switch.
// It only matters to a TPM's library, and must be set before the library is loaded.
// tpm2-pkcs11's own "ERROR:" lines cannot be turned off this way; the README says how to
// keep them apart from the JSON log.
func quietTSS() {
	if _, set := os.LookupEnv("TSS2_LOG"); !set {
		os.Setenv("TSS2_LOG", "all+NONE")
	}
}
