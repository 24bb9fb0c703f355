package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/ib1/provenanced/internal/devsetup"
	"github.com/ib1/provenanced/testenv"
)

// setupKMS starts the local-kms emulator with a P-256 key and its certificate. The
// baseline is direct SDK Sign calls to the same emulator, from this process, with as
// many clients as the row has and the same connection pool the daemon has.
func setupKMS(dir string) (*backendSetup, error) {
	testenv.SetAWSTestEnv() // dummy credentials; nothing from ~/.aws; nothing leaves 127.0.0.1
	tb := &benchTB{dir: dir}
	var setupErr error
	func() {
		defer tb.recoverFatal(&setupErr)
		lk := testenv.StartLocalKMS(tb)
		pki, err := devsetup.NewPKI(time.Now())
		if err != nil {
			tb.Fatalf("%v", err)
		}
		key := lk.NewSigningKey(tb, pki, "alias/bench")
		if err := os.WriteFile(filepath.Join(dir, "bundle.pem"), key.Bundle, 0o644); err != nil {
			tb.Fatalf("%v", err)
		}
		if err := os.WriteFile(filepath.Join(dir, "provenanced.toml"), []byte(fmt.Sprintf(`[server]
socket_mode = "0600"
[keys.signing]
backend = "awskms"
key_id = "alias/bench"
region = %q
endpoint = %q
certificates = "bundle.pem"
`, testenv.LocalKMSRegion, lk.Endpoint())), 0o644); err != nil {
			tb.Fatalf("%v", err)
		}
		cfg, err := config.LoadDefaultConfig(context.Background(), config.WithRegion(testenv.LocalKMSRegion),
			config.WithHTTPClient(awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
				tr.MaxIdleConns, tr.MaxIdleConnsPerHost = 256, 256
			})))
		if err != nil {
			tb.Fatalf("%v", err)
		}
		direct := kms.NewFromConfig(cfg, func(o *kms.Options) { o.BaseEndpoint = aws.String(lk.Endpoint()) })
		digest := sha256.Sum256([]byte("provenanced bench"))
		sign := func() error {
			_, err := direct.Sign(context.Background(), &kms.SignInput{KeyId: &key.ARN, Message: digest[:], MessageType: types.MessageTypeDigest, SigningAlgorithm: types.SigningAlgorithmSpecEcdsaSha256})
			return err
		}
		kmsSetup = &backendSetup{
			config: filepath.Join(dir, "provenanced.toml"),
			baseline: func(clients, n int) testenv.LoadResult {
				inProcess(clients, clients*4, sign)
				return inProcess(clients, n, sign)
			},
			cleanup: tb.cleanup,
		}
	}()
	if setupErr != nil {
		tb.cleanup()
		return nil, setupErr
	}
	return kmsSetup, nil
}

var kmsSetup *backendSetup

// benchTB is the testenv.TB of a program that is not a test: Fatalf panics, and the
// setup function turns that into an error.
type benchTB struct {
	dir      string
	cleanups []func()
	n        int
}

type benchFatal struct{ msg string }

func (t *benchTB) Helper() {}
func (t *benchTB) TempDir() string {
	t.n++
	d := filepath.Join(t.dir, fmt.Sprintf("tmp%d", t.n))
	os.MkdirAll(d, 0o755)
	return d
}
func (t *benchTB) Cleanup(f func())                  { t.cleanups = append(t.cleanups, f) }
func (t *benchTB) Logf(format string, args ...any)   { fmt.Fprintf(os.Stderr, format+"\n", args...) }
func (t *benchTB) Fatalf(format string, args ...any) { panic(benchFatal{fmt.Sprintf(format, args...)}) }

func (t *benchTB) cleanup() {
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		t.cleanups[i]()
	}
	t.cleanups = nil
}

func (t *benchTB) recoverFatal(err *error) {
	if p := recover(); p != nil {
		f, ok := p.(benchFatal)
		if !ok {
			panic(p)
		}
		*err = fmt.Errorf("%s", f.msg)
	}
}
