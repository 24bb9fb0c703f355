// Package original serves the routes of the original provenance service, which
// provenanced replaces: POST /api/v1/sign/edp, /api/v1/sign/cap and /api/v1/decode, with
// its field names, its validation and its error shape ({"detail"}: FastAPI's list of
// pydantic problems for a body its models refuse (422), the date-order checks of its
// validators among them; a string otherwise (400, 503, 500)). Its clients work unchanged.
// What differs on purpose is listed, with why, in docs/original-service.md.
package original

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ib1/provenanced/api/access"
	"github.com/ib1/provenanced/api/wire"
	"github.com/ib1/provenanced/audit"
	"github.com/ib1/provenanced/conf"
	"github.com/ib1/provenanced/provenance"
)

// Records is what the routes need of the API's record service.
type Records interface {
	// Sign signs the record b holds with the record key, within the request's
	// sign_timeout, and returns it encoded, appended to dst; a failure says how to answer.
	// It counts the signing in provenanced_records_total.
	Sign(r *http.Request, b *provenance.Builder, dst []byte) ([]byte, *wire.Failure)
	// Verified counts a verification of a received record: ok, or invalid.
	Verified(ok bool)
}

// Options configure the routes.
type Options struct {
	// Verifier checks received records; nil when records are not configured, and
	// NotConfigured then says why.
	Verifier      *provenance.Verifier
	NotConfigured string
	// CannotSign says why records cannot be signed; "" when they can.
	CannotSign string
	Scheme     string
	// Now is the clock of step timestamps (time.Now if nil).
	Now             func() time.Time
	MaxRequestBytes int64
	Records         Records
	// KeyName is the record key's name, for access control and the audit log.
	KeyName string
	// Denied counts the signing requests the clients' policy refuses.
	Denied prometheus.Counter
}

// Route is one of the original's routes, for the API to mount.
type Route struct {
	Method, Path string
	Handler      http.HandlerFunc
	// Verifies: the route verifies a record for whoever asks, and takes its turn among
	// the verifications the API bounds.
	Verifies bool
}

// Routes returns the original's routes, the signing ones under guard.
func Routes(opts Options, guard *access.Guard) []Route {
	o := &service{opts}
	if o.opts.Now == nil {
		o.opts.Now = time.Now
	}
	signing := access.Route{Op: conf.OpRecords, Refuse: Error, Denied: opts.Denied,
		KeyOf: func(*http.Request) string { return opts.KeyName }}
	return []Route{
		{"POST", "/api/v1/sign/edp", guard.Wrap(signing, o.signEDP), false},
		{"POST", "/api/v1/sign/cap", guard.Wrap(signing, o.signCAP), false},
		{"POST", "/api/v1/decode", o.decode, true},
	}
}

type service struct{ opts Options }

// Versioned names of the Perseus scheme that the original writes into its records.
const (
	edpLicence      = "/licence/energy-consumption-data/2024-12-05"
	edpStandard     = "/standard/energy-consumption-data/2024-12-05"
	capLicense      = "/license/emissions-report/2024-12-05" // sic: the original spells it so in the permission
	capLicence      = "/licence/emissions-report/2024-12-05"
	capStandard     = "/standard/emissions-report/2024-12-05"
	capProcess      = "/process/emissions-calculations/2024-12-05"
	roleEDP         = "/role/energy-data-provider"
	sourceMeter     = "/source-type/Meter"
	sourceGrid      = "/source-type/GridCarbonIntensity"
	assuranceMeter  = "/assurance/data-source/SmartMeter"
	missingComplete = "/assurance/missing-data/Complete"
	missingSubst    = "/assurance/missing-data/Substituted"
)

// problem is one entry of a 422 detail list, in FastAPI's shape: pydantic's
// errors(include_url=False) through jsonable_encoder, which turns the exception in a
// validator's ctx into {}.
type problem struct {
	Type  string `json:"type"`
	Loc   []any  `json:"loc"`
	Msg   string `json:"msg"`
	Input any    `json:"input,omitempty"`
	Ctx   any    `json:"ctx,omitempty"`
}

// valueErrorCtx is the ctx of a ValueError raised in a pydantic validator, as FastAPI
// answers it: the exception object, encoded as the empty object jsonable_encoder makes of
// it.
var valueErrorCtx = map[string]any{"error": map[string]any{}}

func writeDetail(w http.ResponseWriter, status int, detail any) {
	wire.JSON(w, status, struct {
		Detail any `json:"detail"`
	}{detail})
}

// Error is a wire.ErrorWriter in the original's shape: the message is the detail.
func Error(w http.ResponseWriter, status int, _, message, _ string) {
	writeDetail(w, status, message)
}

// readSeedBody reads the body within the size limit, answering in the original's shape
// when it cannot.
func (o *service) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	body, err := wire.ReadBody(w, r, o.opts.MaxRequestBytes)
	if err != nil {
		var re *wire.RequestError
		if errors.As(err, &re) {
			writeDetail(w, re.Status, re.Msg)
		} else {
			writeDetail(w, http.StatusBadRequest, "cannot read the request body")
		}
		return nil, false
	}
	text, err := pythonJSONText(body)
	if err != nil {
		// FastAPI's answer when json.loads fails other than on the JSON itself: here, bytes
		// it cannot decode as text.
		writeDetail(w, http.StatusBadRequest, "There was an error parsing the body")
		return nil, false
	}
	if len(text) > 0 && &text[0] != &body[0] {
		// readBody looked for repeated names in the bytes as sent; a body that had a BOM or
		// was UTF-16/32 is looked at again as the text it is.
		if err := wire.DuplicateName(text); err != nil {
			writeDetail(w, http.StatusBadRequest, err.Error())
			return nil, false
		}
	}
	return text, true
}

func (o *service) readForm(w http.ResponseWriter, r *http.Request) (*form, bool) {
	body, ok := o.readBody(w, r)
	if !ok {
		return nil, false
	}
	f, err := parseForm(body)
	if err != nil {
		typ, msg := "model_attributes_type", "Input should be a valid dictionary or object to extract fields from"
		var se *json.SyntaxError
		if errors.As(err, &se) || len(body) == 0 {
			typ, msg = "json_invalid", "JSON decode error"
		}
		p := problem{Type: typ, Loc: []any{"body"}, Msg: msg}
		if typ == "model_attributes_type" {
			p.Input = json.RawMessage(body)
		}
		writeDetail(w, http.StatusUnprocessableEntity, []problem{p})
		return nil, false
	}
	return f, true
}

// day is the original's D(x): x's own calendar date at midnight, "2025-09-20T00:00Z".
func day(t time.Time) string { return t.Format("2006-01-02") + "T00:00Z" }

func m(k string, v any) provenance.Member { return provenance.Member{Key: k, Value: v} }

func obj(members ...provenance.Member) *provenance.Object { return provenance.NewObject(members...) }

// ready answers 503, in the original's shape, when records cannot be verified, or
// signed when signing.
func (o *service) ready(w http.ResponseWriter, signing bool) bool {
	switch {
	case o.opts.Verifier == nil:
		msg := "provenance records are not configured"
		if o.opts.NotConfigured != "" {
			msg = o.opts.NotConfigured
		}
		writeDetail(w, http.StatusServiceUnavailable, msg)
		return false
	case signing && o.opts.CannotSign != "":
		writeDetail(w, http.StatusServiceUnavailable, o.opts.CannotSign)
		return false
	}
	return true
}

// sign signs the record b holds and answers it, or the original's error shape.
func (o *service) sign(w http.ResponseWriter, r *http.Request, b *provenance.Builder) {
	buf := answers.Get().(*[]byte)
	defer putAnswer(buf)
	out, f := o.opts.Records.Sign(r, b, (*buf)[:0])
	if f == nil {
		wire.Bytes(w, http.StatusOK, out)
		*buf = out
		return
	}
	msg := f.Message
	if f.RequestID != "" {
		w.Header().Set("X-Request-Id", f.RequestID)
	}
	if f.Status == http.StatusInternalServerError {
		msg = "Internal server error; the daemon's log has the reason under request id " + f.RequestID
	}
	writeDetail(w, f.Status, msg)
}

// answers are the buffers records are encoded in: a record is written to the connection
// (which keeps no reference to it) and its buffer serves the next one.
var answers = sync.Pool{New: func() any { b := make([]byte, 0, 8192); return &b }}

// putAnswer returns a buffer to the pool, unless a large record made it grow.
func putAnswer(b *[]byte) {
	if cap(*b) > 64<<10 {
		return
	}
	answers.Put(b)
}

// edpRequest is the body of POST /api/v1/sign/edp, checked.
type edpRequest struct {
	from, to, granted, expires             time.Time
	serviceURL, account, fapiID, capMember string
	originURL, originLicence               string
}

// parseEDPRequest reads the form as the original's EdpProvenanceRecordRequest does: one
// 422 problem list for fields missing, malformed or, by its validators, out of order.
func parseEDPRequest(f *form) (*edpRequest, int, any) {
	r := &edpRequest{}
	r.from, r.to = f.time("from_date"), f.timeAfter("to_date", "from_date")
	r.granted, r.expires = f.time("permission_granted"), f.timeAfter("permission_expires", "permission_granted")
	r.serviceURL, r.account, r.fapiID = f.str("service_url"), f.str("account"), f.str("fapi_id")
	r.capMember, r.originURL, r.originLicence = f.str("cap_member"), f.str("origin_url"), f.str("origin_license_url")
	if len(f.problems) > 0 {
		return nil, http.StatusUnprocessableEntity, f.problems
	}
	return r, 0, nil
}

// stepAdder adds a step and returns its id: a *provenance.Builder, or a recorder in tests.
type stepAdder interface {
	AddStep(*provenance.Object) (string, error)
}

// auditedSteps is b, and when the request is audited a stepAdder that also lists each
// step added in the audit line.
func auditedSteps(ctx context.Context, b *provenance.Builder) stepAdder {
	e := access.Entry(ctx)
	if e == nil {
		return b
	}
	return &auditSteps{b: b, e: e}
}

type auditSteps struct {
	b *provenance.Builder
	e *audit.Entry
}

func (s *auditSteps) AddStep(o *provenance.Object) (string, error) {
	id, err := s.b.AddStep(o)
	if err == nil {
		typ, _ := o.GetString("type")
		s.e.Steps = append(s.e.Steps, audit.Step{ID: id, Type: typ})
	}
	return id, err
}

// stepList adds a record's steps in order and keeps the first error, so that the step
// builders list their steps as the record has them and check once.
type stepList struct {
	b   stepAdder
	err error
}

// add adds a step of type typ and returns its id ("" after an error).
func (s *stepList) add(typ string, members ...provenance.Member) string {
	if s.err != nil {
		return ""
	}
	id, err := s.b.AddStep(provenance.NewStep(typ, members...))
	s.err = err
	return id
}

// addEDPSteps adds the original's EDP steps: permission, origin, transfer to the CAP.
func addEDPSteps(b stepAdder, scheme string, r *edpRequest) error {
	steps := &stepList{b: b}
	from, to := day(r.from), day(r.to)
	permission := steps.add("permission",
		m("scheme", scheme),
		m("timestamp", provenance.FormatTimestamp(r.granted)),
		m("account", r.account),
		m("allows", obj(m("licences", []any{scheme + edpLicence}))),
		m("expires", provenance.FormatTimestamp(r.expires)),
	)
	origin := steps.add("origin",
		m("scheme", scheme),
		m("sourceType", scheme+sourceMeter),
		m("origin", r.originURL),
		m("originLicence", r.originLicence),
		m("external", true),
		m("permissions", []any{permission}),
		m("perseus:scheme", obj(m("meteringPeriod", obj(m("from", from), m("to", to))))),
		m("perseus:assurance", obj(m("dataSource", scheme+assuranceMeter))),
	)
	steps.add("transfer",
		m("scheme", scheme),
		m("of", origin),
		m("to", r.capMember),
		m("standard", scheme+edpStandard),
		m("licence", scheme+edpLicence),
		m("service", r.serviceURL),
		m("path", "/readings"),
		m("parameters", obj(m("measure", "import"), m("from", from), m("to", to))),
		m("permissions", []any{permission}),
		m("transaction", r.fapiID),
	)
	return steps.err
}

// signEDP is the original's POST /api/v1/sign/edp.
func (o *service) signEDP(w http.ResponseWriter, r *http.Request) {
	if !o.ready(w, true) {
		return
	}
	f, ok := o.readForm(w, r)
	if !ok {
		return
	}
	req, status, detail := parseEDPRequest(f)
	if req == nil {
		writeDetail(w, status, detail)
		return
	}
	b := provenance.NewBuilder(o.opts.Verifier.Framework(), o.opts.Now(), nil).WithLimits(o.opts.Verifier.Limits())
	if err := addEDPSteps(auditedSteps(r.Context(), b), o.opts.Scheme, req); err != nil {
		writeDetail(w, http.StatusBadRequest, err.Error())
		return
	}
	o.sign(w, r, b)
}

// capRequest is the body of POST /api/v1/sign/cap, checked; the attachment is not yet
// parsed.
type capRequest struct {
	attachment                         []byte
	capMember, bankMember, capAccount  string
	granted, expires                   time.Time
	gridOrigin, gridLicense, postcode  string
	edpService, edpMember, bankService string
	from, to                           time.Time
}

// parseCAPRequest reads the form as the original's CapProvenanceRecordRequest does.
func parseCAPRequest(f *form) (*capRequest, int, any) {
	r := &capRequest{}
	r.attachment = f.attachment("edp_data_attachment")
	r.capMember, r.bankMember, r.capAccount = f.str("cap_member_id"), f.str("bank_member_id"), f.str("cap_account")
	r.granted, r.expires = f.time("cap_permission_granted"), f.timeAfter("cap_permission_expires", "cap_permission_granted")
	r.gridOrigin, r.gridLicense, r.postcode = f.str("grid_intensity_origin"), f.str("grid_intensity_license"), f.str("postcode")
	r.edpService, r.edpMember, r.bankService = f.str("edp_service_url"), f.str("edp_member_id"), f.str("bank_service_url")
	r.from, r.to = f.time("from_date"), f.timeAfter("to_date", "from_date")
	if len(f.problems) > 0 {
		return nil, http.StatusUnprocessableEntity, f.problems
	}
	return r, 0, nil
}

// attachment reads the EDP record field, a dict in the original's model: an object, or,
// unlike the original, that object's JSON in a string (a caller that encoded it twice gets
// the record it meant rather than a 422); anything else, null included, is pydantic's
// dict_type.
func (f *form) attachment(name string) []byte {
	raw, ok := f.get(name)
	if !ok {
		f.missing(name)
		return nil
	}
	given := raw
	var s string
	if json.Unmarshal(raw, &s) == nil {
		raw = json.RawMessage(s)
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(raw, &obj) != nil || obj == nil {
		f.problems = append(f.problems, problem{Type: "dict_type", Loc: []any{"body", name}, Msg: "Input should be a valid dictionary", Input: given})
		return nil
	}
	return raw
}

// edpTransferQuery is what the CAP looks for in the EDP's record: the one transfer to it,
// of the agreed data, signed by the EDP member in its role.
func edpTransferQuery(scheme string, r *capRequest) *provenance.Object {
	return obj(
		m("type", "transfer"),
		m("scheme", scheme),
		m("to", r.capMember),
		m("standard", scheme+edpStandard),
		m("licence", scheme+edpLicence),
		m("service", r.edpService),
		m("path", "/readings"),
		m("parameters", obj(m("measure", "import"), m("from", day(r.from)), m("to", day(r.to)))),
		m("_signature", obj(m("signed", obj(m("member", r.edpMember), m("roles", []any{scheme + roleEDP}))))),
	)
}

// addCAPSteps adds the original's CAP steps after the EDP's transfer transferID: receipt,
// permission, grid intensity origin, process, transfer to the bank.
func addCAPSteps(b stepAdder, scheme string, r *capRequest, transferID string) error {
	steps := &stepList{b: b}
	receipt := steps.add("receipt", m("transfer", transferID))
	permission := steps.add("permission",
		m("scheme", scheme),
		m("timestamp", provenance.FormatTimestamp(r.granted)),
		m("account", r.capAccount),
		m("allows", obj(m("licenses", []any{scheme + capLicense}), m("processes", []any{scheme + capProcess}))),
		m("expires", provenance.FormatTimestamp(r.expires)),
	)
	origin := steps.add("origin",
		m("scheme", scheme),
		m("sourceType", scheme+sourceGrid),
		m("origin", r.gridOrigin),
		m("originLicense", r.gridLicense),
		m("external", true),
		m("perseus:scheme", obj(m("meteringPeriod", obj(m("from", day(r.from)), m("to", day(r.to)))), m("postcode", r.postcode))),
		m("perseus:assurance", obj(m("missingData", scheme+missingComplete))),
	)
	process := steps.add("process",
		m("scheme", scheme),
		m("inputs", []any{receipt, origin}),
		m("process", scheme+capProcess),
		m("permissions", []any{permission}),
		m("perseus:assurance", obj(m("missingData", scheme+missingSubst))),
	)
	steps.add("transfer",
		m("scheme", scheme),
		m("of", process),
		m("to", r.bankMember),
		m("standard", scheme+capStandard),
		m("licence", scheme+capLicence),
		m("service", r.bankService),
		m("path", "/emissions"),
		m("parameters", obj(m("from", day(r.from)), m("to", day(r.to)))),
		m("permissions", []any{permission}),
	)
	return steps.err
}

// signCAP is the original's POST /api/v1/sign/cap: verify the EDP record, find its one
// transfer to this CAP, and append the CAP's steps.
func (o *service) signCAP(w http.ResponseWriter, r *http.Request) {
	if !o.ready(w, true) {
		return
	}
	f, ok := o.readForm(w, r)
	if !ok {
		return
	}
	req, status, detail := parseCAPRequest(f)
	if req == nil {
		writeDetail(w, status, detail)
		return
	}
	v := o.opts.Verifier
	rec, err := v.ParseRecord(req.attachment)
	if err != nil {
		o.opts.Records.Verified(false)
		writeDetail(w, http.StatusBadRequest, "edp_data_attachment: "+err.Error())
		return
	}
	b := provenance.NewBuilder(v.Framework(), o.opts.Now(), nil).WithLimits(v.Limits())
	steps, err := b.Receive(v, rec)
	if err != nil {
		o.opts.Records.Verified(false)
		writeDetail(w, http.StatusBadRequest, "edp_data_attachment does not verify: "+err.Error())
		return
	}
	o.opts.Records.Verified(true)
	transfer, err := provenance.Find(steps, edpTransferQuery(o.opts.Scheme, req))
	if err != nil {
		what := "no transfer step"
		if errors.Is(err, provenance.ErrManySteps) {
			what = "more than one transfer step"
		}
		writeDetail(w, http.StatusBadRequest, fmt.Sprintf("edp_data_attachment: %s to %s from member %s for %s..%s matches", what, req.capMember, req.edpMember, day(req.from), day(req.to)))
		return
	}
	transferID, _ := transfer.GetString("id")
	if err := addCAPSteps(auditedSteps(r.Context(), b), o.opts.Scheme, req, transferID); err != nil {
		writeDetail(w, http.StatusBadRequest, err.Error())
		return
	}
	o.sign(w, r, b)
}

// decode is the original's POST /api/v1/decode: the body is a record; it is verified
// under the trust framework it names, and its decoded steps are returned.
func (o *service) decode(w http.ResponseWriter, r *http.Request) {
	if !o.ready(w, false) {
		return
	}
	body, ok := o.readBody(w, r)
	if !ok {
		return
	}
	if !json.Valid(body) {
		writeDetail(w, http.StatusUnprocessableEntity, []problem{{Type: "json_invalid", Loc: []any{"body"}, Msg: "JSON decode error"}})
		return
	}
	v := o.opts.Verifier
	rec, err := v.ParseRecord(body)
	if err != nil {
		o.opts.Records.Verified(false)
		writeDetail(w, http.StatusBadRequest, err.Error())
		return
	}
	steps, err := v.VerifyWithFramework(rec, rec.Framework)
	if err != nil {
		o.opts.Records.Verified(false)
		writeDetail(w, http.StatusBadRequest, err.Error())
		return
	}
	o.opts.Records.Verified(true)
	if steps == nil {
		steps = []*provenance.Object{}
	}
	wire.JSON(w, http.StatusOK, steps)
}
