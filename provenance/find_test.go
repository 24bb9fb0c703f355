package provenance

import (
	"errors"
	"strings"
	"testing"
)

func verifiedVector(t *testing.T, file string) []*Object {
	t.Helper()
	m := loadManifest(t)
	_, steps, err := newTestVerifier(t, m.Root, m.Framework).VerifyJSON(readVector(t, file))
	if err != nil {
		t.Fatal(err)
	}
	return steps
}

func ids(steps []*Object) []string {
	var out []string
	for _, s := range steps {
		id, _ := s.GetString("id")
		out = append(out, id)
	}
	return out
}

// TestFindCAPFlow is the CAP service's lookup (seed-service.md): the EDP's transfer to the
// CAP, signed by the expected member in the expected role.
func TestFindCAPFlow(t *testing.T) {
	steps := verifiedVector(t, "records/cap.json")
	required, err := ParseStep([]byte(`{
		"type": "transfer",
		"scheme": "https://registry.core.sandbox.trust.ib1.org/scheme/perseus",
		"to": "https://member.core.sandbox.trust.ib1.org/m/81524",
		"standard": "https://registry.core.sandbox.trust.ib1.org/scheme/perseus/standard/energy-consumption-data/2024-12-05",
		"licence": "https://registry.core.sandbox.trust.ib1.org/scheme/perseus/licence/energy-consumption-data/2024-12-05",
		"service": "https://api.smartmeterreading.example.com/meter-readings/0",
		"path": "/readings",
		"parameters": {"measure": "import", "from": "2025-09-01T00:00Z", "to": "2025-10-01T00:00Z"},
		"_signature": {"signed": {"member": "https://member.core.sandbox.trust.ib1.org/m/2876152",
			"roles": ["https://registry.core.sandbox.trust.ib1.org/scheme/perseus/role/energy-data-provider"]}}
	}`))
	if err != nil {
		t.Fatal(err)
	}
	step, err := Find(steps, required)
	if err != nil {
		t.Fatal(err)
	}
	if id, _ := step.GetString("id"); id != "s0cGz5Am7x1WyBFYOsHP" {
		t.Fatalf("found %s", id)
	}
	// Signed by the right member but in another role: not found.
	wrongRole := mustParseJSON(t, []byte(`{"type":"transfer","_signature":{"signed":{"member":"https://member.core.sandbox.trust.ib1.org/m/2876152","roles":["https://registry.core.sandbox.trust.ib1.org/scheme/perseus/role/carbon-accounting-provider"]}}}`))
	if _, err := Find(steps, wrongRole); !errors.Is(err, ErrNoStep) {
		t.Fatalf("wrong role: %v", err)
	}
	// A parameter differs: not found.
	wrongParam := mustParseJSON(t, []byte(`{"type":"transfer","parameters":{"measure":"export"}}`))
	if _, err := Find(steps, wrongParam); !errors.Is(err, ErrNoStep) {
		t.Fatalf("wrong parameter: %v", err)
	}
	// Two transfers: Find refuses to choose.
	if _, err := Find(steps, NewObject(Member{"type", "transfer"})); !errors.Is(err, ErrManySteps) || !strings.Contains(err.Error(), "2 steps") {
		t.Fatalf("ambiguous: %v", err)
	}
	if got := Filter(steps, map[string]any{"type": "transfer"}); len(got) != 2 {
		t.Fatalf("Filter found %d transfers", len(got))
	}
}

func TestContainment(t *testing.T) {
	steps := verifiedVector(t, "records/cap.json")
	tests := []struct {
		name     string
		required string
		want     []string
	}{
		{"everything contains the empty object", `{}`, ids(steps)},
		{"list: one required item", `{"permissions":["NbCoj-i0dmdytWfttAMF"]}`, []string{"ogG0y30H5SOVufb6PQqB", "s0cGz5Am7x1WyBFYOsHP"}},
		{"list: items in another order", `{"inputs":["J6urUtvOwjky0ba08L6u","R4D9_gcrmgDEteNdNW0R"]}`, []string{"zTD8b9X6F3vNxNSoSOEr"}},
		{"list: an item not there", `{"inputs":["J6urUtvOwjky0ba08L6u","nope"]}`, nil},
		{"list: the empty list is in every list", `{"inputs":[]}`, []string{"zTD8b9X6F3vNxNSoSOEr"}},
		{"a list does not contain a string", `{"permissions":"NbCoj-i0dmdytWfttAMF"}`, nil},
		{"nested object, partial", `{"perseus:scheme":{"meteringPeriod":{"from":"2025-09-01T00:00Z"}}}`, []string{"ogG0y30H5SOVufb6PQqB", "J6urUtvOwjky0ba08L6u"}},
		{"nested object, a key only one has", `{"perseus:scheme":{"postcode":"CF99","meteringPeriod":{"to":"2025-10-01T00:00Z"}}}`, []string{"J6urUtvOwjky0ba08L6u"}},
		{"nested object, one value differs", `{"perseus:scheme":{"meteringPeriod":{"from":"2025-09-02T00:00Z"}}}`, nil},
		{"list of objects inside _signature", `{"_signature":{"includedBy":[{"name":"Carbon Accounting Provider"}]}}`, []string{"NbCoj-i0dmdytWfttAMF", "ogG0y30H5SOVufb6PQqB", "s0cGz5Am7x1WyBFYOsHP"}},
		{"signer by role", `{"type":"origin","_signature":{"signed":{"roles":["https://registry.core.sandbox.trust.ib1.org/scheme/perseus/role/carbon-accounting-provider"]}}}`, []string{"J6urUtvOwjky0ba08L6u"}},
		{"boolean only equals boolean", `{"external":1}`, nil},
		{"boolean", `{"type":"origin","external":true}`, []string{"ogG0y30H5SOVufb6PQqB", "J6urUtvOwjky0ba08L6u"}},
		{"missing key", `{"nope":null}`, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := ids(Filter(steps, mustParseJSON(t, []byte(tc.required))))
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestContainsValues(t *testing.T) {
	steps := verifiedVector(t, "records/fifty-steps.json")
	for _, req := range []any{
		NewObject(Member{"sequence", jsonNumber("7")}),
		NewObject(Member{"sequence", 7}),
		NewObject(Member{"sequence", 7.0}),
		NewObject(Member{"sequence", jsonNumber("7.0")}),
		NewObject(Member{"sequence", jsonNumber("0.7e1")}),
		map[string]any{"sequence": int64(7)},
	} {
		if got := Filter(steps, req); len(got) != 1 {
			t.Fatalf("%v: %d steps", req, len(got))
		}
	}
	for _, req := range []any{
		NewObject(Member{"sequence", "7"}),
		NewObject(Member{"sequence", jsonNumber("7.000000000000000000001")}),
		NewObject(Member{"sequence", true}),
	} {
		if got := Filter(steps, req); len(got) != 0 {
			t.Fatalf("%v: %d steps", req, len(got))
		}
	}
	// Numbers beyond float64 precision compare exactly.
	if Contains(jsonNumber("9007199254740993"), jsonNumber("9007199254740992")) || !Contains(jsonNumber("9007199254740993"), jsonNumber("9007199254740993.0")) {
		t.Fatal("big numbers compared inexactly")
	}
	if !Contains(nil, nil) || Contains("x", nil) || Contains(nil, "x") {
		t.Fatal("null")
	}
	if Contains(jsonNumber("1e999999999"), jsonNumber("1e999999998")) {
		t.Fatal("huge exponents")
	}
}

// find/filter equality differs from the reference's on purpose. The reference compares
// Python values: True == 1, and numbers with a fraction or exponent after rounding to a
// float64. Here values compare as the JSON text says: booleans only equal booleans, and
// numbers by their exact decimal value (1.0 == 1 still). A check written for a flag is not
// passed by a number, and two different numbers never match because a float cannot tell
// them apart. The cases where the two disagree, each way:
func TestFindEqualityIsJSONNotPython(t *testing.T) {
	step := func(v any) *Object { return NewObject(Member{"type", "t"}, Member{"v", v}) }
	for _, tc := range []struct {
		have, want any
		python     bool // what the reference's == says
		here       bool
	}{
		{jsonNumber("1"), true, true, false},                                            // 1 == True in Python
		{true, jsonNumber("1"), true, false},                                            //
		{jsonNumber("0"), false, true, false},                                           // 0 == False
		{jsonNumber("1.0"), jsonNumber("1"), true, true},                                // agree
		{jsonNumber("1e0"), jsonNumber("1"), true, true},                                // agree
		{jsonNumber("0.10000000000000001"), jsonNumber("0.1"), true, false},             // one float64 in Python
		{jsonNumber("9007199254740993"), jsonNumber("9007199254740993.0"), false, true}, // int vs rounded float in Python
		{jsonNumber("100000000000000000000"), jsonNumber("1e20"), true, true},           // agree (1e20 is exact in float64)
	} {
		got := len(Filter([]*Object{step(tc.have)}, NewObject(Member{"v", tc.want}))) == 1
		if got != tc.here {
			t.Errorf("step %v, required %v: match %v, want %v (Python: %v)", tc.have, tc.want, got, tc.here, tc.python)
		}
	}
}
