package original

import (
	"bytes"
	"encoding/binary"
	"errors"
	"unicode/utf16"
	"unicode/utf8"
)

// pythonJSONText turns a request body into the UTF-8 JSON text that the original service
// (FastAPI: json.loads on the body's bytes) would have read. json.loads detects the
// encoding as json.detect_encoding does: a UTF-32, UTF-16 or UTF-8 byte order mark, else
// UTF-16 or UTF-32 (big or little endian) from where the first bytes are zero, else UTF-8.
// So a body with a UTF-8 BOM, or in UTF-16/32, is accepted on the original's routes; the
// /v1 routes take UTF-8 JSON without a BOM (RFC 8259 section 8.1) and say so.
// Unlike Python's "surrogatepass", unpaired surrogates are an error.
func pythonJSONText(b []byte) ([]byte, error) {
	switch {
	case bytes.HasPrefix(b, []byte{0, 0, 0xFE, 0xFF}):
		return decodeUTF32(b[4:], binary.BigEndian)
	case bytes.HasPrefix(b, []byte{0xFF, 0xFE, 0, 0}):
		return decodeUTF32(b[4:], binary.LittleEndian)
	case bytes.HasPrefix(b, []byte{0xFE, 0xFF}):
		return decodeUTF16(b[2:], binary.BigEndian)
	case bytes.HasPrefix(b, []byte{0xFF, 0xFE}):
		return decodeUTF16(b[2:], binary.LittleEndian)
	case bytes.HasPrefix(b, utf8BOM):
		b = b[len(utf8BOM):]
		if !utf8.Valid(b) {
			return nil, errBodyEncoding
		}
		return b, nil
	}
	switch {
	case len(b) >= 4 && b[0] == 0 && b[1] != 0:
		return decodeUTF16(b, binary.BigEndian)
	case len(b) >= 4 && b[0] == 0:
		return decodeUTF32(b, binary.BigEndian)
	case len(b) >= 4 && b[1] == 0 && (b[2] != 0 || b[3] != 0):
		return decodeUTF16(b, binary.LittleEndian)
	case len(b) >= 4 && b[1] == 0:
		return decodeUTF32(b, binary.LittleEndian)
	case len(b) == 2 && b[0] == 0:
		return decodeUTF16(b, binary.BigEndian)
	case len(b) == 2 && b[1] == 0:
		return decodeUTF16(b, binary.LittleEndian)
	}
	if !utf8.Valid(b) {
		return nil, errBodyEncoding
	}
	return b, nil
}

var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

var errBodyEncoding = errors.New("the body is not valid UTF-8, UTF-16 or UTF-32 text")

func decodeUTF16(b []byte, order binary.ByteOrder) ([]byte, error) {
	if len(b)%2 != 0 {
		return nil, errBodyEncoding
	}
	units := make([]uint16, len(b)/2)
	for i := range units {
		units[i] = order.Uint16(b[2*i:])
	}
	out := make([]byte, 0, len(b))
	for i := 0; i < len(units); i++ {
		r := rune(units[i])
		if utf16.IsSurrogate(r) {
			if i+1 >= len(units) {
				return nil, errBodyEncoding
			}
			if r = utf16.DecodeRune(r, rune(units[i+1])); r == utf8.RuneError {
				return nil, errBodyEncoding
			}
			i++
		}
		out = utf8.AppendRune(out, r)
	}
	return out, nil
}

func decodeUTF32(b []byte, order binary.ByteOrder) ([]byte, error) {
	if len(b)%4 != 0 {
		return nil, errBodyEncoding
	}
	out := make([]byte, 0, len(b)/2)
	for i := 0; i < len(b); i += 4 {
		r := rune(order.Uint32(b[i:]))
		if !utf8.ValidRune(r) {
			return nil, errBodyEncoding
		}
		out = utf8.AppendRune(out, r)
	}
	return out, nil
}
