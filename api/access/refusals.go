package access

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/ib1/provenanced/audit"
)

// Refusals is the budget of refused requests (any 4xx answer: 401, 403, 404, 429, ...),
// so that whoever can reach a listener without any identity cannot turn refusals into
// work, log lines or audit lines at the rate they can send them.
//
// Each peer (a uid on the socket, an address on TCP; a recognised client counts on its
// own, so that a stranger on the same address does not spend its budget) has a token
// bucket of perSecond refusals that holds burst, and all peers together one ten times as
// large. Within it a refusal is answered as usual and has its audit line and request-log
// line. Past it the refusal has no line of its own: it is counted, and Flush writes one
// line per peer and interval with the count; a request with no identity is answered 429
// with Retry-After instead. A request that identifies a client is never refused for its
// neighbours' refusals: on loopback every local process shares one address.
//
// It outlives any one configuration; a reload changes its limits (SetLimits).
type Refusals struct {
	mu      sync.Mutex
	rate    float64
	burst   float64
	global  bucket
	peers   map[string]*refusalPeer
	metrics *Metrics
}

// MaxRefusalPeers bounds the peers the budget tracks; past it, the others share one
// bucket and one summary line, so that neither memory nor summaries grow with the
// number of addresses a stranger commands.
const MaxRefusalPeers = 256

// globalFactor is how many peers' budgets all peers together have.
const globalFactor = 10

// othersKey is the budget of the peers beyond MaxRefusalPeers.
const othersKey = "others"

type refusalPeer struct {
	b         bucket
	peer      audit.Peer // as last seen
	client    *string
	unaudited int // refused signing requests without an audit line, since the last Flush
	unlogged  int // refused requests without a request-log line, since the last Flush
	first     time.Time
}

type bucket struct {
	tokens float64
	at     time.Time
}

// take takes a token from b if it has one; otherwise it says how long until it will.
func (b *bucket) take(now time.Time, rate, burst float64) (bool, time.Duration) {
	if b.at.IsZero() {
		b.tokens = burst
	} else if d := now.Sub(b.at).Seconds(); d > 0 {
		b.tokens = min(burst, b.tokens+d*rate)
	}
	b.at = now
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) / rate * float64(time.Second))
}

func (b *bucket) full(now time.Time, rate, burst float64) bool {
	return b.tokens+now.Sub(b.at).Seconds()*rate >= burst
}

// NewRefusals is a budget of perSecond refusals per peer, burst at once; m counts the
// refusals that had no line of their own (nil: not counted).
func NewRefusals(perSecond float64, burst int, m *Metrics) *Refusals {
	r := &Refusals{peers: map[string]*refusalPeer{}, metrics: m}
	r.SetLimits(perSecond, burst)
	return r
}

// SetLimits changes the budget (a reload).
func (r *Refusals) SetLimits(perSecond float64, burst int) {
	r.mu.Lock()
	r.rate, r.burst = perSecond, float64(max(burst, 1))
	r.mu.Unlock()
}

// refusal is who a refusal is counted against.
type refusal struct {
	key    string
	peer   audit.Peer
	client *string
}

// refusalOf is the budget key of a request: its client's, when one was recognised, else
// its peer's (a uid on the socket; on TCP the address, and for IPv6 its /64, which one
// host commonly holds whole).
func refusalOf(r *http.Request, cl *client) refusal {
	var f refusal
	p, unix := PeerFrom(r.Context())
	if unix {
		f.peer = audit.Peer{Unix: true, UID: p.UID, GID: p.GID, PID: p.PID}
		f.key = "uid:" + strconv.Itoa(p.UID)
	} else {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		if err != nil {
			host = r.RemoteAddr
		}
		f.peer.Addr = host
		f.key = host
		if ip := net.ParseIP(host); ip != nil && ip.To4() == nil {
			f.key = ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
		}
	}
	if cl != nil {
		f.key, f.client = "client:"+cl.Name, cl.name
	}
	return f
}

// take spends one refusal of f's budget. ok: the refusal may have its lines; otherwise
// it is counted (audited: it would have had an audit line) and retry is when the budget
// has room again.
func (r *Refusals) take(f refusal, audited bool) (ok bool, retry time.Duration) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.peers[f.key]
	if p == nil {
		key := f.key
		if len(r.peers) >= MaxRefusalPeers {
			key = othersKey
			f.peer, f.client = audit.Peer{Addr: "other peers"}, nil
		}
		if p = r.peers[key]; p == nil {
			p = &refusalPeer{}
			r.peers[key] = p
		}
	}
	p.peer, p.client = f.peer, f.client
	ok, retry = p.b.take(now, r.rate, r.burst)
	if ok {
		if ok, retry = r.global.take(now, r.rate*globalFactor, r.burst*globalFactor); ok {
			return true, 0
		}
	}
	if p.unaudited == 0 && p.unlogged == 0 {
		p.first = now
	}
	p.unlogged++
	if audited {
		p.unaudited++
	}
	r.metrics.unlogged()
	return false, retry
}

// Observe accounts for a request served without access control deciding its answer (or
// with it): a 4xx answer spends the peer's budget, unless the guard did already. It
// reports whether the request may have its request-log line.
func (r *Refusals) Observe(req *http.Request, c *Call, status int) bool {
	if r == nil || c == nil {
		return true
	}
	if c.counted {
		return !c.quiet
	}
	if status < 400 || status >= 500 {
		return true
	}
	ok, _ := r.take(refusalOf(req, c.client), false)
	return ok
}

// RefusalSummaryOp is the op of the audit line that counts refusals without a line of
// their own.
const RefusalSummaryOp = "refusals"

// Flush writes, for each peer with refusals that had no line of their own since the last
// Flush, one audit line (when there were signing requests among them and al is not nil)
// and one log line; it then forgets the peers whose budget is full again. The daemon
// calls it at a fixed interval.
func (r *Refusals) Flush(al *audit.Log, log *slog.Logger) {
	now := time.Now()
	type summary struct {
		peer                audit.Peer
		client              *string
		unaudited, unlogged int
		first               time.Time
	}
	var out []summary
	r.mu.Lock()
	for k, p := range r.peers {
		if p.unlogged > 0 {
			out = append(out, summary{p.peer, p.client, p.unaudited, p.unlogged, p.first})
			p.unaudited, p.unlogged = 0, 0
		} else if p.b.full(now, r.rate, r.burst) {
			delete(r.peers, k)
		}
	}
	r.mu.Unlock()
	for _, s := range out {
		since := s.first.UTC().Format(time.RFC3339)
		if al != nil && s.unaudited > 0 {
			e := &audit.Entry{Client: s.client, Peer: s.peer, Op: RefusalSummaryOp, Status: http.StatusTooManyRequests, Count: s.unaudited,
				Reason: strconv.Itoa(s.unaudited) + " refused signing requests since " + since + " had no audit line of their own: past refusal_rate"}
			if err := al.Write(e); err != nil {
				log.LogAttrs(context.Background(), slog.LevelError, "audit log write failed: a summary of refused requests is lost", slog.String("error", err.Error()))
			}
		}
		attrs := []slog.Attr{slog.Int("refused", s.unlogged), slog.String("since", since)}
		if s.client != nil {
			attrs = append(attrs, slog.String("client", *s.client))
		}
		if s.peer.Unix {
			attrs = append(attrs, slog.Attr{Key: "peer", Value: slog.GroupValue(slog.Int("uid", s.peer.UID), slog.Int("gid", s.peer.GID), slog.Int("pid", s.peer.PID))})
		} else {
			attrs = append(attrs, slog.String("peer", s.peer.Addr))
		}
		log.LogAttrs(context.Background(), slog.LevelWarn, "refused requests past refusal_rate were not logged one by one", attrs...)
	}
}
