package api

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"runtime"
	"strconv"
	"time"

	"github.com/ib1/provenanced/api/wire"
)

// verifyWait is how long a verification waits for its turn before a 503.
const verifyWait = 5 * time.Second

// verifySlots bound the requests of the routes that verify records for anyone
// (/v1/records/verify, /v1/records/graph, /api/v1/decode) that run at once: a record of a
// megabyte takes a core for tens of milliseconds to read, verify and answer, and as many
// connections as a stranger can open would otherwise take every core from the signatures
// of configured clients. Signing routes that verify the records they receive are not
// bounded here: their clients are known and have a rate.
type verifySlots chan struct{}

// newVerifySlots is n slots; 0 leaves a core to everything else: GOMAXPROCS-1, at least
// one. (All GOMAXPROCS cores verifying took a client's signing p50 from 0.9 ms to 33 ms
// on two cores under 16 connections verifying 800 kB records; one less kept it at 4 ms,
// with as many verifications done.)
func newVerifySlots(n int) verifySlots {
	if n <= 0 {
		n = max(1, runtime.GOMAXPROCS(0)-1)
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

// takingTurns serves h with a verification slot, or answers 503 in the route's shape
// (refuse) when none comes in time. The body is read first and h's answer kept until the
// slot is given back: a client that sends or reads slowly holds no slot meanwhile.
func (a *API) takingTurns(h http.HandlerFunc, refuse wire.ErrorWriter) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > a.opts.MaxRequestBytes {
			h(w, r) // its 413, at once
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.opts.MaxRequestBytes))
		r.Body.Close()
		// The handler reads the body as it would have, errors included (a 413 stays one).
		r.Body = io.NopCloser(io.MultiReader(bytes.NewReader(body), errReader{err}))
		a.withSlot(w, r, refuse, func(w http.ResponseWriter) { h(w, r) })
	}
}

// errReader is the end of a body read ahead: io.EOF, or the error the read met.
type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) {
	if e.err == nil {
		return 0, io.EOF
	}
	return 0, e.err
}

// withSlot runs work with a verification slot, or answers 503 in the route's shape
// (refuse) when none comes in time. work's answer is kept until the slot is given back.
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
