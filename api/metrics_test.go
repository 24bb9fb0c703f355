package api

import (
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/ib1/provenanced/backends"
)

func TestRecordOutcomes(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	m.verified(false)
	m.signed(nil)
	m.signed(fmt.Errorf("%w: kms", backends.ErrUnavailable))
	m.recordsDenied.Inc()
	for _, c := range []struct {
		op, outcome string
		want        float64
	}{{"verify", "invalid", 1}, {"sign", "ok", 1}, {"sign", "unavailable", 1}, {"sign", "denied", 1}, {"sign", "error", 0}} {
		var d dto.Metric
		if err := m.records.WithLabelValues(c.op, c.outcome).Write(&d); err != nil {
			t.Fatal(err)
		}
		if v := d.Counter.GetValue(); v != c.want {
			t.Errorf("records_total{%s,%s} = %v, want %v", c.op, c.outcome, v, c.want)
		}
	}
	// Every outcome an operation can have is exported from the start, so rate() has a
	// series to work on; none other is.
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			var labels []string
			for _, l := range mt.GetLabel() {
				labels = append(labels, l.GetValue())
			}
			seen[strings.Join(labels, "/")] = true
		}
	}
	for _, o := range backends.Outcomes {
		if !seen["sign/"+o] {
			t.Errorf("records_total lacks a series for sign, %s: %v", o, seen)
		}
	}
	if len(seen) != len(backends.Outcomes)+len(VerifyOutcomes) || !seen["verify/ok"] || !seen["verify/invalid"] {
		t.Errorf("records_total's series: %v; want sign with every outcome, verify with ok and invalid", seen)
	}
}
