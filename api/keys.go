package api

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ib1/provenanced/backends"
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
	sigPrefix []byte // {"key":NAME,"algorithm":"ECDSA_SHA_256","signature":"
	batchHead []byte // {"key":NAME,"algorithm":"ECDSA_SHA_256","batch":[
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
	name := appendJSONString(nil, k.Name())
	var signer *provenance.SigningKey
	signerErr := fmt.Errorf("key %q has no certificate, so its records could not be verified; configure its certificates", k.Name())
	if len(k.Certificates()) > 0 {
		if signer, signerErr = provenance.NewSigningKey(k, k.Certificates()); signer != nil {
			// Each backend makes sure its key signs correctly (a key in memory; a token
			// key is test-signed whenever the backend reconnects; KMS signs by the ARN
			// checked at start), so records need not each pay an ECDSA verification.
			signer.CheckSignatures = false
		}
	}
	return &keyEntry{
		key:       k,
		signer:    signer,
		signerErr: signerErr,
		info:      b,
		sigPrefix: fmt.Appendf(nil, `{"key":%s,"algorithm":"ECDSA_SHA_256","signature":"`, name),
		batchHead: fmt.Appendf(nil, `{"key":%s,"algorithm":"ECDSA_SHA_256","batch":[`, name),
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
	writeJSONBytes(w, http.StatusOK, append(b, "]}\n"...))
}

func (a *API) getKey(w http.ResponseWriter, r *http.Request) {
	e, ok := a.lookupKey(w, r)
	if !ok {
		return
	}
	writeJSONBytes(w, http.StatusOK, append(append([]byte(nil), e.info...), '\n'))
}

func (a *API) lookupKey(w http.ResponseWriter, r *http.Request) (*keyEntry, bool) {
	name := r.PathValue("name")
	e, ok := a.keys[name]
	if !ok {
		writeError(w, http.StatusNotFound, "not_found", "no key named "+strconv.Quote(name)+"; GET /v1/keys lists them")
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
		return nil, badRequest(field + "digest and " + field + "message are both set; send one")
	case it.Digest != nil:
		d, err := b64.DecodeString(*it.Digest)
		if err != nil {
			return nil, badRequest(field + "digest: not standard base64 with padding (RFC 4648 section 4)")
		}
		if len(d) != sha256.Size {
			return nil, badRequest(fmt.Sprintf("%sdigest: must be a 32-byte SHA-256 digest, got %d bytes", field, len(d)))
		}
		return d, nil
	case it.Message != nil:
		m, err := b64.DecodeString(*it.Message)
		if err != nil {
			return nil, badRequest(field + "message: not standard base64 with padding (RFC 4648 section 4)")
		}
		sum := sha256.Sum256(m)
		return sum[:], nil
	}
	return nil, badRequest("one of " + field + "digest or " + field + "message is required")
}

// parseSignRequest reads {"digest"} | {"message"} | {"batch": [...]}. The common
// {"digest":"..."} skips the reflection of encoding/json.
func parseSignRequest(body []byte) (*signRequest, error) {
	if d, ok := fastDigest(body); ok {
		return &signRequest{signItem: signItem{Digest: &d}}, nil
	}
	var req signRequest
	if err := decodeStrict(body, &req, "digest, message, batch"); err != nil {
		return nil, err
	}
	if req.Batch != nil && (req.Digest != nil || req.Message != nil) {
		return nil, badRequest("batch cannot be combined with digest or message")
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

// decodeStrict decodes one JSON value into v, rejecting unknown fields (listing the
// accepted ones) and trailing data.
func decodeStrict(body []byte, v any, accepted string) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest(jsonProblem(err, accepted))
	}
	if dec.More() {
		return badRequest("the body holds more than one JSON value")
	}
	return nil
}

func jsonProblem(err error, accepted string) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("the body is not valid JSON (at byte %d: %v)", se.Offset, se)
	case errors.As(err, &te):
		return fmt.Sprintf("%s: must be %s, not a JSON %s", te.Field, jsonKind(te.Type.Kind().String()), te.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return strings.TrimPrefix(err.Error(), "json: ") + "; accepted: " + accepted
	case errors.Is(err, io.EOF):
		return "the body is empty; send a JSON object"
	}
	return "the body is not valid JSON: " + err.Error()
}

func jsonKind(k string) string {
	switch k {
	case "string":
		return "a string"
	case "slice":
		return "a list"
	case "struct", "map":
		return "an object"
	}
	return k
}

func (a *API) sign(w http.ResponseWriter, r *http.Request) {
	e, ok := a.lookupKey(w, r)
	if !ok {
		return
	}
	body, err := a.readJSONBody(w, r)
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
	if e := auditEntry(w); e != nil {
		e.Digest = digest
	}
	sig, err := e.key.SignContext(ctx, digest, crypto.SHA256)
	if err != nil {
		a.writeSignError(w, r, e, err)
		return
	}
	out := make([]byte, 0, len(e.sigPrefix)+b64.EncodedLen(len(sig))+4)
	out = append(out, e.sigPrefix...)
	out = b64.AppendEncode(out, sig)
	out = append(out, "\"}\n"...)
	writeJSONBytes(w, http.StatusOK, out)
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
	id := newRequestID()
	status, code, msg := a.signError(r.Context(), r.Pattern, e, err, &id)
	if status >= 500 {
		w.Header().Set("X-Request-Id", id)
		writeErrorID(w, status, code, msg, id)
		return
	}
	writeError(w, status, code, msg)
}

// newRequestID names a failed request in its answer and in the log line that holds the
// details.
func newRequestID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// batchResult is one item's outcome.
type batchResult struct {
	sig    []byte
	status int
	code   string
	msg    string
	id     string // the request id of a backend failure
}

// signBatch signs every item of a batch, spread over the cores (and over a token's
// sessions, which the backend pools). Items fail one by one; the batch answers 200 as long
// as it was well-formed.
func (a *API) signBatch(ctx context.Context, w http.ResponseWriter, r *http.Request, e *keyEntry, items []json.RawMessage) {
	if len(items) > a.opts.MaxBatch {
		writeError(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("batch has %d items; max_batch is %d", len(items), a.opts.MaxBatch))
		return
	}
	results := make([]batchResult, len(items))
	digests := make([][]byte, len(items))
	for i, raw := range items {
		field := "batch[" + strconv.Itoa(i) + "]."
		var it signItem
		if d, ok := fastDigest(raw); ok {
			it.Digest = &d
		} else if err := decodeStrict(raw, &it, "digest, message"); err != nil {
			results[i] = batchResult{status: http.StatusBadRequest, code: "bad_request", msg: "batch[" + strconv.Itoa(i) + "]: " + err.Error()}
			continue
		}
		d, err := it.digest(field)
		if err != nil {
			results[i] = batchResult{status: http.StatusBadRequest, code: "bad_request", msg: err.Error()}
			continue
		}
		digests[i] = d
	}
	if e := auditEntry(w); e != nil {
		e.Digests = digests
	}
	workers := e.key.Concurrency()
	if workers > len(items) {
		workers = len(items)
	}
	var wg sync.WaitGroup
	var next int
	var mu sync.Mutex
	var idOnce sync.Once // one request id for every item that failed
	var id string
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= len(items) {
					return
				}
				if digests[i] == nil {
					continue
				}
				sig, err := e.key.SignContext(ctx, digests[i], crypto.SHA256)
				if err != nil {
					idOnce.Do(func() { id = newRequestID() })
					itemID := id // the logged refusal's, if this one repeats it
					status, code, msg := a.signError(ctx, r.Pattern, e, err, &itemID)
					results[i] = batchResult{status: status, code: code, msg: msg}
					if status >= 500 {
						results[i].id = itemID
					}
					continue
				}
				results[i] = batchResult{sig: sig}
			}
		}()
	}
	wg.Wait()
	out := make([]byte, 0, len(e.batchHead)+len(items)*112)
	out = append(out, e.batchHead...)
	header := ""
	for i, res := range results {
		if i > 0 {
			out = append(out, ',')
		}
		if res.sig != nil {
			out = append(out, `{"signature":"`...)
			out = b64.AppendEncode(out, res.sig)
			out = append(out, `"}`...)
			continue
		}
		out = append(out, `{"error":{"code":`...)
		out = appendJSONString(out, res.code)
		out = append(out, `,"message":`...)
		out = appendJSONString(out, res.msg)
		if res.id != "" {
			out = append(out, `,"request_id":"`...)
			out = append(out, res.id...)
			out = append(out, '"')
			if header == "" {
				header = res.id
			}
		}
		out = append(out, "}}"...)
	}
	// The first failed item's: a repeated refusal's id is the line logged before.
	if header != "" {
		w.Header().Set("X-Request-Id", header)
	}
	writeJSONBytes(w, http.StatusOK, append(out, "]}\n"...))
}
