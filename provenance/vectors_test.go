package provenance

import (
	"bytes"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
	"time"
)

func pemDecode(data []byte) (*pem.Block, []byte) { return pem.Decode(data) }

// TestVectors runs every vector of the shared manifest: valid records verify and decode to
// exactly the saved decoded form; invalid ones fail the check the manifest names; the
// "also" rows verify under their other root and framework.
func TestVectors(t *testing.T) {
	m := loadManifest(t)
	valid, invalid, also := 0, 0, 0
	for _, vec := range m.Vectors {
		t.Run(vec.File, func(t *testing.T) {
			root := vec.Root
			if root == "" {
				root = m.Root
			}
			framework := vec.Framework
			if framework == "" {
				framework = m.Framework
			}
			v := newTestVerifier(t, root, framework)
			data := readVector(t, vec.File)
			rec, steps, err := v.VerifyJSON(data)
			switch vec.Expected {
			case "valid":
				valid++
				if err != nil {
					t.Fatalf("valid vector rejected: %v", err)
				}
				if vec.Decoded == "" {
					t.Fatal("valid vector without a decoded file")
				}
				want := mustParseJSON(t, readVector(t, vec.Decoded))
				got := stepsAsList(steps)
				if !JSONEqual(got, want) {
					t.Fatalf("decoded steps differ from %s (as JSON values): %s", vec.Decoded, sameOrdered(got, want, "$"))
				}
				// Stronger than the value comparison: member order and number text are kept.
				if d := sameOrdered(got, want, "$"); d != "" {
					t.Fatalf("decoded steps differ from %s in order or text: %s", vec.Decoded, d)
				}
				// Re-encoding the parsed record gives back a record that verifies the same.
				again, err := rec.Marshal()
				if err != nil {
					t.Fatal(err)
				}
				if _, steps2, err := v.VerifyJSON(again); err != nil || !JSONEqual(stepsAsList(steps2), want) {
					t.Fatalf("re-encoded record: %v", err)
				}
			case "invalid":
				invalid++
				if err == nil {
					t.Fatalf("invalid vector accepted (expected %s failure)", vec.Check)
				}
				var ve *VerifyError
				if !errors.As(err, &ve) {
					t.Fatalf("error is not a *VerifyError: %v", err)
				}
				if ve.Check != vec.Check {
					t.Fatalf("failed check %q, manifest says %q: %v", ve.Check, vec.Check, err)
				}
				if !strings.HasPrefix(err.Error(), vec.Check+": ") {
					t.Fatalf("error text does not start with the check name: %v", err)
				}
			default:
				t.Fatalf("unknown expectation %q", vec.Expected)
			}
			for _, a := range vec.Also {
				also++
				fw := a.Framework
				if fw == "" {
					fw = m.Framework
				}
				v2 := newTestVerifier(t, a.Root, fw)
				_, _, err := v2.VerifyJSON(data)
				if (err == nil) != (a.Expected == "valid") {
					t.Fatalf("with root %s and framework %s: expected %s, got %v", a.Root, fw, a.Expected, err)
				}
			}
		})
	}
	if valid < 6 || invalid < 16 || also < 2 {
		t.Fatalf("manifest coverage too small: %d valid, %d invalid, %d also", valid, invalid, also)
	}
}

func TestDataForSigning(t *testing.T) {
	m := loadManifest(t)
	for _, name := range []string{"edp", "cap"} {
		rec, err := ParseRecord(readVector(t, "records/"+name+".json"), Limits{})
		if err != nil {
			t.Fatal(err)
		}
		want := string(readVector(t, "records/"+name+".data-for-signing.txt"))
		got := DataForSigning(m.Framework, rec.Steps)
		if got != want {
			t.Fatalf("%s: data for signing differs:\n got %q\nwant %q", name, got[:min(len(got), 200)], want[:min(len(want), 200)])
		}
	}
}

// TestDataForSigningWorkedExample is the format document's worked example.
func TestDataForSigningWorkedExample(t *testing.T) {
	inner := &Container{Elements: []Element{{Step: "n1"}, {Step: "n2"}}, Version: "0", Serial: "99", Timestamp: "T1", Signature: "S1"}
	outer := &Container{Elements: []Element{{Container: inner}, {Step: "s1"}, {Step: "s2"}}, Version: "0", Serial: "123", Timestamp: "T2", Signature: "X"}
	if got, want := DataForSigning("TF", outer), "TF.%.n1.n2.%.0.99.T1.S1.&.&.s1.s2.0.123.T2"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// TestUnicodeStepJSON decodes the steps of unicode.json and re-encodes them: the text must
// be exactly what the reference wrote (records/unicode.step-json.txt, line for line).
func TestUnicodeStepJSON(t *testing.T) {
	m := loadManifest(t)
	lines := strings.Split(strings.TrimRight(string(readVector(t, "records/unicode.step-json.txt")), "\n"), "\n")
	rec, err := ParseRecord(readVector(t, "records/unicode.json"), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	var encoded []string
	for _, e := range rec.Steps.Elements {
		if e.Container == nil {
			encoded = append(encoded, e.Step)
		}
	}
	if len(encoded) != len(lines) || len(lines) < 2 {
		t.Fatalf("%d steps, %d lines", len(encoded), len(lines))
	}
	v := newTestVerifier(t, m.Root, m.Framework)
	for i, s := range encoded {
		raw, err := decodeBase64URL(s)
		if err != nil {
			t.Fatal(err)
		}
		if string(raw) != lines[i] {
			t.Fatalf("step %d: the vector's own step text differs from its line", i)
		}
		step, verr := v.decodeStep(s)
		if verr != nil {
			t.Fatal(verr)
		}
		out, err := AppendJSON(nil, step)
		if err != nil {
			t.Fatal(err)
		}
		if string(out) != lines[i] {
			t.Fatalf("step %d re-encoded differs:\n got %s\nwant %s", i, out, lines[i])
		}
	}
}

// TestEncodeOrderedStep builds a step from an ordered list of members (no JSON parsing
// involved) and checks the exact text, escapes included.
func TestEncodeOrderedStep(t *testing.T) {
	step := NewObject(
		Member{"id", "jqIuR-Jy4roe1UUQvWqY"},
		Member{"type", "origin"},
		Member{"city", "Zürich"},
		Member{"東京", "key"},
		Member{"emoji", "🔋⚡ 👩\u200d🔬"},
		Member{"html", `<script>alert("x & y")</script> 'q' a/b`},
		Member{"control", "line1\nline2\r\ttab\x01\x1f end \x7f\b\f"},
		Member{"separators", "LS\u2028PS\u2029 NBSP\u00a0 BOM\ufeff"},
		Member{"numbers", []any{0, -7, int64(42), jsonNumber("3.25"), jsonNumber("9007199254740993"), jsonNumber("1E300")}},
		Member{"nested", NewObject(Member{"z", nil}, Member{"a", []string{"x"}}, Member{"m", true})},
		Member{"empty", NewObject(Member{"object", NewObject()}, Member{"array", []any{}}, Member{"string", ""})},
	)
	got, err := AppendJSON(nil, step)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"id":"jqIuR-Jy4roe1UUQvWqY","type":"origin","city":"Z\u00fcrich","\u6771\u4eac":"key",` +
		`"emoji":"\ud83d\udd0b\u26a1 \ud83d\udc69\u200d\ud83d\udd2c","html":"<script>alert(\"x & y\")</script> 'q' a/b",` +
		`"control":"line1\nline2\r\ttab\u0001\u001f end \u007f\b\f","separators":"LS\u2028PS\u2029 NBSP\u00a0 BOM\ufeff",` +
		`"numbers":[0,-7,42,3.25,9007199254740993,1E300],"nested":{"z":null,"a":["x"],"m":true},` +
		`"empty":{"object":{},"array":[],"string":""}}`
	if string(got) != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	// And it parses back to the same ordered value.
	back := mustParseJSON(t, got)
	if d := sameOrdered(back, mustParseJSON(t, []byte(want)), "$"); d != "" {
		t.Fatal(d)
	}
}

// TestBuilderMatchesReferenceStep writes the unicode vector's first step from Go values
// (no JSON parsing), through the Builder with the same id bytes and time: the encoded step
// must be the reference's, byte for byte.
func TestBuilderMatchesReferenceStep(t *testing.T) {
	rec, err := ParseRecord(readVector(t, "records/unicode.json"), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	idBytes, err := base64.RawURLEncoding.DecodeString("jqIuR-Jy4roe1UUQvWqY")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 27, 15, 33, 4, 0, time.UTC)
	b := NewBuilder("TF", now, bytes.NewReader(idBytes))
	id, err := b.AddStep(NewStep("origin",
		Member{"scheme", "https://registry.core.sandbox.trust.ib1.org/scheme/perseus"},
		Member{"sourceType", "https://registry.core.sandbox.trust.ib1.org/scheme/perseus/source-type/Meter"},
		Member{"origin", "https://example.com/Zürich/messdaten?q=a&b=<c>"},
		Member{"external", true},
		Member{"location", NewObject(
			Member{"city", "Zürich"},
			Member{"city_ja", "東京"},
			Member{"label", "Straße — “quoted” ‘single’ «guillemets» …"},
		)},
		Member{"emoji", "🔋⚡🌍 👩\u200d🔬"},
		Member{"html", `<script>alert("x & y")</script> &amp; &lt;tag&gt;`},
		Member{"quotes", "double \" single ' backtick `"},
		Member{"backslash", `C:\meter\readings\2025 and a trailing backslash \`},
		Member{"slash", "a/b//c and </"},
		Member{"control", "line1\nline2\r\ttab\x01\x1f end \x7f"},
		Member{"separators", "LS\u2028PS\u2029 NBSP\u00a0 ZWSP\u200b BOM\ufeff"},
		Member{"東京", "key that is not ASCII"},
		Member{"numbers", []any{0, -7, 42, jsonNumber("3.25"), jsonNumber("0.001"), int64(12345678901)}},
		Member{"nothing", nil},
		Member{"flags", []any{true, false}},
		Member{"empty", NewObject(Member{"object", NewObject()}, Member{"array", []any{}}, Member{"string", ""})},
	))
	if err != nil {
		t.Fatal(err)
	}
	if id != "jqIuR-Jy4roe1UUQvWqY" {
		t.Fatalf("id %q", id)
	}
	if got, want := b.steps[0], rec.Steps.Elements[0].Step; got != want {
		g, _ := decodeBase64URL(got)
		w, _ := decodeBase64URL(want)
		t.Fatalf("encoded step differs from the reference's:\n got %s\nwant %s", g, w)
	}
}
