package access

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ib1/provenanced/api/wire"
	"github.com/ib1/provenanced/audit"
	"github.com/ib1/provenanced/conf"
)

// Peer is the process at the other end of a Unix socket connection, as the kernel
// reports it (SO_PEERCRED).
type Peer struct{ UID, GID, PID int }

type peerKey struct{}

// WithPeer records the socket peer of a connection in ctx (the connection's context:
// once per connection, not per request).
func WithPeer(ctx context.Context, p Peer) context.Context {
	return context.WithValue(ctx, peerKey{}, p)
}

// PeerFrom is the socket peer WithPeer recorded, if the request came over the socket.
func PeerFrom(ctx context.Context) (Peer, bool) {
	p, ok := ctx.Value(peerKey{}).(Peer)
	return p, ok
}

// Call is what access control learned about one request: whoever serves the request
// first puts an empty one in its context (NewCall) and reads it once the request is done.
type Call struct {
	// Client is the name of the client the request was recognised as, "" for none.
	Client string

	g      *guarded // the request's guarded writer, when a guard is in front of it
	client *client
	entry  audit.Entry
	// counted: the request's refusal has been counted in the refusal budget; quiet: it
	// was past the budget, so it has neither an audit line nor a request-log line.
	counted, quiet bool
}

type callKey struct{}

// NewCall returns ctx with an empty Call, and the Call.
func NewCall(ctx context.Context) (context.Context, *Call) {
	c := &Call{}
	return context.WithValue(ctx, callKey{}, c), c
}

func callFrom(ctx context.Context) *Call {
	c, _ := ctx.Value(callKey{}).(*Call)
	return c
}

// Entry is the audit entry of the request, to which its handler adds what it signs; nil
// when the request is not audited.
func Entry(ctx context.Context) *audit.Entry {
	if c := callFrom(ctx); c != nil && c.g != nil && c.g.policy.audit != nil {
		return &c.entry
	}
	return nil
}

// AllowKey checks, for a handler that learns its key from the body, that the client may
// use key; it answers 403 when not, and reports whether the handler may go on.
func AllowKey(ctx context.Context, key string) bool {
	c := callFrom(ctx)
	if c == nil || c.g == nil {
		return true
	}
	c.entry.Key = key
	if c.client == nil || c.client.Allows(c.entry.Op, key) {
		return true
	}
	c.g.forbid()
	return false
}

// Spend charges n signatures to the request's client's rate, for a route whose handler
// learns from the body how many it makes (Route.Charged): a batch of N costs N. When
// they would take the client past its rate the request is refused whole (429, with
// Retry-After when waiting would let it through) and Spend reports false.
func Spend(ctx context.Context, n int) bool {
	c := callFrom(ctx)
	if c == nil || c.g == nil || c.client == nil || c.client.limiter == nil {
		return true
	}
	return c.g.spend(n)
}

// Route is a signing route under access control.
type Route struct {
	// Op is the route's operation (conf.OpSign, OpRecords, OpCSR, OpDebug).
	Op string
	// KeyOf is the key a request uses, from its path; nil when the handler learns it
	// from the body and asks AllowKey. A name that cannot be a key's (conf.ValidKeyName)
	// is refused before anything else is done.
	KeyOf func(*http.Request) string
	// Charged: the handler charges the client's rate itself (Spend), once it knows how
	// many signatures the request asks for; otherwise the request costs one.
	Charged bool
	// Refuse answers a refusal in the route's error shape.
	Refuse wire.ErrorWriter
	// Denied, when set, counts the requests the policy refuses.
	Denied prometheus.Counter
}

// Guard puts signing routes under a policy; its logger says why an audit line could not
// be written.
type Guard struct {
	Policy *Policy
	Log    *slog.Logger
}

var opVerbs = map[string]string{conf.OpSign: "sign", conf.OpRecords: "sign records", conf.OpCSR: "request a CSR", conf.OpDebug: "read the debug profiles"}

// Wrap puts h under the policy as route rt: the request must come from a client that may
// do rt.Op (with its key), and, with an audit log, its line is written before the answer.
func (gd *Guard) Wrap(rt Route, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p := gd.Policy
		if p == nil || (p.open && p.audit == nil) {
			h(w, r)
			return
		}
		c := callFrom(r.Context())
		if c == nil {
			var ctx context.Context
			ctx, c = NewCall(r.Context())
			r = r.WithContext(ctx)
		}
		g := &guarded{ResponseWriter: w, call: c, policy: p, log: gd.Log, route: &rt, req: r}
		c.g = g
		c.entry.Op, c.entry.Route = rt.Op, r.Pattern
		peer, unix := PeerFrom(r.Context())
		if unix {
			c.entry.Peer = audit.Peer{Unix: true, UID: peer.UID, GID: peer.GID, PID: peer.PID}
		} else {
			c.entry.Peer.Addr = r.RemoteAddr
		}
		if rt.KeyOf != nil {
			k := rt.KeyOf(r)
			if !conf.ValidKeyName(k) {
				// Neither the answer nor the audit line repeats what was sent.
				g.deny(http.StatusNotFound, "not_found", "no such key: "+conf.KeyNameRule+"; GET /v1/keys lists them")
				return
			}
			c.entry.Key = k
		}
		if !p.open && !g.admit(r, peer, unix) {
			return
		}
		h(g, r)
		if !g.wrote {
			g.WriteHeader(http.StatusOK)
		}
	}
}

// admit identifies the request's client and checks its policy and rate; it answers the
// refusal and reports false when the request may not go on.
func (g *guarded) admit(r *http.Request, peer Peer, unix bool) bool {
	c := g.call
	var pp *Peer
	if unix {
		pp = &peer
	}
	cl, why := g.policy.identify(r, pp)
	if cl == nil {
		g.Header().Set("WWW-Authenticate", `Bearer realm="provenanced"`)
		g.deny(http.StatusUnauthorized, "unauthorized", why)
		return false
	}
	c.client, c.Client, c.entry.Client = cl, cl.Name, cl.name
	if cn := connFrom(r.Context()); cn != nil {
		cn.markIdentified()
	}
	if !cl.Allows(c.entry.Op, c.entry.Key) {
		g.forbid()
		return false
	}
	if cl.limiter == nil || g.route.Charged {
		return true
	}
	return g.spend(1)
}

// spend takes n signatures from the client's bucket, or refuses the request whole.
func (g *guarded) spend(n int) bool {
	cl := g.call.client
	now := time.Now()
	res := cl.limiter.ReserveN(now, n)
	if !res.OK() {
		// More than the bucket ever holds: no wait would let it through.
		g.policy.metrics.rateLimited(cl.Name)
		g.deny(http.StatusTooManyRequests, "rate_limited", fmt.Sprintf("client %q may make %d signatures at once at most (its rate); this request asks for %d: send fewer per request", cl.Name, cl.limiter.Burst(), n))
		return false
	}
	d := res.DelayFrom(now)
	if d <= 0 {
		return true
	}
	res.CancelAt(now)
	g.policy.metrics.rateLimited(cl.Name)
	g.Header().Set("Retry-After", retryAfter(d))
	g.deny(http.StatusTooManyRequests, "rate_limited", fmt.Sprintf("client %q is over its rate of %g signatures a second; retry later", cl.Name, cl.Rate))
	return false
}

// retryAfter is a Retry-After value: whole seconds, at least one.
func retryAfter(d time.Duration) string {
	return strconv.Itoa(int(math.Max(1, math.Ceil(d.Seconds()))))
}

// guarded is the ResponseWriter of a request under access control: it writes the audit
// line as the status is set, before anything is sent.
type guarded struct {
	http.ResponseWriter
	call    *Call
	policy  *Policy
	log     *slog.Logger
	route   *Route
	req     *http.Request
	wrote   bool
	discard bool // the audit line failed: the handler's answer is dropped
}

func (g *guarded) forbid() {
	c := g.call
	msg := "client " + strconv.Quote(c.client.Name) + " may not " + opVerbs[c.entry.Op]
	if c.entry.Key != "" {
		msg += " with key " + strconv.Quote(c.entry.Key)
	}
	g.deny(http.StatusForbidden, "forbidden", msg)
}

// deny answers a refusal. Past the refusal budget it has no audit line, and a request
// with no identity is told to come back later (429) rather than why.
func (g *guarded) deny(status int, code, msg string) {
	c := g.call
	c.entry.Reason = clip(msg, 300)
	if g.route.Denied != nil {
		g.route.Denied.Inc()
	}
	if !g.counted() && c.client == nil {
		status, code, msg = http.StatusTooManyRequests, "too_many_refusals", "too many refused requests from this peer; retry later"
		g.Header().Del("WWW-Authenticate")
	}
	g.route.Refuse(g, status, code, msg, "")
}

// counted spends one refusal of the request's budget (once) and reports whether the
// refusal may have its lines; past the budget it sets Retry-After for a stranger.
func (g *guarded) counted() bool {
	c := g.call
	if c.counted {
		return !c.quiet
	}
	c.counted = true
	rf := g.policy.refusals
	if rf == nil {
		return true
	}
	ok, retry := rf.take(refusalOf(g.req, c.client), true)
	if !ok {
		c.quiet = true
		if c.client == nil {
			g.Header().Set("Retry-After", retryAfter(retry))
		}
	}
	return ok
}

// WriteHeader writes the audit line, then the status; when the line cannot be written
// the answer becomes a 503 and whatever the handler writes next is dropped: no audit
// line, no signature.
func (g *guarded) WriteHeader(status int) {
	if g.wrote {
		return
	}
	g.wrote = true
	if status >= 400 && status < 500 && !g.counted() || g.policy.audit == nil {
		g.ResponseWriter.WriteHeader(status)
		return
	}
	e := &g.call.entry
	e.Status = status
	// An answer that carries a request id (a 503 does) has it in the audit line too, so
	// that the line, the answer and the daemon's log can be matched.
	e.RequestID = g.ResponseWriter.Header().Get("X-Request-Id")
	err := g.policy.audit.Write(e)
	if err == nil {
		g.ResponseWriter.WriteHeader(status)
		return
	}
	id := wire.NewRequestID()
	g.log.LogAttrs(context.Background(), slog.LevelError, "audit log write failed; answering 503", slog.String("request_id", id), slog.String("route", e.Route), slog.String("error", err.Error()))
	g.discard = true
	h := g.ResponseWriter.Header()
	for k := range h {
		delete(h, k)
	}
	h.Set("X-Request-Id", id)
	g.route.Refuse(g.ResponseWriter, http.StatusServiceUnavailable, "unavailable", "the audit log cannot be written, so nothing signed leaves the daemon; the daemon's log has the reason under request id "+id, id)
}

func (g *guarded) Write(b []byte) (int, error) {
	if !g.wrote {
		g.WriteHeader(http.StatusOK)
	}
	if g.discard {
		return len(b), nil
	}
	return g.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (g *guarded) Unwrap() http.ResponseWriter { return g.ResponseWriter }
