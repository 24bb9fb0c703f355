package awskms

import (
	"context"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/smithy-go/middleware"
	"github.com/prometheus/client_golang/prometheus"
)

// The KMS retry and throttle counters, by key name. They live here rather than in the
// daemon's Metrics because a backend's Open is given no registry; the daemon registers
// these collectors in its own (Collectors). One process that runs several daemons (tests)
// shares the counts.
var (
	kmsRetries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "provenanced_kms_retries_total",
		Help: "KMS calls sent again after a failed attempt (throttling, 5xx, a dropped connection), by key.",
	}, []string{"key"})
	kmsThrottled = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "provenanced_kms_throttled_total",
		Help: "KMS attempts refused for the request rate (ThrottlingException and the like, HTTP 429), by key.",
	}, []string{"key"})
)

// Collectors are the backend's metrics, for the daemon's registry.
func Collectors() []prometheus.Collector { return []prometheus.Collector{kmsRetries, kmsThrottled} }

// countAttempts is an API option of a key's KMS client: once each call is over, it
// reads the retry middleware's record of its attempts. It sits in the Initialize step,
// outside the retry loop, so one call that took three attempts counts two retries, and
// it sees every call the SDK makes, whichever code path made it.
func countAttempts(key string) func(*middleware.Stack) error {
	retries, throttled := kmsRetries.WithLabelValues(key), kmsThrottled.WithLabelValues(key)
	mw := middleware.InitializeMiddlewareFunc("provenancedAttemptMetrics", func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
		out, md, err := next.HandleInitialize(ctx, in)
		if res, ok := retry.GetAttemptResults(md); ok {
			if n := len(res.Results); n > 1 {
				retries.Add(float64(n - 1))
			}
			for _, r := range res.Results {
				if r.Err != nil && isThrottle(r.Err) {
					throttled.Inc()
				}
			}
		}
		return out, md, err
	})
	return func(st *middleware.Stack) error { return st.Initialize.Add(mw, middleware.Before) }
}

// isThrottle uses the SDK's own list of throttling errors, the one its retryer backs off on.
func isThrottle(err error) bool {
	for _, t := range retry.DefaultThrottles {
		if t.IsErrorThrottle(err) == aws.TrueTernary {
			return true
		}
	}
	return false
}
