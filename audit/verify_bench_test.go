package audit

import (
	"bufio"
	"crypto/sha256"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkVerifyMillion is audit verify of a log of a million lines, as the daemon
// writes them (a client, a socket peer, a digest):
//
//	go test -run '^$' -bench VerifyMillion -benchtime 1x ./audit/
//
// Target: under 10 s.
func BenchmarkVerifyMillion(b *testing.B) {
	path := filepath.Join(b.TempDir(), "audit.jsonl")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriter(f)
	name := "billing"
	prev, t := emptyHash, time.Now()
	var line []byte
	for seq := uint64(1); seq <= 1_000_000; seq++ {
		d := sha256.Sum256(line)
		e := Entry{Client: &name, Peer: Peer{Unix: true, UID: 1001, GID: 1001, PID: 4242}, Op: "sign", Route: "POST /v1/keys/{name}/sign", Key: "signing", Status: 200, Digest: d[:]}
		line = e.appendLine(line[:0], t, seq, prev[:])
		prev = sha256.Sum256(line[:len(line)-1])
		w.Write(line)
	}
	w.Flush()
	f.Close()
	b.ResetTimer()
	for range b.N {
		res, err := Verify([]string{path}, VerifyOptions{})
		if err != nil || res.Entries != 1_000_000 {
			b.Fatalf("%+v %v", res, err)
		}
	}
}
