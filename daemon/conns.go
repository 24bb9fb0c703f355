package daemon

import (
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// connLimit bounds one listener's connections, net/http having no bound of its own: at
// most max in all and perPeer from one peer (a uid on the socket, an address on TCP), and
// connections nobody has identified as a configured client's at most max less a quarter,
// the room kept for configured clients.
//
// At a bound, the newcomer gets in by closing an idle connection (between requests, or
// accepted and still silent), the oldest first and a stranger's before a client's; a
// newcomer that is not known as a client's may close only strangers' connections idle for
// minIdle at least. When every connection in its way is busy (or, for a stranger, idle
// for less), the newcomer is closed at once. A connection in the middle of a request is
// never closed: that is what the read and write timeouts bound.
//
// minIdle stops a peer that opens connections in a loop from turning each into the close
// of another and a request served: past its bound, its newcomers cost an accept and a
// close, and each of its connections is replaced at most once a second.
//
// The daemon counts a connection as its listener accepts it (limitedListener: a newcomer
// that does not get in is closed before net/http spends anything on it), and follows it
// through net/http's ConnState as it goes between requests and closes (state).
type connLimit struct {
	listener string
	max      int
	perPeer  int
	reserved int

	mu        sync.Mutex
	conns     map[net.Conn]*tracked
	peers     map[string]*peerConns
	untrusted int
	accepted  uint64 // connections admitted so far

	open   prometheus.Gauge
	closed prometheus.Counter // idle connections closed to make room
	refuse prometheus.Counter // newcomers closed at once
	now    func() time.Time
}

type peerConns struct {
	conns map[*tracked]struct{}
}

// tracked is one connection. A request's start and end only set idle and since: which
// idle connection is the oldest is looked for when room is needed, which is rare, rather
// than kept in order at every request, which is not.
type tracked struct {
	c       net.Conn
	peer    string
	pc      *peerConns
	trusted bool
	idle    bool      // between requests, or accepted and silent
	since   time.Time // idle since
	n       uint64    // accepted as the listener's nth: the older of two idle as long
}

// longerIdle reports whether t has been idle longer than o (nil: than nothing). Two idle
// since the same instant (the clock's resolution) go by when they were accepted, so that
// the choice never depends on a map's order.
func (t *tracked) longerIdle(o *tracked) bool {
	return o == nil || t.since.Before(o.since) || (t.since.Equal(o.since) && t.n < o.n)
}

// minIdle is how long a stranger's connection is idle before a stranger's newcomer may
// take its place.
const minIdle = time.Second

// newConnLimit is a listener's bound; reserve keeps room for configured clients (the
// metrics listener, where nobody is one, keeps none).
func newConnLimit(listener string, max, perPeer int, reserve bool, m *connMetrics) *connLimit {
	l := &connLimit{listener: listener, max: max, perPeer: min(perPeer, max), conns: map[net.Conn]*tracked{}, peers: map[string]*peerConns{}, now: time.Now}
	if reserve {
		l.reserved = max / 4
	}
	l.open = m.open.WithLabelValues(listener)
	l.closed = m.closed.WithLabelValues(listener, "idle_closed_for_room")
	l.refuse = m.closed.WithLabelValues(listener, "refused_at_limit")
	return l
}

// admit counts a new connection from peer (trusted: known at once as a configured
// client's). When there is no room even after closing idle connections, it closes c and
// reports false.
func (l *connLimit) admit(c net.Conn, peer string, trusted bool) bool {
	var victims []net.Conn
	l.mu.Lock()
	pc := l.peers[peer]
	if pc == nil {
		pc = &peerConns{conns: map[*tracked]struct{}{}}
	}
	now := l.now()
	for {
		var v *tracked
		switch {
		case len(pc.conns) >= l.perPeer:
			v = oldestIdle(pc.conns, trusted, now)
		case len(l.conns) >= l.max, !trusted && l.untrusted >= l.max-l.reserved:
			v = l.oldestIdleOfAll(trusted, now)
		default:
			l.peers[peer] = pc // again, if closing for room took the peer's last one
			l.add(&tracked{c: c, peer: peer, pc: pc, trusted: trusted, idle: true, since: now})
			l.mu.Unlock()
			closeAll(victims)
			return true
		}
		if v == nil {
			break
		}
		l.remove(v)
		victims = append(victims, v.c)
		l.closed.Inc()
	}
	l.mu.Unlock()
	closeAll(victims)
	l.refuse.Inc()
	closeConn(c)
	return false
}

// oldestIdle is the connection among conns to close for room: the stranger's idle the
// longest (for a stranger's newcomer, one idle for minIdle at least), or for a trusted
// newcomer, when no stranger's is idle, the client's idle the longest.
func oldestIdle(conns map[*tracked]struct{}, trusted bool, now time.Time) *tracked {
	var o oldest
	for t := range conns {
		o.consider(t)
	}
	return o.pick(trusted, now)
}

func (l *connLimit) oldestIdleOfAll(trusted bool, now time.Time) *tracked {
	var o oldest
	for _, t := range l.conns {
		o.consider(t)
	}
	return o.pick(trusted, now)
}

// oldest is the search of oldestIdle: the stranger's and the client's connection idle the
// longest.
type oldest struct{ stranger, client *tracked }

func (o *oldest) consider(t *tracked) {
	switch {
	case !t.idle:
	case !t.trusted && t.longerIdle(o.stranger):
		o.stranger = t
	case t.trusted && t.longerIdle(o.client):
		o.client = t
	}
}

func (o *oldest) pick(trusted bool, now time.Time) *tracked {
	switch {
	case o.stranger != nil && (trusted || now.Sub(o.stranger.since) >= minIdle):
		return o.stranger
	case trusted:
		return o.client
	}
	return nil
}

func (l *connLimit) add(t *tracked) {
	l.accepted++
	t.n = l.accepted
	l.conns[t.c] = t
	t.pc.conns[t] = struct{}{}
	if !t.trusted {
		l.untrusted++
	}
	l.open.Set(float64(len(l.conns)))
}

func (l *connLimit) remove(t *tracked) {
	delete(l.conns, t.c)
	delete(t.pc.conns, t)
	if len(t.pc.conns) == 0 {
		delete(l.peers, t.peer)
	}
	if !t.trusted {
		l.untrusted--
	}
	l.open.Set(float64(len(l.conns)))
}

// state is the listener's http.Server.ConnState.
func (l *connLimit) state(c net.Conn, s http.ConnState) {
	var now time.Time
	if s == http.StateIdle {
		now = l.now()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	t := l.conns[tracking(c)]
	if t == nil {
		return // refused, or closed for room: no longer counted
	}
	switch s {
	case http.StateActive:
		t.idle = false
	case http.StateIdle:
		t.idle, t.since = true, now
	case http.StateHijacked, http.StateClosed:
		l.remove(t)
	}
}

// identified counts c among configured clients' connections from now on.
func (l *connLimit) identified(c net.Conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if t := l.conns[tracking(c)]; t != nil && !t.trusted {
		t.trusted = true
		l.untrusted--
	}
}

func closeAll(cs []net.Conn) {
	for _, c := range cs {
		closeConn(c)
	}
}

// limitedListener admits what it accepts into lim, and returns only what got in.
type limitedListener struct {
	net.Listener
	lim *connLimit
	// peerOf names a connection's peer, and says whether it is known as a configured
	// client's from the start.
	peerOf func(net.Conn) (peer string, trusted bool)
}

func (l *limitedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		peer, trusted := l.peerOf(c)
		if l.lim.admit(c, peer, trusted) {
			return c, nil
		}
	}
}

// tracking is the connection lim counts for c, which net/http's hooks see wrapped in TLS
// on a TLS listener.
func tracking(c net.Conn) net.Conn {
	if tc, ok := c.(*tls.Conn); ok {
		return tc.NetConn()
	}
	return c
}

// closeConn closes c at once: a TLS connection without its close_notify alert, whose
// write a peer that does not read could hold up.
func closeConn(c net.Conn) {
	if tc, ok := c.(*tls.Conn); ok {
		tc.NetConn().Close()
		return
	}
	c.Close()
}

// connMetrics are the connection limits' metrics, by listener.
type connMetrics struct {
	open   *prometheus.GaugeVec
	closed *prometheus.CounterVec
}

func newConnMetrics(reg prometheus.Registerer) *connMetrics {
	m := &connMetrics{
		open: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "provenanced_connections",
			Help: "Open connections, by listener (socket, http, metrics).",
		}, []string{"listener"}),
		closed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "provenanced_connections_closed_total",
			Help: "Connections the daemon closed at its connection limits, by listener and reason: idle_closed_for_room (an idle connection closed to let a newcomer in), refused_at_limit (a newcomer closed at once: every connection in its way was busy).",
		}, []string{"listener", "reason"}),
	}
	reg.MustRegister(m.open, m.closed)
	return m
}
