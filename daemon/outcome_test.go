package daemon

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/ib1/provenanced/backends"
)

// The sign histogram counts each failure under its reason, and an unavailable backend
// takes backend_up down.
func TestSignObserverOutcomes(t *testing.T) {
	m := NewMetrics("test")
	m.BackendUp.WithLabelValues("k", "pem").Set(1)
	obs := m.signObserver("k", "pem")
	obs(time.Millisecond, nil)
	obs(time.Second, fmt.Errorf("x: %w", context.DeadlineExceeded))
	obs(time.Millisecond, fmt.Errorf("%w: gone", backends.ErrUnavailable))
	obs(time.Millisecond, fmt.Errorf("%w: short", backends.ErrInvalidDigest))
	obs(time.Millisecond, errors.New("boom"))
	obs(time.Millisecond, errors.New("boom"))
	obs(time.Millisecond, fmt.Errorf("%w: %w: token", backends.ErrUnavailable, backends.ErrBadSignature))
	counts := map[string]uint64{}
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "provenanced_sign_duration_seconds" {
			continue
		}
		for _, mt := range mf.GetMetric() {
			for _, l := range mt.GetLabel() {
				if l.GetName() == "outcome" {
					counts[l.GetValue()] = mt.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	wantCounts := map[string]uint64{"ok": 1, "timeout": 1, "unavailable": 1, "invalid": 2, "error": 2}
	if len(counts) != len(wantCounts) {
		t.Errorf("series by outcome: %v, want those of %v (a signature is never denied: the policy refuses before any key signs)", counts, wantCounts)
	}
	for o, n := range wantCounts {
		if counts[o] != n {
			t.Errorf("outcome %s: %d samples, want %d (all: %v)", o, counts[o], n, counts)
		}
	}
	if v := value(t, m.BackendUp.WithLabelValues("k", "pem")); v != 0 {
		t.Errorf("backend_up = %v after an unavailable error, want 0", v)
	}
}

// value reads a counter or gauge.
func value(t *testing.T, c prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := c.Write(&d); err != nil {
		t.Fatal(err)
	}
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}

// build_info's revision: the VCS revision Go recorded, marked when the tree had changes,
// and "unknown" only when there is none.
func TestVCSRevision(t *testing.T) {
	for _, c := range []struct {
		settings []debug.BuildSetting
		want     string
	}{
		{[]debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: "abc123"}, {Key: "vcs.modified", Value: "false"}}, "abc123"},
		{[]debug.BuildSetting{{Key: "vcs.revision", Value: "abc123"}, {Key: "vcs.modified", Value: "true"}}, "abc123-dirty"},
		{[]debug.BuildSetting{{Key: "-trimpath", Value: "true"}}, "unknown"},
		{nil, "unknown"},
	} {
		if got := vcsRevision(c.settings); got != c.want {
			t.Errorf("vcsRevision(%v) = %q, want %q", c.settings, got, c.want)
		}
	}
	defer func(r string) { Revision = r }(Revision)
	Revision = "0123abc"
	if got := BuildRevision(); got != "0123abc" {
		t.Errorf("with Revision stamped, BuildRevision() = %q", got)
	}
}

// gathered is the value of the counter or gauge name whose labels are the name, value
// pairs given.
func gathered(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if have[labels[i]] != labels[i+1] {
					continue metrics
				}
			}
			if m.Counter != nil {
				return m.Counter.GetValue()
			}
			return m.Gauge.GetValue()
		}
	}
	t.Fatalf("no %s%v", name, labels)
	return 0
}
