package daemon

import (
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// pipeConn is one end of a pipe, whose other end tells whether the daemon closed it.
type pipeConn struct {
	net.Conn
	far net.Conn
}

func newPipe(t *testing.T) pipeConn {
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	return pipeConn{a, b}
}

func (p pipeConn) closed() bool {
	p.far.SetReadDeadline(time.Now().Add(time.Millisecond))
	_, err := p.far.Read(make([]byte, 1))
	return err != nil && !isTimeout(err)
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// At its bounds a listener lets a newcomer in by closing an idle connection, the oldest
// stranger's first (for a stranger, one idle for a second at least); a client's only for
// another client; a busy one never. One story, each step on the listener the last left:
// it reads better whole.
func TestConnLimit(t *testing.T) {
	l := newConnLimit("test", 8, 3, true, newConnMetrics(prometheus.NewRegistry())) // 2 kept for clients
	clock := time.Now()
	l.now = func() time.Time { return clock }
	later := func() { clock = clock.Add(minIdle) }
	admit := func(peer string, trusted bool) (pipeConn, bool) {
		c := newPipe(t)
		return c, l.admit(c.Conn, peer, trusted)
	}
	// A peer's third connection fits; its fourth closes its oldest idle one.
	a1, _ := admit("a", false)
	a2, _ := admit("a", false)
	l.state(a2.Conn, http.StateActive)
	a3, _ := admit("a", false)
	if a, ok := admit("a", false); ok || !a.closed() || a1.closed() {
		t.Fatal("a stranger's newcomer closed a connection idle for less than minIdle")
	}
	later()
	a4, ok := admit("a", false)
	if !ok || !a1.closed() || a2.closed() || a3.closed() {
		t.Fatalf("per peer: admitted %v; closed a1 %v a2 %v a3 %v", ok, a1.closed(), a2.closed(), a3.closed())
	}
	// Every connection of a busy: a newcomer from a is closed at once.
	l.state(a3.Conn, http.StateActive)
	l.state(a4.Conn, http.StateActive)
	if a5, ok := admit("a", false); ok || !a5.closed() {
		t.Fatalf("a fifth from a busy peer was admitted")
	}
	// Strangers may hold 6 of the 8; then a stranger's newcomer closes an idle stranger's.
	b1, _ := admit("b", false)
	b2, _ := admit("b", false)
	c1, _ := admit("c", false)
	later()
	if c2, ok := admit("c", false); !ok || !b1.closed() || c2.closed() {
		t.Fatalf("at the strangers' bound: admitted %v, b1 closed %v", ok, b1.closed())
	}
	// A client gets in beyond the strangers' bound, into the room kept for it.
	k1, ok1 := admit("k", true)
	k2, ok2 := admit("k", true)
	if !ok1 || !ok2 || k1.closed() || k2.closed() {
		t.Fatal("the clients' room was not kept")
	}
	// At the listener's bound a stranger cannot close a client's idle connection, even
	// with none of its own idle; another client can.
	for _, c := range []pipeConn{b2, c1} {
		l.state(c.Conn, http.StateActive)
	}
	if idleStrangers := l.count(func(t *tracked) bool { return t.idle && !t.trusted }); idleStrangers != 1 {
		t.Fatalf("%d idle strangers' connections, want c2 alone", idleStrangers)
	}
	later()
	d1, ok := admit("d", false)
	if !ok || d1.closed() {
		t.Fatal("a stranger could not take an idle stranger's room")
	}
	l.state(d1.Conn, http.StateActive)
	if d2, ok := admit("d", false); ok || !d2.closed() || k1.closed() || k2.closed() {
		t.Fatalf("a stranger's newcomer at the bound: admitted %v; clients' closed %v %v", ok, k1.closed(), k2.closed())
	}
	if k3, ok := admit("k2", true); !ok || k3.closed() || !k1.closed() {
		t.Fatalf("a client's newcomer at the bound: admitted %v, oldest client's closed %v", ok, k1.closed())
	}
	// A stranger's connection identified as a client's counts among clients' from then on.
	l.state(a2.Conn, http.StateClosed)
	l.state(a3.Conn, http.StateClosed)
	e1, ok := admit("e", false)
	if !ok {
		t.Fatal("no room after two closed")
	}
	l.state(e1.Conn, http.StateActive)
	l.identified(e1.Conn)
	l.state(e1.Conn, http.StateIdle)
	clientsIdle := l.count(func(t *tracked) bool { return t.idle && t.trusted })
	if l.untrusted != 4 || len(l.conns) != 7 || clientsIdle != 3 {
		t.Errorf("after identification: %d strangers', %d in all, %d clients' idle", l.untrusted, len(l.conns), clientsIdle)
	}
}

// count counts the connections that match.
func (l *connLimit) count(match func(*tracked) bool) int {
	n := 0
	for _, t := range l.conns {
		if match(t) {
			n++
		}
	}
	return n
}

// What the connection limits add to every request on a kept-alive connection: the two
// ConnState calls around it (the benchmark's "CPU per signature must not move by 5 %" is
// about 90 µs a signature).
func BenchmarkConnStatePerRequest(b *testing.B) {
	l := newConnLimit("bench", 512, 64, true, newConnMetrics(prometheus.NewRegistry()))
	var conns []net.Conn
	for range 64 {
		a, c := net.Pipe()
		defer a.Close()
		defer c.Close()
		l.admit(a, "peer", false)
		conns = append(conns, a)
	}
	b.ResetTimer()
	for i := range b.N {
		c := conns[i%len(conns)]
		l.state(c, http.StateActive)
		l.state(c, http.StateIdle)
	}
}
