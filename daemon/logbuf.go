package daemon

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"time"
)

// LogBuffer batches log lines: at thousands of requests a second, one write system call
// per line is a large share of the daemon's CPU. Lines are written out every
// FlushInterval, when a batch passes 64 KiB, at once for warnings and errors (see
// FlushingHandler), and by Flush at exit. A crash loses at most the last interval's
// lines.
type LogBuffer struct {
	mu   sync.Mutex
	w    io.Writer
	buf  []byte
	stop chan struct{}
	done chan struct{}
}

// FlushInterval is how long a log line may wait in a LogBuffer.
const FlushInterval = 100 * time.Millisecond

const logBatch = 64 << 10

// NewLogBuffer returns a LogBuffer writing to w, flushed in the background until Close.
func NewLogBuffer(w io.Writer) *LogBuffer {
	b := &LogBuffer{w: w, buf: make([]byte, 0, logBatch), stop: make(chan struct{}), done: make(chan struct{})}
	go b.loop()
	return b
}

func (b *LogBuffer) loop() {
	defer close(b.done)
	t := time.NewTicker(FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			b.Flush()
		case <-b.stop:
			b.Flush()
			return
		}
	}
}

// Write appends p, a whole line, to the batch.
func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	b.buf = append(b.buf, p...)
	var err error
	if len(b.buf) >= logBatch {
		err = b.flushLocked()
	}
	b.mu.Unlock()
	return len(p), err
}

// Append appends a line that fn writes into the batch's own buffer, saving a copy.
func (b *LogBuffer) Append(fn func([]byte) []byte) {
	b.mu.Lock()
	b.buf = fn(b.buf)
	if len(b.buf) >= logBatch {
		b.flushLocked()
	}
	b.mu.Unlock()
}

// Flush writes the batch out.
func (b *LogBuffer) Flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.flushLocked()
}

func (b *LogBuffer) flushLocked() error {
	if len(b.buf) == 0 {
		return nil
	}
	_, err := b.w.Write(b.buf)
	b.buf = b.buf[:0]
	return err
}

// Close flushes and stops the background flushing.
func (b *LogBuffer) Close() error {
	select {
	case <-b.stop:
	default:
		close(b.stop)
	}
	<-b.done
	return nil
}

// FlushingHandler writes warnings and errors out at once: they are what an operator
// looks for when something goes wrong, possibly just before the process dies.
type FlushingHandler struct {
	slog.Handler
	Buffer *LogBuffer
}

// Handle passes the record on, then flushes for warnings and errors.
func (h FlushingHandler) Handle(ctx context.Context, r slog.Record) error {
	err := h.Handler.Handle(ctx, r)
	if r.Level >= slog.LevelWarn {
		h.Buffer.Flush()
	}
	return err
}

// WithAttrs keeps the flushing.
func (h FlushingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return FlushingHandler{h.Handler.WithAttrs(as), h.Buffer}
}

// WithGroup keeps the flushing.
func (h FlushingHandler) WithGroup(name string) slog.Handler {
	return FlushingHandler{h.Handler.WithGroup(name), h.Buffer}
}
