package api

import (
	"context"
	"net/http"
	"runtime"
	"strconv"
	"time"

	"github.com/ib1/provenanced/api/wire"
)

// verifyWait is how long a verification waits for its turn before a 503.
const verifyWait = 5 * time.Second

// verifySlots bound the record verifications that the routes open to everyone
// (/v1/records/verify, /v1/records/graph, /api/v1/decode) run at once: a record of a
// megabyte takes a core for tens of milliseconds, and as many connections as a stranger
// can open would otherwise take every core from the signatures of configured clients.
// Signing routes that verify the records they receive are not bounded here: their
// clients are known and have a rate.
type verifySlots chan struct{}

func newVerifySlots(n int) verifySlots {
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	return make(verifySlots, n)
}

// take waits for a slot, up to verifyWait; done gives it back. ok is false when none came
// in time (or the client went away).
func (s verifySlots) take(ctx context.Context) (done func(), ok bool) {
	select {
	case s <- struct{}{}:
		return s.give, true
	default:
	}
	t := time.NewTimer(verifyWait)
	defer t.Stop()
	select {
	case s <- struct{}{}:
		return s.give, true
	case <-t.C:
	case <-ctx.Done():
	}
	return nil, false
}

func (s verifySlots) give() { <-s }

// busyMessage is the 503 of a verification that found no slot.
const busyMessage = "every record verification slot (verify_concurrency) stayed busy; retry"

// withSlot runs work with a verification slot, or answers 503 in the route's shape
// (refuse) when none comes in time. work's answer is kept until the slot is given back:
// a client that reads its answer slowly must not hold a slot meanwhile.
func (a *API) withSlot(w http.ResponseWriter, r *http.Request, refuse wire.ErrorWriter, work func(w http.ResponseWriter)) {
	done, ok := a.verifying.take(r.Context())
	if !ok {
		w.Header().Set("Retry-After", strconv.Itoa(int(verifyWait/time.Second)))
		refuse(w, http.StatusServiceUnavailable, "busy", busyMessage, "")
		return
	}
	b := &bufferedAnswer{header: w.Header()}
	work(b)
	done()
	if b.status == 0 {
		b.status = http.StatusOK
	}
	w.WriteHeader(b.status)
	w.Write(b.body)
}

// bufferedAnswer is an answer held in memory: its headers are the real answer's, its
// status and body are sent later.
type bufferedAnswer struct {
	header http.Header
	status int
	body   []byte
}

func (b *bufferedAnswer) Header() http.Header { return b.header }

func (b *bufferedAnswer) WriteHeader(status int) {
	if b.status == 0 {
		b.status = status
	}
}

func (b *bufferedAnswer) Write(p []byte) (int, error) {
	if b.status == 0 {
		b.status = http.StatusOK
	}
	b.body = append(b.body, p...)
	return len(p), nil
}
