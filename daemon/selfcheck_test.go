package daemon

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ib1/provenanced/backends"
	"github.com/ib1/provenanced/conf"
)

// liarSigner is a backend outside the process (not InProcess) whose signatures can be
// made wrong on demand, with a Ready that always says yes, as a token's does when its
// sessions work but its signatures are wrong. No real backend signs wrong on demand; the
// end-to-end test in cmd/provenanced does it to SoftHSM through a module wrapping C_Sign.
type liarSigner struct {
	*ecdsa.PrivateKey
	wrong atomic.Bool
}

func (l *liarSigner) SignContext(_ context.Context, d []byte) ([]byte, error) {
	sig, err := ecdsa.SignASN1(rand.Reader, l.PrivateKey, d)
	if l.wrong.Load() {
		sig[len(sig)-1] ^= 1
	}
	return sig, err
}
func (l *liarSigner) Ready(context.Context) error { return nil }
func (l *liarSigner) Location() string            { return "test token" }
func (l *liarSigner) Close() error                { return nil }

var liar = &liarSigner{}

func init() {
	liar.PrivateKey, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	backends.Register("liar-test", backends.Backend{Open: func(context.Context, *conf.Key) (backends.Signer, error) { return liar, nil }})
}

// A signature that fails its check takes the key out of /readyz and backend_up at once,
// and the backend's own readiness check does not bring it back: only a signature that
// verifies does, a client's or the test signature of the next background check.
func TestBadSignatureHoldsReadinessUntilAGoodOne(t *testing.T) {
	m := NewMetrics("test")
	var logs bytes.Buffer
	var h *health
	k, err := backends.Open(context.Background(), conf.NewKey("signing", "liar-test", "", "test", nil), backends.Options{
		Observe: func(name, backend string) backends.Observer {
			metric := m.signObserver(name, backend)
			return func(took time.Duration, err error) { metric(took, err); h.observe(name, err) }
		}, WithoutCertificates: true})
	if err != nil {
		t.Fatal(err)
	}
	g := &generation{keys: []*backends.Key{k}, byName: map[string]*backends.Key{k.Name(): k}}
	h = newHealth(m, slog.New(slog.NewJSONHandler(&logs, nil)), func() *generation { return g })
	ready := func() bool { return len(h.reasonsLocked(nil)) == 0 }
	up := func() float64 { return value(t, m.BackendUp.WithLabelValues("signing", "liar-test")) }
	h.check(context.Background())
	if !ready() || up() != 1 {
		t.Fatalf("not ready at start: %v", h.reasons(context.Background()))
	}
	d := sha256.Sum256([]byte("x"))
	sign := func() error { _, err := k.SignContext(context.Background(), d[:], crypto.SHA256); return err }

	defer liar.wrong.Store(false)
	for _, recover := range []string{"a client's signature", "the background check"} {
		liar.wrong.Store(true)
		if err := sign(); !errors.Is(err, backends.ErrBadSignature) {
			t.Fatalf("a wrong signature: %v", err)
		}
		if ready() || up() != 0 {
			t.Fatalf("ready (backend_up %v) right after a wrong signature", up())
		}
		h.check(context.Background())
		if ready() || up() != 0 {
			t.Fatalf("ready (backend_up %v) after a background check that found the backend up but its signatures still wrong", up())
		}
		liar.wrong.Store(false)
		if recover == "a client's signature" {
			if err := sign(); err != nil {
				t.Fatal(err)
			}
		} else {
			h.check(context.Background())
		}
		if !ready() || up() != 1 {
			t.Fatalf("after %s verified: ready %v, backend_up %v", recover, ready(), up())
		}
		h.check(context.Background())
		if !ready() {
			t.Fatalf("after %s verified and another check: %v", recover, h.reasons(context.Background()))
		}
	}
	if !strings.Contains(logs.String(), `"msg":"key cannot sign"`) || !strings.Contains(logs.String(), "does not verify") {
		t.Errorf("the log does not say why the key was down:\n%s", logs.String())
	}
}
