package daemon

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

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
		{errors.New("CKR_GENERAL_ERROR"), "error"},
	}
	for _, c := range cases {
		if got := Outcome(c.err); got != c.want {
			t.Errorf("Outcome(%v) = %q, want %q", c.err, got, c.want)
		}
	}
}

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
	wantCounts := map[string]uint64{"ok": 1, "timeout": 1, "unavailable": 1, "invalid": 1, "error": 2, "denied": 0}
	for o, n := range wantCounts {
		if counts[o] != n {
			t.Errorf("outcome %s: %d samples, want %d (all: %v)", o, counts[o], n, counts)
		}
	}
	if v := value(t, m.BackendUp.WithLabelValues("k", "pem")); v != 0 {
		t.Errorf("backend_up = %v after an unavailable error, want 0", v)
	}
}

func TestRecordOutcomes(t *testing.T) {
	m := NewMetrics("test")
	m.countRecord("verify", false)
	m.countRecord("sign", true)
	m.countRecordErr("sign", fmt.Errorf("%w: kms", backends.ErrUnavailable))
	m.countRecordErr("sign", deniedErr{})
	for _, c := range []struct {
		op, outcome string
		want        float64
	}{{"verify", "invalid", 1}, {"sign", "ok", 1}, {"sign", "unavailable", 1}, {"sign", "denied", 1}, {"sign", "error", 0}} {
		if v := value(t, m.Records.WithLabelValues(c.op, c.outcome)); v != c.want {
			t.Errorf("records_total{%s,%s} = %v, want %v", c.op, c.outcome, v, c.want)
		}
	}
	// Every agreed outcome is exported from the start, so rate() has a series to work on.
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, mf := range mfs {
		if mf.GetName() == "provenanced_records_total" {
			for _, mt := range mf.GetMetric() {
				var labels []string
				for _, l := range mt.GetLabel() {
					labels = append(labels, l.GetValue())
				}
				seen[strings.Join(labels, "/")] = true
			}
		}
	}
	for _, o := range Outcomes {
		if !seen["verify/"+o] || !seen["sign/"+o] {
			t.Errorf("records_total lacks a series for outcome %s: %v", o, seen)
		}
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
