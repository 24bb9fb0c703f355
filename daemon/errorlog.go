package daemon

import (
	"log"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// serverLogRate and serverLogBurst bound net/http's own error log: a stranger can make a
// server log a line per failed TLS handshake or per connection it drops, as fast as it
// can connect.
const (
	serverLogRate  = 10
	serverLogBurst = 50
)

// serverErrorLog is the http.Server.ErrorLog of every listener: the server's lines as
// warnings, at most serverLogRate a second; the next line that passes says how many did
// not.
func serverErrorLog(l *slog.Logger) *log.Logger {
	return log.New(&boundedLog{log: l, tokens: serverLogBurst, at: time.Now()}, "", 0)
}

type boundedLog struct {
	log     *slog.Logger
	mu      sync.Mutex
	tokens  float64
	at      time.Time
	dropped int
}

func (b *boundedLog) Write(p []byte) (int, error) {
	now := time.Now()
	b.mu.Lock()
	b.tokens = min(serverLogBurst, b.tokens+now.Sub(b.at).Seconds()*serverLogRate)
	b.at = now
	if b.tokens < 1 {
		b.dropped++
		b.mu.Unlock()
		return len(p), nil
	}
	b.tokens--
	dropped := b.dropped
	b.dropped = 0
	b.mu.Unlock()
	msg := strings.TrimSuffix(string(p), "\n")
	if dropped > 0 {
		b.log.Warn(msg, "lines_not_logged_before", dropped)
	} else {
		b.log.Warn(msg)
	}
	return len(p), nil
}
