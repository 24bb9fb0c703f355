package pem_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ib1/provenanced/backends"
	pembackend "github.com/ib1/provenanced/backends/pem"
	"github.com/ib1/provenanced/conf"
	"github.com/ib1/provenanced/internal/devsetup"
	"github.com/ib1/provenanced/testenv"
)

// setup writes a PKI, a member key (in the given encoding) and its bundle, and a config.
func setup(t *testing.T, encode func(*ecdsa.PrivateKey) []byte) (cfgPath string, files devsetup.Files) {
	t.Helper()
	dir := t.TempDir()
	_, files, err := devsetup.NewDevFiles(dir, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if encode != nil {
		key, err := pembackend.LoadKey(files.PrivateKey)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(files.PrivateKey, encode(key), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return testenv.NewConfig().DevKey().Write(t, dir), files
}

func open(t *testing.T, cfgPath string) (*backends.Key, error) {
	t.Helper()
	cfg, err := conf.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	return backends.Open(context.Background(), cfg.Keys[0], backends.Options{})
}

func sec1(k *ecdsa.PrivateKey) []byte {
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		panic(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
}

func TestOpenAndSign(t *testing.T) {
	for name, enc := range map[string]func(*ecdsa.PrivateKey) []byte{"pkcs8": nil, "sec1": sec1} {
		t.Run(name, func(t *testing.T) {
			cfgPath, _ := setup(t, enc)
			k, err := open(t, cfgPath)
			if err != nil {
				t.Fatal(err)
			}
			defer k.Close()
			if k.Name() != "signing" || k.Backend() != "pem" || len(k.Certificates()) != 2 {
				t.Fatalf("key %s/%s with %d certificates", k.Name(), k.Backend(), len(k.Certificates()))
			}
			d := sha256.Sum256([]byte("provenance"))
			sig, err := k.SignContext(context.Background(), d[:], crypto.SHA256)
			if err != nil {
				t.Fatal(err)
			}
			if !ecdsa.VerifyASN1(k.Public().(*ecdsa.PublicKey), d[:], sig) {
				t.Fatal("signature does not verify")
			}
			if !ecdsa.VerifyASN1(k.Leaf().PublicKey.(*ecdsa.PublicKey), d[:], sig) {
				t.Fatal("signature does not verify with the certificate's key")
			}
		})
	}
}

func TestSignRefusesOtherDigests(t *testing.T) {
	cfgPath, _ := setup(t, nil)
	k, err := open(t, cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		digest []byte
		opts   crypto.SignerOpts
	}{
		{make([]byte, 31), crypto.SHA256},
		{make([]byte, 48), crypto.SHA256},
		{make([]byte, 48), crypto.SHA384},
		{nil, nil},
	} {
		if _, err := k.SignContext(context.Background(), tc.digest, tc.opts); !errors.Is(err, backends.ErrInvalidDigest) {
			t.Errorf("digest of %d bytes, %v: err = %v, want ErrInvalidDigest", len(tc.digest), tc.opts, err)
		}
	}
}

func TestRefusesKeyOthersCanRead(t *testing.T) {
	cfgPath, files := setup(t, nil)
	if err := os.Chmod(files.PrivateKey, 0o640); err != nil {
		t.Fatal(err)
	}
	_, err := open(t, cfgPath)
	if err == nil {
		t.Fatal("opened a key file readable by its group")
	}
	for _, w := range []string{files.PrivateKey, "0640", "chmod 600", "keys.signing.private_key", cfgPath} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}
}

func TestRefusesCertificateOfAnotherKey(t *testing.T) {
	cfgPath, files := setup(t, nil)
	other, _ := devsetup.NewKey()
	pemKey, _ := devsetup.KeyPEM(other)
	if err := os.WriteFile(files.PrivateKey, pemKey, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := open(t, cfgPath)
	if err == nil {
		t.Fatal("opened a key whose certificate is for another key")
	}
	for _, w := range []string{files.Bundle, files.PrivateKey, "not for the key"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}
}

func TestRefusesOtherCurvesAndEncryptedKeys(t *testing.T) {
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(p384)
	for name, tc := range map[string]struct {
		data []byte
		want string
	}{
		"p384":      {pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), "P-384"},
		"encrypted": {pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1}}), "encrypted"},
		"cert":      {pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}), "not a private key"},
		"garbage":   {[]byte("not pem"), "no PEM private key"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := pembackend.ParseKey(tc.data)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestGenerateNeverOverwrites(t *testing.T) {
	dir := t.TempDir()
	cfg := testenv.NewConfig().PEMKey("new", "new-key.pem", "").Load(t, dir)
	pub, err := backends.Generate(context.Background(), cfg.Keys[0])
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "new-key.pem")
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode = %o, want 600", st.Mode().Perm())
	}
	k, err := pembackend.LoadKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if !k.PublicKey.Equal(pub) {
		t.Error("the file's key is not the key returned")
	}
	before, _ := os.ReadFile(path)
	if _, err := backends.Generate(context.Background(), cfg.Keys[0]); err == nil || !strings.Contains(err.Error(), "exists already") {
		t.Errorf("second Generate: err = %v", err)
	}
	after, _ := os.ReadFile(path)
	if string(before) != string(after) {
		t.Error("the existing key was changed")
	}
}

func TestUnknownBackend(t *testing.T) {
	dir := t.TempDir()
	_, err := open(t, testenv.NewConfig().Table("keys.x", "backend", "vault").Write(t, dir))
	if err == nil || !strings.Contains(err.Error(), `unknown backend "vault"`) || !strings.Contains(err.Error(), "pem") || !strings.Contains(err.Error(), "keys.x.backend") {
		t.Fatalf("err = %v", err)
	}
}

func TestURIIsRefusedByBackendsWithoutOne(t *testing.T) {
	dir := t.TempDir()
	_, err := open(t, testenv.NewConfig().PEMKey("x", "k.pem", "").Table("keys.x", "uri", "pkcs11:token=a").Write(t, dir))
	if err == nil || !strings.Contains(err.Error(), "keys.x.uri") || !strings.Contains(err.Error(), "does not take its key as a URI") {
		t.Fatalf("err = %v", err)
	}
}
