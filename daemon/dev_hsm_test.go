package daemon

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ib1/provenanced/conf"
)

// serve -dev DIR -hsm: the development key in a SoftHSM token, served by the pkcs11
// backend. (This is the only test of the package that loads SoftHSM, so it may set
// SOFTHSM2_CONF for the process.)
func TestPrepareDevHSM(t *testing.T) {
	dir := t.TempDir()
	cfgPath, created, err := PrepareDevHSM(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !created || cfgPath != filepath.Join(dir, DevConfigName) {
		t.Fatalf("PrepareDevHSM = %s, %v", cfgPath, created)
	}
	softhsm := DevSoftHSMConf(dir)
	if softhsm == "" {
		t.Fatal("DevSoftHSMConf found no SoftHSM config")
	}
	if _, again, err := PrepareDevHSM(dir); err != nil || again {
		t.Fatalf("second PrepareDevHSM: created %v, %v", again, err)
	}
	if st, err := os.Stat(filepath.Join(dir, "user.pin")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("user.pin: %v %v", st, err)
	}

	t.Setenv("SOFTHSM2_CONF", softhsm)
	cfg, err := conf.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Keys[0].Backend != "pkcs11" || cfg.Server.HTTP != DevHTTP {
		t.Fatalf("config: backend %q, http %q", cfg.Keys[0].Backend, cfg.Server.HTTP)
	}
	d, err := New(context.Background(), cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	msg := "hello"
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("POST", "/v1/keys/signing/sign", strings.NewReader(`{"message":"`+base64.StdEncoding.EncodeToString([]byte(msg))+`"}`))
	req.Header.Set("Content-Type", "application/json")
	d.Handler().ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("sign: %d %s", rec.Code, rec.Body)
	}
	var out struct{ Signature []byte }
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		t.Fatal(err)
	}
	bundle, err := os.ReadFile(cfg.Keys[0].Certificates)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(bundle)
	leaf, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte(msg))
	if !ecdsa.VerifyASN1(leaf.PublicKey.(*ecdsa.PublicKey), digest[:], out.Signature) {
		t.Fatal("the signature does not verify with the certificate's key")
	}

	pemDir := t.TempDir()
	if _, _, err := PrepareDev(pemDir); err != nil {
		t.Fatal(err)
	}
	if _, _, err := PrepareDevHSM(pemDir); err == nil || !strings.Contains(err.Error(), "PEM key") {
		t.Errorf("PrepareDevHSM on a PEM setup: %v", err)
	}
}
