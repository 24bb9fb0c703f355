package main

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ib1/provenanced/internal/devsetup"
	"github.com/ib1/provenanced/testenv"
)

// keys, sign and health reach a TCP listener with TLS and a client CA, as an operator in
// a pod or on another host would: -ca trusts the daemon's certificate, -cert (with
// -cert-key, or a file holding both) presents the client's; the PROVENANCED_* variables
// do the same. Without a client certificate, or without the CA, the handshake fails and
// the command says so (exit 1); TLS flags for the socket are a usage error (exit 2).
func TestClientCommandsOverMutualTLS(t *testing.T) {
	certDir := t.TempDir()
	tlsFiles(t, certDir)
	addr := freeAddr(t)
	p, _, pub := startConfig(t, testenv.NewConfig().Table("server", "tls_cert", filepath.Join(certDir, "server.pem"),
		"tls_key", filepath.Join(certDir, "server-key.pem"), "tls_client_ca", filepath.Join(certDir, "ca.pem")), addr)
	url := "https://" + addr
	ca, cert, key := filepath.Join(certDir, "ca.pem"), filepath.Join(certDir, "client.pem"), filepath.Join(certDir, "client-key.pem")
	tlsArgs := []string{"-url", url, "-ca", ca, "-cert", cert, "-cert-key", key}

	if out, code := testenv.Run(daemonBin, nil, append([]string{"keys"}, tlsArgs...)...); code != 0 || !strings.HasPrefix(out, "signing ") {
		t.Errorf("keys over mutual TLS: %d %s", code, out)
	}
	d := sha256.Sum256([]byte("over mutual TLS"))
	out, code := testenv.Run(daemonBin, nil, append([]string{"sign", "-key", "signing", "-digest", hex.EncodeToString(d[:])}, tlsArgs...)...)
	sig, err := base64.StdEncoding.DecodeString(out)
	if code != 0 || err != nil || !ecdsa.VerifyASN1(pub, d[:], sig) {
		t.Errorf("sign over mutual TLS: %d %s", code, out)
	}
	// The certificate and its key in one file, and everything from the variables.
	both := filepath.Join(t.TempDir(), "client-both.pem")
	certPEM, _ := os.ReadFile(cert)
	keyPEM, _ := os.ReadFile(key)
	os.WriteFile(both, append(certPEM, keyPEM...), 0o600)
	env := []string{"PROVENANCED_URL=" + url, "PROVENANCED_CA=" + ca, "PROVENANCED_CERT=" + both}
	if out, code := testenv.Run(daemonBin, env, "health", "-ready"); code != 0 || !strings.Contains(out, `"ready"`) {
		t.Errorf("health -ready with the PROVENANCED_* variables: %d %s", code, out)
	}
	// The same variables do not get in the way of the socket.
	if out, code := testenv.Run(daemonBin, env, "health", "-socket", p.Socket); code != 0 {
		t.Errorf("health on the socket with PROVENANCED_CA set: %d %s", code, out)
	}

	for name, c := range map[string]struct {
		args []string
		code int
		want string
	}{
		"no client certificate":         {[]string{"health", "-url", url, "-ca", ca}, 1, "certificate required"},
		"no CA":                         {[]string{"health", "-url", url, "-cert", cert, "-cert-key", key}, 1, "certificate signed by unknown authority"},
		"TLS flags on a socket":         {[]string{"health", "-socket", p.Socket, "-ca", ca}, 2, "are for an https:// URL"},
		"a key without its certificate": {[]string{"health", "-url", url, "-cert-key", key}, 2, "-cert-key goes with -cert"},
		"a CA file that is no CA":       {[]string{"health", "-url", url, "-ca", key}, 2, "holds no PEM certificate"},
	} {
		out, code := testenv.Run(daemonBin, nil, c.args...)
		if code != c.code || !strings.Contains(out, c.want) {
			t.Errorf("%s: exit %d, want %d with %q: %s", name, code, c.code, c.want, out)
		}
	}
}

// serve -check makes the checks serve makes before it listens, so that what -check
// passes serve does not then refuse: a socket whose folder is missing, an address that
// is not this machine's, are each exit status 2 from both, with the same message. The
// running daemon's own socket and port are busy, which -check notes without failing (it
// is run before a reload).
func TestServeCheckRunsServesChecks(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := devsetup.NewDevFiles(dir, time.Now()); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "p.toml")
	write := func(server string) {
		text := "[server]\n" + server + "[provenance]\nroot_ca = \"root-ca.pem\"\n[keys.signing]\nbackend = \"pem\"\nprivate_key = \"signing-key.pem\"\ncertificates = \"signing-bundle.pem\"\n"
		if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	env := []string{"PROVENANCED_HTTP=", "PROVENANCED_SOCKET="}
	for name, c := range map[string]struct{ server, want string }{
		"a socket folder that does not exist": {"socket = \"no-such-folder/p.sock\"\n", "server.socket: socket " + filepath.Join(dir, "no-such-folder/p.sock") + ": its folder"},
		"a socket path too long":              {"socket = \"" + strings.Repeat("x", 120) + ".sock\"\n", "server.socket: socket path"},
		"an address not on this machine":      {"socket = \"p.sock\"\nhttp = \"192.0.2.7:8080\"\n", "server.http: cannot listen on 192.0.2.7:8080"},
	} {
		write(c.server)
		check, checkCode := testenv.Run(daemonBin, env, "serve", "-check", "-config", cfg)
		serve, serveCode := testenv.Run(daemonBin, env, "serve", "-config", cfg)
		if checkCode != 2 || !strings.Contains(check, c.want) {
			t.Errorf("%s: serve -check: exit %d: %s", name, checkCode, check)
		}
		if serveCode != 2 || !strings.Contains(serve, c.want) {
			t.Errorf("%s: serve: exit %d: %s", name, serveCode, serve)
		}
	}

	addr := freeAddr(t)
	write(fmt.Sprintf("socket = \"p.sock\"\nhttp = %q\n", addr))
	testenv.StartDaemon(t, daemonBin, filepath.Join(dir, "p.sock"), addr, env, "serve", "-config", cfg)
	cmd := exec.Command(daemonBin, "serve", "-check", "-config", cfg)
	cmd.Env = append(os.Environ(), env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if err != nil || !strings.HasPrefix(string(stdout), cfg+": ok\n") ||
		!strings.Contains(stderr.String(), "note: server.socket: a process listens on "+filepath.Join(dir, "p.sock")) ||
		!strings.Contains(stderr.String(), "note: server.http: "+addr+" is in use now") {
		t.Errorf("serve -check beside the running daemon: %v\n%s\n%s", err, stdout, stderr.String())
	}
}

// cert check reads what serve reads without -config: the original service's environment
// and its .env, in the working folder.
func TestCertCheckInEnvironmentMode(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := devsetup.NewDevFiles(dir, time.Now()); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, ".env"), []byte("ROOT_CA_CERTIFICATE=root-ca.pem\nSIGNING_BUNDLE=signing-bundle.pem\nSIGNING_KEY=signing-key.pem\n"), 0o600)
	certCheck := func() ([]byte, error) {
		cmd := exec.Command(daemonBin, "cert", "check")
		cmd.Dir = dir
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "PROVENANCED_CONFIG=") {
				cmd.Env = append(cmd.Env, kv)
			}
		}
		return cmd.CombinedOutput()
	}
	out, err := certCheck()
	if err != nil || !strings.Contains(string(out), "key signing (pem") || !strings.Contains(string(out), "OK: the certificate is for this key") {
		t.Errorf("cert check in the original's environment mode: %v\n%s", err, out)
	}
	os.Remove(filepath.Join(dir, ".env"))
	out, err = certCheck()
	if code := exitCodeOf(err); code != 2 || !strings.Contains(string(out), "ROOT_CA_CERTIFICATE: missing") {
		t.Errorf("cert check with neither -config nor the environment: exit %d\n%s", code, out)
	}
}

func exitCodeOf(err error) int {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// A root CA that cannot be read is a configuration error, or a command line's, wherever it
// is named: exit status 2 with the key or flag at fault, as serve says it.
func TestRootCAErrorsExit2(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := devsetup.NewDevFiles(dir, time.Now()); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "p.toml")
	os.WriteFile(cfg, []byte("[server]\nsocket = \"p.sock\"\n[provenance]\nroot_ca = \"no-such-root.pem\"\n[keys.signing]\nbackend = \"pem\"\nprivate_key = \"signing-key.pem\"\ncertificates = \"signing-bundle.pem\"\n"), 0o644)
	record := filepath.Join(dir, "record.json")
	os.WriteFile(record, []byte(`{}`), 0o644)
	for name, c := range map[string]struct {
		args []string
		want string
	}{
		"cert check, the config's": {[]string{"cert", "check", "-config", cfg}, "provenance.root_ca"},
		"cert check -root":         {[]string{"cert", "check", "-config", cfg, "-root", filepath.Join(dir, "nope.pem")}, "-root"},
		"record verify -root":      {[]string{"record", "verify", "-root", filepath.Join(dir, "nope.pem"), record}, "-root"},
		"record verify, no PEM":    {[]string{"record", "verify", "-root", record, record}, "-root"},
		"serve, the config's":      {[]string{"serve", "-check", "-config", cfg}, "provenance.root_ca"},
	} {
		out, code := testenv.Run(daemonBin, []string{"PROVENANCED_HTTP=", "PROVENANCED_SOCKET="}, c.args...)
		if code != 2 || !strings.Contains(out, c.want) {
			t.Errorf("%s: exit %d, want 2 naming %s: %s", name, code, c.want, out)
		}
	}
}
