package main

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/ib1/provenanced/backends"
	"github.com/ib1/provenanced/conf"
	"github.com/ib1/provenanced/provenance"
)

func init() {
	register("keygen", "create the key [keys.NAME] describes, in its backend, and print its public key", keygenCmd)
	register("csr", "make a CSR signed by a key wherever it lives (HSM, KMS, PEM)", csrCmd)
}

// multiFlag collects a repeated flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// loadConfig loads -config FILE, or PROVENANCED_CONFIG.
func loadConfig(configPath string) (*conf.Config, error) {
	if configPath == "" {
		configPath = os.Getenv("PROVENANCED_CONFIG")
	}
	if configPath == "" {
		return nil, usageError("-config FILE is required (or PROVENANCED_CONFIG)")
	}
	return conf.Load(configPath)
}

// loadKeySpec loads the config and finds [keys.NAME] (NAME may be empty when there is one).
func loadKeySpec(configPath, name string) (*conf.Config, *conf.Key, error) {
	cfg, err := loadConfig(configPath)
	if err != nil {
		return nil, nil, err
	}
	if name == "" {
		if len(cfg.Keys) != 1 {
			return nil, nil, usageError(fmt.Sprintf("-key NAME is required: %s has keys %s", cfg.File, strings.Join(cfg.KeyNames(), ", ")))
		}
		return cfg, cfg.Keys[0], nil
	}
	spec := cfg.KeyByName(name)
	if spec == nil {
		return nil, nil, cfg.Errorf("keys."+name, "no such key; keys: %s", strings.Join(cfg.KeyNames(), ", "))
	}
	return cfg, spec, nil
}

func keygenCmd(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("keygen", "-config FILE -key NAME", stderr)
	configPath := fs.String("config", "", "the config `file`")
	name := fs.String("key", "", "the key's `name` ([keys.NAME])")
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	_, spec, err := loadKeySpec(*configPath, *name)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pub, err := backends.Generate(ctx, spec)
	if err != nil {
		return err
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "created key %q in backend %s\n", spec.Name, spec.Backend)
	return pem.Encode(stdout, &pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func csrCmd(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("csr", "-config FILE -key NAME (-subject DN [-uri URI]... | -from CSR) [-out FILE]", stderr)
	configPath := fs.String("config", "", "the config `file`")
	name := fs.String("key", "", "the key's `name` ([keys.NAME])")
	subject := fs.String("subject", "", "the subject `DN`, e.g. /C=GB/O=Example Ltd/CN=https://directory.example/a/123")
	var uris, dns multiFlag
	fs.Var(&uris, "uri", "a URI subject alternative name (repeatable)")
	fs.Var(&dns, "dns", "a DNS subject alternative name (repeatable)")
	from := fs.String("from", "", "take the subject and extensions of this CSR `file` (made with any key)")
	out := fs.String("out", "", "write the CSR (PEM) to this `file` instead of standard output")
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	req := provenance.CSRRequest{Subject: *subject, URIs: uris, DNS: dns}
	if *from != "" {
		data, err := os.ReadFile(*from)
		if err != nil {
			return err
		}
		req.From = data
	} else if *subject == "" {
		return usageError("give -subject DN (with -uri for the member's application URL) or -from CSR")
	}
	_, spec, err := loadKeySpec(*configPath, *name)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	k, err := backends.Open(ctx, spec, backends.Options{WithoutCertificates: true})
	if err != nil {
		return err
	}
	defer k.Close()
	csr, err := provenance.CreateCSR(rand.Reader, k.WithContext(ctx), req)
	if err != nil {
		return fmt.Errorf("key %q: %w", spec.Name, err)
	}
	if *out == "" {
		_, err = stdout.Write(csr)
		return err
	}
	if err := os.WriteFile(*out, csr, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "wrote %s: send it to the Directory; install the bundle it returns as keys.%s.certificates\n", *out, spec.Name)
	return nil
}
