package conf

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "provenanced.toml")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const goodConfig = `
[server]
socket = "run/p.sock"
socket_mode = "0640"
http = "127.0.0.1:9999"
max_request_bytes = 2048
shutdown_timeout = "3s"

[provenance]
root_ca = "certs/root.pem"
key = "b"

[keys.b]
backend = "pem"
private_key = "k.pem"
certificates = "certs/bundle.pem"

[keys.a]
backend = "pem"
private_key = "/abs/k.pem"
certificates = "s3://bucket/bundle.pem"
`

func TestLoadResolvesPathsAndKeepsOrder(t *testing.T) {
	p := writeConfig(t, goodConfig)
	dir := filepath.Dir(p)
	cfg, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.File != p {
		t.Errorf("File = %q, want %q", cfg.File, p)
	}
	if got, want := cfg.Server.Socket, filepath.Join(dir, "run/p.sock"); got != want {
		t.Errorf("socket = %q, want %q", got, want)
	}
	if cfg.Server.SocketMode != 0o640 {
		t.Errorf("socket_mode = %o, want 640", cfg.Server.SocketMode)
	}
	if cfg.Server.ShutdownTimeout.D() != 3*time.Second || cfg.Server.MaxRequestBytes != 2048 {
		t.Errorf("server = %+v", cfg.Server)
	}
	if cfg.Server.SignTimeout.D() != DefaultSignTimeout || cfg.Server.MaxBatch != DefaultMaxBatch {
		t.Errorf("defaults not kept: %+v", cfg.Server)
	}
	if got, want := cfg.Provenance.RootCA, filepath.Join(dir, "certs/root.pem"); got != want {
		t.Errorf("root_ca = %q, want %q", got, want)
	}
	if cfg.Provenance.TrustFramework != DefaultTrustFramework {
		t.Errorf("trust_framework default = %q", cfg.Provenance.TrustFramework)
	}
	if got := strings.Join(cfg.KeyNames(), ","); got != "b,a" {
		t.Errorf("key order = %s, want the file's order b,a", got)
	}
	b := cfg.KeyByName("b")
	if b.Certificates != filepath.Join(dir, "certs/bundle.pem") {
		t.Errorf("certificates = %q", b.Certificates)
	}
	if a := cfg.KeyByName("a"); a.Certificates != "s3://bucket/bundle.pem" {
		t.Errorf("s3 source changed: %q", a.Certificates)
	}
	var opts struct {
		PrivateKey string `toml:"private_key"`
	}
	if err := b.Decode(&opts); err != nil {
		t.Fatal(err)
	}
	if b.Path(opts.PrivateKey) != filepath.Join(dir, "k.pem") {
		t.Errorf("private_key resolves to %q", b.Path(opts.PrivateKey))
	}
	if name, err := cfg.SigningKey(); err != nil || name != "b" {
		t.Errorf("SigningKey = %q, %v", name, err)
	}
}

func TestLoadErrorsNameFileKeyAndAccepted(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		want       []string
	}{
		{"unknown server key", "[server]\nsocket_path = \"x\"\n", []string{"server.socket_path", "unknown key", "socket_mode", "max_request_bytes"}},
		{"unknown section", "[serve]\nhttp = \"x\"\n", []string{"serve", "unknown section", "[server]"}},
		{"unknown provenance key", "[provenance]\nroot = \"x\"\n", []string{"provenance.root", "root_ca"}},
		{"bad socket_mode", "[server]\nsocket_mode = \"rw-rw----\"\n", []string{"socket_mode", "octal"}},
		{"socket_mode too wide", "[server]\nsocket_mode = \"4755\"\n", []string{"socket_mode", "0777"}},
		{"socket_mode decimal integer", "[server]\nsocket_mode = 660\n", []string{"socket_mode", "0777"}},
		{"bad duration", "[server]\nshutdown_timeout = \"15\"\n", []string{"shutdown_timeout", "duration"}},
		{"bad http", "[server]\nhttp = \"8080\"\n", []string{"server.http", "host:port"}},
		{"bad log level", "[server]\nlog_level = \"loud\"\n", []string{"server.log_level", "debug, info, warn, error"}},
		{"key without backend", "[keys.x]\nprivate_key = \"k\"\n", []string{"keys.x.backend", "missing", "pem"}},
		{"provenance key unknown", "[provenance]\nkey = \"nope\"\n[keys.x]\nbackend = \"pem\"\n", []string{"provenance.key", "[keys.nope]", "x"}},
		{"not toml", "[server\n", []string{"not valid TOML", "line"}},
		{"wrong type", "[server]\nmax_request_bytes = \"big\"\n", []string{"max_request_bytes"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := writeConfig(t, tc.text)
			_, err := Load(p)
			if err == nil {
				t.Fatal("Load accepted a bad config")
			}
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %T is not a *conf.Error: %v", err, err)
			}
			msg := err.Error()
			for _, w := range append([]string{p}, tc.want...) {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not mention %q", msg, w)
				}
			}
		})
	}
}

// Whoever can write the config decides who may sign: a file any user may write is
// refused, before it is read.
func TestConfigWritableByOthers(t *testing.T) {
	p := writeConfig(t, "[server]\nsocket = \"p.sock\"\n")
	if err := os.Chmod(p, 0o646); err != nil {
		t.Fatal(err)
	}
	_, err := Load(p)
	if err == nil || !strings.Contains(err.Error(), "the file has mode 0646, so any user can change who may sign; run: chmod o-w "+p) {
		t.Fatalf("err = %v", err)
	}
	os.Chmod(p, 0o664) // the group may write: the operator's choice
	if _, err := Load(p); err != nil {
		t.Fatal(err)
	}
}

func TestAbuseLimits(t *testing.T) {
	c, err := Load(writeConfig(t, "[server]\nsocket = \"p.sock\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	s := c.Server
	if s.MaxConnections != 512 || s.MaxConnectionsPerPeer != 64 || s.MetricsMaxConnections != 16 || s.IdleTimeout.D() != 30*time.Second ||
		s.RefusalRate != 5 || s.RefusalBurst != 20 || s.VerifyConcurrency != 0 {
		t.Errorf("defaults: %+v", s)
	}
	for text, want := range map[string]string{
		"max_connections = 0": "server.max_connections: must be a positive number",
		"max_connections = 10\nmax_connections_per_peer = 11": "server.max_connections_per_peer: 11 is more than max_connections (10)",
		"idle_timeout = \"0s\"":                               "server.idle_timeout: must be a positive duration",
		"refusal_rate = 0":                                    "server.refusal_rate: must be a positive number",
		"refusal_burst = -1":                                  "server.refusal_burst: must be a positive number",
		"verify_concurrency = -1":                             "server.verify_concurrency: must not be negative",
		"metrics_max_connections = 0":                         "server.metrics_max_connections: must be a positive number",
	} {
		if _, err := Load(writeConfig(t, "[server]\nsocket = \"p.sock\"\n"+text+"\n")); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", text, err, want)
		}
	}
}

func TestMissingFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "absent.toml")
	_, err := Load(p)
	if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("err = %v", err)
	}
}

func TestDecodeRejectsFieldsTheBackendDoesNotKnow(t *testing.T) {
	p := writeConfig(t, "[keys.signing]\nbackend = \"pem\"\nprivate_key = \"k.pem\"\nmodule = \"/usr/lib/x.so\"\n")
	cfg, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	var opts struct {
		PrivateKey string `toml:"private_key"`
	}
	err = cfg.Keys[0].Decode(&opts)
	if err == nil {
		t.Fatal("Decode accepted a field the backend does not know")
	}
	for _, w := range []string{p, "keys.signing.module", `backend "pem"`, "private_key", "certificates"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}
}

func TestURIImpliesBackend(t *testing.T) {
	p := writeConfig(t, "[keys.hsm]\nuri = \"pkcs11:token=prov;object=signing\"\n")
	cfg, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if k := cfg.Keys[0]; k.Backend != "pkcs11" || k.URI != "pkcs11:token=prov;object=signing" {
		t.Errorf("key = %+v", k)
	}
}

func TestApplyEnv(t *testing.T) {
	p := writeConfig(t, goodConfig)
	for _, tc := range []struct {
		env          map[string]string
		socket, http string
		err          string
	}{
		{env: map[string]string{"PROVENANCED_HTTP": "127.0.0.1:7000"}, socket: filepath.Join(filepath.Dir(p), "run/p.sock"), http: "127.0.0.1:7000"},
		{env: map[string]string{"PROVENANCED_HTTP": "off"}, socket: filepath.Join(filepath.Dir(p), "run/p.sock"), http: ""},
		{env: map[string]string{"PROVENANCED_SOCKET": "/tmp/x.sock"}, socket: "/tmp/x.sock", http: "127.0.0.1:9999"},
		{env: map[string]string{"PROVENANCED_SOCKET": "off", "PROVENANCED_HTTP": "off"}, err: "neither a Unix socket nor a TCP address"},
		{env: map[string]string{"PROVENANCED_HTTP": "nonsense"}, err: "PROVENANCED_HTTP"},
	} {
		cfg, err := Load(p)
		if err != nil {
			t.Fatal(err)
		}
		err = cfg.ApplyEnv(func(k string) string { return tc.env[k] })
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("env %v: err = %v, want %q", tc.env, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("env %v: %v", tc.env, err)
			continue
		}
		if cfg.Server.Socket != tc.socket || cfg.Server.HTTP != tc.http {
			t.Errorf("env %v: socket %q http %q, want %q %q", tc.env, cfg.Server.Socket, cfg.Server.HTTP, tc.socket, tc.http)
		}
	}
}

func TestSocketModeAcceptsTOMLOctal(t *testing.T) {
	cfg, err := Load(writeConfig(t, "[server]\nsocket_mode = 0o600\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Server.SocketMode != 0o600 {
		t.Errorf("socket_mode = %o", cfg.Server.SocketMode)
	}
}

// A config file opens a TCP listener only when it names one: a socket-only file must not
// also listen on 127.0.0.1:8080, where its socket's permissions protect nothing.
func TestNoTCPUnlessConfigured(t *testing.T) {
	cfg, err := Load(writeConfig(t, "[server]\nsocket = \"p.sock\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Server.HTTP != "" {
		t.Errorf("http = %q without server.http in the file, want none", cfg.Server.HTTP)
	}
	cfg, err = Load(writeConfig(t, "[server]\nhttp = \"127.0.0.1:0\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\ntls_client_ca = \"ca.pem\"\nallowed_hosts = [\"signer.internal\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.Server
	if s.HTTP != "127.0.0.1:0" || !filepath.IsAbs(s.TLSCert) || filepath.Base(s.TLSKey) != "k.pem" || filepath.Base(s.TLSClientCA) != "ca.pem" || len(s.AllowedHosts) != 1 {
		t.Errorf("server = %+v", s)
	}
	for text, want := range map[string]string{
		"[server]\nhttp = \"127.0.0.1:0\"\ntls_cert = \"c.pem\"\n":                  "server.tls_cert: tls_cert and tls_key go together",
		"[server]\nhttp = \"127.0.0.1:0\"\ntls_client_ca = \"ca.pem\"\n":            "server.tls_client_ca: needs tls_cert",
		"[server]\nhttp = \"127.0.0.1:0\"\nallowed_hosts = [\"evil.example:80\"]\n": "server.allowed_hosts: \"evil.example:80\" is not a host name",
	} {
		_, err := Load(writeConfig(t, text))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", text, err, want)
		}
	}
}
