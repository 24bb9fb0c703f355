package conf

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func envFrom(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestReadDotEnv(t *testing.T) {
	p := filepath.Join(t.TempDir(), ".env")
	os.WriteFile(p, []byte(`# .env
ROOT_CA_CERTIFICATE=./certs/root-ca.pem
# SIGNING_KEY=./certs/vibt9775-key.pem
export KMS_KEY_ID="alias/x y"
SCHEME_URI='https://example/scheme'   
AWS_DEFAULT_REGION=eu-west-2 # London

EMPTY=
`), 0o600)
	vars, err := ReadDotEnv(p)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"ROOT_CA_CERTIFICATE": "./certs/root-ca.pem", "KMS_KEY_ID": "alias/x y", "SCHEME_URI": "https://example/scheme", "AWS_DEFAULT_REGION": "eu-west-2", "EMPTY": ""}
	if len(vars) != len(want) {
		t.Errorf("vars = %v", vars)
	}
	for k, v := range want {
		if vars[k] != v {
			t.Errorf("%s = %q, want %q", k, vars[k], v)
		}
	}
	os.WriteFile(p, []byte("JUST A LINE\n"), 0o600)
	if _, err := ReadDotEnv(p); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("bad line: %v", err)
	}
}

func TestFromEnvironmentPEM(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, ".env"), []byte("ROOT_CA_CERTIFICATE=certs/root.pem\nSIGNING_BUNDLE=certs/bundle.pem\nSIGNING_KEY=certs/key.pem\nSCHEME_URI=https://file/scheme\n"), 0o600)
	cfg, _, err := FromEnvironment(EnvSource{Getenv: envFrom(map[string]string{"SCHEME_URI": "https://env/scheme"}), DotEnv: filepath.Join(dir, ".env"), Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Provenance.RootCA != filepath.Join(dir, "certs/root.pem") || cfg.Provenance.Scheme != "https://env/scheme" || cfg.Provenance.TrustFramework != DefaultTrustFramework {
		t.Errorf("provenance = %+v (the environment wins over .env; paths are relative to the working directory)", cfg.Provenance)
	}
	if len(cfg.Keys) != 1 || cfg.Keys[0].Backend != "pem" || cfg.Keys[0].Certificates != filepath.Join(dir, "certs/bundle.pem") || cfg.Provenance.Key != "signing" {
		t.Fatalf("keys = %+v", cfg.Keys[0])
	}
	var opts struct {
		PrivateKey string `toml:"private_key"`
	}
	if err := cfg.Keys[0].Decode(&opts); err != nil || opts.PrivateKey != filepath.Join(dir, "certs/key.pem") {
		t.Errorf("private_key = %q, %v", opts.PrivateKey, err)
	}
	if cfg.Server.HTTP != DefaultHTTP || cfg.Server.Socket != "" {
		t.Errorf("listeners: %+v", cfg.Server)
	}
}

func TestFromEnvironmentKMSNeverFallsBack(t *testing.T) {
	env := map[string]string{"ROOT_CA_CERTIFICATE": "s3://b/root.pem", "SIGNING_BUNDLE": "s3://b/bundle.pem", "KMS_KEY_ID": "alias/provenance", "SIGNING_KEY": "key.pem", "AWS_DEFAULT_REGION": "eu-west-2"}
	src := EnvSource{Getenv: envFrom(env), Dir: "/work"}
	cfg, dotenv, err := FromEnvironment(src)
	if err != nil {
		t.Fatal(err)
	}
	k := cfg.Keys[0]
	if k.Backend != "awskms" || k.Certificates != "s3://b/bundle.pem" || cfg.Provenance.RootCA != "s3://b/root.pem" {
		t.Fatalf("key = %+v", k)
	}
	var opts struct {
		KeyID    string `toml:"key_id"`
		Region   string `toml:"region"`
		Endpoint string `toml:"endpoint"`
	}
	if err := k.Decode(&opts); err != nil || opts.KeyID != "alias/provenance" || opts.Region != "eu-west-2" {
		t.Errorf("opts = %+v, %v", opts, err)
	}
	// The key has only KMS fields: nothing a backend could fall back to.
	var narrow struct {
		KeyID string `toml:"key_id"`
	}
	if err := k.Decode(&narrow); err == nil || !strings.Contains(err.Error(), "AWS_REGION") {
		t.Errorf("a field the backend does not take was accepted: %v", err)
	}
	if err := k.Errorf("key_id", "not found"); !strings.Contains(err.Error(), "KMS_KEY_ID: not found") {
		t.Errorf("an error about the key does not name the variable: %v", err)
	}
	if note := IgnoredSigningKey(cfg, src, dotenv); !strings.Contains(note, "never falls back") {
		t.Errorf("note = %q", note)
	}
}

func TestFromEnvironmentMissing(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{}, "ROOT_CA_CERTIFICATE: missing"},
		{map[string]string{"ROOT_CA_CERTIFICATE": "r.pem"}, "SIGNING_BUNDLE: missing"},
		{map[string]string{"ROOT_CA_CERTIFICATE": "r.pem", "SIGNING_BUNDLE": "b.pem"}, "KMS_KEY_ID: no signing key"},
	} {
		_, _, err := FromEnvironment(EnvSource{Getenv: envFrom(tc.env), Dir: "/"})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err = %v, want %q", tc.env, err, tc.want)
		}
	}
}
