package provenance

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestDOTCap(t *testing.T) {
	steps := verifiedVector(t, "records/cap.json")
	dot := string(DOT(steps))
	if !strings.HasPrefix(dot, "digraph provenance {\n") || !strings.HasSuffix(dot, "}\n") {
		t.Fatalf("not a digraph:\n%s", dot)
	}
	// Steps in record order: s0 permission, s1 origin, s2 transfer (EDP); s3 receipt,
	// s4 permission, s5 origin, s6 process, s7 transfer (CAP).
	for _, want := range []string{
		`s0 [shape=invhouse, label="permission\nNbCoj-i0dmdytWfttAMF"];`,
		`s1 [shape=diamond, label="origin\nogG0y30H5SOVufb6PQqB"];`,
		`s2 [shape=box, label="transfer\ns0cGz5Am7x1WyBFYOsHP"];`,
		`s3 [shape=box3d, label="receipt\nR4D9_gcrmgDEteNdNW0R"];`,
		`s6 [shape=parallelogram, label="process\nzTD8b9X6F3vNxNSoSOEr"];`,
		`s1 -> s0 [label="permissions"];`,
		`s2 -> s1 [label="of"];`,
		`s2 -> s0 [label="permissions"];`,
		`s3 -> s2 [label="transfer"];`,
		`s6 -> s3 [label="inputs"];`,
		`s6 -> s5 [label="inputs"];`,
		`s6 -> s4 [label="permissions"];`,
		`s7 -> s6 [label="of"];`,
		`s7 -> s4 [label="permissions"];`,
		// Transfers between members: the EDP's to the CAP, whose cluster is cluster_1; the
		// CAP's to the bank, which signed nothing in this record.
		`s2 -> s3 [label="to", style=dashed, constraint=false, lhead=cluster_1];`,
		`m0 [shape=ellipse, style=dashed, label="https://member.core.sandbox.trust.ib1.org/m/71212388"];`,
		`s7 -> m0 [label="to", style=dashed];`,
		`subgraph cluster_0 {` + "\n" + `    label="Smart Meter Reading Co";`,
		`subgraph cluster_1 {` + "\n" + `    label="Carbon Accounting Provider";`,
	} {
		if !strings.Contains(dot, want) {
			t.Errorf("missing %q in\n%s", want, dot)
		}
	}
	if n := strings.Count(dot, " -> "); n != 11 {
		t.Errorf("%d edges, want 11", n)
	}
	// The EDP's three steps are in its cluster, before the CAP's cluster starts.
	edp := dot[strings.Index(dot, "cluster_0"):strings.Index(dot, "cluster_1")]
	for _, s := range []string{"s0 [", "s1 [", "s2 ["} {
		if !strings.Contains(edp, s) {
			t.Errorf("%s not in the EDP cluster", s)
		}
	}
	renderDOT(t, dot)
}

func TestDOTEscaping(t *testing.T) {
	sig := NewObject(Member{"signed", NewObject(Member{"name", "Evil \"Co\"\\\n\x01{}"})}, Member{"includedBy", []any{}})
	steps := []*Object{
		NewObject(Member{"id", `a"b\c`}, Member{"type", "x\"];\ninjected -> y [label=\"z"}, Member{"_signature", sig}),
		NewObject(Member{"id", "2"}, Member{"type", "transfer"}, Member{"of", `a"b\c`}),
	}
	dot := string(DOT(steps))
	for _, want := range []string{
		`label="Evil \"Co\"\\\n {}";`,
		`s0 [shape=box, label="x\"];\ninjected -> y [label=\"z\na\"b\\c"];`,
		`s1 -> s0 [label="of"];`,
	} {
		if !strings.Contains(dot, want) {
			t.Errorf("missing %q in\n%s", want, dot)
		}
	}
	// No raw newline or quote escapes its string: every line is a statement or brace.
	for _, line := range strings.Split(strings.TrimSpace(dot), "\n") {
		l := strings.TrimSpace(line)
		if !(strings.HasSuffix(l, ";") || strings.HasSuffix(l, "{") || l == "}") {
			t.Errorf("line %q", line)
		}
	}
	renderDOT(t, dot)
}

// renderDOT runs Graphviz on the output when it is installed (it is not required).
func renderDOT(t *testing.T, dot string) {
	path, err := exec.LookPath("dot")
	if err != nil {
		t.Log("graphviz not installed; DOT syntax not checked by dot")
		return
	}
	f := filepath.Join(t.TempDir(), "g.dot")
	if err := os.WriteFile(f, []byte(dot), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(path, "-Tsvg", "-o", os.DevNull, f).CombinedOutput(); err != nil {
		t.Fatalf("dot rejects the output: %v %s", err, out)
	}
}
