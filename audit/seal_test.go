package audit_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ib1/provenanced/audit"
	"github.com/ib1/provenanced/testenv"
)

// sealKey is a seal key in memory; down makes it fail, as an HSM or KMS key would while
// its backend is down.
type sealKey struct {
	priv *ecdsa.PrivateKey
	down atomic.Bool
	n    atomic.Int64 // signatures made
}

func newSealKey(t *testing.T) *sealKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &sealKey{priv: k}
}

func (k *sealKey) seal(interval time.Duration) *audit.Seal {
	return &audit.Seal{Key: "audit", Origin: "provenanced test /var/log/audit.jsonl", Interval: interval,
		Signer: audit.SignerFunc(func(ctx context.Context, digest []byte) ([]byte, error) {
			if k.down.Load() {
				return nil, errors.New("the seal key's token is not present")
			}
			k.n.Add(1)
			return ecdsa.SignASN1(rand.Reader, k.priv, digest)
		})}
}

// sealedLog opens a log whose checkpoints come only when the test closes or reopens it
// (the interval is long), with its head file beside it.
func sealedLog(t *testing.T, dir string, k *sealKey) (*audit.Log, string, audit.Options) {
	t.Helper()
	path := filepath.Join(dir, "audit.jsonl")
	opts := audit.Options{HeadFile: filepath.Join(dir, "audit.head"), Seal: k.seal(time.Hour)}
	l, err := audit.Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	return l, path, opts
}

func verify(t *testing.T, k *sealKey, head string, files ...string) (*audit.Chain, error) {
	t.Helper()
	opts := audit.VerifyOptions{}
	if k != nil {
		opts.Key = &k.priv.PublicKey
	}
	if head != "" {
		h, err := audit.ParseHead(head)
		if err != nil {
			t.Fatal(err)
		}
		opts.Head = h
	}
	return audit.Verify(files, opts)
}

// A checkpoint line seals the line before it with a signature over the contract's text,
// which openssl checks with nothing but the public key.
func TestCheckpointIsSignedAsTheContractSays(t *testing.T) {
	dir := t.TempDir()
	k := newSealKey(t)
	l, path, _ := sealedLog(t, dir, k)
	writeEntries(t, l, 3)
	if err := l.Close(); err != nil { // the last checkpoint
		t.Fatal(err)
	}
	lines := readLines(t, path)
	if len(lines) != 4 {
		t.Fatalf("%d lines, want 3 and a checkpoint:\n%s", len(lines), bytes.Join(lines, nil))
	}
	var cp struct {
		Time       string
		Seq        uint64
		Client     *string
		Op, Prev   string
		Checkpoint audit.Checkpoint
	}
	if err := json.Unmarshal(lines[3], &cp); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(bytes.TrimSuffix(lines[2], []byte("\n")))
	if cp.Op != "checkpoint" || cp.Seq != 4 || cp.Client != nil || cp.Checkpoint.Seq != 3 || cp.Checkpoint.Head != hex.EncodeToString(sum[:]) || cp.Prev != cp.Checkpoint.Head || cp.Checkpoint.Key != "audit" {
		t.Fatalf("checkpoint: %s", lines[3])
	}
	text := "provenanced audit checkpoint v1\norigin provenanced test /var/log/audit.jsonl\nseq 3\nhead " + cp.Checkpoint.Head + "\ntime " + cp.Time + "\n"
	if got := string(audit.CheckpointText(cp.Checkpoint.Origin, 3, cp.Checkpoint.Head, cp.Time)); got != text {
		t.Fatalf("signed text:\n%s\nwant\n%s", got, text)
	}
	der, _ := x509.MarshalPKIXPublicKey(&k.priv.PublicKey)
	os.WriteFile(filepath.Join(dir, "pub.pem"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644)
	os.WriteFile(filepath.Join(dir, "text"), []byte(text), 0o644)
	os.WriteFile(filepath.Join(dir, "sig.der"), cp.Checkpoint.Signature, 0o644)
	out, err := exec.Command("openssl", "dgst", "-sha256", "-verify", filepath.Join(dir, "pub.pem"), "-signature", filepath.Join(dir, "sig.der"), filepath.Join(dir, "text")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Verified OK") {
		t.Fatalf("openssl dgst -verify: %v: %s", err, out)
	}
	res, err := verify(t, k, filepath.Join(dir, "audit.head"), path)
	if err != nil || res.Entries != 4 || res.Checkpoints != 1 || res.Sealed != 3 || res.Unsealed() != 0 {
		t.Fatalf("verify: %+v %v", res, err)
	}
}

// What an attacker or an accident does to a sealed log, and what verify says: each must
// fail with the seal key (and the head file where the change is at the end).
func TestSealedLogTampering(t *testing.T) {
	dir := t.TempDir()
	k := newSealKey(t)
	l, path, _ := sealedLog(t, dir, k)
	for range 3 { // three checkpoints, 4 lines each: 15 lines
		writeEntries(t, l, 4)
		if err := l.Reopen(path, audit.Options{HeadFile: filepath.Join(dir, "audit.head"), Seal: k.seal(time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	writeEntries(t, l, 2) // unsealed at the end, until Close
	l.Close()
	head := filepath.Join(dir, "audit.head")
	good := readLines(t, path)
	if res, err := verify(t, k, head, path); err != nil || res.Entries != 18 || res.Checkpoints != 4 {
		t.Fatalf("the log as written: %+v %v", res, err)
	}
	tampered := filepath.Join(dir, "t.jsonl")
	for _, tc := range []struct {
		name     string
		edit     func([][]byte) [][]byte
		withHead bool
	}{
		{"last line deleted", func(l [][]byte) [][]byte { return l[:len(l)-1] }, true},
		{"last 5 lines deleted", func(l [][]byte) [][]byte { return l[:len(l)-5] }, true},
		{"first 3 lines deleted", func(l [][]byte) [][]byte { return l[3:] }, false},
		{"emptied", func(l [][]byte) [][]byte { return nil }, true},
		{"a line edited and every later hash recomputed", func(l [][]byte) [][]byte {
			l[1] = bytes.Replace(l[1], []byte(`"status":200`), []byte(`"status":201`), 1)
			return testenv.RechainAudit(t, l, 1)
		}, false},
		{"seq jumps, every prev right", func(l [][]byte) [][]byte {
			for i := 6; i < len(l); i++ {
				l[i] = bytes.Replace(l[i], []byte(`"seq":`), []byte(`"seq":1`), 1) // 7 → 17, ...
			}
			return testenv.RechainAudit(t, l, 6)
		}, false},
		{"checkpoints stripped and the chain recomputed", func(l [][]byte) [][]byte {
			var out [][]byte
			for _, line := range l {
				if !bytes.Contains(line, []byte(`"op":"checkpoint"`)) {
					out = append(out, line)
				}
			}
			return renumber(t, out)
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lines := make([][]byte, len(good))
			for i := range good {
				lines[i] = append([]byte(nil), good[i]...)
			}
			writeLines(t, tampered, tc.edit(lines))
			h := ""
			if tc.withHead {
				h = head
			}
			if res, err := verify(t, k, h, tampered); err == nil {
				t.Fatalf("verified: %+v", res)
			}
		})
	}
	// Rewritten with recomputed hashes, the log passes a check of the chain alone: only
	// the seal tells.
	lines := readLines(t, path)
	lines[1] = bytes.Replace(lines[1], []byte(`"status":200`), []byte(`"status":201`), 1)
	writeLines(t, tampered, testenv.RechainAudit(t, lines, 1))
	if _, err := verify(t, nil, "", tampered); err != nil {
		t.Fatalf("the chain alone of a rewritten log: %v", err)
	}
}

// renumber gives lines consecutive seqs from their first and recomputes the chain.
func renumber(t *testing.T, lines [][]byte) [][]byte {
	t.Helper()
	for i := range lines {
		var m map[string]any
		dec := json.NewDecoder(bytes.NewReader(lines[i]))
		dec.UseNumber()
		if err := dec.Decode(&m); err != nil {
			t.Fatal(err)
		}
		m["seq"] = i + 1
		b, _ := json.Marshal(m)
		lines[i] = append(b, '\n')
	}
	return testenv.RechainAudit(t, lines, 1)
}

// The chain breaks with no tampering nowhere: moved + reopened, emptied and restarted,
// copytruncate, restarted with nothing written: every file in order verifies as one
// chain, sealed, with no seq twice.
func TestOneChainAcrossFilesAndRestarts(t *testing.T) {
	dir := t.TempDir()
	k := newSealKey(t)
	path := filepath.Join(dir, "audit.jsonl")
	opts := audit.Options{HeadFile: filepath.Join(dir, "audit.head"), Seal: k.seal(time.Hour)}
	open := func() *audit.Log {
		l, err := audit.Open(path, opts)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	l := open()
	writeEntries(t, l, 3)
	os.Rename(path, path+".1") // logrotate: move, then SIGHUP
	if err := l.Reopen(path, opts); err != nil {
		t.Fatal(err)
	}
	l.Close() // stopped before anything else was signed: the new file is empty
	l = open()
	writeEntries(t, l, 2)
	l.Close()
	os.Rename(path, path+".2") // moved while stopped
	l = open()                 // a new, empty file: it continues from the head file
	writeEntries(t, l, 2)
	// copytruncate: a copy, then the file emptied under the daemon's feet.
	data, _ := os.ReadFile(path)
	os.WriteFile(path+".3", data, 0o600)
	os.Truncate(path, 0)
	writeEntries(t, l, 2)
	l.Close()
	files := []string{path + ".1", path + ".2", path + ".3", path}
	res, err := verify(t, k, filepath.Join(dir, "audit.head"), files...)
	if err != nil {
		t.Fatalf("one chain across %v: %v", files, err)
	}
	if res.Entries < 9 || !res.Anchored || res.Unsealed() != 0 {
		t.Fatalf("%+v", res)
	}
	// An edit to the last line of the older of two files breaks the newer's first line.
	lines := readLines(t, path+".2")
	lines[len(lines)-1] = bytes.Replace(lines[len(lines)-1], []byte(`"seq"`), []byte(`"seq" `), 1)
	writeLines(t, path+".2", lines)
	_, err = verify(t, nil, "", files...)
	var ce *audit.ChainError
	if !errors.As(err, &ce) || ce.File != path+".3" || ce.Line != 1 {
		t.Fatalf("an edited last line of the older file: %v, want a break at %s:1", err, path+".3")
	}
}

// A file whose end the head file contradicts stops Open, naming both; acknowledged, the
// break is a line of the log, and the log opens.
func TestHeadMismatchAndAcknowledge(t *testing.T) {
	dir := t.TempDir()
	k := newSealKey(t)
	l, path, opts := sealedLog(t, dir, k)
	writeEntries(t, l, 5)
	l.Close()
	lines := readLines(t, path)
	writeLines(t, path, lines[:3]) // a restored backup, say
	_, err := audit.Open(path, opts)
	var mm *audit.HeadMismatchError
	if !errors.As(err, &mm) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), opts.HeadFile) {
		t.Fatalf("open after lines were removed: %v", err)
	}
	ack, done, err := audit.Acknowledge(path, opts.HeadFile, "restored from last night's backup")
	if err != nil || !done || ack.Head.Seq != 6 || ack.File.Seq != 3 {
		t.Fatalf("acknowledge: %+v %v %v", ack, done, err)
	}
	if _, done, err := audit.Acknowledge(path, opts.HeadFile, "again"); done || err != nil {
		t.Fatalf("a second acknowledge: %v %v", done, err)
	}
	l, err = audit.Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	writeEntries(t, l, 1)
	l.Close()
	res, err := verify(t, k, opts.HeadFile, path)
	if err != nil || len(res.Acknowledged) != 1 || res.Acknowledged[0].Reason != "restored from last night's backup" || res.LastSeq != 9 {
		t.Fatalf("verify after the acknowledged break: %+v %v", res, err)
	}
}

// With the seal key down, lines are written unsealed, and the next checkpoint after it
// comes back seals them all.
func TestSealKeyDownCarriesOnUnsealed(t *testing.T) {
	dir := t.TempDir()
	k := newSealKey(t)
	path := filepath.Join(dir, "audit.jsonl")
	l, err := audit.Open(path, audit.Options{HeadFile: path + ".head", Seal: k.seal(20 * time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	k.down.Store(true)
	writeEntries(t, l, 3)
	time.Sleep(100 * time.Millisecond) // some checkpoints fail meanwhile
	if bytes.Contains(bytes.Join(readLines(t, path), nil), []byte(`"checkpoint"`)) {
		t.Fatal("a checkpoint while the seal key was down")
	}
	k.down.Store(false)
	writeEntries(t, l, 1)
	deadline := time.Now().Add(10 * time.Second)
	for !bytes.Contains(bytes.Join(readLines(t, path), nil), []byte(`"checkpoint"`)) {
		if time.Now().After(deadline) {
			t.Fatal("no checkpoint after the seal key came back")
		}
		time.Sleep(10 * time.Millisecond)
	}
	l.Close()
	if res, err := verify(t, k, path+".head", path); err != nil || res.Sealed < 4 {
		t.Fatalf("%+v %v", res, err)
	}
}

// The file is what it claims: a device or a pipe is refused; a file moved or removed
// under the daemon is noticed and a new one continues the chain.
func TestAuditFileIsAFile(t *testing.T) {
	dir := t.TempDir()
	os.Symlink("/dev/null", filepath.Join(dir, "null"))
	syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o600)
	for _, p := range []string{"/dev/null", "/dev/full", filepath.Join(dir, "null"), filepath.Join(dir, "fifo"), dir} {
		if l, err := audit.Open(p, audit.Options{}); err == nil || !strings.Contains(err.Error(), "not a regular file") {
			if l != nil {
				l.Close()
			}
			t.Errorf("%s: %v", p, err)
		}
	}
	path := filepath.Join(dir, "audit.jsonl")
	l, err := audit.Open(path, audit.Options{HeadFile: path + ".head", Watch: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	writeEntries(t, l, 2)
	os.Rename(path, path+".1")
	waitFor(t, func() bool { _, err := os.Stat(path); return err == nil })
	writeEntries(t, l, 1)
	os.Remove(path)
	waitFor(t, func() bool { _, err := os.Stat(path); return err == nil })
	writeEntries(t, l, 1)
	if res, err := verify(t, nil, "", path+".1", path); err == nil {
		t.Fatalf("the unlinked file's line was lost, yet the chain verified: %+v", res)
	}
	if res, err := audit.Verify([]string{path}, audit.VerifyOptions{Partial: true}); err != nil || res.LastSeq != 4 {
		t.Fatalf("the file after the unlink: %+v %v", res, err)
	}
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("not within 10 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A batch that fails on a full disk leaves no partial line and no seq or prev advanced:
// lines written once there is room again continue the chain. copytruncate meanwhile does
// not make the undo pad the file with zeros.
func TestFullDiskLeavesTheChainWhole(t *testing.T) {
	disk := testenv.Tmpfs(t, 64<<10)
	path := filepath.Join(disk, "audit.jsonl")
	l, err := audit.Open(path, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	writeEntries(t, l, 20)
	os.Truncate(path, 0) // copytruncate, the copy elsewhere
	free := testenv.FillDisk(t, disk)
	name := "billing"
	for range 3 {
		if err := l.Write(&audit.Entry{Client: &name, Op: "sign", Status: 200, Digest: make([]byte, 32)}); err == nil {
			t.Fatal("a write on a full disk succeeded")
		}
	}
	free()
	writeEntries(t, l, 2)
	data, _ := os.ReadFile(path)
	if bytes.IndexByte(data, 0) >= 0 {
		t.Fatalf("the file holds NUL bytes: %q", data[:min(len(data), 200)])
	}
	res, err := audit.Verify([]string{path}, audit.VerifyOptions{Partial: true})
	if err != nil || res.Entries != 2 || res.FirstSeq != 21 {
		t.Fatalf("after the full disk: %+v %v", res, err)
	}
}
