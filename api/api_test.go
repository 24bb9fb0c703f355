package api_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ib1/provenanced/api"
	"github.com/ib1/provenanced/backends"
	pembackend "github.com/ib1/provenanced/backends/pem"
	"github.com/ib1/provenanced/conf"
	"github.com/ib1/provenanced/internal/devsetup"
	"github.com/ib1/provenanced/testenv"
)

// openDevKey opens a PEM key with a certificate from a fresh test PKI.
func openDevKey(t testing.TB) *backends.Key {
	t.Helper()
	dir := t.TempDir()
	if _, _, err := devsetup.NewDevFiles(dir, time.Now()); err != nil {
		t.Fatal(err)
	}
	cfg := testenv.NewConfig().DevKey().Load(t, dir)
	k, err := backends.Open(context.Background(), cfg.Keys[0], backends.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.Close() })
	return k
}

func newServer(t testing.TB, opts api.Options) (*httptest.Server, *api.API) {
	t.Helper()
	if opts.Keys == nil {
		opts.Keys = []*backends.Key{openDevKey(t)}
	}
	if opts.MaxRequestBytes == 0 {
		opts.MaxRequestBytes = 4096
	}
	a, err := api.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a.Handler())
	t.Cleanup(srv.Close)
	return srv, a
}

func post(t testing.TB, url, ctype, body string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest("POST", url, strings.NewReader(body))
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func get(t testing.TB, url string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// checkSignature checks a sign response against the key's public key.
func checkSignature(t *testing.T, k *backends.Key, body []byte, digest []byte) {
	t.Helper()
	var out struct {
		Key, Algorithm string
		Signature      []byte
	}
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatalf("response %s: %v", body, err)
	}
	if out.Key != k.Name() || out.Algorithm != "ECDSA_SHA_256" {
		t.Errorf("response %s", body)
	}
	if !ecdsa.VerifyASN1(k.Public().(*ecdsa.PublicKey), digest, out.Signature) {
		t.Errorf("signature in %s does not verify", body)
	}
}

func TestSignDigestAndMessage(t *testing.T) {
	k := openDevKey(t)
	srv, _ := newServer(t, api.Options{Keys: []*backends.Key{k}})
	msg := []byte("a provenance record's data for signing")
	d := sha256.Sum256(msg)
	for _, body := range []string{
		`{"digest":"` + b64(d[:]) + `"}`,
		` { "digest" : "` + b64(d[:]) + `" } `,
		`{"message":"` + b64(msg) + `"}`,
	} {
		code, resp := post(t, srv.URL+"/v1/keys/signing/sign", "application/json", body)
		if code != 200 {
			t.Fatalf("%s: %d %s", body, code, resp)
		}
		checkSignature(t, k, resp, d[:])
	}
}

func TestBadInputIsRefusedAndTheServerKeepsServing(t *testing.T) {
	k := openDevKey(t)
	srv, _ := newServer(t, api.Options{Keys: []*backends.Key{k}, MaxRequestBytes: 1024, MaxBatch: 3})
	d := sha256.Sum256([]byte("x"))
	good := `{"digest":"` + b64(d[:]) + `"}`
	url := srv.URL + "/v1/keys/signing/sign"
	for _, tc := range []struct {
		name, url, ctype, body string
		status                 int
		code                   string
		mention                string
	}{
		{"too large", url, "application/json", `{"message":"` + strings.Repeat("A", 2000) + `"}`, 413, "too_large", "max_request_bytes"},
		{"no content type", url, "", good, 415, "unsupported_media_type", "Content-Type"},
		{"form content type", url, "application/x-www-form-urlencoded", good, 415, "unsupported_media_type", "application/json"},
		{"not JSON", url, "application/json", `digest=abc`, 400, "bad_request", "not valid JSON"},
		{"empty body", url, "application/json", ``, 400, "bad_request", "empty"},
		{"two values", url, "application/json", good + good, 400, "bad_request", "more than one"},
		{"short digest", url, "application/json", `{"digest":"` + b64(d[:31]) + `"}`, 400, "bad_request", "digest: must be a 32-byte"},
		{"long digest", url, "application/json", `{"digest":"` + b64(append(d[:], 0)) + `"}`, 400, "bad_request", "got 33 bytes"},
		{"bad base64", url, "application/json", `{"digest":"***"}`, 400, "bad_request", "digest: not standard base64"},
		{"url-safe base64", url, "application/json", `{"digest":"` + base64.URLEncoding.EncodeToString([]byte{0xfb, 0xff}) + `"}`, 400, "bad_request", "digest: not standard base64"},
		{"bad message base64", url, "application/json", `{"message":"a"}`, 400, "bad_request", "message: not standard base64"},
		{"both", url, "application/json", `{"digest":"` + b64(d[:]) + `","message":"eA=="}`, 400, "bad_request", "digest and message are both set"},
		{"neither", url, "application/json", `{}`, 400, "bad_request", "one of digest or message is required"},
		{"unknown field", url, "application/json", `{"digest":"` + b64(d[:]) + `","hash":"sha256"}`, 400, "bad_request", `unknown field "hash"; accepted: digest, message, batch`},
		{"wrong type", url, "application/json", `{"digest":5}`, 400, "bad_request", "digest: must be a string"},
		{"batch too large", url, "application/json", `{"batch":[{},{},{},{}]}`, 413, "too_large", "max_batch is 3"},
		{"batch and digest", url, "application/json", `{"batch":[],"digest":"` + b64(d[:]) + `"}`, 400, "bad_request", "batch cannot be combined"},
		{"unknown key", srv.URL + "/v1/keys/nope/sign", "application/json", good, 404, "not_found", `no key named "nope"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := post(t, tc.url, tc.ctype, tc.body)
			if status != tc.status {
				t.Fatalf("status %d, want %d: %s", status, tc.status, body)
			}
			var e struct {
				Error struct{ Code, Message string }
			}
			if err := json.Unmarshal(body, &e); err != nil {
				t.Fatalf("error body %q is not the error shape: %v", body, err)
			}
			if e.Error.Code != tc.code || !strings.Contains(e.Error.Message, tc.mention) {
				t.Errorf("error %+v, want code %s mentioning %q", e.Error, tc.code, tc.mention)
			}
			if status, body := post(t, url, "application/json", good); status != 200 {
				t.Fatalf("the next good request failed: %d %s", status, body)
			} else {
				checkSignature(t, k, body, d[:])
			}
		})
	}
}

func TestRoutesAnswerInTheErrorShape(t *testing.T) {
	srv, _ := newServer(t, api.Options{})
	for _, tc := range []struct {
		method, path string
		status       int
		code         string
	}{
		{"GET", "/v2/keys", 404, "not_found"},
		{"GET", "/v1/keys/nope", 404, "not_found"},
		{"DELETE", "/v1/keys", 405, "method_not_allowed"},
		{"GET", "/v1/keys/signing/sign", 405, "method_not_allowed"},
	} {
		req, _ := http.NewRequest(tc.method, srv.URL+tc.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var e struct{ Error struct{ Code string } }
		json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != tc.status || e.Error.Code != tc.code {
			t.Errorf("%s %s: %d %q, want %d %q", tc.method, tc.path, resp.StatusCode, e.Error.Code, tc.status, tc.code)
		}
	}
}

func TestKeys(t *testing.T) {
	k := openDevKey(t)
	srv, _ := newServer(t, api.Options{Keys: []*backends.Key{k}})
	status, body := get(t, srv.URL+"/v1/keys")
	if status != 200 {
		t.Fatalf("%d %s", status, body)
	}
	var list struct{ Keys []api.KeyInfo }
	if err := json.Unmarshal(body, &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Keys) != 1 {
		t.Fatalf("keys: %s", body)
	}
	got := list.Keys[0]
	leaf := k.Leaf()
	if got.Name != "signing" || got.Backend != "pem" || got.Algorithm != "ECDSA_P256" || got.Serial != leaf.SerialNumber.String() ||
		got.NotAfter != leaf.NotAfter.UTC().Format(time.RFC3339) || len(got.Certificates) != 2 || !strings.HasPrefix(got.PublicKey, "-----BEGIN PUBLIC KEY-----") {
		t.Errorf("key = %+v", got)
	}
	status, one := get(t, srv.URL+"/v1/keys/signing")
	var single api.KeyInfo
	if status != 200 || json.Unmarshal(one, &single) != nil || single.PublicKey != got.PublicKey {
		t.Errorf("GET /v1/keys/signing: %d %s", status, one)
	}
}

func TestBatch(t *testing.T) {
	k := openDevKey(t)
	srv, _ := newServer(t, api.Options{Keys: []*backends.Key{k}, MaxRequestBytes: 1 << 20})
	var items []string
	var digests [][]byte
	for i := range 10 {
		d := sha256.Sum256([]byte(fmt.Sprint(i)))
		digests = append(digests, d[:])
		items = append(items, `{"digest":"`+b64(d[:])+`"}`)
	}
	items[3] = `{"digest":"AAAA"}`
	items[7] = `{"nonsense":1}`
	status, body := post(t, srv.URL+"/v1/keys/signing/sign", "application/json", `{"batch":[`+strings.Join(items, ",")+`]}`)
	if status != 200 {
		t.Fatalf("%d %s", status, body)
	}
	var out struct {
		Key, Algorithm string
		Batch          []struct {
			Signature []byte
			Error     *struct{ Code, Message string }
		}
	}
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatal(err)
	}
	if len(out.Batch) != 10 || out.Key != "signing" {
		t.Fatalf("response %s", body)
	}
	for i, r := range out.Batch {
		switch i {
		case 3:
			if r.Error == nil || !strings.Contains(r.Error.Message, "batch[3].digest: must be a 32-byte") {
				t.Errorf("item 3: %+v", r.Error)
			}
		case 7:
			if r.Error == nil || !strings.Contains(r.Error.Message, `batch[7]: unknown field "nonsense"`) {
				t.Errorf("item 7: %+v", r.Error)
			}
		default:
			if r.Error != nil || !ecdsa.VerifyASN1(k.Public().(*ecdsa.PublicKey), digests[i], r.Signature) {
				t.Errorf("item %d: error %+v or a signature that does not verify", i, r.Error)
			}
		}
	}
}

// The routes the daemon serves itself, beside the API (daemon/routes.go; the daemon's
// own test checks that they answer).
var daemonRoutes = map[string]bool{"GET /healthz": true, "GET /readyz": true, "GET /metrics": true}

// TestOpenAPIDescribesEveryRoute checks the document against the routes actually served,
// both ways, and that each documented operation answers on its path.
func TestOpenAPIDescribesEveryRoute(t *testing.T) {
	srv, a := newServer(t, api.Options{})
	status, body := get(t, srv.URL+"/openapi.json")
	if status != 200 {
		t.Fatalf("%d", status)
	}
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Errorf("openapi = %q", doc.OpenAPI)
	}
	documented := map[string]bool{}
	for p, ops := range doc.Paths {
		for m := range ops {
			documented[strings.ToUpper(m)+" "+p] = true
		}
	}
	served := map[string]bool{}
	for _, r := range a.Routes() {
		served[r.Method+" "+strings.TrimSuffix(r.Path, "{$}")] = true
	}
	var missing, extra []string
	for r := range served {
		if !documented[r] {
			missing = append(missing, r)
		}
	}
	for r := range documented {
		if !served[r] && !daemonRoutes[r] {
			extra = append(extra, r)
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	if len(missing) > 0 || len(extra) > 0 {
		t.Errorf("served but not documented: %v; documented but not served: %v", missing, extra)
	}
	for r := range served {
		method, path, _ := strings.Cut(r, " ")
		path = strings.ReplaceAll(path, "{name}", "signing")
		path = strings.ReplaceAll(path, "{file}", "viewer.js")
		req, _ := http.NewRequest(method, srv.URL+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == 405 || resp.StatusCode == 404 {
			t.Errorf("%s %s: %d: documented but not routed", method, path, resp.StatusCode)
		}
	}
	if status, page := get(t, srv.URL+"/api-docs"); status != 200 || !strings.Contains(string(page), "/v1/keys/{name}/sign") {
		t.Errorf("/api-docs: %d", status)
	}
}

// faultySigner is a stand-in for a backend fault that a PEM key cannot produce: an
// unavailable token, or one that never answers. The PKCS#11 and KMS tests produce these
// faults with the real parts.
type faultySigner struct {
	backends.Signer
	err   error
	block bool
}

func (f *faultySigner) SignContext(ctx context.Context, _ []byte) ([]byte, error) {
	if f.block {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return nil, f.err
}

func TestBackendFaultsAre503(t *testing.T) {
	for name, tc := range map[string]struct {
		signer  *faultySigner
		status  int
		mention string
		detail  string // in the log only
	}{
		"unavailable": {&faultySigner{err: fmt.Errorf("%w: token removed", backends.ErrUnavailable)}, 503, `key \"faulty\" cannot sign now`, "token removed"},
		"timeout":     {&faultySigner{block: true}, 503, "sign_timeout", "deadline exceeded"},
		"other":       {&faultySigner{err: fmt.Errorf("CKR_GENERAL_ERROR")}, 500, "the daemon's log has the reason", "CKR_GENERAL_ERROR"},
	} {
		t.Run(name, func(t *testing.T) {
			tc.signer.Signer = pemSigner(t)
			k := keyFromSigner(t, tc.signer)
			var log testenv.SyncBuffer
			srv, _ := newServer(t, api.Options{Keys: []*backends.Key{k}, SignTimeout: 50 * time.Millisecond, Logger: slog.New(slog.NewJSONHandler(&log, nil))})
			d := sha256.Sum256(nil)
			for _, body := range []string{`{"digest":"` + b64(d[:]) + `"}`, `{"batch":[{"digest":"` + b64(d[:]) + `"}]}`} {
				resp, err := http.Post(srv.URL+"/v1/keys/faulty/sign", "application/json", strings.NewReader(body))
				if err != nil {
					t.Fatal(err)
				}
				answer, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				status := resp.StatusCode
				if strings.Contains(body, "batch") {
					status = 200 // the item carries the error
				}
				if resp.StatusCode != status || !strings.Contains(string(answer), tc.mention) {
					t.Errorf("%d %s, want %d mentioning %q", resp.StatusCode, answer, status, tc.mention)
				}
				if strings.Contains(string(answer), tc.detail) {
					t.Errorf("the backend's detail reached the client: %s", answer)
				}
				id := resp.Header.Get("X-Request-Id")
				if id == "" || !strings.Contains(string(answer), `"request_id":"`+id+`"`) {
					t.Errorf("the answer carries no request id (header %q): %s", id, answer)
				}
				if !strings.Contains(log.String(), `"request_id":"`+id+`"`) || !strings.Contains(log.String(), tc.detail) {
					t.Errorf("the log has no line with request id %s and %q:\n%s", id, tc.detail, log.String())
				}
			}
		})
	}
}

var _ crypto.Signer = (*faultySigner)(nil)

var nextFaulty backends.Signer

func init() {
	backends.Register("faulty", backends.Backend{Open: func(context.Context, *conf.Key) (backends.Signer, error) { return nextFaulty, nil }})
}

func pemSigner(t testing.TB) backends.Signer {
	k, err := devsetup.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	return pembackend.NewSigner(k, "memory")
}

func keyFromSigner(t testing.TB, s backends.Signer) *backends.Key {
	nextFaulty = s
	k, err := backends.Open(context.Background(), conf.NewKey("faulty", "faulty", "", "test", nil), backends.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestCSR(t *testing.T) {
	k := openDevKey(t)
	srv, _ := newServer(t, api.Options{Keys: []*backends.Key{k}})
	status, body := post(t, srv.URL+"/v1/keys/signing/csr", "application/json", `{"subject":"/C=GB/O=Org/CN=https://member.example/a/1","uris":["https://member.example/a/1"]}`)
	if status != 200 {
		t.Fatalf("%d %s", status, body)
	}
	var out struct{ CSR string }
	json.Unmarshal(body, &out)
	if !strings.HasPrefix(out.CSR, "-----BEGIN CERTIFICATE REQUEST-----") {
		t.Fatalf("no CSR in %s", body)
	}
	status, body = post(t, srv.URL+"/v1/keys/signing/csr", "application/json", `{"subject":"/XX=1"}`)
	if status != 400 || !strings.Contains(string(body), "unknown attribute") {
		t.Errorf("bad subject: %d %s", status, body)
	}
}

// A client looping on a key that cannot sign: one log line for the same refusal within a
// second, not one per request, and every answer's request id still finds it in the log.
// (Refusals for other reasons each have a line: the awskms daemon test sends several.)
func TestRepeatedRefusalsAreLoggedOnce(t *testing.T) {
	signer := &faultySigner{err: fmt.Errorf("%w: token removed", backends.ErrUnavailable)}
	signer.Signer = pemSigner(t)
	k := keyFromSigner(t, signer)
	var log testenv.SyncBuffer
	srv, _ := newServer(t, api.Options{Keys: []*backends.Key{k}, SignTimeout: time.Second, Logger: slog.New(slog.NewJSONHandler(&log, nil))})
	d := sha256.Sum256(nil)
	body := `{"digest":"` + b64(d[:]) + `"}`
	ids := map[string]bool{}
	for range 50 {
		resp, err := http.Post(srv.URL+"/v1/keys/faulty/sign", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("status %d, want 503", resp.StatusCode)
		}
		ids[resp.Header.Get("X-Request-Id")] = true
	}
	if n := strings.Count(log.String(), `"msg":"sign failed"`); n < 1 || n > 3 {
		t.Errorf("%d log lines for 50 identical refusals within about a second:\n%s", n, log.String())
	}
	for id := range ids {
		if !strings.Contains(log.String(), `"request_id":"`+id+`"`) {
			t.Errorf("request id %s is in an answer but not in the log", id)
		}
	}
}

// /api-docs renders the descriptions' Markdown: code spans become <code>, no backtick
// is left, and the page loads nothing.
func TestAPIDocsRendersMarkdown(t *testing.T) {
	srv, _ := newServer(t, api.Options{})
	resp, err := http.Get(srv.URL + "/api-docs")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	page := string(b)
	if resp.StatusCode != 200 || !strings.Contains(page, "<code>Content-Type: application/json</code>") || strings.Contains(page, "`") {
		t.Errorf("%d: Markdown not rendered:\n%s", resp.StatusCode, page)
	}
	if !strings.Contains(page, "<h2><code>POST /v1/keys/{name}/sign</code>") {
		t.Errorf("the sign route is missing:\n%s", page)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); csp != "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'" {
		t.Errorf("Content-Security-Policy: %q", csp)
	}
}
