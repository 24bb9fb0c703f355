//go:build cgo

package pkcs11

import (
	"bytes"
	"strings"
	"testing"
)

func TestParseURI(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uri
	}{
		{"pkcs11:token=provenance;object=signing?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/provenanced/pin",
			uri{token: "provenance", object: "signing", modulePath: "/usr/lib/softhsm/libsofthsm2.so", pinSource: "file:/etc/provenanced/pin"}},
		{"pkcs11:serial=8f4e1f2a0d3c7b6e;id=%01%A2;type=private",
			uri{serial: "8f4e1f2a0d3c7b6e", id: []byte{0x01, 0xa2}}},
		{"pkcs11:token=My%20Token;object=a+b%3Bc;manufacturer=SoftHSM%20project;model=SoftHSM%20v2",
			uri{token: "My Token", object: "a+b;c", manufacturer: "SoftHSM project", model: "SoftHSM v2"}},
		{"pkcs11:", uri{}},
	} {
		got, err := parseURI(tc.in)
		if err != nil {
			t.Errorf("%s: %v", tc.in, err)
			continue
		}
		if got.token != tc.want.token || got.serial != tc.want.serial || got.object != tc.want.object || !bytes.Equal(got.id, tc.want.id) ||
			got.modulePath != tc.want.modulePath || got.pinSource != tc.want.pinSource || got.manufacturer != tc.want.manufacturer || got.model != tc.want.model {
			t.Errorf("%s:\n got %+v\nwant %+v", tc.in, *got, tc.want)
		}
	}
}

func TestParseURIRefuses(t *testing.T) {
	for in, says := range map[string]string{
		"token=x": `begins with "pkcs11:"`,
		"pkcs11:token=x;object=y?pin-value=123456":  "pin-value",
		"pkcs11:token=x;pin-value=123456":           "pin-value",
		"pkcs11:token=x;type=public":                "type=private",
		"pkcs11:slot-id=3;object=y":                 "slot",
		"pkcs11:token=x;colour=blue":                `unknown path attribute "colour"`,
		"pkcs11:token=x?module-name=softhsm2":       "module-path",
		"pkcs11:token=x?max-sessions=3":             `unknown query attribute "max-sessions"`,
		"pkcs11:token=x;token=y":                    "twice",
		"pkcs11:token=%zz":                          "percent-encoding",
		"pkcs11:token=x;123456":                     `without "="`,
		"pkcs11:token=x;object=y?pin-value=%zz1234": "pin-value",
	} {
		_, err := parseURI(in)
		if err == nil {
			t.Errorf("%s: no error", in)
			continue
		}
		if !strings.Contains(err.Error(), says) {
			t.Errorf("%s: %v; want it to say %q", in, err, says)
		}
		if strings.Contains(err.Error(), "123456") || strings.Contains(err.Error(), "zz1234") {
			t.Errorf("%s: the error repeats the PIN: %v", in, err)
		}
	}
}

func TestParseHexID(t *testing.T) {
	for in, want := range map[string][]byte{"01": {1}, "0x0a0B": {10, 11}, "a1:b2:c3": {0xa1, 0xb2, 0xc3}} {
		got, err := parseHexID(in)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: %x, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "0x", "xyz", "123"} {
		if _, err := parseHexID(in); err == nil {
			t.Errorf("%q: no error", in)
		}
	}
}

func TestLocation(t *testing.T) {
	for _, tc := range []struct {
		c    config
		want string
	}{
		{config{tokenLabel: "provenance", keyLabel: "signing"}, `PKCS#11 token "provenance" key label "signing"`},
		{config{tokenSerial: "abc", keyID: []byte{1, 2}}, `PKCS#11 token serial "abc" key id 0102`},
		{config{tokenLabel: "t", tokenSerial: "s", keyLabel: "k", keyID: []byte{0xff}}, `PKCS#11 token "t" serial "s" key label "k" id ff`},
	} {
		if got := tc.c.location(); got != tc.want {
			t.Errorf("location() = %s, want %s", got, tc.want)
		}
	}
}
