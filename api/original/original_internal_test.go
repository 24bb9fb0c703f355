package original

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ib1/provenanced/provenance"
)

const vectorScheme = "https://registry.core.sandbox.trust.ib1.org/scheme/perseus"

// stepRecorder is a stepAdder that keeps the steps and numbers them, so that step shapes
// can be checked without a key, a record or HTTP.
type stepRecorder struct{ steps []*provenance.Object }

func (r *stepRecorder) AddStep(s *provenance.Object) (string, error) {
	r.steps = append(r.steps, s)
	return fmt.Sprintf("step-%d", len(r.steps)-1), nil
}

func mustTime(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// vectorSteps reads the decoded steps of a vector made by the original service, without
// _signature, and with each step's id replaced by the recorder's id for the same position
// (first is the position of the first step the signer added).
func vectorSteps(t *testing.T, file string, first int) []*provenance.Object {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "provenance", "testdata", "vectors", "records", file))
	if err != nil {
		t.Fatal(err)
	}
	v, err := provenance.ParseJSON(data, provenance.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	var out []*provenance.Object
	text := string(data)
	for i, s := range v.([]any)[first:] {
		id, _ := s.(*provenance.Object).GetString("id")
		text = strings.ReplaceAll(text, `"`+id+`"`, fmt.Sprintf(`"step-%d"`, i))
	}
	v, _ = provenance.ParseJSON([]byte(text), provenance.Limits{})
	for _, s := range v.([]any)[first:] {
		o := s.(*provenance.Object)
		var kept []provenance.Member
		for _, m := range o.Members {
			if m.Key != "_signature" && m.Key != "id" {
				kept = append(kept, m)
			}
		}
		out = append(out, provenance.NewObject(kept...))
	}
	return out
}

// sameStep compares a recorded step with a vector step, member order included. The writer
// moves "timestamp" before "type"; a step without one gets the signing time, so the
// vector's is only compared when the step has its own.
func sameStep(t *testing.T, i int, got, want *provenance.Object) {
	t.Helper()
	strip := func(o *provenance.Object) (*provenance.Object, string) {
		ts, _ := o.GetString("timestamp")
		var kept []provenance.Member
		for _, m := range o.Members {
			if m.Key != "timestamp" {
				kept = append(kept, m)
			}
		}
		return provenance.NewObject(kept...), ts
	}
	g, gts := strip(got)
	w, wts := strip(want)
	gj, _ := provenance.AppendJSON(nil, g)
	wj, _ := provenance.AppendJSON(nil, w)
	if string(gj) != string(wj) {
		t.Errorf("step %d:\n got %s\nwant %s", i, gj, wj)
	}
	if gts != "" && gts != wts {
		t.Errorf("step %d: timestamp %s, want %s", i, gts, wts)
	}
}

var recordTime = regexp.MustCompile(`^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$`)

// The EDP and CAP steps are the ones the original service wrote into the reference vectors
// (edp.decoded.json, cap.decoded.json), given the inputs those records show.
func TestStepsMatchTheOriginal(t *testing.T) {
	edp := &edpRequest{
		from: mustTime(t, "2025-09-01T10:00:00Z"), to: mustTime(t, "2025-10-01T10:00:00Z"),
		granted: mustTime(t, "2025-08-28T09:15:42Z"), expires: mustTime(t, "2026-08-28T09:15:42Z"),
		serviceURL: "https://api.smartmeterreading.example.com/meter-readings/0",
		account:    "/yl4Y/aV6b80fo5cnmuDDByfuEA=", fapiID: "4f0b9c2e-5d7a-4e61-9b3c-1a2d3e4f5a6b",
		capMember: "https://member.core.sandbox.trust.ib1.org/m/81524", originURL: "https://www.smartdcc.co.uk/",
		originLicence: "https://smartenergycodecompany.co.uk/documents/sec/consolidated-sec/",
	}
	rec := &stepRecorder{}
	if err := addEDPSteps(rec, vectorScheme, edp); err != nil {
		t.Fatal(err)
	}
	want := vectorSteps(t, "edp.decoded.json", 0)
	if len(rec.steps) != len(want) {
		t.Fatalf("%d EDP steps, want %d", len(rec.steps), len(want))
	}
	for i := range want {
		sameStep(t, i, rec.steps[i], want[i])
	}

	capReq := &capRequest{
		capMember: "https://member.core.sandbox.trust.ib1.org/m/81524", bankMember: "https://member.core.sandbox.trust.ib1.org/m/71212388",
		capAccount: "dbd16978-a0a642d9aa2d95318b50e605",
		granted:    mustTime(t, "2025-09-02T14:03:05Z"), expires: mustTime(t, "2026-09-02T14:03:05Z"),
		gridOrigin: "https://api.carbonintensity.org.uk/", gridLicense: "https://creativecommons.org/licenses/by/4.0/", postcode: "CF99",
		edpService: "https://api.smartmeterreading.example.com/meter-readings/0", edpMember: "https://member.core.sandbox.trust.ib1.org/m/2876152",
		bankService: "https://api.emissions4u.example.com/emission-report/23",
		from:        mustTime(t, "2025-09-01T00:00:00Z"), to: mustTime(t, "2025-10-01T00:00:00Z"),
	}
	rec = &stepRecorder{}
	if err := addCAPSteps(rec, vectorScheme, capReq, "s0cGz5Am7x1WyBFYOsHP"); err != nil {
		t.Fatal(err)
	}
	want = vectorSteps(t, "cap.decoded.json", 3)
	if len(rec.steps) != len(want) {
		t.Fatalf("%d CAP steps, want %d", len(rec.steps), len(want))
	}
	for i := range want {
		sameStep(t, i, rec.steps[i], want[i])
	}
	// The permission's times are written as records write times, not in the original's
	// broken isoformat cut (2025-09-19T10:00:00 became 2025-09-19T1Z).
	naive := *capReq
	naive.granted, naive.expires = mustTime(t, "2025-09-19T10:00:00Z"), mustTime(t, "2026-09-19T09:00:00-01:00")
	rec = &stepRecorder{}
	addCAPSteps(rec, vectorScheme, &naive, "x")
	perm := rec.steps[1]
	ts, _ := perm.GetString("timestamp")
	exp, _ := perm.GetString("expires")
	if ts != "2025-09-19T10:00:00Z" || exp != "2026-09-19T10:00:00Z" || !recordTime.MatchString(ts) || !recordTime.MatchString(exp) {
		t.Errorf("CAP permission timestamp %q, expires %q", ts, exp)
	}

	// What the CAP looks for in the EDP's record (decoded, with _signature) is found there,
	// once; another EDP member or CAP finds nothing.
	data, err := os.ReadFile(filepath.Join("..", "..", "provenance", "testdata", "vectors", "records", "edp.decoded.json"))
	if err != nil {
		t.Fatal(err)
	}
	v, _ := provenance.ParseJSON(data, provenance.Limits{})
	var decoded []*provenance.Object
	for _, s := range v.([]any) {
		decoded = append(decoded, s.(*provenance.Object))
	}
	found, err := provenance.Find(decoded, edpTransferQuery(vectorScheme, capReq))
	if id, _ := found.GetString("id"); err != nil || id != "s0cGz5Am7x1WyBFYOsHP" {
		t.Errorf("the EDP's transfer is not found: %v %v", id, err)
	}
	other := *capReq
	other.edpMember = "https://member.core.sandbox.trust.ib1.org/m/1"
	if _, err := provenance.Find(decoded, edpTransferQuery(vectorScheme, &other)); err == nil {
		t.Error("a transfer signed by another member is found")
	}
}
