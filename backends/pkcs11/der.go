//go:build cgo

package pkcs11

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/asn1"
	"errors"
	"fmt"
)

// p256Size is the length of r and of s in a P-256 signature.
const p256Size = 32

// derSignature turns the raw r||s that CKM_ECDSA returns (PKCS#11 section 2.3.1) into the
// ASN.1 DER SEQUENCE { r INTEGER, s INTEGER } that Go, OpenSSL and IB1 records carry.
// DER integers are minimal and signed: leading zero bytes go, and a zero byte comes back
// in front of a value whose top bit is set, so each integer takes 1 to 33 bytes and the
// whole at most 72, which keeps every length in one byte.
func derSignature(raw []byte) ([]byte, error) {
	if len(raw) != 2*p256Size {
		return nil, fmt.Errorf("the token returned a %d-byte ECDSA signature; a P-256 one is %d bytes (r||s)", len(raw), 2*p256Size)
	}
	r, s := derInt(raw[:p256Size]), derInt(raw[p256Size:])
	if r == nil || s == nil {
		return nil, errors.New("the token returned an ECDSA signature with r or s zero")
	}
	out := make([]byte, 0, 6+len(r)+len(s))
	out = append(out, 0x30, byte(4+len(r)+len(s)))
	out = append(out, 0x02, byte(len(r)))
	out = append(out, r...)
	out = append(out, 0x02, byte(len(s)))
	return append(out, s...), nil
}

// derInt returns the content octets of the DER INTEGER for the unsigned big-endian b, or
// nil if b is zero.
func derInt(b []byte) []byte {
	for len(b) > 0 && b[0] == 0 {
		b = b[1:]
	}
	if len(b) == 0 {
		return nil
	}
	if b[0]&0x80 != 0 {
		return append([]byte{0}, b...)
	}
	return b
}

// OID of the named curve P-256 (prime256v1, secp256r1).
var oidP256 = asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7}

// p256Params is CKA_EC_PARAMS for P-256: the DER of its OID.
var p256Params = mustMarshal(oidP256)

var curveNames = map[string]string{
	"1.2.840.10045.3.1.7":  "P-256",
	"1.3.132.0.34":         "P-384 (secp384r1)",
	"1.3.132.0.35":         "P-521 (secp521r1)",
	"1.3.132.0.10":         "secp256k1",
	"1.3.101.112":          "Ed25519",
	"1.3.36.3.3.2.8.1.1.7": "brainpoolP256r1",
}

func mustMarshal(v any) []byte {
	b, err := asn1.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// checkP256Params says which curve CKA_EC_PARAMS names when it is not P-256.
func checkP256Params(params []byte) error {
	var oid asn1.ObjectIdentifier
	if rest, err := asn1.Unmarshal(params, &oid); err != nil || len(rest) > 0 {
		return errors.New("its CKA_EC_PARAMS are not a named curve; provenanced signs with EC P-256 only")
	}
	if oid.Equal(oidP256) {
		return nil
	}
	name, ok := curveNames[oid.String()]
	if !ok {
		name = "the curve " + oid.String()
	}
	return fmt.Errorf("it is an EC key on %s; provenanced signs with EC P-256 only", name)
}

// parseECPoint reads CKA_EC_POINT: the DER OCTET STRING that holds the uncompressed
// point, as the specification says, or the bare point, as some tokens return it.
func parseECPoint(v []byte) (*ecdsa.PublicKey, error) {
	point := v
	if len(v) != 1+2*p256Size || v[0] != 4 {
		var os []byte
		if rest, err := asn1.Unmarshal(v, &os); err != nil || len(rest) > 0 {
			return nil, errors.New("CKA_EC_POINT is neither a DER OCTET STRING nor an uncompressed point")
		}
		point = os
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), point)
	if err != nil {
		return nil, fmt.Errorf("CKA_EC_POINT is not a P-256 point: %v", err)
	}
	return pub, nil
}
