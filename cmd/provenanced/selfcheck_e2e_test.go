package main

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ib1/provenanced/internal/devsetup"
	"github.com/ib1/provenanced/testenv"
)

// faultyToken is a SoftHSM token reached through testdata/p11fault.c, a module that is
// SoftHSM but for C_Sign: while a file of its fault folder exists, its signatures come
// back with a bit flipped (flip), refused (fail) or late (slow). SoftHSM signs right,
// at once, every time; a token that does not is what the daemon must be tested against.
type faultyToken struct {
	*testenv.HSM
	faults string // the fault folder
}

// newFaultyToken builds the module and a config for it; extra is added to the config.
func newFaultyToken(t *testing.T, extra *testenv.Config) *faultyToken {
	t.Helper()
	h := testenv.NewHSM(t, testenv.HSMOptions{MaxSessions: 4})
	dir := t.TempDir()
	ft := &faultyToken{HSM: h, faults: filepath.Join(dir, "faults")}
	if err := os.Mkdir(ft.faults, 0o700); err != nil {
		t.Fatal(err)
	}
	headers, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/miekg/pkcs11").Output()
	if err != nil {
		t.Fatalf("go list github.com/miekg/pkcs11 (its pkcs11.h): %v", err)
	}
	module := filepath.Join(dir, "p11fault.so")
	gcc := exec.Command("gcc", "-shared", "-fPIC", "-Wall", "-Werror", "-I", strings.TrimSpace(string(headers)),
		"-DREAL_MODULE="+strconv.Quote(h.Module), "-DFAULT_DIR="+strconv.Quote(ft.faults),
		"-o", module, "testdata/p11fault.c", "-ldl", "-lpthread")
	if out, err := gcc.CombinedOutput(); err != nil {
		t.Fatalf("building the fault module: %v\n%s", err, out)
	}
	// A short sign_timeout, so that a slow signature times out within the test.
	h.NewConfig().Table("keys.signing", "module", module).Table("server", "sign_timeout", "500ms").
		Append(extra).WriteFile(t, h.Config)
	return ft
}

// set turns fault on or off.
func (ft *faultyToken) set(t *testing.T, fault string, on bool) {
	t.Helper()
	path := filepath.Join(ft.faults, fault)
	var err error
	if on {
		err = os.WriteFile(path, nil, 0o600)
	} else {
		err = os.Remove(path)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// A token that signs wrong: no signature it made leaves the daemon, raw, batched, in a
// record, through the original's API or in a CSR; each answer is a 503 whose request id
// finds the reason in the log; each is counted as outcome="invalid"; /readyz and
// backend_up go down at once and stay down across the backend's own checks (its sessions
// work) until a signature verifies again, here the background check's own test signature.
func TestTokenThatSignsWrongIsRefused(t *testing.T) {
	ft := newFaultyToken(t, nil)
	p := testenv.StartDaemon(t, daemonBin, ft.Socket, "", ft.Env(), "serve", "-config", ft.Config)
	c := p.Client()
	digest := sha256.Sum256([]byte("hello"))
	signBody := `{"digest":"` + base64.StdEncoding.EncodeToString(digest[:]) + `"}`
	if status, body := postText(t, c, p.URL("/v1/keys/signing/sign"), signBody); status != 200 {
		t.Fatalf("a good token: %d %s", status, body)
	}
	waitReadyz(t, c, p.URL("/readyz"), 10*time.Second)

	ft.set(t, "flip", true)
	for _, rq := range []struct{ path, body string }{
		{"/v1/keys/signing/sign", signBody},
		{"/v1/keys/signing/sign", `{"batch":[` + signBody + `,` + signBody + `]}`},
		{"/v1/records", `{"steps":[{"type":"origin","scheme":"` + devsetup.SandboxScheme + `","sourceType":"` + devsetup.SandboxScheme + `/source-type/Meter"}]}`},
		{"/api/v1/sign/edp", jsonText(t, testClientEDP)},
		{"/v1/keys/signing/csr", `{"subject":"/C=GB/O=Org/CN=https://member.example/a/1"}`},
	} {
		resp, body := postTextResp(t, c, p.URL(rq.path), rq.body)
		want := http.StatusServiceUnavailable
		if strings.Contains(rq.body, "batch") {
			want = http.StatusOK // each item carries its error
		}
		id := resp.Header.Get("X-Request-Id")
		if resp.StatusCode != want || id == "" || strings.Contains(body, `"signature"`) || strings.Contains(body, "-----BEGIN") {
			t.Errorf("%s while the token signs wrong: %d (request id %q) %s", rq.path, resp.StatusCode, id, body)
		}
		if !strings.Contains(body, "does not verify") && !strings.Contains(body, "cannot sign") {
			t.Errorf("%s: the answer does not say why: %s", rq.path, body)
		}
		if !logLineHas(p, id, "does not verify with the key's public key") {
			t.Errorf("%s: no log line with request id %s and the reason:\n%s", rq.path, id, p.Output())
		}
	}
	metrics := p.URL("/metrics")
	if n, _ := metricValue(t, c, metrics, `provenanced_sign_duration_seconds_count{backend="pkcs11",key="signing",outcome="invalid"}`); n != 6 {
		t.Errorf("outcome=\"invalid\": %d signatures, want 6 (one raw, two batched, two records, one CSR)", n)
	}
	if n := recordsCount(t, c, metrics, "sign", "invalid"); n != 2 {
		t.Errorf("records_total{sign,invalid} = %d, want 2", n)
	}
	if up, _ := metricValue(t, c, metrics, `provenanced_backend_up{backend="pkcs11",key="signing"}`); up != 0 {
		t.Errorf("backend_up = %d while the token signs wrong", up)
	}
	// Past a background check, whose call to the backend finds the token's sessions fine.
	for deadline := time.Now().Add(6 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		if status, body := getText(t, c, p.URL("/readyz")); status != http.StatusServiceUnavailable || !strings.Contains(body, `key \"signing\" (pkcs11) cannot sign now`) {
			t.Fatalf("/readyz while the token signs wrong: %d %s", status, body)
		}
	}
	ft.set(t, "flip", false)
	waitReadyz(t, c, p.URL("/readyz"), 12*time.Second) // no client signs meanwhile
	if up, _ := metricValue(t, c, metrics, `provenanced_backend_up{backend="pkcs11",key="signing"}`); up != 1 {
		t.Errorf("backend_up = %d once the token signs right again", up)
	}
	if status, body := postText(t, c, p.URL("/v1/keys/signing/sign"), signBody); status != 200 {
		t.Fatalf("after the fault: %d %s", status, body)
	}
	if !logLineHas(p, "", `"msg":"key can sign again"`) {
		t.Errorf("the log does not say the key came back:\n%s", p.Output())
	}
}

// Every outcome the metrics document is one an operation can end with, counted as it
// happens on a real daemon. A signature: ok, invalid (it does not verify), error (the
// token refused this one), timeout (sign_timeout passed) and unavailable (the token's
// last call has not returned); never denied: the clients' policy refuses before any key
// signs, and that outcome has no series. A record: the same, and denied.
func TestSignOutcomesAreCounted(t *testing.T) {
	signOnly := "sign-only-token"
	sum := sha256.Sum256([]byte(signOnly))
	ft := newFaultyToken(t, testenv.NewConfig().
		Table("clients.me", "uids", []int{os.Getuid()}, "keys", []string{"signing"}, "allow", []string{"sign", "records"}).
		Table("clients.signer", "token_sha256", hex.EncodeToString(sum[:]), "keys", []string{"signing"}, "allow", []string{"sign"}))
	p := testenv.StartDaemon(t, daemonBin, ft.Socket, "", ft.Env(), "serve", "-config", ft.Config)
	c := p.Client()
	digest := sha256.Sum256([]byte("hello"))
	bodies := map[string]string{
		"/v1/keys/signing/sign": `{"digest":"` + base64.StdEncoding.EncodeToString(digest[:]) + `"}`,
		"/v1/records":           `{"steps":[{"type":"origin","scheme":"` + devsetup.SandboxScheme + `","sourceType":"` + devsetup.SandboxScheme + `/source-type/Meter"}]}`,
	}
	send := func(path string, want int) {
		t.Helper()
		if status, body := postText(t, c, p.URL(path), bodies[path]); status != want {
			t.Fatalf("%s: %d %s, want %d", path, status, body, want)
		}
	}
	for _, path := range []string{"/v1/keys/signing/sign", "/v1/records"} {
		send(path, 200)
		ft.set(t, "flip", true)
		send(path, 503)
		ft.set(t, "flip", false)
		ft.set(t, "fail", true)
		send(path, 500)
		ft.set(t, "fail", false)
		ft.set(t, "slow", true)
		send(path, 503) // past the 500 ms sign_timeout
		send(path, 503) // the call above is still inside the module
		ft.set(t, "slow", false)
		waitReadyz(t, c, p.URL("/readyz"), 12*time.Second)
	}
	req, _ := http.NewRequest("POST", p.URL("/v1/records"), strings.NewReader(bodies["/v1/records"]))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+signOnly)
	if resp, err := c.Do(req); err != nil || resp.StatusCode != 403 {
		t.Fatalf("a record by a client that may only sign: %v %v", resp, err)
	}

	_, scraped := getText(t, c, p.URL("/metrics"))
	signatures := outcomeCounts(scraped, `provenanced_sign_duration_seconds_count{backend="pkcs11",key="signing",outcome="`)
	records := outcomeCounts(scraped, `provenanced_records_total{operation="sign",outcome="`)
	for name, c := range map[string]struct {
		got, want map[string]int
	}{
		"signatures": {signatures, map[string]int{"ok": 2, "invalid": 2, "error": 2, "timeout": 2, "unavailable": 2}},
		"records":    {records, map[string]int{"ok": 1, "invalid": 1, "error": 1, "timeout": 1, "unavailable": 1, "denied": 1}},
	} {
		if len(c.got) != len(c.want) {
			t.Errorf("%s: outcomes %v, want exactly those of %v", name, c.got, c.want)
		}
		for o, n := range c.want {
			if c.got[o] != n {
				t.Errorf("%s: outcome=%q: %d, want %d (all: %v)", name, o, c.got[o], n, c.got)
			}
		}
	}
}

// outcomeCounts reads, from a scrape, the value of each series that starts with prefix
// (a metric and its labels up to outcome="), by outcome.
func outcomeCounts(scraped, prefix string) map[string]int {
	counts := map[string]int{}
	for _, line := range strings.Split(scraped, "\n") {
		rest, ok := strings.CutPrefix(line, prefix)
		if !ok {
			continue
		}
		outcome, n, _ := strings.Cut(rest, `"} `)
		counts[outcome], _ = strconv.Atoi(n)
	}
	return counts
}

func postText(t *testing.T, c *http.Client, url, body string) (int, string) {
	t.Helper()
	resp, b := postTextResp(t, c, url, body)
	return resp.StatusCode, b
}

func postTextResp(t *testing.T, c *http.Client, url, body string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func getText(t *testing.T, c *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitReady waits for /readyz to answer 200.
func waitReadyz(t *testing.T, c *http.Client, url string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		status, body := getText(t, c, url)
		if status == 200 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz did not answer 200 within %v: %d %s", within, status, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// logLineHas reports whether a line of the daemon's log has the request id and text,
// waiting a little: the log reaches the test through a pipe, after the answer may have.
func logLineHas(p *testenv.Process, id, text string) bool {
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		for _, line := range strings.Split(p.Output(), "\n") {
			if (id == "" || strings.Contains(line, `"request_id":"`+id+`"`)) && strings.Contains(line, text) {
				return true
			}
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

func jsonText(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
