package provenance

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"testing"
)

func reportRate(b *testing.B, unit string) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), unit)
}

func benchVerify(b *testing.B, file string, opts ...Option) {
	m := loadManifest(b)
	v := newTestVerifier(b, m.Root, m.Framework, opts...)
	data := readVector(b, file)
	if _, _, err := v.VerifyJSON(data); err != nil { // warm the caches
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := v.VerifyJSON(data); err != nil {
			b.Fatal(err)
		}
	}
	reportRate(b, "records/s")
}

// BenchmarkVerifyBank: parse, verify (three signatures, three levels) and decode bank.json.
func BenchmarkVerifyBank(b *testing.B) { benchVerify(b, "records/bank.json") }

// BenchmarkVerifyBankParsed is verify+decode of an already parsed bank.json (no JSON parsing
// of the record itself; the steps are still decoded).
func BenchmarkVerifyBankParsed(b *testing.B) {
	m := loadManifest(b)
	v := newTestVerifier(b, m.Root, m.Framework)
	rec, err := v.ParseRecord(readVector(b, "records/bank.json"))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := v.Verify(rec); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(rec); err != nil {
			b.Fatal(err)
		}
	}
	reportRate(b, "records/s")
}

// BenchmarkVerifyBankNoCache is the same without the certificate caches: every certificate
// is parsed and every path re-verified (two more signatures per container).
func BenchmarkVerifyBankNoCache(b *testing.B) {
	benchVerify(b, "records/bank.json", WithCacheSizes(0, 0))
}

func BenchmarkVerifyEDP(b *testing.B) { benchVerify(b, "records/edp.json") }

func BenchmarkVerifyFiftySteps(b *testing.B) { benchVerify(b, "records/fifty-steps.json") }

// BenchmarkParseBank is the share of JSON parsing (no cryptography).
func BenchmarkParseBank(b *testing.B) {
	data := readVector(b, "records/bank.json")
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseRecord(data, Limits{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSignEDPLike builds, signs and encodes a three-step EDP record.
func BenchmarkSignEDPLike(b *testing.B) {
	m := loadManifest(b)
	key, chain := loadSigner(b, "pki", "123456")
	b.ReportAllocs()
	for b.Loop() {
		bl := NewBuilder(m.Framework, signTime, rand.Reader)
		edpSteps(b, bl, "https://member.core.sandbox.trust.ib1.org/m/81524")
		rec, err := bl.Sign(context.Background(), key, chain)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := rec.Marshal(); err != nil {
			b.Fatal(err)
		}
	}
	reportRate(b, "records/s")
}

// BenchmarkSignCAPLike is the CAP flow: parse and verify an EDP record, find the transfer,
// add five steps, sign and encode.
func BenchmarkSignCAPLike(b *testing.B) {
	m := loadManifest(b)
	v := newTestVerifier(b, m.Root, m.Framework)
	key, chain := loadSigner(b, "pki", "98765")
	data := readVector(b, "records/edp.json")
	required := NewObject(Member{"type", "transfer"}, Member{"to", "https://member.core.sandbox.trust.ib1.org/m/81524"})
	b.ReportAllocs()
	for b.Loop() {
		edp, err := v.ParseRecord(data)
		if err != nil {
			b.Fatal(err)
		}
		bl := NewBuilder(m.Framework, signTime, rand.Reader)
		decoded, err := bl.Receive(v, edp)
		if err != nil {
			b.Fatal(err)
		}
		transfer, err := Find(decoded, required)
		if err != nil {
			b.Fatal(err)
		}
		id, _ := transfer.GetString("id")
		capSteps(b, bl, id)
		rec, err := bl.Sign(context.Background(), key, chain)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := rec.Marshal(); err != nil {
			b.Fatal(err)
		}
	}
	reportRate(b, "records/s")
}

// BenchmarkEncodeStep is the ASCII-only JSON encoder on the unicode vector's first step.
func BenchmarkEncodeStep(b *testing.B) {
	m := loadManifest(b)
	rec, err := ParseRecord(readVector(b, "records/unicode.json"), Limits{})
	if err != nil {
		b.Fatal(err)
	}
	step, verr := newTestVerifier(b, m.Root, m.Framework).decodeStep(rec.Steps.Elements[0].Step)
	if verr != nil {
		b.Fatal(verr)
	}
	b.ReportAllocs()
	var buf []byte
	for b.Loop() {
		if buf, err = AppendJSON(buf[:0], step); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkECDSAP256Verify is the floor: one ECDSA P-256 verification with crypto/ecdsa on
// this machine. BenchmarkVerifyBank checks three signatures, so it cannot beat 3x this.
func BenchmarkECDSAP256Verify(b *testing.B) {
	key, chain := loadSigner(b, "pki", "123456")
	digest := make([]byte, 32)
	sig, err := key.Sign(rand.Reader, digest, crypto.SHA256)
	if err != nil {
		b.Fatal(err)
	}
	pub := chain[0].PublicKey.(*ecdsa.PublicKey)
	for b.Loop() {
		if !ecdsa.VerifyASN1(pub, digest, sig) {
			b.Fatal("does not verify")
		}
	}
}
