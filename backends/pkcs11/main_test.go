//go:build cgo

package pkcs11

import (
	"context"
	"crypto"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/miekg/pkcs11"

	"github.com/ib1/provenanced/conf"
	"github.com/ib1/provenanced/testenv"
)

// The in-process tests share one SoftHSM home: SoftHSM reads SOFTHSM2_CONF when the
// library is initialised, and a process loads the library once. Every token is made here,
// before any test loads the library; tests that take a token away use one of their own.
var home struct {
	hsm    *testenv.SoftHSM
	pin    string
	soPIN  string
	pinDir string
}

// Tokens of the shared home.
const (
	tokMain     = "main"     // "signing" (P-256, id 01), "rsa" (id 02), "p384" (id 03), "always" (id 04, CKA_ALWAYS_AUTHENTICATE)
	tokSpare    = "spare"    // empty, for Generate
	tokRemove   = "remove"   // "signing": taken away and put back
	tokReinit   = "reinit"   // "signing": initialised again behind the daemon's back
	tokSwap     = "swap"     // "signing": replaced by another key under the same name
	tokNewPIN   = "newpin"   // "signing": initialised again with another PIN
	tokSessions = "sessions" // "signing": its sessions closed behind the daemon's back
	tokBench    = "bench"    // "signing": for the benchmarks
)

// The TPM home: one TPM stack (swtpm, tpm2-abrmd, a tpm2-pkcs11 store) for the in-process
// tests, with the same PINs as the SoftHSM home. Its environment is this process's: the
// library reads it when it is initialised. Tests that stop or freeze a TPM, or that
// would lock it, run the daemon on a TPM of their own.
var tpmHome *testenv.TPM

// Tokens of the TPM home.
const (
	tokTPM      = "tmain"  // "signing" (P-256, id 01)
	tokTPMSpare = "tspare" // empty, for Generate
	tokTPMPIN   = "tpin"   // "signing": for the wrong-PIN guard
	tokTPMBench = "tbench" // "signing": for the benchmarks
)

// kind is one implementation the in-process tests run on. p11-kit-proxy is not among
// them: in this process it would load the very SoftHSM library the tests use directly,
// and its C_Finalize would end that library for them; the daemon's tests in cmd/provenanced
// run it.
type kind struct {
	name           string
	module         string
	tokMain, spare string
	run            func(name string, args ...string) ([]byte, error)
	public         func(token string, k testenv.KeySpec) (crypto.PublicKey, error)
}

func kinds() []kind {
	return []kind{
		{name: testenv.KindSoftHSM, module: home.hsm.Module, tokMain: tokMain, spare: tokSpare, run: home.hsm.Run, public: home.hsm.PublicKey},
		{name: testenv.KindTPM, module: tpmHome.Module, tokMain: tokTPM, spare: tokTPMSpare, run: tpmHome.Run, public: tpmHome.PublicKey},
	}
}

// body is the [keys.k] table of the key "signing" on token tok of this kind, as key,
// value pairs, with more set after (a key set again takes the later value, nil removes it).
func (k kind) body(tok string, more ...any) []any {
	return append([]any{"backend", "pkcs11", "module", k.module, "token_label", tok, "key_label", "signing", "pin", "file:user.pin"}, more...)
}

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "provenanced-pkcs11-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := buildHome(dir); err != nil {
		fmt.Fprintln(os.Stderr, "backends/pkcs11 tests:", err)
		return 1
	}
	defer func() {
		if tpmHome != nil {
			tpmHome.Stop()
		}
	}()
	if err := buildTPMHome(filepath.Join(dir, "tpm")); err != nil {
		fmt.Fprintln(os.Stderr, "backends/pkcs11 tests:", err)
		return 1
	}
	tpmHome.SetEnv()
	os.Setenv("SOFTHSM2_CONF", home.hsm.Conf)
	wrapModule = func(_ string, p cryptoki) cryptoki { return &faulty{cryptoki: p, raw: p.(*pkcs11.Ctx)} }
	return m.Run()
}

func buildHome(dir string) error {
	h, err := testenv.NewSoftHSM(filepath.Join(dir, "softhsm"))
	if err != nil {
		return err
	}
	home.hsm, home.pin, home.soPIN, home.pinDir = h, "4711-pin", "0815-so", dir
	if err := os.WriteFile(filepath.Join(dir, "user.pin"), []byte(home.pin+"\n"), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "wrong.pin"), []byte("not-the-pin\n"), 0o600); err != nil {
		return err
	}
	for _, tok := range []string{tokMain, tokSpare, tokRemove, tokReinit, tokSwap, tokNewPIN, tokSessions, tokBench} {
		if err := h.InitToken(tok, home.soPIN, home.pin); err != nil {
			return err
		}
		if tok == tokSpare {
			continue
		}
		if err := h.GenerateKey(tok, home.pin, testenv.KeySpec{Label: "signing", ID: "01"}); err != nil {
			return err
		}
	}
	if err := h.GenerateKey(tokMain, home.pin, testenv.KeySpec{Label: "rsa", ID: "02", Type: "rsa:2048"}); err != nil {
		return err
	}
	if err := h.GenerateKey(tokMain, home.pin, testenv.KeySpec{Label: "always", ID: "04", AlwaysAuth: true}); err != nil {
		return err
	}
	return h.GenerateKey(tokMain, home.pin, testenv.KeySpec{Label: "p384", ID: "03", Type: "EC:secp384r1"})
}

func buildTPMHome(dir string) error {
	t, err := testenv.StartTPM(dir)
	if err != nil {
		return err
	}
	tpmHome = t
	for _, tok := range []string{tokTPM, tokTPMSpare, tokTPMPIN, tokTPMBench} {
		if err := t.InitToken(tok, home.soPIN, home.pin); err != nil {
			return err
		}
		if tok == tokTPMSpare {
			continue
		}
		if err := t.GenerateKey(tok, home.pin, testenv.KeySpec{Label: "signing", ID: "01"}); err != nil {
			return err
		}
	}
	return nil
}

// BenchKey is the benchmarks' key: on a token of the SoftHSM home that this test binary
// initialised the library with, so that it can be used in this process.
type BenchKey struct {
	Module, Token, Label, PIN, PINFile string
}

// Bench returns the benchmarks' key.
func Bench() BenchKey {
	return BenchKey{Module: home.hsm.Module, Token: tokBench, Label: "signing", PIN: home.pin, PINFile: filepath.Join(home.pinDir, "user.pin")}
}

// keyConfig is a one-key config whose [keys.k] table has key (key, value pairs).
func keyConfig(key ...any) *testenv.Config {
	return testenv.NewConfig().Table("server", "socket", "x.sock").Table("keys.k", key...)
}

// keySpec is the key of keyConfig(key...).
func keySpec(t testing.TB, key ...any) *conf.Key {
	t.Helper()
	return parseKey(t, keyConfig(key...).String())
}

// parseKey parses a one-key config in the home's folder (so that pin = "file:user.pin"
// finds the PIN) and returns its key.
func parseKey(t testing.TB, text string) *conf.Key {
	t.Helper()
	cfg, err := conf.Parse(filepath.Join(home.pinDir, "test.toml"), []byte(text))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return cfg.Keys[0]
}

// keyBody is the [keys.k] table of the key "signing" on token tok, as key, value pairs,
// with more set after (a key set again takes the later value, nil removes it).
func keyBody(tok string, more ...any) []any {
	return append([]any{"backend", "pkcs11", "module", home.hsm.Module, "token_label", tok, "key_label", "signing", "pin", "file:user.pin"}, more...)
}

func openKey(t testing.TB, key ...any) *Signer {
	t.Helper()
	s, err := Open(context.Background(), keySpec(t, key...))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s.(*Signer)
}

// faulty wraps the real library with faults and counters that tests switch on.
type faulty struct {
	cryptoki
	raw *pkcs11.Ctx
}

// faults is what the wrapped library does now; tests set it and reset it.
var faults struct {
	sync.Mutex
	on    atomic.Bool             // any fault set: the benchmarks pass by without a lock
	fail  map[string]pkcs11.Error // a call name → the error it returns instead
	block chan struct{}           // when not nil, C_Sign waits for it to close
	flags uint                    // token flags C_GetTokenInfo adds

	open   atomic.Int64 // sessions open now
	peak   atomic.Int64 // most sessions open at once
	logins atomic.Int64 // C_Login(CKU_USER) calls
}

func resetFaults() {
	faults.Lock()
	faults.fail, faults.block, faults.flags = nil, nil, 0
	faults.on.Store(false)
	faults.Unlock()
	faults.logins.Store(0)
	faults.peak.Store(faults.open.Load())
}

func failing(call string, code uint) {
	faults.Lock()
	if faults.fail == nil {
		faults.fail = map[string]pkcs11.Error{}
	}
	faults.fail[call] = pkcs11.Error(code)
	faults.on.Store(true)
	faults.Unlock()
}

func fault(call string) error {
	if !faults.on.Load() {
		return nil
	}
	faults.Lock()
	defer faults.Unlock()
	if e, ok := faults.fail[call]; ok {
		return e
	}
	return nil
}

func (f *faulty) OpenSession(slot, flags uint) (pkcs11.SessionHandle, error) {
	if err := fault("OpenSession"); err != nil {
		return 0, err
	}
	h, err := f.cryptoki.OpenSession(slot, flags)
	if err == nil {
		n := faults.open.Add(1)
		for {
			p := faults.peak.Load()
			if n <= p || faults.peak.CompareAndSwap(p, n) {
				break
			}
		}
	}
	return h, err
}

func (f *faulty) CloseSession(h pkcs11.SessionHandle) error {
	err := f.cryptoki.CloseSession(h)
	if err == nil {
		faults.open.Add(-1)
	}
	return err
}

func (f *faulty) Finalize() error {
	faults.open.Store(0)
	return f.cryptoki.Finalize()
}

func (f *faulty) Login(h pkcs11.SessionHandle, user uint, pin string) error {
	if user == pkcs11.CKU_USER {
		faults.logins.Add(1)
	}
	if err := fault("Login"); err != nil {
		return err
	}
	return f.cryptoki.Login(h, user, pin)
}

func (f *faulty) GetTokenInfo(slot uint) (pkcs11.TokenInfo, error) {
	if err := fault("GetTokenInfo"); err != nil {
		return pkcs11.TokenInfo{}, err
	}
	ti, err := f.cryptoki.GetTokenInfo(slot)
	if faults.on.Load() {
		faults.Lock()
		ti.Flags |= faults.flags
		faults.Unlock()
	}
	return ti, err
}

func (f *faulty) SignInit(h pkcs11.SessionHandle, m []*pkcs11.Mechanism, o pkcs11.ObjectHandle) error {
	if err := fault("SignInit"); err != nil {
		return err
	}
	return f.cryptoki.SignInit(h, m, o)
}

func (f *faulty) Sign(h pkcs11.SessionHandle, msg []byte) ([]byte, error) {
	if faults.on.Load() {
		faults.Lock()
		block := faults.block
		faults.Unlock()
		if block != nil {
			<-block
		}
	}
	if err := fault("Sign"); err != nil {
		return nil, err
	}
	return f.cryptoki.Sign(h, msg)
}

func withTokenFlags(flags uint) {
	faults.Lock()
	faults.flags = flags
	faults.on.Store(true)
	faults.Unlock()
}

// goodLogin logs in to tok with the right PIN, as an operator would after a wrong one:
// SoftHSM, like real tokens, sets CKF_USER_PIN_COUNT_LOW after a wrong PIN until the next
// good login, and this backend then refuses to offer a PIN at all.
func goodLogin(t testing.TB, tok, pin string) {
	t.Helper()
	if _, err := home.hsm.Run("pkcs11-tool", "--token-label", tok, "--login", "--pin", pin, "--list-objects"); err != nil {
		t.Fatal(err)
	}
}

func (f *faulty) GenerateKeyPair(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, public, private []*pkcs11.Attribute) (pkcs11.ObjectHandle, pkcs11.ObjectHandle, error) {
	if err := fault("GenerateKeyPair"); err != nil {
		return 0, 0, err
	}
	return f.cryptoki.GenerateKeyPair(sh, m, public, private)
}
