package source_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ib1/provenanced/backends"
	_ "github.com/ib1/provenanced/backends/pem"
	"github.com/ib1/provenanced/conf"
	"github.com/ib1/provenanced/internal/devsetup"
	"github.com/ib1/provenanced/internal/source"
	"github.com/ib1/provenanced/testenv"
	"github.com/ib1/provenanced/testenv/fakes3"
)

// s3Env starts an S3-compatible server and points the SDK's standard chain at it as an
// operator would: AWS_ENDPOINT_URL_S3, a region and (dummy) credentials in the
// environment, nothing from ~/.aws.
func s3Env(t *testing.T) *fakes3.Server {
	t.Helper()
	srv := fakes3.Start(t)
	for k, v := range testenv.AWSTestEnv {
		t.Setenv(k, v)
	}
	t.Setenv("AWS_DEFAULT_REGION", "eu-west-2") // what the original service's .env sets
	t.Setenv("AWS_ENDPOINT_URL_S3", srv.URL)
	return srv
}

func readCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestReadSourceS3(t *testing.T) {
	srv := s3Env(t)
	srv.Put(t, "provenance-certs", "signing/bundle.pem", []byte("bundle"))
	srv.Put(t, "provenance-certs", "denied.pem", []byte("secret"))
	srv.Deny("provenance-certs", "denied.pem")

	data, err := source.Read(readCtx(t), "s3://provenance-certs/signing/bundle.pem")
	if err != nil || string(data) != "bundle" {
		t.Fatalf("ReadSource = %q, %v", data, err)
	}

	for _, tc := range []struct{ ref, want string }{
		{"s3://provenance-certs/missing.pem", `not found: bucket "provenance-certs" has no object "missing.pem"`},
		{"s3://no-such-bucket/bundle.pem", `not found: there is no bucket "no-such-bucket"`},
		{"s3://provenance-certs/denied.pem", "access denied (AccessDenied: Access Denied): the daemon's identity needs s3:GetObject on arn:aws:s3:::provenance-certs/denied.pem"},
		{"s3://provenance-certs", "needs both a bucket and an object key"},
		{"s3:///bundle.pem", "needs both a bucket and an object key"},
	} {
		_, err := source.Read(readCtx(t), tc.ref)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.ref, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), testenv.DummySecretKey) {
			t.Errorf("%s: the error shows the secret key: %v", tc.ref, err)
		}
	}
}

func TestReadSourceS3NeedsCredentials(t *testing.T) {
	s3Env(t)
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	_, err := source.Read(readCtx(t), "s3://provenance-certs/bundle.pem")
	if err == nil || !strings.Contains(err.Error(), "no AWS credentials") {
		t.Errorf("without credentials: %v", err)
	}
}

func TestReadSourceS3NeedsRegion(t *testing.T) {
	s3Env(t)
	t.Setenv("AWS_DEFAULT_REGION", "")
	_, err := source.Read(readCtx(t), "s3://provenance-certs/bundle.pem")
	if err == nil || !strings.Contains(err.Error(), "AWS_REGION") {
		t.Errorf("without a region: %v", err)
	}
}

// s3:// certificates and root_ca pass through the config as they are, and a key whose
// bundle is in S3 opens; a missing or refused object stops the start with an error that
// names the object.
func TestS3SourcesAtStart(t *testing.T) {
	srv := s3Env(t)
	now := time.Now()
	pki, err := devsetup.NewPKI(now)
	if err != nil {
		t.Fatal(err)
	}
	key, err := devsetup.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := pki.Issue(&key.PublicKey, devsetup.DevMember(now))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	files, err := pki.WriteFiles(dir, key, leaf)
	if err != nil {
		t.Fatal(err)
	}
	srv.Put(t, "provenance-certs", "signing-bundle.pem", pki.Bundle(leaf))
	srv.Put(t, "provenance-certs", "root-ca.pem", devsetup.CertPEM(pki.Root.Cert))
	srv.Put(t, "provenance-certs", "denied.pem", pki.Bundle(leaf))
	srv.Deny("provenance-certs", "denied.pem")

	load := func(bundle string) *conf.Config {
		t.Helper()
		return testenv.NewConfig().
			Table("provenance", "root_ca", "s3://provenance-certs/root-ca.pem").
			PEMKey("signing", files.PrivateKey, bundle).
			Load(t, dir)
	}

	cfg := load("s3://provenance-certs/signing-bundle.pem")
	if cfg.Provenance.RootCA != "s3://provenance-certs/root-ca.pem" || cfg.Keys[0].Certificates != "s3://provenance-certs/signing-bundle.pem" {
		t.Fatalf("s3:// sources were rewritten: %q, %q", cfg.Provenance.RootCA, cfg.Keys[0].Certificates)
	}
	root, err := source.Read(readCtx(t), cfg.Provenance.RootCA)
	if err != nil || string(root) != string(devsetup.CertPEM(pki.Root.Cert)) {
		t.Fatalf("root_ca: %v", err)
	}
	k, err := backends.Open(readCtx(t), cfg.Keys[0], backends.Options{ReadSource: source.Read})
	if err != nil {
		t.Fatal(err)
	}
	if k.Leaf().SerialNumber.Cmp(leaf.SerialNumber) != 0 {
		t.Error("the key's certificate is not the one in S3")
	}
	k.Close()

	for _, tc := range []struct{ ref, want string }{
		{"s3://provenance-certs/missing.pem", "cannot read s3://provenance-certs/missing.pem: not found"},
		{"s3://provenance-certs/denied.pem", "cannot read s3://provenance-certs/denied.pem: access denied"},
	} {
		_, err := backends.Open(readCtx(t), load(tc.ref).Keys[0], backends.Options{ReadSource: source.Read})
		var ce *conf.Error
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), "keys.signing.certificates") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want a config error containing %q", tc.ref, err, tc.want)
		}
	}
}
