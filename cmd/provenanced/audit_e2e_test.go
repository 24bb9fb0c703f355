package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/ib1/provenanced/internal/devsetup"
	"github.com/ib1/provenanced/testenv"
)

// sealedDaemon is a daemon whose audit log is sealed by a key in the KMS emulator (a key
// nobody can copy, whose backend the test can take down), its signing key a PEM file.
type sealedDaemon struct {
	dir, config, audit, head string
	kms                      *testenv.LocalKMS
	env                      []string
	p                        *testenv.Process
}

func newSealedDaemon(t *testing.T) *sealedDaemon {
	t.Helper()
	dir := t.TempDir()
	_, files, err := devsetup.NewDevFiles(dir, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	lk := testenv.StartLocalKMS(t)
	lk.CreateKey(t, types.KeySpecEccNistP256, types.KeyUsageTypeSignVerify, "alias/audit-seal")
	d := &sealedDaemon{dir: dir, audit: filepath.Join(dir, "audit.jsonl"), head: filepath.Join(dir, "audit.head"), kms: lk}
	for k, v := range testenv.AWSTestEnv {
		d.env = append(d.env, k+"="+v)
	}
	d.config = testenv.NewConfig().
		Table("server", "socket", "provenanced.sock").
		Table("keys.signing", "backend", "pem", "private_key", files.PrivateKey, "certificates", files.Bundle).
		Table("keys.audit", "backend", "awskms", "key_id", "alias/audit-seal", "region", testenv.LocalKMSRegion, "endpoint", lk.Endpoint()).
		Table("audit", "file", "audit.jsonl", "seal_key", "audit", "seal_interval", "200ms", "head_file", "audit.head").
		Write(t, dir)
	return d
}

func (d *sealedDaemon) start(t *testing.T) {
	t.Helper()
	d.p = testenv.StartDaemon(t, daemonBin, filepath.Join(d.dir, "provenanced.sock"), "", d.env, "serve", "-config", d.config)
}

func (d *sealedDaemon) stop(t *testing.T) {
	t.Helper()
	d.p.Signal(syscall.SIGTERM)
	if code, err := d.p.Wait(30 * time.Second); code != 0 {
		t.Fatalf("stop: exit %d %v\n%s", code, err, d.p.Output())
	}
}

func (d *sealedDaemon) sign(t *testing.T, n int) {
	t.Helper()
	for i := range n {
		resp, err := d.p.Client().Post(d.p.URL("/v1/keys/signing/sign"), "application/json", strings.NewReader(digestBody(i)))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("sign: %d %s", resp.StatusCode, body)
		}
	}
}

// checkpoints counts the checkpoint lines of the files.
func checkpoints(files ...string) int {
	n := 0
	for _, f := range files {
		data, _ := os.ReadFile(f)
		n += bytes.Count(data, []byte(`"op":"checkpoint"`))
	}
	return n
}

// A sealed log through what operators and accidents do to it: logrotate's move and a
// SIGHUP, the seal key's backend down (signing goes on, unsealed) and back, a stop and a
// start; then audit verify with the seal key's public key (as GET /v1/keys gives it) and
// the head file passes, a rewritten log fails, and the chain alone passes only with a
// warning.
func TestSealedAuditLog(t *testing.T) {
	d := newSealedDaemon(t)
	d.start(t)
	d.sign(t, 5)
	waitFor(t, "a checkpoint", func() bool { return checkpoints(d.audit) > 0 })
	if !strings.Contains(d.p.Output(), `"msg":"audit checkpoint"`) {
		t.Errorf("no checkpoint in the daemon's log:\n%s", d.p.Output())
	}
	m := scrapeClient(t, d.p)
	if !strings.Contains(m, "provenanced_audit_sealed_seq 5") {
		t.Errorf("sealed_seq:\n%s", grepLines(m, "provenanced_audit"))
	}
	os.Rename(d.audit, d.audit+".1")
	d.p.Signal(syscall.SIGHUP)
	waitFor(t, "the reopened file", func() bool { _, err := os.Stat(d.audit); return err == nil })
	d.sign(t, 3)

	d.kms.Stop() // the seal key's backend is down: signing goes on, lines unsealed
	before := checkpoints(d.audit+".1", d.audit)
	d.sign(t, 3)
	waitFor(t, "a failed checkpoint", func() bool {
		return strings.Contains(scrapeClient(t, d.p), "provenanced_audit_seal_failures_total 1") ||
			strings.Contains(scrapeClient(t, d.p), "provenanced_audit_seal_failures_total 2")
	})
	if n := checkpoints(d.audit+".1", d.audit); n != before {
		t.Fatalf("%d checkpoints with the seal key down, %d before", n, before)
	}
	d.kms.Restart(t)
	d.sign(t, 1)
	waitFor(t, "a checkpoint with the seal key back", func() bool { return checkpoints(d.audit+".1", d.audit) > before })
	d.stop(t)
	d.start(t)
	d.sign(t, 2)
	pub := keyPublicPEM(t, d.p, "audit")
	d.stop(t)

	pubFile := filepath.Join(d.dir, "audit-pub.pem")
	os.WriteFile(pubFile, []byte(pub), 0o644)
	files := []string{d.audit + ".1", d.audit}
	out, code := testenv.Run(daemonBin, nil, append([]string{"audit", "verify", "-key", pubFile, "-head", d.head}, files...)...)
	if code != 0 || !strings.Contains(out, "OK ") || !strings.Contains(out, "sealed: ") || !strings.Contains(out, "0 after the last checkpoint") {
		t.Fatalf("audit verify of the sealed log: exit %d\n%s", code, out)
	}

	// Rewritten: a line changed and every later hash recomputed, as anyone who can write
	// the file can do.
	lines := bytes.SplitAfter(bytes.TrimSuffix(mustRead(t, d.audit+".1"), []byte("\n")), []byte("\n"))
	lines[0] = bytes.Replace(lines[0], []byte(`"status":200`), []byte(`"status":201`), 1)
	forged := filepath.Join(d.dir, "forged.jsonl")
	os.WriteFile(forged, bytes.Join(testenv.RechainAudit(t, lines, 1), nil), 0o600)
	if out, code := testenv.Run(daemonBin, nil, "audit", "verify", "-key", pubFile, forged); code != 1 || !strings.Contains(out, "signature is not the seal key's") {
		t.Errorf("a rewritten sealed log: exit %d\n%s", code, out)
	}
	if out, code := testenv.Run(daemonBin, nil, "audit", "verify", forged); code != 0 || !strings.Contains(out, "warning: the hash chain alone") {
		t.Errorf("the chain alone of a rewritten log: exit %d\n%s", code, out)
	}
}

// A file whose end the head file contradicts stops the daemon at start (exit 2) with
// both named and the command that records the break; after it, the daemon starts.
func TestAuditHeadMismatchStopsStart(t *testing.T) {
	d := newSealedDaemon(t)
	d.start(t)
	d.sign(t, 4)
	d.stop(t)
	lines := bytes.SplitAfter(bytes.TrimSuffix(mustRead(t, d.audit), []byte("\n")), []byte("\n"))
	os.WriteFile(d.audit, bytes.Join(lines[:2], nil), 0o600) // the end lost
	out, code := testenv.Run(daemonBin, d.env, "serve", "-config", d.config)
	if code != 2 || !strings.Contains(out, d.audit) || !strings.Contains(out, d.head) || !strings.Contains(out, "provenanced audit acknowledge -config "+d.config) {
		t.Fatalf("start with the end of the file lost: exit %d\n%s", code, out)
	}
	out, code = testenv.Run(daemonBin, d.env, "audit", "acknowledge", "-config", d.config, "-reason", "disk restored from a snapshot")
	if code != 0 || !strings.Contains(out, "acknowledged") {
		t.Fatalf("acknowledge: exit %d\n%s", code, out)
	}
	d.start(t)
	d.sign(t, 1)
	d.stop(t)
	out, code = testenv.Run(daemonBin, nil, "audit", "verify", "-head", d.head, d.audit)
	if code != 0 || !strings.Contains(out, "acknowledged break") || !strings.Contains(out, "disk restored from a snapshot") {
		t.Fatalf("verify after the acknowledged break: exit %d\n%s", code, out)
	}
}

// With file = "-" and a reader of standard output that is gone, the next line is a write
// error: the request fails closed (503), the daemon says why and keeps serving; no
// SIGPIPE ends it.
func TestAuditStdoutReaderGone(t *testing.T) {
	dir := t.TempDir()
	_, files, err := devsetup.NewDevFiles(dir, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cfg := testenv.NewConfig().
		Table("server", "socket", "provenanced.sock").
		Table("keys.signing", "backend", "pem", "private_key", files.PrivateKey).
		Table("audit", "file", "-").
		Write(t, dir)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(daemonBin, "serve", "-config", cfg)
	var stderr testenv.SyncBuffer
	cmd.Stdout, cmd.Stderr = w, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	c := testenv.UnixClient(filepath.Join(dir, "provenanced.sock"))
	waitFor(t, "the daemon", func() bool {
		resp, err := c.Get("http://provenanced/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	})
	r.Close() // the reader is gone
	resp, err := c.Post("http://provenanced/v1/keys/signing/sign", "application/json", strings.NewReader(digestBody(1)))
	if err != nil {
		t.Fatalf("the daemon died: %v\n%s", err, stderr.String())
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || !bytes.Contains(body, []byte("audit log cannot be written")) {
		t.Fatalf("sign with standard output closed: %d %s", resp.StatusCode, body)
	}
	resp, err = c.Get("http://provenanced/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("the daemon does not serve after the write error: %v\n%s", err, stderr.String())
	}
	resp.Body.Close()
	if !strings.Contains(stderr.String(), "audit log write failed") || !strings.Contains(stderr.String(), "broken pipe") {
		t.Errorf("the log does not say why:\n%s", stderr.String())
	}
}

func scrapeClient(t *testing.T, p *testenv.Process) string {
	t.Helper()
	resp, err := p.Client().Get(p.URL("/metrics"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// keyPublicPEM is a key's public key as GET /v1/keys/NAME gives it.
func keyPublicPEM(t *testing.T, p *testenv.Process, name string) string {
	t.Helper()
	resp, err := p.Client().Get(p.URL("/v1/keys/" + name))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var k struct {
		PublicKey string `json:"public_key"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&k) != nil {
		t.Fatalf("GET /v1/keys/%s: %d", name, resp.StatusCode)
	}
	return k.PublicKey
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
