package api

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
)

// writeError writes the /v1 error shape. message must never hold a secret: it is for the
// client, and the log line of the request repeats it.
func writeError(w http.ResponseWriter, status int, code, message string) {
	b := make([]byte, 0, 64+len(message))
	b = append(b, `{"error":{"code":`...)
	b = appendJSONString(b, code)
	b = append(b, `,"message":`...)
	b = appendJSONString(b, message)
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

// appendJSONString appends s as a JSON string, escaped as encoding/json does: the one JSON
// string quoter of the answers built by hand (strconv.Quote is Go syntax, not JSON).
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

// readJSONBody checks the Content-Type and reads the body within the size limit.
func (a *API) readJSONBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return nil, &requestError{http.StatusUnsupportedMediaType, "unsupported_media_type", "Content-Type is missing; send application/json"}
	}
	if ct != "application/json" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "application/json" && !(len(mt) > 5 && mt[len(mt)-5:] == "+json")) {
			return nil, &requestError{http.StatusUnsupportedMediaType, "unsupported_media_type", "Content-Type " + strconv.Quote(ct) + " is not JSON; send application/json"}
		}
	}
	body, err := readBody(w, r, a.opts.MaxRequestBytes)
	if err != nil {
		return nil, err
	}
	return body, nil
}

// InMemoryBody is a request body the server has read already (the daemon's own HTTP
// reader does so for every request it takes): handlers use its bytes as they are.
type InMemoryBody interface {
	Bytes() []byte
}

// readBody reads at most limit bytes; a longer body is a 413.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, tooLarge(limit)
	}
	if m, ok := r.Body.(InMemoryBody); ok {
		if b := m.Bytes(); int64(len(b)) <= limit {
			return b, nil
		}
		return nil, tooLarge(limit)
	}
	n := r.ContentLength
	if n < 0 || n > 64<<10 {
		n = 512
	}
	buf := make([]byte, 0, n+1)
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
				return buf, nil
			}
			return nil, badRequest("cannot read the request body: " + err.Error())
		}
	}
}

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
