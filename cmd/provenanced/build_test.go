package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ib1/provenanced/internal/devsetup"
	"github.com/ib1/provenanced/testenv"
)

// TestBinaryLinksNoTestenv: the daemon binary links internal/devsetup for `serve -dev`,
// never the test environment (its emulators, fault proxies and dummy credentials).
func TestBinaryLinksNoTestenv(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	var linked bool
	for _, d := range deps {
		if strings.Contains(d, "testenv") {
			t.Errorf("provenanced links %s", d)
		}
		linked = linked || d == "github.com/ib1/provenanced/internal/devsetup"
	}
	if !linked {
		t.Errorf("go list -deps does not show internal/devsetup, which serve -dev needs: %q", deps)
	}
}

// TestBuildsWithoutCgo: CGO_ENABLED=0 gives a working binary whose pkcs11 backend says
// why it cannot open a key, rather than "unknown backend" or a failed build.
func TestBuildsWithoutCgo(t *testing.T) {
	root, err := testenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "provenanced")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/provenanced")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 go build: %v\n%s", err, out)
	}
	if _, _, err := devsetup.NewDevFiles(dir, time.Now()); err != nil { // root-ca.pem for cert check
		t.Fatal(err)
	}
	cfg := testenv.DevConfig("", "root-ca.pem").
		Table("keys.signing", "backend", "pkcs11", "module", "/usr/lib/softhsm/libsofthsm2.so", "token_label", "provenance", "key_label", "signing", "pin", "file:user.pin").
		Write(t, dir)
	for _, args := range [][]string{{"keygen", "-config", cfg, "-key", "signing"}, {"serve", "-config", cfg}} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // serve must fail, not serve
		out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
		cancel()
		if err == nil || !strings.Contains(string(out), "keys.signing.backend") || !strings.Contains(string(out), "built without cgo (CGO_ENABLED=0)") {
			t.Errorf("%s: %v, %q; want a failure naming the key's backend and cgo", args[0], err, out)
		}
	}
	if out, code := testenv.Run(bin, nil, "version"); code != 0 {
		t.Errorf("version: exit status %d: %s", code, out)
	}
}
