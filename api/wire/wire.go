// Package wire is how the API reads requests and writes answers: bodies within a size
// limit and with no name given twice, JSON decoded strictly with messages that name the
// field at fault, and the /v1 error shape, {"error": {"code", "message"}}, written from
// one struct by one function. The original service's routes (api/original) read bodies
// the same way and write errors in their own shape.
package wire

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"
)

// ErrorWriter answers an error in a route's shape: /v1's (Error) or the original
// service's. id, when not empty, is the request id under which the log holds the details.
type ErrorWriter func(w http.ResponseWriter, status int, code, message, id string)

// Problem is what went wrong, as /v1 answers say it: in an error answer, and for each
// item of a batch that failed.
type Problem struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	// RequestID names the daemon's log line that holds what the message leaves out.
	RequestID string `json:"request_id,omitzero"`
}

// Failure is a request that failed once accepted (its backend could not sign, say): the
// status to answer and what to say.
type Failure struct {
	Status int
	Problem
}

type errorBody struct {
	Error Problem `json:"error"`
}

// Error writes the /v1 error shape. message must never hold a secret: it is for the
// client, and the log line of the request repeats it. id, when not empty, is the request
// id under which the daemon's log holds what the answer leaves out.
func Error(w http.ResponseWriter, status int, code, message, id string) {
	JSON(w, status, &errorBody{Problem{code, message, id}})
}

var _ ErrorWriter = Error

// JSON writes v as the answer.
func JSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		Error(w, http.StatusInternalServerError, "internal", "cannot encode the response", "")
		return
	}
	Bytes(w, status, append(b, '\n'))
}

// Bytes writes b, which is JSON, as the answer.
func Bytes(w http.ResponseWriter, status int, b []byte) {
	h := w.Header()
	h["Content-Type"] = jsonContentType
	h["Content-Length"] = []string{strconv.Itoa(len(b))}
	w.WriteHeader(status)
	w.Write(b)
}

var jsonContentType = []string{"application/json"}

// RequestError is bad input: the HTTP status, the /v1 error code and a message naming
// the field at fault.
type RequestError struct {
	Status int
	Code   string
	Msg    string
}

func (e *RequestError) Error() string { return e.Msg }

// BadRequest is a 400 saying msg.
func BadRequest(msg string) error {
	return &RequestError{http.StatusBadRequest, "bad_request", msg}
}

// NewRequestID names a failed request in its answer and in the log line that holds the
// details.
func NewRequestID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// JSONOnly is in front of every POST route: the body must be declared
// application/json (parameters such as charset allowed). A web page can send a
// cross-site POST without asking the server first only as text/plain, a form or
// multipart; application/json needs a CORS preflight, which the daemon never grants (it
// sends no CORS headers), so no page in a browser can make the daemon sign. refuse
// answers in the route's shape.
func JSONOnly(h http.HandlerFunc, refuse ErrorWriter) http.HandlerFunc {
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
		refuse(w, http.StatusUnsupportedMediaType, "unsupported_media_type", msg, "")
	}
}

// ReadBody reads at most limit bytes; a longer body is a 413, a body with a name twice
// in one object a 400. The buffer grows as bytes arrive (io.ReadAll), never from the
// Content-Length a client announces: heads that promise a megabyte and send nothing must
// cost nothing.
func ReadBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, tooLarge(limit)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, tooLarge(limit)
		}
		return nil, BadRequest("cannot read the request body: " + err.Error())
	}
	if err := DuplicateName(body); err != nil {
		return nil, err
	}
	return body, nil
}

// ReadJSON is ReadBody for the /v1 routes, which take JSON without a byte order mark.
func ReadJSON(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	body, err := ReadBody(w, r, limit)
	if err != nil {
		return nil, err
	}
	if bytes.HasPrefix(body, utf8BOM) {
		return nil, BadRequest("the body begins with a UTF-8 byte order mark: send JSON without one (RFC 8259 section 8.1)")
	}
	return body, nil
}

var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

func tooLarge(limit int64) error {
	return &RequestError{http.StatusRequestEntityTooLarge, "too_large", "the request body is larger than max_request_bytes (" + strconv.FormatInt(limit, 10) + " bytes)"}
}
