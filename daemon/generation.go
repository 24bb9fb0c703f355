package daemon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ib1/provenanced/api"
	"github.com/ib1/provenanced/api/access"
	"github.com/ib1/provenanced/audit"
	"github.com/ib1/provenanced/backends"
	"github.com/ib1/provenanced/conf"
	"github.com/ib1/provenanced/internal/source"
)

// generation is everything the daemon serves that a reload replaces: the configuration,
// the keys with their certificate bundles, the provenance state (root CA, verifier) and
// the API built over them. It is never changed once built; a reload builds the next one
// beside it and swaps a single pointer, so a request sees one generation from start to
// end, never half of each.
//
// A generation counts the requests running on it. Once a reload has replaced it
// (retire) and the last of those has finished, it closes the backends that the next
// generation did not take over; until then they stay open for the requests that started
// with them.
type generation struct {
	cfg     *conf.Config
	keys    []*backends.Key
	byName  map[string]*backends.Key
	policy  *access.Policy // clients, tokens, the audit log
	handler http.Handler   // the API
	tls     *tls.Config    // the TCP listener's certificate and client CA, or nil
	// closers are what the generation owns besides its keys' backends (an audit file,
	// say): closed with the generation, once no request runs on it, or at shutdown.
	closers []io.Closer

	refs    atomic.Int64
	retired atomic.Bool
	release []*backends.Key // set by retire: the backends nothing newer uses
	once    sync.Once
	drained chan struct{} // closed once retired and no request runs on it any more
}

func (g *generation) key(name string) *backends.Key { return g.byName[name] }

// buildGeneration opens what cfg describes. A key whose table is unchanged from prev's
// (conf.Key.SameKey) keeps prev's open backend and only has its certificate bundle read
// again; any other key is opened afresh. Everything is checked here, before anything
// is served: on error the keys opened for it are closed and prev is untouched.
//
// Everything else that a reload replaces as one piece belongs here too, built from cfg
// after the keys (the clients, tokens and audit file of [clients.*] and [audit]): put
// into g, with what must be closed in g.closers, and closed here on a later error.
func (d *Daemon) buildGeneration(ctx context.Context, cfg *conf.Config, prev *generation) (g *generation, err error) {
	keys, opened, err := d.openKeys(ctx, cfg, prev)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			backends.CloseAll(opened)
		}
	}()
	prov, err := newProvenance(ctx, cfg, keys)
	if err != nil {
		return nil, err
	}
	tc, err := loadTLS(cfg)
	if err != nil {
		return nil, err
	}
	if tc == nil && prev != nil {
		// TLS turned off: the listener stays TLS until a restart (warnRestartNeeded), with
		// the certificate it has.
		tc = prev.tls
	}
	var running *access.Policy
	if prev != nil {
		running = prev.policy
	}
	// Last but for the API: a new audit file is open from here on.
	var clientCAs *x509.CertPool
	if tc != nil {
		clientCAs = tc.ClientCAs
	}
	policy, err := d.buildPolicy(cfg, running, clientCAs)
	if err != nil {
		return nil, err
	}
	a, err := api.New(api.Options{
		Provenance:        prov,
		Keys:              keys,
		MaxRequestBytes:   cfg.Server.MaxRequestBytes,
		SignTimeout:       cfg.Server.SignTimeout.D(),
		MaxBatch:          cfg.Server.MaxBatch,
		VerifyConcurrency: cfg.Server.VerifyConcurrency,
		Logger:            d.log,
		Metrics:           d.metrics.api,
		Version:           d.opts.Version,
		Access:            policy,
	})
	if err != nil {
		if al := policy.Audit(); al != nil && (running == nil || al != running.Audit()) {
			al.Close()
		}
		return nil, err
	}
	g = &generation{cfg: cfg, keys: keys, byName: map[string]*backends.Key{}, policy: policy, handler: a.Handler(), tls: tc, drained: make(chan struct{})}
	for _, k := range keys {
		g.byName[k.Name()] = k
	}
	return g, nil
}

// openKeys opens cfg's keys, reusing prev's unchanged ones; opened are those opened
// afresh, which the caller closes if the generation is not built after all.
func (d *Daemon) openKeys(ctx context.Context, cfg *conf.Config, prev *generation) (keys, opened []*backends.Key, err error) {
	bopts := backends.Options{Observe: func(name, backend string) backends.Observer {
		metric := d.metrics.signObserver(name, backend)
		return func(took time.Duration, err error) {
			metric(took, err)
			d.health.observe(name, err)
		}
	}, SessionWait: d.metrics.sessionWait, ReadSource: source.Read}
	for _, spec := range cfg.Keys {
		var k *backends.Key
		if old := prev.reusable(spec); old != nil {
			k, err = backends.Reuse(ctx, old, spec, bopts)
		} else {
			k, err = backends.Open(ctx, spec, bopts)
			if k != nil {
				opened = append(opened, k)
			}
		}
		if err != nil {
			backends.CloseAll(opened)
			return nil, nil, err
		}
		keys = append(keys, k)
	}
	return keys, opened, nil
}

// reusable returns prev's key that spec describes unchanged, or nil.
func (prev *generation) reusable(spec *conf.Key) *backends.Key {
	if prev == nil {
		return nil
	}
	old := prev.key(spec.Name)
	if old == nil {
		return nil
	}
	if oldSpec := prev.cfg.KeyByName(spec.Name); oldSpec == nil || !oldSpec.SameKey(spec) {
		return nil
	}
	return old
}

// acquireGap is a test hook, nil in production: when set, acquire calls it between its
// load of the current generation and its count, so that a test can retire that
// generation inside a window too narrow for real requests and reloads to hit on demand.
var acquireGap func()

// acquire returns the generation to serve a request with, counted until done. The
// second look at the pointer closes the race with a reload: a generation retired
// between the load and the count is put back and the newer one taken.
func (d *Daemon) acquire() *generation {
	for {
		g := d.cur.Load()
		if acquireGap != nil {
			acquireGap()
		}
		g.refs.Add(1)
		if d.cur.Load() == g {
			return g
		}
		g.done()
	}
}

func (g *generation) done() {
	if g.refs.Add(-1) == 0 && g.retired.Load() {
		g.finishIfIdle()
	}
}

// retire marks g as replaced; release (the backends the new generation did not take
// over) is closed as soon as no request runs on g. The count and the flag are each
// checked after the other is set, so whichever of retire and the last done comes second
// does it.
func (g *generation) retire(release []*backends.Key) {
	g.release = release
	g.retired.Store(true)
	g.finishIfIdle()
}

// finishIfIdle finishes g if no request runs on it, read after retired was seen set. The
// count done saw fall to zero is not enough: between that and its look at retired, a
// request may have acquired g (still current then) and a reload retired it. Once retired,
// no request can take g any more (acquire checks the pointer after counting), so a zero
// read now stays zero but for acquirers passing through, whose own done looks again.
func (g *generation) finishIfIdle() {
	if g.refs.Load() == 0 {
		g.finish()
	}
}

func (g *generation) finish() {
	g.once.Do(func() {
		backends.CloseAll(g.release)
		g.closeOwn()
		close(g.drained)
	})
}

func (g *generation) closeOwn() {
	for _, c := range g.closers {
		c.Close()
	}
}

// auditNotSharedBy is g's audit log, to close once g has drained, when next writes
// another one (a new path); nil when next continues the same log or g has none.
func (g *generation) auditNotSharedBy(next *generation) *audit.Log {
	old := g.audit()
	if old == nil || old == next.audit() {
		return nil
	}
	return old
}

func (g *generation) audit() *audit.Log {
	if g == nil || g.policy == nil {
		return nil
	}
	return g.policy.Audit()
}

// notSharedBy lists g's keys whose backend next does not use.
func (g *generation) notSharedBy(next *generation) []*backends.Key {
	var out []*backends.Key
	for _, k := range g.keys {
		if nk := next.key(k.Name()); nk == nil || !nk.SharesBackend(k) {
			out = append(out, k)
		}
	}
	return out
}

// serveGeneration serves r with the current generation's API, counted in it until done.
func (d *Daemon) serveGeneration(w http.ResponseWriter, r *http.Request) {
	g := d.acquire()
	defer g.done()
	g.handler.ServeHTTP(w, r)
}
