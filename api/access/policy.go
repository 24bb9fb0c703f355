// Package access is who may sign what: the configured clients, how a request is matched
// to one (a bearer token, a verified client certificate, the Unix socket peer's uid or
// gid), and the guard in front of every signing route, which refuses what the policy does
// not allow and writes the audit line of every signing request before its answer.
//
// What the guard learns travels in the request's context (a Call): the handler adds to
// the audit entry what it signs, and the daemon's request log reads the client's name.
package access

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/time/rate"

	"github.com/ib1/provenanced/audit"
	"github.com/ib1/provenanced/conf"
)

// Policy is who may do what, and where it is written down: the clients and their
// policies, and the audit log. It is immutable once built; a reload builds a new one with
// the next generation of the daemon's configuration, so a request runs to its end with the
// one it started with.
type Policy struct {
	open    bool // no clients configured: anyone who reaches a listener may do anything
	clients []*client
	tokens  []*client
	byUID   map[int]*client
	byGID   map[int]*client
	byURI   map[string]*client
	byDNS   map[string]*client
	byCN    map[string]*client
	audit   *audit.Log
	metrics *Metrics
	// clientCAs are the client CAs of the configuration this policy belongs to: a client
	// certificate identifies only if it chains to them now, whatever the handshake of its
	// connection (under an earlier configuration) accepted. nil: none identifies.
	clientCAs *x509.CertPool
	refusals  *Refusals
}

// Options are what a policy needs besides its clients.
type Options struct {
	// Audit is the audit log (nil for none).
	Audit *audit.Log
	// Metrics count refusals (nil: not counted).
	Metrics *Metrics
	// ClientCAs are the TCP listener's client CAs in this configuration (nil: client
	// certificates identify nobody).
	ClientCAs *x509.CertPool
	// Refusals is the budget of refused requests, kept across configurations (nil: every
	// refusal is answered and audited).
	Refusals *Refusals
}

type client struct {
	*conf.Client
	name    *string // for audit entries
	limiter *rate.Limiter
}

// NewPolicy builds the policy of clients (checked by conf). With no clients, every
// operation stays open to whoever reaches a listener.
func NewPolicy(clients []*conf.Client, opts Options) *Policy {
	p := &Policy{
		open:  len(clients) == 0,
		byUID: map[int]*client{}, byGID: map[int]*client{},
		byURI: map[string]*client{}, byDNS: map[string]*client{}, byCN: map[string]*client{},
		audit: opts.Audit, metrics: opts.Metrics, clientCAs: opts.ClientCAs, refusals: opts.Refusals,
	}
	for _, c := range clients {
		name := c.Name
		cl := &client{Client: c, name: &name}
		if c.Rate > 0 {
			// A second's worth of signatures may come at once; past that, Rate per second.
			cl.limiter = rate.NewLimiter(rate.Limit(c.Rate), int(math.Max(1, math.Ceil(c.Rate))))
		}
		p.clients = append(p.clients, cl)
		if c.TokenDigest != nil {
			p.tokens = append(p.tokens, cl)
		}
		for _, id := range c.UIDs {
			p.byUID[id] = cl
		}
		for _, id := range c.GIDs {
			p.byGID[id] = cl
		}
		if u, ok := conf.NormalURI(c.TLSURI); ok {
			p.byURI[u] = cl
		}
		if c.TLSDNS != "" {
			p.byDNS[conf.NormalDNS(c.TLSDNS)] = cl
		}
		if c.TLSCN != "" {
			p.byCN[c.TLSCN] = cl
		}
	}
	return p
}

// Open reports whether no clients are configured.
func (p *Policy) Open() bool { return p.open }

// Audit is the audit log, or nil.
func (p *Policy) Audit() *audit.Log { return p.audit }

// KnowsPeer reports whether a socket peer with these ids is a configured client's (the
// daemon keeps room for its connections from the moment they are accepted).
func (p *Policy) KnowsPeer(uid, gid int) bool {
	return p.byUID[uid] != nil || p.byGID[gid] != nil
}

// identify finds the client of a request, in the contract's order: a bearer token (a
// wrong one is the end of it, and so is an Authorization header that is empty or not a
// bearer token), a verified client certificate, the socket peer's uid then gid. Without a
// client it says why, and how to authenticate.
func (p *Policy) identify(r *http.Request, peer *Peer) (*client, string) {
	if auth, ok := r.Header["Authorization"]; ok {
		return p.byToken(auth)
	}
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		return p.byCertificate(r)
	}
	if peer != nil {
		// The uid before the gid: a process is its user first, and a user may be a client
		// of its own while its group is another's.
		if cl := p.byUID[peer.UID]; cl != nil {
			return cl, ""
		}
		if cl := p.byGID[peer.GID]; cl != nil {
			return cl, ""
		}
		return nil, "uid " + strconv.Itoa(peer.UID) + " (gid " + strconv.Itoa(peer.GID) + ") is not a configured client; run as a client's uid or gid, or send Authorization: Bearer TOKEN"
	}
	if r.TLS != nil {
		return nil, "this operation needs a client: send Authorization: Bearer TOKEN, or a client certificate"
	}
	return nil, "this operation needs a client: send Authorization: Bearer TOKEN"
}

// byToken is the client whose token the Authorization header carries. Every digest is
// compared, in constant time, whatever matched before.
func (p *Policy) byToken(auth []string) (*client, string) {
	const malformed = "the Authorization header is not \"Bearer TOKEN\""
	if len(auth) != 1 {
		return nil, malformed
	}
	scheme, token, ok := strings.Cut(auth[0], " ")
	token = strings.TrimSpace(token)
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return nil, malformed
	}
	sum := sha256.Sum256([]byte(token))
	var found *client
	for _, cl := range p.tokens {
		if subtle.ConstantTimeCompare(sum[:], cl.TokenDigest) == 1 {
			found = cl
		}
	}
	if found == nil {
		return nil, "the bearer token is not valid"
	}
	return found, ""
}

// byCertificate is the client of the request's client certificate. The handshake
// verified it against the client CAs of its day; it must chain to this configuration's
// too, so that a reload that removes a CA ends what its certificates may do on
// connections opened before, from their next request.
func (p *Policy) byCertificate(r *http.Request) (*client, string) {
	leaf := r.TLS.PeerCertificates[0]
	if !p.verified(r.Context(), r.TLS.PeerCertificates) {
		return nil, "the client certificate (" + certName(leaf) + ") does not chain to the configured client CA"
	}
	cl, ambiguous := p.certClient(leaf)
	switch {
	case ambiguous:
		return nil, "the client certificate (" + certName(leaf) + ") names more than one configured client"
	case cl == nil:
		return nil, "the client certificate (" + certName(leaf) + ") is not a configured client's"
	}
	return cl, ""
}

// verified reports whether certs (the leaf, then what the client sent with it) chain to
// p's client CAs now, for a client's use. The answer is kept with the connection, for
// this policy, until the chain's first expiry.
func (p *Policy) verified(ctx context.Context, certs []*x509.Certificate) bool {
	if p.clientCAs == nil {
		return false
	}
	now := time.Now()
	c := connFrom(ctx)
	if c != nil {
		if v := c.verdict.Load(); v != nil && v.policy == p && v.leaf == certs[0] && now.Before(v.until) {
			return v.ok
		}
	}
	inter := x509.NewCertPool()
	for _, ic := range certs[1:] {
		inter.AddCert(ic)
	}
	chains, err := certs[0].Verify(x509.VerifyOptions{Roots: p.clientCAs, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	v := &certVerdict{policy: p, leaf: certs[0], ok: err == nil, until: now.Add(time.Minute)}
	if err == nil {
		v.until = certs[0].NotAfter
		for _, ch := range chains[0] {
			if ch.NotAfter.Before(v.until) {
				v.until = ch.NotAfter
			}
		}
	}
	if c != nil {
		c.verdict.Store(v)
	}
	return v.ok
}

// certClient finds the client a certificate names: by its URI SANs if it has any (a URI
// that matches no client is no identity: never a fallback to a DNS SAN or the CN), else
// by its DNS SANs, else by its CN. Names that match two clients are no identity either.
func (p *Policy) certClient(leaf *x509.Certificate) (cl *client, ambiguous bool) {
	match := func(m map[string]*client, name string) {
		if c := m[name]; c != nil {
			if cl != nil && cl != c {
				ambiguous = true
			}
			cl = c
		}
	}
	switch {
	case len(leaf.URIs) > 0:
		for _, u := range leaf.URIs {
			if n, ok := conf.NormalURI(u.String()); ok {
				match(p.byURI, n)
			}
		}
	case len(leaf.DNSNames) > 0:
		for _, d := range leaf.DNSNames {
			match(p.byDNS, conf.NormalDNS(d))
		}
	default:
		match(p.byCN, leaf.Subject.CommonName)
	}
	if ambiguous {
		return nil, true
	}
	return cl, false
}

// certName names a certificate in a refusal, within 100 bytes of what it holds.
func certName(c *x509.Certificate) string {
	if len(c.URIs) > 0 {
		return "URI " + clip(c.URIs[0].String(), 100)
	}
	if len(c.DNSNames) > 0 {
		return "DNS " + clip(c.DNSNames[0], 100)
	}
	return "CN " + strconv.Quote(clip(c.Subject.CommonName, 100))
}

// clip cuts s to at most n bytes, on a character's boundary, marking the cut.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := n
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "..."
}
