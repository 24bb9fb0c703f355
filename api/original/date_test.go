package original

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/ib1/provenanced/provenance"
)

// The original's datetime fields as pydantic 2 (pydantic-core 2.41.4, speedate 0.17.0, the
// versions of the original's uv.lock) reads them from what json.loads made of the body.
// Where each rule comes from:
//
//	[formats]  speedate README (v0.17.0), "The following formats are supported": YYYY-MM-DD;
//	           HH:MM:SS, HH:MM:SS.FFFFFF (1 to 6 digits kept, extra digits ignored), HH:MM;
//	           separators T, t, space and _; Z or z; ±HH:MM or ±HHMM offsets, U+2212 minus
//	           allowed; "unix timestamps (both seconds and milliseconds)".
//	[ranges]   speedate src/time.rs, src/date.rs: hour 0-23, minute and second 0-59,
//	           offsets below 24 hours ("TZ must be less than 24 hours to match python"),
//	           calendar days with leap years; Unix times from year 0000 to 9999.
//	[unix]     pydantic docs, Standard Library Types / datetime: "int or float; assumed as
//	           Unix time, i.e. seconds (if >= -2e10 and <= 2e10) or milliseconds (if < -2e10
//	           or > 2e10) since 1 January 1970"; "str ... int or float as a string (assumed
//	           as Unix time)". speedate src/numbers.rs: a string is an integer (optional
//	           sign, digits) or, when the integer reading stops at '.', a float.
//	[date]     pydantic docs (Conversion Table, datetime from str: "YYYY-MM-DD"), pydantic-
//	           core src/validators/datetime.rs: in lax mode a string that is not a datetime
//	           is tried as a date, at midnight; its error is then the one reported
//	           (datetime_from_date_parsing).
//	[types]    pydantic-core src/input/input_python.rs validate_datetime: str, int, float are
//	           accepted in lax mode, a bool is refused (datetime_type), as is anything else
//	           (None, list, dict).
//	[python]   Python's datetime: years 1 to 9999 (year 0 parses in speedate, then fails).
//	[truncate] pydantic-core: microseconds_precision defaults to "truncate".
func TestPydanticDateTime(t *testing.T) {
	for _, tc := range []struct {
		in   string // raw JSON
		want string // the UTC time as records write it, or "!" + the error type
	}{
		// [formats]
		{`"2025-09-20T10:00:00"`, "2025-09-20T10:00:00Z"}, // naive: taken as UTC here
		{`"2025-09-20T10:00:00Z"`, "2025-09-20T10:00:00Z"},
		{`"2025-09-20t10:00:00z"`, "2025-09-20T10:00:00Z"},
		{`"2025-09-20 10:00:00"`, "2025-09-20T10:00:00Z"},
		{`"2025-09-20_10:00:00"`, "2025-09-20T10:00:00Z"},
		{`"2025-09-20T10:00"`, "2025-09-20T10:00:00Z"},
		{`"2025-09-20T10:00Z"`, "2025-09-20T10:00:00Z"},
		{`"2025-09-20T10:00:00.123456"`, "2025-09-20T10:00:00Z"},
		{`"2025-09-20T10:00:59,5Z"`, "2025-09-20T10:00:59Z"},
		{`"2025-09-20T11:00:00+01:00"`, "2025-09-20T10:00:00Z"},
		{`"2025-09-20T11:00:00+0100"`, "2025-09-20T10:00:00Z"},
		{`"2025-09-20T09:00:00−01:00"`, "2025-09-20T10:00:00Z"}, // U+2212
		{`"2025-09-20T09:30:00-0030"`, "2025-09-20T10:00:00Z"},
		{`"2025-09-20T10:00:00-00:00"`, "2025-09-20T10:00:00Z"},
		{`"2025-09-21T09:59:00+23:59"`, "2025-09-20T10:00:00Z"},
		{`"2025-09-20T10:00:00.1234567891Z"`, "2025-09-20T10:00:00Z"}, // [truncate]
		{`"2024-02-29T00:00:00"`, "2024-02-29T00:00:00Z"},
		{`"0001-01-01T00:00:00"`, "0001-01-01T00:00:00Z"},
		{`"9999-12-31T23:59:59"`, "9999-12-31T23:59:59Z"},
		{`"2025-09-20T10:00:00+24:00"`, "!datetime_from_date_parsing"}, // [ranges]
		{`"2025-09-20T10:00:00-24:00"`, "!datetime_from_date_parsing"},
		{`"2025-09-20T10:00:00+01:60"`, "!datetime_from_date_parsing"},
		{`"2025-09-20T10:00:00+01"`, "!datetime_from_date_parsing"},
		{`"2025-09-20T10:00:00+1:00"`, "!datetime_from_date_parsing"},
		{`"2025-09-20T10:00:00UTC"`, "!datetime_from_date_parsing"},
		{`"2025-09-20T24:00:00"`, "!datetime_from_date_parsing"},
		{`"2025-09-20T10:60:00"`, "!datetime_from_date_parsing"},
		{`"2025-09-20T23:59:60"`, "!datetime_from_date_parsing"},
		{`"2025-02-29T10:00:00"`, "!datetime_from_date_parsing"},
		// The century rule of leap years, in both readings (datetime and the date fallback):
		// 2000 is divisible by 400 and has a 29 February, 1900 and 2100 do not.
		{`"2000-02-29T10:00:00"`, "2000-02-29T10:00:00Z"},
		{`"2000-02-29"`, "2000-02-29T00:00:00Z"},
		{`"1600-02-29"`, "1600-02-29T00:00:00Z"},
		{`"1900-02-29T10:00:00"`, "!datetime_from_date_parsing"},
		{`"1900-02-29"`, "!datetime_from_date_parsing"},
		{`"2100-02-29"`, "!datetime_from_date_parsing"},
		{`"1900-02-28"`, "1900-02-28T00:00:00Z"},
		{`"2025-13-01T10:00:00"`, "!datetime_from_date_parsing"},
		{`"2025-09-20T10:00:00."`, "!datetime_from_date_parsing"},
		{`"2025-09-20T10:00.5"`, "!datetime_from_date_parsing"},
		{`"2025-09-20T10"`, "!datetime_from_date_parsing"},
		{`"2025-09-20T1:00:00"`, "!datetime_from_date_parsing"},
		{`"2025-9-20T10:00:00"`, "!datetime_from_date_parsing"},
		{`"20/09/2025"`, "!datetime_from_date_parsing"},
		{`" 2025-09-20T10:00:00"`, "!datetime_from_date_parsing"},
		{`"2025-09-20T10:00:00 "`, "!datetime_from_date_parsing"},
		{`"2025-09-20T10:00:00Z[UTC]"`, "!datetime_from_date_parsing"},
		{`"20250920T100000Z"`, "!datetime_from_date_parsing"},
		{`""`, "!datetime_from_date_parsing"},
		{`"0000-01-01T00:00:00"`, "!datetime_parsing"}, // [python]: parsed, then refused
		{`"0000-01-01"`, "!datetime_parsing"},
		{`"0000-12-31T23:59:59+01:00"`, "!datetime_parsing"},
		{`"-62167219200000"`, "!datetime_parsing"},
		{`-62167219200000`, "!datetime_parsing"},
		{`-62135596800000`, "0001-01-01T00:00:00Z"},
		// [date]
		{`"2025-09-20"`, "2025-09-20T00:00:00Z"},
		{`"2025-09-31"`, "!datetime_from_date_parsing"},
		// [unix], strings
		{`"1758362400"`, "2025-09-20T10:00:00Z"},
		{`"+1758362400"`, "2025-09-20T10:00:00Z"},
		{`"1758362400000"`, "2025-09-20T10:00:00Z"},
		{`"1758362400.75"`, "2025-09-20T10:00:00Z"},
		{`"1.7583624e9"`, "2025-09-20T10:00:00Z"},
		{`"-1.5"`, "1969-12-31T23:59:58Z"},
		{`"-1.25"`, "1969-12-31T23:59:58Z"},            // -1.25 s
		{`-1.25`, "1969-12-31T23:59:58Z"},              // pydantic reads -2 s + 0.25 s = -1.75 s
		{`"30000000000000.0"`, "1970-12-14T05:20:00Z"}, // ms to s, then s taken as ms again (pydantic does so)
		{`"1758362400."`, "2025-09-20T10:00:00Z"},
		{`".5"`, "1970-01-01T00:00:00Z"},
		{`"+.5e3"`, "1970-01-01T00:08:20Z"},
		{`"1.e3"`, "1970-01-01T00:16:40Z"},
		{`1758362400000.5`, "2025-09-20T10:00:00Z"},
		{`"0"`, "1970-01-01T00:00:00Z"},
		{`"1e9"`, "!datetime_from_date_parsing"}, // no '.': not a float to speedate
		{`"0x10"`, "!datetime_from_date_parsing"},
		{`"1758362400 "`, "!datetime_from_date_parsing"},
		{`"253402300800000"`, "!datetime_from_date_parsing"}, // after 9999
		// [unix], numbers
		{`1758362400`, "2025-09-20T10:00:00Z"},
		{`1758362400000`, "2025-09-20T10:00:00Z"},
		{`1758362400.9`, "2025-09-20T10:00:00Z"},
		{`1.7583624e9`, "2025-09-20T10:00:00Z"},
		{`0`, "1970-01-01T00:00:00Z"},
		{`-0`, "1970-01-01T00:00:00Z"},
		{`20000000000`, "2603-10-11T11:33:20Z"},  // 2e10: still seconds
		{`20000000001`, "1970-08-20T11:33:20Z"},  // above: milliseconds
		{`-20000000001`, "1969-05-14T12:26:39Z"}, // speedate's own example
		{`253402300799`, "1978-01-11T21:31:40Z"}, // milliseconds, by magnitude
		{`253402300799999`, "9999-12-31T23:59:59Z"},
		{`253402300800000`, "!datetime_parsing"},
		{`-62167219200001`, "!datetime_parsing"},
		{`1e999`, "!datetime_parsing"}, // json.loads: inf
		{`1` + strings.Repeat("0", 400), "!datetime_type"},
		// [types]
		{`true`, "!datetime_type"},
		{`false`, "!datetime_type"},
		{`null`, "!datetime_type"},
		{`[]`, "!datetime_type"},
		{`{}`, "!datetime_type"},
	} {
		got, problem := pydanticDateTime(json.RawMessage(tc.in))
		if problem != nil {
			if "!"+problem.Type != tc.want {
				t.Errorf("%s: %s %q, want %s", tc.in, problem.Type, problem.Msg, tc.want)
			}
			if !strings.HasPrefix(problem.Msg, "Input should be a valid datetime") {
				t.Errorf("%s: message %q", tc.in, problem.Msg)
			}
			continue
		}
		if s := provenance.FormatTimestamp(got); s != tc.want {
			t.Errorf("%s: %s, want %s", tc.in, s, tc.want)
		}
	}
}

// Messages are pydantic's, with speedate's reason for the date reading.
func TestPydanticDateTimeMessages(t *testing.T) {
	for in, want := range map[string]string{
		`""`:                             "Input should be a valid datetime or date, input is too short",
		`"20/09/2025"`:                   "Input should be a valid datetime or date, invalid character in year",
		`"2025-09-20T10:00:00+24:00"`:    "Input should be a valid datetime or date, unexpected extra characters at the end of the input",
		`"2025-02-29"`:                   "Input should be a valid datetime or date, day value is outside expected range",
		`253402300800000`:                "Input should be a valid datetime, dates after 9999 are not supported as unix timestamps",
		`true`:                           "Input should be a valid datetime",
		`"253402300800000"`:              "Input should be a valid datetime or date, dates after 9999 are not supported as unix timestamps",
		`"1758362401"`:                   "",
		`"2025-09-20T10:00:00+01:00:00"`: "Input should be a valid datetime or date, unexpected extra characters at the end of the input",
	} {
		_, problem := pydanticDateTime(json.RawMessage(in))
		got := ""
		if problem != nil {
			got = problem.Msg
		}
		if got != want {
			t.Errorf("%s: %q, want %q", in, got, want)
		}
	}
}

// The original's D(x) is x's own calendar date: an offset keeps its local date.
func TestDayKeepsTheLocalDate(t *testing.T) {
	x, problem := pydanticDateTime(json.RawMessage(`"2025-09-20T23:30:00-05:00"`))
	if problem != nil {
		t.Fatal(problem.Msg)
	}
	if day(x) != "2025-09-20T00:00Z" || provenance.FormatTimestamp(x) != "2025-09-21T04:30:00Z" {
		t.Errorf("day %s, timestamp %s", day(x), provenance.FormatTimestamp(x))
	}
}

// FuzzPydanticDateTime: whatever a client sends in a date field, the parser does not
// panic (it indexes into hostile text), and what it accepts is a time between years 0
// (an offset can move year 1 back across the boundary) and 9999, in whole microseconds.
func FuzzPydanticDateTime(f *testing.F) {
	for _, s := range []string{`"2025-09-20T10:00:00+01:00"`, `"2025-09-20t10:00z"`, `"1758362400.5"`, `1758362400000`,
		`"2025-09-20T10:00:00−01:00"`, `"2025-09-20T10:00:00.1234567"`, `"+.5e3"`, `-1.25`, `"2025-09-20"`, `true`} {
		f.Add(s)
	}
	check := func(t *testing.T, raw []byte) {
		got, problem := pydanticDateTime(json.RawMessage(raw))
		if problem != nil {
			if !strings.HasPrefix(problem.Msg, "Input should be a valid datetime") {
				t.Fatalf("%s: %q", raw, problem.Msg)
			}
			return
		}
		if u := got.UTC(); u.Year() < 0 || u.Year() > 10000 || got.Nanosecond()%1000 != 0 {
			t.Fatalf("%s: %v", raw, got)
		}
	}
	// The input is tried as a JSON value and as the text of a JSON string.
	f.Fuzz(func(t *testing.T, s string) {
		if json.Valid([]byte(s)) {
			check(t, []byte(s))
		}
		quoted, _ := json.Marshal(s)
		check(t, quoted)
	})
}
