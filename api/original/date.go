package original

import (
	"encoding/json"
	"math"
	"math/big"
	"strconv"
	"time"
)

// The original's date-time fields (from_date, to_date, permission_granted, ...) are pydantic
// 2 `datetime` fields, validated in lax mode from what json.loads made of the body (FastAPI
// validates Python objects, not JSON text). pydanticDateTime accepts and refuses what that
// validation does: pydantic-core 2.41 (the original's uv.lock) parsing with speedate 0.17.
// Its rules, with where they come from, are in date_test.go's table; in short:
//
//   - a string: YYYY-MM-DD, a separator T, t, space or _, HH:MM[:SS[(.|,)fraction]], then
//     nothing, Z, z, or a ±HH[:]MM offset (also U+2212 minus) below 24 hours;
//   - else a string holding an integer, or a decimal with a '.', read as a Unix time;
//   - else a string YYYY-MM-DD alone: that date at midnight;
//   - a JSON number: a Unix time; booleans, null, lists and objects are refused.
//
// A Unix time whose magnitude is above 2e10 is in milliseconds, otherwise in seconds. Times
// without an offset are naive in the original; here they are taken as UTC.

// pydanticMSWatershed: above it (in magnitude) a Unix time is in milliseconds.
const pydanticMSWatershed = 20_000_000_000

// The range of speedate's dates as Unix seconds: 0000-01-01 to 9999-12-31T23:59:59. Python's
// datetime then refuses year 0.
const (
	unixYear0    = -62_167_219_200
	unixYear9999 = 253_402_300_799
)

// speedate's error texts (its ParseError documentation, which pydantic puts in its messages).
const (
	errTooShort       = "input is too short"
	errExtra          = "unexpected extra characters at the end of the input"
	errDateTimeSep    = "invalid datetime separator, expected `T`, `t`, `_` or space"
	errDateSep        = "invalid date separator, expected `-`"
	errDateNotExact   = "Timestamp is not an exact date"
	errYear           = "invalid character in year"
	errMonth          = "invalid character in month"
	errDay            = "invalid character in day"
	errTimeSep        = "invalid time separator, expected `:`"
	errHour           = "invalid character in hour"
	errMinute         = "invalid character in minute"
	errSecond         = "invalid character in second"
	errTzSign         = "invalid timezone sign"
	errTzHour         = "invalid timezone hour"
	errTzMinute       = "invalid timezone minute"
	errTzMinuteRange  = "timezone minute value is outside expected range of 0-59"
	errTzRange        = "timezone offset must be less than 24 hours"
	errMonthRange     = "month value is outside expected range of 1-12"
	errDayRange       = "day value is outside expected range"
	errHourRange      = "hour value is outside expected range of 0-23"
	errMinuteRange    = "minute value is outside expected range of 0-59"
	errSecondRange    = "second value is outside expected range of 0-59"
	errFractionNone   = "second fraction digits missing after `.`"
	errDateTooSmall   = "dates before 0000 are not supported as unix timestamps"
	errDateTooLarge   = "dates after 9999 are not supported as unix timestamps"
	errTimeTooLarge   = "numeric times may not exceed 86,399 seconds"
	errPythonYearZero = "year 0 is out of range"
)

type dateErr string

// errCtx is the ctx pydantic gives a parsing problem: speedate's (or Python's) error text.
func errCtx(err dateErr) map[string]any { return map[string]any{"error": string(err)} }

// pydanticDateTime parses the raw JSON value of a datetime field, or returns the 422
// problem pydantic would report (without its loc, which the caller adds).
func pydanticDateTime(raw json.RawMessage) (time.Time, *problem) {
	if len(raw) == 0 {
		return time.Time{}, dateTypeProblem(raw)
	}
	switch raw[0] {
	case '"':
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return time.Time{}, dateTypeProblem(raw)
		}
		return pydanticDateTimeText(s)
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		t, err, isType := pydanticDateTimeNumber(string(raw))
		if isType {
			return time.Time{}, dateTypeProblem(raw)
		}
		if err != "" {
			return time.Time{}, &problem{Type: "datetime_parsing", Msg: "Input should be a valid datetime, " + string(err), Input: raw, Ctx: errCtx(err)}
		}
		return t, nil
	}
	return time.Time{}, dateTypeProblem(raw) // true, false, null, a list or an object
}

func dateTypeProblem(raw json.RawMessage) *problem {
	return &problem{Type: "datetime_type", Msg: "Input should be a valid datetime", Input: raw}
}

// pydanticDateTimeText is pydanticDateTime of a JSON string, given its text.
func pydanticDateTimeText(s string) (time.Time, *problem) {
	t, err := pydanticDateTimeString(s)
	if err == errPythonYearZero {
		// speedate read it; Python's datetime then refused it: no date fallback.
		return time.Time{}, &problem{Type: "datetime_parsing", Msg: "Input should be a valid datetime, " + string(err), Input: s, Ctx: errCtx(err)}
	}
	if err != "" {
		return time.Time{}, &problem{Type: "datetime_from_date_parsing", Msg: "Input should be a valid datetime or date, " + string(err), Input: s, Ctx: errCtx(err)}
	}
	return t, nil
}

// pydanticDateTimeNumber handles a JSON number: json.loads makes an int of an integer text
// and a float of anything else. isType reports a number Python cannot make a float of.
func pydanticDateTimeNumber(text string) (t time.Time, err dateErr, isType bool) {
	isInt := true
	for i := 0; i < len(text); i++ {
		if c := text[i]; c == '.' || c == 'e' || c == 'E' {
			isInt = false
		}
	}
	if isInt {
		if n, e := strconv.ParseInt(text, 10, 64); e == nil {
			t, err = fromUnix(n, 0)
			return t, err, false
		}
		// Beyond int64 pydantic takes the int as a float (an OverflowError beyond float64).
		b, ok := new(big.Float).SetString(text)
		if !ok {
			return time.Time{}, "", true
		}
		f, acc := b.Float64()
		if math.IsInf(f, 0) && acc != big.Exact {
			return time.Time{}, "", true
		}
		t, err = fromUnixFloat(f)
		return t, err, false
	}
	f, e := strconv.ParseFloat(text, 64)
	if e != nil && !math.IsInf(f, 0) {
		return time.Time{}, "", true
	}
	t, err = fromUnixFloat(f) // json.loads reads 1e999 as inf, which is then out of range
	return t, err, false
}

// pydanticDateTimeString: speedate's DateTime::parse_bytes_with_config, then pydantic's
// lax fallback to a date.
func pydanticDateTimeString(s string) (time.Time, dateErr) {
	t, err := rfc3339Lax(s)
	if err == "" || err == errPythonYearZero {
		return t, err
	}
	if n, ok := speedateInt(s); ok {
		if t, e := fromUnix(n, 0); e == "" || e == errPythonYearZero {
			return t, e
		}
	} else if f, ok := speedateFloat(s); ok {
		if t, e := fromUnixFloatString(f); e == "" || e == errPythonYearZero {
			return t, e
		}
	}
	// pydantic (lax): a string that is not a datetime may be a date, at midnight. Its
	// error is the one reported.
	y, mo, d, derr := speedateDate(s)
	if derr == "" && len(s) > 10 {
		derr = errExtra
	}
	if derr != "" {
		if n, ok := speedateInt(s); ok {
			secs, micro, e := watershed(n)
			if e == "" {
				if secs < unixYear0 {
					e = errDateTooSmall
				} else if secs > unixYear9999 {
					e = errDateTooLarge
				} else if micro != 0 || secs%86400 != 0 {
					e = errDateNotExact
				}
			}
			return time.Time{}, e
		}
		return time.Time{}, derr
	}
	if y == 0 {
		return time.Time{}, errPythonYearZero
	}
	return time.Date(y, time.Month(mo), d, 0, 0, 0, 0, time.UTC), ""
}

func digit(s string, i int) (int, bool) {
	if i >= len(s) || s[i] < '0' || s[i] > '9' {
		return 0, false
	}
	return int(s[i] - '0'), true
}

// speedateDate reads YYYY-MM-DD at the start of s.
func speedateDate(s string) (y, m, d int, err dateErr) {
	if len(s) < 10 {
		return 0, 0, 0, errTooShort
	}
	for i := 0; i < 4; i++ {
		c, ok := digit(s, i)
		if !ok {
			return 0, 0, 0, errYear
		}
		y = y*10 + c
	}
	if s[4] != '-' {
		return 0, 0, 0, errDateSep
	}
	m1, ok1 := digit(s, 5)
	m2, ok2 := digit(s, 6)
	if !ok1 || !ok2 {
		return 0, 0, 0, errMonth
	}
	if s[7] != '-' {
		return 0, 0, 0, errDateSep
	}
	d1, ok1 := digit(s, 8)
	d2, ok2 := digit(s, 9)
	if !ok1 || !ok2 {
		return 0, 0, 0, errDay
	}
	m, d = m1*10+m2, d1*10+d2
	var maxDay int
	switch m {
	case 1, 3, 5, 7, 8, 10, 12:
		maxDay = 31
	case 4, 6, 9, 11:
		maxDay = 30
	case 2:
		maxDay = 28
		if y%4 == 0 && (y%100 != 0 || y%400 == 0) {
			maxDay = 29
		}
	default:
		return 0, 0, 0, errMonthRange
	}
	if d < 1 || d > maxDay {
		return 0, 0, 0, errDayRange
	}
	return y, m, d, ""
}

// rfc3339Lax is speedate's DateTime::parse_bytes_rfc3339_with_config: a date, a
// separator, a time of day and an optional offset, each part checked in that order so
// that the first fault is the one pydantic names.
func rfc3339Lax(s string) (time.Time, dateErr) {
	y, mo, d, err := speedateDate(s)
	if err != "" {
		return time.Time{}, err
	}
	if len(s) <= 10 || (s[10] != 'T' && s[10] != 't' && s[10] != ' ' && s[10] != '_') {
		return time.Time{}, errDateTimeSep
	}
	c, p, err := parseClock(s, 11)
	if err != "" {
		return time.Time{}, err
	}
	loc := time.UTC // naive: taken as UTC
	if p < len(s) {
		if loc, p, err = parseOffset(s, p); err != "" {
			return time.Time{}, err
		}
	}
	if p < len(s) {
		return time.Time{}, errExtra
	}
	if y == 0 {
		return time.Time{}, errPythonYearZero
	}
	return time.Date(y, time.Month(mo), d, c.hour, c.minute, c.second, c.nanos, loc), ""
}

// clock is a time of day.
type clock struct{ hour, minute, second, nanos int }

// parseClock reads HH:MM[:SS[.fraction]] at s[p:] and returns where it ended.
func parseClock(s string, p int) (clock, int, dateErr) {
	var c clock
	if len(s)-p < 5 {
		return c, p, errTooShort
	}
	h1, ok1 := digit(s, p)
	h2, ok2 := digit(s, p+1)
	if !ok1 || !ok2 {
		return c, p, errHour
	}
	if s[p+2] != ':' {
		return c, p, errTimeSep
	}
	n1, ok1 := digit(s, p+3)
	n2, ok2 := digit(s, p+4)
	if !ok1 || !ok2 {
		return c, p, errMinute
	}
	c.hour, c.minute = h1*10+h2, n1*10+n2
	if c.hour > 23 {
		return c, p, errHourRange
	}
	if c.minute > 59 {
		return c, p, errMinuteRange
	}
	p += 5
	if p >= len(s) || s[p] != ':' {
		return c, p, ""
	}
	s1, ok1 := digit(s, p+1)
	s2, ok2 := digit(s, p+2)
	if !ok1 || !ok2 {
		return c, p, errSecond
	}
	c.second = s1*10 + s2
	if c.second > 59 {
		return c, p, errSecondRange
	}
	p += 3
	if p < len(s) && (s[p] == '.' || s[p] == ',') {
		var err dateErr
		c.nanos, p, err = parseFraction(s, p+1)
		if err != "" {
			return c, p, err
		}
	}
	return c, p, ""
}

// parseFraction reads the digits of a fraction of a second at s[p:] as nanoseconds.
// Digits beyond microseconds are dropped (pydantic's default "truncate").
func parseFraction(s string, p int) (int, int, dateErr) {
	nanos, n := 0, 0
	for ; p < len(s) && s[p] >= '0' && s[p] <= '9'; p++ {
		if n < 6 {
			nanos = nanos*10 + int(s[p]-'0')
		}
		n++
	}
	if n == 0 {
		return 0, p, errFractionNone
	}
	for ; n < 6; n++ {
		nanos *= 10
	}
	return nanos * 1000, p, ""
}

// parseOffset reads Z, or a sign (+, -, or U+2212 MINUS SIGN) and HH[:]MM, at s[p:] and
// returns the zone and where it ended.
func parseOffset(s string, p int) (*time.Location, int, dateErr) {
	c := s[p]
	p++
	if c == 'Z' || c == 'z' {
		return time.UTC, p, ""
	}
	sign := 1
	switch {
	case c == '+':
	case c == '-':
		sign = -1
	case c == 0xE2 && p+1 < len(s) && s[p] == 0x88 && s[p+1] == 0x92: // U+2212 MINUS SIGN
		sign = -1
		p += 2
	default:
		return nil, p, errTzSign
	}
	t1, ok1 := digit(s, p)
	t2, ok2 := digit(s, p+1)
	if !ok1 || !ok2 {
		return nil, p, errTzHour
	}
	var m1 int
	switch {
	case p+2 < len(s) && s[p+2] == ':':
		p += 3
		var ok bool
		if m1, ok = digit(s, p); !ok {
			return nil, p, errTzMinute
		}
	case p+2 < len(s) && s[p+2] >= '0' && s[p+2] <= '9':
		p += 2
		m1 = int(s[p] - '0')
	default:
		return nil, p, errTzMinute
	}
	m2, ok := digit(s, p+1)
	if !ok {
		return nil, p, errTzMinute
	}
	minutes := m1*10 + m2
	if minutes >= 60 {
		return nil, p, errTzMinuteRange
	}
	offset := sign * ((t1*10+t2)*3600 + minutes*60)
	if offset >= 24*3600 || offset <= -24*3600 {
		return nil, p, errTzRange
	}
	return time.FixedZone("", offset), p + 2, ""
}

// speedateInt: an optional sign and ASCII digits, within int64.
func speedateInt(s string) (int64, bool) {
	digits := s
	if len(s) > 1 && (s[0] == '-' || s[0] == '+') {
		digits = s[1:]
	}
	if digits == "" {
		return 0, false
	}
	for i := 0; i < len(digits); i++ {
		if digits[i] < '0' || digits[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}

// speedateFloat: a string that speedate reads as a float: the integer reading stopped at a
// '.', and the whole is a decimal float literal (digits around the '.', at least one, and
// an optional exponent).
func speedateFloat(s string) (float64, bool) {
	i := 0
	if i < len(s) && (s[i] == '-' || s[i] == '+') {
		i++
	}
	mantissa := 0
	for ; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
		mantissa++
	}
	if i >= len(s) || s[i] != '.' {
		return 0, false
	}
	for i++; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
		mantissa++
	}
	if mantissa == 0 {
		return 0, false
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		exp := 0
		for ; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
			exp++
		}
		if exp == 0 {
			return 0, false
		}
	}
	if i != len(s) {
		return 0, false
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil && !math.IsInf(f, 0) {
		return 0, false
	}
	return f, true
}

// watershed splits a Unix time in seconds or milliseconds (by magnitude) into seconds and
// microseconds (speedate's timestamp_watershed).
func watershed(ts int64) (int64, int64, dateErr) {
	if ts == math.MinInt64 {
		return 0, 0, errDateTooSmall
	}
	if ts <= pydanticMSWatershed && ts >= -pydanticMSWatershed {
		return ts, 0, ""
	}
	secs, micros := ts/1000, (ts%1000)*1000
	if micros < 0 {
		secs--
		micros += 1_000_000
	}
	return secs, micros, ""
}

// fromUnix is speedate's DateTime::from_timestamp_with_config (unit inferred, UTC).
func fromUnix(ts int64, micro uint32) (time.Time, dateErr) {
	secs, extra, err := watershed(ts)
	if err != "" {
		return time.Time{}, err
	}
	total := int64(micro) + extra
	if total > math.MaxUint32 {
		return time.Time{}, errTimeTooLarge
	}
	secs += total / 1_000_000
	total %= 1_000_000
	if secs < unixYear0 {
		return time.Time{}, errDateTooSmall
	}
	if secs > unixYear9999 {
		return time.Time{}, errDateTooLarge
	}
	t := time.Unix(secs, total*1000).UTC()
	if t.Year() == 0 {
		return time.Time{}, errPythonYearZero
	}
	return t, ""
}

// rustI64 is Rust's `f as i64`: saturating, NaN to 0.
func rustI64(f float64) int64 {
	switch {
	case f != f:
		return 0
	case f >= math.MaxInt64:
		return math.MaxInt64
	case f <= math.MinInt64:
		return math.MinInt64
	}
	return int64(f)
}

// rustU32 is Rust's `f as u32`: saturating, NaN to 0.
func rustU32(f float64) uint32 {
	switch {
	case f != f || f <= 0:
		return 0
	case f >= math.MaxUint32:
		return math.MaxUint32
	}
	return uint32(f)
}

// fromUnixFloat is speedate's DateTime::from_float_with_config, which pydantic uses for a
// float: the fraction's magnitude is taken as microseconds (seconds) or milliseconds, added
// to the floor (so -1.25 s is read as -2 s + 0.25 s, as pydantic does).
func fromUnixFloat(f float64) (time.Time, dateErr) {
	_, frac := math.Modf(f)
	scale := 1_000_000.0
	if math.Abs(f) > pydanticMSWatershed {
		scale = 1_000
	}
	return fromUnix(rustI64(math.Floor(f)), rustU32(math.Round(math.Abs(frac)*scale)))
}

// fromUnixFloatString is the float branch of speedate's DateTime::parse_bytes_with_config:
// milliseconds are scaled to seconds first, and the result goes through the watershed again.
func fromUnixFloatString(f float64) (time.Time, dateErr) {
	if math.Abs(f) > pydanticMSWatershed {
		f /= 1000
	}
	secs := math.Floor(f)
	return fromUnix(rustI64(secs), rustU32(math.Round((f-secs)*1_000_000)))
}
