//go:build originalclient

// This test runs only with the build tag originalclient (make original-client
// ORIGINAL_CLIENT=path/to/test_client.py): the original's client cannot be copied into
// this repository, and a test that skips where it is absent would be a skipped test in
// every CI run.

package main

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ib1/provenanced/internal/devsetup"
	"github.com/ib1/provenanced/testenv"
)

// originalClientSHA256 is the SHA-256 of test_client.py as the original service's
// repository has it (github.com/icebreakerone/provenance-service, commit 369c576, the one
// version of the file): the test runs that file and no other.
const originalClientSHA256 = "5d714611ccc8cf941772fab23918249466481dfcad0d11cb293589f3bcc648a9"

// originalClient is where the original's test_client.py is: $PROVENANCED_ORIGINAL_CLIENT.
// It is not in this repository: the original's repository grants no licence (no LICENSE
// file, no licence in its pyproject.toml), so its code may be run but not copied here.
func originalClient(t *testing.T) string {
	t.Helper()
	path := os.Getenv("PROVENANCED_ORIGINAL_CLIENT")
	if path == "" {
		t.Fatal("PROVENANCED_ORIGINAL_CLIENT is not set: clone github.com/icebreakerone/provenance-service and set it to its test_client.py (make original-client ORIGINAL_CLIENT=...); the file cannot be copied here: its repository grants no licence")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != originalClientSHA256 {
		t.Fatalf("%s is not the original's test_client.py of commit 369c576 (SHA-256 %x)", path, sum)
	}
	return path
}

// The original service's own test_client.py, unchanged, against the daemon in the
// original's place: the environment mode (its .env in the working folder, no config file)
// on 127.0.0.1:8000, where the client looks (BASE_URL http://localhost:8000, fastapi dev's
// port), run by Debian's python3. It signs an EDP record, then a CAP record on it, which
// names the EDP member https://member.core.sandbox.trust.ib1.org/m/4tnapijm: the test PKI
// issues the daemon's certificate to that member, as an energy data provider. The daemon
// and the client share a network namespace of their own, so port 8000 is theirs whatever
// else runs on the machine.
func TestOriginalTestClientUnchanged(t *testing.T) {
	client := originalClient(t)
	if os.Geteuid() != 0 {
		t.Fatal("needs root, for a network namespace of its own (ip netns)")
	}
	dir := t.TempDir()
	writeOriginalSetup(t, dir)
	ns := newNetns(t)
	// The daemon reaches its namespace through ip, and the original's working folder, where
	// its .env is, through env -C; the test reaches the daemon on its socket, which no
	// network namespace hides.
	socket := filepath.Join(dir, "provenanced.sock")
	p := testenv.StartDaemon(t, "ip", socket, "", []string{"PROVENANCED_HTTP=127.0.0.1:8000", "PROVENANCED_SOCKET=" + socket, "PROVENANCED_CONFIG="},
		"netns", "exec", ns, "env", "-C", dir, daemonBin, "serve")
	waitReadyz(t, p.Client(), p.URL("/readyz"), 20*time.Second)

	run := exec.Command("ip", "netns", "exec", ns, "/usr/bin/python3", client)
	run.Dir = dir
	run.Env = append(os.Environ(), "PYTHONPATH="+pydanticShim(t))
	out, err := run.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "All tests completed successfully!") {
		t.Fatalf("the original's test_client.py: %v\n%s\n\nthe daemon:\n%s", err, out, p.Output())
	}
	for _, f := range []string{"edp_provenance_record.json", "cap_provenance_record.json"} {
		msg, code := testenv.Run(daemonBin, nil, "record", "verify", "-root", filepath.Join(dir, "certs/root-ca.pem"), filepath.Join(dir, f))
		if code != 0 {
			t.Errorf("%s, written by the client, does not verify: %s", f, msg)
		}
	}
}

// writeOriginalSetup writes the original's setup into dir: certificates where its .env
// names them, for the member its test client names as the EDP, and that .env.
func writeOriginalSetup(t *testing.T, dir string) {
	t.Helper()
	now := time.Now()
	pki, err := devsetup.NewPKI(now)
	if err != nil {
		t.Fatal(err)
	}
	key, err := devsetup.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	m := devsetup.DevMember(now)
	m.Member = "https://member.core.sandbox.trust.ib1.org/m/4tnapijm"
	leaf, err := pki.Issue(&key.PublicKey, m)
	if err != nil {
		t.Fatal(err)
	}
	files, err := pki.WriteFiles(filepath.Join(dir, "certs"), key, leaf)
	if err != nil {
		t.Fatal(err)
	}
	rel := func(path string) string { return "./certs/" + filepath.Base(path) }
	env := "ROOT_CA_CERTIFICATE=" + rel(files.RootCA) + "\nSIGNING_BUNDLE=" + rel(files.Bundle) + "\nSIGNING_KEY=" + rel(files.PrivateKey) +
		"\nSCHEME_URI=https://registry.core.sandbox.trust.ib1.org/scheme/perseus\n"
	if err := os.WriteFile(filepath.Join(dir, ".env"), []byte(env), 0o600); err != nil {
		t.Fatal(err)
	}
}

// newNetns makes a network namespace with its loopback up, removed at cleanup.
func newNetns(t *testing.T) string {
	t.Helper()
	b := make([]byte, 4)
	rand.Read(b)
	ns := "provenanced-orig-" + hex.EncodeToString(b)
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	if out, err := exec.Command("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("loopback up: %v: %s", err, out)
	}
	return ns
}

// pydanticShim is a folder for PYTHONPATH when Debian's python3 has no
// pydantic.config.JsonDict: test_client.py imports that name and never uses it, and
// Debian 12 packages pydantic 1.10, which lacks it (pydantic 2 is not packaged there). A
// module holding that one name stands in; with a pydantic 2 installed, nothing does.
func pydanticShim(t *testing.T) string {
	t.Helper()
	if exec.Command("/usr/bin/python3", "-c", "from pydantic.config import JsonDict").Run() == nil {
		return ""
	}
	dir := t.TempDir()
	pkg := filepath.Join(dir, "pydantic")
	if err := os.MkdirAll(pkg, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(pkg, "__init__.py"), nil, 0o644)
	os.WriteFile(filepath.Join(pkg, "config.py"), []byte("from typing import Any, Dict\n\nJsonDict = Dict[str, Any]\n"), 0o644)
	return dir
}
