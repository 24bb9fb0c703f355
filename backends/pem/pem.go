// Package pem is the development backend: an EC P-256 private key in a PEM file.
//
//	[keys.signing]
//	backend = "pem"
//	private_key = "signing-key.pem"   # PKCS#8 or SEC1, mode 0600 or stricter
//	certificates = "signing-bundle.pem"
//
// The key is in the daemon's memory, so this backend is for development and for members
// without an HSM or KMS; it refuses a key file that other users could read.
package pem

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"

	"github.com/ib1/provenanced/backends"
	"github.com/ib1/provenanced/conf"
)

// Name is the backend's name in the config.
const Name = "pem"

// The key signs in the daemon's memory with crypto/ecdsa: its signatures are not checked
// again (backends.Backend.InProcess).
func init() {
	backends.Register(Name, backends.Backend{Open: Open, Generate: Generate, InProcess: true})
}

// Options are the backend's fields of a [keys.NAME] table.
type Options struct {
	PrivateKey string `toml:"private_key"`
}

// Open loads the key file that spec names.
func Open(_ context.Context, spec *conf.Key) (backends.Signer, error) {
	var o Options
	if err := spec.Decode(&o); err != nil {
		return nil, err
	}
	if o.PrivateKey == "" {
		return nil, spec.Errorf("private_key", "missing: the path of the PEM private key file")
	}
	path := spec.Path(o.PrivateKey)
	key, err := LoadKey(path)
	if err != nil {
		return nil, spec.Errorf("private_key", "%v", err)
	}
	return &Signer{key: key, path: path}, nil
}

// Generate creates a P-256 key in the file private_key names, mode 0600. The file is
// created exclusively: an existing key is never overwritten.
func Generate(_ context.Context, spec *conf.Key) (crypto.PublicKey, error) {
	var o Options
	if err := spec.Decode(&o); err != nil {
		return nil, err
	}
	if o.PrivateKey == "" {
		return nil, spec.Errorf("private_key", "missing: the path of the PEM private key file to create")
	}
	path := spec.Path(o.PrivateKey)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil, spec.Errorf("private_key", "%s exists already; provenanced never overwrites a key (move it away first if you really mean to replace it)", path)
		}
		return nil, spec.Errorf("private_key", "cannot create %s: %v", path, unwrapPath(err))
	}
	if err := pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("writing %s: %w", path, err)
	}
	return &key.PublicKey, nil
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// ownerHint explains a key the daemon may not read: the fix is to run the daemon as the
// key's owner, never to open the key to more users. A container that mounts a host
// directory is the usual case, whence the two ways to do it there.
func ownerHint(path string, err error) string {
	if !errors.Is(err, fs.ErrPermission) {
		return ""
	}
	st, serr := os.Stat(path)
	if serr != nil {
		return ""
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return ""
	}
	return fmt.Sprintf(" (the key belongs to uid %d and the daemon runs as uid %d: run the daemon as the key's owner; in a container, docker run --user %d or podman run --userns=keep-id)",
		sys.Uid, os.Geteuid(), sys.Uid)
}

// LoadKey reads an EC P-256 private key from a PEM file (PKCS#8 "PRIVATE KEY" or SEC1
// "EC PRIVATE KEY") that only its owner can read.
func LoadKey(path string) (*ecdsa.PrivateKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cannot open %s: %v%s", path, unwrapPath(err), ownerHint(path, err))
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("cannot stat %s: %v", path, err)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%s is readable or writable by group or others (mode %04o); a private key must be private: run chmod 600 %s", path, perm, path)
	}
	data, err := io.ReadAll(io.LimitReader(f, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("cannot read %s: %v", path, err)
	}
	key, err := ParseKey(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	return key, nil
}

// ParseKey parses the first private key block of PEM data. Errors never quote the data.
func ParseKey(data []byte) (*ecdsa.PrivateKey, error) {
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, errors.New("no PEM private key found (expected a \"PRIVATE KEY\" or \"EC PRIVATE KEY\" block)")
		}
		var key any
		var err error
		switch b.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(b.Bytes)
		case "ENCRYPTED PRIVATE KEY":
			return nil, errors.New("the key is encrypted; provenanced reads unencrypted keys only (protect the file with its mode, or use an HSM or KMS)")
		case "EC PARAMETERS":
			continue // openssl ecparam -genkey writes these before the key
		default:
			return nil, fmt.Errorf("a %q block is not a private key", b.Type)
		}
		if err != nil {
			return nil, fmt.Errorf("cannot parse the %s block: %v", b.Type, err)
		}
		ec, ok := key.(*ecdsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("the key is %T; provenanced signs with EC P-256 keys only", key)
		}
		if ec.Curve != elliptic.P256() {
			return nil, fmt.Errorf("the key is on curve %s; provenanced signs with P-256 only", ec.Curve.Params().Name)
		}
		return ec, nil
	}
}

// Signer signs with a key held in memory.
type Signer struct {
	key  *ecdsa.PrivateKey
	path string
}

// NewSigner wraps a key held in memory; location describes it in messages.
func NewSigner(key *ecdsa.PrivateKey, location string) *Signer {
	return &Signer{key: key, path: location}
}

// Public returns the key's public half.
func (s *Signer) Public() crypto.PublicKey { return &s.key.PublicKey }

// Sign signs a digest; the context of SignContext is not needed for a key in memory.
func (s *Signer) Sign(_ io.Reader, digest []byte, _ crypto.SignerOpts) ([]byte, error) {
	return ecdsa.SignASN1(rand.Reader, s.key, digest)
}

// SignContext signs a digest and returns a DER signature.
func (s *Signer) SignContext(_ context.Context, digest []byte) ([]byte, error) {
	return ecdsa.SignASN1(rand.Reader, s.key, digest)
}

// Location names the key file.
func (s *Signer) Location() string { return "private key file " + s.path }

// Close does nothing: the key is garbage like any other memory. (Go gives no way to
// reliably wipe it.)
func (s *Signer) Close() error { return nil }
