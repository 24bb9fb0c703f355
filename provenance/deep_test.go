package provenance

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"path/filepath"
	"strings"
	"testing"
)

// resign signs container c again (its elements as they now are) with key, as serial.
func resign(t testing.TB, framework string, c *Container, key crypto.Signer, serial string) {
	t.Helper()
	c.Serial = serial
	digest := sha256.Sum256([]byte(DataForSigning(framework, c)))
	sig, err := key.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	c.Signature = base64.URLEncoding.EncodeToString(sig)
}

// editStep changes one member of an encoded step and encodes it again.
func editStep(t testing.TB, step, key string, value any) string {
	t.Helper()
	raw, err := decodeBase64URL(step)
	if err != nil {
		t.Fatal(err)
	}
	o := mustParseJSON(t, raw).(*Object)
	o.Set(key, value)
	text, err := AppendJSON(nil, o)
	if err != nil {
		t.Fatal(err)
	}
	return base64.URLEncoding.EncodeToString(text)
}

// TestForgedContainersDeepInside: a bank record (three levels: bank, CAP, EDP) whose EDP
// container was forged — its transfer redirected, signed with a look-alike EDP key under
// another root — and whose CAP and bank containers were then signed again by their real
// keys over the forgery. The outer signatures are good; only a verifier that checks every
// container, however deep, refuses it. At depth 3 (the bank record itself) and depth 4 (the
// bank record received by a fourth signer), ib1check.py refuses each as this verifier does,
// and accepts the same constructions without the forgery.
func TestForgedContainersDeepInside(t *testing.T) {
	m := loadManifest(t)
	v := newTestVerifier(t, m.Root, m.Framework)
	root := filepath.Join(vectorsDir, m.Root)
	capKey, _ := loadSigner(t, "pki", "98765")
	bankKey, _ := loadSigner(t, "pki", "88889999")
	fakeKey, fakeChain := loadSigner(t, "pki/untrusted", "123456")

	// build returns the bank record, its EDP container forged or not, with certs: the
	// record's own certificates, or the look-alike's chain filed under 123456; and with
	// depth4, received by a fourth signer (the CAP again, whose certificate is untouched).
	build := func(forge, lookalikeCerts, depth4 bool) []byte {
		rec, err := ParseRecord(readVector(t, "records/bank.json"), Limits{})
		if err != nil {
			t.Fatal(err)
		}
		bank := rec.Steps
		capC := bank.Elements[0].Container
		edp := capC.Elements[0].Container
		if forge {
			last := len(edp.Elements) - 1 // the EDP's transfer to the CAP
			edp.Elements[last].Step = editStep(t, edp.Elements[last].Step, "to", "https://member.example/attacker")
			resign(t, m.Framework, edp, fakeKey, "123456")
			resign(t, m.Framework, capC, capKey, "98765")
			resign(t, m.Framework, bank, bankKey, "88889999")
		}
		if lookalikeCerts {
			entries := chainEntries(fakeChain)
			for i := range rec.Certificates {
				if rec.Certificates[i].Serial == "123456" {
					rec.Certificates[i] = entries[0]
				}
			}
			rec.Certificates = append(rec.Certificates, entries[1:]...)
		}
		if depth4 {
			receipt := base64.URLEncoding.EncodeToString([]byte(`{"id":"deep4receipt00000000","timestamp":"2026-11-27T16:00:00Z","type":"receipt","transfer":"x"}`))
			outer := &Container{Version: "0", Timestamp: FormatTimestamp(signTime), Elements: []Element{{Container: bank}, {Step: receipt}}}
			resign(t, m.Framework, outer, capKey, "98765")
			rec.Steps = outer
		}
		data, err := rec.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	for _, tc := range []struct {
		name                          string
		forge, lookalikeCerts, depth4 bool
		check, where, ib1checkSays    string // check "" for valid
	}{
		{"depth 3, control", false, false, false, "", "", ""},
		{"depth 4, control", false, false, true, "", "", ""},
		{"depth 3, forged EDP", true, false, false, CheckSignature, "steps[0][0][3]", "signature by 123456 does not verify"},
		{"depth 4, forged EDP", true, false, true, CheckSignature, "steps[0][0][0][3]", "signature by 123456 does not verify"},
		{"depth 3, forged EDP with the look-alike's certificates", true, true, false, CheckCertificatePath, "steps[0][0][3]", "no valid certificate path"},
		{"depth 4, forged EDP with the look-alike's certificates", true, true, true, CheckCertificatePath, "steps[0][0][0][3]", "no valid certificate path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := build(tc.forge, tc.lookalikeCerts, tc.depth4)
			_, steps, err := v.VerifyJSON(data)
			ok, stderr := ib1checkVerdict(t, data, root, m.Framework)
			if tc.check == "" {
				if err != nil {
					t.Fatalf("control rejected: %v", err)
				}
				if !ok {
					t.Fatalf("ib1check.py rejects the control: %s", stderr)
				}
				want := 9 // bank.json's steps
				if tc.depth4 {
					want++ // and the fourth signer's receipt
				}
				if len(steps) != want {
					t.Fatalf("%d steps", len(steps))
				}
				return
			}
			expectCheck(t, err, tc.check)
			if ve := err.(*VerifyError); ve.Where != tc.where {
				t.Errorf("failed at %s, want %s (the forged EDP container's signature block)", ve.Where, tc.where)
			}
			if ok {
				t.Fatal("ib1check.py accepts the forged record")
			}
			if !strings.Contains(stderr, tc.ib1checkSays) {
				t.Errorf("ib1check.py refuses it for another reason: %s", stderr)
			}
		})
	}
}
