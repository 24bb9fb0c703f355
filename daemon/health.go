package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ib1/provenanced/api/wire"
	"github.com/ib1/provenanced/backends"
)

// healthInterval is how often each key's backend is asked whether it can sign, so that
// provenanced_backend_up and /readyz follow a token that went away (or came back)
// between requests.
const healthInterval = 5 * time.Second

// health watches the keys of the generation being served: backend_up and the
// certificate expiry gauges, and the reasons /readyz gives. Only the background check
// (and a reload, for the keys it is about to serve) asks the backends; /readyz reads what
// the last check found, so a probe never costs a KMS call or a token round trip, and a
// flood of probes cannot become a flood of backend calls.
type health struct {
	m       *Metrics
	log     *slog.Logger
	now     func() time.Time
	current func() *generation
	cancel  context.CancelFunc
	done    chan struct{}
	// onReady is called after every check that finds nothing that keeps /readyz from
	// answering 200 (for systemd's READY=1); set before any check runs.
	onReady func()

	// down is set while a key is known down, so that observe takes the lock on a
	// successful signature only when there is something to clear.
	down atomic.Bool

	mu     sync.Mutex
	gen    *generation          // the generation errs is about
	errs   map[string]error     // the last check's outcome by key name
	last   map[string]error     // the previous outcome by key, to log changes once
	warned map[string]time.Time // when each key's coming expiry was last logged
	// downSince and reported: since when each key that cannot sign has not, and when
	// that outage's count of refused signatures was last logged.
	downSince, reported map[string]time.Time
	notReady            map[string]loggedReason // the /readyz reason last logged, by key
	// badSig: the keys whose last signature failed its check (backends.ErrBadSignature),
	// by name. Such a key is not ready, whatever its backend's own check says, until one
	// of its signatures verifies again: a client's, or the test signature each background
	// check makes for it.
	badSig map[string]error
}

// outageReport is how often a key that cannot sign has a line in the log saying so, with
// the number of signatures refused meanwhile: one line per change of state and one a
// minute, however many requests a looping client sends.
const outageReport = time.Minute

// expiryWarning is how long before a certificate's end the daemon starts to warn, once
// a day, in its log.
const expiryWarning = 30 * 24 * time.Hour

func newHealth(m *Metrics, log *slog.Logger, current func() *generation) *health {
	return &health{m: m, log: log, now: time.Now, current: current, last: map[string]error{}, warned: map[string]time.Time{},
		downSince: map[string]time.Time{}, reported: map[string]time.Time{}, notReady: map[string]loggedReason{},
		badSig: map[string]error{}}
}

func (h *health) start(ctx context.Context) {
	ctx, h.cancel = context.WithCancel(ctx)
	h.done = make(chan struct{})
	go func() {
		defer close(h.done)
		t := time.NewTicker(healthInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				h.check(ctx)
			}
		}
	}()
}

func (h *health) stop() {
	if h.cancel != nil {
		h.cancel()
		<-h.done
	}
}

// check asks the current generation's keys and records what they say; a backend that
// does not answer within healthInterval counts as down.
func (h *health) check(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, healthInterval)
	defer cancel()
	g := h.current()
	errs := probe(ctx, g.keys)
	h.recheck(ctx, g, errs)
	h.store(g, errs)
}

// recheck has each of g's keys whose last signature failed its check make a test
// signature; one that verifies clears the fault, one that does not is put in errs.
func (h *health) recheck(ctx context.Context, g *generation, errs map[string]error) {
	h.mu.Lock()
	var bad []*backends.Key
	for name := range h.badSig {
		if k := g.key(name); k != nil {
			bad = append(bad, k)
		}
	}
	h.mu.Unlock()
	for _, k := range bad {
		err := k.CheckSigns(ctx)
		h.mu.Lock()
		if err == nil {
			delete(h.badSig, k.Name())
		} else if errors.Is(err, backends.ErrBadSignature) {
			h.badSig[k.Name()] = err
		}
		h.mu.Unlock()
		if err != nil && errs[k.Name()] == nil {
			errs[k.Name()] = err
		}
	}
}

// probe asks every key, in parallel, whether it can sign, and returns the problems by
// key name.
func probe(ctx context.Context, keys []*backends.Key) map[string]error {
	errs := make([]error, len(keys))
	var wg sync.WaitGroup
	for i, k := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = k.Ready(ctx)
		}()
	}
	wg.Wait()
	out := map[string]error{}
	for i, k := range keys {
		if errs[i] != nil {
			out[k.Name()] = errs[i]
		}
	}
	return out
}

// store records the outcome of probing g's keys, unless another generation is served by
// now (a reload raced a background check: the reload's own probe is the fresher one).
// The gauges of keys that g no longer has are removed.
func (h *health) store(g *generation, errs map[string]error) {
	h.mu.Lock()
	if g != h.current() {
		h.mu.Unlock()
		return
	}
	if h.gen != nil && h.gen != g {
		h.forgetRetired(g)
	}
	for name, err := range h.badSig {
		if errs[name] == nil && g.key(name) != nil {
			errs[name] = err
		}
	}
	h.gen, h.errs = g, errs
	h.down.Store(len(errs) > 0)
	for _, k := range g.keys {
		h.record(k, errs[k.Name()])
	}
	ready := len(h.reasonsLocked(nil)) == 0
	h.mu.Unlock()
	if ready && h.onReady != nil {
		h.onReady()
	}
}

// forgetRetired drops the gauges and the outage state of the keys of the generation
// being replaced that g does not have (or has with another backend, or without a
// certificate). Called with h.mu held.
func (h *health) forgetRetired(g *generation) {
	for _, k := range h.gen.keys {
		nk := g.key(k.Name())
		if nk == nil || nk.Backend() != k.Backend() {
			h.m.BackendUp.DeleteLabelValues(k.Name(), k.Backend())
		}
		if nk == nil || nk.Leaf() == nil {
			h.m.CertExpiry.DeleteLabelValues(k.Name())
		}
		if nk == nil || !nk.SharesBackend(k) {
			delete(h.badSig, k.Name()) // a backend opened afresh was test-signed as it opened
		}
		if nk == nil {
			delete(h.last, k.Name())
			delete(h.warned, k.Name())
			delete(h.downSince, k.Name())
			delete(h.reported, k.Name())
			delete(h.notReady, k.Name())
		}
	}
}

// record sets k's gauges from its probe's outcome and logs a change of state: down, still
// down (once per outageReport, with the count of refused signatures), up again. Called
// with h.mu held.
func (h *health) record(k *backends.Key, err error) {
	up := 1.0
	if err != nil {
		up = 0
	}
	h.m.BackendUp.WithLabelValues(k.Name(), k.Backend()).Set(up)
	if leaf := k.Leaf(); leaf != nil {
		h.m.CertExpiry.WithLabelValues(k.Name()).Set(float64(leaf.NotAfter.Unix()))
	}
	prev, seen := h.last[k.Name()]
	now := h.now()
	refused := h.m.refusedCounter(k.Name())
	switch {
	case err != nil && (!seen || prev == nil):
		h.downSince[k.Name()], h.reported[k.Name()] = now, now
		h.log.Warn("key cannot sign", "key", k.Name(), "backend", k.Backend(), "error", err.Error(), "refused", refused.Swap(0))
	case err != nil && now.Sub(h.reported[k.Name()]) >= outageReport:
		h.reported[k.Name()] = now
		h.log.Warn("key still cannot sign", "key", k.Name(), "backend", k.Backend(), "error", err.Error(),
			"down_for", now.Sub(h.downSince[k.Name()]).Round(time.Second).String(), "refused", refused.Swap(0))
	case err == nil && seen && prev != nil:
		h.log.Info("key can sign again", "key", k.Name(), "backend", k.Backend(),
			"down_for", now.Sub(h.downSince[k.Name()]).Round(time.Second).String(), "refused", refused.Swap(0))
		delete(h.downSince, k.Name())
		delete(h.reported, k.Name())
		delete(h.notReady, k.Name())
	}
	h.last[k.Name()] = err
	h.warnExpiry(k)
}

// observe takes what a signature just showed about its key's backend, without asking it
// anything more: a backend found unavailable, or whose signature failed its check, is
// down for /readyz at once, and one that signed is up again, rather than either waiting
// for the next background check.
//
// A passing failure (backends.ErrTransient: a throttled KMS call, say) shows nothing
// either way: the backend's Ready says when such failures have lasted long enough to
// count, so that one busy moment of a service all replicas share does not take every
// replica out of service at once.
func (h *health) observe(name string, err error) {
	if errors.Is(err, backends.ErrTransient) {
		return
	}
	unavailable := errors.Is(err, backends.ErrUnavailable)
	if !unavailable && (err != nil || !h.down.Load()) {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.gen == nil || h.gen.key(name) == nil {
		return
	}
	if unavailable {
		h.errs[name] = err
		if errors.Is(err, backends.ErrBadSignature) {
			h.badSig[name] = err
		}
		h.down.Store(true)
		return
	}
	delete(h.badSig, name)
	if _, was := h.errs[name]; was {
		delete(h.errs, name)
		h.m.BackendUp.WithLabelValues(name, h.gen.key(name).Backend()).Set(1)
	}
	h.down.Store(len(h.errs) > 0)
}

// notReadyID logs why key cannot sign, under a new request id, and returns the id; while
// the reason stays the same, later /readyz answers name that line's id rather than log
// it again (a probe every few seconds would otherwise add a line each time). A backend's
// error text names what only the operator should see (module path, token label,
// endpoint, ARN): the answer names the key and the id, the log has the text. Called with
// h.mu held.
func (h *health) notReadyID(k *backends.Key, err error) string {
	if last, ok := h.notReady[k.Name()]; ok && last.err == err.Error() {
		return last.id
	}
	id := wire.NewRequestID()
	h.notReady[k.Name()] = loggedReason{err: err.Error(), id: id}
	h.log.Warn("not ready: key cannot sign", "request_id", id, "key", k.Name(), "backend", k.Backend(), "error", err.Error())
	return id
}

type loggedReason struct{ err, id string }

// warnExpiry logs, at most once a day, that a key's certificate ends within 30 days or
// has ended. Called with h.mu held.
func (h *health) warnExpiry(k *backends.Key) {
	leaf := k.Leaf()
	if leaf == nil {
		return
	}
	now := h.now()
	left := leaf.NotAfter.Sub(now)
	if left > expiryWarning || now.Sub(h.warned[k.Name()]) < 24*time.Hour {
		return
	}
	h.warned[k.Name()] = now
	if left <= 0 {
		h.log.Error("certificate expired: the key's records and signatures will not verify; install a renewed bundle and reload (SIGHUP)", "key", k.Name(), "serial", leaf.SerialNumber.String(), "not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
		return
	}
	h.log.Warn("certificate expires soon: renew it (provenanced csr, then install the new bundle and reload with SIGHUP)", "key", k.Name(), "serial", leaf.SerialNumber.String(),
		"not_after", leaf.NotAfter.UTC().Format(time.RFC3339), "days_left", int(left.Hours()/24))
}

// reasons is /readyz: why the daemon cannot serve every key now, from the last check. A
// key's backend must have answered that check, and its certificate must be valid now.
// A backend's own words stay in the log (logDown).
func (h *health) reasons(context.Context) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.reasonsLocked(h.notReadyID)
}

// reasonsLocked lists the reasons; a key that cannot sign is named with the request id
// that id gives, or, with id nil (a readiness test, not an answer), without one.
func (h *health) reasonsLocked(id func(*backends.Key, error) string) []string {
	if h.gen == nil {
		return []string{"the keys have not been checked yet"}
	}
	var out []string
	now := h.now()
	for _, k := range h.gen.keys {
		if err := h.errs[k.Name()]; err != nil {
			if id == nil {
				out = append(out, k.Name())
				continue
			}
			out = append(out, fmt.Sprintf("key %q (%s) cannot sign now; the daemon's log has the reason under request id %s", k.Name(), k.Backend(), id(k, err)))
		}
		if leaf := k.Leaf(); leaf != nil {
			if now.After(leaf.NotAfter) {
				out = append(out, fmt.Sprintf("key %q: its certificate (serial %s) expired at %s", k.Name(), leaf.SerialNumber, leaf.NotAfter.UTC().Format(time.RFC3339)))
			} else if now.Before(leaf.NotBefore) {
				out = append(out, fmt.Sprintf("key %q: its certificate (serial %s) is not valid before %s", k.Name(), leaf.SerialNumber, leaf.NotBefore.UTC().Format(time.RFC3339)))
			}
		}
	}
	return out
}
