package audit

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
)

// Reopen opens path, the same or another, with opts (after a reload, or after logrotate
// moved the file away), continuing the chain: the new file's first line carries the
// hash of the last line of the old one. The old file's end is sealed first. A file at
// path that holds other lines than this log's last must be moved aside first: the chain
// would break. On error the old file stays in use.
func (l *Log) Reopen(path string, opts Options) error {
	if path != "-" {
		if err := regular(path); err != nil {
			return err
		}
	}
	l.checkpoint(context.Background())
	if err := l.swap(path, opts); err != nil {
		return err
	}
	l.failed.Store(nil)
	l.m.reopened()
	l.restartBackground()
	return l.writeHead()
}

// swap opens path and makes it the log's file, between batches.
func (l *Log) swap(path string, opts Options) error {
	l.fileMu.Lock()
	defer l.fileMu.Unlock()
	var f *os.File
	var size int64
	if path != "-" {
		var err error
		if f, err = openFile(path); err != nil {
			return err
		}
		last, n, err := lastLine(path)
		if err != nil {
			f.Close()
			return fmt.Errorf("cannot read the audit file: %w", err)
		}
		l.mu.Lock()
		okPrev := l.okPrev
		l.mu.Unlock()
		if last != nil && sha256.Sum256(last) != okPrev {
			f.Close()
			return fmt.Errorf("audit file %s: its last line is not the last line this daemon wrote, so the chain would break; move the file aside", path)
		}
		size = n
	}
	if l.f != nil {
		l.f.Sync()
		l.f.Close()
	}
	l.f, l.path, l.stale = f, path, nil
	l.size.Store(size)
	l.w = os.Stdout
	if f != nil {
		l.w = f
	}
	opts.Metrics = l.m // the series outlive the file
	l.opts = opts
	return nil
}

// restartBackground starts the syncs, watches and checkpoints again on the periods of
// the options Reopen was given.
func (l *Log) restartBackground() {
	close(l.stop)
	l.wg.Wait()
	l.stop = make(chan struct{})
	l.wg.Add(1)
	go l.background()
}

// watch compares the open file with its path: moved or removed (logrotate without
// SIGHUP, or an accident), the log reopens the path, a new file that continues the
// chain; truncated (copytruncate), the chain goes on in the emptied file. If the path
// cannot be opened, writes fail until it can: lines must not go to a file nobody sees.
func (l *Log) watch() {
	l.fileMu.RLock()
	f, path, opts, size := l.f, l.path, l.opts, l.size.Load()
	l.fileMu.RUnlock()
	if f == nil {
		return
	}
	fst, err := f.Stat()
	if err != nil {
		return
	}
	pst, perr := os.Stat(path)
	switch {
	case perr != nil || !os.SameFile(fst, pst):
		if log := l.logger(); log != nil {
			log.Info("the audit file left its path (moved or removed): a new file there continues the chain", "file", path)
		}
		if err := l.swap(path, opts); err != nil {
			l.fileMu.Lock()
			if l.f == f {
				l.stale = fmt.Errorf("the audit file left its path and cannot be opened again: %w", err)
			}
			l.fileMu.Unlock()
			l.fail(err)
			l.logErr("cannot reopen the audit file: signing fails until it can be written", err)
			return
		}
		l.failed.Store(nil)
		l.m.reopened()
		l.logErr("cannot write the audit head file", l.writeHead())
	case fst.Size() < size:
		if log := l.logger(); log != nil {
			log.Info("the audit file was truncated (copytruncate): the chain goes on from the last line before", "file", path, "size", fst.Size())
		}
		l.fileMu.Lock()
		if l.f == f {
			l.size.Store(fst.Size())
		}
		l.fileMu.Unlock()
	}
}
