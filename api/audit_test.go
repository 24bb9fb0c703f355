package api_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/ib1/provenanced/api"
	"github.com/ib1/provenanced/backends"
	"github.com/ib1/provenanced/conf"
)

func writeEntries(t *testing.T, l *api.AuditLog, n int) {
	t.Helper()
	for i := range n {
		name := "billing"
		d := sha256.Sum256([]byte{byte(i)})
		if err := l.Write(&api.AuditEntry{Client: &name, Addr: "127.0.0.1:1", Op: "sign", Key: "signing", Status: 200, Digest: d[:]}); err != nil {
			t.Fatal(err)
		}
	}
}

func readLines(t *testing.T, path string) [][]byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.SplitAfter(bytes.TrimSuffix(data, []byte("\n")), []byte("\n"))
}

func writeLines(t *testing.T, path string, lines [][]byte) {
	t.Helper()
	var b []byte
	for _, l := range lines {
		b = append(b, bytes.TrimSuffix(l, []byte("\n"))...)
		b = append(b, '\n')
	}
	os.WriteFile(path, b, 0o600)
}

func TestAuditChainAndTampering(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.jsonl")
	l, err := api.OpenAuditLog(path, api.AuditOptions{})
	if err != nil {
		t.Fatal(err)
	}
	writeEntries(t, l, 5)
	l.Close()
	// Reopened by a new daemon: the chain continues.
	l, err = api.OpenAuditLog(path, api.AuditOptions{})
	if err != nil {
		t.Fatal(err)
	}
	writeEntries(t, l, 3)
	_, head := l.Head()
	l.Close()
	res, err := api.VerifyAuditChain([]string{path})
	if err != nil {
		t.Fatal(err)
	}
	if res.Entries != 8 || res.FirstSeq != 1 || res.LastSeq != 8 || !res.Anchored || res.Head != head {
		t.Fatalf("verify = %+v, head %s", res, head)
	}
	good := readLines(t, path)
	var first map[string]any
	json.Unmarshal(good[0], &first)
	for _, f := range []string{"time", "seq", "client", "peer", "op", "key", "outcome", "status", "digest", "prev"} {
		if _, ok := first[f]; !ok {
			t.Errorf("line has no %q: %s", f, good[0])
		}
	}
	if first["prev"] != hex.EncodeToString(sha256.New().Sum(nil)) || first["outcome"] != "ok" {
		t.Errorf("first line: %s", good[0])
	}

	tampered := filepath.Join(dir, "t.jsonl")
	cases := []struct {
		name   string
		edit   func([][]byte) [][]byte
		atLine int
	}{
		{"edited digest", func(l [][]byte) [][]byte {
			l[2] = bytes.Replace(l[2], []byte(`"digest":"`), []byte(`"digest":"00`), 1)
			l[2] = bytes.Replace(l[2], []byte(`00`), nil, 1) // same length, another digest
			l[2] = bytes.Replace(l[2], []byte(`"status":200`), []byte(`"status":201`), 1)
			return l
		}, 4},
		{"edited client, still valid JSON", func(l [][]byte) [][]byte {
			l[4] = bytes.Replace(l[4], []byte(`"client":"billing"`), []byte(`"client":"mallory"`), 1)
			return l
		}, 6},
		{"removed line", func(l [][]byte) [][]byte { return append(l[:3:3], l[4:]...) }, 4},
		{"reordered lines", func(l [][]byte) [][]byte { l[2], l[3] = l[3], l[2]; return l }, 3},
		{"inserted line", func(l [][]byte) [][]byte {
			ins := append([]byte(nil), l[1]...)
			return append(l[:2:2], append([][]byte{ins}, l[2:]...)...)
		}, 3},
		{"torn line", func(l [][]byte) [][]byte { l[6] = l[6][:20]; return l }, 7},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			lines := make([][]byte, len(good))
			for i := range good {
				lines[i] = append([]byte(nil), good[i]...)
			}
			writeLines(t, tampered, tc.edit(lines))
			_, err := api.VerifyAuditChain([]string{tampered})
			var ce *api.AuditChainError
			if !errors.As(err, &ce) || ce.Line != tc.atLine {
				t.Fatalf("verify = %v, want a break at line %d", err, tc.atLine)
			}
		})
	}
	// The last line, which nothing follows, is anchored by the head the daemon logs.
	lines := readLines(t, path)
	lines[7] = bytes.Replace(lines[7], []byte(`"status":200`), []byte(`"status":500`), 1)
	writeLines(t, tampered, lines)
	res, err = api.VerifyAuditChain([]string{tampered})
	if err != nil || res.Head == head {
		t.Fatalf("an edited last line: %v; head %s must differ from %s", err, res.Head, head)
	}
}

func TestAuditReopenContinuesAcrossFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.jsonl")
	l, err := api.OpenAuditLog(path, api.AuditOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	writeEntries(t, l, 3)
	os.Rename(path, path+".1") // logrotate
	if err := l.Reopen(); err != nil {
		t.Fatal(err)
	}
	writeEntries(t, l, 2)
	if _, err := api.VerifyAuditChain([]string{path}); err != nil {
		t.Fatalf("the new file alone: %v", err)
	}
	res, err := api.VerifyAuditChain([]string{path + ".1", path})
	if err != nil || res.Entries != 5 || res.LastSeq != 5 {
		t.Fatalf("both files: %+v %v", res, err)
	}
	if _, err := api.VerifyAuditChain([]string{path, path + ".1"}); err == nil {
		t.Fatal("files in the wrong order verified")
	}
	// A foreign file at the path is not continued.
	os.Rename(path, path+".2")
	os.WriteFile(path, []byte(`{"seq":9,"prev":"00"}`+"\n"), 0o600)
	if err := l.Reopen(); err == nil || !strings.Contains(err.Error(), "move the file aside") {
		t.Fatalf("reopen onto a foreign file: %v", err)
	}
}

func TestAuditConcurrentWritersKeepTheChain(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	l, err := api.OpenAuditLog(path, api.AuditOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() { defer wg.Done(); writeEntries(t, l, 20) }()
	}
	wg.Wait()
	l.Close()
	res, err := api.VerifyAuditChain([]string{path})
	if err != nil || res.Entries != 1000 || res.LastSeq != 1000 {
		t.Fatalf("%+v %v", res, err)
	}
}

// An audit log on /dev/full: every write fails with ENOSPC, as on a full disk.
func TestAuditFailClosed(t *testing.T) {
	var failures int
	l, err := api.OpenAuditLog("/dev/full", api.AuditOptions{Wrote: func(err error) {
		if err != nil {
			failures++
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ac := api.NewAccess(nil, l, api.AccessHooks{})
	srv, _ := newServer(t, api.Options{Access: ac})
	digest := base64.StdEncoding.EncodeToString(make([]byte, 32))
	code, body := post(t, srv.URL+"/v1/keys/signing/sign", "application/json", `{"digest":"`+digest+`"}`)
	if code != http.StatusServiceUnavailable || strings.Contains(string(body), "signature") || !strings.Contains(string(body), "audit log") {
		t.Fatalf("%d %s", code, body)
	}
	if failures != 1 || !strings.Contains(l.Problem(), "no space left on device") {
		t.Fatalf("failures %d, problem %q", failures, l.Problem())
	}
}

// After the audit line fails, nothing the handler goes on to write reaches the client:
// the answer is the 503 alone. The check is on the handler's own output, through an
// httptest.ResponseRecorder: behind a real server the 503's Content-Length would cut the
// handler's bytes off before the client, and hide them if they got through.
func TestAuditFailureDropsTheHandlersAnswer(t *testing.T) {
	l, err := api.OpenAuditLog("/dev/full", api.AuditOptions{}) // every write fails: ENOSPC
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	edp := vectorKey(t, "123456")
	_, a := newServer(t, api.Options{
		Keys:            []*backends.Key{edp},
		MaxRequestBytes: 1 << 20,
		Provenance:      &api.Provenance{Verifier: vectorVerifier(t), Key: edp, Scheme: scheme},
		Access:          api.NewAccess(nil, l, api.AccessHooks{}),
	})
	digest := base64.StdEncoding.EncodeToString(make([]byte, 32))
	const msg = "the audit log cannot be written, so nothing is signed; the daemon's log has the reason under request id "
	for _, tc := range []struct {
		name, path, body string
		want             func(id string) string
	}{
		{"sign", "/v1/keys/" + edp.Name() + "/sign", `{"digest":"` + digest + `"}`, func(id string) string {
			return `{"error":{"code":"unavailable","message":"` + msg + id + `","request_id":"` + id + `"}}` + "\n"
		}},
		{"original edp", "/api/v1/sign/edp", edpRequest, func(id string) string {
			return `{"detail":"` + msg + id + `"}` + "\n"
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest("POST", tc.path, strings.NewReader(tc.body))
			req.Header.Set("Content-Type", "application/json")
			rec := httptest.NewRecorder()
			a.Handler().ServeHTTP(rec, req)
			id := rec.Header().Get("X-Request-Id")
			if rec.Code != http.StatusServiceUnavailable || id == "" {
				t.Fatalf("%d, request id %q: %s", rec.Code, id, rec.Body)
			}
			if got, want := rec.Body.String(), tc.want(id); got != want {
				t.Errorf("the answer is not the 503 alone:\n%s\nwant\n%s", got, want)
			}
			if cl := rec.Header().Get("Content-Length"); cl != strconv.Itoa(rec.Body.Len()) {
				t.Errorf("Content-Length %s for a body of %d bytes", cl, rec.Body.Len())
			}
			if strings.Contains(rec.Body.String(), "signature") || strings.Contains(rec.Body.String(), "steps") {
				t.Errorf("a signature or a record in the answer: %s", rec.Body)
			}
		})
	}
}

func TestAccessPolicyInProcess(t *testing.T) {
	sum := sha256.Sum256([]byte("tok-a"))
	clients := []*conf.Client{
		{Name: "a", TokenDigest: sum[:], Keys: []string{"signing"}, Allow: []string{"sign"}, Rate: 1},
		{Name: "b", TLSURI: "spiffe://x/b", Keys: []string{"*"}, Allow: []string{"csr"}},
	}
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	l, _ := api.OpenAuditLog(path, api.AuditOptions{})
	defer l.Close()
	srv, _ := newServer(t, api.Options{Access: api.NewAccess(clients, l, api.AccessHooks{})})
	digest := base64.StdEncoding.EncodeToString(make([]byte, 32))
	do := func(token string) (*http.Response, string) {
		req, _ := http.NewRequest("POST", srv.URL+"/v1/keys/signing/sign", strings.NewReader(`{"digest":"`+digest+`"}`))
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		b.ReadFrom(resp.Body)
		resp.Body.Close()
		return resp, b.String()
	}
	if resp, body := do(""); resp.StatusCode != 401 || !strings.Contains(body, "Bearer") || resp.Header.Get("WWW-Authenticate") == "" {
		t.Errorf("no identity: %d %s", resp.StatusCode, body)
	}
	if resp, body := do("wrong"); resp.StatusCode != 401 || !strings.Contains(body, "not valid") || strings.Contains(body, "tok-a") {
		t.Errorf("wrong token: %d %s", resp.StatusCode, body)
	}
	if resp, body := do("tok-a"); resp.StatusCode != 200 {
		t.Errorf("good token: %d %s", resp.StatusCode, body)
	}
	resp, body := do("tok-a") // rate 1/s, burst 1: the second at once is over
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "1" || !strings.Contains(body, `client \"a\"`) {
		t.Errorf("over the rate: %d %q %s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	lines := readLines(t, path)
	want := []string{`"client":null,.*"outcome":"denied","status":401`, `"outcome":"denied","status":401`, `"client":"a".*"outcome":"ok","status":200,"digest":"0000`, `"client":"a".*"outcome":"denied","status":429`}
	if len(lines) != len(want) {
		t.Fatalf("%d audit lines, want %d:\n%s", len(lines), len(want), bytes.Join(lines, nil))
	}
	for i, w := range want {
		for _, part := range strings.Split(w, ".*") {
			if !bytes.Contains(lines[i], []byte(part)) {
				t.Errorf("line %d lacks %s: %s", i+1, part, lines[i])
			}
		}
		if bytes.Contains(lines[i], []byte("tok-a")) || bytes.Contains(lines[i], []byte(hex.EncodeToString(sum[:]))) {
			t.Errorf("line %d holds the token or its hash", i+1)
		}
	}
}

// What a line records: the steps a record operation added (ids as in the signed record,
// and types), a batch's digests (null for an item that could not be read).
func TestAuditRecordsWhatWasSigned(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	l, err := api.OpenAuditLog(path, api.AuditOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	edp := vectorKey(t, "123456")
	srv, _ := newServer(t, api.Options{
		Keys:            []*backends.Key{edp},
		MaxRequestBytes: 1 << 20,
		Provenance:      &api.Provenance{Verifier: vectorVerifier(t), Key: edp, Scheme: scheme},
		Access:          api.NewAccess(nil, l, api.AccessHooks{}),
	})
	status, rec := post(t, srv.URL+"/api/v1/sign/edp", "application/json", edpRequest)
	if status != 200 {
		t.Fatalf("edp: %d %s", status, rec)
	}
	status, decoded := post(t, srv.URL+"/api/v1/decode", "application/json", string(rec))
	if status != 200 {
		t.Fatalf("decode: %d %s", status, decoded)
	}
	var steps []map[string]any
	json.Unmarshal(decoded, &steps)
	d := sha256.Sum256([]byte("one"))
	batch := `{"batch":[{"digest":"` + base64.StdEncoding.EncodeToString(d[:]) + `"},{"digest":"short"}]}`
	if status, body := post(t, srv.URL+"/v1/keys/"+edp.Name()+"/sign", "application/json", batch); status != 200 {
		t.Fatalf("batch: %d %s", status, body)
	}
	lines := readLines(t, path)
	if len(lines) != 2 { // decode is not a signing operation
		t.Fatalf("%d lines:\n%s", len(lines), bytes.Join(lines, nil))
	}
	var e struct {
		Client  *string
		Op, Key string
		Steps   []struct{ ID, Type string }
		Digests []*string
	}
	json.Unmarshal(lines[0], &e)
	if e.Client != nil || e.Op != "records" || e.Key != edp.Name() || len(e.Steps) != 3 {
		t.Fatalf("edp line: %s", lines[0])
	}
	for i, s := range e.Steps {
		if s.ID != steps[i]["id"] || s.Type != steps[i]["type"] {
			t.Errorf("step %d: %+v, the record has %v %v", i, s, steps[i]["id"], steps[i]["type"])
		}
	}
	e.Steps = nil
	json.Unmarshal(lines[1], &e)
	if e.Op != "sign" || len(e.Digests) != 2 || e.Digests[0] == nil || *e.Digests[0] != hex.EncodeToString(d[:]) || e.Digests[1] != nil {
		t.Fatalf("batch line: %s", lines[1])
	}
}
