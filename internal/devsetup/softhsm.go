package devsetup

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// SoftHSMInstall is what to run when SoftHSM or OpenSC is missing.
const SoftHSMInstall = "apt-get install softhsm2 opensc"

// softHSMModules are where distributions put the SoftHSM library.
var softHSMModules = []string{
	"/usr/lib/softhsm/libsofthsm2.so",
	"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib64/pkcs11/libsofthsm2.so",
	"/usr/local/lib/softhsm/libsofthsm2.so",
	"/opt/homebrew/lib/softhsm/libsofthsm2.so",
}

// FindSoftHSM returns the path of the SoftHSM library ($SOFTHSM2_MODULE, or where
// distributions put it), having checked that softhsm2-util and pkcs11-tool are there too.
func FindSoftHSM() (string, error) {
	var missing []string
	for _, tool := range []string{"softhsm2-util", "pkcs11-tool"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	module := os.Getenv("SOFTHSM2_MODULE")
	if module == "" {
		for _, p := range softHSMModules {
			if _, err := os.Stat(p); err == nil {
				module = p
				break
			}
		}
	}
	if module == "" {
		missing = append(missing, "libsofthsm2.so")
	} else if _, err := os.Stat(module); err != nil {
		missing = append(missing, module)
	}
	if len(missing) > 0 {
		return "", fmt.Errorf("SoftHSM is not installed (missing %s): run %s", strings.Join(missing, ", "), SoftHSMInstall)
	}
	return module, nil
}

// BuildSoftHSM makes dir a development setup whose key is in a SoftHSM token: the token
// "provenance" (in dir/softhsm, with softhsm2.conf for SOFTHSM2_CONF and so.pin) holding
// the P-256 key "signing" (id 01) generated in the token, the user PIN in dir/user.pin, a
// new PKI with the key's certificate (as NewDevFiles, without a key file), and
// dir/provenanced.toml serving the key with the pkcs11 backend, TCP on httpAddr. It
// returns the config's path. (testenv's SoftHSM fixtures are the tests' richer version.)
func BuildSoftHSM(dir, httpAddr string) (string, error) {
	module, err := FindSoftHSM()
	if err != nil {
		return "", err
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return "", err
	}
	home := filepath.Join(dir, "softhsm")
	conf, pin, err := initSoftHSMToken(dir, home)
	if err != nil {
		return "", err
	}
	pub, err := generateSoftHSMKey(module, conf, pin, home)
	if err != nil {
		return "", err
	}
	now := time.Now()
	pki, err := NewPKI(now)
	if err != nil {
		return "", err
	}
	leaf, err := pki.Issue(pub, DevMember(now))
	if err != nil {
		return "", err
	}
	files, err := pki.WriteFiles(dir, nil, leaf)
	if err != nil {
		return "", err
	}
	cfg := filepath.Join(dir, "provenanced.toml")
	text := ConfigHead("# Written by provenanced serve -dev -hsm: a SoftHSM token and a test PKI. Not for production.\n# Run with SOFTHSM2_CONF="+conf, httpAddr, filepath.Base(files.RootCA)) +
		fmt.Sprintf("backend = \"pkcs11\"\nmodule = %q\ntoken_label = \"provenance\"\nkey_label = \"signing\"\npin = \"file:user.pin\"\ncertificates = %q\n", module, filepath.Base(files.Bundle))
	return cfg, WriteFileAtomic(cfg, []byte(text), 0o644)
}

// initSoftHSMToken gives SoftHSM a token folder and configuration in home, and initialises
// the token "provenance" there with new PINs: the user PIN in dir/user.pin, the SO PIN in
// home/so.pin. It returns the configuration's path (for SOFTHSM2_CONF) and the user PIN.
func initSoftHSMToken(dir, home string) (conf, pin string, err error) {
	conf, tokens := filepath.Join(home, "softhsm2.conf"), filepath.Join(home, "tokens")
	if err := os.MkdirAll(tokens, 0o700); err != nil {
		return "", "", err
	}
	if err := WriteFileAtomic(conf, []byte(fmt.Sprintf("# SoftHSM2 for provenanced's development setup (SOFTHSM2_CONF=%s)\ndirectories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", conf, tokens)), 0o600); err != nil {
		return "", "", err
	}
	pin, soPIN := rand.Text(), rand.Text() // 26 random base32 characters each
	if err := WriteFileAtomic(filepath.Join(dir, "user.pin"), []byte(pin+"\n"), 0o600); err != nil {
		return "", "", err
	}
	// The SO PIN is kept too: a developer may want to unlock or initialise the token.
	if err := WriteFileAtomic(filepath.Join(home, "so.pin"), []byte(soPIN+"\n"), 0o600); err != nil {
		return "", "", err
	}
	if err := runSoftHSMTool(conf, "softhsm2-util", "--init-token", "--free", "--label", "provenance", "--so-pin", soPIN, "--pin", pin); err != nil {
		return "", "", err
	}
	return conf, pin, nil
}

// generateSoftHSMKey has the token make the key "signing" (id 01) and returns its public
// key, read back through a scratch file in home.
func generateSoftHSMKey(module, conf, pin, home string) (crypto.PublicKey, error) {
	token := []string{"--module", module, "--token-label", "provenance"}
	if err := runSoftHSMTool(conf, "pkcs11-tool", append(token, "--login", "--pin", pin, "--keypairgen", "--key-type", "EC:prime256v1", "--usage-sign", "--label", "signing", "--id", "01")...); err != nil {
		return nil, err
	}
	pubFile := filepath.Join(home, ".signing-pub.der")
	defer os.Remove(pubFile)
	if err := runSoftHSMTool(conf, "pkcs11-tool", append(token, "--read-object", "--type", "pubkey", "--label", "signing", "-o", pubFile)...); err != nil {
		return nil, err
	}
	der, err := os.ReadFile(pubFile)
	if err != nil {
		return nil, err
	}
	return x509.ParsePKIXPublicKey(der)
}

// runSoftHSMTool runs one of SoftHSM's or OpenSC's tools on the token that conf
// configures.
func runSoftHSMTool(conf, name string, args ...string) error {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "SOFTHSM2_CONF="+conf)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		// The arguments, which hold PINs, are not repeated.
		return fmt.Errorf("%s %s: %v: %s", name, args[0], err, strings.TrimSpace(out.String()))
	}
	return nil
}
