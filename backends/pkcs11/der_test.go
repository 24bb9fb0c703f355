//go:build cgo

package pkcs11

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"math/big"
	"strings"
	"testing"
)

// reference is encoding/asn1's DER of r and s: what derSignature must produce.
func reference(t *testing.T, raw []byte) []byte {
	t.Helper()
	der, err := asn1.Marshal(struct{ R, S *big.Int }{new(big.Int).SetBytes(raw[:32]), new(big.Int).SetBytes(raw[32:])})
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestDERSignatureEdgeCases(t *testing.T) {
	val := func(first byte, lead int) []byte {
		b := bytes.Repeat([]byte{0x5a}, 32)
		for i := range lead {
			b[i] = 0
		}
		b[lead] = first
		return b
	}
	for _, tc := range []struct {
		name    string
		r, s    []byte
		derLen  int // total length of the DER
		rLen    int // content length of r
		rPrefix string
	}{
		{"both short of the top bit", val(0x7f, 0), val(0x01, 0), 70, 32, "7f"},
		{"r has its top bit set: a zero byte goes in front", val(0x80, 0), val(0x01, 0), 71, 33, "0080"},
		{"both top bits set", val(0xff, 0), val(0x80, 0), 72, 33, "00ff"},
		{"r has a leading zero byte: it goes", val(0x7f, 1), val(0x01, 0), 69, 31, "7f"},
		{"r has a leading zero byte and then the top bit", val(0x80, 1), val(0x01, 0), 70, 32, "0080"},
		{"r has many leading zeros", val(0x01, 30), val(0x01, 0), 40, 2, "015a"},
		{"r is 1", append(make([]byte, 31), 1), val(0x01, 0), 39, 1, "01"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := append(append([]byte(nil), tc.r...), tc.s...)
			der, err := derSignature(raw)
			if err != nil {
				t.Fatal(err)
			}
			if want := reference(t, raw); !bytes.Equal(der, want) {
				t.Fatalf("DER\n got %x\nwant %x", der, want)
			}
			if len(der) != tc.derLen || int(der[3]) != tc.rLen || !strings.HasPrefix(hex.EncodeToString(der[4:]), tc.rPrefix) {
				t.Errorf("DER %x: length %d (want %d), r length %d (want %d), r begins %x (want %s)", der, len(der), tc.derLen, der[3], tc.rLen, der[4:6], tc.rPrefix)
			}
		})
	}
}

func TestDERSignatureRefuses(t *testing.T) {
	for _, raw := range [][]byte{nil, make([]byte, 63), make([]byte, 65), make([]byte, 96), make([]byte, 64), append(make([]byte, 32), bytes.Repeat([]byte{1}, 32)...)} {
		if der, err := derSignature(raw); err == nil {
			t.Errorf("derSignature(%d bytes %x…) = %x, want an error", len(raw), raw[:min(len(raw), 4)], der)
		}
	}
}

// Real signatures, made with Go's ECDSA and taken apart into r||s as a token returns
// them, come back in DER that verifies and is what encoding/asn1 would write.
func TestDERSignatureOfRealSignatures(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	short, top := 0, 0
	for i := range 2000 {
		d := sha256.Sum256([]byte{byte(i), byte(i >> 8)})
		sig, err := ecdsa.SignASN1(rand.Reader, key, d[:])
		if err != nil {
			t.Fatal(err)
		}
		var rs struct{ R, S *big.Int }
		if _, err := asn1.Unmarshal(sig, &rs); err != nil {
			t.Fatal(err)
		}
		raw := make([]byte, 64)
		rs.R.FillBytes(raw[:32])
		rs.S.FillBytes(raw[32:])
		if raw[0] == 0 || raw[32] == 0 {
			short++
		}
		if raw[0]&0x80 != 0 || raw[32]&0x80 != 0 {
			top++
		}
		der, err := derSignature(raw)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(der, sig) {
			t.Fatalf("DER %x, Go wrote %x", der, sig)
		}
		if !ecdsa.VerifyASN1(&key.PublicKey, d[:], der) {
			t.Fatal("does not verify")
		}
	}
	if short == 0 || top == 0 {
		t.Errorf("2000 signatures had %d with a leading zero and %d with a top bit set; expected both", short, top)
	}
}

func TestParseECPoint(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	point, err := key.PublicKey.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	wrapped, _ := asn1.Marshal(point)
	for name, v := range map[string][]byte{"DER OCTET STRING": wrapped, "bare point": point} {
		pub, err := parseECPoint(v)
		if err != nil || !pub.Equal(&key.PublicKey) {
			t.Errorf("%s: %v", name, err)
		}
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	b, _ := p384.PublicKey.Bytes()
	w, _ := asn1.Marshal(b)
	for name, v := range map[string][]byte{"P-384 point": w, "garbage": {1, 2, 3}, "bad point": append([]byte{4}, make([]byte, 64)...)} {
		if _, err := parseECPoint(v); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	spki, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if _, err := parseECPoint(spki); err == nil {
		t.Error("an SPKI taken for a point")
	}
}

func TestCurveNames(t *testing.T) {
	if err := checkP256Params(p256Params); err != nil {
		t.Errorf("P-256: %v", err)
	}
	p384 := mustMarshal(asn1.ObjectIdentifier{1, 3, 132, 0, 34})
	if err := checkP256Params(p384); err == nil || !strings.Contains(err.Error(), "P-384") {
		t.Errorf("P-384: %v", err)
	}
	if err := checkP256Params([]byte{0x13, 0x03, 'a', 'b', 'c'}); err == nil {
		t.Error("a printable string taken for a named curve")
	}
}
