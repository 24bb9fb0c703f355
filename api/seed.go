package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

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
	writeJSON(w, status, map[string]any{"detail": detail})
}

// seedForm reads the original's JSON body: required string and date-time fields.
type seedForm struct {
	raw      map[string]json.RawMessage
	problems []seedProblem
}

// readSeedBody reads the body within the size limit, answering in the original's shape
// when it cannot.
func (a *API) readSeedBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	body, err := readBody(w, r, a.opts.MaxRequestBytes)
	if err != nil {
		var re *requestError
		if errors.As(err, &re) {
			writeDetail(w, re.status, re.msg)
		} else {
			writeDetail(w, http.StatusBadRequest, "cannot read the request body")
		}
		return nil, false
	}
	return body, true
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
	if !ok || string(raw) == "null" {
		f.problems = append(f.problems, seedProblem{Type: "missing", Loc: []any{"body", name}, Msg: "Field required"})
		return ""
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		f.problems = append(f.problems, seedProblem{Type: "string_type", Loc: []any{"body", name}, Msg: "Input should be a valid string", Input: json.RawMessage(raw)})
		return ""
	}
	return s
}

func (f *seedForm) time(name string) time.Time {
	raw, present := f.raw[name]
	s := f.str(name)
	if s == "" {
		if present && string(raw) == `""` {
			f.problems = append(f.problems, seedProblem{Type: "datetime_from_date_parsing", Loc: []any{"body", name}, Msg: "Input should be a valid datetime or date, input is too short", Input: ""})
		}
		return time.Time{}
	}
	t, err := parseDateTime(s)
	if err != nil {
		f.problems = append(f.problems, seedProblem{Type: "datetime_from_date_parsing", Loc: []any{"body", name}, Msg: "Input should be a valid datetime or date: " + err.Error(), Input: s})
	}
	return t
}

// check answers 422 with every problem found, as FastAPI does.
func (f *seedForm) check(w http.ResponseWriter) bool {
	if len(f.problems) > 0 {
		writeDetail(w, http.StatusUnprocessableEntity, f.problems)
		return false
	}
	return true
}

// dateTimeLayouts are the ISO 8601 forms the original's pydantic models accept for a
// date-time; a time without an offset is taken as UTC.
var dateTimeLayouts = []string{
	time.RFC3339Nano,
	"2006-01-02T15:04:05.999999999",
	"2006-01-02T15:04Z07:00",
	"2006-01-02T15:04",
	"2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02 15:04:05.999999999",
	"2006-01-02 15:04",
	"2006-01-02",
}

func parseDateTime(s string) (time.Time, error) {
	for _, l := range dateTimeLayouts {
		if t, err := time.Parse(l, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not an ISO 8601 date-time such as 2025-09-20T10:00:00Z", s)
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

// seedSteps adds a record's steps in order and keeps the first error, so that a handler
// lists its steps as the record has them and checks once, in signSeed.
type seedSteps struct {
	b   *provenance.Builder
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

// signSeed signs the record of steps and answers it, or the original's error shape.
func (a *API) signSeed(w http.ResponseWriter, r *http.Request, steps *seedSteps) {
	if steps.err != nil {
		writeDetail(w, http.StatusBadRequest, steps.err.Error())
		return
	}
	b := steps.b
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
			writeJSONBytes(w, http.StatusOK, append(out, '\n'))
			return
		}
	}
	p.count("sign", false)
	id := newRequestID()
	status, _, msg := a.signError(r.Context(), r.Pattern, a.keys[p.Key.Name()], err, id)
	if status >= 500 {
		w.Header().Set("X-Request-Id", id)
	}
	if status == http.StatusInternalServerError {
		msg = "Internal server error; the daemon's log has the reason under request id " + id
	}
	writeDetail(w, status, msg)
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
	from, to := f.time("from_date"), f.time("to_date")
	granted, expires := f.time("permission_granted"), f.time("permission_expires")
	serviceURL, account, fapiID := f.str("service_url"), f.str("account"), f.str("fapi_id")
	capMember, originURL, originLicence := f.str("cap_member"), f.str("origin_url"), f.str("origin_license_url")
	if !f.check(w) {
		return
	}
	if !to.After(from) {
		writeDetail(w, http.StatusBadRequest, "to_date must be after from_date")
		return
	}
	if !expires.After(granted) {
		writeDetail(w, http.StatusBadRequest, "permission_expires must be after permission_granted")
		return
	}
	p := a.opts.Provenance
	scheme := p.Scheme
	steps := &seedSteps{b: provenance.NewBuilder(p.Verifier.Framework(), p.now(), nil)}
	permission := steps.add("permission",
		m("scheme", scheme),
		m("timestamp", provenance.FormatTimestamp(granted)),
		m("account", account),
		m("allows", obj(m("licences", []any{scheme + edpLicence}))),
		m("expires", provenance.FormatTimestamp(expires)),
	)
	origin := steps.add("origin",
		m("scheme", scheme),
		m("sourceType", scheme+sourceMeter),
		m("origin", originURL),
		m("originLicence", originLicence),
		m("external", true),
		m("permissions", []any{permission}),
		m("perseus:scheme", obj(m("meteringPeriod", obj(m("from", day(from)), m("to", day(to)))))),
		m("perseus:assurance", obj(m("dataSource", scheme+assuranceMeter))),
	)
	steps.add("transfer",
		m("scheme", scheme),
		m("of", origin),
		m("to", capMember),
		m("standard", scheme+edpStandard),
		m("licence", scheme+edpLicence),
		m("service", serviceURL),
		m("path", "/readings"),
		m("parameters", obj(m("measure", "import"), m("from", day(from)), m("to", day(to)))),
		m("permissions", []any{permission}),
		m("transaction", fapiID),
	)
	a.signSeed(w, r, steps)
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
	attachment, present := f.raw["edp_data_attachment"]
	if !present || string(attachment) == "null" {
		f.problems = append(f.problems, seedProblem{Type: "missing", Loc: []any{"body", "edp_data_attachment"}, Msg: "Field required"})
	}
	capMember, bankMember, capAccount := f.str("cap_member_id"), f.str("bank_member_id"), f.str("cap_account")
	granted, expires := f.time("cap_permission_granted"), f.time("cap_permission_expires")
	gridOrigin, gridLicense, postcode := f.str("grid_intensity_origin"), f.str("grid_intensity_license"), f.str("postcode")
	edpService, edpMember, bankService := f.str("edp_service_url"), f.str("edp_member_id"), f.str("bank_service_url")
	from, to := f.time("from_date"), f.time("to_date")
	if !f.check(w) {
		return
	}
	if !to.After(from) {
		writeDetail(w, http.StatusBadRequest, "to_date must be after from_date")
		return
	}
	if !expires.After(granted) {
		writeDetail(w, http.StatusBadRequest, "cap_permission_expires must be after cap_permission_granted")
		return
	}
	// The attachment is the EDP's record as JSON, or that JSON as a string.
	var s string
	if json.Unmarshal(attachment, &s) == nil {
		attachment = json.RawMessage(s)
	}
	p := a.opts.Provenance
	scheme := p.Scheme
	rec, err := p.Verifier.ParseRecord(attachment)
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
	transfer, err := provenance.Find(steps, obj(
		m("type", "transfer"),
		m("scheme", scheme),
		m("to", capMember),
		m("standard", scheme+edpStandard),
		m("licence", scheme+edpLicence),
		m("service", edpService),
		m("path", "/readings"),
		m("parameters", obj(m("measure", "import"), m("from", day(from)), m("to", day(to)))),
		m("_signature", obj(m("signed", obj(m("member", edpMember), m("roles", []any{scheme + roleEDP}))))),
	))
	if err != nil {
		what := "no transfer step"
		if errors.Is(err, provenance.ErrManySteps) {
			what = "more than one transfer step"
		}
		writeDetail(w, http.StatusBadRequest, fmt.Sprintf("edp_data_attachment: %s to %s from member %s for %s..%s matches", what, capMember, edpMember, day(from), day(to)))
		return
	}
	transferID, _ := transfer.GetString("id")
	added := &seedSteps{b: b}
	receipt := added.add("receipt", m("transfer", transferID))
	permission := added.add("permission",
		m("scheme", scheme),
		m("timestamp", provenance.FormatTimestamp(granted)),
		m("account", capAccount),
		m("allows", obj(m("licenses", []any{scheme + capLicense}), m("processes", []any{scheme + capProcess}))),
		m("expires", provenance.FormatTimestamp(expires)),
	)
	origin := added.add("origin",
		m("scheme", scheme),
		m("sourceType", scheme+sourceGrid),
		m("origin", gridOrigin),
		m("originLicense", gridLicense),
		m("external", true),
		m("perseus:scheme", obj(m("meteringPeriod", obj(m("from", day(from)), m("to", day(to)))), m("postcode", postcode))),
		m("perseus:assurance", obj(m("missingData", scheme+missingComplete))),
	)
	process := added.add("process",
		m("scheme", scheme),
		m("inputs", []any{receipt, origin}),
		m("process", scheme+capProcess),
		m("permissions", []any{permission}),
		m("perseus:assurance", obj(m("missingData", scheme+missingSubst))),
	)
	added.add("transfer",
		m("scheme", scheme),
		m("of", process),
		m("to", bankMember),
		m("standard", scheme+capStandard),
		m("licence", scheme+capLicence),
		m("service", bankService),
		m("path", "/emissions"),
		m("parameters", obj(m("from", day(from)), m("to", day(to)))),
		m("permissions", []any{permission}),
	)
	a.signSeed(w, r, added)
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
	writeJSON(w, http.StatusOK, steps)
}
