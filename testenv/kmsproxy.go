package testenv

import (
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/ib1/provenanced/conf"
	"github.com/ib1/provenanced/internal/devsetup"
)

// KMSFault is an answer the proxy gives instead of KMS's.
type KMSFault struct {
	Status int
	Code   string // __type, as KMS's JSON protocol has it
	Msg    string
	Times  int  // how many requests to answer so; < 0 for all
	Hang   bool // answer nothing until the caller gives up
	Drop   bool // close the connection without answering
	Echo   bool // answer an error whose message repeats the request's credentials
	// XML answers in AWS's query protocol (<ErrorResponse><Error><Code>...), as IAM's
	// checks in front of a service and some AWS front ends and proxies do, rather than in
	// KMS's JSON; Body, when set, is the whole answer instead (with ContentType).
	XML         bool
	Body        string
	ContentType string
}

// KMSProxy stands between a KMS client (the daemon) and the emulator, on 127.0.0.1,
// counting the requests of each KMS operation and answering some of them with a fault:
// the emulator cannot throttle, deny access or drop a connection mid-request on demand.
type KMSProxy struct {
	*httptest.Server
	mu     sync.Mutex
	counts map[string]int
	faults map[string]*KMSFault
	stop   chan struct{}
}

// NewKMSProxy starts a proxy to upstream (the emulator's endpoint); it stops at the
// test's cleanup.
func NewKMSProxy(t TB, upstream string) *KMSProxy {
	t.Helper()
	u, err := url.Parse(upstream)
	if err != nil {
		t.Fatalf("%v", err)
	}
	p := &KMSProxy{counts: map[string]int{}, faults: map[string]*KMSFault{}, stop: make(chan struct{})}
	rp := httputil.NewSingleHostReverseProxy(u)
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		op := strings.TrimPrefix(r.Header.Get("X-Amz-Target"), "TrentService.")
		p.mu.Lock()
		p.counts[op]++
		f := p.faults[op]
		if f != nil && f.Times != 0 {
			if f.Times > 0 {
				f.Times--
			}
			p.mu.Unlock()
			p.answer(w, r, f)
			return
		}
		p.mu.Unlock()
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(p.Close)
	t.Cleanup(func() { close(p.stop) }) // runs first: Close waits for handlers
	return p
}

// answer gives the fault f instead of KMS's answer.
func (p *KMSProxy) answer(w http.ResponseWriter, r *http.Request, f *KMSFault) {
	if f.Drop {
		io.Copy(io.Discard, r.Body)
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
		return
	}
	if f.Hang {
		// The server notices a caller that hangs up only once the body is read.
		io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
		case <-p.stop:
		}
		return
	}
	msg := f.Msg
	if f.Echo {
		msg += " Authorization: " + r.Header.Get("Authorization") + " X-Amz-Security-Token: " + r.Header.Get("X-Amz-Security-Token")
	}
	switch {
	case f.Body != "":
		w.Header().Set("Content-Type", f.ContentType)
		w.WriteHeader(f.Status)
		io.WriteString(w, f.Body)
	case f.XML:
		w.Header().Set("Content-Type", "text/xml")
		w.WriteHeader(f.Status)
		fmt.Fprint(w, `<?xml version="1.0" encoding="UTF-8"?>`+"\n<ErrorResponse><Error><Type>Sender</Type><Code>")
		xml.EscapeText(w, []byte(f.Code))
		io.WriteString(w, "</Code><Message>")
		xml.EscapeText(w, []byte(msg))
		io.WriteString(w, "</Message></Error><RequestId>6f1c2a3e-0000-4000-8000-000000000000</RequestId></ErrorResponse>")
	default:
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		w.WriteHeader(f.Status)
		fmt.Fprintf(w, `{"__type":%q,"message":%q}`, f.Code, msg)
	}
}

// Inject answers the requests of operation op ("Sign", "GetPublicKey") with f from now.
func (p *KMSProxy) Inject(op string, f KMSFault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.faults[op] = &f
}

// Count is the number of requests of operation op so far.
func (p *KMSProxy) Count(op string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.counts[op]
}

// Reset forgets the counts and the faults.
func (p *KMSProxy) Reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.counts = map[string]int{}
	p.faults = map[string]*KMSFault{}
}

// KMSBehindProxy starts local-kms with a signing key "alias/provenance" and its
// certificate from a new test PKI, and a fault proxy in front of it, and loads a
// KMSConfig, in a folder of the test's own, that reaches the key through the proxy.
func KMSBehindProxy(t TB) (*LocalKMS, KMSKey, *KMSProxy, *conf.Config) {
	t.Helper()
	lk := StartLocalKMS(t)
	key, proxy, cfg := BehindProxy(t, lk)
	return lk, key, proxy, cfg
}

// BehindProxy is KMSBehindProxy for emulator e, started already.
func BehindProxy(t TB, e KMSEmulator) (KMSKey, *KMSProxy, *conf.Config) {
	t.Helper()
	pki, err := devsetup.NewPKI(time.Now())
	if err != nil {
		t.Fatalf("%v", err)
	}
	key := e.NewSigningKey(t, pki, "alias/provenance")
	proxy := NewKMSProxy(t, e.Endpoint())
	dir := t.TempDir()
	return key, proxy, KMSConfig(t, dir, key.Bundle, "alias/provenance", proxy.URL).Load(t, dir)
}
