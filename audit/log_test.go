package audit_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/ib1/provenanced/audit"
)

func writeEntries(t *testing.T, l *audit.Log, n int) {
	t.Helper()
	for i := range n {
		name := "billing"
		d := sha256.Sum256([]byte{byte(i)})
		if err := l.Write(&audit.Entry{Client: &name, Peer: audit.Peer{Addr: "127.0.0.1:1"}, Op: "sign", Key: "signing", Status: 200, Digest: d[:]}); err != nil {
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
	l, err := audit.Open(path, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	writeEntries(t, l, 5)
	l.Close()
	// Reopened by a new daemon: the chain continues.
	l, err = audit.Open(path, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	writeEntries(t, l, 3)
	head := l.Head().Hash
	l.Close()
	res, err := audit.Verify([]string{path}, audit.VerifyOptions{})
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
			_, err := audit.Verify([]string{tampered}, audit.VerifyOptions{})
			var ce *audit.ChainError
			if !errors.As(err, &ce) || ce.Line != tc.atLine {
				t.Fatalf("verify = %v, want a break at line %d", err, tc.atLine)
			}
		})
	}
	// The last line, which nothing follows, is anchored by the head the daemon logs.
	lines := readLines(t, path)
	lines[7] = bytes.Replace(lines[7], []byte(`"status":200`), []byte(`"status":500`), 1)
	writeLines(t, tampered, lines)
	res, err = audit.Verify([]string{tampered}, audit.VerifyOptions{})
	if err != nil || res.Head == head {
		t.Fatalf("an edited last line: %v; head %s must differ from %s", err, res.Head, head)
	}
}

func TestAuditReopenContinuesAcrossFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.jsonl")
	l, err := audit.Open(path, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	writeEntries(t, l, 3)
	os.Rename(path, path+".1") // logrotate
	if err := l.Reopen(path, audit.Options{}); err != nil {
		t.Fatal(err)
	}
	writeEntries(t, l, 2)
	if _, err := audit.Verify([]string{path}, audit.VerifyOptions{}); err == nil {
		t.Fatal("the new file alone verified as a whole log: its first line follows lines it does not hold")
	}
	if _, err := audit.Verify([]string{path}, audit.VerifyOptions{Partial: true}); err != nil {
		t.Fatalf("the new file alone, -partial: %v", err)
	}
	res, err := audit.Verify([]string{path + ".1", path}, audit.VerifyOptions{})
	if err != nil || res.Entries != 5 || res.LastSeq != 5 {
		t.Fatalf("both files: %+v %v", res, err)
	}
	if _, err := audit.Verify([]string{path, path + ".1"}, audit.VerifyOptions{}); err == nil {
		t.Fatal("files in the wrong order verified")
	}
	// A foreign file at the path is not continued.
	os.Rename(path, path+".2")
	os.WriteFile(path, []byte(`{"seq":9,"prev":"00"}`+"\n"), 0o600)
	if err := l.Reopen(path, audit.Options{}); err == nil || !strings.Contains(err.Error(), "move the file aside") {
		t.Fatalf("reopen onto a foreign file: %v", err)
	}
}

func TestAuditConcurrentWritersKeepTheChain(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	l, err := audit.Open(path, audit.Options{})
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
	res, err := audit.Verify([]string{path}, audit.VerifyOptions{})
	if err != nil || res.Entries != 1000 || res.LastSeq != 1000 {
		t.Fatalf("%+v %v", res, err)
	}
}
