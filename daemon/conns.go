package daemon

import (
	"container/list"
	"crypto/tls"
	"net"
	"net/http"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// connLimit bounds one listener's connections, net/http having no bound of its own: at
// most max in all and perPeer from one peer (a uid on the socket, an address on TCP), and
// connections nobody has identified as a configured client's at most max less a quarter,
// the room kept for configured clients.
//
// At a bound, the newcomer gets in by closing an idle connection (between requests, or
// accepted and still silent), the oldest first and a stranger's before a client's; a
// newcomer that is not known as a client's may close strangers' connections only. When
// every connection in its way is busy, the newcomer is closed at once. A connection in
// the middle of a request is never closed: that is what the read and write timeouts bound.
//
// The daemon learns of a connection from net/http's hooks: ConnContext when it is
// accepted (admit), ConnState as it goes between requests and closes (state).
type connLimit struct {
	listener string
	max      int
	perPeer  int
	reserved int

	mu        sync.Mutex
	conns     map[net.Conn]*tracked
	peers     map[string]*peerConns
	idle      [2]list.List // idle connections, oldest first: [strangers', clients']
	untrusted int

	open   prometheus.Gauge
	closed prometheus.Counter // idle connections closed to make room
	refuse prometheus.Counter // newcomers closed at once
}

type peerConns struct {
	n    int
	idle [2]list.List
}

// tracked is one connection. el and peerEl place it among the idle ones while it is idle.
type tracked struct {
	c       net.Conn
	peer    string
	pc      *peerConns
	trusted bool
	el      *list.Element
	peerEl  *list.Element
}

func trust(b bool) int {
	if b {
		return 1
	}
	return 0
}

// newConnLimit is a listener's bound; reserve keeps room for configured clients (the
// metrics listener, where nobody is one, keeps none).
func newConnLimit(listener string, max, perPeer int, reserve bool, m *connMetrics) *connLimit {
	l := &connLimit{listener: listener, max: max, perPeer: min(perPeer, max), conns: map[net.Conn]*tracked{}, peers: map[string]*peerConns{}}
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
		pc = &peerConns{}
		l.peers[peer] = pc
	}
	ok := true
	for ok {
		var v *tracked
		switch {
		case pc.n >= l.perPeer:
			v = oldestIdle(&pc.idle, trusted)
		case len(l.conns) >= l.max, !trusted && l.untrusted >= l.max-l.reserved:
			v = oldestIdle(&l.idle, trusted)
		default:
			l.peers[peer] = pc // again, if closing for room took the peer's last one
			l.add(&tracked{c: c, peer: peer, pc: pc, trusted: trusted})
			l.mu.Unlock()
			closeAll(victims)
			return true
		}
		if ok = v != nil; ok {
			l.remove(v)
			victims = append(victims, v.c)
			l.closed.Inc()
		}
	}
	if pc.n == 0 {
		delete(l.peers, peer)
	}
	l.mu.Unlock()
	closeAll(victims)
	l.refuse.Inc()
	closeConn(c)
	return false
}

// oldestIdle is the connection to close for room: a stranger's, or for a trusted
// newcomer a client's when no stranger's is idle.
func oldestIdle(idle *[2]list.List, trusted bool) *tracked {
	if e := idle[0].Front(); e != nil {
		return e.Value.(*tracked)
	}
	if e := idle[1].Front(); trusted && e != nil {
		return e.Value.(*tracked)
	}
	return nil
}

// add counts t, idle until its first request.
func (l *connLimit) add(t *tracked) {
	l.conns[t.c] = t
	t.pc.n++
	if !t.trusted {
		l.untrusted++
	}
	l.setIdle(t, true)
	l.open.Set(float64(len(l.conns)))
}

func (l *connLimit) remove(t *tracked) {
	l.setIdle(t, false)
	delete(l.conns, t.c)
	t.pc.n--
	if t.pc.n == 0 {
		delete(l.peers, t.peer)
	}
	if !t.trusted {
		l.untrusted--
	}
	l.open.Set(float64(len(l.conns)))
}

func (l *connLimit) setIdle(t *tracked, idle bool) {
	if t.el != nil {
		l.idle[trust(t.trusted)].Remove(t.el)
		t.pc.idle[trust(t.trusted)].Remove(t.peerEl)
		t.el, t.peerEl = nil, nil
	}
	if idle {
		t.el = l.idle[trust(t.trusted)].PushBack(t)
		t.peerEl = t.pc.idle[trust(t.trusted)].PushBack(t)
	}
}

// state is the listener's http.Server.ConnState.
func (l *connLimit) state(c net.Conn, s http.ConnState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	t := l.conns[c]
	if t == nil {
		return // refused, or closed for room: no longer counted
	}
	switch s {
	case http.StateActive:
		l.setIdle(t, false)
	case http.StateIdle:
		l.setIdle(t, true)
	case http.StateHijacked, http.StateClosed:
		l.remove(t)
	}
}

// identified counts c among configured clients' connections from now on.
func (l *connLimit) identified(c net.Conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	t := l.conns[c]
	if t == nil || t.trusted {
		return
	}
	idle := t.el != nil
	l.setIdle(t, false)
	t.trusted = true
	l.untrusted--
	if idle {
		l.setIdle(t, true)
	}
}

func closeAll(cs []net.Conn) {
	for _, c := range cs {
		closeConn(c)
	}
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
