package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ib1/provenanced/client"
	"github.com/ib1/provenanced/internal/devsetup"
	"github.com/ib1/provenanced/testenv"
)

// nobody is the unprivileged user the tests run clients as.
const nobodyID = 65534

// accessDaemon is a daemon with two keys ("signing", with a certificate; "other",
// without), the clients of policy, an audit log, its socket open to every user (so that
// only the policy decides) and a TCP listener.
type accessDaemon struct {
	*testenv.Process
	dir, audit string
}

// startAccessDaemon starts it with the [clients.*] tables of policy (nil for none) and the
// audit file auditFile: "" for audit.jsonl in its folder, "fsync" for that with fsync,
// "none" for no audit log.
func startAccessDaemon(t testing.TB, policy *testenv.Config, auditFile string) *accessDaemon {
	t.Helper()
	dir := t.TempDir()
	// nobody must reach the socket and run the binary.
	os.Chmod(dir, 0o755)
	os.Chmod(filepath.Dir(dir), 0o755) // the test's own temporary folder
	os.Chmod(filepath.Dir(daemonBin), 0o755)
	_, files, err := devsetup.NewDevFiles(dir, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	os.WriteFile(filepath.Join(dir, "other-key.pem"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	addr, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	fsync, sealed := auditFile == "fsync", auditFile == "sealed"
	if auditFile == "" || fsync || sealed {
		auditFile = filepath.Join(dir, "audit.jsonl")
	}
	cfg := testenv.DevConfig(addr, files.RootCA).Table("server", "socket_mode", "0666").
		PEMKey("signing", files.PrivateKey, files.Bundle).
		PEMKey("other", "other-key.pem", "")
	if auditFile != "none" {
		cfg.Table("audit", "file", auditFile, "fsync", fsync)
	}
	if sealed { // a checkpoint every 100 ms, far more often than the default 10 s
		cfg.Table("audit", "seal_key", "other", "seal_interval", "100ms")
	}
	cfgPath := cfg.Append(policy).Write(t, dir)
	sock := filepath.Join(dir, "provenanced.sock")
	p := testenv.StartDaemon(t, daemonBin, sock, addr, nil, "serve", "-config", cfgPath)
	return &accessDaemon{Process: p, dir: dir, audit: auditFile}
}

// matrixPolicy is TestAccessMatrix's clients; rec's token has the SHA-256 recSum.
func matrixPolicy(recSum string) *testenv.Config {
	return testenv.NewConfig().
		Table("clients.app", "uids", []int{nobodyID}, "keys", []string{"signing"}, "allow", []string{"sign"}).
		Table("clients.ops", "token_file", "ops.token", "keys", []string{"*"}, "allow", []string{"sign", "csr"}).
		Table("clients.rec", "token_sha256", recSum, "keys", []string{"signing"}, "allow", []string{"records"}).
		Table("clients.root", "gids", []int{0}, "keys", []string{"other"}, "allow", []string{"csr"})
}

// request is one call: over the socket or TCP, as root or as nobody (uid 65534), with a
// token or none.
type request struct {
	name     string
	socket   bool
	nobody   bool
	token    string
	path     string
	body     string
	want     int
	wantText string // in the answer
}

func (d *accessDaemon) do(t *testing.T, rq request) (int, string) {
	t.Helper()
	cmd := exec.Command(asClientBin(t), "-path", rq.path, "-body", rq.body)
	cmd.Env = append(os.Environ(), asClientEnv+"=1", "AS_CLIENT_TOKEN="+rq.token)
	if rq.socket {
		cmd.Args = append(cmd.Args, "-socket", d.Socket)
	} else {
		cmd.Args = append(cmd.Args, "-addr", d.HTTP)
	}
	if rq.nobody {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobodyID, Gid: nobodyID}}
	}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: the client: %v", rq.name, err)
	}
	s := strings.TrimSpace(string(out))
	i := strings.LastIndexByte(s, '\n')
	var code int
	fmt.Sscan(s[i+1:], &code)
	return code, s[:max(i, 0)]
}

// asClientEnv makes this test binary a one-request HTTP client (see init), so that the
// tests can make requests as another user without any other program.
const asClientEnv = "PROVENANCED_TEST_AS_CLIENT"

func init() {
	if os.Getenv(asClientEnv) != "1" {
		return
	}
	fs := flag.NewFlagSet("client", flag.ExitOnError)
	path := fs.String("path", "/", "")
	body := fs.String("body", "", "")
	sock := fs.String("socket", "", "")
	addr := fs.String("addr", "", "")
	fs.Parse(os.Args[1:])
	c, url := http.DefaultClient, "http://"+*addr+*path
	if *sock != "" {
		c, url = testenv.UnixClient(*sock), "http://localhost"+*path
	}
	req, _ := http.NewRequest("POST", url, strings.NewReader(*body))
	req.Header.Set("Content-Type", "application/json")
	if tok := os.Getenv("AS_CLIENT_TOKEN"); tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := c.Do(req)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	b, _ := io.ReadAll(resp.Body)
	fmt.Printf("%s\n%d\n", b, resp.StatusCode)
	os.Exit(0)
}

var asClient struct {
	once sync.Once
	path string
	err  error
}

// asClientBin is a copy of this test binary where every user may run it.
func asClientBin(t *testing.T) string {
	asClient.once.Do(func() {
		self, err := os.Executable()
		if err != nil {
			asClient.err = err
			return
		}
		data, err := os.ReadFile(self)
		if err != nil {
			asClient.err = err
			return
		}
		asClient.path = filepath.Join(filepath.Dir(daemonBin), "as-client")
		asClient.err = os.WriteFile(asClient.path, data, 0o755)
	})
	if asClient.err != nil {
		t.Fatal(asClient.err)
	}
	return asClient.path
}

func digestBody(i int) string {
	d := sha256.Sum256([]byte(fmt.Sprint("digest ", i)))
	return `{"digest":"` + base64.StdEncoding.EncodeToString(d[:]) + `"}`
}

func TestAccessMatrix(t *testing.T) {
	recSum := sha256.Sum256([]byte("rec-token"))
	d := startAccessDaemonWithToken(t, matrixPolicy(hex.EncodeToString(recSum[:])), "ops-token-8fQz2LmXw7Kv")

	sign := func(key string) string { return "/v1/keys/" + key + "/sign" }
	csr := func(key string) string { return "/v1/keys/" + key + "/csr" }
	const csrBody = `{"subject":"CN=test"}`
	recBody := `{"steps":[{"type":"origin","scheme":"https://registry.core.sandbox.trust.ib1.org/scheme/perseus","sourceType":"x","origin":"https://example.org","originLicence":"https://example.org/l","external":true}]}`
	cases := []request{
		// uid 65534 on the socket is "app": sign with "signing" only.
		{name: "app signs with its key", socket: true, nobody: true, path: sign("signing"), body: digestBody(1), want: 200, wantText: `"signature"`},
		{name: "app, another key", socket: true, nobody: true, path: sign("other"), body: digestBody(2), want: 403, wantText: `client \"app\" may not sign with key \"other\"`},
		{name: "app, csr", socket: true, nobody: true, path: csr("signing"), body: csrBody, want: 403, wantText: `client \"app\"`},
		{name: "app, records", socket: true, nobody: true, path: "/v1/records", body: recBody, want: 403, wantText: `client \"app\" may not sign records`},
		// The same user over TCP has no identity: the original complaint of the issue.
		{name: "nobody over TCP", nobody: true, path: sign("signing"), body: digestBody(3), want: 401, wantText: "Authorization: Bearer"},
		// root's gid 0 is "root": csr with "other" only.
		{name: "root gid, csr other", socket: true, path: csr("other"), body: csrBody, want: 200, wantText: "CERTIFICATE REQUEST"},
		{name: "root gid, csr signing", socket: true, path: csr("signing"), body: csrBody, want: 403, wantText: `client \"root\"`},
		{name: "root gid, sign", socket: true, path: sign("other"), body: digestBody(4), want: 403},
		// A token: "ops", on either listener, and it wins over the socket peer.
		{name: "ops token over TCP, sign other", token: "ops-token-8fQz2LmXw7Kv", path: sign("other"), body: digestBody(5), want: 200},
		{name: "ops token over TCP, csr signing", token: "ops-token-8fQz2LmXw7Kv", path: csr("signing"), body: csrBody, want: 200},
		{name: "ops token over TCP, records", token: "ops-token-8fQz2LmXw7Kv", path: "/v1/records", body: recBody, want: 403, wantText: `client \"ops\"`},
		{name: "ops token on the socket as root", socket: true, token: "ops-token-8fQz2LmXw7Kv", path: sign("signing"), body: digestBody(6), want: 200},
		{name: "ops token on the socket as nobody", socket: true, nobody: true, token: "ops-token-8fQz2LmXw7Kv", path: sign("other"), body: digestBody(7), want: 200},
		// A wrong token never falls back to the socket peer's identity.
		{name: "wrong token as nobody", socket: true, nobody: true, token: "nope", path: sign("signing"), body: digestBody(8), want: 401, wantText: "bearer token is not valid"},
		{name: "wrong token over TCP", token: "nope", path: sign("signing"), body: digestBody(9), want: 401},
		// "rec" signs records with "signing" only.
		{name: "rec token, records", token: "rec-token", path: "/v1/records", body: recBody, want: 200, wantText: `"ib1:provenance"`},
		{name: "rec token, records with other", token: "rec-token", path: "/v1/records", body: strings.Replace(recBody, `{"steps"`, `{"key":"other","steps"`, 1), want: 403, wantText: `with key \"other\"`},
		{name: "rec token, sign", token: "rec-token", path: sign("signing"), body: digestBody(10), want: 403},
		{name: "rec token, original's EDP route", token: "rec-token", path: "/api/v1/sign/edp", body: `{}`, want: 422},
		{name: "no identity, original's EDP route", path: "/api/v1/sign/edp", body: `{}`, want: 401, wantText: `"detail"`},
		// Reading and verifying need no client.
		{name: "verify needs no client", nobody: true, path: "/v1/records/verify", body: `{"record":{}}`, want: 400},
	}
	signing := 0
	for _, rq := range cases {
		code, body := d.do(t, rq)
		if code != rq.want || !strings.Contains(body, rq.wantText) {
			t.Errorf("%s: %d %s; want %d with %s", rq.name, code, body, rq.want, rq.wantText)
		}
		if strings.Contains(body, "ops-token-8fQz2LmXw7Kv") || strings.Contains(body, "rec-token") {
			t.Errorf("%s: the answer holds a token: %s", rq.name, body)
		}
		if rq.path != "/v1/records/verify" {
			signing++
		}
	}
	resp, err := http.Get("http://" + d.HTTP + "/v1/keys")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /v1/keys without a client: %v %v", resp, err)
	}
	resp.Body.Close()

	// Every signing request, allowed or not, has its audit line, with the client.
	lines := testenv.AuditLines(t, d.audit)
	if len(lines) != signing {
		t.Fatalf("%d audit lines for %d signing requests", len(lines), signing)
	}
	wantClients := map[int]string{0: "app", 4: "<nil>", 5: "root", 8: "ops", 13: "<nil>", 15: "rec"}
	for i, c := range wantClients {
		if got := fmt.Sprint(lines[i]["client"]); got != c {
			t.Errorf("line %d (%s): client %s, want %s", i+1, cases[i].name, got, c)
		}
	}
	if lines[0]["outcome"] != "ok" || lines[1]["outcome"] != "denied" || lines[4]["status"] != 401.0 {
		t.Errorf("outcomes: %v %v %v", lines[0], lines[1], lines[4])
	}
	if p, _ := lines[0]["peer"].(map[string]any); p == nil || p["uid"] != float64(nobodyID) {
		t.Errorf("line 1's peer: %v", lines[0]["peer"])
	}
	d1 := sha256.Sum256([]byte("digest 1"))
	if lines[0]["digest"] != hex.EncodeToString(d1[:]) {
		t.Errorf("line 1's digest %v", lines[0]["digest"])
	}
	if steps, _ := lines[15]["steps"].([]any); len(steps) != 1 || steps[0].(map[string]any)["type"] != "origin" {
		t.Errorf("the records line's steps: %v", lines[15])
	}
	out, code := testenv.Run(daemonBin, nil, "audit", "verify", d.audit)
	if code != 0 || !strings.Contains(out, fmt.Sprintf("OK %d entries", signing)) {
		t.Fatalf("audit verify: %d %s", code, out)
	}
	// Metrics carry the client, among the configured names only.
	m := scrape(t, "http://"+d.HTTP+"/metrics")
	if !strings.Contains(m, `provenanced_http_requests_total{client="app",code="200",route="POST /v1/keys/{name}/sign"} 1`) {
		t.Errorf("no request counter for client app:\n%s", grepLines(m, "provenanced_http_requests_total"))
	}
	if strings.Contains(m, "ops-token-8fQz2LmXw7Kv") || strings.Contains(d.Output(), "ops-token-8fQz2LmXw7Kv") || strings.Contains(d.Output(), "rec-token") {
		t.Error("a token reached the metrics or the log")
	}
	if !strings.Contains(d.Output(), `"client":"ops"`) {
		t.Errorf("the request log does not name the client:\n%s", d.Output())
	}
}

// startAccessDaemonWithToken starts it with policy, whose client "ops" reads token from
// its token_file.
func startAccessDaemonWithToken(t *testing.T, policy *testenv.Config, token string) *accessDaemon {
	t.Helper()
	// The token file is named by its absolute path: the config's folder does not exist yet.
	tokDir := t.TempDir()
	tok := filepath.Join(tokDir, "ops.token")
	os.WriteFile(tok, []byte(token+"\n"), 0o600)
	return startAccessDaemon(t, policy.Table("clients.ops", "token_file", tok), "")
}

func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestAccessConfigErrorsAtStart(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := devsetup.NewDevFiles(dir, time.Now()); err != nil {
		t.Fatal(err)
	}
	tok := filepath.Join(dir, "open.token")
	os.WriteFile(tok, []byte("t"), 0o644)
	os.Chmod(tok, 0o644)
	for _, tc := range []struct {
		client []any // [clients.a]
		want   string
	}{
		{[]any{"token_file", "open.token", "keys", []string{"*"}, "allow", []string{"sign"}}, "clients.a.token_file: " + tok + " has mode 0644, so other users can read or change the token; run: chmod 600 " + tok},
		{[]any{"uids", []int{1}, "keys", []string{"nokey"}, "allow", []string{"sign"}}, `clients.a.keys: no key named "nokey"`},
		{[]any{"uids", []int{1}, "keys", []string{"*"}, "allow", []string{"sign", "admin"}}, `clients.a.allow: unknown operation "admin"`},
	} {
		cfg := testenv.NewConfig().Table("server", "socket", "p.sock").PEMKey("signing", "signing-key.pem", "").
			Table("clients.a", tc.client...).WriteFile(t, filepath.Join(dir, "p.toml"))
		out, code := testenv.Run(daemonBin, nil, "serve", "-config", cfg)
		if code != 2 || !strings.Contains(out, tc.want) {
			t.Errorf("serve: exit %d: %s\nwant exit 2 and %q", code, out, tc.want)
		}
	}
}

func TestNoClientsWarnsAtStart(t *testing.T) {
	p, _ := startDev(t)
	if !strings.Contains(p.Output(), "no [clients.NAME] in the config: whoever reaches a listener may sign with every key") {
		t.Fatalf("no warning:\n%s", p.Output())
	}
}

// 1,000 signatures at once from 50 connections: 1,000 audit lines, seq strictly
// increasing, the chain intact; then each kind of tampering is found by the command.
func TestAuditUnderLoadAndTampering(t *testing.T) {
	d := startAccessDaemon(t, nil, "")
	c := d.Client()
	var wg sync.WaitGroup
	errs := make(chan error, 1000)
	jobs := make(chan int)
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				resp, err := c.Post(d.URL("/v1/keys/signing/sign"), "application/json", strings.NewReader(digestBody(i)))
				if err != nil {
					errs <- err
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					errs <- fmt.Errorf("status %d", resp.StatusCode)
				}
			}
		}()
	}
	for i := range 1000 {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	lines := testenv.AuditLines(t, d.audit)
	if len(lines) != 1000 {
		t.Fatalf("%d audit lines, want 1000", len(lines))
	}
	seen := map[string]bool{}
	for i, l := range lines {
		if l["seq"] != float64(i+1) {
			t.Fatalf("line %d has seq %v", i+1, l["seq"])
		}
		seen[l["digest"].(string)] = true
	}
	if len(seen) != 1000 {
		t.Fatalf("%d distinct digests in 1000 lines", len(seen))
	}
	out, code := testenv.Run(daemonBin, nil, "audit", "verify", d.audit)
	if code != 0 || !strings.Contains(out, "OK 1000 entries, seq 1..1000, from the log's first line") {
		t.Fatalf("audit verify: %d %s", code, out)
	}
	raw, _ := os.ReadFile(d.audit)
	good := bytes.SplitAfter(raw, []byte("\n"))
	good = good[:len(good)-1]
	for _, tc := range []struct {
		name string
		edit func([][]byte) [][]byte
		want string
	}{
		{"edited", func(l [][]byte) [][]byte {
			l[10] = bytes.Replace(l[10], []byte(`"outcome":"ok"`), []byte(`"outcome":"no"`), 1)
			return l
		}, ":12: prev does not match"},
		{"removed", func(l [][]byte) [][]byte { return append(l[:10:10], l[11:]...) }, ":11: prev does not match"},
		{"reordered", func(l [][]byte) [][]byte { l[20], l[21] = l[21], l[20]; return l }, ":21: prev does not match"},
		{"inserted", func(l [][]byte) [][]byte {
			return append(l[:30:30], append([][]byte{[]byte(`{"seq":31,"prev":"00"}` + "\n")}, l[30:]...)...)
		}, ":31: prev is not a hex SHA-256"},
	} {
		lines := make([][]byte, len(good))
		copy(lines, good)
		f := filepath.Join(t.TempDir(), "audit.jsonl")
		os.WriteFile(f, bytes.Join(tc.edit(lines), nil), 0o600)
		out, code := testenv.Run(daemonBin, nil, "audit", "verify", f)
		if code != 1 || !strings.Contains(out, tc.want) {
			t.Errorf("%s: exit %d: %s; want exit 1 and %q", tc.name, code, out, tc.want)
		}
	}
}

// An audit file on a full disk (a small tmpfs, filled once the daemon runs): no
// signature leaves, /readyz says why, and the metrics show it.
func TestAuditFailsClosed(t *testing.T) {
	disk := testenv.Tmpfs(t, 256<<10)
	d := startAccessDaemon(t, nil, filepath.Join(disk, "audit.jsonl"))
	testenv.FillDisk(t, disk)
	c := d.Client()
	resp, err := c.Post(d.URL("/v1/keys/signing/sign"), "application/json", strings.NewReader(digestBody(1)))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || bytes.Contains(body, []byte("signature")) || !bytes.Contains(body, []byte(`"request_id"`)) || resp.Header.Get("X-Request-Id") == "" {
		t.Fatalf("sign with the audit log full: %d %s", resp.StatusCode, body)
	}
	resp, err = c.Get(d.URL("/readyz"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || !bytes.Contains(body, []byte("no space left on device")) || bytes.Contains(body, []byte(disk)) {
		t.Fatalf("/readyz: %d %s", resp.StatusCode, body)
	}
	m := scrape(t, "http://"+d.HTTP+"/metrics")
	if !strings.Contains(m, "provenanced_audit_up 0") || !strings.Contains(m, `provenanced_audit_writes_total{outcome="error"} 1`) {
		t.Fatalf("metrics:\n%s", grepLines(m, "provenanced_audit"))
	}
}

func TestRateLimit(t *testing.T) {
	d := startAccessDaemonWithToken(t, testenv.NewConfig().
		Table("clients.ops", "token_file", "ops.token", "keys", []string{"*"}, "allow", []string{"sign"}, "rate", 2), "ops-token-8fQz2LmXw7Kv")
	var codes []int
	var retry string
	for i := range 4 {
		req, _ := http.NewRequest("POST", "http://"+d.HTTP+"/v1/keys/signing/sign", strings.NewReader(digestBody(i)))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer ops-token-8fQz2LmXw7Kv")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		codes = append(codes, resp.StatusCode)
		if resp.StatusCode == 429 {
			retry = resp.Header.Get("Retry-After")
		}
	}
	// A burst of one second's worth (2), then refused until the bucket refills.
	if fmt.Sprint(codes) != "[200 200 429 429]" || retry != "1" {
		t.Fatalf("codes %v, Retry-After %q", codes, retry)
	}
	m := scrape(t, "http://"+d.HTTP+"/metrics")
	if !strings.Contains(m, `provenanced_rate_limited_total{client="ops"} 2`) {
		t.Fatalf("metrics:\n%s", grepLines(m, "rate_limited"))
	}
}

// The client's Signer: a certificate made with x509.CreateCertificate and a TLS
// handshake whose server key is the daemon's, both checked by the standard library.
func TestClientSigner(t *testing.T) {
	p, _ := startDev(t)
	c, err := client.New(client.Options{Socket: p.Socket})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s, err := c.Signer(ctx, "signing", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Sign(nil, make([]byte, 48), crypto.SHA384); err == nil || !strings.Contains(err.Error(), "SHA-256 digests only") {
		t.Fatalf("SHA-384: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(7),
		Subject:               pkix.Name{CommonName: "localhost"},
		DNSNames:              []string{"localhost"},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, s.Public(), s)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	if err := cert.CheckSignatureFrom(cert); err != nil {
		t.Fatalf("the certificate signed through the daemon does not verify: %v", err)
	}
	// TLS: the daemon's key is the server's.
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: s}}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	done := make(chan error, 1)
	go func() {
		conn, err := l.Accept()
		if err != nil {
			done <- err
			return
		}
		defer conn.Close()
		done <- conn.(*tls.Conn).Handshake()
	}()
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	conn, err := tls.Dial("tcp", l.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "localhost"})
	if err != nil {
		t.Fatalf("TLS handshake with the daemon's key: %v", err)
	}
	conn.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// Mutual TLS against the real binary: the verified client certificate (CN "app") is
// the client, through the Go client's TLSConfig.
func TestAccessByClientCertificateOverTLS(t *testing.T) {
	certDir := t.TempDir()
	clientCert, pool := tlsFiles(t, certDir)
	addr := freeAddr(t)
	startConfig(t, tlsServer(certDir).Table("server", "http", addr).
		Table("clients.app", "tls_cn", "app", "keys", []string{"signing"}, "allow", []string{"sign"}), "")
	c, err := client.New(client.Options{URL: "https://" + addr, TLSConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{clientCert}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	d := sha256.Sum256([]byte("over mutual TLS"))
	if _, err := c.SignDigest(ctx, "signing", d[:]); err != nil {
		t.Fatalf("the certificate's client signs: %v", err)
	}
	var out json.RawMessage
	err = c.Do(ctx, "POST", "/v1/keys/signing/csr", map[string]string{"subject": "CN=x"}, &out)
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != 403 || !strings.Contains(ce.Message, `client "app" may not request a CSR`) {
		t.Fatalf("csr: %v", err)
	}
}
