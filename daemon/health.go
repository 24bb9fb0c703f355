package daemon

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ib1/provenanced/backends"
)

// healthInterval is how often each key's backend is asked whether it can sign, so that
// provenanced_backend_up follows a token that went away (or came back) between requests.
const healthInterval = 5 * time.Second

// health watches the keys: backend_up and the certificate expiry gauges, and the reasons
// /readyz gives.
type health struct {
	keys   []*backends.Key
	m      *Metrics
	log    *slog.Logger
	now    func() time.Time
	cancel context.CancelFunc
	done   chan struct{}

	mu       sync.Mutex
	last     map[string]error        // the last check's outcome by key, to log changes once
	warned   map[string]time.Time    // when each key's coming expiry was last logged
	down     map[string]time.Time    // since when each key that cannot sign has not
	reported map[string]time.Time    // when an outage's count was last logged, by key
	notReady map[string]loggedReason // the /readyz reason last logged, by key
}

// outageReport is how often a key that cannot sign has a line in the log saying so, with
// the number of signatures refused meanwhile: one line per change of state and one a
// minute, however many requests a looping client sends.
const outageReport = time.Minute

// expiryWarning is how long before a certificate's end the daemon starts to warn, once
// a day, in its log.
const expiryWarning = 30 * 24 * time.Hour

func newHealth(keys []*backends.Key, m *Metrics, log *slog.Logger) *health {
	h := &health{keys: keys, m: m, log: log, now: time.Now, last: map[string]error{}, warned: map[string]time.Time{}, down: map[string]time.Time{}, reported: map[string]time.Time{}, notReady: map[string]loggedReason{}}
	for _, k := range keys {
		m.BackendUp.WithLabelValues(k.Name(), k.Backend()).Set(1)
		if leaf := k.Leaf(); leaf != nil {
			m.CertExpiry.WithLabelValues(k.Name()).Set(float64(leaf.NotAfter.Unix()))
		}
	}
	return h
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
				cctx, cancel := context.WithTimeout(ctx, healthInterval)
				h.check(cctx)
				cancel()
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

// check asks every key, in parallel, and returns the problems by key name.
func (h *health) check(ctx context.Context) map[string]error {
	errs := make([]error, len(h.keys))
	var wg sync.WaitGroup
	for i, k := range h.keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = k.Ready(ctx)
		}()
	}
	wg.Wait()
	out := map[string]error{}
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, k := range h.keys {
		up := 1.0
		if errs[i] != nil {
			up = 0
			out[k.Name()] = errs[i]
		}
		h.m.BackendUp.WithLabelValues(k.Name(), k.Backend()).Set(up)
		prev, seen := h.last[k.Name()]
		now := h.now()
		refused := h.m.refusedCounter(k.Name())
		switch {
		case errs[i] != nil && (!seen || prev == nil):
			h.down[k.Name()], h.reported[k.Name()] = now, now
			h.log.Warn("key cannot sign", "key", k.Name(), "backend", k.Backend(), "error", errs[i].Error(), "refused", refused.Swap(0))
		case errs[i] != nil && now.Sub(h.reported[k.Name()]) >= outageReport:
			h.reported[k.Name()] = now
			h.log.Warn("key still cannot sign", "key", k.Name(), "backend", k.Backend(), "error", errs[i].Error(),
				"down_for", now.Sub(h.down[k.Name()]).Round(time.Second).String(), "refused", refused.Swap(0))
		case errs[i] == nil && seen && prev != nil:
			h.log.Info("key can sign again", "key", k.Name(), "backend", k.Backend(),
				"down_for", now.Sub(h.down[k.Name()]).Round(time.Second).String(), "refused", refused.Swap(0))
			delete(h.down, k.Name())
			delete(h.reported, k.Name())
		}
		h.last[k.Name()] = errs[i]
		h.warnExpiry(k)
	}
	return out
}

// notReadyID logs why key cannot sign, under a new request id, and returns the id; while
// the reason stays the same, later /readyz answers name that line's id rather than log
// it again (a probe every few seconds would otherwise add a line each time).
func (h *health) notReadyID(k *backends.Key, err error) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if last, ok := h.notReady[k.Name()]; ok && last.err == err.Error() {
		return last.id
	}
	id := requestID()
	h.notReady[k.Name()] = loggedReason{err: err.Error(), id: id}
	h.log.Warn("not ready: key cannot sign", "request_id", id, "key", k.Name(), "backend", k.Backend(), "error", err.Error())
	return id
}

type loggedReason struct{ err, id string }

// requestID names an answer and the log lines that hold what it leaves out.
func requestID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

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
		h.log.Error("certificate expired: the key's records and signatures will not verify; install a renewed bundle", "key", k.Name(), "serial", leaf.SerialNumber.String(), "not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
		return
	}
	h.log.Warn("certificate expires soon: renew it (provenanced csr, then install the new bundle)", "key", k.Name(), "serial", leaf.SerialNumber.String(),
		"not_after", leaf.NotAfter.UTC().Format(time.RFC3339), "days_left", int(left.Hours()/24))
}

// reasons is /readyz: why the daemon cannot serve every key now. A key's backend must
// answer, and its certificate must be valid now. A backend's error text names what only
// the operator should see (module path, token label, endpoint, ARN): the answer says
// which key, and the log has the text under the request id the answer gives.
func (h *health) reasons(ctx context.Context) []string {
	errs := h.check(ctx)
	var out []string
	now := h.now()
	for _, k := range h.keys {
		if err := errs[k.Name()]; err != nil {
			id := h.notReadyID(k, err)
			out = append(out, fmt.Sprintf("key %q (%s) cannot sign now; the daemon's log has the reason under request id %s", k.Name(), k.Backend(), id))
		} else {
			h.mu.Lock()
			delete(h.notReady, k.Name())
			h.mu.Unlock()
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
