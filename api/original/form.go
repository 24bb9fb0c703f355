package original

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"sync"
	"time"

	"github.com/go-json-experiment/json/jsontext"
)

// form is the original's JSON body, an object read as FastAPI reads it (json.loads, then
// pydantic's model): its members by name, for the required string and date-time fields.
//
// Its fields are read in the order its pydantic model declares them, so that the problems
// come in pydantic's order.
type form struct {
	fields   []field
	body     json.RawMessage      // the object, for a missing field's input (pydantic's)
	times    map[string]time.Time // the date-time fields that parsed
	problems []problem
}

// field is one member of the body: its name, its value's JSON text, and for a string
// without escapes its text, read once.
type field struct {
	name  []byte
	raw   json.RawMessage
	text  string
	plain bool // text is the value: a string without escapes
}

// parseForm reads body, which must be a JSON object: an error otherwise, encoding/json's
// (a *json.SyntaxError when body is not JSON at all). Names are unique: the body was read
// by wire.ReadBody, which refuses names given twice.
//
// jsontext reads it in one pass, member by member, without reflection; what jsontext's
// strict defaults refuse and encoding/json may accept (a lone surrogate in an escape) or
// refuse in words of its own, and anything but an object, goes to encoding/json as before,
// so that both the values and the 422 answers stay encoding/json's.
func parseForm(body []byte) (*form, error) {
	if f := splitObject(body); f != nil {
		f.body, f.times = body, map[string]time.Time{}
		return f, nil
	}
	var members map[string]json.RawMessage
	if err := json.Unmarshal(body, &members); err != nil {
		return nil, err
	}
	if members == nil {
		return nil, errNotObject // null
	}
	f := &form{fields: make([]field, 0, len(members)), body: body, times: map[string]time.Time{}}
	for name, raw := range members {
		f.fields = append(f.fields, field{name: []byte(name), raw: raw})
	}
	return f, nil
}

var errNotObject = errors.New("the body is null")

// formDecoder reads a body in place: jsontext reads a *bytes.Buffer without copying it.
type formDecoder struct {
	src bytes.Buffer
	dec jsontext.Decoder
}

var formDecoders = sync.Pool{New: func() any { return new(formDecoder) }}

// splitObject returns the members of body if jsontext reads it as one object, else nil.
func splitObject(body []byte) *form {
	d := formDecoders.Get().(*formDecoder)
	defer func() {
		d.src = bytes.Buffer{} // keep no reference to the body
		d.dec.Reset(&d.src)
		formDecoders.Put(d)
	}()
	d.src = *bytes.NewBuffer(body)
	d.dec.Reset(&d.src)
	if d.dec.PeekKind() != '{' {
		return nil
	}
	if _, err := d.dec.ReadToken(); err != nil {
		return nil
	}
	f := &form{fields: make([]field, 0, 16)}
	for d.dec.PeekKind() == '"' {
		name, err := d.dec.ReadValue()
		if err != nil {
			return nil
		}
		fd := field{name: unquoted(name)}
		value, err := d.dec.ReadValue()
		if err != nil {
			return nil
		}
		// The value's text in body itself, which outlives the decoder's buffer.
		end := int(d.dec.InputOffset())
		fd.raw = json.RawMessage(body[end-len(value) : end])
		if value[0] == '"' && bytes.IndexByte(value, '\\') < 0 {
			fd.text, fd.plain = string(value[1:len(value)-1]), true
		}
		f.fields = append(f.fields, fd)
	}
	if _, err := d.dec.ReadToken(); err != nil { // '}'
		return nil
	}
	if _, err := d.dec.ReadToken(); err != io.EOF {
		return nil // more after the object
	}
	return f
}

// unquoted is a name's text: the bytes between the quotes, or its escapes decoded.
func unquoted(name jsontext.Value) []byte {
	if bytes.IndexByte(name, '\\') < 0 {
		return name[1 : len(name)-1]
	}
	b, err := jsontext.AppendUnquote(nil, name)
	if err != nil { // the decoder has read it as a valid string
		return nil
	}
	return b
}

// get returns the member name.
func (f *form) get(name string) (json.RawMessage, bool) {
	if fd := f.field(name); fd != nil {
		return fd.raw, true
	}
	return nil, false
}

func (f *form) field(name string) *field {
	for i := range f.fields {
		if string(f.fields[i].name) == name {
			return &f.fields[i]
		}
	}
	return nil
}

// missing records that a required field is absent: pydantic's input is the whole object.
func (f *form) missing(name string) {
	f.problems = append(f.problems, problem{Type: "missing", Loc: []any{"body", name}, Msg: "Field required", Input: f.body})
}

func (f *form) str(name string) string {
	fd := f.field(name)
	if fd == nil {
		f.missing(name)
		return ""
	}
	if fd.plain {
		return fd.text
	}
	var s string
	if err := json.Unmarshal(fd.raw, &s); err != nil || string(fd.raw) == "null" { // pydantic: None is not a str
		f.problems = append(f.problems, problem{Type: "string_type", Loc: []any{"body", name}, Msg: "Input should be a valid string", Input: fd.raw})
		return ""
	}
	return s
}

// time reads a datetime field as the original's pydantic model does (see date.go).
func (f *form) time(name string) time.Time {
	fd := f.field(name)
	if fd == nil {
		f.missing(name)
		return time.Time{}
	}
	var t time.Time
	var problem *problem
	if fd.plain {
		t, problem = pydanticDateTimeText(fd.text)
	} else {
		t, problem = pydanticDateTime(fd.raw)
	}
	if problem != nil {
		problem.Loc = []any{"body", name}
		f.problems = append(f.problems, *problem)
		return t
	}
	f.times[name] = t
	return t
}

// timeAfter reads a datetime field that the original's field_validator requires to be
// after an earlier field: when both parsed and it is not, the validator's ValueError is
// pydantic's value_error at this field's place in the list, as FastAPI answers it.
func (f *form) timeAfter(name, earlier string) time.Time {
	t := f.time(name)
	_, parsed := f.times[name]
	e, earlierParsed := f.times[earlier]
	if parsed && earlierParsed && !t.After(e) {
		raw, _ := f.get(name)
		f.problems = append(f.problems, problem{Type: "value_error", Loc: []any{"body", name},
			Msg: "Value error, " + name + " must be after " + earlier, Input: raw, Ctx: valueErrorCtx})
	}
	return t
}
