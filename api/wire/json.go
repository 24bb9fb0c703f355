package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"

	"github.com/go-json-experiment/json/jsontext"
)

// DecodeStrict decodes one JSON value into v, rejecting unknown fields (listing the
// accepted ones) and trailing data.
func DecodeStrict(body []byte, v any, accepted string) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return BadRequest(jsonProblem(err, accepted))
	}
	if dec.More() {
		return BadRequest("the body holds more than one JSON value")
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

// DuplicateName refuses a body with a name twice in one object: encoding/json lets the
// last one win, so {"digest":A,"digest":B} would sign B while a proxy or a log reader
// that keeps the first sees A. Other syntax errors are left to each route's own parser
// and its messages.
func DuplicateName(body []byte) error {
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
	return BadRequest(where + ": the name " + strconv.Quote(se.JSONPointer.LastToken()) + " appears twice; send each name once")
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
