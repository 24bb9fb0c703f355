package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/go-json-experiment/json/jsontext"
)

// writeError writes the /v1 error shape. message must never hold a secret: it is for the
// client, and the log line of the request repeats it.
func writeError(w http.ResponseWriter, status int, code, message string) {
	b := make([]byte, 0, 64+len(message))
	b = append(b, `{"error":{"code":`...)
	b = strconv.AppendQuote(b, code)
	b = append(b, `,"message":`...)
	b = appendJSONString(b, message)
	b = append(b, "}}\n"...)
	writeJSONBytes(w, status, b)
}

// writeErrorID writes the /v1 error shape with the request id under which the log holds
// what the answer leaves out.
func writeErrorID(w http.ResponseWriter, status int, code, message, id string) {
	b := make([]byte, 0, 96+len(message))
	b = append(b, `{"error":{"code":`...)
	b = strconv.AppendQuote(b, code)
	b = append(b, `,"message":`...)
	b = appendJSONString(b, message)
	b = append(b, `,"request_id":`...)
	b = strconv.AppendQuote(b, id)
	b = append(b, "}}\n"...)
	writeJSONBytes(w, status, b)
}

func writeJSONBytes(w http.ResponseWriter, status int, b []byte) {
	h := w.Header()
	h["Content-Type"] = jsonContentType
	h["Content-Length"] = []string{strconv.Itoa(len(b))}
	w.WriteHeader(status)
	w.Write(b)
}

var jsonContentType = []string{"application/json"}

// writeJSON encodes v; for responses off the hot path.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal", "cannot encode the response")
		return
	}
	writeJSONBytes(w, status, append(b, '\n'))
}

// appendJSONString appends s as a JSON string, escaped as encoding/json does.
func appendJSONString(b []byte, s string) []byte {
	q, _ := json.Marshal(s)
	return append(b, q...)
}

// requestError is bad input: an HTTP status, an error code and a message naming the field.
type requestError struct {
	status int
	code   string
	msg    string
}

func (e *requestError) Error() string { return e.msg }

func badRequest(msg string) error {
	return &requestError{http.StatusBadRequest, "bad_request", msg}
}

// decodeRequest reads a JSON body into v, rejecting fields not in accepted; on a bad
// request it answers and reports false.
func (a *API) decodeRequest(w http.ResponseWriter, r *http.Request, v any, accepted string) bool {
	body, err := a.readJSONBody(w, r)
	if err == nil {
		err = decodeStrict(body, v, accepted)
	}
	if err != nil {
		a.writeRequestError(w, r, err)
		return false
	}
	return true
}

// readJSONBody reads the body within the size limit (handle has checked its
// Content-Type).
func (a *API) readJSONBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	return readBody(w, r, a.opts.MaxRequestBytes)
}

// jsonOnly is in front of every POST route: the body must be declared
// application/json (parameters such as charset allowed). A web page can send a
// cross-site POST without asking the server first only as text/plain, a form or
// multipart; application/json needs a CORS preflight, which the daemon never grants (it
// sends no CORS headers), so no page in a browser can make the daemon sign.
func jsonOnly(h http.HandlerFunc, seedShape bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ct := r.Header.Get("Content-Type")
		if ct == "application/json" {
			h(w, r)
			return
		}
		msg := "Content-Type is missing; send application/json"
		if ct != "" {
			if mt, _, err := mime.ParseMediaType(ct); err == nil && mt == "application/json" {
				h(w, r)
				return
			}
			msg = "Content-Type " + strconv.Quote(ct) + " is not accepted; send application/json"
		}
		if seedShape {
			writeDetail(w, http.StatusUnsupportedMediaType, msg)
			return
		}
		writeError(w, http.StatusUnsupportedMediaType, "unsupported_media_type", msg)
	}
}

// readBody reads at most limit bytes; a longer body is a 413. The buffer grows as bytes
// arrive, never from the Content-Length a client announces: heads that promise a
// megabyte and send nothing must cost nothing.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, tooLarge(limit)
	}
	buf := make([]byte, 0, 512)
	rd := http.MaxBytesReader(w, r.Body, limit)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		m, err := rd.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+m]
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return nil, tooLarge(limit)
			}
			if errors.Is(err, io.EOF) {
				if err := duplicateName(buf); err != nil {
					return nil, err
				}
				return buf, nil
			}
			return nil, badRequest("cannot read the request body: " + err.Error())
		}
	}
}

// duplicateName refuses a body with a name twice in one object: encoding/json lets the
// last one win, so {"digest":A,"digest":B} would sign B while a proxy or a log reader
// that keeps the first sees A. Other syntax errors are left to each route's own parser
// and its messages.
func duplicateName(body []byte) error {
	if bytes.IndexByte(body, ',') < 0 {
		return nil // no object with two members, as in every {"digest"} request
	}
	d := decoders.Get().(*jsontext.Decoder)
	d.Reset(bytes.NewReader(body), jsontext.AllowInvalidUTF8(true))
	err := d.SkipValue()
	d.Reset(bytes.NewReader(nil))
	decoders.Put(d)
	var se *jsontext.SyntacticError
	if !errors.As(err, &se) || !errors.Is(err, jsontext.ErrDuplicateName) {
		return nil
	}
	where := "the body"
	if p := pointerPath(se.JSONPointer); p != "" {
		where = p
	}
	// The pointer points at the repeated member.
	return badRequest(where + ": the name " + strconv.Quote(se.JSONPointer.LastToken()) + " appears twice; send each name once")
}

// pointerPath writes the object holding a JSON pointer's last member as the API's
// messages name fields: steps[0].type.
func pointerPath(p jsontext.Pointer) string {
	var b strings.Builder
	var toks []string
	for t := range p.Tokens() {
		toks = append(toks, t)
	}
	if len(toks) > 0 {
		toks = toks[:len(toks)-1]
	}
	for _, t := range toks {
		if _, err := strconv.Atoi(t); err == nil {
			b.WriteString("[" + t + "]")
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(t)
	}
	return b.String()
}

var decoders = sync.Pool{New: func() any { return jsontext.NewDecoder(bytes.NewReader(nil)) }}

func tooLarge(limit int64) error {
	return &requestError{http.StatusRequestEntityTooLarge, "too_large", "the request body is larger than max_request_bytes (" + strconv.FormatInt(limit, 10) + " bytes)"}
}

// writeRequestError answers a requestError, or a 500 for anything else.
func (a *API) writeRequestError(w http.ResponseWriter, r *http.Request, err error) {
	var re *requestError
	if errors.As(err, &re) {
		writeError(w, re.status, re.code, re.msg)
		return
	}
	a.log.LogAttrs(r.Context(), slog.LevelError, "internal error", slog.String("route", r.Pattern), slog.String("error", err.Error()))
	writeError(w, http.StatusInternalServerError, "internal", "internal error; see the daemon's log")
}
