//go:build cgo

package pkcs11

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/miekg/pkcs11"
)

// connectError is why a key could not be reached. field names the config field at fault,
// if one is, so that a failure at start-up is a config error naming it (exit status 2).
type connectError struct {
	field string
	msg   string
	err   error // the PKCS#11 error, if any
	// final: re-initialising the library will not help (a rejected PIN, a key of the
	// wrong type, a different key under the configured name).
	final bool
}

func (e *connectError) Error() string {
	if e.err != nil {
		return e.msg + ": " + e.err.Error()
	}
	return e.msg
}

func (e *connectError) Unwrap() error { return e.err }

func errorf(field string, final bool, err error, format string, args ...any) *connectError {
	return &connectError{field: field, msg: fmt.Sprintf(format, args...), err: err, final: final}
}

// isCode reports whether err is the PKCS#11 return value code.
func isCode(err error, codes ...uint) bool {
	var e pkcs11.Error
	if !errors.As(err, &e) {
		return false
	}
	for _, c := range codes {
		if uint(e) == c {
			return true
		}
	}
	return false
}

// findToken finds the one token that the config names. The caller holds m.mu for
// reading.
func (c *config) findToken(p cryptoki) (uint, pkcs11.TokenInfo, error) {
	slots, err := p.GetSlotList(true)
	if err != nil {
		return 0, pkcs11.TokenInfo{}, errorf("", false, err, "C_GetSlotList failed")
	}
	field := "token_label"
	if c.tokenLabel == "" {
		field = "token_serial"
	}
	var seen []string
	var match []uint
	var info pkcs11.TokenInfo
	for _, slot := range slots {
		ti, err := p.GetTokenInfo(slot)
		if err != nil {
			seen = append(seen, fmt.Sprintf("slot %d (C_GetTokenInfo: %v)", slot, err))
			continue
		}
		if ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED == 0 {
			continue
		}
		seen = append(seen, fmt.Sprintf("%q (serial %s)", ti.Label, ti.SerialNumber))
		if (c.tokenLabel != "" && ti.Label != c.tokenLabel) ||
			(c.tokenSerial != "" && ti.SerialNumber != c.tokenSerial) ||
			(c.manufacturer != "" && ti.ManufacturerID != c.manufacturer) ||
			(c.model != "" && ti.Model != c.model) {
			continue
		}
		match = append(match, slot)
		info = ti
	}
	switch len(match) {
	case 1:
		return match[0], info, nil
	case 0:
		tokens := "it has no initialised token"
		if len(seen) > 0 {
			tokens = "tokens there: " + strings.Join(seen, ", ")
		}
		return 0, info, errorf(field, false, nil, "no %s in %s; %s", c.tokenWanted(), c.module, tokens)
	}
	return 0, info, errorf(field, true, nil, "%d tokens match %s (%s); name one by token_serial", len(match), c.tokenWanted(), strings.Join(seen, ", "))
}

func (c *config) tokenWanted() string {
	var parts []string
	if c.tokenLabel != "" {
		parts = append(parts, fmt.Sprintf("label %q", c.tokenLabel))
	}
	if c.tokenSerial != "" {
		parts = append(parts, fmt.Sprintf("serial %q", c.tokenSerial))
	}
	if c.manufacturer != "" {
		parts = append(parts, fmt.Sprintf("manufacturer %q", c.manufacturer))
	}
	if c.model != "" {
		parts = append(parts, fmt.Sprintf("model %q", c.model))
	}
	return "token with " + strings.Join(parts, " and ")
}

// keyTemplate selects objects of class by the configured label and id.
func (c *config) keyTemplate(class uint) []*pkcs11.Attribute {
	t := []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_CLASS, class)}
	if c.keyLabel != "" {
		t = append(t, pkcs11.NewAttribute(pkcs11.CKA_LABEL, c.keyLabel))
	}
	if c.keyID != nil {
		t = append(t, pkcs11.NewAttribute(pkcs11.CKA_ID, c.keyID))
	}
	return t
}

func (c *config) keyField() string {
	if c.keyLabel != "" {
		return "key_label"
	}
	return "key_id"
}

func (c *config) keyWanted() string {
	var parts []string
	if c.keyLabel != "" {
		parts = append(parts, fmt.Sprintf("label %q", c.keyLabel))
	}
	if c.keyID != nil {
		parts = append(parts, "id "+hex.EncodeToString(c.keyID))
	}
	return strings.Join(parts, " and ")
}

// findObjects returns up to max handles of objects matching t.
func findObjects(p cryptoki, sh pkcs11.SessionHandle, t []*pkcs11.Attribute, max int) ([]pkcs11.ObjectHandle, error) {
	if err := p.FindObjectsInit(sh, t); err != nil {
		return nil, err
	}
	objs, _, err := p.FindObjects(sh, max)
	if ferr := p.FindObjectsFinal(sh); err == nil {
		err = ferr
	}
	return objs, err
}

// keyInfo is what a key needs to know about its private key object.
type keyInfo struct {
	handle     pkcs11.ObjectHandle
	id         []byte
	label      string
	alwaysAuth bool
}

// findKey finds the one private key the config names and checks that it is an EC P-256
// key allowed to sign. The caller holds m.mu for reading.
func (c *config) findKey(p cryptoki, sh pkcs11.SessionHandle, token string, loggedIn bool) (*keyInfo, error) {
	objs, err := findObjects(p, sh, c.keyTemplate(pkcs11.CKO_PRIVATE_KEY), 2)
	if err != nil {
		return nil, errorf("", false, err, "C_FindObjects failed")
	}
	switch len(objs) {
	case 0:
		hint := ""
		if !loggedIn {
			hint = " (a token shows its private keys only after a login: is pin set?)"
		}
		return nil, errorf(c.keyField(), false, nil, "no private key with %s on token %q%s", c.keyWanted(), token, hint)
	case 2:
		return nil, errorf(c.keyField(), true, nil, "more than one private key with %s on token %q; name the key by key_id (its CKA_ID) as well", c.keyWanted(), token)
	}
	k := &keyInfo{handle: objs[0]}
	attrs, err := p.GetAttributeValue(sh, k.handle, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, nil),
		pkcs11.NewAttribute(pkcs11.CKA_ID, nil),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, nil),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, nil),
	})
	if err != nil {
		return nil, errorf("", false, err, "cannot read the attributes of the private key with %s", c.keyWanted())
	}
	var keyType uint64
	var canSign bool
	for _, a := range attrs {
		switch a.Type {
		case pkcs11.CKA_KEY_TYPE:
			keyType = ulong(a.Value)
		case pkcs11.CKA_ID:
			k.id = a.Value
		case pkcs11.CKA_LABEL:
			k.label = string(a.Value)
		case pkcs11.CKA_SIGN:
			canSign = len(a.Value) == 1 && a.Value[0] != 0
		}
	}
	if keyType != pkcs11.CKK_EC {
		return nil, errorf(c.keyField(), true, nil, "the private key with %s on token %q is %s; provenanced signs with EC P-256 only", c.keyWanted(), token, keyTypeName(keyType))
	}
	attrs, err = p.GetAttributeValue(sh, k.handle, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, nil)})
	if err != nil || len(attrs) != 1 {
		return nil, errorf("", false, err, "cannot read CKA_EC_PARAMS of the private key with %s", c.keyWanted())
	}
	if err := checkP256Params(attrs[0].Value); err != nil {
		return nil, errorf(c.keyField(), true, nil, "the private key with %s on token %q: %v", c.keyWanted(), token, err)
	}
	if !canSign {
		return nil, errorf(c.keyField(), true, nil, "the private key with %s on token %q may not sign (CKA_SIGN is false)", c.keyWanted(), token)
	}
	// Tokens before PKCS#11 2.20 do not know the attribute; they have no such keys.
	if attrs, err := p.GetAttributeValue(sh, k.handle, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_ALWAYS_AUTHENTICATE, nil)}); err == nil && len(attrs) == 1 {
		k.alwaysAuth = len(attrs[0].Value) == 1 && attrs[0].Value[0] != 0
	}
	return k, nil
}

// publicKey finds the private key's public key: the public key object with the same
// CKA_ID (or, without one, the same label), else the private key's CKA_PUBLIC_KEY_INFO.
func (c *config) publicKey(p cryptoki, sh pkcs11.SessionHandle, k *keyInfo, token string) (*ecdsa.PublicKey, error) {
	t := []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY)}
	switch {
	case len(k.id) > 0:
		t = append(t, pkcs11.NewAttribute(pkcs11.CKA_ID, k.id))
	case k.label != "":
		t = append(t, pkcs11.NewAttribute(pkcs11.CKA_LABEL, k.label))
	default:
		t = nil
	}
	if t != nil {
		objs, err := findObjects(p, sh, t, 2)
		if err != nil {
			return nil, errorf("", false, err, "C_FindObjects failed")
		}
		if len(objs) == 1 {
			attrs, err := p.GetAttributeValue(sh, objs[0], []*pkcs11.Attribute{
				pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, nil),
				pkcs11.NewAttribute(pkcs11.CKA_EC_POINT, nil),
			})
			if err != nil {
				return nil, errorf(c.keyField(), true, err, "cannot read the public key that goes with the private key with %s on token %q", c.keyWanted(), token)
			}
			var params, point []byte
			for _, a := range attrs {
				switch a.Type {
				case pkcs11.CKA_EC_PARAMS:
					params = a.Value
				case pkcs11.CKA_EC_POINT:
					point = a.Value
				}
			}
			if err := checkP256Params(params); err != nil {
				return nil, errorf(c.keyField(), true, nil, "the public key that goes with the private key with %s on token %q: %v", c.keyWanted(), token, err)
			}
			pub, err := parseECPoint(point)
			if err != nil {
				return nil, errorf(c.keyField(), true, nil, "the public key that goes with the private key with %s on token %q: %v", c.keyWanted(), token, err)
			}
			return pub, nil
		}
	}
	attrs, err := p.GetAttributeValue(sh, k.handle, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_PUBLIC_KEY_INFO, nil)})
	if err == nil && len(attrs) == 1 && len(attrs[0].Value) > 0 {
		pk, err := x509.ParsePKIXPublicKey(attrs[0].Value)
		if pub, ok := pk.(*ecdsa.PublicKey); err == nil && ok && pub.Curve == elliptic.P256() {
			return pub, nil
		}
	}
	return nil, errorf(c.keyField(), true, nil, "found no public key for the private key with %s on token %q: provenanced needs its public key object (CKO_PUBLIC_KEY with the same CKA_ID) to know which key it signs with", c.keyWanted(), token)
}

// probeDigest is what a key signs to show, at start and after recovery, that its private
// key is the pair of the public key the daemon announces.
var probeDigest = sha256.Sum256([]byte("provenanced: does this private key match its public key?"))

// Key types of PKCS#11 3.0 that miekg/pkcs11 does not name.
const (
	ckkECEdwards    = 0x40
	ckkECMontgomery = 0x41
)

func keyTypeName(t uint64) string {
	switch t {
	case pkcs11.CKK_RSA:
		return "an RSA key"
	case pkcs11.CKK_DSA:
		return "a DSA key"
	case ckkECEdwards:
		return "an EdDSA key"
	case ckkECMontgomery:
		return "an X25519/X448 key"
	}
	return fmt.Sprintf("a key of type CKK 0x%x", t)
}

// ulong decodes a CK_ULONG attribute value, which is in the machine's byte order.
func ulong(b []byte) uint64 {
	switch len(b) {
	case 8:
		return binary.NativeEndian.Uint64(b)
	case 4:
		return uint64(binary.NativeEndian.Uint32(b))
	}
	return ^uint64(0)
}
