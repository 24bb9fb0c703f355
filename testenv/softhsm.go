package testenv

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/ib1/provenanced/internal/devsetup"
)

// hsmMu builds one fixture at a time: SoftHSM has failed under parallel key generation,
// and a test's fixture is quick to build.
var hsmMu sync.Mutex

// SoftHSM is a SoftHSM2 token folder of its own and the config file that points there.
// SoftHSM reads SOFTHSM2_CONF when a program initialises it, so a process (or a test
// binary) sees the tokens of the SOFTHSM2_CONF it had then.
type SoftHSM struct {
	Dir      string // holds softhsm2.conf and tokens/
	Conf     string // the file for SOFTHSM2_CONF
	TokenDir string
	Module   string

	tokens map[string]string // token label → its folder
}

// NewSoftHSM makes dir a SoftHSM home: dir/softhsm2.conf and dir/tokens.
func NewSoftHSM(dir string) (*SoftHSM, error) {
	module, err := devsetup.FindSoftHSM()
	if err != nil {
		return nil, err
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	h := &SoftHSM{Dir: dir, Conf: filepath.Join(dir, "softhsm2.conf"), TokenDir: filepath.Join(dir, "tokens"), Module: module, tokens: map[string]string{}}
	if err := os.MkdirAll(h.TokenDir, 0o700); err != nil {
		return nil, err
	}
	conf := fmt.Sprintf("# SoftHSM2 for provenanced's tests and development (SOFTHSM2_CONF=%s)\ndirectories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", h.Conf, h.TokenDir)
	if err := devsetup.WriteFileAtomic(h.Conf, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	return h, nil
}

// Env is os.Environ() with SOFTHSM2_CONF pointing here, for a daemon or tool to run with.
func (h *SoftHSM) Env() []string {
	env := []string{"SOFTHSM2_CONF=" + h.Conf}
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "SOFTHSM2_CONF=") {
			env = append(env, e)
		}
	}
	return env
}

// Run runs softhsm2-util or pkcs11-tool (given as name) on this token folder. Errors
// carry the tool's output; the arguments, which may hold PINs, are not repeated.
func (h *SoftHSM) Run(name string, args ...string) ([]byte, error) {
	what := name
	if len(args) > 0 {
		what += " " + args[0]
	}
	if name == "pkcs11-tool" {
		args = append([]string{"--module", h.Module}, args...)
	}
	cmd := exec.Command(name, args...)
	cmd.Env = h.Env()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.Bytes(), fmt.Errorf("testenv: %s: %v: %s", what, err, strings.TrimSpace(out.String()))
	}
	return out.Bytes(), nil
}

// InitToken initialises a new token (or, if one has the label, initialises it again,
// which wipes its objects) with an SO PIN and a user PIN.
func (h *SoftHSM) InitToken(label, soPIN, pin string) error {
	before, _ := h.tokenFolders()
	args := []string{"--init-token", "--label", label, "--so-pin", soPIN, "--pin", pin}
	if _, ok := h.tokens[label]; ok {
		args = append(args, "--token", label)
	} else {
		args = append(args, "--free")
	}
	if _, err := h.Run("softhsm2-util", args...); err != nil {
		return err
	}
	after, err := h.tokenFolders()
	if err != nil {
		return err
	}
	for _, d := range after {
		if !contains(before, d) {
			h.tokens[label] = filepath.Join(h.TokenDir, d)
		}
	}
	if _, ok := h.tokens[label]; !ok {
		return fmt.Errorf("testenv: token %q was initialised, but no new folder appeared in %s", label, h.TokenDir)
	}
	return nil
}

func (h *SoftHSM) tokenFolders() ([]string, error) {
	ents, err := os.ReadDir(h.TokenDir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// TokenFolder is where SoftHSM keeps the token labelled label.
func (h *SoftHSM) TokenFolder(label string) (string, error) {
	d, ok := h.tokens[label]
	if !ok {
		return "", fmt.Errorf("testenv: no token %q was initialised here", label)
	}
	return d, nil
}

// KeySpec describes a key pair for pkcs11-tool to generate in a token.
type KeySpec struct {
	Label string
	ID    string // hex
	Type  string // pkcs11-tool --key-type: "EC:prime256v1" (the default), "EC:secp384r1", "rsa:2048"
	// AlwaysAuth sets CKA_ALWAYS_AUTHENTICATE: the PIN is needed again for each signature.
	AlwaysAuth bool
}

// GenerateKey has the token generate a key pair (pkcs11-tool --keypairgen).
func (h *SoftHSM) GenerateKey(token, pin string, k KeySpec) error {
	return generateKey(h.Run, token, pin, k)
}

// generateKey runs pkcs11-tool --keypairgen through run, on whichever token it reaches.
func generateKey(run func(string, ...string) ([]byte, error), token, pin string, k KeySpec) error {
	typ := k.Type
	if typ == "" {
		typ = "EC:prime256v1"
	}
	args := []string{"--token-label", token, "--login", "--pin", pin, "--keypairgen", "--key-type", typ, "--usage-sign"}
	if k.Label != "" {
		args = append(args, "--label", k.Label)
	}
	if k.ID != "" {
		args = append(args, "--id", k.ID)
	}
	if k.AlwaysAuth {
		args = append(args, "--always-auth")
	}
	_, err := run("pkcs11-tool", args...)
	return err
}

// ImportKey writes a P-256 private key and its public key into the token, as an HSM
// import (or restore from backup) would.
func (h *SoftHSM) ImportKey(token, pin string, k KeySpec, key *ecdsa.PrivateKey) error {
	priv, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(h.Dir, ".import-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	for _, obj := range []struct {
		typ  string
		der  []byte
		more []string
	}{{"privkey", priv, []string{"--usage-sign"}}, {"pubkey", pub, nil}} {
		f := filepath.Join(tmp, obj.typ+".der")
		if err := os.WriteFile(f, obj.der, 0o600); err != nil {
			return err
		}
		args := []string{"--token-label", token, "--login", "--pin", pin, "--write-object", f, "--type", obj.typ, "--label", k.Label}
		if k.ID != "" {
			args = append(args, "--id", k.ID)
		}
		if _, err := h.Run("pkcs11-tool", append(args, obj.more...)...); err != nil {
			return err
		}
	}
	return nil
}

// PublicKey reads the public key object with label (and id, if not "") from the token.
func (h *SoftHSM) PublicKey(token string, k KeySpec) (crypto.PublicKey, error) {
	return readPublicKey(h.Run, h.Dir, token, k)
}

// readPublicKey runs pkcs11-tool --read-object through run, in a folder made in dir.
func readPublicKey(run func(string, ...string) ([]byte, error), dir, token string, k KeySpec) (crypto.PublicKey, error) {
	tmp, err := os.MkdirTemp(dir, ".read-*")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	out := filepath.Join(tmp, "pub.der")
	args := []string{"--token-label", token, "--read-object", "--type", "pubkey", "-o", out}
	if k.Label != "" {
		args = append(args, "--label", k.Label)
	}
	if k.ID != "" {
		args = append(args, "--id", k.ID)
	}
	if _, err := run("pkcs11-tool", args...); err != nil {
		// pkcs11-tool 0.23 fails to convert some valid P-256 points it reads from
		// tpm2-pkcs11 ("cannot create EVP_PKEY"); the point it lists is taken instead.
		if pub, lerr := listedPublicKey(run, token, k); lerr == nil {
			return pub, nil
		}
		return nil, err
	}
	der, err := os.ReadFile(out)
	if err != nil {
		return nil, err
	}
	return x509.ParsePKIXPublicKey(der)
}

// listedPublicKey finds the P-256 public key object with k's label (and id) in what
// pkcs11-tool --list-objects prints, and decodes its CKA_EC_POINT.
func listedPublicKey(run func(string, ...string) ([]byte, error), token string, k KeySpec) (crypto.PublicKey, error) {
	out, err := run("pkcs11-tool", "--token-label", token, "--list-objects", "--type", "pubkey")
	if err != nil {
		return nil, err
	}
	for _, block := range strings.Split(string(out), "Public Key Object;")[1:] {
		fields := map[string]string{}
		for _, line := range strings.Split(block, "\n") {
			if name, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
				fields[name] = strings.TrimSpace(v)
			}
		}
		if fields["label"] != k.Label || (k.ID != "" && fields["ID"] != k.ID) {
			continue
		}
		der, err := hex.DecodeString(fields["EC_POINT"])
		if err != nil {
			return nil, fmt.Errorf("testenv: CKA_EC_POINT %q: %v", fields["EC_POINT"], err)
		}
		var point []byte
		if rest, err := asn1.Unmarshal(der, &point); err != nil || len(rest) != 0 {
			point = der // a token that gives the bare point
		}
		return ecdsa.ParseUncompressedPublicKey(elliptic.P256(), point)
	}
	return nil, fmt.Errorf("testenv: token %q lists no public key labelled %q", token, k.Label)
}

// RemoveToken takes the token's folder away, as if the token were pulled out of the
// machine, and returns the function that puts it back.
func (h *SoftHSM) RemoveToken(label string) (putBack func() error, err error) {
	dir, err := h.TokenFolder(label)
	if err != nil {
		return nil, err
	}
	away := filepath.Join(h.Dir, filepath.Base(dir)+".removed")
	if err := os.Rename(dir, away); err != nil {
		return nil, err
	}
	return func() error { return os.Rename(away, dir) }, nil
}

// SnapshotToken copies the token's folder and returns the function that puts the copy
// back in its place, as restoring an HSM from its backup does.
func (h *SoftHSM) SnapshotToken(label string) (restore func() error, err error) {
	dir, err := h.TokenFolder(label)
	if err != nil {
		return nil, err
	}
	snap := filepath.Join(h.Dir, filepath.Base(dir)+fmt.Sprintf(".snapshot-%d", time.Now().UnixNano()))
	if err := os.CopyFS(snap, os.DirFS(dir)); err != nil {
		return nil, err
	}
	return func() error {
		// Copy into a new folder beside the token's, then swap it in by renames, so that
		// the token is never seen half restored.
		tmp := dir + ".restoring"
		os.RemoveAll(tmp)
		if err := os.CopyFS(tmp, os.DirFS(snap)); err != nil {
			return err
		}
		old := dir + ".old"
		os.RemoveAll(old)
		if err := os.Rename(dir, old); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if err := os.Rename(tmp, dir); err != nil {
			return err
		}
		return os.RemoveAll(old)
	}, nil
}

// Kinds of token a fixture can be.
const (
	KindSoftHSM = "softhsm" // SoftHSM2 (the default)
	KindTPM     = "tpm"     // tpm2-pkcs11 on swtpm, through tpm2-abrmd
	KindP11Kit  = "p11kit"  // SoftHSM2 reached through p11-kit-proxy
)

// Kinds lists every kind, for tests that run on each.
var Kinds = []string{KindSoftHSM, KindTPM, KindP11Kit}

// HSMOptions describe a token fixture. The zero value is a SoftHSM token "provenance"
// with a P-256 key "signing" (id 01) generated in the token and a certificate for it.
type HSMOptions struct {
	// Kind is the token's kind (KindSoftHSM when ""). A KindTPM fixture runs processes:
	// Close ends them (NewHSM does that at the test's cleanup).
	Kind     string
	Token    string // token label; default "provenance"
	KeyLabel string // default "signing"
	KeyID    string // hex CKA_ID; default "01"
	// KeyType is the pkcs11-tool key type: default "EC:prime256v1". A key that is not
	// P-256 gets no certificate (and HSM.Public stays nil).
	KeyType string
	// Import creates the P-256 key here and imports it (HSM.Key keeps it), rather than
	// having the token generate it.
	Import bool
	NoKey  bool          // an empty token
	PKI    *devsetup.PKI // the PKI to issue the certificate from; default a new one
	// MaxSessions is written as max_sessions when not zero.
	MaxSessions int
	// HTTP is the config's server.http ("" = no TCP listener).
	HTTP string
	Now  time.Time // default time.Now()
}

// HSM is a token with a signing key, a test PKI with the key's certificate, a PIN file
// and a config that serves the key with the pkcs11 backend. SoftHSM is nil for a TPM.
type HSM struct {
	*SoftHSM
	Kind                   string
	Module                 string // the library the config names
	TPM                    *TPM   // KindTPM only
	Token, KeyLabel, KeyID string
	PIN, SOPIN             string
	PINFile                string // mode 0600
	PKI                    *devsetup.PKI
	Files                  devsetup.Files // the PKI's files; Bundle is "" for a key without a certificate
	Leaf                   *x509.Certificate
	Public                 crypto.PublicKey
	Key                    *ecdsa.PrivateKey // the imported key (Import only)
	Config                 string            // provenanced.toml
	Socket                 string            // the config's server.socket
	opts                   HSMOptions
}

// BuildHSM builds a token fixture in dir: dir/softhsm (softhsm2.conf for SOFTHSM2_CONF,
// the tokens, so.pin) or dir/tpm (the TPM's state and store, so.pin), the PKI's files,
// dir/user.pin and dir/provenanced.toml.
func BuildHSM(dir string, o HSMOptions) (h *HSM, err error) {
	hsmMu.Lock()
	defer hsmMu.Unlock()
	if o.Token == "" {
		o.Token = "provenance"
	}
	if o.KeyLabel == "" {
		o.KeyLabel = "signing"
	}
	if o.KeyID == "" {
		o.KeyID = "01"
	}
	if o.Kind == "" {
		o.Kind = KindSoftHSM
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	h = &HSM{Kind: o.Kind, Token: o.Token, KeyLabel: o.KeyLabel, KeyID: o.KeyID, PINFile: filepath.Join(dir, "user.pin"), Config: filepath.Join(dir, "provenanced.toml"), Socket: filepath.Join(dir, "provenanced.sock"), opts: o}
	var tok interface {
		InitToken(label, soPIN, pin string) error
		GenerateKey(token, pin string, k KeySpec) error
		PublicKey(token string, k KeySpec) (crypto.PublicKey, error)
	}
	var tokDir string
	switch o.Kind {
	case KindSoftHSM, KindP11Kit:
		sh, err := NewSoftHSM(filepath.Join(dir, "softhsm"))
		if err != nil {
			return nil, err
		}
		h.SoftHSM, h.Module, tok, tokDir = sh, sh.Module, sh, sh.Dir
		if o.Kind == KindP11Kit {
			if h.Module, err = FindP11KitProxy(); err != nil {
				return nil, err
			}
		}
	case KindTPM:
		tp, err := StartTPM(filepath.Join(dir, "tpm"))
		if err != nil {
			return nil, err
		}
		defer func() {
			if err != nil {
				tp.Stop()
			}
		}()
		h.TPM, h.Module, tok, tokDir = tp, tp.Module, tp, tp.Dir
	default:
		return nil, fmt.Errorf("testenv: unknown token kind %q", o.Kind)
	}
	if h.PIN, err = randomPIN(); err != nil {
		return nil, err
	}
	if h.SOPIN, err = randomPIN(); err != nil {
		return nil, err
	}
	if err := devsetup.WriteFileAtomic(h.PINFile, []byte(h.PIN+"\n"), 0o600); err != nil {
		return nil, err
	}
	// The SO PIN is kept too: a developer may want to unlock or initialise the token.
	if err := devsetup.WriteFileAtomic(filepath.Join(tokDir, "so.pin"), []byte(h.SOPIN+"\n"), 0o600); err != nil {
		return nil, err
	}
	if err := tok.InitToken(o.Token, h.SOPIN, h.PIN); err != nil {
		return nil, err
	}
	spec := KeySpec{Label: o.KeyLabel, ID: o.KeyID, Type: o.KeyType}
	switch {
	case o.NoKey:
	case o.Import:
		if h.SoftHSM == nil {
			return nil, errors.New("testenv: only a SoftHSM fixture imports its key")
		}
		if h.Key, err = devsetup.NewKey(); err != nil {
			return nil, err
		}
		if err := h.SoftHSM.ImportKey(o.Token, h.PIN, spec, h.Key); err != nil {
			return nil, err
		}
		h.Public = &h.Key.PublicKey
	default:
		if err := tok.GenerateKey(o.Token, h.PIN, spec); err != nil {
			return nil, err
		}
		// Only a P-256 key gets a certificate, and so needs its public key here (and
		// pkcs11-tool 0.23 cannot read a P-384 public key back).
		if o.KeyType == "" || o.KeyType == "EC:prime256v1" {
			if h.Public, err = tok.PublicKey(o.Token, spec); err != nil {
				return nil, err
			}
		}
	}
	h.PKI = o.PKI
	if h.PKI == nil {
		if h.PKI, err = devsetup.NewPKI(o.Now); err != nil {
			return nil, err
		}
	}
	if pub, ok := h.Public.(*ecdsa.PublicKey); ok && pub.Curve.Params().Name == "P-256" {
		if h.Leaf, err = h.PKI.Issue(pub, devsetup.DevMember(o.Now)); err != nil {
			return nil, err
		}
	}
	if h.Files, err = h.PKI.WriteFiles(dir, nil, h.Leaf); err != nil {
		return nil, err
	}
	if h.Leaf == nil {
		h.Files.Bundle = ""
	}
	h.Files.PrivateKey = ""
	if err := devsetup.WriteFileAtomic(h.Config, []byte(h.NewConfig().String()), 0o644); err != nil {
		return nil, err
	}
	return h, nil
}

// NewHSM builds a fixture in a folder of the test's own and fails the test if it cannot.
// The fixture's processes end at the test's cleanup.
func NewHSM(t TB, o HSMOptions) *HSM {
	t.Helper()
	h, err := BuildHSM(t.TempDir(), o)
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(h.Close)
	return h
}

// Close ends the fixture's processes (a TPM's); a SoftHSM fixture has none.
func (h *HSM) Close() {
	if h.TPM != nil {
		h.TPM.Stop()
	}
}

// Env is what a program using the fixture's token needs in its environment, beside
// os.Environ(): SOFTHSM2_CONF, or the TPM's store, TCTI and bus.
func (h *HSM) Env() []string {
	switch h.Kind {
	case KindTPM:
		return h.TPM.Env()
	case KindP11Kit:
		// p11-kit-proxy loads every module registered on the machine, tpm2-pkcs11 among
		// them if it is installed: this keeps it from looking for a TPM on the machine's
		// default TCTIs (among them a fixed loopback port).
		return []string{"SOFTHSM2_CONF=" + h.Conf, "TPM2_PKCS11_TCTI=device:" + filepath.Join(h.Dir, "no-tpm")}
	}
	return []string{"SOFTHSM2_CONF=" + h.Conf}
}

// Run runs a tool on the fixture's token (pkcs11-tool on the token's own library, not
// on p11-kit-proxy).
func (h *HSM) Run(name string, args ...string) ([]byte, error) {
	if h.TPM != nil {
		return h.TPM.Run(name, args...)
	}
	return h.SoftHSM.Run(name, args...)
}

// PublicKey reads a public key object from the fixture's token (through its own library).
func (h *HSM) PublicKey(token string, k KeySpec) (crypto.PublicKey, error) {
	if h.TPM != nil {
		return h.TPM.PublicKey(token, k)
	}
	return h.SoftHSM.PublicKey(token, k)
}

// p11KitProxies are where distributions put p11-kit-proxy.so.
var p11KitProxies = []string{
	"/usr/lib/x86_64-linux-gnu/p11-kit-proxy.so",
	"/usr/lib/aarch64-linux-gnu/p11-kit-proxy.so",
	"/usr/lib64/p11-kit-proxy.so",
	"/usr/lib/p11-kit-proxy.so",
}

// FindP11KitProxy returns the path of p11-kit-proxy.so, having checked that p11-kit
// knows SoftHSM. p11-kit reads module registrations from /etc/pkcs11/modules and
// /usr/share/p11-kit/modules, and ignores a user's own (~/.config/pkcs11) in a program
// run as root, so a test cannot point it elsewhere: it needs the softhsm2.module file
// that Debian's softhsm2 package installs.
func FindP11KitProxy() (string, error) {
	proxy := ""
	for _, p := range p11KitProxies {
		if _, err := os.Stat(p); err == nil {
			proxy = p
			break
		}
	}
	if proxy == "" {
		return "", fmt.Errorf("testenv: p11-kit-proxy.so is not installed: run apt-get install p11-kit")
	}
	for _, d := range []string{"/etc/pkcs11/modules", "/usr/share/p11-kit/modules"} {
		ents, _ := os.ReadDir(d)
		for _, e := range ents {
			b, err := os.ReadFile(filepath.Join(d, e.Name()))
			if err == nil && strings.Contains(string(b), "libsofthsm2.so") {
				return proxy, nil
			}
		}
	}
	return "", fmt.Errorf("testenv: p11-kit has no module registration for SoftHSM (a file naming libsofthsm2.so in /usr/share/p11-kit/modules): run apt-get install softhsm2 p11-kit")
}

func randomPIN() (string, error) {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// NewConfig is the fixture's config, to change (a nil value removes a key) and write:
// the [server] and [provenance] tables that `serve -dev` writes, and [keys.signing] on
// the fixture's token, its PIN in the PIN file, and its certificates when it has some.
func (h *HSM) NewConfig() *Config {
	c := DevConfig(h.opts.HTTP, filepath.Base(h.Files.RootCA)).
		Comment("Written by provenanced's testenv: a "+h.Kind+" token and a test PKI. Not for production.\nRun with "+strings.Join(h.Env(), " ")).
		Table("keys.signing", "backend", "pkcs11", "module", h.Module, "token_label", h.Token, "key_label", h.KeyLabel,
			"pin", "file:"+filepath.Base(h.PINFile))
	if h.opts.MaxSessions != 0 {
		c.Table("keys.signing", "max_sessions", h.opts.MaxSessions)
	}
	if h.Files.Bundle != "" {
		c.Table("keys.signing", "certificates", filepath.Base(h.Files.Bundle))
	}
	return c
}
