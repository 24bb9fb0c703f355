package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"log/slog"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/time/rate"

	"github.com/ib1/provenanced/api/wire"
	"github.com/ib1/provenanced/audit"
	"github.com/ib1/provenanced/conf"
)

// Peer is the process at the other end of a Unix socket connection, as the kernel
// reports it (SO_PEERCRED).
type Peer struct{ UID, GID, PID int }

// ClientNoter is a ResponseWriter (or one it wraps) that wants to know the client a
// request was recognised as: the daemon's request log and metrics.
type ClientNoter interface{ NoteClient(name string) }

// AccessHooks tell the daemon's metrics about access decisions.
type AccessHooks struct {
	RateLimited func(client string)
}

// Access is who may do what, and where it is written down: the clients and their
// policies, and the audit log. It is immutable once built; a reload builds a new one and
// swaps it in with API.SetAccess, so a request runs to its end with the one it started
// with.
type Access struct {
	open    bool // no clients configured: anyone who reaches a listener may do anything
	clients []*accessClient
	tokens  []*accessClient
	byUID   map[int]*accessClient
	byGID   map[int]*accessClient
	byURI   map[string]*accessClient
	byDNS   map[string]*accessClient
	byCN    map[string]*accessClient
	audit   *audit.Log
	hooks   AccessHooks
}

type accessClient struct {
	*conf.Client
	name    *string // for audit entries
	limiter *rate.Limiter
}

// NewAccess builds the access state of clients (checked by conf) and audit (nil for no
// audit log). With no clients, every operation stays open to whoever reaches a listener.
func NewAccess(clients []*conf.Client, audit *audit.Log, hooks AccessHooks) *Access {
	ac := &Access{
		open:  len(clients) == 0,
		byUID: map[int]*accessClient{}, byGID: map[int]*accessClient{},
		byURI: map[string]*accessClient{}, byDNS: map[string]*accessClient{}, byCN: map[string]*accessClient{},
		audit: audit, hooks: hooks,
	}
	for _, c := range clients {
		name := c.Name
		cl := &accessClient{Client: c, name: &name}
		if c.Rate > 0 {
			// A second's worth of requests may come at once; past that, Rate per second.
			cl.limiter = rate.NewLimiter(rate.Limit(c.Rate), int(math.Max(1, math.Ceil(c.Rate))))
		}
		ac.clients = append(ac.clients, cl)
		if c.TokenDigest != nil {
			ac.tokens = append(ac.tokens, cl)
		}
		for _, id := range c.UIDs {
			ac.byUID[id] = cl
		}
		for _, id := range c.GIDs {
			ac.byGID[id] = cl
		}
		if c.TLSURI != "" {
			ac.byURI[c.TLSURI] = cl
		}
		if c.TLSDNS != "" {
			ac.byDNS[c.TLSDNS] = cl
		}
		if c.TLSCN != "" {
			ac.byCN[c.TLSCN] = cl
		}
	}
	return ac
}

// Open reports whether no clients are configured.
func (ac *Access) Open() bool { return ac.open }

// Audit is the audit log, or nil.
func (ac *Access) Audit() *audit.Log { return ac.audit }

// identify finds the client of a request, in the contract's order: a bearer token (a
// wrong one is the end of it), a verified client certificate, the socket peer's uid then
// gid. Without a client it says why, and how to authenticate.
func (ac *Access) identify(r *http.Request, peer *Peer) (*accessClient, string) {
	if auth := r.Header.Get("Authorization"); auth != "" {
		scheme, token, ok := strings.Cut(auth, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
			return nil, "the Authorization header is not \"Bearer TOKEN\""
		}
		sum := sha256.Sum256([]byte(strings.TrimSpace(token)))
		var found *accessClient
		// Every digest is compared, in constant time, whatever matched before.
		for _, cl := range ac.tokens {
			if subtle.ConstantTimeCompare(sum[:], cl.TokenDigest) == 1 {
				found = cl
			}
		}
		if found == nil {
			return nil, "the bearer token is not valid"
		}
		return found, ""
	}
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.VerifiedChains[0]) > 0 {
		leaf := r.TLS.VerifiedChains[0][0]
		if cl := ac.byCertificate(leaf); cl != nil {
			return cl, ""
		}
		return nil, "the client certificate (" + certName(leaf) + ") is not a configured client's"
	}
	if peer != nil {
		if cl := ac.byUID[peer.UID]; cl != nil {
			return cl, ""
		}
		if cl := ac.byGID[peer.GID]; cl != nil {
			return cl, ""
		}
		return nil, "uid " + strconv.Itoa(peer.UID) + " (gid " + strconv.Itoa(peer.GID) + ") is not a configured client; run as a client's uid or gid, or send Authorization: Bearer TOKEN"
	}
	if r.TLS != nil {
		return nil, "this operation needs a client: send Authorization: Bearer TOKEN, or a client certificate"
	}
	return nil, "this operation needs a client: send Authorization: Bearer TOKEN"
}

func (ac *Access) byCertificate(leaf *x509.Certificate) *accessClient {
	for _, u := range leaf.URIs {
		if cl := ac.byURI[u.String()]; cl != nil {
			return cl
		}
	}
	for _, d := range leaf.DNSNames {
		if cl := ac.byDNS[d]; cl != nil {
			return cl
		}
	}
	return ac.byCN[leaf.Subject.CommonName]
}

func certName(c *x509.Certificate) string {
	if len(c.URIs) > 0 {
		return "URI " + c.URIs[0].String()
	}
	if len(c.DNSNames) > 0 {
		return "DNS " + c.DNSNames[0]
	}
	return "CN " + strconv.Quote(c.Subject.CommonName)
}

// SetAccess swaps in new access state; requests in flight keep the one they started with.
func (a *API) SetAccess(ac *Access) { a.access.Store(ac) }

// Access is the access state in use.
func (a *API) Access() *Access { return a.access.Load() }

// call is a signing request under access control: the ResponseWriter its handler writes
// to, which writes the audit line as the status is set, before anything is sent.
type call struct {
	http.ResponseWriter
	a       *API
	ac      *Access
	client  *accessClient
	seed    bool // the original's routes: errors in its {"detail"} shape
	entry   audit.Entry
	wrote   bool
	discard bool // the audit line failed: the handler's answer is dropped
}

// errDenied is a request the clients' policy refused (401, 403, 429), for the metrics'
// outcome label.
var errDenied deniedError

type deniedError struct{}

func (deniedError) Error() string   { return "refused by the clients' policy" }
func (deniedError) Outcome() string { return "denied" }

var opVerbs = map[string]string{conf.OpSign: "sign", conf.OpRecords: "sign records", conf.OpCSR: "request a CSR"}

// guard puts a signing route under access control: op names the route's operation, keyOf
// (nil when the handler decides, with allowKey) the key it uses.
func (a *API) guard(op string, seed bool, keyOf func(*http.Request) string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ac := a.access.Load()
		if ac == nil || (ac.open && ac.audit == nil) {
			h(w, r)
			return
		}
		c := &call{ResponseWriter: w, a: a, ac: ac, seed: seed}
		c.entry.Op, c.entry.Route = op, r.Pattern
		var peer *Peer
		if a.opts.PeerOf != nil {
			if p, ok := a.opts.PeerOf(r); ok {
				peer = &p
				c.entry.Peer = audit.Peer{Unix: true, UID: p.UID, GID: p.GID, PID: p.PID}
			}
		}
		if peer == nil {
			c.entry.Peer.Addr = r.RemoteAddr
		}
		if keyOf != nil {
			c.entry.Key = keyOf(r)
		}
		if !ac.open {
			cl, why := ac.identify(r, peer)
			if cl == nil {
				c.Header().Set("WWW-Authenticate", `Bearer realm="provenanced"`)
				c.deny(http.StatusUnauthorized, "unauthorized", why)
				return
			}
			c.client = cl
			c.entry.Client = cl.name
			noteClient(w, cl.Name)
			if !slices.Contains(cl.Allow, op) || (c.entry.Key != "" && !cl.Allows(op, c.entry.Key)) {
				c.forbid()
				return
			}
			if cl.limiter != nil {
				now := time.Now()
				res := cl.limiter.ReserveN(now, 1)
				if d := res.DelayFrom(now); d > 0 {
					res.CancelAt(now)
					if ac.hooks.RateLimited != nil {
						ac.hooks.RateLimited(cl.Name)
					}
					c.Header().Set("Retry-After", strconv.Itoa(int(math.Max(1, math.Ceil(d.Seconds())))))
					c.deny(http.StatusTooManyRequests, "rate_limited", "client "+strconv.Quote(cl.Name)+" is over its rate limit; retry later")
					return
				}
			}
		}
		h(c, r)
		if !c.wrote {
			c.WriteHeader(http.StatusOK)
		}
	}
}

// allowKey checks, for a handler that learns its key from the body, that the client may
// use key; it answers 403 when not.
func allowKey(w http.ResponseWriter, key string) bool {
	c, ok := w.(*call)
	if !ok {
		return true
	}
	c.entry.Key = key
	if c.client == nil || c.client.Allows(c.entry.Op, key) {
		return true
	}
	c.forbid()
	return false
}

// auditEntry is the entry a handler adds what it signs to, or nil without an audit log.
func auditEntry(w http.ResponseWriter) *audit.Entry {
	if c, ok := w.(*call); ok {
		return &c.entry
	}
	return nil
}

func (c *call) forbid() {
	msg := "client " + strconv.Quote(c.client.Name) + " may not " + opVerbs[c.entry.Op]
	if c.entry.Key != "" {
		msg += " with key " + strconv.Quote(c.entry.Key)
	}
	c.deny(http.StatusForbidden, "forbidden", msg)
}

func (c *call) deny(status int, code, msg string) {
	c.entry.Reason = msg
	if p := c.a.opts.Provenance; p != nil && c.entry.Op == conf.OpRecords {
		p.countErr("sign", errDenied) // records_total{outcome="denied"}
	}
	if c.seed {
		writeDetail(c, status, msg)
		return
	}
	wire.Error(c, status, code, msg, "")
}

// WriteHeader writes the audit line, then the status; when the line cannot be written
// the answer becomes a 503 and whatever the handler writes next is dropped: no audit
// line, no signature.
func (c *call) WriteHeader(status int) {
	if c.wrote {
		return
	}
	c.wrote = true
	if c.ac.audit != nil {
		c.entry.Status = status
		// An answer that carries a request id (a 503 does) has it in the audit line too,
		// so that the line, the answer and the daemon's log can be matched.
		c.entry.RequestID = c.ResponseWriter.Header().Get("X-Request-Id")
		if err := c.ac.audit.Write(&c.entry); err != nil {
			id := wire.NewRequestID()
			c.a.log.LogAttrs(context.Background(), slog.LevelError, "audit log write failed; answering 503", slog.String("request_id", id), slog.String("route", c.entry.Route), slog.String("error", err.Error()))
			c.discard = true
			h := c.ResponseWriter.Header()
			for k := range h {
				delete(h, k)
			}
			h.Set("X-Request-Id", id)
			msg := "the audit log cannot be written, so nothing is signed; the daemon's log has the reason under request id " + id
			if c.seed {
				writeDetail(c.ResponseWriter, http.StatusServiceUnavailable, msg)
			} else {
				wire.Error(c.ResponseWriter, http.StatusServiceUnavailable, "unavailable", msg, id)
			}
			return
		}
	}
	c.ResponseWriter.WriteHeader(status)
}

func (c *call) Write(b []byte) (int, error) {
	if !c.wrote {
		c.WriteHeader(http.StatusOK)
	}
	if c.discard {
		return len(b), nil
	}
	return c.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (c *call) Unwrap() http.ResponseWriter { return c.ResponseWriter }

func noteClient(w http.ResponseWriter, name string) {
	for w != nil {
		if n, ok := w.(ClientNoter); ok {
			n.NoteClient(name)
			return
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return
		}
		w = u.Unwrap()
	}
}
