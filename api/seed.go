package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/ib1/provenanced/api/wire"
	"github.com/ib1/provenanced/audit"
	"github.com/ib1/provenanced/provenance"
)

// The original provenance service's routes: POST /api/v1/sign/edp, /api/v1/sign/cap and
// /api/v1/decode, with its field names, its validation and its error shape ({"detail"}:
// a list of problems for a body that does not match the schema (422), a string for
// invalid values (400)). Its clients work unchanged. Two things differ on purpose: step
// timestamps are converted to UTC and formatted properly (the original cut characters
// off Python's isoformat, which corrupted inputs without microseconds), and a record
// that fails verification names the check that failed.

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

// seedProblem is one entry of a 422 detail list, in FastAPI's shape.
type seedProblem struct {
	Type  string `json:"type"`
	Loc   []any  `json:"loc"`
	Msg   string `json:"msg"`
	Input any    `json:"input,omitempty"`
}

func writeDetail(w http.ResponseWriter, status int, detail any) {
	wire.JSON(w, status, struct {
		Detail any `json:"detail"`
	}{detail})
}

// detailError is a wire.ErrorWriter in the original's shape: the message is the detail.
func detailError(w http.ResponseWriter, status int, _, message, _ string) {
	writeDetail(w, status, message)
}

// seedForm reads the original's JSON body: required string and date-time fields.
type seedForm struct {
	raw      map[string]json.RawMessage
	problems []seedProblem
}

// readSeedBody reads the body within the size limit, answering in the original's shape
// when it cannot.
func (a *API) readSeedBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	body, err := wire.ReadBody(w, r, a.opts.MaxRequestBytes)
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

func (a *API) readSeedForm(w http.ResponseWriter, r *http.Request) (*seedForm, bool) {
	body, ok := a.readSeedBody(w, r)
	if !ok {
		return nil, false
	}
	f := &seedForm{}
	if err := json.Unmarshal(body, &f.raw); err != nil || f.raw == nil {
		typ, msg := "model_attributes_type", "Input should be a valid dictionary or object to extract fields from"
		var se *json.SyntaxError
		if errors.As(err, &se) || len(body) == 0 {
			typ, msg = "json_invalid", "JSON decode error"
		}
		writeDetail(w, http.StatusUnprocessableEntity, []seedProblem{{Type: typ, Loc: []any{"body"}, Msg: msg}})
		return nil, false
	}
	return f, true
}

func (f *seedForm) str(name string) string {
	raw, ok := f.raw[name]
	if !ok {
		f.problems = append(f.problems, seedProblem{Type: "missing", Loc: []any{"body", name}, Msg: "Field required"})
		return ""
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil || string(raw) == "null" { // pydantic: None is not a str
		f.problems = append(f.problems, seedProblem{Type: "string_type", Loc: []any{"body", name}, Msg: "Input should be a valid string", Input: json.RawMessage(raw)})
		return ""
	}
	return s
}

// time reads a datetime field as the original's pydantic model does (see seeddate.go).
func (f *seedForm) time(name string) time.Time {
	raw, ok := f.raw[name]
	if !ok {
		f.problems = append(f.problems, seedProblem{Type: "missing", Loc: []any{"body", name}, Msg: "Field required"})
		return time.Time{}
	}
	t, problem := pydanticDateTime(raw)
	if problem != nil {
		problem.Loc = []any{"body", name}
		f.problems = append(f.problems, *problem)
	}
	return t
}

// day is the original's D(x): x's own calendar date at midnight, "2025-09-20T00:00Z".
func day(t time.Time) string { return t.Format("2006-01-02") + "T00:00Z" }

func m(k string, v any) provenance.Member { return provenance.Member{Key: k, Value: v} }

func obj(members ...provenance.Member) *provenance.Object { return provenance.NewObject(members...) }

// seedReady answers 503, in the original's shape, when records cannot be signed.
func (a *API) seedReady(w http.ResponseWriter, signing bool) bool {
	p := a.opts.Provenance
	switch {
	case p == nil || p.Verifier == nil:
		msg := "provenance records are not configured"
		if p != nil && p.NotConfigured != "" {
			msg = p.NotConfigured
		}
		writeDetail(w, http.StatusServiceUnavailable, msg)
		return false
	case signing && (p.Key == nil || p.Key.Leaf() == nil):
		writeDetail(w, http.StatusServiceUnavailable, "the service is not configured to sign: no signing key with a certificate")
		return false
	}
	return true
}

// signSeed signs the record b holds and answers it, or the original's error shape.
func (a *API) signSeed(w http.ResponseWriter, r *http.Request, b *provenance.Builder) {
	p := a.opts.Provenance
	ctx, cancel := context.WithTimeout(r.Context(), a.opts.SignTimeout)
	defer cancel()
	entry := a.keys[p.Key.Name()]
	if entry == nil || entry.signer == nil {
		reason := "its key is not among the daemon's keys"
		if entry != nil {
			reason = entry.signerErr.Error()
		}
		writeDetail(w, http.StatusServiceUnavailable, "the service cannot sign records: "+reason)
		return
	}
	rec, err := b.SignWith(ctx, entry.signer)
	if err == nil {
		var out []byte
		if out, err = rec.Marshal(); err == nil {
			p.count("sign", true)
			wire.Bytes(w, http.StatusOK, append(out, '\n'))
			return
		}
	}
	p.countErr("sign", err)
	id := wire.NewRequestID()
	status, _, msg := a.signError(r.Context(), r.Pattern, a.keys[p.Key.Name()], err, &id)
	if status >= 500 {
		w.Header().Set("X-Request-Id", id)
	}
	if status == http.StatusInternalServerError {
		msg = "Internal server error; the daemon's log has the reason under request id " + id
	}
	writeDetail(w, status, msg)
}

// edpRequest is the body of POST /api/v1/sign/edp, checked.
type edpRequest struct {
	from, to, granted, expires             time.Time
	serviceURL, account, fapiID, capMember string
	originURL, originLicence               string
}

// parseEDPRequest reads the form as the original's EdpProvenanceRecordRequest does: a 422
// problem list when a field is missing or malformed, then a 400 for dates out of order.
func parseEDPRequest(f *seedForm) (*edpRequest, int, any) {
	r := &edpRequest{}
	r.from, r.to = f.time("from_date"), f.time("to_date")
	r.granted, r.expires = f.time("permission_granted"), f.time("permission_expires")
	r.serviceURL, r.account, r.fapiID = f.str("service_url"), f.str("account"), f.str("fapi_id")
	r.capMember, r.originURL, r.originLicence = f.str("cap_member"), f.str("origin_url"), f.str("origin_license_url")
	if len(f.problems) > 0 {
		return nil, http.StatusUnprocessableEntity, f.problems
	}
	if !r.to.After(r.from) {
		return nil, http.StatusBadRequest, "to_date must be after from_date"
	}
	if !r.expires.After(r.granted) {
		return nil, http.StatusBadRequest, "permission_expires must be after permission_granted"
	}
	return r, 0, nil
}

// stepAdder adds a step and returns its id: a *provenance.Builder, or a recorder in tests.
type stepAdder interface {
	AddStep(*provenance.Object) (string, error)
}

// auditedSteps is b, and when the request is audited a stepAdder that also lists each
// step added in the audit line.
func auditedSteps(w http.ResponseWriter, b *provenance.Builder) stepAdder {
	e := auditEntry(w)
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

// seedSteps adds a record's steps in order and keeps the first error, so that the step
// builders list their steps as the record has them and check once.
type seedSteps struct {
	b   stepAdder
	err error
}

// add adds a step of type typ and returns its id ("" after an error).
func (s *seedSteps) add(typ string, members ...provenance.Member) string {
	if s.err != nil {
		return ""
	}
	id, err := s.b.AddStep(provenance.NewStep(typ, members...))
	s.err = err
	return id
}

// addEDPSteps adds the original's EDP steps: permission, origin, transfer to the CAP.
func addEDPSteps(b stepAdder, scheme string, r *edpRequest) error {
	steps := &seedSteps{b: b}
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
		m("perseus:scheme", obj(m("meteringPeriod", obj(m("from", day(r.from)), m("to", day(r.to)))))),
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
		m("parameters", obj(m("measure", "import"), m("from", day(r.from)), m("to", day(r.to)))),
		m("permissions", []any{permission}),
		m("transaction", r.fapiID),
	)
	return steps.err
}

// signEDP is the original's POST /api/v1/sign/edp.
func (a *API) signEDP(w http.ResponseWriter, r *http.Request) {
	if !a.seedReady(w, true) {
		return
	}
	f, ok := a.readSeedForm(w, r)
	if !ok {
		return
	}
	req, status, detail := parseEDPRequest(f)
	if req == nil {
		writeDetail(w, status, detail)
		return
	}
	p := a.opts.Provenance
	b := provenance.NewBuilder(p.Verifier.Framework(), p.now(), nil)
	if err := addEDPSteps(auditedSteps(w, b), p.Scheme, req); err != nil {
		writeDetail(w, http.StatusBadRequest, err.Error())
		return
	}
	a.signSeed(w, r, b)
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
func parseCAPRequest(f *seedForm) (*capRequest, int, any) {
	r := &capRequest{}
	attachment, present := f.raw["edp_data_attachment"]
	if !present || string(attachment) == "null" {
		f.problems = append(f.problems, seedProblem{Type: "missing", Loc: []any{"body", "edp_data_attachment"}, Msg: "Field required"})
	}
	r.capMember, r.bankMember, r.capAccount = f.str("cap_member_id"), f.str("bank_member_id"), f.str("cap_account")
	r.granted, r.expires = f.time("cap_permission_granted"), f.time("cap_permission_expires")
	r.gridOrigin, r.gridLicense, r.postcode = f.str("grid_intensity_origin"), f.str("grid_intensity_license"), f.str("postcode")
	r.edpService, r.edpMember, r.bankService = f.str("edp_service_url"), f.str("edp_member_id"), f.str("bank_service_url")
	r.from, r.to = f.time("from_date"), f.time("to_date")
	if len(f.problems) > 0 {
		return nil, http.StatusUnprocessableEntity, f.problems
	}
	if !r.to.After(r.from) {
		return nil, http.StatusBadRequest, "to_date must be after from_date"
	}
	if !r.expires.After(r.granted) {
		return nil, http.StatusBadRequest, "cap_permission_expires must be after cap_permission_granted"
	}
	// The attachment is the EDP's record as JSON, or that JSON as a string.
	var s string
	if json.Unmarshal(attachment, &s) == nil {
		attachment = json.RawMessage(s)
	}
	r.attachment = attachment
	return r, 0, nil
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
	steps := &seedSteps{b: b}
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
func (a *API) signCAP(w http.ResponseWriter, r *http.Request) {
	if !a.seedReady(w, true) {
		return
	}
	f, ok := a.readSeedForm(w, r)
	if !ok {
		return
	}
	req, status, detail := parseCAPRequest(f)
	if req == nil {
		writeDetail(w, status, detail)
		return
	}
	p := a.opts.Provenance
	rec, err := p.Verifier.ParseRecord(req.attachment)
	if err != nil {
		p.count("verify", false)
		writeDetail(w, http.StatusBadRequest, "edp_data_attachment: "+err.Error())
		return
	}
	b := provenance.NewBuilder(p.Verifier.Framework(), p.now(), nil)
	steps, err := b.Receive(p.Verifier, rec)
	if err != nil {
		p.count("verify", false)
		writeDetail(w, http.StatusBadRequest, "edp_data_attachment does not verify: "+err.Error())
		return
	}
	p.count("verify", true)
	transfer, err := provenance.Find(steps, edpTransferQuery(p.Scheme, req))
	if err != nil {
		what := "no transfer step"
		if errors.Is(err, provenance.ErrManySteps) {
			what = "more than one transfer step"
		}
		writeDetail(w, http.StatusBadRequest, fmt.Sprintf("edp_data_attachment: %s to %s from member %s for %s..%s matches", what, req.capMember, req.edpMember, day(req.from), day(req.to)))
		return
	}
	transferID, _ := transfer.GetString("id")
	if err := addCAPSteps(auditedSteps(w, b), p.Scheme, req, transferID); err != nil {
		writeDetail(w, http.StatusBadRequest, err.Error())
		return
	}
	a.signSeed(w, r, b)
}

// decode is the original's POST /api/v1/decode: the body is a record; it is verified
// under the trust framework it names, and its decoded steps are returned.
func (a *API) decode(w http.ResponseWriter, r *http.Request) {
	if !a.seedReady(w, false) {
		return
	}
	body, ok := a.readSeedBody(w, r)
	if !ok {
		return
	}
	if !json.Valid(body) {
		writeDetail(w, http.StatusUnprocessableEntity, []seedProblem{{Type: "json_invalid", Loc: []any{"body"}, Msg: "JSON decode error"}})
		return
	}
	p := a.opts.Provenance
	rec, err := p.Verifier.ParseRecord(body)
	if err != nil {
		p.count("verify", false)
		writeDetail(w, http.StatusBadRequest, err.Error())
		return
	}
	steps, err := p.Verifier.VerifyWithFramework(rec, rec.Framework)
	if err != nil {
		p.count("verify", false)
		writeDetail(w, http.StatusBadRequest, err.Error())
		return
	}
	p.count("verify", true)
	if steps == nil {
		steps = []*provenance.Object{}
	}
	wire.JSON(w, http.StatusOK, steps)
}
