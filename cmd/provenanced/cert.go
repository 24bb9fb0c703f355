package main

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"os"
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
		return subcommandHelp(stderr, "cert", "check [-config FILE] [-key NAME] [-root ROOT.pem]",
			"check", "check that each key's certificate is for that key, chains to the root CA and is valid now")
	}
	if len(args) == 0 || args[0] != "check" {
		return usageError("usage: provenanced cert check [-config FILE] [-key NAME] [-root ROOT.pem]")
	}
	fs := newFlags("cert check", "[-config FILE] [-key NAME] [-root ROOT.pem]", stderr)
	configPath := fs.String("config", "", "the config `file` (default $PROVENANCED_CONFIG; without either, the original service's environment and ./.env, as serve reads them)")
	name := fs.String("key", "", "check only this key (default: every key with certificates)")
	rootPath := fs.String("root", "", "the root CA (default provenance.root_ca)")
	if err := parseFlags(fs, args[1:], 0); err != nil {
		return err
	}
	cfg, err := certConfig(*configPath, stderr)
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
	roots, err := certRoots(ctx, cfg, root, *rootPath != "")
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

// certRoots reads the root CA. One that cannot be read from a file, or is not a root
// CA, is the configuration's fault, or the command line's (exit status 2); one in S3
// that cannot be read now may be read later (exit status 1).
func certRoots(ctx context.Context, cfg *conf.Config, root string, fromFlag bool) ([]*x509.Certificate, error) {
	data, err := source.Read(ctx, root)
	if err == nil {
		var roots []*x509.Certificate
		if roots, err = provenance.ParseRootsPEM(data); err == nil {
			return roots, nil
		}
	} else if strings.HasPrefix(root, "s3://") {
		return nil, fmt.Errorf("root CA %s: %v", root, err)
	}
	if fromFlag {
		return nil, usageError(fmt.Sprintf("-root %s: %v", root, err))
	}
	return nil, cfg.Errorf("provenance.root_ca", "%s: %v", root, err)
}

// certConfig is the configuration serve would read: -config FILE, PROVENANCED_CONFIG,
// or else the original service's environment and ./.env, so that a setup moved from the
// original checks its bundle as it is.
func certConfig(configPath string, stderr io.Writer) (*conf.Config, error) {
	if configPath != "" || os.Getenv("PROVENANCED_CONFIG") != "" {
		return loadConfig(configPath)
	}
	cfg, notes, err := fromOriginalEnvironment()
	if err != nil {
		return nil, err
	}
	for _, n := range notes {
		fmt.Fprintf(stderr, "note: %s\n", n)
	}
	return cfg, nil
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
