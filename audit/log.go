// Package audit is provenanced's audit log: one JSON line per signing operation, each
// carrying in "prev" the hex SHA-256 of the previous line's bytes (without its newline),
// so that an edited, removed, reordered or inserted line breaks the chain (Verify finds
// where). With a seal key, signed checkpoints (seal.go) make the chain provable to whoever
// holds the key's public key; a head file carries the chain across files and restarts.
//
// Lines are written with write(2) to a file opened O_APPEND before the answer is sent,
// concurrent requests' lines together (group commit); a line that cannot be written fails
// the request (503) and no signature leaves. A written line survives a crash of the
// daemon; against a power loss the file is fsynced every second, or, with SyncEach,
// before the answer too.
package audit

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Options configure an audit log. Reopen may change them.
type Options struct {
	// Metrics count the writes (nil: not counted).
	Metrics *Metrics
	// Log receives the checkpoints (at info, so that a log shipper keeps a copy of each
	// head out of reach of whoever can write the audit file), and the file's moves.
	Log *slog.Logger
	// SyncEach fsyncs every batch before its writers answer ([audit] fsync = true): a
	// line then survives a power loss, not only a crash of the daemon. Otherwise a
	// background fsync runs every SyncInterval.
	SyncEach bool
	// SyncInterval is the background fsync's period (default 1s).
	SyncInterval time.Duration
	// HeadFile keeps the chain's head across files and restarts ("" for none).
	HeadFile string
	// Seal signs checkpoints; nil leaves the chain unsealed.
	Seal *Seal
	// Watch is how often the file is compared with its path, to notice it moved, removed
	// or truncated (default 1s).
	Watch time.Duration
}

// Log is an open audit log. Its methods are safe for concurrent use.
//
// Writers commit in groups: each appends its line to the pending batch under the lock,
// and one of them (the first to find no flush running) writes the whole batch with one
// write(2), fsyncs it, and wakes the batch's writers; lines that arrive meanwhile form the
// next batch. Every writer still returns only once its own line is written and synced.
type Log struct {
	m    *Metrics
	stop chan struct{}
	wg   sync.WaitGroup

	// fileMu guards the file and the options: a flush holds it (read) while it writes
	// and syncs; a reopen or close takes it to swap or close the file between batches.
	fileMu sync.RWMutex
	path   string // "-" = standard output
	opts   Options
	f      *os.File // nil for standard output
	w      io.Writer
	size   atomic.Int64 // the file's size after the last whole batch
	stale  error        // the file left its path and could not be reopened: writes fail
	dirty  atomic.Bool

	mu       sync.Mutex
	sealed   *sync.Cond        // on mu: a checkpoint's line is in (sealing ended)
	seq      uint64            // the last line's, pending or written
	prev     [sha256.Size]byte // the last line's hash, pending or written
	okSeq    uint64            // the last line on disk, and its hash: where a failed
	okPrev   [sha256.Size]byte // batch rolls the chain back to
	pending  []byte
	spare    []byte
	batch    *batch
	flushing bool
	sealing  bool   // a checkpoint is being signed: new lines wait for its line
	lastSeal uint64 // the seq of the last checkpoint line
	headSeq  uint64 // the seq last written to the head file

	sealMu   sync.Mutex // one checkpoint at a time
	sealDown bool       // under sealMu: the last checkpoint failed

	failed atomic.Pointer[string] // why the last write failed; nil when it did not
}

type batch struct {
	done chan struct{}
	err  error
}

func newBatch() *batch { return &batch{done: make(chan struct{})} }

var emptyHash = sha256.Sum256(nil)

// Open opens (creating, mode 0600) the audit log at path, or standard output for "-".
// The chain continues from the file's last line or, for an empty file, from the head
// file's head; a file whose end the head file contradicts is a *HeadMismatchError.
func Open(path string, opts Options) (*Log, error) {
	l := &Log{path: path, opts: opts, m: opts.Metrics, batch: newBatch(), stop: make(chan struct{})}
	l.sealed = sync.NewCond(&l.mu)
	var head *Head
	if opts.HeadFile != "" {
		var err error
		if head, err = ReadHead(opts.HeadFile); err != nil {
			return nil, err
		}
	}
	if path == "-" {
		// A closed standard output must be a write error, failing closed, not a SIGPIPE
		// that ends the process: Go raises it for fd 1 unless the program asks for it.
		signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
		l.w, l.prev = os.Stdout, emptyHash
		if head != nil {
			l.seq, l.prev = head.Seq, mustHash(head.Hash)
		}
	} else {
		f, err := openFile(path)
		if err != nil {
			return nil, err
		}
		var size int64
		l.seq, l.prev, size, err = resume(path, opts.HeadFile, head)
		l.size.Store(size)
		if err != nil {
			f.Close()
			return nil, err
		}
		l.f, l.w = f, f
	}
	l.okSeq, l.okPrev, l.lastSeal = l.seq, l.prev, l.seq
	if err := l.writeHead(); err != nil {
		l.closeFile()
		return nil, err
	}
	l.m.wroteUpTo(l.seq)
	l.wg.Add(1)
	go l.background()
	return l, nil
}

func mustHash(s string) [32]byte {
	h, _ := hexHash(s) // ReadHead checked it
	return h
}

// Path is the log's path ("-" for standard output).
func (l *Log) Path() string {
	l.fileMu.RLock()
	defer l.fileMu.RUnlock()
	return l.path
}

// Write appends one entry and returns once it is written (and, for a file, synced). An
// error means the entry is not in the log: the operation must not answer with a
// signature.
func (l *Log) Write(e *Entry) error {
	l.mu.Lock()
	for l.sealing {
		l.sealed.Wait()
	}
	start := len(l.pending)
	l.seq++
	l.pending = e.appendLine(l.pending, time.Now(), l.seq, l.prev[:])
	return l.commit(start)
}

// commit ends what Write (or a checkpoint) began under l.mu: the line appended to
// pending from start on becomes the chain's head, and is written with its batch.
func (l *Log) commit(start int) error {
	l.prev = sha256.Sum256(l.pending[start : len(l.pending)-1])
	b := l.batch
	lead := !l.flushing
	l.flushing = true
	l.mu.Unlock()
	if lead {
		runtime.Gosched()
		l.flush()
	}
	<-b.done
	if b.err != nil {
		return l.fail(b.err)
	}
	if l.failed.Load() != nil {
		l.failed.Store(nil)
	}
	l.m.wrote(nil)
	return nil
}

// flush writes batches until none is pending.
func (l *Log) flush() {
	for {
		l.mu.Lock()
		if len(l.pending) == 0 {
			l.flushing = false
			l.mu.Unlock()
			return
		}
		buf, b := l.pending, l.batch
		seq, prev := l.seq, l.prev
		l.pending, l.spare = l.spare[:0], nil
		l.batch = newBatch()
		l.mu.Unlock()

		err := l.writeBatch(buf)

		l.mu.Lock()
		if err != nil {
			// The lines queued behind this batch chain from lines that are not in the
			// file: they fail too, and the chain resumes from the last line on disk.
			l.seq, l.prev = l.okSeq, l.okPrev
			next := l.batch
			l.pending = l.pending[:0]
			l.batch = newBatch()
			next.err = err
			close(next.done)
		} else {
			l.okSeq, l.okPrev = seq, prev
			l.m.wroteUpTo(seq)
		}
		l.spare = buf
		l.mu.Unlock()
		b.err = err
		close(b.done)
	}
}

// writeBatch writes a batch whole or not at all: after a write that failed part way (a
// full disk), the bytes written are cut off again, measured from the file's end as it is
// now, so that a file truncated meanwhile (copytruncate) is not padded with zeros.
func (l *Log) writeBatch(buf []byte) error {
	l.fileMu.RLock()
	defer l.fileMu.RUnlock()
	if l.stale != nil {
		return l.stale
	}
	n, err := l.w.Write(buf)
	if err == nil && l.opts.SyncEach && l.f != nil {
		err = l.f.Sync() // a batch not synced fails, and is cut off like a torn one
	}
	if err != nil && n > 0 && l.f != nil {
		if st, serr := l.f.Stat(); serr == nil && st.Size() >= int64(n) {
			if terr := l.f.Truncate(st.Size() - int64(n)); terr != nil {
				err = fmt.Errorf("%w; and the part written could not be cut off (%v): the file ends in a torn line", err, terr)
			}
		}
	}
	if err == nil {
		l.size.Add(int64(n))
		l.dirty.Store(!l.opts.SyncEach)
	}
	return err
}

// background syncs, watches the file and seals, each on its own period, until Close.
func (l *Log) background() {
	defer l.wg.Done()
	l.fileMu.RLock()
	syncEvery, watchEvery, sealEvery := l.opts.SyncInterval, l.opts.Watch, l.opts.Seal.interval()
	l.fileMu.RUnlock()
	if syncEvery <= 0 {
		syncEvery = time.Second
	}
	if watchEvery <= 0 {
		watchEvery = time.Second
	}
	syncT, watchT, sealT := time.NewTicker(syncEvery), time.NewTicker(watchEvery), time.NewTicker(sealEvery)
	defer syncT.Stop()
	defer watchT.Stop()
	defer sealT.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-syncT.C:
			l.syncNow()
		case <-watchT.C:
			l.watch()
		case <-sealT.C:
			l.checkpoint(context.Background())
		}
	}
}

// syncNow fsyncs what was written since the last sync, when SyncEach is off.
func (l *Log) syncNow() {
	if !l.dirty.Swap(false) {
		return
	}
	l.fileMu.RLock()
	var err error
	if l.f != nil {
		err = l.f.Sync()
	}
	l.fileMu.RUnlock()
	if err != nil {
		l.fail(err) // lines may be lost: not ready until a write succeeds again
	}
}

func (l *Log) fail(err error) error {
	// The reason shows in /readyz: the system's words without the file's path.
	why := err
	var pe *os.PathError
	if errors.As(err, &pe) {
		why = pe.Err
	}
	msg := "the audit log cannot be written: " + why.Error()
	l.failed.Store(&msg)
	l.m.wrote(err)
	return fmt.Errorf("audit log %s: %w", l.Path(), err)
}

// Problem says why the last write failed, or "" when it did not; a later write that
// succeeds, or a reopen, clears it.
func (l *Log) Problem() string {
	if p := l.failed.Load(); p != nil {
		return *p
	}
	return ""
}

// Head is the seq and hash of the last line written, for the daemon's log: an anchor for
// the last line, which no later line protects yet.
func (l *Log) Head() Head {
	l.mu.Lock()
	defer l.mu.Unlock()
	return headOf(l.okSeq, l.okPrev)
}

// writeHead writes the head file, if there is one, with the last line written.
func (l *Log) writeHead() error {
	l.mu.Lock()
	h, seq := headOf(l.okSeq, l.okPrev), l.okSeq
	l.mu.Unlock()
	l.fileMu.RLock()
	path := l.opts.HeadFile
	l.fileMu.RUnlock()
	if path == "" {
		return nil
	}
	if err := writeHead(path, h); err != nil {
		return err
	}
	l.mu.Lock()
	l.headSeq = max(l.headSeq, seq)
	l.mu.Unlock()
	return nil
}

// Close seals what the last checkpoint did not, syncs and closes the file and writes
// the head file. Writes after Close fail: a signature must not leave unaudited.
func (l *Log) Close() error {
	select {
	case <-l.stop:
		return nil
	default:
		close(l.stop)
	}
	l.wg.Wait()
	l.checkpoint(context.Background())
	err := l.closeFile()
	if herr := l.writeHead(); err == nil {
		err = herr
	}
	return err
}

func (l *Log) closeFile() error {
	l.fileMu.Lock()
	defer l.fileMu.Unlock()
	l.w = closedLog{}
	if l.f == nil {
		return nil
	}
	l.f.Sync()
	err := l.f.Close()
	l.f = nil
	return err
}

// closedLog fails every write after Close.
type closedLog struct{}

func (closedLog) Write([]byte) (int, error) { return 0, os.ErrClosed }

// lineBytes encodes a line that is not an Entry (a checkpoint, an acknowledgement).
func lineBytes(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic("audit: encoding a line: " + err.Error()) // strings, numbers and bytes only
	}
	return append(b, '\n')
}
