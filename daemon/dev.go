package daemon

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/ib1/provenanced/internal/devsetup"
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
	_, files, err := devsetup.NewDevFiles(dir, time.Now())
	if err != nil {
		return "", false, fmt.Errorf("dev: %w", err)
	}
	if err := devsetup.WriteFileAtomic(cfgPath, []byte(DevConfig(files)), 0o644); err != nil {
		return "", false, fmt.Errorf("dev: %w", err)
	}
	return cfgPath, true, nil
}

// DevConfig is the config `serve -dev` writes for files.
func DevConfig(files devsetup.Files) string {
	return devsetup.ConfigHead("# Written by provenanced serve -dev: a development setup with a test PKI.\n# Not for production: the key is a PEM file and the root CA is a test one.",
		DevHTTP, rel(files.Dir, files.RootCA)) +
		fmt.Sprintf("backend = \"pem\"\nprivate_key = %q\ncertificates = %q\n", rel(files.Dir, files.PrivateKey), rel(files.Dir, files.Bundle))
}

func rel(dir, p string) string {
	if r, err := filepath.Rel(dir, p); err == nil {
		return r
	}
	return p
}

// DevSoftHSM is the folder of DIR in which `serve -dev DIR -hsm` keeps its SoftHSM tokens
// and softhsm2.conf.
const DevSoftHSM = "softhsm"

// DevSoftHSMConf returns the SoftHSM config of the development setup in dir, or "" if
// its key is not in SoftHSM. The daemon must run with SOFTHSM2_CONF set to it, since
// SoftHSM reads that when the key is opened.
func DevSoftHSMConf(dir string) string {
	p := filepath.Join(dir, DevSoftHSM, "softhsm2.conf")
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
}

// PrepareDevHSM is PrepareDev with the member's key in a SoftHSM token ("provenance",
// key "signing", generated in the token) rather than a PEM file: the PIN in DIR/user.pin,
// the tokens and softhsm2.conf in DIR/softhsm, and a config that serves the key with the
// pkcs11 backend. It fails, saying what to install, when SoftHSM is not installed, and
// refuses a DIR that holds a PEM development setup.
func PrepareDevHSM(dir string) (string, bool, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", false, err
	}
	cfgPath := filepath.Join(dir, DevConfigName)
	if _, err := os.Stat(cfgPath); err == nil {
		if DevSoftHSMConf(dir) == "" {
			return "", false, fmt.Errorf("dev: %s holds a development setup with a PEM key; give -hsm another folder (or remove this one)", dir)
		}
		return cfgPath, false, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", false, err
	}
	cfg, err := devsetup.BuildSoftHSM(dir, DevHTTP)
	if err != nil {
		return "", false, fmt.Errorf("dev -hsm: %w", err)
	}
	return cfg, true, nil
}
