package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ib1/provenanced/conf"
)

// token new makes what a token file must hold, writes it private, and never overwrites.
func TestTokenNew(t *testing.T) {
	var out bytes.Buffer
	if code := run([]string{"token", "new"}, &out, io.Discard); code != 0 {
		t.Fatalf("exit %d", code)
	}
	tok := strings.TrimSpace(out.String())
	if len(tok) != 43 || !conf.TokenStrong(tok) {
		t.Fatalf("token %q", tok)
	}
	path := filepath.Join(t.TempDir(), "app.token")
	out.Reset()
	if code := run([]string{"token", "new", "-out", path}, &out, io.Discard); code != 0 {
		t.Fatalf("exit %d", code)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("%v %v", st, err)
	}
	data, _ := os.ReadFile(path)
	sum := sha256.Sum256(bytes.TrimSpace(data))
	if !strings.Contains(out.String(), hex.EncodeToString(sum[:])) || strings.Contains(out.String(), string(bytes.TrimSpace(data))) {
		t.Errorf("the answer should name the hash, never the token: %s", out.String())
	}
	var errw bytes.Buffer
	if code := run([]string{"token", "new", "-out", path}, io.Discard, &errw); code != 1 || !strings.Contains(errw.String(), "never overwritten") {
		t.Errorf("an existing file: exit %d %s", code, errw.String())
	}
	if again, _ := os.ReadFile(path); !bytes.Equal(again, data) {
		t.Error("the file was overwritten")
	}
}
