package backends_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/ib1/provenanced/backends"
)

type deniedErr struct{}

func (deniedErr) Error() string   { return "client billing may not sign with key k" }
func (deniedErr) Outcome() string { return "denied" }

func TestOutcome(t *testing.T) {
	cases := []struct {
		err  error
		want string
	}{
		{nil, "ok"},
		{fmt.Errorf("sign: %w", context.DeadlineExceeded), "timeout"},
		// A KMS call past its deadline wraps both; the deadline is the more precise reason.
		{fmt.Errorf("%w: kms: %w", backends.ErrUnavailable, context.DeadlineExceeded), "timeout"},
		{fmt.Errorf("%w: token removed", backends.ErrUnavailable), "unavailable"},
		{fmt.Errorf("%w: 31 bytes", backends.ErrInvalidDigest), "invalid"},
		{fmt.Errorf("policy: %w", deniedErr{}), "denied"},
		// A signature that failed its check is unavailable (a 503) but counted apart.
		{fmt.Errorf("%w: %w: token", backends.ErrUnavailable, backends.ErrBadSignature), "invalid"},
		{errors.New("CKR_GENERAL_ERROR"), "error"},
	}
	for _, c := range cases {
		if got := backends.Outcome(c.err); got != c.want {
			t.Errorf("Outcome(%v) = %q, want %q", c.err, got, c.want)
		}
	}
}
