package api_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/ib1/provenanced/api"
	"github.com/ib1/provenanced/api/access"
	"github.com/ib1/provenanced/audit"
	"github.com/ib1/provenanced/backends"
	"github.com/ib1/provenanced/conf"
	"github.com/ib1/provenanced/testenv"
	"github.com/prometheus/client_golang/prometheus"
)

func readLines(t *testing.T, path string) [][]byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.SplitAfter(bytes.TrimSuffix(data, []byte("\n")), []byte("\n"))
}

// An audit log on a full disk (a small tmpfs, filled): every write fails with ENOSPC.
func TestAuditFailClosed(t *testing.T) {
	reg := prometheus.NewRegistry()
	disk := testenv.Tmpfs(t, 64<<10)
	l, err := audit.Open(filepath.Join(disk, "audit.jsonl"), audit.Options{Metrics: audit.NewMetrics(reg)})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	testenv.FillDisk(t, disk)
	ac := access.NewPolicy(nil, access.Options{Audit: l})
	srv, _ := newServer(t, api.Options{Access: ac})
	digest := base64.StdEncoding.EncodeToString(make([]byte, 32))
	code, body := post(t, srv.URL+"/v1/keys/signing/sign", "application/json", `{"digest":"`+digest+`"}`)
	if code != http.StatusServiceUnavailable || strings.Contains(string(body), "signature") || !strings.Contains(string(body), "audit log") {
		t.Fatalf("%d %s", code, body)
	}
	if failures := counterValue(t, reg, "provenanced_audit_writes_total", "error"); failures != 1 || !strings.Contains(l.Problem(), "no space left on device") {
		t.Fatalf("failures %v, problem %q", failures, l.Problem())
	}
}

// After the audit line fails, nothing the handler goes on to write reaches the client:
// the answer is the 503 alone. The check is on the handler's own output, through an
// httptest.ResponseRecorder: behind a real server the 503's Content-Length would cut the
// handler's bytes off before the client, and hide them if they got through.
func TestAuditFailureDropsTheHandlersAnswer(t *testing.T) {
	disk := testenv.Tmpfs(t, 64<<10)
	l, err := audit.Open(filepath.Join(disk, "audit.jsonl"), audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	testenv.FillDisk(t, disk) // every write fails: ENOSPC
	edp := vectorKey(t, "123456")
	_, a := newServer(t, api.Options{
		Keys:            []*backends.Key{edp},
		MaxRequestBytes: 1 << 20,
		Provenance:      &api.Provenance{Verifier: vectorVerifier(t), Key: edp, Scheme: scheme},
		Access:          access.NewPolicy(nil, access.Options{Audit: l}),
	})
	digest := base64.StdEncoding.EncodeToString(make([]byte, 32))
	const msg = "the audit log cannot be written, so nothing signed leaves the daemon; the daemon's log has the reason under request id "
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
	l, _ := audit.Open(path, audit.Options{})
	defer l.Close()
	srv, _ := newServer(t, api.Options{Access: access.NewPolicy(clients, access.Options{Audit: l})})
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
	l, err := audit.Open(path, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	edp := vectorKey(t, "123456")
	srv, _ := newServer(t, api.Options{
		Keys:            []*backends.Key{edp},
		MaxRequestBytes: 1 << 20,
		Provenance:      &api.Provenance{Verifier: vectorVerifier(t), Key: edp, Scheme: scheme},
		Access:          access.NewPolicy(nil, access.Options{Audit: l}),
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
	csrReq := `{"subject":"/C=GB/O=Member Ltd/CN=https://member.example/a/1","uris":["https://member.example/a/1"],"dns":["signer.member.example"]}`
	if status, body := post(t, srv.URL+"/v1/keys/"+edp.Name()+"/csr", "application/json", csrReq); status != 200 {
		t.Fatalf("csr: %d %s", status, body)
	}
	lines := readLines(t, path)
	if len(lines) != 3 { // decode is not a signing operation
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
	// A CSR's line says what was signed: the subject and the names.
	var c struct {
		Op  string
		CSR struct {
			Subject   string
			URIs, DNS []string
		}
	}
	json.Unmarshal(lines[2], &c)
	if c.Op != "csr" || c.CSR.Subject != "CN=https://member.example/a/1,O=Member Ltd,C=GB" || len(c.CSR.URIs) != 1 || c.CSR.URIs[0] != "https://member.example/a/1" || len(c.CSR.DNS) != 1 || c.CSR.DNS[0] != "signer.member.example" {
		t.Fatalf("csr line: %s", lines[2])
	}
}

// counterValue is the value of the counter name whose one label has the value label.
func counterValue(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) == 1 && m.GetLabel()[0].GetValue() == label {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no %s{%q}", name, label)
	return 0
}
