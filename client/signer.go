package client

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"
)

// Signer is a crypto.Signer whose private key stays in the daemon: hand it to
// x509.CreateCertificate, x509.CreateCertificateRequest or a tls.Certificate's
// PrivateKey. The daemon signs SHA-256 digests only, so Sign refuses any other hash (for
// TLS 1.2, set the certificate's SupportedSignatureAlgorithms to
// tls.ECDSAWithP256AndSHA256; TLS 1.3 uses it for P-256 keys anyway).
type Signer struct {
	c       *Client
	key     string
	pub     *ecdsa.PublicKey
	timeout time.Duration
}

// Signer fetches key's public key once and returns a Signer for it. Each signature waits
// at most timeout (30s if 0).
func (c *Client) Signer(ctx context.Context, key string, timeout time.Duration) (*Signer, error) {
	k, err := c.Key(ctx, key)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode([]byte(k.PublicKey))
	if block == nil || block.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("provenanced: key %q: the public key is not PEM", key)
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("provenanced: key %q: %w", key, err)
	}
	ec, ok := pub.(*ecdsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("provenanced: key %q is a %T, not ECDSA", key, pub)
	}
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	return &Signer{c: c, key: key, pub: ec, timeout: timeout}, nil
}

// Public is the key's public key, as fetched when the Signer was made.
func (s *Signer) Public() crypto.PublicKey { return s.pub }

// Sign signs a SHA-256 digest (opts must say crypto.SHA256); the signature is ASN.1 DER.
// rand is not used: the daemon's key draws its own.
func (s *Signer) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	return s.SignContext(ctx, digest, opts)
}

// SignContext is Sign with a context.
func (s *Signer) SignContext(ctx context.Context, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if opts == nil || opts.HashFunc() != crypto.SHA256 {
		h := "none"
		if opts != nil {
			h = opts.HashFunc().String()
		}
		return nil, fmt.Errorf("provenanced: key %q signs SHA-256 digests only, not %s", s.key, h)
	}
	if len(digest) != sha256.Size {
		return nil, fmt.Errorf("provenanced: a SHA-256 digest is %d bytes, not %d", sha256.Size, len(digest))
	}
	return s.c.SignDigest(ctx, s.key, digest)
}

// ReadTokenFile reads a bearer token from a file, refusing one that other users can read.
func ReadTokenFile(path string) (string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if st.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("token file %s has mode %04o, so other users can read the token; run: chmod 600 %s", path, uint32(st.Mode().Perm()), path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", errors.New("token file " + path + " is empty")
	}
	return tok, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
