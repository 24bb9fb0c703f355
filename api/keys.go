package api

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ib1/provenanced/api/access"
	"github.com/ib1/provenanced/api/wire"
	"github.com/ib1/provenanced/backends"
	"github.com/ib1/provenanced/conf"
	"github.com/ib1/provenanced/provenance"
)

// KeyInfo is a key as GET /v1/keys shows it.
type KeyInfo struct {
	Name         string   `json:"name"`
	Backend      string   `json:"backend"`
	Algorithm    string   `json:"algorithm"`
	PublicKey    string   `json:"public_key"`
	Certificates []string `json:"certificates"`
	Serial       string   `json:"serial,omitempty"`
	NotAfter     string   `json:"not_after,omitempty"`
}

// keyEntry is a key with what its responses repeat, encoded once.
type keyEntry struct {
	key *backends.Key
	// signer signs records: the key with its chain checked and encoded once; nil, with
	// signerErr saying why, for a key that cannot sign records.
	signer    *provenance.SigningKey
	signerErr error
	info      []byte // KeyInfo as JSON
	// refusal is the last refused signature of this key (a 503) that was logged. The same
	// refusal again within a second is not logged again, and its answer names the logged
	// line's request id: in an outage a looping client would otherwise write a line per
	// request (the health check logs the outage, with counts). A refusal for another
	// reason is logged as usual.
	refusal struct {
		sync.Mutex
		at      time.Time
		err, id string
	}
}

// repeatedRefusal reports whether a 503 with this error text repeats the one logged
// less than a second ago, and returns that one's request id; if not, the refusal with id
// becomes the one logged.
func (e *keyEntry) repeatedRefusal(err, id string) (string, bool) {
	now := time.Now()
	e.refusal.Lock()
	defer e.refusal.Unlock()
	if err == e.refusal.err && now.Sub(e.refusal.at) < time.Second {
		return e.refusal.id, true
	}
	e.refusal.at, e.refusal.err, e.refusal.id = now, err, id
	return id, false
}

func newKeyEntry(k *backends.Key) (*keyEntry, error) {
	info, err := keyInfo(k)
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(info)
	if err != nil {
		return nil, err
	}
	var signer *provenance.SigningKey
	signerErr := fmt.Errorf("key %q has no certificate, so its records could not be verified; configure its certificates", k.Name())
	if len(k.Certificates()) > 0 {
		if signer, signerErr = provenance.NewSigningKey(k, k.Certificates()); signer != nil {
			// The key itself verifies every signature of a backend outside the process
			// (backends.Key.SignContext) and a key in memory signs with crypto/ecdsa: a
			// second verification here would double that cost for nothing.
			signer.CheckSignatures = false
		}
	}
	return &keyEntry{
		key:       k,
		signer:    signer,
		signerErr: signerErr,
		info:      b,
	}, nil
}

func keyInfo(k *backends.Key) (KeyInfo, error) {
	der, err := x509.MarshalPKIXPublicKey(k.Public())
	if err != nil {
		return KeyInfo{}, fmt.Errorf("key %q: %w", k.Name(), err)
	}
	info := KeyInfo{
		Name:         k.Name(),
		Backend:      k.Backend(),
		Algorithm:    "ECDSA_P256",
		PublicKey:    string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})),
		Certificates: []string{},
	}
	for _, c := range k.Certificates() {
		info.Certificates = append(info.Certificates, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})))
	}
	if leaf := k.Leaf(); leaf != nil {
		info.Serial = leaf.SerialNumber.String()
		info.NotAfter = leaf.NotAfter.UTC().Format(time.RFC3339)
	}
	return info, nil
}

func (a *API) listKeys(w http.ResponseWriter, r *http.Request) {
	b := append(make([]byte, 0, 4096), `{"keys":[`...)
	for i, e := range a.order {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, e.info...)
	}
	wire.Bytes(w, http.StatusOK, append(b, "]}\n"...))
}

func (a *API) getKey(w http.ResponseWriter, r *http.Request) {
	e, ok := a.lookupKey(w, r)
	if !ok {
		return
	}
	wire.Bytes(w, http.StatusOK, append(append([]byte(nil), e.info...), '\n'))
}

func (a *API) lookupKey(w http.ResponseWriter, r *http.Request) (*keyEntry, bool) {
	return a.keyNamed(w, r.PathValue("name"), "")
}

// keyNamed is the key called name; it answers 404 when there is none. A name that
// cannot be a key's is refused without being repeated: the answer (and the log line that
// repeats it) never carries more than a key's name of what a client sent. field prefixes
// the message ("key: ") when the name came from the body.
func (a *API) keyNamed(w http.ResponseWriter, name, field string) (*keyEntry, bool) {
	if !conf.ValidKeyName(name) {
		wire.Error(w, http.StatusNotFound, "not_found", field+"no such key: "+conf.KeyNameRule+"; GET /v1/keys lists them", "")
		return nil, false
	}
	e, ok := a.keys[name]
	if !ok {
		wire.Error(w, http.StatusNotFound, "not_found", field+"no key named "+strconv.Quote(name)+"; GET /v1/keys lists them", "")
	}
	return e, ok
}

// signItem is one thing to sign: a digest, or a message the daemon hashes.
type signItem struct {
	Digest  *string `json:"digest"`
	Message *string `json:"message"`
}

type signRequest struct {
	signItem
	Batch []json.RawMessage `json:"batch"`
}

var b64 = base64.StdEncoding.Strict()

// digest returns the SHA-256 digest the item asks to have signed. field prefixes the
// names in messages ("batch[3].").
func (it *signItem) digest(field string) ([]byte, error) {
	switch {
	case it.Digest != nil && it.Message != nil:
		return nil, wire.BadRequest(field + "digest and " + field + "message are both set; send one")
	case it.Digest != nil:
		d, err := b64.DecodeString(*it.Digest)
		if err != nil {
			return nil, wire.BadRequest(field + "digest: not standard base64 with padding (RFC 4648 section 4)")
		}
		if len(d) != sha256.Size {
			return nil, wire.BadRequest(fmt.Sprintf("%sdigest: must be a 32-byte SHA-256 digest, got %d bytes", field, len(d)))
		}
		return d, nil
	case it.Message != nil:
		m, err := b64.DecodeString(*it.Message)
		if err != nil {
			return nil, wire.BadRequest(field + "message: not standard base64 with padding (RFC 4648 section 4)")
		}
		sum := sha256.Sum256(m)
		return sum[:], nil
	}
	return nil, wire.BadRequest("one of " + field + "digest or " + field + "message is required")
}

// parseSignRequest reads {"digest"} | {"message"} | {"batch": [...]}. The common
// {"digest":"..."} skips the reflection of encoding/json.
func parseSignRequest(body []byte) (*signRequest, error) {
	if d, ok := fastDigest(body); ok {
		return &signRequest{signItem: signItem{Digest: &d}}, nil
	}
	var req signRequest
	if err := wire.DecodeStrict(body, &req, "digest, message, batch"); err != nil {
		return nil, err
	}
	if req.Batch != nil && (req.Digest != nil || req.Message != nil) {
		return nil, wire.BadRequest("batch cannot be combined with digest or message")
	}
	return &req, nil
}

// fastDigest recognises exactly {"digest":"BASE64"} (JSON whitespace allowed around it).
func fastDigest(body []byte) (string, bool) {
	b := bytes.TrimSpace(body)
	const pre, suf = `{"digest":"`, `"}`
	if len(b) < len(pre)+len(suf) || string(b[:len(pre)]) != pre || string(b[len(b)-len(suf):]) != suf {
		return "", false
	}
	v := b[len(pre) : len(b)-len(suf)]
	for _, c := range v {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == '/' || c == '=') {
			return "", false
		}
	}
	return string(v), true
}

func (a *API) sign(w http.ResponseWriter, r *http.Request) {
	e, ok := a.lookupKey(w, r)
	if !ok {
		return
	}
	body, err := wire.ReadJSON(w, r, a.opts.MaxRequestBytes)
	if err != nil {
		a.writeRequestError(w, r, err)
		return
	}
	req, err := parseSignRequest(body)
	if err != nil {
		a.writeRequestError(w, r, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.opts.SignTimeout)
	defer cancel()
	if req.Batch != nil {
		a.signBatch(ctx, w, r, e, req.Batch)
		return
	}
	digest, err := req.digest("")
	if err != nil {
		a.writeRequestError(w, r, err)
		return
	}
	if !access.Spend(r.Context(), 1) {
		return
	}
	if e := access.Entry(r.Context()); e != nil {
		e.Digest = digest
	}
	sig, err := e.key.SignContext(ctx, digest, crypto.SHA256)
	if err != nil {
		a.writeSignError(w, r, e, err)
		return
	}
	wire.JSON(w, http.StatusOK, &signAnswer{Key: e.key.Name(), Algorithm: sigAlgorithm, Signature: sig})
}

// signError classifies a backend's error for the client: the status, the code and a
// message that names the key and nothing behind it. A backend's error text can hold a
// module path, a token label, an endpoint, a region, an ARN with its account id, or an
// upstream's own words: it goes only to the log, under the request id the answer gives.
// A 503 that repeats, within a second, the refusal last logged for the key is not logged
// again: *id becomes that line's request id, which holds the same reason.
func (a *API) signError(ctx context.Context, route string, e *keyEntry, err error, id *string) (int, string, string) {
	name := strconv.Quote(e.key.Name())
	if errors.Is(err, backends.ErrInvalidDigest) {
		return http.StatusBadRequest, "bad_request", err.Error()
	}
	status, level, msg := http.StatusServiceUnavailable, slog.LevelWarn, ""
	switch {
	case errors.Is(err, backends.ErrBadSignature):
		level, msg = slog.LevelError, "key "+name+" returned a signature that does not verify with its public key, so none was given out"
	case errors.Is(err, context.DeadlineExceeded):
		msg = "key " + name + " did not sign within sign_timeout"
	case errors.Is(err, context.Canceled):
		msg = "the request was cancelled before key " + name + " signed"
	case errors.Is(err, backends.ErrUnavailable):
		msg = "key " + name + " cannot sign now"
	default:
		status, level, msg = http.StatusInternalServerError, slog.LevelError, "key "+name+" failed to sign"
	}
	logged := true
	if status == http.StatusServiceUnavailable {
		if first, again := e.repeatedRefusal(err.Error(), *id); again {
			*id, logged = first, false
		}
	}
	if logged {
		a.log.LogAttrs(ctx, level, "sign failed", slog.String("request_id", *id), slog.String("route", route), slog.String("key", e.key.Name()),
			slog.String("backend", e.key.Backend()), slog.String("error", err.Error()))
	}
	code := "unavailable"
	if status == http.StatusInternalServerError {
		code = "internal"
	}
	return status, code, msg + "; the daemon's log has the reason under request id " + *id
}

func (a *API) writeSignError(w http.ResponseWriter, r *http.Request, e *keyEntry, err error) {
	id := wire.NewRequestID()
	status, code, msg := a.signError(r.Context(), r.Pattern, e, err, &id)
	if status >= 500 {
		w.Header().Set("X-Request-Id", id)
		wire.Error(w, status, code, msg, id)
		return
	}
	wire.Error(w, status, code, msg, "")
}

// sigAlgorithm is the algorithm of every signature: ECDSA P-256 over a SHA-256 digest.
const sigAlgorithm = "ECDSA_SHA_256"

// signAnswer is POST /v1/keys/{name}/sign's answer to a digest or a message.
type signAnswer struct {
	Key       string `json:"key"`
	Algorithm string `json:"algorithm"`
	Signature []byte `json:"signature"`
}

// batchAnswer is its answer to a batch: one item per item asked, in the same order.
type batchAnswer struct {
	Key       string      `json:"key"`
	Algorithm string      `json:"algorithm"`
	Batch     []batchItem `json:"batch"`
}

// batchItem is one item's outcome: its signature, or why there is none.
type batchItem struct {
	Signature []byte        `json:"signature,omitzero"`
	Error     *wire.Problem `json:"error,omitzero"`
}

// signBatch signs every item of a batch, spread over the cores (and over a token's
// sessions, which the backend pools). Items fail one by one; the batch answers 200 as long
// as it was well-formed.
func (a *API) signBatch(ctx context.Context, w http.ResponseWriter, r *http.Request, e *keyEntry, items []json.RawMessage) {
	if len(items) > a.opts.MaxBatch {
		wire.Error(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("batch has %d items; max_batch is %d", len(items), a.opts.MaxBatch), "")
		return
	}
	// Every item costs a signature of the client's rate, the ones that turn out not to be
	// digests too: the rate bounds what a client may ask for, and is refused whole.
	if !access.Spend(r.Context(), len(items)) {
		return
	}
	answer := &batchAnswer{Key: e.key.Name(), Algorithm: sigAlgorithm, Batch: make([]batchItem, len(items))}
	digests := batchDigests(items, answer.Batch)
	if entry := access.Entry(r.Context()); entry != nil {
		entry.Digests = digests
	}
	a.signAll(ctx, r.Pattern, e, digests, answer.Batch)
	// The first failed item's: a repeated refusal's id is the line logged before.
	for _, it := range answer.Batch {
		if it.Error != nil && it.Error.RequestID != "" {
			w.Header().Set("X-Request-Id", it.Error.RequestID)
			break
		}
	}
	wire.JSON(w, http.StatusOK, answer)
}

// batchDigests reads each item's digest; an item that is not one gets its error in out
// and a nil digest.
func batchDigests(items []json.RawMessage, out []batchItem) [][]byte {
	digests := make([][]byte, len(items))
	for i, raw := range items {
		field := "batch[" + strconv.Itoa(i) + "]."
		var it signItem
		if d, ok := fastDigest(raw); ok {
			it.Digest = &d
		} else if err := wire.DecodeStrict(raw, &it, "digest, message"); err != nil {
			out[i].Error = &wire.Problem{Code: "bad_request", Message: "batch[" + strconv.Itoa(i) + "]: " + err.Error()}
			continue
		}
		d, err := it.digest(field)
		if err != nil {
			out[i].Error = &wire.Problem{Code: "bad_request", Message: err.Error()}
			continue
		}
		digests[i] = d
	}
	return digests
}

// signAll signs the non-nil digests with as many workers as the key signs at once,
// putting each signature or failure into out.
func (a *API) signAll(ctx context.Context, route string, e *keyEntry, digests [][]byte, out []batchItem) {
	workers := min(e.key.Concurrency(), len(digests))
	var wg sync.WaitGroup
	var next atomic.Int64
	var idOnce sync.Once // one request id for every item that failed
	var id string
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < len(digests); i = int(next.Add(1) - 1) {
				if digests[i] == nil {
					continue
				}
				sig, err := e.key.SignContext(ctx, digests[i], crypto.SHA256)
				if err == nil {
					out[i].Signature = sig
					continue
				}
				idOnce.Do(func() { id = wire.NewRequestID() })
				itemID := id // the logged refusal's, if this one repeats it
				status, code, msg := a.signError(ctx, route, e, err, &itemID)
				out[i].Error = &wire.Problem{Code: code, Message: msg}
				if status >= 500 {
					out[i].Error.RequestID = itemID
				}
			}
		}()
	}
	wg.Wait()
}
