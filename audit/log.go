// Package audit is provenanced's audit log: one JSON line per signing operation, each
// carrying in "prev" the hex SHA-256 of the previous line's bytes (without its newline),
// so that an edited, removed, reordered or inserted line breaks the chain (Verify finds
// where).
//
// Lines are written with write(2) to a file opened O_APPEND before the answer is sent,
// concurrent requests' lines together (group commit); a line that cannot be written fails
// the request (503) and no signature leaves. A written line survives a crash of the
// daemon; against a power loss the file is fsynced every second, or, with SyncEach,
// before the answer too.
package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Options configure an audit log.
type Options struct {
	// Metrics count the writes (nil: not counted).
	Metrics *Metrics
	// SyncEach fsyncs every batch before its writers answer ([audit] fsync = true): a
	// line then survives a power loss, not only a crash of the daemon. Otherwise a
	// background fsync runs every SyncInterval.
	SyncEach bool
	// SyncInterval is the background fsync's period (default 1s).
	SyncInterval time.Duration
	// After is the log this one follows (a reload that moved the audit file): when the
	// new file is empty, its chain continues from After's last line.
	After *Log
}

// Log is an open audit log. Its methods are safe for concurrent use.
//
// Writers commit in groups: each appends its line to the pending batch under the lock,
// and one of them (the first to find no flush running) writes the whole batch with one
// write(2), fsyncs it, and wakes the batch's writers; lines that arrive meanwhile form the
// next batch. Every writer still returns only once its own line is written and synced.
type Log struct {
	path  string // "-" = standard output
	m     *Metrics
	sync  bool // fsync after each batch
	dirty atomic.Bool
	stop  chan struct{}
	wg    sync.WaitGroup

	// fileMu guards the file: a flush holds it (read) while it writes and syncs; a reopen
	// or close takes it to swap or close the file between batches.
	fileMu sync.RWMutex
	f      *os.File
	w      io.Writer
	size   int64 // the file's size after the last whole batch, to undo a partial write

	mu       sync.Mutex
	seq      uint64            // the last line's, pending or written
	prev     [sha256.Size]byte // the last line's hash, pending or written
	okSeq    uint64            // the last line on disk, and its hash: where a failed
	okPrev   [sha256.Size]byte // batch rolls the chain back to
	pending  []byte
	spare    []byte
	batch    *batch
	flushing bool

	failed atomic.Pointer[string] // why the last write failed; nil when it did not
}

type batch struct {
	done chan struct{}
	err  error
}

func newBatch() *batch { return &batch{done: make(chan struct{})} }

var emptyHash = sha256.Sum256(nil)

// Open opens (creating, mode 0600) the audit log at path, or standard output
// for "-". The chain continues from the file's last line.
func Open(path string, opts Options) (*Log, error) {
	l := &Log{path: path, m: opts.Metrics, prev: emptyHash, batch: newBatch(), stop: make(chan struct{})}
	if path == "-" {
		l.w = os.Stdout
		l.okPrev = l.prev
		return l, nil
	}
	f, last, size, err := openAuditFile(path)
	if err != nil {
		return nil, err
	}
	if last != nil {
		seq, err := lineSeq(last)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("audit file %s: its last line is not an audit entry (%v); move the file aside", path, err)
		}
		l.seq = seq
		l.prev = sha256.Sum256(last)
	} else if opts.After != nil {
		opts.After.mu.Lock()
		l.seq, l.prev = opts.After.okSeq, opts.After.okPrev
		opts.After.mu.Unlock()
	}
	l.okSeq, l.okPrev = l.seq, l.prev
	l.f, l.w, l.size, l.sync = f, f, size, opts.SyncEach
	if !l.sync {
		every := opts.SyncInterval
		if every <= 0 {
			every = time.Second
		}
		l.wg.Add(1)
		go l.syncEvery(every)
	}
	return l, nil
}

// openAuditFile opens path for appending and returns its last line (nil if empty).
func openAuditFile(path string) (*os.File, []byte, int64, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("cannot open the audit file: %w", err)
	}
	last, size, err := lastLine(path)
	if err != nil {
		f.Close()
		return nil, nil, 0, fmt.Errorf("cannot read the audit file: %w", err)
	}
	return f, last, size, nil
}

// lastLine returns the file's last line without its newline, and the file's size. A file
// that does not end with a newline has a torn last line: an error, as the chain cannot
// continue from it.
func lastLine(path string) ([]byte, int64, error) {
	r, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer r.Close()
	st, err := r.Stat()
	if err != nil {
		return nil, 0, err
	}
	size := st.Size()
	if size == 0 {
		return nil, 0, nil
	}
	const chunk = 64 << 10
	for n := int64(chunk); ; n *= 2 {
		if n > size {
			n = size
		}
		buf := make([]byte, n)
		if _, err := r.ReadAt(buf, size-n); err != nil {
			return nil, 0, err
		}
		if buf[len(buf)-1] != '\n' {
			return nil, 0, fmt.Errorf("%s does not end with a newline: its last line is incomplete; move the file aside", path)
		}
		body := buf[:len(buf)-1]
		if i := bytes.LastIndexByte(body, '\n'); i >= 0 {
			return body[i+1:], size, nil
		}
		if n == size {
			return body, size, nil
		}
	}
}

func lineSeq(line []byte) (uint64, error) {
	var e struct {
		Seq *uint64 `json:"seq"`
	}
	if err := json.Unmarshal(line, &e); err != nil {
		return 0, err
	}
	if e.Seq == nil {
		return 0, errors.New("no seq")
	}
	return *e.Seq, nil
}

// Path is the log's path ("-" for standard output).
func (l *Log) Path() string { return l.path }

// Write appends one entry and returns once it is written (and, for a file, synced). An
// error means the entry is not in the log: the operation must not answer with a
// signature.
func (l *Log) Write(e *Entry) error {
	l.mu.Lock()
	start := len(l.pending)
	l.seq++
	l.pending = e.appendLine(l.pending, time.Now(), l.seq, l.prev[:])
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

		l.fileMu.RLock()
		n, err := l.w.Write(buf)
		if err == nil && l.sync && l.f != nil {
			err = l.f.Sync()
		}
		if err != nil && n > 0 && l.f != nil {
			// A torn line would break the chain for every line after it.
			l.f.Truncate(l.size)
		} else if err == nil {
			l.size += int64(n)
			l.dirty.Store(!l.sync)
		}
		l.fileMu.RUnlock()

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
		}
		l.spare = buf
		l.mu.Unlock()
		b.err = err
		close(b.done)
	}
}

// syncEvery fsyncs what was written, every period, when SyncEach is off.
func (l *Log) syncEvery(period time.Duration) {
	defer l.wg.Done()
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		if !l.dirty.Swap(false) {
			continue
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
	return fmt.Errorf("audit log %s: %w", l.path, err)
}

// Problem says why the last write failed, or "" when it did not; a later write that
// succeeds, or a reopen, clears it.
func (l *Log) Problem() string {
	if p := l.failed.Load(); p != nil {
		return *p
	}
	return ""
}

// Head is the sequence number and hash of the last line written, for the daemon's log:
// an anchor for the last line, which no later line protects yet.
func (l *Log) Head() (uint64, string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.okSeq, hex.EncodeToString(l.okPrev[:])
}

// Reopen opens the log's path again (after logrotate moved the file away), continuing
// the chain: the new file's first line carries the hash of the last line of the old one.
// A file at path that holds other lines than this log's last must be moved aside first:
// the chain would break. On error the old file stays in use.
func (l *Log) Reopen() error {
	if l.path == "-" {
		return nil
	}
	l.fileMu.Lock()
	defer l.fileMu.Unlock()
	f, last, size, err := openAuditFile(l.path)
	if err != nil {
		return err
	}
	l.mu.Lock()
	okPrev := l.okPrev
	l.mu.Unlock()
	if last != nil && sha256.Sum256(last) != okPrev {
		f.Close()
		return fmt.Errorf("audit file %s: its last line is not the last line this daemon wrote, so the chain would break; move the file aside", l.path)
	}
	if l.f != nil {
		l.f.Sync()
		l.f.Close()
	}
	l.f, l.w, l.size = f, f, size
	l.failed.Store(nil)
	l.m.reopened()
	return nil
}

// Close syncs and closes the file.
func (l *Log) Close() error {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
	l.fileMu.Lock()
	defer l.fileMu.Unlock()
	if l.f == nil {
		return nil
	}
	l.f.Sync()
	err := l.f.Close()
	l.f = nil
	l.w = closedLog{}
	return err
}

// closedLog fails every write after Close: a signature must not leave unaudited.
type closedLog struct{}

func (closedLog) Write([]byte) (int, error) { return 0, os.ErrClosed }
