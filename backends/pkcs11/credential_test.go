//go:build cgo

package pkcs11

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A PIN delivered as a systemd credential (LoadCredential=pin:/etc/provenanced/pin) is a
// file in /run/credentials/provenanced.service/ of mode 0400, owned by the service's user,
// in a directory of mode 0500. The PIN file check accepts it, and a group-readable copy,
// and still refuses a PIN that every user can read.
func TestPINFromSystemdCredential(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "credentials", "provenanced.service")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "pin")
	for _, tc := range []struct {
		mode os.FileMode
		ok   bool
	}{{0o400, true}, {0o440, true}, {0o600, true}, {0o444, false}, {0o404, false}} {
		os.Remove(path)
		if err := os.WriteFile(path, []byte("1234\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, tc.mode); err != nil {
			t.Fatal(err)
		}
		if tc.mode == 0o400 {
			os.Chmod(dir, 0o500) // as systemd leaves the directory
		}
		pin, err := pinSource{file: path}.read()
		os.Chmod(dir, 0o700)
		switch {
		case tc.ok && (err != nil || pin != "1234"):
			t.Errorf("mode %04o: got %q, %v; want the PIN", tc.mode, pin, err)
		case !tc.ok && err == nil:
			t.Errorf("mode %04o: the PIN was read; want a refusal", tc.mode)
		case !tc.ok && (!strings.Contains(err.Error(), "open to all users") || strings.Contains(err.Error(), "1234")):
			t.Errorf("mode %04o: %v", tc.mode, err)
		}
	}
}
