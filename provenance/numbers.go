package provenance

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// MaxIntegerDigits is the most digits an integer in a step may have: CPython's default
// int_max_str_digits, beyond which the reference's json.loads raises instead of reading
// the number (so the reference could verify nothing that holds one).
const MaxIntegerDigits = 4300

// checkPythonNumber refuses a JSON number (its exact text, RFC 8259 grammar) that the
// reference library cannot read as what the text says: an integer of more than
// MaxIntegerDigits digits (Python refuses to read it) or a number with a fraction or an
// exponent whose magnitude rounds to infinity as a float64 (Python reads 1e999 as inf, a
// value JSON cannot hold). Underflow to zero is accepted, as Python accepts it.
//
// It sits where number text becomes a value (the JSON parser's number and AddStep), not in
// the tokenizer (jsontext), which reads number text as written.
func checkPythonNumber(s string) error {
	mag := strings.TrimPrefix(s, "-")
	special := strings.IndexAny(mag, ".eE")
	if special < 0 {
		if len(mag) > MaxIntegerDigits {
			return fmt.Errorf("an integer of %d digits; the reference (Python) reads at most %d", len(mag), MaxIntegerDigits)
		}
		return nil
	}
	// Python reads it as a float64, rounded to nearest as strconv does. Without an exponent
	// and with at most 308 integer digits the magnitude is below 1e308 and cannot overflow.
	if mag[special] == '.' && special <= 308 && !strings.ContainsAny(mag[special:], "eE") {
		return nil
	}
	if f, _ := strconv.ParseFloat(s, 64); math.IsInf(f, 0) {
		return fmt.Errorf("the number %s overflows a float64; the reference (Python) would read it as infinity", truncate(s))
	}
	return nil
}
