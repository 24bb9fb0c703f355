package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"time"

	pembackend "github.com/ib1/provenanced/backends/pem"
	"github.com/ib1/provenanced/internal/devsetup"
	"github.com/ib1/provenanced/provenance"
	"github.com/ib1/provenanced/testenv"
)

// setupPEM makes a test PKI and a PEM key; the baseline is ECDSA in memory on all cores.
func setupPEM(dir string) (*backendSetup, error) {
	if _, _, err := devsetup.NewDevFiles(dir, time.Now()); err != nil {
		return nil, err
	}
	key, err := pembackend.LoadKey(filepath.Join(dir, "signing-key.pem"))
	if err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "provenanced.toml")
	if err := os.WriteFile(cfg, []byte(`[server]
socket_mode = "0600"
[provenance]
root_ca = "root-ca.pem"
[keys.signing]
backend = "pem"
private_key = "signing-key.pem"
certificates = "signing-bundle.pem"
`), 0o644); err != nil {
		return nil, err
	}
	digest := sha256.Sum256([]byte("provenanced bench"))
	sign := func() error {
		_, err := ecdsa.SignASN1(rand.Reader, key, digest[:])
		return err
	}
	return &backendSetup{
		config:   cfg,
		allCores: true,
		baseline: func(clients, n int) testenv.LoadResult { return inProcess(clients, n, sign) },
		extra:    func(h *harness, d *daemonProc) error { return pemExtras(h, d, dir, key) },
	}, nil
}

// pemExtras: the daemon against the bare net/http server (measured alternately), batches,
// the original's EDP records, and verify+decode of the bank vector.
func pemExtras(h *harness, d *daemonProc, dir string, key *ecdsa.PrivateKey) error {
	bare, err := startBare(h.self, dir)
	if err != nil {
		return err
	}
	defer bare.stop()
	top := h.cfg.clients[len(h.cfg.clients)-1]
	for _, transport := range []string{"unix", "tcp"} {
		// Alternate daemon and bare server, twice each, and keep each one's better run:
		// the machine's noise then falls on both alike.
		// The same for CPU per signature: each one's lower figure.
		var best, bestBare row
		var cpu, cpuBare time.Duration
		for round := 0; round < 2; round++ {
			r := h.drive(d, transport, top, signBody(), "/v1/keys/signing/sign", 1)
			if r.Ops > best.Ops {
				best = r
			}
			if cpu == 0 || r.CPU > 0 && r.CPU < cpu {
				cpu = r.CPU
			}
			b := h.driveAt(bare.cmd.Process.Pid, bare.socket, bare.http, transport, top, signBody(), "/sign", 1, h.cfg.n)
			if b.Ops > bestBare.Ops {
				bestBare = b
			}
			if cpuBare == 0 || b.CPU > 0 && b.CPU < cpuBare {
				cpuBare = b.CPU
			}
		}
		best.CPU, bestBare.CPU = cpu, cpuBare
		bestBare.Backend, bestBare.Workload, bestBare.Note = "pem", "bare", "bare net/http server"
		best.Backend, best.Workload, best.Baseline, best.BaseP50, best.BaseCPU = "pem", "sign", bestBare.Ops, bestBare.P50, bestBare.CPU
		best.Note = "vs the bare server: its CPU/op ÷ the daemon's (target ≥ 0.90)"
		h.add(bestBare)
		h.add(best)
	}

	// Batches of 64 digests in one request, against ECDSA in memory on all cores.
	digests := make([]map[string]string, 64)
	for i := range digests {
		dg := sha256.Sum256([]byte(fmt.Sprint("batch ", i)))
		digests[i] = map[string]string{"digest": base64.StdEncoding.EncodeToString(dg[:])}
	}
	batch, _ := json.Marshal(map[string]any{"batch": digests})
	var perSignature time.Duration // the daemon's CPU for one signature of a batch, at top clients
	for _, c := range []int{1, top} {
		r := h.drive(d, "unix", c, batch, "/v1/keys/signing/sign", 64)
		perSignature = r.CPU
		r.Backend, r.Workload = "pem", "batch64"
		r.Baseline = inProcessSign(key, h.cfg.n).OpsPerSec()
		r.Note = "signatures/s, vs ECDSA in process on all cores (target ≥ 0.80)"
		h.add(r)
	}

	// The original's EDP record, as its clients post it.
	edp, _ := json.Marshal(map[string]string{
		"from_date": "2025-09-20T10:00:00", "to_date": "2025-10-19T10:00:00",
		"permission_granted": "2025-09-19T10:00:00", "permission_expires": "2025-11-19T10:00:00",
		"service_url": "https://api.example.com", "account": "test-account-123", "fapi_id": "fapi-transaction-456",
		"cap_member": "cap-member-789", "origin_url": "https://www.smartdcc.co.uk/",
		"origin_license_url": "https://smartenergycodecompany.co.uk/documents/sec/consolidated-sec/",
	})
	r := h.drive(d, "unix", top, edp, "/api/v1/sign/edp", 1)
	r.Backend, r.Workload, r.Note = "pem", "edp", "records/s; the Python reference service: about 900/s here"
	if perSignature > 0 {
		r.Note += fmt.Sprintf("; a record costs %.2f signatures' CPU (÷ batch64's CPU per signature; target ≤ 4.0)", float64(r.CPU)/float64(perSignature))
	}
	h.add(r)

	// Verify+decode of the 3-signature bank vector, against in-process Verify on all cores.
	return verifyBank(h, d)
}

func inProcessSign(key *ecdsa.PrivateKey, n int) testenv.LoadResult {
	digest := sha256.Sum256([]byte("x"))
	return inProcess(runtime.GOMAXPROCS(0), n, func() error {
		_, err := ecdsa.SignASN1(rand.Reader, key, digest[:])
		return err
	})
}

func verifyBank(h *harness, d *daemonProc) error {
	root, err := testenv.ModuleRoot()
	if err != nil {
		return err
	}
	vectors := filepath.Join(root, "provenance", "testdata", "vectors")
	bank, err := os.ReadFile(filepath.Join(vectors, "records", "bank.json"))
	if err != nil {
		return err
	}
	// The daemon's root is its own test PKI's; the vector needs the vectors' root, so the
	// request names no framework and the route verifies... under the daemon's root, which
	// would fail. Use a daemon of its own whose root_ca is the vectors' root.
	dir := filepath.Join(h.cfg.work, "verify")
	os.MkdirAll(dir, 0o755)
	cfg := filepath.Join(dir, "provenanced.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("[server]\nsocket_mode = \"0600\"\n[provenance]\nroot_ca = %q\n", filepath.Join(vectors, "pki", "root-ca-cert.pem"))), 0o644)
	vd, err := h.startDaemon(cfg, dir)
	if err != nil {
		return err
	}
	defer vd.stop()
	body := append(append([]byte(`{"record":`), bytes.TrimSpace(bank)...), '}')
	top := h.cfg.clients[len(h.cfg.clients)-1]
	r := h.drive(vd, "unix", top, body, "/v1/records/verify", 1)
	r.Backend, r.Workload = "-", "verify-bank"
	rootPEM, _ := os.ReadFile(filepath.Join(vectors, "pki", "root-ca-cert.pem"))
	roots, _ := provenance.ParseRootsPEM(rootPEM)
	v, err := provenance.NewVerifier(roots, "https://registry.core.sandbox.trust.ib1.org/trust-framework")
	if err != nil {
		return err
	}
	base := inProcess(runtime.GOMAXPROCS(0), h.cfg.n/4+1, func() error {
		_, _, err := v.VerifyJSON(bank)
		return err
	})
	oneCore := inProcess(1, h.cfg.n/8+1, func() error {
		_, _, err := v.VerifyJSON(bank)
		return err
	})
	r.Baseline = base.OpsPerSec()
	r.Note = fmt.Sprintf("records/s; in process on one core: %.0f/s", oneCore.OpsPerSec())
	h.add(r)
	return nil
}
