package backends

import (
	"context"
	"errors"
)

// Outcomes are the values of the metrics' outcome label, the agreed set: a dashboard can
// tell a slow backend (timeout) from a down one (unavailable), a refused client (denied)
// and something that did not verify (invalid) from the daemon's own failures (error).
var Outcomes = []string{"ok", "timeout", "unavailable", "denied", "invalid", "error"}

// SignOutcomes are those a signature can have: a client the policy refuses never reaches
// a key, so "denied" is not among them, and "invalid" is a signature that failed its
// check (ErrBadSignature) or a digest of the wrong length given to a key (which the HTTP
// API refuses before any key sees it).
var SignOutcomes = []string{"ok", "timeout", "unavailable", "invalid", "error"}

// Outcome is the outcome label of an operation that ended with err. An error that knows
// its outcome says so with an Outcome() string method.
func Outcome(err error) string {
	var o interface{ Outcome() string }
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &o):
		return o.Outcome()
	case errors.Is(err, ErrBadSignature):
		return "invalid" // before unavailable, which it wraps too
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout" // before unavailable: a KMS call past its deadline wraps both
	case errors.Is(err, ErrUnavailable):
		return "unavailable"
	case errors.Is(err, ErrInvalidDigest):
		return "invalid"
	}
	return "error"
}
