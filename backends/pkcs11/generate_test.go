//go:build cgo

package pkcs11

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/ib1/provenanced/backends"
	"github.com/ib1/provenanced/conf"
	"github.com/ib1/provenanced/testenv"
)

func genBody(label, id string, more ...any) []any { return kinds()[0].genBody(label, id, more...) }

// genBody is the [keys.k] table of a key to generate on this kind's spare token, labelled
// label and with the id id (each left out when ""), with more set after.
func (k kind) genBody(label, id string, more ...any) []any {
	b := []any{"backend", "pkcs11", "module", k.module, "token_label", k.spare, "pin", "file:user.pin"}
	if label != "" {
		b = append(b, "key_label", label)
	}
	if id != "" {
		b = append(b, "key_id", id)
	}
	return append(b, more...)
}

// objects is what pkcs11-tool says of the token's objects labelled label, by kind
// ("Private Key Object", "Public Key Object").
func objects(t *testing.T, label string) map[string]string { return kinds()[0].objects(t, label) }

func (k kind) objects(t *testing.T, label string) map[string]string {
	t.Helper()
	out, err := k.run("pkcs11-tool", "--token-label", k.spare, "--login", "--pin", home.pin, "--list-objects")
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]string{}
	var kind string
	var b strings.Builder
	flush := func() {
		if kind != "" && strings.Contains(b.String(), "label:      "+label+"\n") {
			found[kind] = b.String()
		}
		b.Reset()
	}
	for _, line := range strings.SplitAfter(string(out), "\n") {
		if line != "" && line[0] != ' ' {
			flush()
			kind = ""
			if i := strings.Index(line, " Object"); i > 0 {
				kind = line[:i+len(" Object")]
			}
		}
		b.WriteString(line)
	}
	flush()
	return found
}

// Key generation on each kind: tpm2-pkcs11 refused the public template SoftHSM took.
func TestGenerate(t *testing.T) {
	for _, k := range kinds() {
		t.Run(k.name, func(t *testing.T) { testGenerate(t, k) })
	}
}

func testGenerate(t *testing.T, k kind) {
	genBody, objects := k.genBody, k.objects
	spec := keySpec(t, genBody("generated", "a1b2")...)
	pub, err := backends.Generate(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	ecPub, ok := pub.(*ecdsa.PublicKey)
	if !ok || ecPub.Curve.Params().Name != "P-256" {
		t.Fatalf("Generate returned %T", pub)
	}
	// What the token says, through another program.
	fromToken, err := k.public(k.spare, testenv.KeySpec{Label: "generated", ID: "a1b2"})
	if err != nil || !ecPub.Equal(fromToken) {
		t.Fatalf("the token's public key (%v) is not the one Generate returned", err)
	}
	priv := objects(t, "generated")["Private Key Object"]
	for _, want := range []string{"EC", "ID:         a1b2", "sign", "sensitive", "always sensitive", "never extractable", "local"} {
		if !strings.Contains(priv, want) {
			t.Errorf("pkcs11-tool does not show %q for the private key:\n%s", want, priv)
		}
	}
	for _, unwanted := range []string{"decrypt", "derive", "unwrap"} {
		if strings.Contains(priv, unwanted) {
			t.Errorf("the private key may %s:\n%s", unwanted, priv)
		}
	}

	// The generated key serves.
	s := openKey(t, genBody("generated", "")...)
	if !s.pub.Equal(ecPub) {
		t.Fatal("Open found another key")
	}
	mustSign(t, s, "generated")

	// Never overwritten: not by label, not by id.
	for _, tc := range []struct {
		body        []any
		field, says string
	}{
		{genBody("generated", ""), "keys.k.key_label", `holds an object with label "generated" already`},
		{genBody("other", "a1b2"), "keys.k.key_id", "holds an object with id a1b2 already"},
	} {
		_, err := backends.Generate(context.Background(), keySpec(t, tc.body...))
		var ce *conf.Error
		if !errors.As(err, &ce) || ce.Key != tc.field || !strings.Contains(err.Error(), tc.says) || !strings.Contains(err.Error(), "never overwrites") {
			t.Errorf("Generate over an existing key: %v; want a config error about %s saying %q", err, tc.field, tc.says)
		}
	}
	again, err := k.public(k.spare, testenv.KeySpec{Label: "generated"})
	if err != nil || !ecPub.Equal(again) {
		t.Errorf("the key changed after the refused attempts (%v)", err)
	}
}

func TestGenerateWithLabelOnlyPicksAnID(t *testing.T) {
	if _, err := backends.Generate(context.Background(), keySpec(t, genBody("label-only", "")...)); err != nil {
		t.Fatal(err)
	}
	objs := objects(t, "label-only")
	id := regexp.MustCompile(`ID:\s+([0-9a-f]+)`)
	priv, pub := id.FindStringSubmatch(objs["Private Key Object"]), id.FindStringSubmatch(objs["Public Key Object"])
	if priv == nil || pub == nil || len(priv[1]) != 16 || priv[1] != pub[1] {
		t.Errorf("want the private and public key to share a random 8-byte CKA_ID: %v", objs)
	}
}

func TestGenerateErrors(t *testing.T) {
	for _, tc := range []struct {
		body        []any
		field, says string
	}{
		{genBody("", ""), "keys.k.key_label", "missing"},
		{genBody("x", "", "pin", "file:wrong.pin"), "keys.k.pin", "rejected the PIN"},
		{genBody("x", "", "token_label", "nope"), "keys.k.token_label", `no token with label "nope"`},
	} {
		_, err := backends.Generate(context.Background(), keySpec(t, tc.body...))
		var ce *conf.Error
		if !errors.As(err, &ce) || ce.Key != tc.field || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("Generate: %v; want a config error about %s saying %q", err, tc.field, tc.says)
		}
	}
	goodLogin(t, tokSpare, home.pin)
}
