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
