package provenance

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// mutateVector parses a vector as ordered JSON, lets f change it, and re-encodes it.
func mutateVector(t testing.TB, file string, f func(top *Object)) []byte {
	t.Helper()
	top := mustParseJSON(t, readVector(t, file)).(*Object)
	f(top)
	out, err := AppendJSON(nil, top)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func get(o any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			o, _ = o.(*Object).Get(k)
		case int:
			l := o.([]any)
			if k < 0 {
				k += len(l)
			}
			o = l[k]
		}
	}
	return o
}

func expectCheck(t *testing.T, err error, check string) {
	t.Helper()
	if err == nil {
		t.Fatalf("accepted; want a %s failure", check)
	}
	var ve *VerifyError
	if !errors.As(err, &ve) {
		t.Fatalf("not a *VerifyError: %v", err)
	}
	if ve.Check != check || !strings.HasPrefix(err.Error(), check+": ") {
		t.Fatalf("got %v; want check %s", err, check)
	}
	t.Log(err)
}

func TestHostileRecords(t *testing.T) {
	m := loadManifest(t)
	edpPEM := func(top *Object) string { return get(top, "certificates", "123456", 0).(string) }
	const intermediate = "446699352239339170372009572835554551913932267831"
	setBlock := func(i int, v any) func(top *Object) {
		return func(top *Object) { get(top, "steps", -1).([]any)[i] = v }
	}
	setTop := func(k string, v any) func(top *Object) { return func(top *Object) { top.Set(k, v) } }
	raw := func(s string) func() []byte { return func() []byte { return []byte(s) } }
	mut := func(file string, f func(*Object)) func() []byte {
		return func() []byte { return mutateVector(t, file, f) }
	}
	edp := func(f func(*Object)) func() []byte { return mut("records/edp.json", f) }
	nest := func(levels int) func() []byte {
		return edp(func(top *Object) {
			c := get(top, "steps")
			block := get(top, "steps", -1)
			for i := 0; i < levels; i++ {
				c = []any{c, block}
			}
			top.Set("steps", c)
		})
	}
	tests := []struct {
		name   string
		data   func() []byte
		limits Limits
		check  string
	}{
		// Bounds.
		{"containers nested beyond the depth limit", nest(32), Limits{}, CheckContainerShape},
		{"JSON nested 100000 deep", raw(strings.Repeat("[", 100000)), Limits{}, CheckContainerShape},
		{"JSON objects nested 100000 deep", raw(strings.Repeat(`{"a":`, 100000)), Limits{}, CheckContainerShape},
		{"too many steps", func() []byte { return readVector(t, "records/fifty-steps.json") }, Limits{MaxSteps: 49}, CheckContainerShape},
		{"oversize string", func() []byte { return readVector(t, "records/edp.json") }, Limits{MaxStringBytes: 500}, CheckContainerShape},
		{"oversize record", func() []byte { return readVector(t, "records/edp.json") }, Limits{MaxRecordBytes: 4000}, CheckContainerShape},
		{"too many certificates", edp(func(top *Object) {
			certs := get(top, "certificates").(*Object)
			for i := 0; i < 64; i++ {
				certs.Set(fmt.Sprint(1000+i), []any{"x"})
			}
		}), Limits{}, CheckCertificateLookup},
		{"issuer path too long", edp(func(top *Object) {
			e := get(top, "certificates", "123456").([]any)
			for i := 0; i < 8; i++ {
				e = append(e, fmt.Sprint(i))
			}
			get(top, "certificates").(*Object).Set("123456", e)
		}), Limits{}, CheckCertificatePath},

		// Bad JSON.
		{"empty input", raw(""), Limits{}, CheckContainerShape},
		{"truncated", func() []byte { d := readVector(t, "records/edp.json"); return d[:len(d)/2] }, Limits{}, CheckContainerShape},
		{"trailing data", func() []byte { return append(readVector(t, "records/edp.json"), " {}"...) }, Limits{}, CheckContainerShape},
		{"invalid UTF-8", raw("{\"ib1:provenance\":\"\xff\"}"), Limits{}, CheckContainerShape},
		{"NaN", raw(`{"ib1:provenance":NaN}`), Limits{}, CheckContainerShape},
		{"duplicate top-level key", func() []byte {
			d := readVector(t, "records/edp.json")
			return append([]byte(`{"steps":[],`), d[1:]...)
		}, Limits{}, CheckContainerShape},
		{"duplicate serial", func() []byte {
			d := string(readVector(t, "records/edp.json"))
			i := strings.Index(d, `"certificates": {`) + len(`"certificates": {`)
			return []byte(d[:i] + `"123456": ["x"],` + d[i:])
		}, Limits{}, CheckCertificateLookup},

		// Wrong types at every position.
		{"record is a list", raw(`[]`), Limits{}, CheckContainerShape},
		{"record is a string", raw(`"x"`), Limits{}, CheckContainerShape},
		{"record is null", raw(`null`), Limits{}, CheckContainerShape},
		{"unknown member", edp(setTop("extra", "unsigned")), Limits{}, CheckContainerShape},
		{"no trust framework", edp(func(top *Object) { top.Members = top.Members[1:] }), Limits{}, CheckTrustFramework},
		{"trust framework a number", edp(setTop("ib1:provenance", 1)), Limits{}, CheckTrustFramework},
		{"no steps", edp(func(top *Object) { top.Members = append(top.Members[:2], top.Members[3:]...) }), Limits{}, CheckContainerShape},
		{"steps an object", edp(setTop("steps", NewObject())), Limits{}, CheckContainerShape},
		{"steps a string", edp(setTop("steps", "x")), Limits{}, CheckContainerShape},
		{"empty container", edp(setTop("steps", []any{})), Limits{}, CheckContainerShape},
		{"container of only a signature block", edp(func(top *Object) { top.Set("steps", []any{get(top, "steps", -1)}) }), Limits{}, CheckContainerShape},
		{"step a number", edp(func(top *Object) { get(top, "steps").([]any)[0] = 5 }), Limits{}, CheckContainerShape},
		{"step an object", edp(func(top *Object) { get(top, "steps").([]any)[0] = NewObject() }), Limits{}, CheckContainerShape},
		{"step null", edp(func(top *Object) { get(top, "steps").([]any)[0] = nil }), Limits{}, CheckContainerShape},
		{"step a boolean", edp(func(top *Object) { get(top, "steps").([]any)[0] = true }), Limits{}, CheckContainerShape},
		{"signature block not a list", edp(func(top *Object) { get(top, "steps").([]any)[3] = "x" }), Limits{}, CheckContainerShape},
		{"signature block of 3", edp(func(top *Object) {
			b := get(top, "steps", -1).([]any)
			get(top, "steps").([]any)[3] = b[:3]
		}), Limits{}, CheckContainerShape},
		{"signature block of 5", edp(func(top *Object) {
			b := get(top, "steps", -1).([]any)
			get(top, "steps").([]any)[3] = append(append([]any{}, b...), "x")
		}), Limits{}, CheckContainerShape},
		{"version a string", edp(setBlock(0, "0")), Limits{}, CheckContainerVersion},
		{"version true", edp(setBlock(0, true)), Limits{}, CheckContainerVersion},
		{"version 0.0", edp(setBlock(0, jsonNumber("0.0"))), Limits{}, CheckContainerVersion},
		{"version -0", edp(setBlock(0, jsonNumber("-0"))), Limits{}, CheckContainerVersion},
		{"serial a number", edp(setBlock(1, 123456)), Limits{}, CheckSerialFormat},
		{"serial negative", edp(setBlock(1, "-123456")), Limits{}, CheckSerialFormat},
		{"serial with a plus", edp(setBlock(1, "+123456")), Limits{}, CheckSerialFormat},
		{"huge serial", edp(setBlock(1, "1"+strings.Repeat("0", 100))), Limits{}, CheckSerialFormat},
		{"timestamp a number", edp(setBlock(2, 5)), Limits{}, CheckSigningTime},
		{"timestamp with a space", edp(setBlock(2, "2026-11-27 15:33:04Z")), Limits{}, CheckSigningTime},
		{"timestamp with an offset", edp(setBlock(2, "2026-11-27T15:33:04+00:00")), Limits{}, CheckSigningTime},
		{"timestamp with a fraction", edp(setBlock(2, "2026-11-27T15:33:04.5Z")), Limits{}, CheckSigningTime},
		{"timestamp 30 February", edp(setBlock(2, "2026-02-30T15:33:04Z")), Limits{}, CheckSigningTime},
		{"timestamp single-digit hour", edp(setBlock(2, "2026-11-27T5:33:04Z ")), Limits{}, CheckSigningTime},
		{"signature a number", edp(setBlock(3, 5)), Limits{}, CheckSignature},
		{"signature not base64", edp(setBlock(3, "!!!!")), Limits{}, CheckSignature},
		{"signature unpadded", edp(func(top *Object) {
			b := get(top, "steps", -1).([]any)
			b[3] = strings.TrimRight(b[3].(string), "=")
		}), Limits{}, CheckSignature},
		{"signature standard alphabet", edp(func(top *Object) {
			b := get(top, "steps", -1).([]any)
			s := b[3].(string)
			b[3] = strings.NewReplacer("-", "+", "_", "/").Replace(s)
			if b[3] == s {
				panic("vector signature has no - or _")
			}
		}), Limits{}, CheckSignature},
		{"signature with a line break", edp(func(top *Object) {
			b := get(top, "steps", -1).([]any)
			s := b[3].(string)
			b[3] = s[:8] + "\n" + s[8:]
		}), Limits{}, CheckSignature},
		{"signature raw r||s", edp(func(top *Object) { setBlock(3, base64.URLEncoding.EncodeToString(make([]byte, 64)))(top) }), Limits{}, CheckSignature},
		{"origins missing", edp(func(top *Object) { top.Members = append(top.Members[:1], top.Members[2:]...) }), Limits{}, CheckOrigins},
		{"origins a string", edp(setTop("origins", "x")), Limits{}, CheckOrigins},
		{"origins with a number", edp(setTop("origins", []any{1})), Limits{}, CheckOrigins},
		{"origins with an extra id", edp(func(top *Object) { top.Set("origins", append(get(top, "origins").([]any), "x")) }), Limits{}, CheckOrigins},
		{"origins empty", edp(setTop("origins", []any{})), Limits{}, CheckOrigins},
		{"certificates a list", edp(setTop("certificates", []any{})), Limits{}, CheckCertificateLookup},
		{"certificates null", edp(setTop("certificates", nil)), Limits{}, CheckCertificateLookup},
		{"certificates missing", edp(func(top *Object) { top.Members = top.Members[:3] }), Limits{}, CheckCertificateLookup},
		{"certificate entry a string", edp(func(top *Object) { get(top, "certificates").(*Object).Set("123456", "x") }), Limits{}, CheckCertificateLookup},
		{"certificate entry empty", edp(func(top *Object) { get(top, "certificates").(*Object).Set("123456", []any{}) }), Limits{}, CheckCertificateLookup},
		{"certificate entry with a number", edp(func(top *Object) {
			get(top, "certificates").(*Object).Set("123456", []any{edpPEM(top), 5})
		}), Limits{}, CheckCertificateLookup},

		// Bad certificates.
		{"PEM garbage", edp(func(top *Object) { get(top, "certificates").(*Object).Set("123456", []any{"garbage", intermediate}) }), Limits{}, CheckCertificatePath},
		{"PEM with trailing data", edp(func(top *Object) {
			get(top, "certificates").(*Object).Set("123456", []any{edpPEM(top) + "junk", intermediate})
		}), Limits{}, CheckCertificatePath},
		{"PEM of another type", edp(func(top *Object) {
			get(top, "certificates").(*Object).Set("123456", []any{strings.ReplaceAll(edpPEM(top), "CERTIFICATE", "PUBLIC KEY"), intermediate})
		}), Limits{}, CheckCertificatePath},
		{"PEM with corrupt DER", edp(func(top *Object) {
			p := edpPEM(top)
			get(top, "certificates").(*Object).Set("123456", []any{p[:100] + "AAAA" + p[104:], intermediate})
		}), Limits{}, CheckCertificatePath},
		{"loop: leaf lists a leaf that lists it", mut("records/cap.json", func(top *Object) {
			certs := get(top, "certificates").(*Object)
			certs.Set("123456", []any{get(certs, "123456", 0), "98765"})
			certs.Set("98765", []any{get(certs, "98765", 0), "123456"})
		}), Limits{}, CheckCertificatePath},
		{"leaf lists itself", edp(func(top *Object) {
			get(top, "certificates").(*Object).Set("123456", []any{edpPEM(top), "123456", intermediate})
		}), Limits{}, CheckCertificatePath},
		{"issuer listed twice", edp(func(top *Object) {
			get(top, "certificates").(*Object).Set("123456", []any{edpPEM(top), intermediate, intermediate})
		}), Limits{}, CheckCertificatePath},
		{"issuer entry holds the leaf", edp(func(top *Object) {
			get(top, "certificates").(*Object).Set(intermediate, []any{edpPEM(top)})
		}), Limits{}, CheckCertificateLookup},
		{"serial key differs from the certificate's serial", edp(func(top *Object) {
			certs := get(top, "certificates").(*Object)
			certs.Members[0].Key = "123457"
			setBlock(1, "123457")(top)
		}), Limits{}, CheckCertificateLookup},
		{"huge issuer serial", edp(func(top *Object) {
			get(top, "certificates").(*Object).Set("123456", []any{edpPEM(top), strings.Repeat("9", 1000)})
		}), Limits{}, CheckCertificateLookup},
		{"no issuer listed", edp(func(top *Object) { get(top, "certificates").(*Object).Set("123456", []any{edpPEM(top)}) }), Limits{}, CheckCertificatePath},
		{"intermediate as signer", edp(func(top *Object) { setBlock(1, intermediate)(top) }), Limits{}, CheckCertificatePath},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := newTestVerifier(t, m.Root, m.Framework, WithLimits(tc.limits))
			_, _, err := v.VerifyJSON(tc.data())
			expectCheck(t, err, tc.check)
		})
	}
}

// signRaw makes a correctly signed record from arbitrary step strings, to reach the checks
// that come after the signature (step decoding, origins).
func signRaw(t testing.TB, framework string, key crypto.Signer, chain []*x509.Certificate, origins []string, steps ...string) []byte {
	t.Helper()
	c := &Container{Version: "0", Serial: chain[0].SerialNumber.String(), Timestamp: FormatTimestamp(signTime)}
	for _, s := range steps {
		c.Elements = append(c.Elements, Element{Step: s})
	}
	digest := sha256.Sum256([]byte(DataForSigning(framework, c)))
	sig, err := key.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	c.Signature = base64.URLEncoding.EncodeToString(sig)
	// Entries straight from the chain: these records test the verifier with certificates
	// that NewSigningKey would refuse.
	certs, err := (&Builder{}).certificates(&SigningKey{entries: chainEntries(chain)})
	if err != nil {
		t.Fatal(err)
	}
	if origins == nil {
		origins = []string{}
	}
	data, err := (&Record{Framework: framework, Origins: origins, Steps: c, Certificates: certs}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestHostileSteps(t *testing.T) {
	m := loadManifest(t)
	key, chain := loadSigner(t, "pki", "123456")
	b64 := func(s string) string { return base64.URLEncoding.EncodeToString([]byte(s)) }
	// A step whose standard-alphabet encoding differs from the URL-safe one.
	stdStep := ""
	for i := 0; ; i++ {
		js := fmt.Sprintf(`{"id":"a","type":"t","q":"%s???>>>"}`, strings.Repeat("x", i))
		if s := base64.StdEncoding.EncodeToString([]byte(js)); strings.ContainsAny(s, "+/") {
			stdStep = s
			break
		}
	}
	deep := `{"id":"a","type":"t","x":` + strings.Repeat("[", 40) + strings.Repeat("]", 40) + `}`
	tests := []struct {
		name    string
		origins []string
		step    string
		check   string // "" for valid
	}{
		{"control: a good step", nil, b64(`{"id":"a","type":"t","n":9007199254740993}`), ""},
		{"control: a good origin step", []string{"o1"}, b64(`{"id":"o1","type":"origin"}`), ""},
		{"not base64", nil, "not base64!", CheckStepDecoding},
		{"standard alphabet", nil, stdStep, CheckStepDecoding},
		{"unpadded", nil, base64.RawURLEncoding.EncodeToString([]byte(`{"id":"a","type":"tt"}`)), CheckStepDecoding},
		{"line break", nil, b64(`{"id":"a","type":"t"}`)[:8] + "\n" + b64(`{"id":"a","type":"t"}`)[8:], CheckStepDecoding},
		{"empty", nil, "", CheckStepDecoding},
		{"not JSON", nil, b64(`hello`), CheckStepDecoding},
		{"a JSON list", nil, b64(`[{"id":"a","type":"t"}]`), CheckStepDecoding},
		{"a JSON string", nil, b64(`"type"`), CheckStepDecoding},
		{"no type", nil, b64(`{"id":"a"}`), CheckStepDecoding},
		{"type a number", nil, b64(`{"id":"a","type":5}`), CheckStepDecoding},
		{"no id", nil, b64(`{"type":"t"}`), CheckStepDecoding},
		{"origin without id", nil, b64(`{"type":"origin"}`), CheckStepDecoding},
		{"id a number", nil, b64(`{"id":5,"type":"t"}`), CheckStepDecoding},
		{"signed _signature", nil, b64(`{"id":"a","type":"t","_signature":{"signed":{"member":"forged"}}}`), CheckStepDecoding},
		{"duplicate key", nil, b64(`{"id":"a","type":"t","to":"A","to":"B"}`), CheckStepDecoding},
		{"nested duplicate key", nil, b64(`{"id":"a","type":"t","x":{"k":1,"k":2}}`), CheckStepDecoding},
		{"nested beyond the depth limit", nil, b64(deep), CheckStepDecoding},
		{"lone surrogate", nil, b64(`{"id":"a","type":"t","x":"\ud800"}`), CheckStepDecoding},
		{"reversed surrogates", nil, b64(`{"id":"a","type":"t","x":"\udc00\ud800"}`), CheckStepDecoding},
		{"invalid UTF-8", nil, b64("{\"id\":\"a\",\"type\":\"t\",\"x\":\"\xc3\x28\"}"), CheckStepDecoding},
		{"byte order mark", nil, b64("\ufeff{\"id\":\"a\",\"type\":\"t\"}"), CheckStepDecoding},
		{"NaN", nil, b64(`{"id":"a","type":"t","x":NaN}`), CheckStepDecoding},
		{"leading zero number", nil, b64(`{"id":"a","type":"t","x":01}`), CheckStepDecoding},
		{"trailing data", nil, b64(`{"id":"a","type":"t"} x`), CheckStepDecoding},
		{"raw control character", nil, b64("{\"id\":\"a\",\"type\":\"t\",\"x\":\"\x01\"}"), CheckStepDecoding},
		{"origins not matching", []string{"other"}, b64(`{"id":"o1","type":"origin"}`), CheckOrigins},
	}
	v := newTestVerifier(t, m.Root, m.Framework)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, steps, err := v.VerifyJSON(signRaw(t, m.Framework, key, chain, tc.origins, tc.step))
			if tc.check == "" {
				if err != nil || len(steps) != 1 {
					t.Fatalf("good step rejected: %v", err)
				}
				return
			}
			expectCheck(t, err, tc.check)
		})
	}
}

// TestDuplicateStepKeyAmbiguity shows why duplicate keys are refused: encoding/json (last
// wins) and a first-wins reader would see different recipients.
func TestDuplicateStepKeyAmbiguity(t *testing.T) {
	var last map[string]any
	if err := json.Unmarshal([]byte(`{"to":"A","to":"B"}`), &last); err != nil || last["to"] != "B" {
		t.Fatalf("encoding/json: %v %v", last, err)
	}
	if _, err := ParseJSON([]byte(`{"to":"A","to":"B"}`), Limits{}); err == nil {
		t.Fatal("duplicate key accepted")
	}
}

// TestVerifyHandBuiltRecords: records built in Go (not parsed) are bounded as well; a
// container that contains itself is an error, not an endless loop.
func TestVerifyHandBuiltRecords(t *testing.T) {
	m := loadManifest(t)
	v := newTestVerifier(t, m.Root, m.Framework)
	loop := &Container{Version: "0", Serial: "1", Timestamp: "2026-01-01T00:00:00Z", Signature: "x"}
	loop.Elements = []Element{{Container: loop}}
	_, err := v.Verify(&Record{Framework: m.Framework, Steps: loop})
	expectCheck(t, err, CheckContainerShape)
	_, err = v.Verify(&Record{Framework: m.Framework})
	expectCheck(t, err, CheckContainerShape)
	_, err = v.Verify(nil)
	expectCheck(t, err, CheckContainerShape)
	empty := &Container{Version: "0", Serial: "1", Timestamp: "2026-01-01T00:00:00Z", Signature: "x"}
	_, err = v.Verify(&Record{Framework: m.Framework, Steps: empty})
	expectCheck(t, err, CheckContainerShape)
	_, err = (&Record{Framework: m.Framework}).Marshal()
	if err == nil {
		t.Fatal("marshalled a record without steps")
	}
}

// TestSigningTimeBoundsInclusive re-signs a record exactly at the signing certificate's
// notBefore and notAfter (valid) and one second outside each (invalid).
func TestSigningTimeBoundsInclusive(t *testing.T) {
	m := loadManifest(t)
	key, chain := loadSigner(t, "pki", "123456")
	v := newTestVerifier(t, m.Root, m.Framework)
	leaf := chain[0]
	sign := func(ts string) []byte {
		c := &Container{Version: "0", Serial: "123456", Timestamp: ts, Elements: []Element{{Step: base64.URLEncoding.EncodeToString([]byte(`{"id":"a","type":"t"}`))}}}
		digest := sha256.Sum256([]byte(DataForSigning(m.Framework, c)))
		sig, _ := key.Sign(rand.Reader, digest[:], crypto.SHA256)
		c.Signature = base64.URLEncoding.EncodeToString(sig)
		certs, _ := (&Builder{}).certificates(&SigningKey{entries: chainEntries(chain)})
		data, _ := (&Record{Framework: m.Framework, Steps: c, Certificates: certs}).Marshal()
		return data
	}
	for _, tc := range []struct {
		ts    string
		valid bool
	}{
		{FormatTimestamp(leaf.NotBefore), true},
		{FormatTimestamp(leaf.NotAfter), true},
		{FormatTimestamp(leaf.NotBefore.Add(-1e9)), false},
		{FormatTimestamp(leaf.NotAfter.Add(1e9)), false},
	} {
		// Each twice: the second goes through the path cache, which must agree.
		for i := 0; i < 2; i++ {
			_, _, err := v.VerifyJSON(sign(tc.ts))
			if tc.valid && err != nil {
				t.Fatalf("%s: %v", tc.ts, err)
			}
			if !tc.valid {
				expectCheck(t, err, CheckCertificatePath)
			}
		}
	}
	_ = context.Background
}

// TestCachesKeepOnlyGoodPaths: certificates of a record whose path fails are not cached,
// so hostile records cannot push good certificates out of the bounded cache.
func TestCachesKeepOnlyGoodPaths(t *testing.T) {
	m := loadManifest(t)
	v := newTestVerifier(t, m.Root, m.Framework)
	for _, f := range []string{"invalid/untrusted-root.json", "invalid/expired-at-signing-time.json"} {
		if _, _, err := v.VerifyJSON(readVector(t, f)); err == nil {
			t.Fatalf("%s accepted", f)
		}
	}
	if v.certs.len() != 0 || v.chains.len() != 0 {
		t.Fatalf("failed paths cached: %d certificates, %d paths", v.certs.len(), v.chains.len())
	}
	if _, _, err := v.VerifyJSON(readVector(t, "records/cap.json")); err != nil {
		t.Fatal(err)
	}
	if v.certs.len() != 3 || v.chains.len() != 2 {
		t.Fatalf("%d certificates, %d paths cached; want 3 and 2", v.certs.len(), v.chains.len())
	}
}
