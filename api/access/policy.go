// Package access is who may sign what: the configured clients, how a request is matched
// to one (a bearer token, a verified client certificate, the Unix socket peer's uid or
// gid), and the guard in front of every signing route, which refuses what the policy does
// not allow and writes the audit line of every signing request before its answer.
//
// What the guard learns travels in the request's context (a Call): the handler adds to
// the audit entry what it signs, and the daemon's request log reads the client's name.
package access

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"math"
	"net/http"
	"strconv"
	"strings"

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
}

type client struct {
	*conf.Client
	name    *string // for audit entries
	limiter *rate.Limiter
}

// NewPolicy builds the policy of clients (checked by conf) with the audit log al (nil for
// none). With no clients, every operation stays open to whoever reaches a listener. m
// counts refusals (nil: not counted).
func NewPolicy(clients []*conf.Client, al *audit.Log, m *Metrics) *Policy {
	p := &Policy{
		open:  len(clients) == 0,
		byUID: map[int]*client{}, byGID: map[int]*client{},
		byURI: map[string]*client{}, byDNS: map[string]*client{}, byCN: map[string]*client{},
		audit: al, metrics: m,
	}
	for _, c := range clients {
		name := c.Name
		cl := &client{Client: c, name: &name}
		if c.Rate > 0 {
			// A second's worth of requests may come at once; past that, Rate per second.
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
		if c.TLSURI != "" {
			p.byURI[c.TLSURI] = cl
		}
		if c.TLSDNS != "" {
			p.byDNS[c.TLSDNS] = cl
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

// identify finds the client of a request, in the contract's order: a bearer token (a
// wrong one is the end of it), a verified client certificate, the socket peer's uid then
// gid. Without a client it says why, and how to authenticate.
func (p *Policy) identify(r *http.Request, peer *Peer) (*client, string) {
	if auth := r.Header.Get("Authorization"); auth != "" {
		scheme, token, ok := strings.Cut(auth, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
			return nil, "the Authorization header is not \"Bearer TOKEN\""
		}
		sum := sha256.Sum256([]byte(strings.TrimSpace(token)))
		var found *client
		// Every digest is compared, in constant time, whatever matched before.
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
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.VerifiedChains[0]) > 0 {
		leaf := r.TLS.VerifiedChains[0][0]
		if cl := p.byCertificate(leaf); cl != nil {
			return cl, ""
		}
		return nil, "the client certificate (" + certName(leaf) + ") is not a configured client's"
	}
	if peer != nil {
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

func (p *Policy) byCertificate(leaf *x509.Certificate) *client {
	for _, u := range leaf.URIs {
		if cl := p.byURI[u.String()]; cl != nil {
			return cl
		}
	}
	for _, d := range leaf.DNSNames {
		if cl := p.byDNS[d]; cl != nil {
			return cl
		}
	}
	return p.byCN[leaf.Subject.CommonName]
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
