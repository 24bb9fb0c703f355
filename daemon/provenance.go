package daemon

import (
	"context"
	"crypto/x509"
	"time"

	"github.com/ib1/provenanced/api"
	"github.com/ib1/provenanced/backends"
	"github.com/ib1/provenanced/conf"
	"github.com/ib1/provenanced/internal/source"
	"github.com/ib1/provenanced/provenance"
)

// newProvenance sets up the record routes from [provenance]: the verifier of received
// records (root CA, trust framework, limits) and the key that signs records. What the
// config asks for must work; what it leaves out makes those routes answer 503.
func newProvenance(ctx context.Context, cfg *conf.Config, keys []*backends.Key) (*api.Provenance, error) {
	pc := &cfg.Provenance
	p := &api.Provenance{Scheme: pc.Scheme}
	if pc.RootCA == "" {
		// The answer names the setting, not the config file's path.
		p.NotConfigured = "provenance.root_ca is not set in the daemon's configuration: records can be neither verified nor signed"
		return p, checkCertificates(cfg, keys, nil)
	}
	data, err := source.Read(ctx, pc.RootCA)
	if err != nil {
		return nil, cfg.Errorf("provenance.root_ca", "cannot read %s: %v", pc.RootCA, err)
	}
	roots, err := provenance.ParseRootsPEM(data)
	if err != nil {
		return nil, cfg.Errorf("provenance.root_ca", "%s: %v", pc.RootCA, err)
	}
	v, err := provenance.NewVerifier(roots, pc.TrustFramework, provenance.WithLimits(provenance.Limits{
		MaxDepth:       pc.MaxDepth,
		MaxSteps:       pc.MaxSteps,
		MaxRecordBytes: int(pc.MaxRecordBytes),
		MaxStringBytes: int(pc.MaxStringBytes),
	}))
	if err != nil {
		return nil, cfg.Errorf("provenance", "%v", err)
	}
	p.Verifier = v
	if err := checkCertificates(cfg, keys, roots); err != nil {
		return nil, err
	}
	name, err := cfg.SigningKey()
	if err != nil {
		if len(cfg.Keys) == 0 {
			return p, nil // a verifier only
		}
		return nil, err
	}
	for _, k := range keys {
		if k.Name() == name {
			p.Key = k
		}
	}
	if p.Key == nil {
		return nil, cfg.Errorf("provenance.key", "no key %q is open", name)
	}
	if p.Key.Leaf() == nil {
		if pc.Key != "" {
			return nil, cfg.Errorf("provenance.key", "key %q signs records but has no certificates; set keys.%s.certificates to its bundle", name, name)
		}
		p.Key = nil
	}
	return p, nil
}

// checkCertificates runs the checks of `provenanced cert check` on every key with a
// bundle, except that time is left to /readyz: a certificate that has expired (or is not
// valid yet) lets the daemon start, unready, while everything else is a startup error.
// Without roots the chain is not checked.
func checkCertificates(cfg *conf.Config, keys []*backends.Key, roots []*x509.Certificate) error {
	for _, k := range keys {
		leaf := k.Leaf()
		if leaf == nil {
			continue
		}
		at := time.Now()
		if at.After(leaf.NotAfter) {
			at = leaf.NotAfter
		} else if at.Before(leaf.NotBefore) {
			at = leaf.NotBefore
		}
		if _, err := provenance.CheckBundle(k.Certificates(), roots, k.Public(), "the key in "+k.Location(), at); err != nil {
			spec := cfg.KeyByName(k.Name())
			return spec.Errorf("certificates", "%s: %v", spec.Certificates, err)
		}
	}
	return nil
}
