package original

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"
	"unicode/utf8"
)

// formSeeds are bodies on both sides of every path of parseForm: plain, escaped and
// strange names and values, what jsontext refuses and encoding/json reads, and what
// neither reads.
var formSeeds = []string{
	``, ` `, `null`, `[]`, `1`, `"x"`, `true`, `{`, `}`, `{}`, ` { } `, "{}\n", `{} {}`, `{}x`, `{},`,
	`{"from_date":"2025-09-20T10:00:00","account":"a"}`,
	`{"from_date": "2025-09-20T10:00:00" , "account" : "a" }` + "\n\t",
	`{"account":"caf\u00e9 \"q\" \\ /","from\u005fdate":"2025-09-20t10:00:00z"}`,
	`{"account":"\ud83d\ude00","from_date":"\ud800"}`, // a lone surrogate: encoding/json reads it as U+FFFD
	`{"\ud800":1,"account":"a"}`,
	`{"account":123,"fapi_id":null,"cap_member":true,"origin_url":[],"service_url":{}}`,
	`{"from_date":1760868000,"to_date":"1763546400000","permission_granted":-1.5e3,"permission_expires":"2025-09-19"}`,
	`{"edp_data_attachment":{"ib1:provenance":"x","steps":[1,[2,{"a":null}]]},"postcode":"AB1 2CD"}`,
	`{"a":"x","a":"y"}`, // refused earlier (wire.DuplicateName); here whatever encoding/json makes of it
	`{"account":"é"}`, `{"account":"` + "\x01" + `"}`, `{"account":"\x"}`, `{"account":01}`, `{"account":1.}`,
	`{"account":"a",}`, `{,"account":"a"}`, `{"account" "a"}`, `{'account':'a'}`, `{"account":"a"`,
}

// FuzzParseForm checks parseForm against what the original routes read before it:
// encoding/json's map[string]json.RawMessage, then each field with encoding/json. The
// error's kind (syntax or not), each member's text, and what str and time make of every
// member (values and 422 problems) must agree.
func FuzzParseForm(f *testing.F) {
	for _, s := range formSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if !utf8.Valid(body) {
			return // readBody refuses it before (pythonJSONText)
		}
		var want map[string]json.RawMessage
		wantErr := json.Unmarshal(body, &want)
		got, err := parseForm(body)
		if (wantErr != nil || want == nil) != (err != nil) {
			t.Fatalf("%q: error %v, encoding/json's %v (map %v)", body, err, wantErr, want)
		}
		if err != nil {
			var se *json.SyntaxError
			if errors.As(err, &se) != errors.As(wantErr, &se) {
				t.Fatalf("%q: error %v, encoding/json's %v", body, err, wantErr)
			}
			return
		}
		if len(got.fields) != len(want) {
			t.Fatalf("%q: %d members, encoding/json's %d", body, len(got.fields), len(want))
		}
		for name, raw := range want {
			r, ok := got.get(name)
			if !ok || !bytes.Equal(r, raw) {
				t.Fatalf("%q: member %q is %q, encoding/json's %q", body, name, r, raw)
			}
			old := &form{}
			s1, t1, p1 := got.str(name), got.time(name), got.problems
			s2, t2, p2 := old.oldStr(raw, name), old.oldTime(raw, name), old.problems
			if s1 != s2 || !t1.Equal(t2) || fmt.Sprint(p1) != fmt.Sprint(p2) {
				t.Fatalf("%q: member %q reads %q %v %v, before %q %v %v", body, name, s1, t1, p1, s2, t2, p2)
			}
			got.problems = nil
		}
	})
}

// oldStr and oldTime are form.str and form.time as they read a member before parseForm.
func (f *form) oldStr(raw json.RawMessage, name string) string {
	var s string
	if err := json.Unmarshal(raw, &s); err != nil || string(raw) == "null" {
		f.problems = append(f.problems, problem{Type: "string_type", Loc: []any{"body", name}, Msg: "Input should be a valid string", Input: json.RawMessage(raw)})
		return ""
	}
	return s
}

func (f *form) oldTime(raw json.RawMessage, name string) (t time.Time) {
	t, problem := pydanticDateTime(raw)
	if problem != nil {
		problem.Loc = []any{"body", name}
		f.problems = append(f.problems, *problem)
	}
	return t
}

// The members of a body are found by name whatever their order, and a name given with
// escapes is the name it spells.
func TestParseFormNames(t *testing.T) {
	f, err := parseForm([]byte(`{"b":"2","from\u005fdate":"2025-09-20T10:00:00","a":1}`))
	if err != nil {
		t.Fatal(err)
	}
	if raw, ok := f.get("a"); !ok || string(raw) != "1" {
		t.Errorf("a: %q %v", raw, ok)
	}
	if s := f.str("b"); s != "2" {
		t.Errorf("b: %q", s)
	}
	if d := f.time("from_date"); !d.Equal(time.Date(2025, 9, 20, 10, 0, 0, 0, time.UTC)) || f.problems != nil {
		t.Errorf("from_date: %v %v", d, f.problems)
	}
	if _, ok := f.get("c"); ok {
		t.Error("c is not a member")
	}
	if b := f.field("b"); b == nil || !b.plain {
		t.Error("b's text was not read in the one pass")
	}
}
