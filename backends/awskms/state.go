package awskms

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ib1/provenanced/backends"
)

// outcome is what one Sign call showed of KMS.
type outcome int

const (
	signed     outcome = iota // a signature came back
	throttled                 // KMS answered, but refused for the request rate
	refused                   // KMS refused the key, the identity or its credentials
	unanswered                // no answer: unreachable, 5xx, a deadline, a page not KMS's
)

func classify(err error) outcome {
	switch {
	case err == nil:
		return signed
	case permanent(err):
		return refused
	case isThrottle(err):
		return throttled
	}
	return unanswered
}

// state is what the key's signatures, a client's or a test's, have shown of KMS lately.
// Ready judges from it, so that one failed call does not take the key down, and a refusal
// does at once.
type state struct {
	mu sync.Mutex
	// signedAt: when KMS last returned a signature.
	signedAt time.Time
	// failingSince: when the run of unanswered calls began; zero when the last call
	// was answered (a signature, a refusal, or throttling: KMS is there).
	failingSince time.Time
	lastFailure  *kmsError // the latest unanswered call's error
	// refusal: KMS's last refusal of the key or the identity, until a signature comes.
	refusal error
	// badSignature: the last test signature did not verify; only a test signature that
	// does clears it (a client's is checked above the backend, in backends.Key).
	badSignature error
	probeFailed  bool // the last test signature failed, however: try again at once
}

func (st *state) record(o outcome, err *kmsError, now time.Time) {
	st.mu.Lock()
	defer st.mu.Unlock()
	switch o {
	case signed:
		st.signedAt, st.failingSince, st.refusal = now, time.Time{}, nil
	case throttled:
		st.failingSince = time.Time{}
	case refused:
		st.failingSince, st.refusal = time.Time{}, err
	case unanswered:
		if st.failingSince.IsZero() {
			st.failingSince = now
		}
		st.lastFailure = err
	}
}

// probed records the end of a test signature: err is nil when it verified.
func (st *state) probed(err error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.probeFailed = err != nil
	switch {
	case err == nil:
		st.badSignature = nil
	case errors.Is(err, backends.ErrBadSignature):
		st.badSignature = err
	}
}

// needsProbe: the key has not signed for every, or something failed since it did.
func (st *state) needsProbe(now time.Time, every time.Duration) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.probeFailed || st.refusal != nil || !st.failingSince.IsZero() || now.Sub(st.signedAt) >= every
}

// sustained: KMS has answered no call for downAfter, since when.
func (st *state) sustained(now time.Time, downAfter time.Duration) (time.Time, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.failingSince, !st.failingSince.IsZero() && now.Sub(st.failingSince) >= downAfter
}

// silence says how long KMS has been silent, for the messages of a key that is down for it.
func silence(since time.Time, downAfter time.Duration) string {
	return fmt.Sprintf("KMS has answered no call since %s (down_after = %s)", since.UTC().Format(time.RFC3339), downAfter)
}

// verdict is Ready's answer. Its text changes only with the reason, not with time, so
// that the daemon logs a lasting outage once rather than at every check.
func (st *state) verdict(now time.Time, downAfter time.Duration) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	switch {
	case st.refusal != nil:
		return st.refusal
	case st.badSignature != nil:
		return st.badSignature
	case !st.failingSince.IsZero() && now.Sub(st.failingSince) >= downAfter:
		return &kmsError{err: st.lastFailure.err, msg: st.lastFailure.msg + "; " + silence(st.failingSince, downAfter)}
	}
	return nil
}
