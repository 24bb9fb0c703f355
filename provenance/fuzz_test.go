package provenance

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var knownChecks = map[string]bool{
	CheckTrustFramework: true, CheckContainerVersion: true, CheckSerialFormat: true,
	CheckCertificateLookup: true, CheckCertificatePath: true, CheckSignature: true,
	CheckSigningTime: true, CheckStepDecoding: true, CheckContainerShape: true, CheckOrigins: true,
}

// FuzzVerify feeds arbitrary bytes to parse+verify+decode, seeded with every vector file.
// Whatever the input: no panic, bounded work, and either a *VerifyError naming a known
// check or a record whose re-encoding verifies to the same steps.
func FuzzVerify(f *testing.F) {
	files, err := filepath.Glob(filepath.Join(vectorsDir, "*", "*.json"))
	if err != nil || len(files) < 20 {
		f.Fatalf("vector files: %v (%d)", err, len(files))
	}
	files = append(files, filepath.Join(vectorsDir, "manifest.json"))
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	m := loadManifest(f)
	roots := append(loadRoots(f, m.Root), loadRoots(f, "pki/untrusted/root-ca-cert.pem")...)
	v, err := NewVerifier(roots, m.Framework)
	if err != nil {
		f.Fatal(err)
	}
	originStep := NewObject(Member{"type", "origin"})
	f.Fuzz(func(t *testing.T, data []byte) {
		rec, steps, err := v.VerifyJSON(data)
		if err != nil {
			var ve *VerifyError
			if !errors.As(err, &ve) || !knownChecks[ve.Check] || !strings.HasPrefix(err.Error(), ve.Check+": ") {
				t.Fatalf("error without a known check: %v", err)
			}
			if rec != nil || steps != nil {
				t.Fatal("results returned with an error")
			}
			return
		}
		if len(Filter(steps, originStep)) != len(rec.Origins) {
			t.Fatal("origins do not match the origin steps")
		}
		again, err := rec.Marshal()
		if err != nil {
			t.Fatalf("verified record does not encode: %v", err)
		}
		_, steps2, err := v.VerifyJSON(again)
		if err != nil {
			t.Fatalf("re-encoded record fails: %v", err)
		}
		if d := sameOrdered(stepsAsList(steps), stepsAsList(steps2), "$"); d != "" {
			t.Fatalf("re-encoded record decodes differently: %s", d)
		}
		_ = DOT(steps)
	})
}

// FuzzParseJSON checks the JSON reader and writer: what is accepted is valid JSON (by
// encoding/json), and writing it out and reading it back gives the same ordered value.
func FuzzParseJSON(f *testing.F) {
	for _, line := range strings.Split(string(readVector(f, "records/unicode.step-json.txt")), "\n") {
		f.Add([]byte(line))
	}
	for _, s := range []string{`{"a":1,"a":2}`, `"\ud800"`, `[1e400,-0.0,1E-7]`, "\"\u2028\"", `{"":{"":[]}}`, `{"k":"\u00e9\ud83d\udd0b"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := ParseJSON(data, Limits{MaxDepth: 16, MaxStringBytes: 4096})
		if err != nil {
			return
		}
		if !json.Valid(data) {
			t.Fatalf("accepted invalid JSON %q", data)
		}
		out, err := AppendJSON(nil, v)
		if err != nil {
			t.Fatalf("cannot write back %q: %v", data, err)
		}
		for _, c := range out {
			if c < 0x20 || c > 0x7e {
				t.Fatalf("non-ASCII output %q", out)
			}
		}
		back, err := ParseJSON(out, Limits{MaxDepth: 16, MaxStringBytes: 1 << 20})
		if err != nil {
			t.Fatalf("cannot read back %q: %v", out, err)
		}
		if d := sameOrdered(v, back, "$"); d != "" {
			t.Fatalf("round trip of %q differs: %s", data, d)
		}
		// Writing is deterministic and idempotent.
		out2, _ := AppendJSON(nil, back)
		if string(out2) != string(out) {
			t.Fatalf("second write differs: %q vs %q", out, out2)
		}
	})
}
