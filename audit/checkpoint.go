package audit

import (
	"context"
	"encoding/hex"
	"errors"
	"time"
)

// checkpoint seals the chain's head, if lines were added since the last checkpoint: it
// signs the head and writes the checkpoint line right after it. New lines wait while the
// seal key signs (a few milliseconds every Interval), since the checkpoint must be the
// line after the head it seals. After a checkpoint that failed (the seal key's backend
// down), new lines do not wait: the next attempt signs first and writes its line only if
// no line came meanwhile, and lines stay unsealed (counted, logged) until one succeeds.
// Without a seal key it writes the head file only.
func (l *Log) checkpoint(ctx context.Context) {
	l.sealMu.Lock()
	defer l.sealMu.Unlock()
	l.fileMu.RLock()
	seal := l.opts.Seal
	l.fileMu.RUnlock()
	l.mu.Lock()
	fresh := l.seq != l.lastSeal
	headStale := l.okSeq != l.headSeq
	l.mu.Unlock()
	if seal == nil || seal.Signer == nil || !fresh {
		if headStale {
			l.logErr("cannot write the audit head file", l.writeHead())
		}
		return
	}
	err := l.seal(ctx, seal, !l.sealDown)
	if errors.Is(err, errMoved{}) { // the key signs again: seal holding the lines
		err = l.seal(ctx, seal, true)
	}
	l.sealDown = err != nil
	if err != nil {
		l.m.sealFailed()
		l.logErr("audit checkpoint failed: lines stay unsealed until one succeeds", err)
		return
	}
	l.logErr("cannot write the audit head file", l.writeHead())
}

// errMoved is a checkpoint given up because lines came while it was signed.
type errMoved struct{}

func (errMoved) Error() string { return "new lines arrived while the checkpoint was signed" }

// seal signs the head and writes its checkpoint line. hold makes new lines wait for it.
func (l *Log) seal(ctx context.Context, seal *Seal, hold bool) error {
	l.mu.Lock()
	seq, head := l.seq, l.prev
	now := time.Now().UTC()
	t := now.Format(time.RFC3339Nano)
	l.sealing = hold
	l.mu.Unlock()
	cp, err := seal.signCheckpoint(ctx, seq, head, t)
	l.mu.Lock()
	if l.sealing {
		l.sealing = false
		l.sealed.Broadcast()
	}
	if err == nil && l.seq != seq {
		err = errMoved{}
	}
	if err != nil {
		l.mu.Unlock()
		return err
	}
	start := len(l.pending)
	l.seq++
	l.pending = append(l.pending, lineBytes(&checkpointLine{Time: t, Seq: l.seq, Op: "checkpoint", Prev: hex.EncodeToString(head[:]), Checkpoint: *cp})...)
	cpSeq := l.seq
	if err := l.commit(start); err != nil { // commit unlocks l.mu
		return err
	}
	l.mu.Lock()
	l.lastSeal = cpSeq
	l.mu.Unlock()
	l.m.sealedUpTo(seq, now)
	if log := l.logger(); log != nil {
		log.Info("audit checkpoint", "file", l.Path(), "seq", seq, "head", cp.Head, "time", t, "key", cp.Key, "signature", cp.Signature)
	}
	return nil
}

func (l *Log) logger() interface {
	Info(string, ...any)
	Error(string, ...any)
} {
	l.fileMu.RLock()
	defer l.fileMu.RUnlock()
	if l.opts.Log == nil {
		return nil
	}
	return l.opts.Log
}

func (l *Log) logErr(msg string, err error) {
	if err == nil {
		return
	}
	if log := l.logger(); log != nil {
		log.Error(msg, "file", l.Path(), "error", err.Error())
	}
}
