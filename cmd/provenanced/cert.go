package main

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/ib1/provenanced/backends"
	"github.com/ib1/provenanced/conf"
	"github.com/ib1/provenanced/internal/source"
	"github.com/ib1/provenanced/provenance"
)

func init() {
	register("cert", "check a key's certificate bundle (cert check)", certCmd)
}

func certCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && isHelp(args[0]) {
		return subcommandHelp(stderr, "cert", "check -config FILE [-key NAME] [-root ROOT.pem]",
			"check", "check that each key's certificate is for that key, chains to the root CA and is valid now")
	}
	if len(args) == 0 || args[0] != "check" {
		return usageError("usage: provenanced cert check -config FILE [-key NAME] [-root ROOT.pem]")
	}
	fs := newFlags("cert check", "-config FILE [-key NAME] [-root ROOT.pem]", stderr)
	configPath := fs.String("config", "", "the config `file`")
	name := fs.String("key", "", "check only this key (default: every key with certificates)")
	rootPath := fs.String("root", "", "the root CA (default provenance.root_ca)")
	if err := parseFlags(fs, args[1:], 0); err != nil {
		return err
	}
	cfg, err := loadConfig(*configPath)
	if err != nil {
		return err
	}
	specs, err := keysToCheck(cfg, *name)
	if err != nil {
		return err
	}
	root := *rootPath
	if root == "" {
		root = cfg.Provenance.RootCA
	}
	if root == "" {
		return cfg.Errorf("provenance.root_ca", "missing: the chain is checked against the root CA (or give -root ROOT.pem)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	roots, err := readRootCAs(ctx, root)
	if err != nil {
		return err
	}
	return checkKeys(ctx, stdout, specs, roots, *name != "")
}

// keysToCheck is the key named, or every key when name is "".
func keysToCheck(cfg *conf.Config, name string) ([]*conf.Key, error) {
	if name == "" {
		return cfg.Keys, nil
	}
	spec := cfg.KeyByName(name)
	if spec == nil {
		return nil, cfg.Errorf("keys."+name, "no such key; keys: %s", strings.Join(cfg.KeyNames(), ", "))
	}
	return []*conf.Key{spec}, nil
}

// readRootCAs reads the root CA certificates from a path or s3:// URL.
func readRootCAs(ctx context.Context, path string) ([]*x509.Certificate, error) {
	data, err := source.Read(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("root CA %s: %v", path, err)
	}
	roots, err := provenance.ParseRootsPEM(data)
	if err != nil {
		return nil, fmt.Errorf("root CA %s: %v", path, err)
	}
	return roots, nil
}

// checkKeys checks each key's bundle and reports on w. It goes on past a key that fails,
// so that one run tells about every key. A key without certificates is skipped, unless
// it is the one key named.
func checkKeys(ctx context.Context, w io.Writer, specs []*conf.Key, roots []*x509.Certificate, named bool) error {
	failed := 0
	for _, spec := range specs {
		if spec.Certificates == "" {
			if named {
				return spec.Errorf("certificates", "missing: the key has no bundle to check")
			}
			fmt.Fprintf(w, "key %s: no certificates configured (skipped)\n", spec.Name)
			continue
		}
		if err := checkOne(ctx, w, spec, roots); err != nil {
			fmt.Fprintf(w, "key %s: FAILED: %v\n", spec.Name, err)
			failed++
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d key(s) failed the check", failed)
	}
	return nil
}

func checkOne(ctx context.Context, w io.Writer, spec *conf.Key, roots []*x509.Certificate) error {
	k, err := backends.Open(ctx, spec, backends.Options{WithoutCertificates: true})
	if err != nil {
		return err
	}
	defer k.Close()
	data, err := source.Read(ctx, spec.Certificates)
	if err != nil {
		return fmt.Errorf("cannot read %s: %v", spec.Certificates, err)
	}
	chain, err := provenance.ParseChainPEM(data)
	if err != nil {
		return fmt.Errorf("%s: %v", spec.Certificates, err)
	}
	now := time.Now()
	r, err := provenance.CheckBundle(chain, roots, k.Public(), "the key in "+k.Location(), now)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, `key %s (%s, %s)
  bundle:       %s
  subject:      %s
  serial:       %s
  valid:        %s .. %s (%d days left)
  member:       %s
  organisation: %s
  application:  %s
  roles:        %s
  chain:        %s
  OK: the certificate is for this key, chains to the root CA and is valid now
`, spec.Name, spec.Backend, k.Location(), spec.Certificates, r.Subject, r.Serial,
		r.NotBefore.UTC().Format(time.RFC3339), r.NotAfter.UTC().Format(time.RFC3339), r.DaysLeft(now),
		r.Signer.Member, r.Signer.Name, r.Signer.Application, strings.Join(r.Signer.Roles, ", "), strings.Join(r.Chain, ", issued by "))
	return nil
}
