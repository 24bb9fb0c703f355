package api

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/ib1/provenanced/api/access"
	"github.com/ib1/provenanced/api/original"
	"github.com/ib1/provenanced/api/wire"
	"github.com/ib1/provenanced/audit"
	"github.com/ib1/provenanced/backends"
	"github.com/ib1/provenanced/provenance"
)

// Provenance is what the record routes need: the verifier of received records (root CA
// and trust framework), the key that signs records, and the scheme of the original's
// EDP and CAP records.
type Provenance struct {
	// Verifier is nil when no root CA is configured: the record routes then answer 503.
	Verifier *provenance.Verifier
	// Key signs records; nil when no key can (records can then only be verified).
	Key    *backends.Key
	Scheme string
	// Now is the clock of step timestamps and signing times (time.Now if nil).
	Now func() time.Time
	// NotConfigured says why records cannot be verified or signed, when they cannot.
	NotConfigured string
}

func (p *Provenance) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

// recordError is a record that failed: the check that failed and why.
func recordError(err error) error {
	var ve *provenance.VerifyError
	if errors.As(err, &ve) {
		return wire.BadRequest("record does not verify: " + ve.Error())
	}
	return err
}

// provenanceReady answers 503 when records cannot be handled.
func (a *API) provenanceReady(w http.ResponseWriter, signing bool) bool {
	p := a.opts.Provenance
	if p == nil || p.Verifier == nil {
		msg := "provenance records are not configured"
		if p != nil && p.NotConfigured != "" {
			msg = p.NotConfigured
		}
		wire.Error(w, http.StatusServiceUnavailable, "unavailable", msg, "")
		return false
	}
	if signing && p.Key == nil {
		wire.Error(w, http.StatusServiceUnavailable, "unavailable", "no key signs records: set provenance.key to a key with a certificate", "")
		return false
	}
	return true
}

type signRecordRequest struct {
	Record  json.RawMessage   `json:"record"`
	Records []json.RawMessage `json:"records"`
	Steps   []json.RawMessage `json:"steps"`
	Key     string            `json:"key"`
}

// signRecord is POST /v1/records: verify the received records, append the steps, sign.
func (a *API) signRecord(w http.ResponseWriter, r *http.Request) {
	if !a.provenanceReady(w, false) {
		return
	}
	var req signRecordRequest
	if !a.decodeRequest(w, r, &req, "record, records, steps, key") {
		return
	}
	entry, ok := a.recordKey(w, r, req.Key)
	if !ok {
		return
	}
	if len(req.Steps) == 0 {
		wire.Error(w, http.StatusBadRequest, "bad_request", "steps: at least one step is required", "")
		return
	}
	p := a.opts.Provenance
	b := provenance.NewBuilder(p.Verifier.Framework(), p.now(), nil).WithLimits(p.Verifier.Limits())
	if len(req.Record) > 0 && string(req.Record) != "null" {
		req.Records = append([]json.RawMessage{req.Record}, req.Records...)
	}
	if err := a.receive(b, req.Records); err != nil {
		wire.Error(w, http.StatusBadRequest, "bad_request", err.Error(), "")
		return
	}
	added, err := addSteps(b, req.Steps)
	if err != nil {
		wire.Error(w, http.StatusBadRequest, "bad_request", err.Error(), "")
		return
	}
	if e := access.Entry(r.Context()); e != nil {
		e.Steps = added
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.opts.SignTimeout)
	defer cancel()
	rec, err := b.SignWith(ctx, entry.signer)
	if errors.Is(err, provenance.ErrBeyondLimits) {
		wire.Error(w, http.StatusBadRequest, "bad_request", err.Error(), "")
		return
	}
	if err != nil {
		a.opts.Metrics.signed(err)
		a.writeSignError(w, r, entry, err)
		return
	}
	out, err := rec.Marshal()
	a.opts.Metrics.signed(err)
	if err != nil {
		a.writeRequestError(w, r, err)
		return
	}
	wire.Bytes(w, http.StatusOK, append(out, '\n'))
}

// recordKey is the key that signs a record: the one named in the request, or
// provenance.key; it answers and reports false when there is none the client may use.
func (a *API) recordKey(w http.ResponseWriter, r *http.Request, name string) (*keyEntry, bool) {
	key := a.opts.Provenance.Key
	if name != "" {
		e, ok := a.keyNamed(w, name, "key: ")
		if !ok {
			return nil, false
		}
		key = e.key
	}
	if key == nil {
		wire.Error(w, http.StatusServiceUnavailable, "unavailable", "no key signs records: set provenance.key, or name one in \"key\"", "")
		return nil, false
	}
	if !access.AllowKey(r.Context(), key.Name()) {
		return nil, false
	}
	entry := a.keys[key.Name()]
	if entry.signer == nil {
		wire.Error(w, http.StatusBadRequest, "bad_request", "key: "+entry.signerErr.Error(), "")
		return nil, false
	}
	return entry, true
}

// receive verifies the received records into b, counting each verification.
func (a *API) receive(b *provenance.Builder, records []json.RawMessage) error {
	v := a.opts.Provenance.Verifier
	for i, raw := range records {
		rec, err := v.ParseRecord(raw)
		if err == nil {
			_, err = b.Receive(v, rec)
		}
		a.opts.Metrics.verified(err == nil)
		if err != nil {
			return fmt.Errorf("received record %d does not verify: %v", i, err)
		}
	}
	return nil
}

// addSteps adds the request's steps to b and returns them as the audit line lists them.
func addSteps(b *provenance.Builder, steps []json.RawMessage) ([]audit.Step, error) {
	added := make([]audit.Step, 0, len(steps))
	for i, raw := range steps {
		s, err := provenance.ParseStep(raw)
		var id string
		if err == nil {
			id, err = b.AddStep(s)
		}
		if err != nil {
			return nil, fmt.Errorf("steps[%d]: %v", i, err)
		}
		typ, _ := s.GetString("type")
		added = append(added, audit.Step{ID: id, Type: typ})
	}
	return added, nil
}

type verifyRecordRequest struct {
	Record    json.RawMessage `json:"record"`
	Find      json.RawMessage `json:"find"`
	Filter    json.RawMessage `json:"filter"`
	Framework string          `json:"framework"`
	// Details asks for "signatures": for each step, who signed its container, when, and
	// the signing certificate's validity (the record viewer shows them).
	Details bool `json:"details"`
}

// verifyRecord is POST /v1/records/verify.
func (a *API) verifyRecord(w http.ResponseWriter, r *http.Request) {
	if !a.provenanceReady(w, false) {
		return
	}
	var req verifyRecordRequest
	if !a.decodeRequest(w, r, &req, "record, find, filter, framework, details") {
		return
	}
	if len(req.Record) == 0 || string(req.Record) == "null" {
		wire.Error(w, http.StatusBadRequest, "bad_request", "record: required", "")
		return
	}
	p := a.opts.Provenance
	var find, filter any
	for _, q := range []struct {
		name string
		raw  json.RawMessage
		dst  *any
	}{{"find", req.Find, &find}, {"filter", req.Filter, &filter}} {
		if len(q.raw) == 0 || string(q.raw) == "null" {
			continue
		}
		v, err := provenance.ParseJSON(q.raw, p.Verifier.Limits())
		if err != nil {
			wire.Error(w, http.StatusBadRequest, "bad_request", q.name+": "+err.Error(), "")
			return
		}
		*q.dst = v
	}
	steps, rec, err := a.verifyParsed(req.Record, req.Framework)
	if err != nil {
		a.writeRequestError(w, r, err)
		return
	}
	out := map[string]any{"steps": steps}
	if req.Details {
		out["signatures"] = signatureDetails(rec)
	}
	if find != nil {
		found, err := provenance.Find(steps, find)
		if err != nil {
			wire.Error(w, http.StatusBadRequest, "bad_request", "find: "+err.Error(), "")
			return
		}
		out["found"] = found
	}
	if filter != nil {
		matches := provenance.Filter(steps, filter)
		if matches == nil {
			matches = []*provenance.Object{}
		}
		out["matches"] = matches
	}
	wire.JSON(w, http.StatusOK, out)
}

// verify parses and verifies a record under framework (the configured one if empty),
// counting the outcome.
func (a *API) verify(raw []byte, framework string) ([]*provenance.Object, error) {
	steps, _, err := a.verifyParsed(raw, framework)
	return steps, err
}

// verifyParsed is verify that also returns the parsed record.
func (a *API) verifyParsed(raw []byte, framework string) ([]*provenance.Object, *provenance.Record, error) {
	p := a.opts.Provenance
	rec, err := p.Verifier.ParseRecord(raw)
	if err != nil {
		a.opts.Metrics.verified(false)
		return nil, nil, recordError(err)
	}
	var steps []*provenance.Object
	if framework == "" {
		steps, err = p.Verifier.Verify(rec)
	} else {
		steps, err = p.Verifier.VerifyWithFramework(rec, framework)
	}
	if err != nil {
		a.opts.Metrics.verified(false)
		return nil, nil, recordError(err)
	}
	a.opts.Metrics.verified(true)
	return steps, rec, nil
}

// stepSignature is the signature over one step's container, as the viewer shows it.
type stepSignature struct {
	Serial      string       `json:"serial"`
	SignedAt    string       `json:"signed_at"`
	Certificate *certSummary `json:"certificate,omitempty"`
}

type certSummary struct {
	Subject   string    `json:"subject"`
	Issuer    string    `json:"issuer"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
}

// signatureDetails lists, for each step of a verified record in the order Verify returns
// them (depth first, container order), its container's serial, signing time and signing
// certificate. The record has verified, so every serial has a certificate that parses.
func signatureDetails(rec *provenance.Record) []stepSignature {
	certs := map[string]*certSummary{}
	summary := func(serial string) *certSummary {
		if c, ok := certs[serial]; ok {
			return c
		}
		var c *certSummary
		if values, ok := rec.Certificate(serial); ok && len(values) > 0 {
			if block, _ := pem.Decode([]byte(values[0])); block != nil {
				if cert, err := x509.ParseCertificate(block.Bytes); err == nil {
					c = &certSummary{cert.Subject.String(), cert.Issuer.String(), cert.NotBefore.UTC(), cert.NotAfter.UTC()}
				}
			}
		}
		certs[serial] = c
		return c
	}
	out := []stepSignature{}
	var walk func(c *provenance.Container)
	walk = func(c *provenance.Container) {
		for _, e := range c.Elements {
			if e.Container != nil {
				walk(e.Container)
				continue
			}
			out = append(out, stepSignature{c.Serial, c.Timestamp, summary(c.Serial)})
		}
	}
	walk(rec.Steps)
	return out
}

// graphRecord is POST /v1/records/graph: the verified record as Graphviz DOT.
func (a *API) graphRecord(w http.ResponseWriter, r *http.Request) {
	if !a.provenanceReady(w, false) {
		return
	}
	var req struct {
		Record    json.RawMessage `json:"record"`
		Framework string          `json:"framework"`
	}
	if !a.decodeRequest(w, r, &req, "record, framework") {
		return
	}
	if len(req.Record) == 0 || string(req.Record) == "null" {
		wire.Error(w, http.StatusBadRequest, "bad_request", "record: required", "")
		return
	}
	steps, err := a.verify(req.Record, req.Framework)
	if err != nil {
		a.writeRequestError(w, r, err)
		return
	}
	dot := provenance.DOT(steps)
	w.Header().Set("Content-Type", "text/vnd.graphviz; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(dot)))
	w.WriteHeader(http.StatusOK)
	w.Write(dot)
}

// originalOptions are the original service's routes' view of the records.
func (a *API) originalOptions() original.Options {
	o := original.Options{MaxRequestBytes: a.opts.MaxRequestBytes, Records: recordSigner{a}, Denied: a.opts.Metrics.recordsDenied,
		CannotSign: "the service is not configured to sign: no signing key with a certificate"}
	p := a.opts.Provenance
	if p == nil {
		return o
	}
	o.Verifier, o.NotConfigured, o.Scheme, o.Now = p.Verifier, p.NotConfigured, p.Scheme, p.now
	if p.Key != nil {
		o.KeyName = p.Key.Name()
		if p.Key.Leaf() != nil {
			o.CannotSign = ""
		}
	}
	return o
}

// recordSigner signs the original's records with the record key: original.Records.
type recordSigner struct{ a *API }

func (rs recordSigner) Verified(ok bool) { rs.a.opts.Metrics.verified(ok) }

func (rs recordSigner) Sign(r *http.Request, b *provenance.Builder, dst []byte) ([]byte, *wire.Failure) {
	a := rs.a
	entry := a.keys[a.opts.Provenance.Key.Name()]
	if entry == nil || entry.signer == nil {
		reason := "its key is not among the daemon's keys"
		if entry != nil {
			reason = entry.signerErr.Error()
		}
		return nil, &wire.Failure{Status: http.StatusServiceUnavailable, Problem: wire.Problem{Message: "the service cannot sign records: " + reason}}
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.opts.SignTimeout)
	defer cancel()
	rec, err := b.SignWith(ctx, entry.signer)
	if errors.Is(err, provenance.ErrBeyondLimits) {
		return nil, &wire.Failure{Status: http.StatusBadRequest, Problem: wire.Problem{Code: "bad_request", Message: err.Error()}}
	}
	var out []byte
	if err == nil {
		out, err = rec.AppendMarshal(dst)
	}
	a.opts.Metrics.signed(err)
	if err != nil {
		id := wire.NewRequestID()
		status, code, msg := a.signError(r.Context(), r.Pattern, entry, err, &id)
		f := &wire.Failure{Status: status, Problem: wire.Problem{Code: code, Message: msg}}
		if status >= 500 {
			f.RequestID = id
		}
		return nil, f
	}
	return append(out, '\n'), nil
}
