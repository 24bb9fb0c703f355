// Package backends is the one interface between provenanced and the places its keys live.
//
// A backend (a PEM file, a PKCS#11 token, AWS KMS) registers an Opener under its name in
// an init function. Open turns a [keys.NAME] table into a Key: the backend's Signer plus
// what every key has whatever its backend — a name, a certificate bundle checked against
// the key, a context-aware sign that checks its input, an optional readiness check, and
// the observer that times every signature. Nothing above this package knows which backend
// it talks to.
package backends

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ib1/provenanced/conf"
	"github.com/ib1/provenanced/provenance"
)

// Signer is what a backend provides for one key: an EC P-256 key that signs SHA-256
// digests. Sign (from crypto.Signer) must behave as SignContext with a background
// context.
type Signer interface {
	crypto.Signer
	// SignContext signs a 32-byte SHA-256 digest and returns an ASN.1 DER ECDSA signature.
	// The digest's length has been checked by the caller. Backends that talk to a token or
	// a network honour ctx's deadline and cancellation.
	SignContext(ctx context.Context, digest []byte) ([]byte, error)
	// Location says where the key lives ("file /etc/p/key.pem", "PKCS#11 token
	// "prov" label "signing"") for messages. It never contains a secret.
	Location() string
	// Close releases sessions, connections and handles.
	Close() error
}

// Readier is implemented by signers that can tell whether they can sign right now (a
// token is present and logged in, KMS answers). Ready must be cheap enough to call every
// few seconds.
type Readier interface {
	Ready(ctx context.Context) error
}

// Concurrent is implemented by signers that can usefully have more signatures in flight
// than there are cores: a network service, a token with a pool of sessions. A batch is
// spread over that many workers.
type Concurrent interface {
	Concurrency() int
}

// SessionWaiter is implemented by signers whose signatures wait for a session of a
// bounded pool (a PKCS#11 token's): the daemon times that wait.
type SessionWaiter interface {
	ObserveSessionWait(func(time.Duration))
}

// Backend is what a backend registers.
type Backend struct {
	// Open opens the key that spec describes. It decodes its own options with
	// spec.Decode, which rejects fields it does not know.
	Open func(ctx context.Context, spec *conf.Key) (Signer, error)
	// URI: the backend takes a key given as one URI (uri = "pkcs11:..."); for any other
	// backend a uri in the key's table is an error, not a field silently ignored.
	URI bool
	// Generate, if the backend can create keys, creates the P-256 key that spec
	// describes and returns its public key. A key that exists already is an error: a
	// signing key is never overwritten.
	Generate func(ctx context.Context, spec *conf.Key) (crypto.PublicKey, error)
	// InProcess: the backend signs in the daemon's own memory with Go's crypto/ecdsa (a
	// PEM file), so its signatures are not verified again. Every other backend's are, in
	// Key.SignContext, before they leave: a token or a service outside the process can
	// return a signature that does not verify (a firmware or driver fault, a key replaced
	// behind its label, an emulator's bug), and nothing else on the way would notice.
	InProcess bool
}

var (
	registryMu sync.RWMutex
	registry   = map[string]Backend{}
)

// Register makes a backend available under name; backends call it from init.
func Register(name string, b Backend) {
	registryMu.Lock()
	defer registryMu.Unlock()
	if _, dup := registry[name]; dup {
		panic("backends: Register called twice for " + name)
	}
	registry[name] = b
}

// Names lists the registered backends.
func Names() []string {
	registryMu.RLock()
	defer registryMu.RUnlock()
	names := make([]string, 0, len(registry))
	for n := range registry {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Lookup returns the backend that spec names, or a config error that lists the
// registered ones.
func Lookup(spec *conf.Key) (Backend, error) {
	registryMu.RLock()
	b, ok := registry[spec.Backend]
	registryMu.RUnlock()
	if !ok {
		return Backend{}, spec.Errorf("backend", "unknown backend %q; accepted: %s", spec.Backend, strings.Join(Names(), ", "))
	}
	if spec.URI != "" && !b.URI {
		return Backend{}, spec.Errorf("uri", "backend %q does not take its key as a URI; give its fields instead", spec.Backend)
	}
	return b, nil
}

// Generate creates the key that spec describes in its backend and returns its public key.
func Generate(ctx context.Context, spec *conf.Key) (crypto.PublicKey, error) {
	b, err := Lookup(spec)
	if err != nil {
		return nil, err
	}
	if b.Generate == nil {
		return nil, spec.Errorf("backend", "backend %q cannot create keys", spec.Backend)
	}
	return b.Generate(ctx, spec)
}

// Errors a caller must tell apart. Backends wrap their errors with these.
var (
	// ErrUnavailable: the backend cannot sign now (token removed, KMS down or refusing);
	// the request may succeed later. HTTP 503.
	ErrUnavailable = errors.New("backend unavailable")
	// ErrInvalidDigest: the input is not a 32-byte SHA-256 digest. HTTP 400.
	ErrInvalidDigest = errors.New("invalid digest")
	// ErrBadSignature: the backend returned a signature that does not verify with the
	// key's public key, so it was not given out. It comes wrapped with ErrUnavailable
	// (HTTP 503: the key cannot sign correctly now) and its outcome is "invalid".
	ErrBadSignature = errors.New("the backend's signature does not verify with the key's public key")
	// ErrTransient comes wrapped with ErrUnavailable when one signature failed but the
	// key is not known to be down: a throttled call, or a service that has not answered
	// for less time than the backend waits before it calls that an outage. The request
	// is answered 503 all the same; readiness and provenanced_backend_up follow the
	// backend's own Ready instead, which decides when such failures have lasted.
	ErrTransient = errors.New("a passing failure")
)

// Observer is told how long each signature took and how it ended.
type Observer func(took time.Duration, err error)

// Key is a named signing key with its certificate chain.
type Key struct {
	name    string
	backend string
	signer  Signer
	chain   []*x509.Certificate
	pub     *ecdsa.PublicKey
	observe Observer
	// verify: the backend is outside the process, and each signature is checked.
	verify bool
}

// Name is the key's name in the config ([keys.NAME]).
func (k *Key) Name() string { return k.name }

// Backend is the name of the backend that holds the key.
func (k *Key) Backend() string { return k.backend }

// Location says where the key lives, for messages.
func (k *Key) Location() string { return k.signer.Location() }

// Certificates is the key's bundle, leaf first, or nil for a key without a certificate.
func (k *Key) Certificates() []*x509.Certificate { return k.chain }

// Leaf is the key's certificate, or nil.
func (k *Key) Leaf() *x509.Certificate {
	if len(k.chain) == 0 {
		return nil
	}
	return k.chain[0]
}

// Public returns the key's *ecdsa.PublicKey.
func (k *Key) Public() crypto.PublicKey { return k.pub }

// Sign implements crypto.Signer for code that has no context (x509.CreateCertificateRequest).
func (k *Key) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	return k.SignContext(context.Background(), digest, opts)
}

// SignContext signs a SHA-256 digest and returns a DER ECDSA signature. It refuses any
// other hash or length itself, since some backends would silently sign a prefix. A
// signature from a backend outside the process is verified against the key's public key
// before it is returned (ErrBadSignature): this is the one path every signature takes,
// raw or batched, for a record or a CSR. The observer is given the backend's time alone.
func (k *Key) SignContext(ctx context.Context, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if opts != nil && opts.HashFunc() != crypto.SHA256 {
		return nil, fmt.Errorf("%w: key %q signs SHA-256 digests only, not %v", ErrInvalidDigest, k.name, opts.HashFunc())
	}
	if len(digest) != 32 {
		return nil, fmt.Errorf("%w: a SHA-256 digest is 32 bytes, got %d", ErrInvalidDigest, len(digest))
	}
	start := time.Now()
	sig, err := k.signer.SignContext(ctx, digest)
	took := time.Since(start)
	if err == nil && k.verify {
		err = k.check(digest, sig)
	}
	if k.observe != nil {
		k.observe(took, err)
	}
	if err != nil {
		return nil, err
	}
	return sig, nil
}

// check verifies a signature the backend made of digest. The error names what was wrong
// but not the bytes, which differ each time: the same fault repeated is the same error,
// logged once a second rather than once a request.
func (k *Key) check(digest, sig []byte) error {
	if ecdsa.VerifyASN1(k.pub, digest, sig) {
		return nil
	}
	what := "a signature that does not verify"
	var rs struct{ R, S *big.Int }
	if rest, err := asn1.Unmarshal(sig, &rs); err != nil || len(rest) > 0 {
		what = fmt.Sprintf("%d bytes that are not an ASN.1 DER ECDSA signature", len(sig))
	}
	return fmt.Errorf("%w: %w: %s returned %s; it was not given out", ErrUnavailable, ErrBadSignature, k.signer.Location(), what)
}

// probeDigest is what CheckSigns has signed: a digest no record or client sends on purpose.
var probeDigest = sha256.Sum256([]byte("provenanced: does this key sign correctly?"))

// CheckSigns makes a test signature and verifies it, whatever the backend, without
// counting it as one of the key's signatures: how a key whose signature failed its check
// shows that it signs correctly again when no client signs meanwhile.
func (k *Key) CheckSigns(ctx context.Context) error {
	sig, err := k.signer.SignContext(ctx, probeDigest[:])
	if err != nil {
		return err
	}
	return k.check(probeDigest[:], sig)
}

// WithContext returns k as a crypto.Signer whose Sign uses ctx, for library code that
// signs through crypto.Signer (x509.CreateCertificateRequest) within a request.
func (k *Key) WithContext(ctx context.Context) crypto.Signer { return ctxSigner{k, ctx} }

type ctxSigner struct {
	k   *Key
	ctx context.Context
}

func (s ctxSigner) Public() crypto.PublicKey { return s.k.Public() }

func (s ctxSigner) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	return s.k.SignContext(s.ctx, digest, opts)
}

// Ready reports whether the key can sign now: the backend's own check, if it has one.
func (k *Key) Ready(ctx context.Context) error {
	if r, ok := k.signer.(Readier); ok {
		return r.Ready(ctx)
	}
	return nil
}

// Close releases the backend's resources.
func (k *Key) Close() error { return k.signer.Close() }

// Concurrency is how many signatures are worth having in flight at once: the backend's
// own figure, or the number of cores for a key in memory.
func (k *Key) Concurrency() int {
	if c, ok := k.signer.(Concurrent); ok && c.Concurrency() > 0 {
		return c.Concurrency()
	}
	return runtime.GOMAXPROCS(0)
}

// Options are what Open needs beyond the key's table.
type Options struct {
	// Observe, when set, is called once per key and returns the Observer of its
	// signatures; metrics and audit logs hang here, once for every backend.
	Observe func(name, backend string) Observer
	// SessionWait, when set, is called once per key whose signer waits for sessions
	// (SessionWaiter) and returns what to tell each wait.
	SessionWait func(name string) func(time.Duration)
	// ReadSource reads a certificate bundle from a path or s3:// URL (the daemon gives
	// source.Read); without it, bundles are read from files only.
	ReadSource func(ctx context.Context, ref string) ([]byte, error)
	// WithoutCertificates opens the key alone, for making its CSR before it has a
	// certificate.
	WithoutCertificates bool
}

// Open opens one key: its backend's signer, then its certificate bundle, which must be
// for this very key.
func Open(ctx context.Context, spec *conf.Key, opts Options) (*Key, error) {
	b, err := Lookup(spec)
	if err != nil {
		return nil, err
	}
	signer, err := b.Open(ctx, spec)
	if err != nil {
		return nil, err
	}
	k, err := newKey(ctx, spec, signer, opts)
	if err != nil {
		signer.Close()
		return nil, err
	}
	return k, nil
}

// Reuse returns a key for spec that signs through old's open backend (its sessions,
// client, handles) with spec's certificate bundle read again: what a reload does for a
// key whose table did not change (conf.Key.SameKey), so that a renewed bundle is picked
// up without reopening a token. The two keys share the backend: close only one of them,
// once nothing uses the other.
func Reuse(ctx context.Context, old *Key, spec *conf.Key, opts Options) (*Key, error) {
	return newKey(ctx, spec, old.signer, opts)
}

// SharesBackend reports whether k and o sign through the same open backend (Reuse).
func (k *Key) SharesBackend(o *Key) bool { return k.signer == o.signer }

func newKey(ctx context.Context, spec *conf.Key, signer Signer, opts Options) (*Key, error) {
	pub, ok := signer.Public().(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, spec.Errorf("", "%s is not an EC P-256 key (%T); provenanced signs with ECDSA P-256 only", signer.Location(), signer.Public())
	}
	k := &Key{name: spec.Name, backend: spec.Backend, signer: signer, pub: pub, verify: verifies(spec.Backend)}
	if spec.Certificates != "" && !opts.WithoutCertificates {
		read := opts.ReadSource
		if read == nil {
			read = readFile
		}
		data, err := read(ctx, spec.Certificates)
		if err != nil {
			return nil, spec.Errorf("certificates", "cannot read %s: %v", spec.Certificates, err)
		}
		chain, err := provenance.ParseChainPEM(data)
		if err == nil {
			err = provenance.MatchBundle(chain, pub, "the key in "+signer.Location())
		}
		if err != nil {
			return nil, spec.Errorf("certificates", "%s: %v", spec.Certificates, err)
		}
		k.chain = chain
	}
	if w, ok := signer.(SessionWaiter); ok && opts.SessionWait != nil {
		w.ObserveSessionWait(opts.SessionWait(k.name))
	}
	if opts.Observe != nil {
		k.observe = opts.Observe(k.name, k.backend)
	}
	return k, nil
}

// verifies reports whether the signatures of backend name are verified before they leave:
// those of every backend but one registered InProcess.
func verifies(name string) bool {
	registryMu.RLock()
	defer registryMu.RUnlock()
	return !registry[name].InProcess
}

// CloseAll closes keys, returning the first error.
func CloseAll(keys []*Key) error {
	var first error
	for _, k := range keys {
		if err := k.Close(); err != nil && first == nil {
			first = fmt.Errorf("closing key %q: %w", k.Name(), err)
		}
	}
	return first
}

// readFile reads a bundle from a file: what Open reads when it is given no ReadSource.
func readFile(_ context.Context, path string) ([]byte, error) {
	if strings.HasPrefix(path, "s3://") {
		return nil, errors.New("an s3:// source needs the daemon's reader of sources")
	}
	data, err := os.ReadFile(path)
	var pe *os.PathError
	if errors.As(err, &pe) {
		return nil, pe.Err // the caller names the file
	}
	return data, err
}
