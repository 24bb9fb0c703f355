package conf

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// SameKey decides whether a reload may keep a key's open backend: every field but the
// certificate bundle counts, and so does the folder relative paths resolve against.
func TestSameKey(t *testing.T) {
	dir := t.TempDir()
	load := func(name, table string) *Key {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("[keys.k]\n"+table), 0o644); err != nil {
			t.Fatal(err)
		}
		c, err := Load(p)
		if err != nil {
			t.Fatal(err)
		}
		return c.Keys[0]
	}
	base := load("a.toml", "backend = \"pkcs11\"\nmodule = \"/m.so\"\nkey_label = \"s\"\npin = \"file:pin\"\ncertificates = \"b1.pem\"\n")
	for _, tc := range []struct {
		name, file, table string
		same              bool
	}{
		{"a new bundle only", "b.toml", "backend = \"pkcs11\"\nmodule = \"/m.so\"\nkey_label = \"s\"\npin = \"file:pin\"\ncertificates = \"b2.pem\"\n", true},
		{"fields reordered", "c.toml", "key_label = \"s\"\npin = \"file:pin\"\nbackend = \"pkcs11\"\nmodule = \"/m.so\"\n", true},
		{"another label", "d.toml", "backend = \"pkcs11\"\nmodule = \"/m.so\"\nkey_label = \"t\"\npin = \"file:pin\"\n", false},
		{"a field added", "e.toml", "backend = \"pkcs11\"\nmodule = \"/m.so\"\nkey_label = \"s\"\npin = \"file:pin\"\nmax_sessions = 2\n", false},
		{"relative paths from another folder", "sub/f.toml", "backend = \"pkcs11\"\nmodule = \"/m.so\"\nkey_label = \"s\"\npin = \"file:pin\"\n", false},
	} {
		if got := base.SameKey(load(tc.file, tc.table)); got != tc.same {
			t.Errorf("%s: SameKey = %v, want %v", tc.name, got, tc.same)
		}
	}
	env := func(label string) *Key {
		return NewKey("k", "pkcs11", "", "environment", map[string]any{"key_label": label})
	}
	if !env("s").SameKey(env("s")) || env("s").SameKey(env("t")) {
		t.Error("keys from the environment: SameKey does not follow their options")
	}
	if env("s").SameKey(base) {
		t.Error("a key from the environment is the same as one from a file")
	}
}

func TestMetricsHTTP(t *testing.T) {
	c, err := Load(writeConfig(t, "[server]\nmetrics_http = \"127.0.0.1:9090\"\n"))
	if err != nil || c.Server.MetricsHTTP != "127.0.0.1:9090" {
		t.Fatalf("%v %+v", err, c)
	}
	_, err = Load(writeConfig(t, "[server]\nmetrics_http = \"9090\"\n"))
	if err == nil || !strings.Contains(err.Error(), "server.metrics_http") || !strings.Contains(err.Error(), "host:port") {
		t.Errorf("a bad metrics_http: %v", err)
	}
}
