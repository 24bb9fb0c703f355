package awskms_test

import (
	"context"
	"crypto/sha256"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ib1/provenanced/backends/awskms"
	"github.com/ib1/provenanced/testenv"
)

// kmsCounter reads one of the backend's counters for key "signing".
func kmsCounter(t *testing.T, name string) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(awskms.Collectors()...)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "key" && l.GetValue() == "signing" {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// Every call of a key's KMS client is counted: retries by attempt after the first,
// throttling by attempt refused for the rate. The emulator cannot throttle on demand,
// so the fault proxy (testenv.KMSProxy) answers for it.
func TestKMSRetryAndThrottleMetrics(t *testing.T) {
	_, _, proxy, cfg := testenv.KMSBehindProxy(t)
	spec := cfg.KeyByName("signing")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const retries, throttled = "provenanced_kms_retries_total", "provenanced_kms_throttled_total"
	r0, th0 := kmsCounter(t, retries), kmsCounter(t, throttled)

	// Two throttled attempts, then KMS's answer: two retries, two throttles.
	proxy.Inject("GetPublicKey", testenv.KMSFault{Status: 400, Code: "ThrottlingException", Msg: "Rate exceeded", Times: 2})
	s, err := awskms.Open(ctx, spec)
	if err != nil {
		t.Fatalf("Open after two throttled attempts: %v", err)
	}
	s.Close()
	if d := kmsCounter(t, retries) - r0; d != 2 {
		t.Errorf("retries went up by %v, want 2", d)
	}
	if d := kmsCounter(t, throttled) - th0; d != 2 {
		t.Errorf("throttled went up by %v, want 2", d)
	}

	// A 5xx is retried but is no throttling.
	proxy.Inject("GetPublicKey", testenv.KMSFault{Status: 500, Code: "KMSInternalException", Msg: "internal", Times: 1})
	if s, err = awskms.Open(ctx, spec); err != nil {
		t.Fatalf("Open after one 500: %v", err)
	}
	s.Close()
	if d := kmsCounter(t, retries) - r0; d != 3 {
		t.Errorf("retries went up by %v in all, want 3", d)
	}
	if d := kmsCounter(t, throttled) - th0; d != 2 {
		t.Errorf("throttled went up by %v in all, want 2 (a 500 is no throttle)", d)
	}

	// Signing, the call that matters: one throttled attempt, then the signature.
	proxy.Inject("Sign", testenv.KMSFault{Status: 400, Code: "ThrottlingException", Msg: "Rate exceeded", Times: 1})
	if s, err = awskms.Open(ctx, spec); err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte("counted"))
	if _, err := s.SignContext(ctx, digest[:]); err != nil {
		t.Fatalf("Sign after one throttled attempt: %v", err)
	}
	s.Close()
	if d := kmsCounter(t, retries) - r0; d != 4 {
		t.Errorf("retries went up by %v in all after a throttled Sign, want 4", d)
	}
	if d := kmsCounter(t, throttled) - th0; d != 3 {
		t.Errorf("throttled went up by %v in all after a throttled Sign, want 3", d)
	}

	// A call that succeeds at once counts nothing.
	if s, err = awskms.Open(ctx, spec); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if d := kmsCounter(t, retries) - r0; d != 4 {
		t.Errorf("a call without retry counted: retries up by %v, want 4", d)
	}
}
