package pkcs11_test

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"fmt"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ib1/provenanced/internal/devsetup"
	"github.com/ib1/provenanced/testenv"
)

// A reload with a renewed bundle keeps the key's open token (sessions, login); one that
// changes the key's table opens the token afresh and closes the old one — which must
// not take the token's login or the module away from the new one: it signs on after.
func TestReloadKeepsTheTokenOpen(t *testing.T) {
	h := testenv.NewHSM(t, testenv.HSMOptions{})
	d := startDaemon(t, h, h.Config)
	ctx := t.Context()
	pub := h.Public.(*ecdsa.PublicKey)
	sign := func(when string) {
		t.Helper()
		for i := range 20 {
			digest := sha256.Sum256([]byte{byte(i)})
			sig, err := d.c.SignDigest(ctx, "signing", digest[:])
			if err != nil || !ecdsa.VerifyASN1(pub, digest[:], sig) {
				t.Fatalf("signing %s: %v", when, err)
			}
		}
	}
	sign("before any reload")
	m := devsetup.DevMember(time.Now())
	m.Serial = big.NewInt(time.Now().UnixNano())
	leaf, err := h.PKI.Issue(h.Public, m)
	if err != nil {
		t.Fatal(err)
	}
	if err := devsetup.WriteFileAtomic(h.Files.Bundle, h.PKI.Bundle(leaf), 0o644); err != nil {
		t.Fatal(err)
	}
	d.Signal(syscall.SIGHUP)
	waitUntil(t, "the renewed bundle", func() bool {
		k, err := d.c.Key(ctx, "signing")
		return err == nil && k.Serial == leaf.SerialNumber.String()
	})
	// The log is written in batches: wait for the reload's line.
	waitUntil(t, "the reload's log line", func() bool { return strings.Contains(d.Output(), "configuration reloaded") })
	if !strings.Contains(d.Output(), `"kept_open":["signing"]`) {
		t.Errorf("a renewed bundle reopened the token:\n%s", d.Output())
	}
	sign("after a reload that kept the token open")

	cfg, err := os.ReadFile(h.Config)
	if err != nil {
		t.Fatal(err)
	}
	changed := strings.Replace(string(cfg), "[keys.signing]\n", "[keys.signing]\nmax_sessions = 3\n", 1)
	if changed == string(cfg) {
		t.Fatalf("no [keys.signing] table in\n%s", cfg)
	}
	if err := devsetup.WriteFileAtomic(h.Config, []byte(changed), 0o644); err != nil {
		t.Fatal(err)
	}
	d.Signal(syscall.SIGHUP)
	waitUntil(t, "the reload of the changed key", func() bool { return strings.Contains(d.Output(), `"reopened":["signing"]`) })
	sign("after the old token was closed")
	if strings.Contains(d.Output(), "reload failed") {
		t.Errorf("a reload failed:\n%s", d.Output())
	}
}

// A reload that fails on one key (a new table naming a token that is not there) leaves
// the running configuration as it was, and with it the unchanged key that the failed
// build had taken over before it failed: that key stays open and signs. A PKCS#11 key,
// because closing one shows (it signs no more); a PEM key signs on after Close.
func TestFailedReloadKeepsTheReusedKeyOpen(t *testing.T) {
	h := testenv.NewHSM(t, testenv.HSMOptions{})
	d := startDaemon(t, h, h.Config)
	ctx := t.Context()
	pub := h.Public.(*ecdsa.PublicKey)
	sign := func(when string) {
		t.Helper()
		for i := range 20 {
			digest := sha256.Sum256([]byte{byte(i)})
			sig, err := d.c.SignDigest(ctx, "signing", digest[:])
			if err != nil || !ecdsa.VerifyASN1(pub, digest[:], sig) {
				t.Fatalf("signing %s: %v", when, err)
			}
		}
	}
	sign("before the reload")

	cfg, err := os.ReadFile(h.Config)
	if err != nil {
		t.Fatal(err)
	}
	// After [keys.signing], so that the build has taken that key over when this one fails.
	broken := string(cfg) + fmt.Sprintf("\n[keys.broken]\nbackend = \"pkcs11\"\nmodule = %q\ntoken_label = \"no-such-token\"\nkey_label = \"signing\"\npin = \"file:%s\"\n",
		h.Module, filepath.Base(h.PINFile))
	if err := devsetup.WriteFileAtomic(h.Config, []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	d.Signal(syscall.SIGHUP)
	waitUntil(t, "the failed reload's log line", func() bool { return strings.Contains(d.Output(), "reload failed") })
	// The failure must be the broken key's, met while opening it: one found when reading
	// the config would come before any key is taken over.
	for _, line := range strings.Split(d.Output(), "\n") {
		if strings.Contains(line, "reload failed") && !(strings.Contains(line, "keys.broken") && strings.Contains(line, "no-such-token")) {
			t.Fatalf("the reload failed for another reason than the broken key's token:\n%s", line)
		}
	}
	sign("after the failed reload")
	if code, body := d.get(t, "/readyz"); code != http.StatusOK {
		t.Errorf("/readyz after the failed reload: %d %s", code, body)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
