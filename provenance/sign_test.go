package provenance

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"io"
	"math/big"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const testScheme = "https://registry.core.sandbox.trust.ib1.org/scheme/perseus"

var signTime = time.Date(2026, 11, 27, 16, 0, 0, 0, time.UTC)

// edpSteps adds the three steps of the EDP flow (seed-service.md) to b.
func edpSteps(t testing.TB, b *Builder, capMember string) (permission, origin, transfer string) {
	t.Helper()
	var err error
	permission, err = b.AddStep(NewStep("permission",
		Member{"scheme", testScheme},
		Member{"timestamp", "2025-09-19T10:00:00Z"},
		Member{"account", "test-account-123"},
		Member{"allows", NewObject(Member{"licences", []string{testScheme + "/licence/energy-consumption-data/2024-12-05"}})},
		Member{"expires", "2025-11-19T10:00:00Z"},
	))
	if err != nil {
		t.Fatal(err)
	}
	period := NewObject(Member{"from", "2025-09-20T00:00Z"}, Member{"to", "2025-10-19T00:00Z"})
	origin, err = b.AddStep(NewStep("origin",
		Member{"scheme", testScheme},
		Member{"sourceType", testScheme + "/source-type/Meter"},
		Member{"origin", "https://www.smartdcc.co.uk/"},
		Member{"originLicence", "https://smartenergycodecompany.co.uk/documents/sec/consolidated-sec/"},
		Member{"external", true},
		Member{"permissions", []string{permission}},
		Member{"perseus:scheme", NewObject(Member{"meteringPeriod", period})},
		Member{"perseus:assurance", NewObject(Member{"dataSource", testScheme + "/assurance/data-source/SmartMeter"})},
	))
	if err != nil {
		t.Fatal(err)
	}
	transfer, err = b.AddStep(NewStep("transfer",
		Member{"scheme", testScheme},
		Member{"of", origin},
		Member{"to", capMember},
		Member{"standard", testScheme + "/standard/energy-consumption-data/2024-12-05"},
		Member{"licence", testScheme + "/licence/energy-consumption-data/2024-12-05"},
		Member{"service", "https://api.example.com"},
		Member{"path", "/readings"},
		Member{"parameters", NewObject(Member{"measure", "import"}, Member{"from", "2025-09-20T00:00Z"}, Member{"to", "2025-10-19T00:00Z"})},
		Member{"permissions", []string{permission}},
		Member{"transaction", "fapi-transaction-456"},
	))
	if err != nil {
		t.Fatal(err)
	}
	return
}

func signEDP(t testing.TB, framework string) *Record {
	t.Helper()
	key, chain := loadSigner(t, "pki", "123456")
	b := NewBuilder(framework, signTime, rand.Reader)
	edpSteps(t, b, "https://member.core.sandbox.trust.ib1.org/m/81524")
	rec, err := b.Sign(context.Background(), key, chain)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

func TestSignNewRecord(t *testing.T) {
	m := loadManifest(t)
	rec := signEDP(t, m.Framework)
	v := newTestVerifier(t, m.Root, m.Framework)
	data, err := rec.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(data, []byte(`{"ib1:provenance":"`+m.Framework+`","origins":["`)) || !bytes.Contains(data, []byte(`],"steps":[`)) || !bytes.Contains(data, []byte(`]],"certificates":{"123456":["-----BEGIN CERTIFICATE-----\n`)) {
		t.Fatalf("unexpected record layout: %.300s", data)
	}
	_, steps, err := v.VerifyJSON(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(steps) != 3 {
		t.Fatalf("%d steps", len(steps))
	}
	for i, typ := range []string{"permission", "origin", "transfer"} {
		s := steps[i]
		keys := []string{}
		for _, mb := range s.Members {
			keys = append(keys, mb.Key)
		}
		if keys[0] != "id" || keys[1] != "timestamp" || keys[2] != "type" || keys[len(keys)-1] != "_signature" {
			t.Fatalf("step %d key order %v", i, keys)
		}
		if got, _ := s.GetString("type"); got != typ {
			t.Fatalf("step %d type %q", i, got)
		}
		id, _ := s.GetString("id")
		if len(id) != 20 || strings.ContainsAny(id, "+/=") {
			t.Fatalf("step id %q", id)
		}
	}
	if ts, _ := steps[0].GetString("timestamp"); ts != "2025-09-19T10:00:00Z" {
		t.Fatalf("given timestamp not kept: %q", ts)
	}
	if ts, _ := steps[1].GetString("timestamp"); ts != "2026-11-27T16:00:00Z" {
		t.Fatalf("default timestamp %q", ts)
	}
	originID, _ := steps[1].GetString("id")
	if len(rec.Origins) != 1 || rec.Origins[0] != originID {
		t.Fatalf("origins %v", rec.Origins)
	}
	if rec.Steps.Timestamp != "2026-11-27T16:00:00Z" || rec.Steps.Serial != "123456" {
		t.Fatalf("signature block %+v", rec.Steps)
	}
	// Self-contained: the leaf entry lists the intermediate, which has its own entry; no root.
	if len(rec.Certificates) != 2 || len(rec.Certificates[0].Values) != 2 || len(rec.Certificates[1].Values) != 1 ||
		rec.Certificates[0].Values[1] != rec.Certificates[1].Serial {
		t.Fatalf("certificates %+v", rec.Certificates)
	}
	checkWithIB1Check(t, rec, m.Root, m.Framework, steps)
	checkWithOpenSSL(t, rec, m.Root)

	// Negative control: the Python checker must reject the same record with one step altered.
	tampered := *rec
	c := *rec.Steps
	c.Elements = append([]Element(nil), c.Elements...)
	c.Elements[1].Step = strings.Replace(c.Elements[1].Step, "b3JpZ2lu", "b3JpZ2lO", 1) // "origin" -> "origiN"
	if c.Elements[1].Step == rec.Steps.Elements[1].Step {
		t.Fatal("tampering did not change the step")
	}
	tampered.Steps = &c
	bad, _ := tampered.Marshal()
	if _, err := ib1check(t, bad, filepath.Join(vectorsDir, m.Root), m.Framework); err == nil {
		t.Fatal("ib1check.py accepts a tampered record")
	}
	var ve *VerifyError
	if _, err := v.Verify(&tampered); !errors.As(err, &ve) || ve.Check != CheckSignature {
		t.Fatalf("tampered record: %v", err)
	}
}

// capSteps adds the CAP flow's steps on top of a received EDP record.
func capSteps(t testing.TB, b *Builder, transferID string) {
	t.Helper()
	receipt, err := b.AddStep(NewStep("receipt", Member{"scheme", testScheme}, Member{"transfer", transferID}))
	if err != nil {
		t.Fatal(err)
	}
	perm, err := b.AddStep(NewStep("permission", Member{"scheme", testScheme}, Member{"account", "cap-account"},
		Member{"allows", NewObject(Member{"licenses", []string{testScheme + "/license/emissions-report/2024-12-05"}},
			Member{"processes", []string{testScheme + "/process/emissions-calculations/2024-12-05"}})}))
	if err != nil {
		t.Fatal(err)
	}
	grid, err := b.AddStep(NewStep("origin", Member{"scheme", testScheme}, Member{"sourceType", testScheme + "/source-type/GridCarbonIntensity"},
		Member{"origin", "https://api.carbonintensity.org.uk/"}, Member{"external", true}))
	if err != nil {
		t.Fatal(err)
	}
	process, err := b.AddStep(NewStep("process", Member{"scheme", testScheme}, Member{"inputs", []string{receipt, grid}},
		Member{"process", testScheme + "/process/emissions-calculations/2024-12-05"}, Member{"permissions", []string{perm}}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.AddStep(NewStep("transfer", Member{"scheme", testScheme}, Member{"of", process},
		Member{"to", "https://member.core.sandbox.trust.ib1.org/m/71212388"}, Member{"permissions", []string{perm}})); err != nil {
		t.Fatal(err)
	}
}

// TestSignAppend appends to the reference's edp.json as the CAP, then to that as the bank:
// three levels, each signed by another member, each verified by all three implementations.
func TestSignAppend(t *testing.T) {
	m := loadManifest(t)
	v := newTestVerifier(t, m.Root, m.Framework)
	edp, err := v.ParseRecord(readVector(t, "records/edp.json"))
	if err != nil {
		t.Fatal(err)
	}
	capKey, capChain := loadSigner(t, "pki", "98765")
	b := NewBuilder(m.Framework, signTime, rand.Reader)
	decoded, err := b.Receive(v, edp)
	if err != nil {
		t.Fatal(err)
	}
	transfer, err := Find(decoded, NewObject(
		Member{"type", "transfer"},
		Member{"to", "https://member.core.sandbox.trust.ib1.org/m/81524"},
		Member{"_signature", NewObject(Member{"signed", NewObject(
			Member{"member", "https://member.core.sandbox.trust.ib1.org/m/2876152"},
			Member{"roles", []string{testScheme + "/role/energy-data-provider"}},
		)})},
	))
	if err != nil {
		t.Fatal(err)
	}
	transferID, _ := transfer.GetString("id")
	capSteps(t, b, transferID)
	capRec, err := b.Sign(context.Background(), capKey, capChain)
	if err != nil {
		t.Fatal(err)
	}
	if capRec.Steps.Elements[0].Container != edp.Steps || capRec.Steps.Elements[0].Container.Signature != edp.Steps.Signature {
		t.Fatal("received container not included first and unchanged")
	}
	capDecoded, err := v.Verify(capRec)
	if err != nil {
		t.Fatal(err)
	}
	if len(capDecoded) != 8 || len(capRec.Origins) != 2 || capRec.Origins[0] != edp.Origins[0] {
		t.Fatalf("%d steps, origins %v", len(capDecoded), capRec.Origins)
	}
	// The EDP steps now show the CAP as including signer.
	inc, _ := capDecoded[0].Get("_signature")
	includedBy, _ := inc.(*Object).Get("includedBy")
	if l := includedBy.([]any); len(l) != 1 || !Contains(l[0], NewObject(Member{"name", "Carbon Accounting Provider"})) {
		t.Fatalf("includedBy %v", includedBy)
	}
	checkWithIB1Check(t, capRec, m.Root, m.Framework, capDecoded)
	checkWithOpenSSL(t, capRec, m.Root)

	// Third level, through the one-call API.
	bankKey, bankChain := loadSigner(t, "pki", "88889999")
	bankRec, err := Sign(context.Background(), SignInput{
		Framework: m.Framework, Verifier: v, Received: []*Record{capRec},
		Steps: []*Object{NewStep("receipt", Member{"transfer", "x"})},
		Key:   bankKey, Chain: bankChain, Now: signTime.Add(time.Hour), Rand: rand.Reader,
	})
	if err != nil {
		t.Fatal(err)
	}
	bankDecoded, err := v.Verify(bankRec)
	if err != nil {
		t.Fatal(err)
	}
	if len(bankDecoded) != 9 || len(bankRec.Certificates) != 4 {
		t.Fatalf("%d steps, %d certificates", len(bankDecoded), len(bankRec.Certificates))
	}
	checkWithIB1Check(t, bankRec, m.Root, m.Framework, bankDecoded)
	checkWithOpenSSL(t, bankRec, m.Root)
}

// TestSignTwoReceived includes two received records, one signed in 2020 by a certificate
// that has since expired: each nested container is checked at its own signing time.
func TestSignTwoReceived(t *testing.T) {
	m := loadManifest(t)
	v := newTestVerifier(t, m.Root, m.Framework)
	var recs []*Record
	for _, f := range []string{"records/edp.json", "records/signed-2020-by-since-expired-cert.json"} {
		r, err := v.ParseRecord(readVector(t, f))
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	key, chain := loadSigner(t, "pki", "98765")
	rec, err := Sign(context.Background(), SignInput{
		Framework: m.Framework, Verifier: v, Received: recs,
		Steps: []*Object{NewStep("process", Member{"inputs", []string{recs[0].Origins[0], recs[1].Origins[0]}})},
		Key:   key, Chain: chain, Now: signTime,
	})
	if err != nil {
		t.Fatal(err)
	}
	decoded, err := v.Verify(rec)
	if err != nil {
		t.Fatal(err)
	}
	if len(decoded) != 7 || len(rec.Origins) != 2 || rec.Origins[0] != recs[0].Origins[0] || rec.Origins[1] != recs[1].Origins[0] {
		t.Fatalf("%d steps, origins %v", len(decoded), rec.Origins)
	}
	// 123456, the shared intermediate, 444555 and 98765: the intermediate once.
	if len(rec.Certificates) != 4 {
		t.Fatalf("%d certificates entries", len(rec.Certificates))
	}
	checkWithIB1Check(t, rec, m.Root, m.Framework, decoded)
	checkWithOpenSSL(t, rec, m.Root)
}

// TestSignUnicode writes steps with every kind of awkward text and number and checks that
// the Python checker reads back the same values.
func TestSignUnicode(t *testing.T) {
	m := loadManifest(t)
	key, chain := loadSigner(t, "pki", "98765")
	step, err := ParseStep([]byte(`{"type":"origin","origin":"https://example.com/Zürich?q=a&b=<c>",` +
		`"location":{"city":"東京","label":"Straße — “quoted” «g» …"},"emoji":"🔋⚡🌍 👩‍🔬",` +
		`"escapes":"\" \\ \/ \b \f \n \r \t \u0001 \u007f \u2028 \u2029 \ufeff \ud83d\udd0b",` +
		`"東京":"key","numbers":[0,-7,3.25,0.1,9007199254740993,-0.0,1e2,12345678901234567890123],` +
		`"z":{"b":1,"a":2},"nothing":null,"flags":[true,false]}`))
	if err != nil {
		t.Fatal(err)
	}
	rec, err := Sign(context.Background(), SignInput{Framework: m.Framework, Steps: []*Object{step}, Key: key, Chain: chain, Now: signTime})
	if err != nil {
		t.Fatal(err)
	}
	v := newTestVerifier(t, m.Root, m.Framework)
	decoded, err := v.Verify(rec)
	if err != nil {
		t.Fatal(err)
	}
	// Exact round trip of every member (order and number text) after id, timestamp.
	d := decoded[0]
	if d.Members[2].Key != "type" || d.Members[3].Key != "origin" {
		t.Fatalf("order %v", d.Members[:4])
	}
	want := &Object{Members: step.Members[1:]}
	got := &Object{Members: d.Members[3 : len(d.Members)-1]}
	if diff := sameOrdered(got, want, "$"); diff != "" {
		t.Fatal(diff)
	}
	nums, _ := d.Get("numbers")
	if n := nums.([]any)[4]; n != jsonNumber("9007199254740993") {
		t.Fatalf("big integer changed: %v", n)
	}
	// The encoded step is pure ASCII.
	raw, _ := decodeBase64URL(rec.Steps.Elements[0].Step)
	for _, c := range raw {
		if c < 0x20 || c > 0x7e {
			t.Fatalf("non-ASCII byte %#x in the step", c)
		}
	}
	checkWithIB1Check(t, rec, m.Root, m.Framework, decoded)
	checkWithOpenSSL(t, rec, m.Root)
}

type ctxKey struct{}

// ctxSigner implements both interfaces; Sign must prefer SignContext and pass ctx through.
type ctxSigner struct {
	crypto.Signer
	t      *testing.T
	gotCtx context.Context
}

func (s *ctxSigner) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	s.t.Error("Sign called although SignContext is available")
	return nil, errors.New("no")
}

func (s *ctxSigner) SignContext(ctx context.Context, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	s.gotCtx = ctx
	if opts.HashFunc() != crypto.SHA256 || len(digest) != 32 {
		s.t.Errorf("unexpected opts %v / digest length %d", opts.HashFunc(), len(digest))
	}
	return s.Signer.Sign(rand.Reader, digest, opts)
}

func TestSignContextSigner(t *testing.T) {
	m := loadManifest(t)
	key, chain := loadSigner(t, "pki", "123456")
	cs := &ctxSigner{Signer: key, t: t}
	ctx := context.WithValue(context.Background(), ctxKey{}, "marker")
	rec, err := Sign(ctx, SignInput{Framework: m.Framework, Steps: []*Object{NewStep("origin")}, Key: cs, Chain: chain, Now: signTime})
	if err != nil {
		t.Fatal(err)
	}
	if cs.gotCtx == nil || cs.gotCtx.Value(ctxKey{}) != "marker" {
		t.Fatal("the caller's context did not reach SignContext")
	}
	if _, err := newTestVerifier(t, m.Root, m.Framework).Verify(rec); err != nil {
		t.Fatal(err)
	}
}

// funcSigner signs with a function, to misbehave in controlled ways.
type funcSigner struct {
	pub  crypto.PublicKey
	sign func(digest []byte) ([]byte, error)
}

func (s funcSigner) Public() crypto.PublicKey { return s.pub }
func (s funcSigner) Sign(_ io.Reader, digest []byte, _ crypto.SignerOpts) ([]byte, error) {
	return s.sign(digest)
}

func TestSignRefusals(t *testing.T) {
	m := loadManifest(t)
	key, chain := loadSigner(t, "pki", "123456")
	otherKey, otherChain := loadSigner(t, "pki", "98765")
	priv := key.(*ecdsa.PrivateKey)
	steps := []*Object{NewStep("origin")}
	in := func(mod func(*SignInput)) SignInput {
		s := SignInput{Framework: m.Framework, Steps: steps, Key: key, Chain: chain, Now: signTime}
		mod(&s)
		return s
	}
	rawSigner := funcSigner{pub: key.Public(), sign: func(d []byte) ([]byte, error) {
		r, s, err := ecdsa.Sign(rand.Reader, priv, d)
		if err != nil {
			return nil, err
		}
		out := make([]byte, 64)
		r.FillBytes(out[:32])
		s.FillBytes(out[32:])
		return out, nil
	}}
	wrongDigest := funcSigner{pub: key.Public(), sign: func(d []byte) ([]byte, error) {
		return ecdsa.SignASN1(rand.Reader, priv, append([]byte{d[0] ^ 1}, d[1:]...)) // always another digest
	}}
	failing := funcSigner{pub: key.Public(), sign: func([]byte) ([]byte, error) { return nil, errors.New("token removed") }}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name string
		ctx  context.Context
		in   SignInput
		want string
	}{
		{"raw r||s signature", context.Background(), in(func(s *SignInput) { s.Key = rawSigner }), "not ASN.1 DER (64 bytes: probably raw r||s"},
		{"signature over other data", context.Background(), in(func(s *SignInput) { s.Key = wrongDigest }), "does not verify with the signing certificate"},
		{"signer error", context.Background(), in(func(s *SignInput) { s.Key = failing }), "token removed"},
		{"key does not match certificate", context.Background(), in(func(s *SignInput) { s.Key = otherKey }), "does not match the signing certificate"},
		{"chain of another member", context.Background(), in(func(s *SignInput) { s.Chain = otherChain }), "does not match the signing certificate"},
		{"no chain", context.Background(), in(func(s *SignInput) { s.Chain = nil }), "certificate chain"},
		{"issuer as signing certificate", context.Background(), in(func(s *SignInput) { s.Chain = chain[1:] }), "profile"},
		{"certificate not yet valid", context.Background(), in(func(s *SignInput) { s.Now = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC) }), "not valid at the signing time"},
		{"no time", context.Background(), in(func(s *SignInput) { s.Now = time.Time{} }), "no time"},
		{"nothing to sign", context.Background(), in(func(s *SignInput) { s.Steps = nil }), "nothing to sign"},
		{"cancelled context", cancelled, in(func(*SignInput) {}), "context canceled"},
		{"received without verifier", context.Background(), in(func(s *SignInput) { s.Received = []*Record{{}} }), "Verifier"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec, err := Sign(tc.ctx, tc.in)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v (record %v), want an error containing %q", err, rec != nil, tc.want)
			}
		})
	}
}

// TestSigningKeyWithoutSignatureChecks: a prepared key signs many records; turning its
// check off skips only the verification of each signature, so a signer that lies is then
// caught by the reader instead.
func TestSigningKeyWithoutSignatureChecks(t *testing.T) {
	m := loadManifest(t)
	key, chain := loadSigner(t, "pki", "123456")
	priv := key.(*ecdsa.PrivateKey)
	wrongDigest := funcSigner{pub: key.Public(), sign: func(d []byte) ([]byte, error) {
		return ecdsa.SignASN1(rand.Reader, priv, append([]byte{d[0] ^ 1}, d[1:]...)) // always another digest
	}}
	v := newTestVerifier(t, m.Root, m.Framework)
	good, err := NewSigningKey(key, chain)
	if err != nil {
		t.Fatal(err)
	}
	good.CheckSignatures = false
	for i := range 3 {
		b := NewBuilder(m.Framework, signTime, nil)
		b.AddStep(NewStep("origin", Member{"n", i}))
		rec, err := b.SignWith(context.Background(), good)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.Verify(rec); err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
	}
	liar, err := NewSigningKey(wrongDigest, chain)
	if err != nil {
		t.Fatal(err)
	}
	b := NewBuilder(m.Framework, signTime, nil)
	b.AddStep(NewStep("origin"))
	if _, err := b.SignWith(context.Background(), liar); err == nil || !strings.Contains(err.Error(), "does not verify") {
		t.Fatalf("with checks on: %v", err)
	}
	liar.CheckSignatures = false
	b = NewBuilder(m.Framework, signTime, nil)
	b.AddStep(NewStep("origin"))
	rec, err := b.SignWith(context.Background(), liar)
	if err != nil {
		t.Fatal(err)
	}
	var ve *VerifyError
	if _, err := v.Verify(rec); !errors.As(err, &ve) || ve.Check != CheckSignature {
		t.Fatalf("the reader accepted a bad signature: %v", err)
	}
}

func TestAddStepRules(t *testing.T) {
	b := NewBuilder("TF", signTime, bytes.NewReader(bytes.Repeat([]byte{0xfb}, 15)))
	id, err := b.AddStep(NewStep("origin"))
	if err != nil {
		t.Fatal(err)
	}
	if id != "-_v7-_v7-_v7-_v7-_v7" {
		t.Fatalf("id from the given random source: %q", id)
	}
	if _, err := b.AddStep(NewStep("origin")); err == nil || !strings.Contains(err.Error(), "random") {
		t.Fatalf("exhausted random source: %v", err)
	}
	bad := []struct {
		name string
		step *Object
		want string
	}{
		{"id given", NewStep("origin", Member{"id", "x"}), "may not contain an id"},
		{"underscore key", NewStep("origin", Member{"_signature", "x"}), "underscore"},
		{"no type", NewObject(Member{"a", "b"}), "needs a type"},
		{"type not a string", NewObject(Member{"type", 5}), "non-empty string"},
		{"empty type", NewStep(""), "non-empty string"},
		{"timestamp not a string", NewStep("origin", Member{"timestamp", 5}), "timestamp"},
		{"empty timestamp", NewStep("origin", Member{"timestamp", ""}), "timestamp"},
		{"float value", NewStep("origin", Member{"x", 1.5}), "floating point"},
		{"map value", NewStep("origin", Member{"x", map[string]any{"a": 1}}), "cannot encode"},
		{"duplicate key", NewStep("origin", Member{"x", 1}, Member{"x", 2}), "duplicate key"},
		{"nested duplicate key", NewStep("origin", Member{"x", NewObject(Member{"k", 1}, Member{"k", 1})}), "duplicate key"},
		{"invalid UTF-8", NewStep("origin", Member{"x", "\xff"}), "UTF-8"},
		{"bad number text", NewStep("origin", Member{"x", jsonNumber("01")}), "not a JSON number"},
		{"too deep", NewStep("origin", Member{"x", deepList(40)}), "deeper"},
		{"nil step", nil, "nil step"},
	}
	for _, tc := range bad {
		b := NewBuilder("TF", signTime, nil)
		if _, err := b.AddStep(tc.step); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", tc.name, err, tc.want)
		}
	}
}

func deepList(n int) any {
	var v any = "x"
	for i := 0; i < n; i++ {
		v = []any{v}
	}
	return v
}

// TestReceiveChecks: received records are verified under the Builder's framework, and
// certificates that clash between received records are refused.
func TestReceiveChecks(t *testing.T) {
	m := loadManifest(t)
	v := newTestVerifier(t, m.Root, m.Framework)
	other, err := ParseRecord(readVector(t, "invalid/wrong-trust-framework.json"), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	b := NewBuilder(m.Framework, signTime, nil)
	var ve *VerifyError
	if _, err := b.Receive(v, other); !errors.As(err, &ve) || ve.Check != CheckTrustFramework {
		t.Fatalf("record of another framework: %v", err)
	}
	tampered, _ := ParseRecord(readVector(t, "invalid/signature-one-char.json"), Limits{})
	if _, err := b.Receive(v, tampered); !errors.As(err, &ve) || ve.Check != CheckSignature {
		t.Fatalf("tampered record: %v", err)
	}

	// Trusting both roots, the EDP record and its look-alike both verify, but their 123456
	// certificates differ: one record cannot carry both.
	roots := append(loadRoots(t, m.Root), loadRoots(t, "pki/untrusted/root-ca-cert.pem")...)
	both, err := NewVerifier(roots, m.Framework)
	if err != nil {
		t.Fatal(err)
	}
	key, chain := loadSigner(t, "pki", "98765")
	var recs []*Record
	for _, f := range []string{"records/edp.json", "invalid/untrusted-root.json"} {
		r, _ := ParseRecord(readVector(t, f), Limits{})
		recs = append(recs, r)
	}
	_, err = Sign(context.Background(), SignInput{Framework: m.Framework, Verifier: both, Received: recs, Key: key, Chain: chain, Now: signTime})
	if err == nil || !strings.Contains(err.Error(), "two different certificates under serial 123456") {
		t.Fatalf("clashing certificates: %v", err)
	}
}

// TestSerialOfChain: a chain certificate with a negative serial cannot be written.
func TestCanonicalSerial(t *testing.T) {
	for s, ok := range map[string]bool{"0": true, "7": true, "123456": true, "0123": false, "-5": false, "+5": false, "12a": false, "": false,
		strings.Repeat("9", 64): true, strings.Repeat("9", 65): false, "1 ": false} {
		if canonicalSerial(s) != ok {
			t.Errorf("canonicalSerial(%q) != %v", s, ok)
		}
	}
	if !canonicalSerial(new(big.Int).Lsh(big.NewInt(1), 159).String()) {
		t.Error("a 160-bit serial must be accepted")
	}
	_ = x509.Certificate{}
}

// A Builder refuses to sign what a verifier with its limits would refuse: the daemon
// signed a record nested 33 deep that its own verifier (limit 32) then refused. Here with
// a limit of 3, and of a size.
func TestSignRefusesWhatVerifiersRefuse(t *testing.T) {
	m := loadManifest(t)
	v := newTestVerifier(t, m.Root, m.Framework, WithLimits(Limits{MaxDepth: 3}))
	key, chain := loadSigner(t, "pki", "123456")
	rec := signEDP(t, m.Framework)
	for depth := 2; depth <= 4; depth++ {
		b := NewBuilder(m.Framework, signTime, rand.Reader).WithLimits(v.Limits())
		if _, err := b.Receive(newTestVerifier(t, m.Root, m.Framework), rec); err != nil {
			t.Fatal(err)
		}
		next, err := b.Sign(context.Background(), key, chain)
		if depth <= 3 {
			if err != nil {
				t.Fatalf("depth %d: %v", depth, err)
			}
			if _, err := v.Verify(next); err != nil {
				t.Fatalf("depth %d does not verify: %v", depth, err)
			}
			rec = next
			continue
		}
		if !errors.Is(err, ErrBeyondLimits) || !strings.Contains(err.Error(), "containers nested 4 deep, more than 3") {
			t.Fatalf("depth 4: %v", err)
		}
	}
	data, _ := rec.Marshal()
	b := NewBuilder(m.Framework, signTime, rand.Reader).WithLimits(Limits{MaxRecordBytes: len(data)})
	if _, err := b.Receive(newTestVerifier(t, m.Root, m.Framework), rec); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Sign(context.Background(), key, chain); !errors.Is(err, ErrBeyondLimits) || !strings.Contains(err.Error(), "bytes or so, more than") {
		t.Fatalf("a record larger than max_record_bytes: %v", err)
	}
}

// encodedSize counts what Marshal writes, byte for byte.
func TestEncodedSize(t *testing.T) {
	m := loadManifest(t)
	v := newTestVerifier(t, m.Root, m.Framework)
	recs := []*Record{signEDP(t, m.Framework)}
	for _, name := range []string{"records/edp.json"} {
		r, err := v.ParseRecord(readVector(t, name))
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	key, chain := loadSigner(t, "pki", "123456")
	b := NewBuilder(m.Framework, signTime, rand.Reader)
	b.AddStep(NewStep("odd", Member{"text", "quote \" backslash \\ tab \t nul \x00 del \x7f é € 𝄞"}))
	odd, err := b.Sign(context.Background(), key, chain)
	if err != nil {
		t.Fatal(err)
	}
	recs = append(recs, odd, &Record{Framework: "f\"é", Steps: &Container{Version: "0"}})
	for i, r := range recs {
		data, err := r.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if n := encodedSize(r, len(r.Steps.Signature)); n != len(data) {
			t.Errorf("record %d: encodedSize %d, Marshal %d bytes", i, n, len(data))
		}
	}
}
