//go:build cgo

package pkcs11

import (
	"context"
	"crypto"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/miekg/pkcs11"

	"github.com/ib1/provenanced/conf"
)

// Generate creates the P-256 key pair that spec describes on its token, with the
// configured label and id (a random 8-byte CKA_ID if only a label is given), and returns
// its public key. The private key is a token object that is sensitive, never
// extractable and may only sign; the token is asked to confirm those attributes, and a
// key it made otherwise is destroyed again. A token that holds any object with the label
// or the id already is an error: a key is never overwritten, nor made ambiguous.
func Generate(ctx context.Context, spec *conf.Key) (crypto.PublicKey, error) {
	cfg, err := parseConfig(spec)
	if err != nil {
		return nil, err
	}
	if err := checkModule(spec, cfg); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m, err := openModule(cfg.module)
	if err != nil {
		return nil, spec.Errorf(cfg.field("module"), "%v", err)
	}
	defer m.release(nil)
	m.mu.RLock()
	defer m.mu.RUnlock()
	slot, ti, err := cfg.findToken(m.p)
	if err != nil {
		return nil, generateError(spec, cfg, err)
	}
	sess, err := m.openSession(slot, pkcs11.CKF_RW_SESSION, 0)
	if err != nil {
		return nil, generateError(spec, cfg, errorf("", false, err, "C_OpenSession (read/write) on token %q failed", ti.Label))
	}
	defer m.closeSession(sess)
	s := &Signer{cfg: cfg, mod: m}
	s.guard.dir = cfg.stateDir
	if _, err := s.login(m.p, sess.h, ti); err != nil {
		return nil, generateError(spec, cfg, err)
	}
	if err := refuseTakenName(m.p, sess.h, spec, cfg, ti.Label); err != nil {
		return nil, err
	}
	id := cfg.keyID
	if id == nil {
		id = make([]byte, 8)
		if _, err := rand.Read(id); err != nil {
			return nil, err
		}
	}
	public, private := keyPairTemplates(id, cfg.keyLabel)
	pub, err := generateKeyPair(m.p, sess.h, ti.Label, public, private)
	if err != nil {
		return nil, generateError(spec, cfg, err)
	}
	return pub, nil
}

// generateError is a failure of Generate as an error about the key: about a config field,
// when the failure is that field's.
func generateError(spec *conf.Key, cfg *config, err error) error {
	var ce *connectError
	if errors.As(err, &ce) && ce.field != "" {
		return spec.Errorf(cfg.field(ce.field), "%s", ce.Error())
	}
	return fmt.Errorf("keys.%s: %s: %w", spec.Name, cfg.location(), err)
}

// refuseTakenName refuses a label or id that an object on the token has already. Objects
// of any class: a certificate or public key under the name would make the new key
// ambiguous as surely as a private key would.
func refuseTakenName(p cryptoki, sh pkcs11.SessionHandle, spec *conf.Key, cfg *config, token string) error {
	for _, a := range []*pkcs11.Attribute{labelAttr(cfg), idAttr(cfg.keyID)} {
		if a == nil {
			continue
		}
		objs, err := findObjects(p, sh, []*pkcs11.Attribute{a}, 1)
		if err != nil {
			return generateError(spec, cfg, errorf("", false, err, "C_FindObjects failed"))
		}
		if len(objs) > 0 {
			what, field := fmt.Sprintf("label %q", cfg.keyLabel), "key_label"
			if a.Type == pkcs11.CKA_ID {
				what, field = "id "+hex.EncodeToString(cfg.keyID), "key_id"
			}
			return spec.Errorf(cfg.field(field), "token %q holds an object with %s already; provenanced never overwrites a key (delete it first if you really mean to replace it, or choose another name)", token, what)
		}
	}
	return nil
}

// keyPairTemplates are the templates of a P-256 key pair that stays in its token and
// may only sign.
func keyPairTemplates(id []byte, label string) (public, private []*pkcs11.Attribute) {
	// The public half's template says only what the key is and where it lives: what a
	// public key may do is harmless, and tpm2-pkcs11 refuses a template that names
	// CKA_VERIFY or CKA_ENCRYPT (CKR_GENERAL_ERROR) while SoftHSM accepts either form.
	public = []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_EC),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, p256Params),
		pkcs11.NewAttribute(pkcs11.CKA_ID, id),
	}
	private = []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_EC),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, true),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, false),
		pkcs11.NewAttribute(pkcs11.CKA_DERIVE, false),
		pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, false),
		pkcs11.NewAttribute(pkcs11.CKA_ID, id),
	}
	if label != "" {
		public = append(public, pkcs11.NewAttribute(pkcs11.CKA_LABEL, label))
		private = append(private, pkcs11.NewAttribute(pkcs11.CKA_LABEL, label))
	}
	return public, private
}

// generateKeyPair has the token make the key pair and returns its public key. A key the
// token made otherwise than asked, or whose public key cannot be read, is destroyed again:
// nothing would use it, and it would hold the name.
func generateKeyPair(p cryptoki, sh pkcs11.SessionHandle, token string, public, private []*pkcs11.Attribute) (crypto.PublicKey, error) {
	pubH, privH, err := p.GenerateKeyPair(sh, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_EC_KEY_PAIR_GEN, nil)}, public, private)
	if isCode(err, pkcs11.CKR_MECHANISM_INVALID, pkcs11.CKR_MECHANISM_PARAM_INVALID, pkcs11.CKR_DOMAIN_PARAMS_INVALID, pkcs11.CKR_CURVE_NOT_SUPPORTED) {
		return nil, errorf("", true, err, "token %q cannot make P-256 keys (C_GenerateKeyPair with CKM_EC_KEY_PAIR_GEN); provenanced needs a token with EC P-256 support (opencryptoki's soft token, for one, has no EC mechanisms)", token)
	}
	if err != nil {
		return nil, errorf("", false, err, "C_GenerateKeyPair (CKM_EC_KEY_PAIR_GEN, P-256) on token %q failed", token)
	}
	destroy := func() {
		p.DestroyObject(sh, privH)
		p.DestroyObject(sh, pubH)
	}
	if err := checkGenerated(p, sh, privH); err != nil {
		destroy()
		return nil, errorf("", true, nil, "token %q made the key otherwise than asked, so it was destroyed again: %v", token, err)
	}
	attrs, err := p.GetAttributeValue(sh, pubH, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_EC_POINT, nil)})
	if err != nil || len(attrs) != 1 {
		destroy()
		return nil, errorf("", false, err, "cannot read the new public key's CKA_EC_POINT on token %q; the key was destroyed again", token)
	}
	pub, err := parseECPoint(attrs[0].Value)
	if err != nil {
		destroy()
		return nil, errorf("", true, nil, "the new public key on token %q: %v; the key was destroyed again", token, err)
	}
	return pub, nil
}

// checkGenerated reads back the attributes that keep a private key in its token.
func checkGenerated(p cryptoki, sh pkcs11.SessionHandle, h pkcs11.ObjectHandle) error {
	want := []struct {
		typ  uint
		name string
		val  bool
	}{
		{pkcs11.CKA_TOKEN, "CKA_TOKEN", true},
		{pkcs11.CKA_SENSITIVE, "CKA_SENSITIVE", true},
		{pkcs11.CKA_EXTRACTABLE, "CKA_EXTRACTABLE", false},
		{pkcs11.CKA_SIGN, "CKA_SIGN", true},
	}
	tmpl := make([]*pkcs11.Attribute, len(want))
	for i, w := range want {
		tmpl[i] = pkcs11.NewAttribute(w.typ, nil)
	}
	attrs, err := p.GetAttributeValue(sh, h, tmpl)
	if err != nil {
		return fmt.Errorf("cannot read its attributes back: %w", err)
	}
	for _, a := range attrs {
		for _, w := range want {
			if a.Type == w.typ && (len(a.Value) == 1 && a.Value[0] != 0) != w.val {
				return fmt.Errorf("%s is %v", w.name, !w.val)
			}
		}
	}
	return nil
}

func labelAttr(c *config) *pkcs11.Attribute {
	if c.keyLabel == "" {
		return nil
	}
	return pkcs11.NewAttribute(pkcs11.CKA_LABEL, c.keyLabel)
}

func idAttr(id []byte) *pkcs11.Attribute {
	if id == nil {
		return nil
	}
	return pkcs11.NewAttribute(pkcs11.CKA_ID, id)
}
