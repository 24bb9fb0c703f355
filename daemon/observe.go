package daemon

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ib1/provenanced/api/access"
	"github.com/ib1/provenanced/conf"
)

// connContext returns the http.Server.ConnContext of a listener under lim (nil: no
// limit). Once per connection, not once per request, it records the peer of a Unix socket
// connection (the kernel's word for the process: SO_PEERCRED) and gives access control
// what it keeps of the connection, with the hook by which lim learns that a configured
// client uses it.
func (d *Daemon) connContext(lim *connLimit) func(context.Context, net.Conn) context.Context {
	return func(ctx context.Context, c net.Conn) context.Context {
		ac := &access.Conn{}
		if lim != nil {
			ac.Identified = func() { lim.identified(c) }
		}
		ctx = access.WithConn(ctx, ac)
		if uc, ok := c.(*net.UnixConn); ok {
			ctx = access.WithPeer(ctx, socketPeer(uc))
		}
		return ctx
	}
}

// peerOf names the peer of a connection for the connection limits: "uid:N" on the
// socket, known at once as a client's when the configuration being served has one of
// that uid or gid; on TCP the address, and for IPv6 its /64, which one host commonly
// holds whole.
func (d *Daemon) peerOf(c net.Conn) (string, bool) {
	if uc, ok := c.(*net.UnixConn); ok {
		p := socketPeer(uc)
		return "uid:" + strconv.Itoa(p.UID), p.UID >= 0 && d.cur.Load().policy.KnowsPeer(p.UID, p.GID)
	}
	host, _, err := net.SplitHostPort(c.RemoteAddr().String())
	if err != nil {
		return c.RemoteAddr().String(), false
	}
	if ip := net.ParseIP(host); ip != nil && ip.To4() == nil {
		return ip.Mask(net.CIDRMask(64, 128)).String() + "/64", false
	}
	return host, false
}

// socketPeer is the process at the other end of a Unix socket connection; -1 for what
// the kernel does not say.
func socketPeer(uc *net.UnixConn) access.Peer {
	p := access.Peer{UID: -1, GID: -1, PID: -1}
	if raw, err := uc.SyscallConn(); err == nil {
		raw.Control(func(fd uintptr) {
			if cred, err := syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED); err == nil {
				p.UID, p.GID, p.PID = int(cred.Uid), int(cred.Gid), int(cred.Pid)
			}
		})
	}
	return p
}

// observed wraps the API: one metric sample and one log line per request, with the route
// pattern (never the raw path, which would let clients mint label values) and the peer.
type observed struct {
	next     http.Handler
	log      *slog.Logger
	m        *Metrics
	refusals *access.Refusals // past its budget, a refused request has no log line
	mu       sync.RWMutex
	byRoute  map[routeCode]prometheus.Counter
	times    map[string]prometheus.Observer
}

type routeCode struct {
	route  string
	code   int
	client string // a configured client's name, so the label's values stay bounded
}

func newObserved(next http.Handler, log *slog.Logger, m *Metrics, refusals *access.Refusals) *observed {
	return &observed{next: next, log: log, m: m, refusals: refusals, byRoute: map[routeCode]prometheus.Counter{}, times: map[string]prometheus.Observer{}}
}

var recorders = sync.Pool{New: func() any { return new(statusRecorder) }}

func (o *observed) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := recorders.Get().(*statusRecorder)
	rec.ResponseWriter, rec.status = w, 0
	ctx, call := access.NewCall(r.Context())
	r = r.WithContext(ctx)
	o.next.ServeHTTP(rec, r)
	took := time.Since(start)
	status := rec.status
	if status == 0 {
		status = http.StatusOK
	}
	client := call.Client
	rec.ResponseWriter = nil
	recorders.Put(rec)

	route := r.Pattern // set by the ServeMux on this very request
	if route == "" {
		route = "unmatched"
	}
	counter, timer := o.instruments(route, status, client)
	counter.Inc()
	timer.Observe(took.Seconds())

	level := slog.LevelInfo
	switch {
	case status == http.StatusServiceUnavailable:
		// A key that cannot sign: the health check logs the outage once per change of
		// state and with a count of refused signatures every minute, so a client looping
		// on 503s does not fill the log with a line per refusal (at debug level it may).
		level = slog.LevelDebug
	case status >= 500:
		level = slog.LevelError
	case probes[route] && status < 300:
		// A kubelet or a scraper every few seconds, or a stranger's every connection:
		// none is worth a line at info.
		level = slog.LevelDebug
	}
	if !o.log.Enabled(r.Context(), level) || !o.refusals.Observe(r, call, status) {
		return
	}
	p, unix := access.PeerFrom(r.Context())
	attrs := make([]slog.Attr, 0, 8)
	attrs = append(attrs, slog.String("route", route), slog.Int("status", status), slog.Float64("duration_ms", float64(took.Microseconds())/1000))
	if k := r.PathValue("name"); conf.ValidKeyName(k) { // else the answer was a 404, and the line does not repeat it
		attrs = append(attrs, slog.String("key", k))
	}
	if client != "" {
		attrs = append(attrs, slog.String("client", client))
	}
	if unix {
		attrs = append(attrs, slog.Attr{Key: "peer", Value: slog.GroupValue(slog.Int("uid", p.UID), slog.Int("gid", p.GID), slog.Int("pid", p.PID))})
	} else {
		attrs = append(attrs, slog.String("peer", r.RemoteAddr))
	}
	o.log.LogAttrs(r.Context(), level, "request", attrs...)
}

// probes are the daemon's own routes that probes and scrapers poll.
var probes = map[string]bool{"GET /healthz": true, "GET /readyz": true, "GET /metrics": true}

// instruments returns the request counter and duration histogram of a route and status,
// resolving their labels once.
func (o *observed) instruments(route string, status int, client string) (prometheus.Counter, prometheus.Observer) {
	rc := routeCode{route, status, client}
	o.mu.RLock()
	c, ok1 := o.byRoute[rc]
	t, ok2 := o.times[route]
	o.mu.RUnlock()
	if ok1 && ok2 {
		return c, t
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if c, ok1 = o.byRoute[rc]; !ok1 {
		c = o.m.Requests.WithLabelValues(route, strconv.Itoa(status), client)
		o.byRoute[rc] = c
	}
	if t, ok2 = o.times[route]; !ok2 {
		t = o.m.RequestTime.WithLabelValues(route)
		o.times[route] = t
	}
	return c, t
}

// statusRecorder remembers the status a handler wrote.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }
