package awskms_test

import (
	"os"
	"testing"
	"time"

	"github.com/ib1/provenanced/conf"
	"github.com/ib1/provenanced/internal/devsetup"
	"github.com/ib1/provenanced/testenv"
)

func TestMain(m *testing.M) {
	// The backend takes credentials from the SDK's standard chain, as in production:
	// here, dummy ones from the environment, with ~/.aws and instance metadata shut out.
	testenv.SetAWSTestEnv()
	os.Exit(m.Run())
}

func newPKI(t testing.TB) *devsetup.PKI {
	t.Helper()
	pki, err := devsetup.NewPKI(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return pki
}

// writeConfig writes and loads testenv.KMSConfig in dir with [keys.signing] changed by
// set (key, value pairs; a nil value removes the key).
func writeConfig(t testing.TB, dir string, bundle []byte, keyID, endpoint string, set ...any) *conf.Config {
	t.Helper()
	return testenv.KMSConfig(t, dir, bundle, keyID, endpoint).Table("keys.signing", set...).Load(t, dir)
}

// eachEmulator runs f as a subtest per KMS emulator (testenv.KMSEmulators), named by it,
// with the emulator started for it. A test whose subject is what the KMS API does runs
// on each; where one cannot do what the test needs, the test says so (e.Quirks()).
func eachEmulator(t *testing.T, f func(t *testing.T, e testenv.KMSEmulator)) {
	for _, em := range testenv.KMSEmulators {
		t.Run(em.Name, func(t *testing.T) { f(t, em.Start(t)) })
	}
}
