package access

import (
	"crypto/sha256"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/ib1/provenanced/api/wire"
	"github.com/ib1/provenanced/audit"
	"github.com/ib1/provenanced/conf"
	"github.com/ib1/provenanced/testenv"
)

// guardedServer serves one signing route under p: the key is the path's last element,
// the peer the X-Test-Peer header's "uid,gid" (as the socket's SO_PEERCRED would say), and
// the handler charges the client's rate with the number in the body.
func guardedServer(t *testing.T, p *Policy, charged bool) *httptest.Server {
	t.Helper()
	rt := Route{Op: conf.OpSign, KeyOf: func(r *http.Request) string { return r.PathValue("key") }, Refuse: wire.Error, Charged: charged}
	h := (&Guard{Policy: p, Log: slog.New(slog.DiscardHandler)}).Wrap(rt, func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(readAll(r.Body))
		if charged && !Spend(r.Context(), n) {
			return
		}
		wire.JSON(w, http.StatusOK, map[string]string{"client": callFrom(r.Context()).Client})
	})
	mux := http.NewServeMux()
	mux.HandleFunc("POST /sign/{key}", func(w http.ResponseWriter, r *http.Request) {
		ctx, _ := NewCall(r.Context())
		if v := r.Header.Get("X-Test-Peer"); v != "" {
			uid, gid, _ := strings.Cut(v, ",")
			u, _ := strconv.Atoi(uid)
			g, _ := strconv.Atoi(gid)
			ctx = WithPeer(ctx, Peer{UID: u, GID: g, PID: 1})
		}
		h(w, r.WithContext(ctx))
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func readAll(r io.Reader) string {
	b, _ := io.ReadAll(r)
	return string(b)
}

type answer struct {
	status int
	body   string
	header http.Header
}

func post(t *testing.T, srv *httptest.Server, key, body string, header ...string) answer {
	t.Helper()
	req, _ := http.NewRequest("POST", srv.URL+"/sign/"+key, strings.NewReader(body))
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	return answer{resp.StatusCode, readAll(resp.Body), resp.Header}
}

func digestOf(s string) []byte {
	sum := sha256.Sum256([]byte(s))
	return sum[:]
}

// A socket peer whose uid is one client's and whose gid is another's is the uid's client:
// a process is its user first. (A deliberate bug that tried the gid first passed every
// test of the day.)
func TestUIDBeforeGID(t *testing.T) {
	p := NewPolicy([]*conf.Client{
		{Name: "byuid", UIDs: []int{1001}, Keys: []string{"*"}, Allow: []string{"sign"}},
		{Name: "bygid", GIDs: []int{2002}, Keys: []string{"*"}, Allow: []string{"sign"}},
	}, Options{})
	srv := guardedServer(t, p, false)
	for peer, want := range map[string]string{"1001,2002": "byuid", "1001,1": "byuid", "7,2002": "bygid"} {
		if a := post(t, srv, "signing", "", "X-Test-Peer", peer); a.status != 200 || !strings.Contains(a.body, `"client":"`+want+`"`) {
			t.Errorf("peer %s: %d %s, want client %s", peer, a.status, a.body, want)
		}
	}
}

// An Authorization header that is there but empty, or given twice, is a 401: never a
// fallback to the socket peer's identity.
func TestAuthorizationNeverFallsBack(t *testing.T) {
	p := NewPolicy([]*conf.Client{
		{Name: "peer", UIDs: []int{1001}, Keys: []string{"*"}, Allow: []string{"sign"}},
		{Name: "tok", TokenDigest: digestOf("the-token"), Keys: []string{"*"}, Allow: []string{"sign"}},
	}, Options{})
	srv := guardedServer(t, p, false)
	for name, h := range map[string][]string{
		"empty":        {"Authorization", ""},
		"blank":        {"Authorization", "   "},
		"bearer alone": {"Authorization", "Bearer"},
		"basic":        {"Authorization", "Basic dXNlcjpwYXNz"},
		"twice":        {"Authorization", "Bearer the-token", "Authorization", "Bearer the-token"},
	} {
		a := post(t, srv, "signing", "", append([]string{"X-Test-Peer", "1001,1001"}, h...)...)
		if a.status != 401 || !strings.Contains(a.body, `not \"Bearer TOKEN\"`) {
			t.Errorf("%s: %d %s", name, a.status, a.body)
		}
	}
	if a := post(t, srv, "signing", "", "Authorization", "Bearer the-token"); a.status != 200 {
		t.Errorf("the token: %d %s", a.status, a.body)
	}
}

// rate is in signatures: a batch of N costs N, and one that would take the client past
// its rate is refused whole, with Retry-After from the bucket; one larger than the
// bucket could ever hold says so.
func TestRateCountsSignatures(t *testing.T) {
	p := NewPolicy([]*conf.Client{{Name: "b", TokenDigest: digestOf("b-token"), Keys: []string{"*"}, Allow: []string{"sign"}, Rate: 5}}, Options{})
	srv := guardedServer(t, p, true)
	auth := []string{"Authorization", "Bearer b-token"}
	if a := post(t, srv, "signing", "4", auth...); a.status != 200 {
		t.Fatalf("4 of 5: %d %s", a.status, a.body)
	}
	a := post(t, srv, "signing", "3", auth...)
	if a.status != 429 || a.header.Get("Retry-After") != "1" || !strings.Contains(a.body, `over its rate of 5 signatures a second`) {
		t.Errorf("3 more: %d %q %s", a.status, a.header.Get("Retry-After"), a.body)
	}
	if a := post(t, srv, "signing", "1", auth...); a.status != 200 {
		t.Errorf("the refused batch took nothing from the bucket: %d %s", a.status, a.body)
	}
	a = post(t, srv, "signing", "1000", auth...)
	if a.status != 429 || a.header.Get("Retry-After") != "" || !strings.Contains(a.body, "may make 5 signatures at once at most") {
		t.Errorf("1000 at once: %d %q %s", a.status, a.header.Get("Retry-After"), a.body)
	}
}

// Past its refusal budget a stranger gets 429 and no audit line; a client on the same
// address is still served and audited; one line per peer then counts what was not
// written. A key name that cannot be a key's is refused without being repeated.
func TestRefusalBudget(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	al, err := audit.Open(path, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer al.Close()
	rf := NewRefusals(1, 3, nil)
	p := NewPolicy([]*conf.Client{{Name: "app", TokenDigest: digestOf("app-token"), Keys: []string{"signing"}, Allow: []string{"sign"}}}, Options{Audit: al, Refusals: rf})
	srv := guardedServer(t, p, false)
	long := strings.Repeat("k", 65)
	var codes []int
	for i := range 6 {
		key := "signing"
		if i == 0 {
			key = long
		}
		a := post(t, srv, key, "", "Authorization", "Bearer wrong")
		codes = append(codes, a.status)
		if strings.Contains(a.body, long) {
			t.Errorf("the answer repeats the key name: %s", a.body)
		}
		if i >= 3 && (a.status != 429 || a.header.Get("Retry-After") == "" || a.header.Get("WWW-Authenticate") != "") {
			t.Errorf("refusal %d past the budget: %d %v %s", i+1, a.status, a.header, a.body)
		}
	}
	if codes[0] != 404 || codes[1] != 401 || codes[2] != 401 {
		t.Errorf("codes %v", codes)
	}
	if a := post(t, srv, "signing", "", "Authorization", "Bearer app-token"); a.status != 200 {
		t.Errorf("the client on the same address: %d %s", a.status, a.body)
	}
	rf.Flush(al, slog.New(slog.DiscardHandler))
	lines := testenv.AuditLines(t, path)
	if len(lines) != 5 {
		t.Fatalf("%d audit lines, want 3 refusals, the client's signature and a summary: %v", len(lines), lines)
	}
	if lines[0]["key"] != nil || lines[0]["status"] != 404.0 {
		t.Errorf("the invalid key's line: %v", lines[0])
	}
	if s := lines[4]; s["op"] != RefusalSummaryOp || s["count"] != float64(3) || !strings.HasPrefix(s["reason"].(string), "3 refused signing requests since ") || s["peer"] != "127.0.0.1" {
		t.Errorf("the summary: %v", s)
	}
	rf.Flush(al, slog.New(slog.DiscardHandler))
	if n := len(testenv.AuditLines(t, path)); n != 5 {
		t.Errorf("a second flush with nothing to count wrote %d lines", n-5)
	}
}
