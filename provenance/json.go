package provenance

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
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
	p := jsonParser{data: data, maxDepth: lim.MaxDepth, maxString: lim.MaxStringBytes}
	return p.parseAll()
}

type jsonParser struct {
	data      []byte
	pos       int
	depth     int
	maxDepth  int
	maxString int
	topKey    string // the member of the top-level object being parsed
	members   []Member
	values    []any
	keys      map[string]string // interned object keys
}

// reset prepares a (possibly reused) parser for data, keeping its scratch stacks and
// interned keys.
func (p *jsonParser) reset(data []byte, maxDepth, maxString int) {
	p.data, p.pos, p.depth, p.topKey = data, 0, 0, ""
	p.maxDepth, p.maxString = maxDepth, maxString
}

func (p *jsonParser) parseAll() (any, error) {
	p.skipSpace()
	v, err := p.value()
	if err != nil {
		return nil, err
	}
	p.skipSpace()
	if p.pos != len(p.data) {
		return nil, p.errorf("unexpected data after the JSON value")
	}
	return v, nil
}

func (p *jsonParser) errorf(format string, args ...any) error {
	return fmt.Errorf("invalid JSON at offset %d: %s", p.pos, fmt.Sprintf(format, args...))
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

func (p *jsonParser) duplicate(key string) error {
	return &duplicateKeyError{key: key, depth: p.depth, topKey: p.topKey, err: p.errorf("duplicate key %q", truncate(key))}
}

func (p *jsonParser) skipSpace() {
	for p.pos < len(p.data) {
		switch p.data[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

func (p *jsonParser) value() (any, error) {
	if p.pos >= len(p.data) {
		return nil, p.errorf("unexpected end of input")
	}
	switch c := p.data[p.pos]; {
	case c == '{':
		return p.object()
	case c == '[':
		return p.array()
	case c == '"':
		return p.str(false)
	case c == '-' || (c >= '0' && c <= '9'):
		start := p.pos
		v, err := p.number()
		if err == nil {
			if err = checkPythonNumber(string(v.(json.Number))); err != nil {
				p.pos = start
				return nil, p.errorf("%v", err)
			}
		}
		return v, err
	case c == 't':
		return true, p.literal("true")
	case c == 'f':
		return false, p.literal("false")
	case c == 'n':
		return nil, p.literal("null")
	default:
		if c >= 0x20 && c < 0x7F {
			return nil, p.errorf("unexpected character %q", c)
		}
		return nil, p.errorf("unexpected byte 0x%02x", c)
	}
}

func (p *jsonParser) literal(word string) error {
	if len(p.data)-p.pos < len(word) || string(p.data[p.pos:p.pos+len(word)]) != word {
		return p.errorf("invalid literal")
	}
	p.pos += len(word)
	return nil
}

func (p *jsonParser) enter() error {
	p.depth++
	if p.depth > p.maxDepth {
		return p.errorf("nesting deeper than %d", p.maxDepth)
	}
	return nil
}

func (p *jsonParser) object() (any, error) {
	if err := p.enter(); err != nil {
		return nil, err
	}
	p.pos++ // '{'
	// Members are gathered on a stack shared by all nesting levels and copied out once the
	// object is complete, so each object costs one exactly sized allocation.
	base := len(p.members)
	defer func() { p.members = p.members[:base] }()
	var seen map[string]struct{}
	p.skipSpace()
	if p.pos < len(p.data) && p.data[p.pos] == '}' {
		p.pos++
		p.depth--
		return &Object{Members: []Member{}}, nil
	}
	for {
		p.skipSpace()
		if p.pos >= len(p.data) || p.data[p.pos] != '"' {
			return nil, p.errorf("expected a string key")
		}
		key, err := p.str(true)
		if err != nil {
			return nil, err
		}
		// Duplicate keys are refused: parsers disagree on which one wins, and a signed step
		// must mean the same thing to every reader.
		if seen != nil {
			if _, dup := seen[key]; dup {
				return nil, p.duplicate(key)
			}
			seen[key] = struct{}{}
		} else {
			current := p.members[base:]
			for i := range current {
				if current[i].Key == key {
					return nil, p.duplicate(key)
				}
			}
			if len(current) >= 16 {
				seen = make(map[string]struct{}, 32)
				for i := range current {
					seen[current[i].Key] = struct{}{}
				}
				seen[key] = struct{}{}
			}
		}
		if p.depth == 1 {
			p.topKey = key
		}
		p.skipSpace()
		if p.pos >= len(p.data) || p.data[p.pos] != ':' {
			return nil, p.errorf("expected ':'")
		}
		p.pos++
		p.skipSpace()
		v, err := p.value()
		if err != nil {
			return nil, err
		}
		p.members = append(p.members, Member{key, v})
		p.skipSpace()
		if p.pos >= len(p.data) {
			return nil, p.errorf("unexpected end of input in object")
		}
		switch p.data[p.pos] {
		case ',':
			p.pos++
		case '}':
			p.pos++
			p.depth--
			// One spare slot: a decoded step gets "_signature" appended without a copy.
			n := len(p.members) - base
			members := make([]Member, n, n+1)
			copy(members, p.members[base:])
			return &Object{Members: members}, nil
		default:
			return nil, p.errorf("expected ',' or '}'")
		}
	}
}

func (p *jsonParser) array() (any, error) {
	if err := p.enter(); err != nil {
		return nil, err
	}
	p.pos++ // '['
	base := len(p.values)
	defer func() { p.values = p.values[:base] }()
	p.skipSpace()
	if p.pos < len(p.data) && p.data[p.pos] == ']' {
		p.pos++
		p.depth--
		return []any{}, nil
	}
	for {
		p.skipSpace()
		v, err := p.value()
		if err != nil {
			return nil, err
		}
		p.values = append(p.values, v)
		p.skipSpace()
		if p.pos >= len(p.data) {
			return nil, p.errorf("unexpected end of input in array")
		}
		switch p.data[p.pos] {
		case ',':
			p.pos++
		case ']':
			p.pos++
			p.depth--
			return append([]any(nil), p.values[base:]...), nil
		default:
			return nil, p.errorf("expected ',' or ']'")
		}
	}
}

func (p *jsonParser) number() (any, error) {
	start := p.pos
	d := p.data
	i := p.pos
	if i < len(d) && d[i] == '-' {
		i++
	}
	switch {
	case i < len(d) && d[i] == '0':
		i++
	case i < len(d) && d[i] >= '1' && d[i] <= '9':
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
	default:
		p.pos = i
		return nil, p.errorf("invalid number")
	}
	if i < len(d) && d[i] == '.' {
		i++
		if i >= len(d) || d[i] < '0' || d[i] > '9' {
			p.pos = i
			return nil, p.errorf("invalid number")
		}
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		i++
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		if i >= len(d) || d[i] < '0' || d[i] > '9' {
			p.pos = i
			return nil, p.errorf("invalid number")
		}
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
	}
	if i-start > p.maxString {
		return nil, p.errorf("number longer than %d bytes", p.maxString)
	}
	p.pos = i
	return json.Number(d[start:i]), nil
}

// plainByte marks the bytes that stand for themselves inside a JSON string: printable ASCII
// other than the quote and the backslash.
var plainByte = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// hasSpecialByte reports whether any of the eight bytes in x is not a plainByte: a control
// character (< 0x20), a non-ASCII byte (>= 0x80), a quote or a backslash. It uses the usual
// "has a zero byte" arithmetic; a false positive only costs the byte-by-byte loop.
func hasSpecialByte(x uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	less20 := (x - 0x20*ones) & ^x
	quote := ((x ^ '"'*ones) - ones) & ^(x ^ '"'*ones)
	backslash := ((x ^ '\\'*ones) - ones) & ^(x ^ '\\'*ones)
	return (x|less20|quote|backslash)&highs != 0
}

const maxInternedKeys = 256

// str parses a string at p.pos (which holds '"'); intern is set for object keys.
func (p *jsonParser) str(intern bool) (string, error) {
	p.pos++
	d := p.data
	i := p.pos
	chunk := i     // start of the bytes not yet copied to buf
	var buf []byte // nil until the first escape
	ascii := true
	for {
		// Eight bytes at a time while none of them needs attention, then byte by byte.
		for i+8 <= len(d) && !hasSpecialByte(binary.LittleEndian.Uint64(d[i:])) {
			i += 8
		}
		for i < len(d) && plainByte[d[i]] {
			i++
		}
		if i >= len(d) {
			p.pos = i
			return "", p.errorf("unterminated string")
		}
		switch c := d[i]; {
		case c == '"':
			var out []byte
			if buf == nil {
				out = d[chunk:i]
			} else {
				buf = append(buf, d[chunk:i]...)
				out = buf
			}
			if len(out) > p.maxString {
				return "", p.errorf("string longer than %d bytes", p.maxString)
			}
			if !ascii && !utf8.Valid(out) {
				return "", p.errorf("string is not valid UTF-8")
			}
			p.pos = i + 1
			if intern && buf == nil {
				// Object keys repeat from step to step; a reused parser keeps one copy.
				if k, ok := p.keys[string(out)]; ok {
					return k, nil
				}
				k := string(out)
				if len(p.keys) < maxInternedKeys && len(k) <= 64 {
					if p.keys == nil {
						p.keys = make(map[string]string)
					}
					p.keys[k] = k
				}
				return k, nil
			}
			return string(out), nil
		case c >= 0x80:
			ascii = false
			i++
		case c < 0x20:
			p.pos = i
			return "", p.errorf("control character in string")
		default: // backslash
			if buf == nil {
				// Size for the string up to the next quote (its end, unless an escaped quote
				// comes first), bounded by the string limit.
				n := bytes.IndexByte(d[i:], '"')
				if n < 0 || n > p.maxString {
					n = 64
				}
				buf = make([]byte, 0, i-chunk+n)
			}
			buf = append(buf, d[chunk:i]...)
			if len(buf) > p.maxString {
				return "", p.errorf("string longer than %d bytes", p.maxString)
			}
			if i+1 >= len(d) {
				p.pos = i
				return "", p.errorf("unterminated escape")
			}
			e := d[i+1]
			i += 2
			switch e {
			case '"', '\\', '/':
				buf = append(buf, e)
			case 'b':
				buf = append(buf, '\b')
			case 'f':
				buf = append(buf, '\f')
			case 'n':
				buf = append(buf, '\n')
			case 'r':
				buf = append(buf, '\r')
			case 't':
				buf = append(buf, '\t')
			case 'u':
				r, ok := hex4(d, i)
				if !ok {
					p.pos = i
					return "", p.errorf("invalid \\u escape")
				}
				i += 4
				if utf16.IsSurrogate(r) {
					// Only a high surrogate followed by a low one is a character; a lone
					// surrogate cannot be represented in UTF-8, so it is refused, not replaced.
					if r >= 0xDC00 || i+6 > len(d) || d[i] != '\\' || d[i+1] != 'u' {
						p.pos = i
						return "", p.errorf("unpaired UTF-16 surrogate in \\u escape")
					}
					r2, ok := hex4(d, i+2)
					if !ok || r2 < 0xDC00 || r2 > 0xDFFF {
						p.pos = i
						return "", p.errorf("unpaired UTF-16 surrogate in \\u escape")
					}
					i += 6
					r = utf16.DecodeRune(r, r2)
				}
				buf = utf8.AppendRune(buf, r)
			default:
				p.pos = i - 1
				return "", p.errorf("invalid escape \\%c", e)
			}
			chunk = i
		}
	}
}

func hex4(d []byte, i int) (rune, bool) {
	if i+4 > len(d) {
		return 0, false
	}
	var r rune
	for _, c := range d[i : i+4] {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			r |= rune(c - 'A' + 10)
		default:
			return 0, false
		}
	}
	return r, true
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
		dst = append(dst, '[')
		for i, e := range x {
			if i > 0 {
				dst = append(dst, ',')
			}
			var err error
			if dst, err = appendValue(dst, e, depth+1); err != nil {
				return dst, err
			}
		}
		return append(dst, ']'), nil
	case []string:
		dst = append(dst, '[')
		for i, e := range x {
			if i > 0 {
				dst = append(dst, ',')
			}
			var err error
			if dst, err = appendString(dst, e); err != nil {
				return dst, err
			}
		}
		return append(dst, ']'), nil
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

func appendString(dst []byte, s string) ([]byte, error) {
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c < 0x7F && c != '"' && c != '\\' {
			dst = append(dst, c)
			i++
			continue
		}
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
	}
	return append(dst, '"'), nil
}

func appendU4(dst []byte, r rune) []byte {
	return append(dst, '\\', 'u', hexDigits[r>>12&0xF], hexDigits[r>>8&0xF], hexDigits[r>>4&0xF], hexDigits[r&0xF])
}

// validNumber reports whether s is a JSON number (RFC 8259 grammar).
func validNumber(s string) bool {
	p := jsonParser{data: []byte(s), maxDepth: 1, maxString: len(s) + 1}
	v, err := p.number()
	return err == nil && p.pos == len(s) && v != nil
}

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
