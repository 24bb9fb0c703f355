package provenance

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"path/filepath"
	"strings"
	"testing"
)

// Numbers the reference (Python's json module) cannot read as written: integers of more
// than 4,300 digits (CPython's int_max_str_digits) make json.loads raise, and numbers with
// a fraction or exponent beyond float64 become infinity. They are refused when signing and
// when verifying; the boundaries just inside are accepted.
func TestNumbersThePythonReferenceCannotRead(t *testing.T) {
	digits := func(n int) string { return "1" + strings.Repeat("0", n-1) }
	for _, tc := range []struct {
		text string
		ok   bool
	}{
		{digits(4300), true},
		{"-" + digits(4300), true},
		{digits(4301), false},
		{"-" + digits(4301), false},
		{"1e308", true},
		{"1.7976931348623157e308", true},  // math.MaxFloat64
		{"1.7976931348623158e308", true},  // rounds down to MaxFloat64, as in Python
		{"1.7976931348623159e308", false}, // rounds to +Inf
		{"1e309", false},
		{"-1e400", false},
		{"1e999999", false},
		{"1e-999999", true}, // underflows to 0.0 in Python too: readable
		{digits(308) + ".5", true},
		{digits(310) + ".5", false},
		// 309 integer digits and a fraction, no exponent: 2e308 is above MaxFloat64 and is
		// refused as 1e309 is; 1e308 is below it and is read.
		{"2" + strings.Repeat("0", 308) + ".5", false},
		{"-2" + strings.Repeat("0", 308) + ".5", false},
		{digits(309) + ".5", true},
		{"179769313486231570" + strings.Repeat("0", 291) + ".0", true},  // MaxFloat64, spelt out
		{"179769313486231590" + strings.Repeat("0", 291) + ".0", false}, // rounds to +Inf
		// The same without the fraction is an integer: Python reads it exactly, as an int
		// (json.loads("2" + "0"*308) is not infinity), and signs and verifies it.
		{"2" + strings.Repeat("0", 308), true},
		{digits(5000) + "e-4800", true}, // a float, not an integer: 1e199
		{"0.10000000000000001", true},
	} {
		_, err := ParseJSON([]byte(`{"n":`+tc.text+`}`), Limits{})
		if (err == nil) != tc.ok {
			t.Errorf("ParseJSON(%.40s...): %v, want ok=%v", tc.text, err, tc.ok)
		}
		if !tc.ok && err != nil && !strings.Contains(err.Error(), "reference (Python)") {
			t.Errorf("%.40s: the error does not say why: %v", tc.text, err)
		}
		b := NewBuilder("tf", signTime, rand.Reader)
		_, err = b.AddStep(NewStep("t", Member{"n", json.Number(tc.text)}))
		if (err == nil) != tc.ok {
			t.Errorf("AddStep(%.40s...): %v, want ok=%v", tc.text, err, tc.ok)
		}
	}
	b := NewBuilder("tf", signTime, rand.Reader)
	huge, _ := new(big.Int).SetString(digits(4301), 10)
	if _, err := b.AddStep(NewStep("t", Member{"n", huge})); err == nil || !strings.Contains(err.Error(), "4301 digits") {
		t.Errorf("AddStep with a 4301-digit *big.Int: %v", err)
	}
}

// What the verifier refuses here, ib1check.py (Python's json.loads) reads as follows: the
// long integer it cannot read either (the two agree), the overflowing float it reads as
// infinity (stricter here: see the README). A 4,300-digit integer we sign, it verifies.
func TestNumbersAgainstIB1Check(t *testing.T) {
	m := loadManifest(t)
	key, chain := loadSigner(t, "pki", "123456")
	v := newTestVerifier(t, m.Root, m.Framework)
	root := filepath.Join(vectorsDir, m.Root)
	b64 := func(s string) string { return base64.URLEncoding.EncodeToString([]byte(s)) }

	long := signRaw(t, m.Framework, key, chain, nil, b64(`{"id":"a","type":"t","n":`+"9"+strings.Repeat("0", 4300)+`}`))
	_, _, err := v.VerifyJSON(long)
	expectCheck(t, err, CheckStepDecoding)
	if ok, stderr := ib1checkVerdict(t, long, root, m.Framework); ok {
		t.Error("ib1check.py reads a 4301-digit integer; the premise of this test is wrong")
	} else if !strings.Contains(stderr, "4300") {
		t.Errorf("ib1check.py refuses it for another reason: %s", stderr)
	}

	inf := signRaw(t, m.Framework, key, chain, nil, b64(`{"id":"a","type":"t","n":1e999999}`))
	_, _, err = v.VerifyJSON(inf)
	expectCheck(t, err, CheckStepDecoding)
	if ok, stderr := ib1checkVerdict(t, inf, root, m.Framework); !ok {
		t.Errorf("ib1check.py refuses 1e999999 (it should read infinity): %s", stderr)
	}

	b := NewBuilder(m.Framework, signTime, rand.Reader)
	n := json.Number("9" + strings.Repeat("0", 4299))
	if _, err := b.AddStep(NewStep("t", Member{"n", n}, Member{"f", json.Number("1.7976931348623157e308")})); err != nil {
		t.Fatal(err)
	}
	rec, err := b.Sign(context.Background(), key, chain)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := rec.Marshal()
	_, steps, err := v.VerifyJSON(data)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := steps[0].Get("n"); got != n {
		t.Fatalf("the 4300-digit integer came back as %.20v", got)
	}
	checkWithIB1Check(t, rec, m.Root, m.Framework, steps)
}

// A container version written -0 is read by the reference as the integer 0, and the text
// it signs is str(0) = "0": so 0 can be rewritten -0 in a signed record, outer or nested,
// without touching a signature, and ib1check.py (like the reference) still accepts it.
// Here it is refused: a signed record has one spelling.
func TestContainerVersionMinusZero(t *testing.T) {
	m := loadManifest(t)
	v := newTestVerifier(t, m.Root, m.Framework)
	root := filepath.Join(vectorsDir, m.Root)
	for _, tc := range []struct {
		name  string
		block []any
	}{
		{"outer", []any{"steps", -1}},
		{"nested", []any{"steps", 0, -1}},
		{"both", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := mutateVector(t, "records/cap.json", func(top *Object) {
				blocks := [][]any{tc.block}
				if tc.block == nil {
					blocks = [][]any{{"steps", -1}, {"steps", 0, -1}}
				}
				for _, path := range blocks {
					get(top, path...).([]any)[0] = json.Number("-0")
				}
			})
			if ok, stderr := ib1checkVerdict(t, data, root, m.Framework); !ok {
				t.Fatalf("ib1check.py refuses -0 (the premise is that the reference accepts it): %s", stderr)
			}
			_, _, err := v.VerifyJSON(data)
			expectCheck(t, err, CheckContainerVersion)
			if !strings.Contains(err.Error(), "only 0 is accepted") {
				t.Errorf("the error does not explain: %v", err)
			}
		})
	}
	// Other spellings of zero: the reference refuses 0.0 (a float is not the int 0); refused here too.
	data := mutateVector(t, "records/edp.json", func(top *Object) { get(top, "steps", -1).([]any)[0] = json.Number("0.0") })
	_, _, err := v.VerifyJSON(data)
	expectCheck(t, err, CheckContainerVersion)
}
