//go:build cgo

package pkcs11

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/pkcs11"

	"github.com/ib1/provenanced/backends"
	"github.com/ib1/provenanced/conf"
	"github.com/ib1/provenanced/testenv"
)

func digestOf(s string) []byte {
	d := sha256.Sum256([]byte(s))
	return d[:]
}

func TestSignConcurrentlyWithinMaxSessions(t *testing.T) {
	for _, k := range kinds() {
		t.Run(k.name, func(t *testing.T) { testSignConcurrently(t, k) })
	}
}

func testSignConcurrently(t *testing.T, k kind) {
	resetFaults()
	s := openKey(t, k.body(k.tokMain, "max_sessions", 4)...)
	if got, want := s.Location(), fmt.Sprintf(`PKCS#11 token %q key label "signing"`, k.tokMain); got != want {
		t.Errorf("Location() = %q, want %q", got, want)
	}
	want, err := k.public(k.tokMain, testenv.KeySpec{Label: "signing", ID: "01"})
	if err != nil {
		t.Fatal(err)
	}
	if !s.Public().(*ecdsa.PublicKey).Equal(want) {
		t.Fatal("Public() is not the public key pkcs11-tool reads from the token")
	}
	before := faults.open.Load()
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for g := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				d := digestOf(fmt.Sprintf("%d/%d", g, i))
				sig, err := s.SignContext(context.Background(), d)
				if err != nil {
					errs <- err
					return
				}
				if !ecdsa.VerifyASN1(s.pub, d, sig) {
					errs <- fmt.Errorf("signature %d/%d does not verify", g, i)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// One anchor session (opened by Open, before "before") and at most three signing ones.
	if peak := faults.peak.Load() - before; peak > 3 {
		t.Errorf("%d signing sessions were open at once; max_sessions = 4 allows 3 beside the anchor", peak)
	}
	if n := faults.logins.Load(); n != 1 {
		t.Errorf("%d logins; want one, at Open", n)
	}
	var _ backends.Concurrent = s
	if n := s.Concurrency(); n != 3 {
		t.Errorf("Concurrency() = %d, want the 3 signing sessions", n)
	}
}

func TestSignChecksTheDigest(t *testing.T) {
	s := openKey(t, keyBody(tokMain)...)
	for _, n := range []int{0, 20, 31, 33, 48, 64} {
		if _, err := s.SignContext(context.Background(), make([]byte, n)); !errors.Is(err, backends.ErrInvalidDigest) {
			t.Errorf("%d-byte digest: err = %v, want ErrInvalidDigest", n, err)
		}
	}
	if _, err := s.Sign(nil, make([]byte, 48), crypto.SHA384); !errors.Is(err, backends.ErrInvalidDigest) {
		t.Errorf("SHA-384: err = %v, want ErrInvalidDigest", err)
	}
	d := digestOf("crypto.Signer")
	sig, err := s.Sign(nil, d, crypto.SHA256)
	if err != nil || !ecdsa.VerifyASN1(s.pub, d, sig) {
		t.Errorf("Sign(SHA256) = %v; verifies: %v", err, err == nil && ecdsa.VerifyASN1(s.pub, d, sig))
	}
}

func TestWaitForSessionRespectsContext(t *testing.T) {
	resetFaults()
	t.Cleanup(resetFaults)
	s := openKey(t, keyBody(tokMain, "max_sessions", 2)...)
	release := make(chan struct{})
	faults.Lock()
	faults.block = release
	faults.on.Store(true)
	faults.Unlock()
	first := make(chan error, 1)
	go func() {
		_, err := s.SignContext(context.Background(), digestOf("first"))
		first <- err
	}()
	// Wait until the first signature holds the only signing session.
	deadline := time.Now().Add(5 * time.Second)
	for len(s.pool.slots) == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := s.SignContext(ctx, digestOf("second"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("second signature: err = %v, want context.DeadlineExceeded", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("the second signature gave up after %v; its deadline was 50ms", took)
	}
	close(release)
	if err := <-first; err != nil {
		t.Errorf("first signature: %v", err)
	}
}

// openErr opens a key (its [keys.k] as key, value pairs) that must fail and returns the
// config error.
func openErr(t *testing.T, key ...any) *conf.Error {
	t.Helper()
	return openSpecErr(t, keySpec(t, key...))
}

// openSpecErr opens spec, which must fail, and returns the config error.
func openSpecErr(t *testing.T, spec *conf.Key) *conf.Error {
	t.Helper()
	s, err := Open(context.Background(), spec)
	if err == nil {
		s.Close()
		t.Fatal("Open succeeded")
	}
	var ce *conf.Error
	if !errors.As(err, &ce) {
		t.Fatalf("Open: %v (%T), want a *conf.Error", err, err)
	}
	return ce
}

func TestOpenErrorsSayWhich(t *testing.T) {
	t.Setenv("PROVENANCED_TEST_PIN", home.pin)
	t.Setenv("PROVENANCED_EMPTY", "")
	openMode := filepath.Join(home.pinDir, "open.pin")
	if err := os.WriteFile(openMode, []byte(home.pin), 0o644); err != nil {
		t.Fatal(err)
	}
	mod := home.hsm.Module
	for _, tc := range []struct {
		name string
		body []any  // [keys.k]
		text string // the whole config, when it is written as text on purpose
		key  string
		says []string
	}{
		{"wrong PIN", keyBody(tokMain, "pin", "file:wrong.pin"), "",
			"keys.k.pin", []string{`token "main" rejected the PIN from file:`, "wrong.pin", "will not try that PIN again", "CKR_PIN_INCORRECT"}},
		{"missing token", keyBody("nope"), "",
			"keys.k.token_label", []string{`no token with label "nope"`, `"main" (serial`}},
		{"missing key", keyBody(tokMain, "key_label", "nope"), "",
			"keys.k.key_label", []string{`no private key with label "nope" on token "main"`}},
		{"missing key id", keyBody(tokMain, "key_label", nil, "key_id", "ee", "pin", "env:PROVENANCED_TEST_PIN"), "",
			"keys.k.key_id", []string{`no private key with id ee on token "main"`}},
		{"RSA key", keyBody(tokMain, "key_label", "rsa"), "",
			"keys.k.key_label", []string{`label "rsa"`, "is an RSA key", "EC P-256 only"}},
		{"P-384 key", keyBody(tokMain, "key_label", nil, "key_id", "03"), "",
			"keys.k.key_id", []string{"id 03", "P-384", "EC P-256 only"}},
		{"no module", keyBody(tokMain, "module", nil, "pin", nil), "",
			"keys.k.module", []string{"missing", "PKCS#11 library"}},
		{"module not there", keyBody(tokMain, "module", "/nonexistent/libsofthsm2.so", "pin", nil), "",
			"keys.k.module", []string{"/nonexistent/libsofthsm2.so", "no such file", "apt-get install softhsm2"}},
		{"PIN in the config", keyBody(tokMain, "pin", home.pin), "",
			"keys.k.pin", []string{`"env:NAME" or "file:PATH"`, "not accepted"}},
		{"PIN variable unset", keyBody(tokMain, "pin", "env:PROVENANCED_UNSET_PIN"), "",
			"keys.k.pin", []string{"PROVENANCED_UNSET_PIN is not set"}},
		{"PIN variable empty", keyBody(tokMain, "pin", "env:PROVENANCED_EMPTY"), "",
			"keys.k.pin", []string{"is empty"}},
		{"PIN file open to all", keyBody(tokMain, "pin", "file:open.pin"), "",
			"keys.k.pin", []string{"open to all users", "chmod o-rwx"}},
		{"no PIN for a token that needs one", keyBody(tokMain, "pin", nil), "",
			"keys.k.pin", []string{"requires a login"}},
		{"max_sessions 1", keyBody(tokMain, "max_sessions", 1), "",
			"keys.k.max_sessions", []string{"at least 2"}},
		// A key the backend does not know, written as text on purpose: it goes into the
		// last table, [keys.k].
		{"unknown field", nil, keyConfig(keyBody(tokMain)...).String() + "slot = 1\n",
			"keys.k.slot", []string{"unknown key", "max_sessions", "token_serial"}},
		{"uri and fields", []any{"uri", "pkcs11:token=main;object=signing", "module", "/x.so"}, "",
			"keys.k.uri", []string{"either as uri or as fields", "module"}},
		{"uri with pin-value", []any{"uri", fmt.Sprintf("pkcs11:token=main;object=signing?module-path=%s&pin-value=%s", mod, home.pin)}, "",
			"keys.k.uri", []string{"pin-value", "pin-source"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resetFaults()
			spec := func() *conf.Key {
				if tc.text != "" {
					return parseKey(t, tc.text)
				}
				return keySpec(t, tc.body...)
			}
			ce := openSpecErr(t, spec())
			msg := ce.Error()
			if ce.Key != tc.key {
				t.Errorf("error about %q, want %q: %s", ce.Key, tc.key, msg)
			}
			for _, s := range tc.says {
				if !strings.Contains(msg, s) {
					t.Errorf("error does not say %q: %s", s, msg)
				}
			}
			if strings.Contains(msg, home.pin) {
				t.Errorf("error contains the PIN: %s", msg)
			}
			if tc.name == "wrong PIN" {
				if faults.logins.Load() != 1 {
					t.Errorf("%d logins with a wrong PIN; want exactly one", faults.logins.Load())
				}
				// The next start is refused before any login: a restart loop cannot lock
				// the token.
				resetFaults()
				again := openSpecErr(t, spec())
				if !strings.Contains(again.Error(), "has seen a wrong user PIN since its last good login") || faults.logins.Load() != 0 {
					t.Errorf("after a wrong PIN (%d logins): %v", faults.logins.Load(), again)
				}
				goodLogin(t, tokMain, home.pin)
			}
		})
	}
}

// A wrong PIN for one key leaves the library, and the other keys on it, alone. (The
// other token: two keys on one token share its login, so a second key's PIN is not
// offered to the token at all.)
func TestWrongPINLeavesOtherKeysAlone(t *testing.T) {
	good := openKey(t, keyBody(tokMain)...)
	openErr(t, keyBody(tokSpare, "pin", "file:wrong.pin")...)
	goodLogin(t, tokSpare, home.pin)
	d := digestOf("still here")
	sig, err := good.SignContext(context.Background(), d)
	if err != nil || !ecdsa.VerifyASN1(good.pub, d, sig) {
		t.Fatalf("the good key after another's wrong PIN: %v", err)
	}
}

func TestOpenByURI(t *testing.T) {
	pinFile := filepath.Join(home.pinDir, "user.pin")
	for _, u := range []string{
		fmt.Sprintf("pkcs11:token=main;object=signing;type=private?module-path=%s&pin-source=file:%s", home.hsm.Module, pinFile),
		fmt.Sprintf("pkcs11:token=main;id=%%01?module-path=%s&pin-source=file://%s", home.hsm.Module, pinFile),
		fmt.Sprintf("pkcs11:model=SoftHSM%%20v2;token=main;object=signing?pin-source=env:PROVENANCED_TEST_PIN&module-path=%s", home.hsm.Module),
	} {
		t.Setenv("PROVENANCED_TEST_PIN", home.pin)
		s := openKey(t, "uri", u, "max_sessions", 3)
		d := digestOf(u)
		sig, err := s.SignContext(context.Background(), d)
		if err != nil || !ecdsa.VerifyASN1(s.pub, d, sig) {
			t.Errorf("%s: %v", u, err)
		}
		if s.cfg.maxSessions != 3 {
			t.Errorf("%s: max_sessions = %d, want 3", u, s.cfg.maxSessions)
		}
	}
}

// waitReady polls Ready until it reports nil, as the daemon's health check and /readyz
// do, or fails the test after d.
func waitReady(t *testing.T, s *Signer, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	var err error
	for time.Now().Before(deadline) {
		if err = s.Ready(context.Background()); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("the key did not come back within %v: %v", d, err)
}

func mustSign(t *testing.T, s *Signer, what string) {
	t.Helper()
	d := digestOf(what)
	sig, err := s.SignContext(context.Background(), d)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if !ecdsa.VerifyASN1(s.pub, d, sig) {
		t.Fatalf("%s: the signature does not verify", what)
	}
}

func mustBeUnavailable(t *testing.T, s *Signer, what string) error {
	t.Helper()
	_, err := s.SignContext(context.Background(), digestOf(what))
	if !errors.Is(err, backends.ErrUnavailable) {
		t.Fatalf("%s: err = %v, want ErrUnavailable", what, err)
	}
	if rerr := s.Ready(context.Background()); rerr == nil {
		t.Fatalf("%s: Ready() = nil while signing fails", what)
	}
	return err
}

// Sessions closed behind the key's back (CKR_SESSION_HANDLE_INVALID, and the login gone
// with them): the next signature reconnects and succeeds, without the caller noticing.
func TestSessionsClosedBehindTheKeysBack(t *testing.T) {
	resetFaults()
	s := openKey(t, keyBody(tokSessions, "max_sessions", 3)...)
	mustSign(t, s, "before")
	f := s.mod.p.(*faulty)
	s.mod.mu.RLock()
	err := f.raw.CloseAllSessions(s.cur.Load().slot)
	s.mod.mu.RUnlock()
	if err != nil {
		t.Fatal(err)
	}
	mustSign(t, s, "after")
	if n := faults.logins.Load(); n != 2 {
		t.Errorf("%d logins; want 2 (at Open, and once after the sessions were closed)", n)
	}
	if err := s.Ready(context.Background()); err != nil {
		t.Errorf("Ready: %v", err)
	}
}

// CKR_DEVICE_REMOVED and friends, which SoftHSM cannot be made to return: while they
// last the key is unavailable (fast, without a login per request); then it comes back.
func TestDeviceErrorsThenRecovery(t *testing.T) {
	for _, code := range []uint{pkcs11.CKR_DEVICE_REMOVED, pkcs11.CKR_SESSION_HANDLE_INVALID, pkcs11.CKR_DEVICE_ERROR, pkcs11.CKR_TOKEN_NOT_PRESENT} {
		t.Run(pkcs11.Error(code).Error(), func(t *testing.T) {
			resetFaults()
			t.Cleanup(resetFaults)
			s := openKey(t, keyBody(tokMain)...)
			mustSign(t, s, "before")
			failing("Sign", code)
			failing("GetTokenInfo", code)
			err := mustBeUnavailable(t, s, "during")
			if !isCode(err, code) {
				t.Errorf("the error does not carry %v: %v", pkcs11.Error(code), err)
			}
			// A burst of requests while the token is away: answered at once, and not one
			// login attempt each.
			logins := faults.logins.Load()
			start := time.Now()
			for range 50 {
				if _, err := s.SignContext(context.Background(), digestOf("burst")); !errors.Is(err, backends.ErrUnavailable) {
					t.Fatalf("burst: %v", err)
				}
			}
			if took := time.Since(start); took > 500*time.Millisecond {
				t.Errorf("50 requests took %v to fail", took)
			}
			if n := faults.logins.Load() - logins; n > 1 {
				t.Errorf("%d logins during the burst", n)
			}
			resetFaults()
			waitReady(t, s, 5*time.Second)
			mustSign(t, s, "after")
		})
	}
}

// The token's folder taken away and put back, as when an HSM is unplugged or its
// network link drops: SoftHSM only sees it again after C_Finalize and C_Initialize.
func TestTokenRemovedAndBack(t *testing.T) {
	resetFaults()
	s := openKey(t, keyBody(tokRemove)...)
	mustSign(t, s, "before")
	putBack, err := home.hsm.RemoveToken(tokRemove)
	if err != nil {
		t.Fatal(err)
	}
	mustBeUnavailable(t, s, "removed")
	if err := putBack(); err != nil {
		t.Fatal(err)
	}
	waitReady(t, s, 10*time.Second)
	mustSign(t, s, "back")
}

// The token initialised again behind the key's back (its objects gone), then restored
// from a backup.
func TestTokenReinitialisedThenRestored(t *testing.T) {
	resetFaults()
	s := openKey(t, keyBody(tokReinit)...)
	mustSign(t, s, "before")
	restore, err := home.hsm.SnapshotToken(tokReinit)
	if err != nil {
		t.Fatal(err)
	}
	if err := home.hsm.InitToken(tokReinit, home.soPIN, home.pin); err != nil {
		t.Fatal(err)
	}
	err = mustBeUnavailable(t, s, "wiped")
	if !strings.Contains(err.Error(), `no private key with label "signing" on token "reinit"`) {
		t.Errorf("unavailable, but not saying the key is gone: %v", err)
	}
	if err := restore(); err != nil {
		t.Fatal(err)
	}
	waitReady(t, s, 10*time.Second)
	mustSign(t, s, "restored")
}

// Another key under the configured name is not the key: it stays unavailable and says so.
func TestKeySwappedUnderTheSameName(t *testing.T) {
	resetFaults()
	s := openKey(t, keyBody(tokSwap)...)
	mustSign(t, s, "before")
	if err := home.hsm.InitToken(tokSwap, home.soPIN, home.pin); err != nil {
		t.Fatal(err)
	}
	if err := home.hsm.GenerateKey(tokSwap, home.pin, testenv.KeySpec{Label: "signing", ID: "01"}); err != nil {
		t.Fatal(err)
	}
	mustBeUnavailable(t, s, "swapped")
	time.Sleep(retryInterval)
	err := s.Ready(context.Background())
	if err == nil || !strings.Contains(err.Error(), "no longer the key provenanced started with") {
		t.Errorf("Ready() = %v, want it to say the key is another one", err)
	}
}

// A token initialised again with another user PIN: the configured PIN is offered once,
// rejected, and not offered again until the PIN file changes.
func TestRejectedPINIsNotRetried(t *testing.T) {
	resetFaults()
	pinFile := filepath.Join(t.TempDir(), "pin")
	if err := os.WriteFile(pinFile, []byte(home.pin), 0o600); err != nil {
		t.Fatal(err)
	}
	s := openKey(t, keyBody(tokNewPIN, "pin", "file:"+pinFile)...)
	mustSign(t, s, "before")
	if err := home.hsm.InitToken(tokNewPIN, home.soPIN, "a-new-pin"); err != nil {
		t.Fatal(err)
	}
	mustBeUnavailable(t, s, "new PIN")
	logins := faults.logins.Load()
	var err error
	for range 4 {
		time.Sleep(retryInterval + 50*time.Millisecond)
		err = s.Ready(context.Background())
		if err == nil {
			t.Fatal("Ready() = nil on a token that rejects the PIN")
		}
	}
	if n := faults.logins.Load() - logins; n > 1 {
		t.Errorf("the rejected PIN was offered %d more times", n)
	}
	if !strings.Contains(err.Error(), "does not offer a rejected PIN again") {
		t.Errorf("Ready() = %v, want it to say the PIN is not offered again", err)
	}
	if strings.Contains(err.Error(), home.pin) {
		t.Errorf("the error contains the PIN: %v", err)
	}
	// The PIN source is read again at each attempt: once the operator has put the new PIN
	// there (and logged in with it, which clears the token's count of wrong PINs), it is
	// offered, and the key found missing, since the token was wiped.
	if err := os.WriteFile(pinFile, []byte("a-new-pin\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	readySays(t, s, "has seen a wrong user PIN", 5*time.Second)
	goodLogin(t, tokNewPIN, "a-new-pin")
	readySays(t, s, `no private key with label "signing"`, 5*time.Second)
}

// readySays waits until Ready's error contains says: Ready answers from the key's state,
// which the readiness checker it starts brings up to date.
func readySays(t *testing.T, s *Signer, says string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	var err error
	for time.Now().Before(deadline) {
		if err = s.Ready(context.Background()); err != nil && strings.Contains(err.Error(), says) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("Ready() = %v after %v, want it to say %q", err, within, says)
}

// Token flags that say the PIN is locked, or near it: the PIN is not offered at all.
func TestPINFlagsStopTheLogin(t *testing.T) {
	for _, tc := range []struct {
		flag uint
		says string
	}{
		{pkcs11.CKF_USER_PIN_LOCKED, "has locked its user PIN"},
		{pkcs11.CKF_USER_PIN_FINAL_TRY, "will lock its user PIN at the next wrong one"},
		{pkcs11.CKF_USER_PIN_COUNT_LOW, "has seen a wrong user PIN since its last good login"},
	} {
		resetFaults()
		withTokenFlags(tc.flag)
		ce := openErr(t, keyBody(tokMain)...)
		if ce.Key != "keys.k.pin" || !strings.Contains(ce.Error(), tc.says) {
			t.Errorf("flag %#x: %v", tc.flag, ce)
		}
		if n := faults.logins.Load(); n != 0 {
			t.Errorf("flag %#x: %d logins", tc.flag, n)
		}
	}
	resetFaults()
}

// A key with CKA_ALWAYS_AUTHENTICATE wants the PIN again (CKU_CONTEXT_SPECIFIC) after each
// C_SignInit; SoftHSM enforces it.
func TestAlwaysAuthenticateKey(t *testing.T) {
	resetFaults()
	s := openKey(t, keyBody(tokMain, "key_label", "always", "max_sessions", 3)...)
	c := s.cur.Load()
	if !c.alwaysAuth {
		t.Fatal("the key's CKA_ALWAYS_AUTHENTICATE was not noticed")
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 10 {
				mustSign(t, s, fmt.Sprintf("always %d/%d", g, i))
			}
		}()
	}
	wg.Wait()
	// Without the second login, SoftHSM refuses: the test above tested something.
	f := s.mod.p.(*faulty)
	s.mod.mu.RLock()
	defer s.mod.mu.RUnlock()
	sh, err := f.raw.OpenSession(c.slot, pkcs11.CKF_SERIAL_SESSION)
	if err != nil {
		t.Fatal(err)
	}
	defer f.raw.CloseSession(sh)
	if err := f.raw.SignInit(sh, ecdsaMechanism, c.key); err != nil {
		t.Fatal(err)
	}
	if _, err := f.raw.Sign(sh, digestOf("no second login")); err == nil {
		t.Error("SoftHSM signed with an always-authenticate key without CKU_CONTEXT_SPECIFIC")
	}
}

// A module call that hangs (faults.block holds C_Sign, as a frozen swtpm does; the daemon
// test freezes a real one): the request gets ErrUnavailable at its deadline, the key is
// degraded at once, Ready answers without waiting and says why, new signatures fail fast,
// and the key is back when the call returns.
func TestHungModuleIsBoundedByTheDeadline(t *testing.T) {
	resetFaults()
	t.Cleanup(resetFaults)
	s := openKey(t, keyBody(tokMain, "max_sessions", 3)...)
	mustSign(t, s, "before")
	release := make(chan struct{})
	faults.Lock()
	faults.block = release
	faults.on.Store(true)
	faults.Unlock()
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := s.SignContext(ctx, digestOf("hangs"))
	if !errors.Is(err, backends.ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("the signature returned after %v; its deadline was 200ms", took)
	}
	start = time.Now()
	rerr := s.Ready(context.Background())
	if rerr == nil || !strings.Contains(rerr.Error(), "have not returned") {
		t.Errorf("Ready() = %v, want it to say a call is stuck", rerr)
	}
	if took := time.Since(start); took > 100*time.Millisecond {
		t.Errorf("Ready took %v with a hung module", took)
	}
	start = time.Now()
	if _, err := s.SignContext(context.Background(), digestOf("while hung")); !errors.Is(err, backends.ErrUnavailable) || time.Since(start) > 100*time.Millisecond {
		t.Errorf("a signature while hung: %v after %v; want ErrUnavailable at once", err, time.Since(start))
	}
	close(release)
	resetFaults()
	deadline := time.Now().Add(5 * time.Second)
	for s.Ready(context.Background()) != nil && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	mustSign(t, s, "after")
}

// CKR_SESSION_COUNT (the token's session table is full, which SoftHSM cannot be made to
// say): signatures wait for the key's own sessions, or use the anchor, and the key stays
// up; it is not treated as a lost token.
func TestSessionCountWaitsForASession(t *testing.T) {
	resetFaults()
	t.Cleanup(resetFaults)
	s := openKey(t, keyBody(tokMain, "max_sessions", 4)...)
	var waits atomic.Int64
	s.ObserveSessionWait(func(time.Duration) { waits.Add(1) })
	mustSign(t, s, "one session open")
	s2 := openKey(t, keyBody(tokMain, "max_sessions", 4)...) // no signing session yet
	failing("OpenSession", pkcs11.CKR_SESSION_COUNT)
	logins := faults.logins.Load()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 10 {
				d := digestOf(fmt.Sprintf("%d/%d", g, i))
				sig, err := s.SignContext(context.Background(), d)
				if err != nil || !ecdsa.VerifyASN1(s.pub, d, sig) {
					errs <- fmt.Errorf("%d/%d: %v", g, i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if err := s.Ready(context.Background()); err != nil {
		t.Errorf("Ready() = %v after CKR_SESSION_COUNT", err)
	}
	if n := faults.logins.Load() - logins; n != 0 {
		t.Errorf("%d logins: the key reconnected, as if the token were lost", n)
	}
	if n := waits.Load(); n < 81 {
		t.Errorf("the session wait was observed %d times for 81 signatures", n)
	}

	// With no session of its own to wait for, the key signs on its anchor.
	mustSign(t, s2, "anchor only")
	if err := s2.Ready(context.Background()); err != nil {
		t.Errorf("Ready() = %v after signing on the anchor", err)
	}
}

// The readiness check reaches the token with a test signature, with no traffic: a token
// that fails (CKR_DEVICE_ERROR from C_Sign, as tpm2-pkcs11 says when its TPM is gone, while
// token and session information still come from its cache) makes the key not ready within
// ready_check_interval and a little, and it comes back by itself.
func TestReadinessCheckReachesTheToken(t *testing.T) {
	resetFaults()
	t.Cleanup(resetFaults)
	s := openKey(t, keyBody(tokMain, "ready_check_interval", "200ms")...)
	mustSign(t, s, "before")
	failing("Sign", pkcs11.CKR_DEVICE_ERROR)
	failing("SignInit", pkcs11.CKR_DEVICE_ERROR)
	readySays(t, s, "CKR_DEVICE_ERROR", 3*time.Second)
	resetFaults()
	waitReady(t, s, 5*time.Second)
	mustSign(t, s, "after")
}

func TestReadyCheckIntervalIsChecked(t *testing.T) {
	for _, v := range []string{"1ms", "2h", "soon"} {
		ce := openErr(t, keyBody(tokMain, "ready_check_interval", v)...)
		if ce.Key != "keys.k.ready_check_interval" {
			t.Errorf("%s: %v", v, ce)
		}
	}
}

// tpm2-pkcs11 never sets CKF_USER_PIN_COUNT_LOW, and each wrong PIN counts towards the
// TPM's dictionary-attack lockout: a refused PIN is remembered in state_dir, and a key
// opened again (a restarted daemon) does not offer it, and says how to unlock a TPM.
func TestRefusedPINIsRememberedAcrossRestarts(t *testing.T) {
	resetFaults()
	t.Cleanup(func() {
		resetFaults()
		if err := tpmHome.ClearLockout(); err != nil {
			t.Error(err)
		}
	})
	state := t.TempDir()
	k := kinds()[1]
	body := k.body(tokTPMPIN, "state_dir", state, "pin", "file:wrong.pin")
	ce := openErr(t, body...)
	if ce.Key != "keys.k.pin" || !strings.Contains(ce.Error(), "rejected the PIN") || !strings.Contains(ce.Error(), state) {
		t.Fatalf("first open: %v", ce)
	}
	if n := faults.logins.Load(); n != 1 {
		t.Fatalf("%d logins, want the one", n)
	}
	files, _ := filepath.Glob(filepath.Join(state, "pkcs11-refused-pin-*.json"))
	if len(files) != 1 {
		t.Fatalf("state_dir holds %v", files)
	}
	b, _ := os.ReadFile(files[0])
	if strings.Contains(string(b), "not-the-pin") {
		t.Fatal("the state file holds the PIN itself")
	}
	for range 3 {
		ce = openErr(t, body...)
		if !strings.Contains(ce.Error(), "before") || !strings.Contains(ce.Error(), "does not offer a rejected PIN again") {
			t.Fatalf("open again: %v", ce)
		}
	}
	if n := faults.logins.Load(); n != 1 {
		t.Errorf("%d logins after three restarts, want still one", n)
	}
	// The right PIN logs in and clears the record.
	openKey(t, k.body(tokTPMPIN, "state_dir", state)...)
	if files, _ := filepath.Glob(filepath.Join(state, "pkcs11-refused-pin-*.json")); len(files) != 0 {
		t.Errorf("the record stays after a good login: %v", files)
	}
	s := &Signer{mod: &module{tpm: true}}
	if a := s.unlockAdvice(); !strings.Contains(a, "tpm2_dictionarylockout --clear-lockout") || strings.Contains(a, "SO PIN (") {
		t.Errorf("TPM lockout advice: %s", a)
	}
}

// A token without EC mechanisms (opencryptoki's soft token answers CKR_MECHANISM_INVALID;
// SoftHSM has them, so the fault is made here): start and keygen say the token cannot make
// or use P-256 keys, rather than only quoting the code.
func TestTokenWithoutP256IsNamed(t *testing.T) {
	resetFaults()
	t.Cleanup(resetFaults)
	failing("SignInit", pkcs11.CKR_MECHANISM_INVALID)
	ce := openErr(t, keyBody(tokMain)...)
	if ce.Key != "keys.k.key_label" || !strings.Contains(ce.Error(), "cannot make or use P-256") {
		t.Errorf("Open: %v", ce)
	}
	resetFaults()
	failing("GenerateKeyPair", pkcs11.CKR_MECHANISM_INVALID)
	_, err := backends.Generate(context.Background(), keySpec(t, genBody("no-ec", "")...))
	if err == nil || !strings.Contains(err.Error(), "cannot make P-256 keys") {
		t.Errorf("Generate: %v", err)
	}
}
