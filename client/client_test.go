package client

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTokenIsSentAndKeptOffPlainNetworks(t *testing.T) {
	var got string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Get("Authorization")
		w.Write([]byte(`{"keys":[]}`))
	}))
	defer srv.Close()
	c, err := New(Options{URL: srv.URL, Token: "t0k"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Keys(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got != "Bearer t0k" {
		t.Fatalf("Authorization = %q", got)
	}
	if _, err := New(Options{URL: "http://signer.example.org:8080", Token: "t0k"}); err == nil || !strings.Contains(err.Error(), "use https://") || strings.Contains(err.Error(), "t0k") {
		t.Fatalf("a token over plain HTTP to another host: %v", err)
	}
	if _, err := New(Options{URL: "https://signer.example.org", Token: "t0k"}); err != nil {
		t.Fatal(err)
	}
}

func TestReadTokenFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "t")
	os.WriteFile(p, []byte("abc\n"), 0o600)
	if tok, err := ReadTokenFile(p); err != nil || tok != "abc" {
		t.Fatalf("%q %v", tok, err)
	}
	os.Chmod(p, 0o640)
	if _, err := ReadTokenFile(p); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("a group-readable token file: %v", err)
	}
}

// The client never follows a redirect to another scheme or host: an https daemon's
// answer (or a proxy's) that points to http:// would otherwise take the token along in
// clear.
func TestRedirectsStayAtTheDaemon(t *testing.T) {
	var leaked []string
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		leaked = append(leaked, r.Header.Get("Authorization")+" "+r.URL.Path)
		w.Write([]byte(`{"keys":[]}`))
	}))
	defer plain.Close()
	var same int
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/keys":
			http.Redirect(w, r, plain.URL+"/v1/keys", http.StatusTemporaryRedirect)
		case "/v1/keys/here":
			same++
			http.Redirect(w, r, "/v1/keys/there", http.StatusTemporaryRedirect)
		default:
			w.Write([]byte(`{"name":"there"}`))
		}
	}))
	defer tlsSrv.Close()
	c, err := New(Options{URL: tlsSrv.URL, Token: "t0k", HTTPClient: tlsSrv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Keys(context.Background())
	if err == nil || !strings.Contains(err.Error(), "not following a redirect from https://") || len(leaked) != 0 {
		t.Fatalf("https -> http: %v; the plain server saw %q", err, leaked)
	}
	if k, err := c.Key(context.Background(), "here"); err != nil || k.Name != "there" || same != 1 {
		t.Errorf("a redirect on the same server: %v %v", k, err)
	}
	if tlsSrv.Client().CheckRedirect != nil {
		t.Error("the caller's http.Client was changed")
	}
	// Another port of the same host is another server.
	other := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, tlsSrv.URL+"/v1/keys/x", http.StatusTemporaryRedirect)
	}))
	defer other.Close()
	c2, _ := New(Options{URL: other.URL, HTTPClient: other.Client()})
	if _, err := c2.Key(context.Background(), "x"); err == nil || !strings.Contains(err.Error(), "another scheme or host") {
		t.Errorf("another port: %v", err)
	}
}
