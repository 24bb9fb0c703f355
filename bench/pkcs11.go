package main

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"os"
	"strings"
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
	return setupToken(dir, testenv.KindSoftHSM, pkcs11Sessions)
}

// tpmSessions: a TPM runs one command at a time, so sessions beyond a couple only
// lengthen its queue.
const tpmSessions = 3

// setupTPM is setupPKCS11 on a TPM (tpm2-pkcs11 on swtpm, through tpm2-abrmd), measured
// at 1 and 4 clients: it signs one at a time, whatever the number of clients.
func setupTPM(dir string) (*backendSetup, error) {
	s, err := setupToken(dir, testenv.KindTPM, tpmSessions)
	if s != nil {
		s.clients = []int{1, 4}
	}
	return s, err
}

// setupP11Kit is setupPKCS11 through p11-kit-proxy, the daemon and the baseline both
// loading the proxy, at 1 and 4 clients.
func setupP11Kit(dir string) (*backendSetup, error) {
	s, err := setupToken(dir, testenv.KindP11Kit, pkcs11Sessions)
	if s != nil {
		s.clients = []int{1, 4}
	}
	return s, err
}

func setupToken(dir, kind string, sessions int) (*backendSetup, error) {
	h, err := testenv.BuildHSM(dir, testenv.HSMOptions{Kind: kind, MaxSessions: sessions})
	if err != nil {
		return nil, err
	}
	// The token's library reads its environment (SOFTHSM2_CONF, the TPM's store and
	// TCTI) when a process loads it: here, and in the daemon, which inherits it.
	type saved struct {
		v   string
		had bool
	}
	prev := map[string]saved{}
	for _, e := range h.Env() {
		k, v, _ := strings.Cut(e, "=")
		old, had := os.LookupEnv(k)
		prev[k] = saved{old, had}
		os.Setenv(k, v)
	}
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
			for k, p := range prev {
				if p.had {
					os.Setenv(k, p.v)
				} else {
					os.Unsetenv(k)
				}
			}
			h.Close()
		},
	}, nil
}
