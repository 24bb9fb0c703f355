package provenance

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"
)

// JSON values in this package are plain Go values of these types, so that key order and
// number text survive a round trip (encoding/json's map[string]any and float64 keep neither):
//
//	nil, bool, string, json.Number, []any, *Object
//
// When building steps, callers may also use int, int64, uint64 and the other integer types,
// []string and Object (by value); floating point numbers are refused because their decimal
// text is ambiguous: pass a json.Number with the exact text instead.

// Object is a JSON object that keeps its members in order. Decoded steps and steps that a
// caller builds are Objects. The zero value is an empty object.
type Object struct {
	Members []Member
}

// Member is one key/value pair of an Object.
type Member struct {
	Key   string
	Value any
}

// NewObject returns an Object holding members in the given order.
func NewObject(members ...Member) *Object {
	return &Object{Members: members}
}

// Get returns the value of key and whether it is present.
func (o *Object) Get(key string) (any, bool) {
	if o == nil {
		return nil, false
	}
	for i := range o.Members {
		if o.Members[i].Key == key {
			return o.Members[i].Value, true
		}
	}
	return nil, false
}

// GetString returns the value of key if it is present and a string.
func (o *Object) GetString(key string) (string, bool) {
	v, ok := o.Get(key)
	if !ok {
		return "", false
	}
	s, ok := v.(string)
	return s, ok
}

// Set replaces the value of key, or appends the member if key is not present.
func (o *Object) Set(key string, value any) {
	for i := range o.Members {
		if o.Members[i].Key == key {
			o.Members[i].Value = value
			return
		}
	}
	o.Members = append(o.Members, Member{key, value})
}

// Len returns the number of members.
func (o *Object) Len() int {
	if o == nil {
		return 0
	}
	return len(o.Members)
}

// MarshalJSON writes the object compactly, members in order, with the same ASCII-only
// escaping as steps (so the output is identical whatever the caller's HTML-escaping setting).
func (o *Object) MarshalJSON() ([]byte, error) {
	return AppendJSON(nil, o)
}

// UnmarshalJSON parses a JSON object keeping member order and exact number text, with the
// default Limits. Duplicate keys are an error. This lets an HTTP handler decode a step
// straight into an *Object field with encoding/json.
func (o *Object) UnmarshalJSON(data []byte) error {
	v, err := ParseJSON(data, DefaultLimits())
	if err != nil {
		return err
	}
	obj, ok := v.(*Object)
	if !ok {
		return errors.New("provenance: JSON value is not an object")
	}
	*o = *obj
	return nil
}

// ParseJSON parses one JSON text into the value types described in the package
// documentation. It keeps object member order and number text, refuses duplicate object
// keys, invalid UTF-8, unpaired UTF-16 surrogates in \u escapes and anything but whitespace
// after the value, and it bounds nesting depth (lim.MaxDepth) and string length
// (lim.MaxStringBytes).
func ParseJSON(data []byte, lim Limits) (any, error) {
	lim = lim.withDefaults()
	var p jsonParser
	p.reset(data, lim.MaxDepth, lim.MaxStringBytes)
	return p.parseAll()
}

// jsonParser builds values from the tokens of jsontext, whose defaults are the rules above:
// it refuses duplicate names, invalid UTF-8 and lone surrogates, and reads the number text
// as written. A parser may be reused; it keeps its decoder and its scratch stack.
type jsonParser struct {
	src       bytes.Buffer // the decoder reads a *bytes.Buffer in place, without copying
	dec       jsontext.Decoder
	maxDepth  int
	maxString int
	// Members and elements gather on stacks shared by all nesting levels and are copied out
	// once their object or array is complete: one exactly sized allocation for each.
	members []Member
	values  []any
}

// reset prepares a (possibly reused) parser for data.
func (p *jsonParser) reset(data []byte, maxDepth, maxString int) {
	p.src = *bytes.NewBuffer(data)
	p.dec.Reset(&p.src)
	p.maxDepth, p.maxString = maxDepth, maxString
}

// release drops the parser's reference to the data it read, and any scratch memory that a
// large input made grow.
func (p *jsonParser) release() {
	p.src = bytes.Buffer{}
	p.dec.Reset(&p.src)
	if cap(p.members) > 4096 || cap(p.values) > 4096 {
		p.members, p.values = nil, nil
	}
}

func (p *jsonParser) parseAll() (any, error) {
	v, err := p.value()
	if err != nil {
		return nil, p.syntaxError(err)
	}
	end := p.dec.InputOffset()
	if _, err := p.dec.ReadToken(); err != io.EOF {
		return nil, fmt.Errorf("invalid JSON at offset %d: unexpected data after the JSON value", end)
	}
	return v, nil
}

// duplicateKeyError reports a key that appears twice in one object, and the nesting depth
// of that object (1 for the top-level object).
type duplicateKeyError struct {
	key    string
	depth  int
	topKey string // the top-level member it is in
	err    error
}

func (e *duplicateKeyError) Error() string { return e.err.Error() }

// syntaxError rewrites a jsontext error: its text quotes the JSON pointer, whose keys may be
// as long as any string; ours names the offset and at most the start of a key.
func (p *jsonParser) syntaxError(err error) error {
	offset := p.dec.InputOffset()
	var se *jsontext.SyntacticError
	if errors.As(err, &se) {
		if se.Err == jsontext.ErrDuplicateName {
			key := se.JSONPointer.LastToken()
			var path []string
			for t := range se.JSONPointer.Tokens() {
				path = append(path, t)
			}
			dup := &duplicateKeyError{key: key, depth: len(path), err: fmt.Errorf("invalid JSON at offset %d: duplicate key %q", se.ByteOffset, truncate(key))}
			if len(path) > 1 {
				dup.topKey = path[0]
			}
			return dup
		}
		offset, err = se.ByteOffset, se.Err
	}
	if err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("invalid JSON at offset %d: unexpected end of input", offset)
	}
	if se == nil {
		return err // one of ours, which says where
	}
	return fmt.Errorf("invalid JSON at offset %d: %w", offset, err)
}

func (p *jsonParser) value() (any, error) {
	switch p.dec.PeekKind() {
	case '"':
		return p.str()
	case '0':
		raw, err := p.dec.ReadValue()
		if err != nil {
			return nil, err
		}
		return p.number(string(raw))
	}
	tok, err := p.dec.ReadToken()
	if err != nil {
		return nil, err
	}
	switch tok.Kind() {
	case '{', '[':
		// jsontext v1.27 has no depth option yet (its WithDepthLimit is a TODO).
		if p.dec.StackDepth() > p.maxDepth {
			return nil, fmt.Errorf("invalid JSON at offset %d: nesting deeper than %d", p.dec.InputOffset(), p.maxDepth)
		}
		if tok.Kind() == '{' {
			return p.object()
		}
		return p.array()
	case 't':
		return true, nil
	case 'f':
		return false, nil
	default: // 'n'; the decoder reports anything else as an error
		return nil, nil
	}
}

// str reads a string (a value or an object key). The decoder has checked it; most strings
// in a record have no escape and are their raw text (found with one IndexByte, where
// Token.String would scan the string a second time byte by byte).
func (p *jsonParser) str() (string, error) {
	raw, err := p.dec.ReadValue()
	if err != nil {
		return "", err
	}
	var s string
	if bytes.IndexByte(raw, '\\') < 0 {
		s = string(raw[1 : len(raw)-1])
	} else {
		b, err := jsontext.AppendUnquote(nil, raw)
		if err != nil {
			return "", err
		}
		s = string(b)
	}
	if len(s) > p.maxString {
		return "", fmt.Errorf("invalid JSON at offset %d: string longer than %d bytes", p.dec.InputOffset(), p.maxString)
	}
	return s, nil
}

// number is the value of the text of a number as read. Every number the parser reads
// passes here: this is the one place for checks on a number.
func (p *jsonParser) number(text string) (any, error) {
	if len(text) > p.maxString {
		return nil, fmt.Errorf("invalid JSON at offset %d: number longer than %d bytes", p.dec.InputOffset(), p.maxString)
	}
	if err := checkPythonNumber(text); err != nil {
		return nil, fmt.Errorf("invalid JSON at offset %d: %v", p.dec.InputOffset()-int64(len(text)), err)
	}
	return json.Number(text), nil
}

func (p *jsonParser) object() (any, error) {
	base := len(p.members)
	defer func() { p.members = p.members[:base] }()
	for p.dec.PeekKind() == '"' {
		key, err := p.str()
		if err != nil {
			return nil, err
		}
		v, err := p.value()
		if err != nil {
			return nil, err
		}
		p.members = append(p.members, Member{key, v})
	}
	if _, err := p.dec.ReadToken(); err != nil { // '}'
		return nil, err
	}
	// One spare slot: a decoded step gets "_signature" appended without a copy.
	n := len(p.members) - base
	members := make([]Member, n, n+1)
	copy(members, p.members[base:])
	return &Object{Members: members}, nil
}

func (p *jsonParser) array() (any, error) {
	base := len(p.values)
	defer func() { p.values = p.values[:base] }()
	for p.dec.PeekKind() != ']' { // at an error PeekKind gives 0, and value reports it
		v, err := p.value()
		if err != nil {
			return nil, err
		}
		p.values = append(p.values, v)
	}
	if _, err := p.dec.ReadToken(); err != nil {
		return nil, err
	}
	return append([]any{}, p.values[base:]...), nil
}

// AppendJSON appends the compact JSON text of v to dst exactly as Python's
// json.dumps(v, separators=(",", ":"), ensure_ascii=True) writes it: members in order, the
// short escapes \" \\ \b \f \n \r \t, every other character outside 0x20..0x7E (DEL
// included) as a lower-case \u00XX/\uXXXX escape, characters beyond the BMP as surrogate
// pairs, while < > & / and the apostrophe are left alone. Numbers are written as their text.
// Duplicate keys, invalid UTF-8, floats and unknown types are errors.
func AppendJSON(dst []byte, v any) ([]byte, error) {
	return appendValue(dst, v, 0)
}

const maxEncodeDepth = 1000

// appendValue is a table, one case per Go type that may hold a JSON value, and reads
// better whole. The containers have functions of their own; the scalars stay, since
// moving them out would cost a second type switch per value on the hot path of encoding
// steps.
func appendValue(dst []byte, v any, depth int) ([]byte, error) {
	if depth > maxEncodeDepth {
		return dst, errors.New("provenance: JSON value nested too deeply")
	}
	switch x := v.(type) {
	case nil:
		return append(dst, "null"...), nil
	case bool:
		if x {
			return append(dst, "true"...), nil
		}
		return append(dst, "false"...), nil
	case string:
		return appendString(dst, x)
	case json.Number:
		if !validNumber(string(x)) {
			return dst, fmt.Errorf("provenance: %q is not a JSON number", string(x))
		}
		return append(dst, x...), nil
	case int:
		return strconv.AppendInt(dst, int64(x), 10), nil
	case int8:
		return strconv.AppendInt(dst, int64(x), 10), nil
	case int16:
		return strconv.AppendInt(dst, int64(x), 10), nil
	case int32:
		return strconv.AppendInt(dst, int64(x), 10), nil
	case int64:
		return strconv.AppendInt(dst, x, 10), nil
	case uint:
		return strconv.AppendUint(dst, uint64(x), 10), nil
	case uint8:
		return strconv.AppendUint(dst, uint64(x), 10), nil
	case uint16:
		return strconv.AppendUint(dst, uint64(x), 10), nil
	case uint32:
		return strconv.AppendUint(dst, uint64(x), 10), nil
	case uint64:
		return strconv.AppendUint(dst, x, 10), nil
	case *big.Int:
		if x == nil {
			return append(dst, "null"...), nil
		}
		return x.Append(dst, 10), nil
	case float32, float64:
		return dst, errors.New("provenance: floating point numbers are ambiguous in JSON text; use json.Number with the exact text")
	case []any:
		return appendArray(dst, x, depth)
	case []string:
		return appendStrings(dst, x)
	case *Object:
		if x == nil {
			return append(dst, "null"...), nil
		}
		return appendObject(dst, x, depth)
	case Object:
		return appendObject(dst, &x, depth)
	default:
		return dst, fmt.Errorf("provenance: cannot encode a %T as JSON (use *Object for objects)", v)
	}
}

func appendArray(dst []byte, a []any, depth int) ([]byte, error) {
	dst = append(dst, '[')
	for i, e := range a {
		if i > 0 {
			dst = append(dst, ',')
		}
		var err error
		if dst, err = appendValue(dst, e, depth+1); err != nil {
			return dst, err
		}
	}
	return append(dst, ']'), nil
}

func appendStrings(dst []byte, a []string) ([]byte, error) {
	dst = append(dst, '[')
	for i, e := range a {
		if i > 0 {
			dst = append(dst, ',')
		}
		var err error
		if dst, err = appendString(dst, e); err != nil {
			return dst, err
		}
	}
	return append(dst, ']'), nil
}

func appendObject(dst []byte, o *Object, depth int) ([]byte, error) {
	if err := checkDuplicateKeys(o); err != nil {
		return dst, err
	}
	dst = append(dst, '{')
	for i, m := range o.Members {
		if i > 0 {
			dst = append(dst, ',')
		}
		var err error
		if dst, err = appendString(dst, m.Key); err != nil {
			return dst, err
		}
		dst = append(dst, ':')
		if dst, err = appendValue(dst, m.Value, depth+1); err != nil {
			return dst, err
		}
	}
	return append(dst, '}'), nil
}

func checkDuplicateKeys(o *Object) error {
	n := len(o.Members)
	if n < 16 {
		for i := 1; i < n; i++ {
			for j := 0; j < i; j++ {
				if o.Members[i].Key == o.Members[j].Key {
					return fmt.Errorf("provenance: duplicate key %q in object", o.Members[i].Key)
				}
			}
		}
		return nil
	}
	seen := make(map[string]struct{}, n)
	for _, m := range o.Members {
		if _, dup := seen[m.Key]; dup {
			return fmt.Errorf("provenance: duplicate key %q in object", m.Key)
		}
		seen[m.Key] = struct{}{}
	}
	return nil
}

const hexDigits = "0123456789abcdef"

// appendString copies each run of characters that need no escape in one append: most
// strings of a record (step ids, URLs, base64 steps, PEM lines) are such runs whole.
func appendString(dst []byte, s string) ([]byte, error) {
	dst = append(dst, '"')
	run := 0 // the start of the run not yet copied
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c < 0x7F && c != '"' && c != '\\' {
			i++
			continue
		}
		dst = append(dst, s[run:i]...)
		if c < utf8.RuneSelf {
			switch c {
			case '"':
				dst = append(dst, '\\', '"')
			case '\\':
				dst = append(dst, '\\', '\\')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			default: // other control characters and DEL
				dst = appendU4(dst, rune(c))
			}
			i++
			run = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			return dst, errors.New("provenance: string is not valid UTF-8")
		}
		if r >= 0x10000 {
			hi, lo := utf16.EncodeRune(r)
			dst = appendU4(dst, hi)
			dst = appendU4(dst, lo)
		} else {
			dst = appendU4(dst, r)
		}
		i += size
		run = i
	}
	dst = append(dst, s[run:]...)
	return append(dst, '"'), nil
}

func appendU4(dst []byte, r rune) []byte {
	return append(dst, '\\', 'u', hexDigits[r>>12&0xF], hexDigits[r>>8&0xF], hexDigits[r>>4&0xF], hexDigits[r&0xF])
}

// validNumber reports whether s is exactly one JSON number (RFC 8259 grammar).
func validNumber(s string) bool {
	// IsValid allows whitespace around the value; a number starts with '-' or a digit and
	// ends with a digit.
	return len(s) > 0 && (s[0] == '-' || isDigit(s[0])) && isDigit(s[len(s)-1]) && jsontext.Value(s).IsValid()
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// normalizeNumber gives the JSON number text of any of the number types that callers may
// use (json.Number, Go integers and floats, *big.Int), so that comparisons deal with one.
func normalizeNumber(v any) (json.Number, bool) {
	switch x := v.(type) {
	case json.Number:
		return x, true
	case int:
		return json.Number(strconv.FormatInt(int64(x), 10)), true
	case int8:
		return json.Number(strconv.FormatInt(int64(x), 10)), true
	case int16:
		return json.Number(strconv.FormatInt(int64(x), 10)), true
	case int32:
		return json.Number(strconv.FormatInt(int64(x), 10)), true
	case int64:
		return json.Number(strconv.FormatInt(x, 10)), true
	case uint:
		return json.Number(strconv.FormatUint(uint64(x), 10)), true
	case uint8:
		return json.Number(strconv.FormatUint(uint64(x), 10)), true
	case uint16:
		return json.Number(strconv.FormatUint(uint64(x), 10)), true
	case uint32:
		return json.Number(strconv.FormatUint(uint64(x), 10)), true
	case uint64:
		return json.Number(strconv.FormatUint(x, 10)), true
	case float64:
		return json.Number(strconv.FormatFloat(x, 'g', -1, 64)), true
	case float32:
		return json.Number(strconv.FormatFloat(float64(x), 'g', -1, 32)), true
	case *big.Int:
		if x == nil {
			return "", false
		}
		return json.Number(x.String()), true
	}
	return "", false
}

// numbersEqual compares two JSON numbers by value, exactly (no float rounding).
func numbersEqual(a, b json.Number) bool {
	if a == b {
		return true
	}
	// Bound the exponent: big.Rat would happily build 10^1000000000.
	if !saneExponent(string(a)) || !saneExponent(string(b)) {
		return false
	}
	ra, ok1 := new(big.Rat).SetString(string(a))
	rb, ok2 := new(big.Rat).SetString(string(b))
	return ok1 && ok2 && ra.Cmp(rb) == 0
}

func saneExponent(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == 'e' || s[i] == 'E' {
			exp, err := strconv.Atoi(s[i+1:])
			return err == nil && exp > -10000 && exp < 10000
		}
	}
	return true
}

// JSONEqual reports whether two JSON values are equal: objects by their set of members
// (order ignored), arrays element by element, numbers by exact value (so 1, 1.0 and 1e0 are
// equal; float64 and integer Go values are accepted), booleans only equal booleans.
func JSONEqual(a, b any) bool {
	if na, ok := normalizeNumber(a); ok {
		nb, ok := normalizeNumber(b)
		return ok && numbersEqual(na, nb)
	}
	switch x := a.(type) {
	case nil:
		return b == nil
	case bool:
		y, ok := b.(bool)
		return ok && x == y
	case string:
		y, ok := b.(string)
		return ok && x == y
	case []any, []string:
		xs, ys := asList(a), asList(b)
		if xs == nil || ys == nil || len(xs) != len(ys) {
			return false
		}
		for i := range xs {
			if !JSONEqual(xs[i], ys[i]) {
				return false
			}
		}
		return true
	case *Object, Object, map[string]any:
		xm, ym := asMembers(a), asMembers(b)
		if xm == nil || ym == nil || len(xm) != len(ym) {
			return false
		}
		for _, m := range xm {
			found := false
			for _, n := range ym {
				if n.Key == m.Key {
					found = true
					if !JSONEqual(m.Value, n.Value) {
						return false
					}
					break
				}
			}
			if !found {
				return false
			}
		}
		return true
	}
	return false
}

// asList returns v as a list, or nil if it is not one (an empty list is a non-nil empty
// slice).
func asList(v any) []any {
	switch x := v.(type) {
	case []any:
		if x == nil {
			return []any{}
		}
		return x
	case []string:
		out := make([]any, len(x))
		for i, s := range x {
			out[i] = s
		}
		return out
	}
	return nil
}

// asMembers returns the members of an object value, or nil if v is not an object (an empty
// object gives a non-nil empty slice).
func asMembers(v any) []Member {
	switch x := v.(type) {
	case *Object:
		if x == nil {
			return nil
		}
		if x.Members == nil {
			return []Member{}
		}
		return x.Members
	case Object:
		if x.Members == nil {
			return []Member{}
		}
		return x.Members
	case map[string]any:
		out := make([]Member, 0, len(x))
		for k, e := range x {
			out = append(out, Member{k, e})
		}
		return out
	}
	return nil
}
