package backends_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ib1/provenanced/backends"
	"github.com/ib1/provenanced/conf"
)

// wrongSigner signs with a key in memory and, while wrong is set, spoils what it returns
// as a faulty token would: a bit of s flipped, or bytes that are no signature at all. No
// real backend can be made to do that on demand; the PKCS#11 end-to-end test does it to
// SoftHSM with a module that wraps its C_Sign.
type wrongSigner struct {
	key   *ecdsa.PrivateKey
	wrong atomic.Int32 // 0: right, 1: a bit flipped, 2: garbage
}

func (w *wrongSigner) Public() crypto.PublicKey { return &w.key.PublicKey }
func (w *wrongSigner) Sign(_ io.Reader, d []byte, _ crypto.SignerOpts) ([]byte, error) {
	return w.SignContext(context.Background(), d)
}
func (w *wrongSigner) SignContext(_ context.Context, d []byte) ([]byte, error) {
	sig, err := ecdsa.SignASN1(rand.Reader, w.key, d)
	switch w.wrong.Load() {
	case 1:
		sig[len(sig)-1] ^= 1
	case 2:
		sig = []byte("garbage")
	}
	return sig, err
}
func (w *wrongSigner) Location() string { return "test signer" }
func (w *wrongSigner) Close() error     { return nil }

var (
	remote, local = newWrongSigner(), newWrongSigner()
)

func newWrongSigner() *wrongSigner {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	return &wrongSigner{key: k}
}

func init() {
	backends.Register("wrong-remote", backends.Backend{Open: func(context.Context, *conf.Key) (backends.Signer, error) { return remote, nil }})
	backends.Register("wrong-local", backends.Backend{Open: func(context.Context, *conf.Key) (backends.Signer, error) { return local, nil }, InProcess: true})
}

// A signature from a backend outside the process that does not verify never leaves the
// key: the caller gets ErrBadSignature, as unavailable, and the observer counts it as
// "invalid"; a backend registered InProcess is trusted as it is.
func TestSignaturesAreChecked(t *testing.T) {
	var seen []string
	opts := backends.Options{Observe: func(string, string) backends.Observer {
		return func(_ time.Duration, err error) { seen = append(seen, backends.Outcome(err)) }
	}}
	k, err := backends.Open(context.Background(), conf.NewKey("k", "wrong-remote", "", "test", nil), opts)
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256([]byte("x"))
	if _, err := k.SignContext(context.Background(), d[:], crypto.SHA256); err != nil {
		t.Fatalf("a right signature: %v", err)
	}
	for mode, want := range map[int32]string{1: "a signature that does not verify", 2: "7 bytes that are not an ASN.1 DER ECDSA signature"} {
		remote.wrong.Store(mode)
		sig, err := k.SignContext(context.Background(), d[:], crypto.SHA256)
		if sig != nil || !errors.Is(err, backends.ErrBadSignature) || !errors.Is(err, backends.ErrUnavailable) {
			t.Fatalf("mode %d: %x, %v; want no signature and ErrBadSignature", mode, sig, err)
		}
		if !strings.Contains(err.Error(), want) {
			t.Errorf("mode %d: %q does not say %q", mode, err, want)
		}
		if err := k.CheckSigns(context.Background()); !errors.Is(err, backends.ErrBadSignature) {
			t.Errorf("mode %d: CheckSigns: %v", mode, err)
		}
	}
	remote.wrong.Store(0)
	if err := k.CheckSigns(context.Background()); err != nil {
		t.Errorf("CheckSigns on a right signer: %v", err)
	}
	if want := []string{"ok", "invalid", "invalid"}; len(seen) != 3 || seen[0] != want[0] || seen[1] != want[1] || seen[2] != want[2] {
		t.Errorf("observed %v, want %v (CheckSigns is not a client's signature)", seen, want)
	}

	lk, err := backends.Open(context.Background(), conf.NewKey("l", "wrong-local", "", "test", nil), backends.Options{})
	if err != nil {
		t.Fatal(err)
	}
	local.wrong.Store(1)
	defer local.wrong.Store(0)
	if _, err := lk.SignContext(context.Background(), d[:], crypto.SHA256); err != nil {
		t.Errorf("an InProcess backend's signature was checked: %v", err)
	}
}
