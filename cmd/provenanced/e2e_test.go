package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ib1/provenanced/client"
	"github.com/ib1/provenanced/internal/devsetup"
	"github.com/ib1/provenanced/testenv"
)

var daemonBin string

func TestMain(m *testing.M) {
	// The daemon's KMS keys take credentials from the SDK's standard chain, as in
	// production: here, dummy ones from the environment, with ~/.aws and instance metadata
	// shut out (for the daemons this process runs, and those it starts).
	testenv.SetAWSTestEnv()
	dir, err := os.MkdirTemp("", "provenanced-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	daemonBin, err = testenv.BuildDaemon(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// startDev runs `provenanced serve -dev DIR` with its TCP listener on a free port.
func startDev(t *testing.T) (*testenv.Process, string) {
	t.Helper()
	dir := t.TempDir()
	addr, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	p := testenv.StartDaemon(t, daemonBin, filepath.Join(dir, "provenanced.sock"), addr,
		[]string{"PROVENANCED_HTTP=" + addr}, "serve", "-dev", dir)
	return p, dir
}

// opensslVerify checks a DER signature over data with openssl, against a PEM public key.
func opensslVerify(t *testing.T, pubPEM string, data, sig []byte) {
	t.Helper()
	dir := t.TempDir()
	pub, dataFile, sigFile := filepath.Join(dir, "pub.pem"), filepath.Join(dir, "data"), filepath.Join(dir, "sig.der")
	os.WriteFile(pub, []byte(pubPEM), 0o644)
	os.WriteFile(dataFile, data, 0o644)
	os.WriteFile(sigFile, sig, 0o644)
	out, err := exec.Command("openssl", "dgst", "-sha256", "-verify", pub, "-signature", sigFile, dataFile).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Verified OK") {
		t.Fatalf("openssl dgst -verify: %v: %s", err, out)
	}
}

// metricValue scrapes url for one series (its name and labels, as /metrics prints them)
// and returns its value, and whether it was there.
func metricValue(t *testing.T, c *http.Client, url, series string) (int, bool) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Fatalf("%s: %v", series, err)
			}
			return n, true
		}
	}
	return 0, false
}

// scrapeSignCount is the PEM key's count of signatures; 0 before the first.
func scrapeSignCount(t *testing.T, c *http.Client, url string) int {
	t.Helper()
	n, _ := metricValue(t, c, url, `provenanced_sign_duration_seconds_count{backend="pem",key="signing",outcome="ok"}`)
	return n
}

// publicKeyPEM parses the PEM public key the API returns.
func publicKeyPEM(t *testing.T, text string) *ecdsa.PublicKey {
	t.Helper()
	block, _ := pem.Decode([]byte(text))
	if block == nil {
		t.Fatalf("not PEM: %q", text)
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return pub.(*ecdsa.PublicKey)
}

func TestEndToEndDevMode(t *testing.T) {
	p, dir := startDev(t)
	sock := filepath.Join(dir, "provenanced.sock")
	if st, err := os.Lstat(sock); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("socket: %v %v", st, err)
	}
	overSocket, err := client.New(client.Options{Socket: sock})
	if err != nil {
		t.Fatal(err)
	}
	overTCP, err := client.New(client.Options{URL: "http://" + p.HTTP})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	keys, err := overSocket.Keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 || keys[0].Name != "signing" || keys[0].Backend != "pem" {
		t.Fatalf("keys = %+v", keys)
	}
	pubPEM := keys[0].PublicKey
	pub := publicKeyPEM(t, pubPEM)

	metrics := "http://" + p.HTTP + "/metrics"
	before := scrapeSignCount(t, http.DefaultClient, metrics)
	signed := 0
	for i, c := range []*client.Client{overSocket, overTCP, overSocket, overTCP} {
		msg := []byte(fmt.Sprintf("record %d", i))
		d := sha256.Sum256(msg)
		var sig []byte
		if i < 2 {
			sig, err = c.SignDigest(ctx, "signing", d[:])
		} else {
			sig, err = c.SignMessage(ctx, "signing", msg)
		}
		if err != nil {
			t.Fatal(err)
		}
		signed++
		opensslVerify(t, pubPEM, msg, sig)
	}
	// The command-line client, over the socket.
	msgFile := filepath.Join(t.TempDir(), "msg")
	os.WriteFile(msgFile, []byte("from the command line"), 0o644)
	out, code := testenv.Run(daemonBin, nil, "sign", "-socket", sock, "-key", "signing", "-in", msgFile, "-out", msgFile+".sig")
	if code != 0 {
		t.Fatalf("provenanced sign: %d %s", code, out)
	}
	signed++
	sig, _ := os.ReadFile(msgFile + ".sig")
	opensslVerify(t, pubPEM, []byte("from the command line"), sig)
	if out, code := testenv.Run(daemonBin, nil, "health", "-ready", "-socket", sock); code != 0 || !strings.Contains(out, "ready") {
		t.Errorf("provenanced health -ready: %d %s", code, out)
	}
	out, code = testenv.Run(daemonBin, nil, "keys", "-url", "http://"+p.HTTP)
	if code != 0 || !strings.Contains(out, "signing") || !strings.Contains(out, "pem") {
		t.Fatalf("provenanced keys: %d %s", code, out)
	}
	// A refused request is not a signature.
	if _, err := overSocket.SignDigest(ctx, "signing", []byte("short")); err == nil {
		t.Fatal("a short digest was signed")
	}
	after := scrapeSignCount(t, http.DefaultClient, metrics)
	if after-before != signed {
		t.Errorf("sign histogram count grew by %d, want exactly %d", after-before, signed)
	}
	// Each request was logged with its route, status, key and peer (lines are batched
	// for up to daemon.FlushInterval).
	hasLines := func(logs string) bool {
		return strings.Contains(logs, `"route":"POST /v1/keys/{name}/sign"`) && strings.Contains(logs, `"key":"signing"`) &&
			strings.Contains(logs, `"peer":{"uid":`) && strings.Contains(logs, `"peer":"127.0.0.1:`)
	}
	for deadline := time.Now().Add(2 * time.Second); !hasLines(p.Output()) && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if !hasLines(p.Output()) {
		t.Errorf("request log lines lack route, key or peer:\n%s", p.Output())
	}

	// SIGTERM in the middle of a burst: every request either completes with a valid
	// signature or is refused cleanly (no connection, or the connection closed before an
	// answer); none gets a broken or wrong answer.
	var ok, refused, bad atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var firstBad atomic.Value
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := overSocket
			if w%2 == 1 {
				c = overTCP
			}
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				d := sha256.Sum256([]byte(fmt.Sprintf("burst %d %d", w, i)))
				sig, err := c.SignDigest(ctx, "signing", d[:])
				switch {
				case err == nil && ecdsa.VerifyASN1(pub, d[:], sig):
					ok.Add(1)
				case err != nil && isRefusal(err):
					refused.Add(1)
				default:
					bad.Add(1)
					firstBad.CompareAndSwap(nil, fmt.Sprintf("%v", err))
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	code, err = p.Wait(20 * time.Second)
	// The burst goes on until it has met the stopped daemon: a busy machine may not have
	// scheduled a worker between the exit and here.
	for deadline := time.Now().Add(5 * time.Second); refused.Load() == 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if err != nil || code != 0 {
		t.Fatalf("exit code %d, %v\n%s", code, err, p.Output())
	}
	if bad.Load() != 0 {
		t.Errorf("%d requests got a bad answer during shutdown, first: %v", bad.Load(), firstBad.Load())
	}
	if ok.Load() == 0 || refused.Load() == 0 {
		t.Errorf("the burst did not straddle the shutdown: %d ok, %d refused", ok.Load(), refused.Load())
	}
	t.Logf("during shutdown: %d signed, %d refused", ok.Load(), refused.Load())
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Errorf("socket file left after exit: %v", err)
	}
	if !strings.Contains(p.Output(), `"msg":"stopped"`) {
		t.Errorf("no clean stop in the log:\n%s", p.Output())
	}
}

// isRefusal is a clean refusal: the daemon was not there, or closed the connection
// without answering.
func isRefusal(err error) bool {
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT) || errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
		return true
	}
	var ce *client.Error
	if errors.As(err, &ce) {
		return false
	}
	s := err.Error()
	return strings.Contains(s, "server closed idle connection") || strings.Contains(s, "connection reset")
}

func TestStartupErrorsExitTwo(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := devsetup.NewDevFiles(dir, time.Now()); err != nil {
		t.Fatal(err)
	}
	dev := func() *testenv.Config { return testenv.NewConfig().DevKey() }
	for _, tc := range []struct {
		name, config string
		prepare      func()
		want         []string
	}{
		// Wrong on purpose, so written as text: a key the daemon does not know.
		{"unknown key", "[server]\nhttp = \"127.0.0.1:0\"\nsokcet = \"x\"\n\n" + dev().String(), nil, []string{"server.sokcet", "unknown key", "socket"}},
		{"bad socket_mode", dev().Table("server", "socket_mode", "0999").String(), nil, []string{"socket_mode", "octal"}},
		{"unknown backend", testenv.NewConfig().Table("keys.signing", "backend", "vault").String(), nil, []string{"keys.signing.backend", `unknown backend "vault"`, "pem"}},
		{"missing key file", testenv.NewConfig().PEMKey("signing", "absent.pem", "").String(), nil, []string{"keys.signing.private_key", "absent.pem", "no such file"}},
		{"missing bundle", testenv.NewConfig().PEMKey("signing", "signing-key.pem", "absent.pem").String(), nil, []string{"keys.signing.certificates", "absent.pem"}},
		{"key readable by others", dev().String(), func() { os.Chmod(filepath.Join(dir, "signing-key.pem"), 0o644) }, []string{"signing-key.pem", "chmod 600"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			os.Chmod(filepath.Join(dir, "signing-key.pem"), 0o600)
			if tc.prepare != nil {
				tc.prepare()
			}
			cfg := filepath.Join(dir, "p.toml")
			os.WriteFile(cfg, []byte(tc.config), 0o644)
			out, code := testenv.Run(daemonBin, []string{"PROVENANCED_SOCKET=off", "PROVENANCED_HTTP=127.0.0.1:0"}, "serve", "-config", cfg)
			if code != 2 {
				t.Fatalf("exit code %d, want 2: %s", code, out)
			}
			for _, w := range append([]string{cfg}, tc.want...) {
				if tc.name == "key readable by others" && w == cfg {
					continue
				}
				if !strings.Contains(out, w) {
					t.Errorf("message %q does not mention %q", out, w)
				}
			}
			if strings.Contains(out, "serving") {
				t.Errorf("it listened before failing: %s", out)
			}
		})
	}
	out, code := testenv.Run(daemonBin, nil, "serve", "-config", filepath.Join(dir, "absent.toml"))
	if code != 2 || !strings.Contains(out, "absent.toml") {
		t.Errorf("missing config: %d %s", code, out)
	}
}

func TestConfigFromEnvironmentAndListenerOverrides(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := devsetup.NewDevFiles(dir, time.Now()); err != nil {
		t.Fatal(err)
	}
	cfg := testenv.NewConfig().Table("server", "socket", "configured.sock", "socket_mode", "0660", "http", "127.0.0.1:1").DevKey().
		WriteFile(t, filepath.Join(dir, "p.toml"))
	sock := filepath.Join(dir, "override.sock")
	p := testenv.StartDaemon(t, daemonBin, sock, "", []string{"PROVENANCED_CONFIG=" + cfg, "PROVENANCED_SOCKET=" + sock, "PROVENANCED_HTTP=off"}, "serve")
	if _, err := os.Lstat(filepath.Join(dir, "configured.sock")); !os.IsNotExist(err) {
		t.Errorf("the configured socket was created despite PROVENANCED_SOCKET")
	}
	if st, err := os.Lstat(sock); err != nil || st.Mode().Perm() != 0o660 {
		t.Errorf("override socket: %v %v", st, err)
	}
	resp, err := p.Client().Get(p.URL("/readyz"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Contains(body, []byte("ready")) {
		t.Errorf("/readyz: %d %s", resp.StatusCode, body)
	}
	if !strings.Contains(p.Output(), `"http":""`) {
		t.Errorf("TCP listener not off:\n%s", p.Output())
	}
	p.Signal(syscall.SIGINT)
	if code, err := p.Wait(10 * time.Second); code != 0 || err != nil {
		t.Errorf("SIGINT: exit %d %v", code, err)
	}
}

func TestVersion(t *testing.T) {
	out, code := testenv.Run(daemonBin, nil, "version")
	if code != 0 || !strings.HasPrefix(out, "provenanced ") || !strings.Contains(out, "go: go1.") {
		t.Errorf("version: %d %q", code, out)
	}
	out, code = testenv.Run(daemonBin, nil, "frobnicate")
	if code != 2 || !strings.Contains(out, "unknown command") {
		t.Errorf("unknown command: %d %q", code, out)
	}
}

// The help that serve -dev prints names only the listeners that are on, and the sign
// command it suggests works as printed.
func TestDevHelpFollowsListeners(t *testing.T) {
	for _, tc := range []struct {
		name         string
		socket, http bool
	}{
		{"both", true, true},
		{"socket off", false, true},
		{"http off", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			sock, addr, env := filepath.Join(dir, "provenanced.sock"), "", []string{"PROVENANCED_HTTP=off"}
			if tc.http {
				var err error
				if addr, err = testenv.FreePort(); err != nil {
					t.Fatal(err)
				}
				env = []string{"PROVENANCED_HTTP=" + addr}
			}
			if !tc.socket {
				sock, env = "", append(env, "PROVENANCED_SOCKET=off")
			}
			p := testenv.StartDaemon(t, daemonBin, sock, addr, env, "serve", "-dev", dir)
			var help string
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				if out := p.Output(); strings.Contains(out, "provenanced sign ") {
					help = out
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("no help printed:\n%s", p.Output())
				}
			}
			if !tc.socket && strings.Contains(help, "-socket") {
				t.Errorf("the socket is off but the help names one:\n%s", help)
			}
			if !tc.http && strings.Contains(help, "http://127.0.0.1") {
				t.Errorf("TCP is off but the help names an address:\n%s", help)
			}
			var line string
			for _, l := range strings.Split(help, "\n") {
				if strings.Contains(l, "provenanced sign ") {
					line = l
				}
			}
			// The help names the binary as it was started, so that it can be pasted
			// before anything is installed (make run starts bin/provenanced).
			if f := strings.Fields(line); len(f) == 0 || f[0] != daemonBin {
				t.Errorf("the help's sign command runs %q, want the binary that printed it (%s)", line, daemonBin)
			}
			sum := sha256.Sum256([]byte("hello"))
			args := strings.Fields(strings.Replace(line, "$(printf hello | sha256sum | cut -d' ' -f1)", fmt.Sprintf("%x", sum), 1))[1:]
			out, err := exec.Command(daemonBin, args...).Output()
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			sig, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(out)))
			if err != nil {
				t.Fatalf("%s printed %q: %v", line, out, err)
			}
			opts := client.Options{Socket: sock}
			if sock == "" {
				opts.URL = "http://" + addr
			}
			c, err := client.New(opts)
			if err != nil {
				t.Fatal(err)
			}
			key, err := c.Key(context.Background(), "signing")
			if err != nil {
				t.Fatal(err)
			}
			if !ecdsa.VerifyASN1(publicKeyPEM(t, key.PublicKey), sum[:], sig) {
				t.Errorf("the signature from %q does not verify", line)
			}
		})
	}
}
