package main

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"os"
	"time"

	"github.com/ThalesGroup/crypto11"

	"github.com/ib1/provenanced/testenv"
)

// pkcs11Sessions is the daemon's max_sessions: one session holds the login and four sign,
// about what SoftHSM gains from on two cores.
const pkcs11Sessions = 5

// setupPKCS11 makes a SoftHSM token with a P-256 key generated in it, its certificate
// and a config. The baseline is crypto11 signing with the same key in this process, with
// as many sessions as clients (and the one crypto11 keeps for its login). The daemon and
// this process share the token folder, as two programs on one HSM would.
func setupPKCS11(dir string) (*backendSetup, error) {
	h, err := testenv.BuildHSM(dir, testenv.HSMOptions{MaxSessions: pkcs11Sessions})
	if err != nil {
		return nil, err
	}
	// SoftHSM reads SOFTHSM2_CONF when a process loads it: here, and in the daemon, which
	// inherits this environment.
	prev, had := os.LookupEnv("SOFTHSM2_CONF")
	os.Setenv("SOFTHSM2_CONF", h.Conf)
	digest := sha256.Sum256([]byte("provenanced bench"))
	baseline := func(clients, n int) testenv.LoadResult {
		ctx, err := crypto11.Configure(&crypto11.Config{Path: h.Module, TokenLabel: h.Token, Pin: h.PIN, MaxSessions: clients + 1, PoolWaitTimeout: time.Minute})
		if err != nil {
			return testenv.LoadResult{Ops: 1, Errors: 1, FirstError: fmt.Errorf("crypto11: %w", err)}
		}
		defer ctx.Close()
		key, err := ctx.FindKeyPair(nil, []byte(h.KeyLabel))
		if err != nil || key == nil {
			return testenv.LoadResult{Ops: 1, Errors: 1, FirstError: fmt.Errorf("crypto11: key %q: %v", h.KeyLabel, err)}
		}
		sign := func() error {
			_, err := key.Sign(rand.Reader, digest[:], crypto.SHA256)
			return err
		}
		inProcess(clients, clients*8, sign) // open the sessions first
		return inProcess(clients, n, sign)
	}
	return &backendSetup{
		config:   h.Config,
		baseline: baseline,
		cleanup: func() {
			if had {
				os.Setenv("SOFTHSM2_CONF", prev)
			} else {
				os.Unsetenv("SOFTHSM2_CONF")
			}
		},
	}, nil
}
