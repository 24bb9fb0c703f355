package daemon

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/ib1/provenanced/testenv"
)

// DevConfigName is the config file `serve -dev DIR` writes in DIR.
const DevConfigName = "provenanced.toml"

// DevHTTP is where `serve -dev` listens on TCP.
const DevHTTP = "127.0.0.1:8080"

// PrepareDev makes DIR a development setup, unless it is one already: a test PKI in the
// IB1 shape (root, intermediate, a member certificate with the roles and member
// extensions), the member's P-256 key (mode 0600) and a config that serves it with the
// PEM backend on 127.0.0.1:8080 and DIR/provenanced.sock. It returns the config's path
// and whether it created anything.
func PrepareDev(dir string) (string, bool, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", false, err
	}
	cfgPath := filepath.Join(dir, DevConfigName)
	if _, err := os.Stat(cfgPath); err == nil {
		return cfgPath, false, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", false, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", false, fmt.Errorf("dev: cannot create %s: %w", dir, err)
	}
	_, files, err := testenv.NewDevFiles(dir, time.Now())
	if err != nil {
		return "", false, fmt.Errorf("dev: %w", err)
	}
	if err := testenv.WriteFileAtomic(cfgPath, []byte(DevConfig(files)), 0o644); err != nil {
		return "", false, fmt.Errorf("dev: %w", err)
	}
	return cfgPath, true, nil
}

// DevConfig is the config `serve -dev` writes for files.
func DevConfig(files testenv.Files) string {
	return fmt.Sprintf(`# Written by provenanced serve -dev: a development setup with a test PKI.
# Not for production: the key is a PEM file and the root CA is a test one.

[server]
socket = "provenanced.sock"
socket_mode = "0600"
http = %q

[provenance]
trust_framework = %q
scheme = %q
root_ca = %q
key = "signing"

[keys.signing]
backend = "pem"
private_key = %q
certificates = %q
`, DevHTTP, testenv.SandboxTrustFramework, testenv.SandboxScheme,
		rel(files.Dir, files.RootCA), rel(files.Dir, files.PrivateKey), rel(files.Dir, files.Bundle))
}

func rel(dir, p string) string {
	if r, err := filepath.Rel(dir, p); err == nil {
		return r
	}
	return p
}
