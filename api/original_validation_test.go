package api_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// The original's models refuse these bodies with one 422 list in which its field
// validators' date-order errors stand at their field's place. Each expected detail is what
// the original answers: its app/models.py validated by pydantic 2 (2.13.4 here; the
// original pins 2.12.2), errors(include_url=False) with "body" before each loc, as FastAPI
// 0.119 collects them, and jsonable_encoder's {} for the ValueError in a validator's ctx.
func TestOriginalValidationIsFastAPIs(t *testing.T) {
	url, _, _, _ := recordServer(t)
	edp := func(change map[string]any, drop string) string {
		var body map[string]any
		if err := json.Unmarshal([]byte(edpRequest), &body); err != nil {
			t.Fatal(err)
		}
		for k, v := range change {
			body[k] = v
		}
		delete(body, drop)
		b, _ := json.Marshal(body)
		return string(b)
	}
	missingAccount := edp(nil, "account")
	capBody := `{"edp_data_attachment": [1], "cap_member_id": "c", "bank_member_id": "b", "cap_account": "a", "cap_permission_granted": "2025-09-20T10:00:00", "cap_permission_expires": "2025-09-20T10:00:00", "grid_intensity_origin": "g", "grid_intensity_license": "l", "postcode": "p", "edp_service_url": "e", "bank_service_url": "bs", "from_date": "2025-09-20T10:00:00", "to_date": "2025-09-19T10:00:00"}`
	for _, c := range []struct {
		name, path, body, want string
	}{
		{"both dates out of order", "/api/v1/sign/edp", edp(map[string]any{"to_date": "2025-09-19T10:00:00", "permission_expires": "2025-09-19T10:00:00"}, ""),
			`[{"type": "value_error", "loc": ["body", "to_date"], "msg": "Value error, to_date must be after from_date", "input": "2025-09-19T10:00:00", "ctx": {"error": {}}}, {"type": "value_error", "loc": ["body", "permission_expires"], "msg": "Value error, permission_expires must be after permission_granted", "input": "2025-09-19T10:00:00", "ctx": {"error": {}}}]`},
		{"to_date equal, account null", "/api/v1/sign/edp", edp(map[string]any{"to_date": "2025-09-20T10:00:00", "account": nil}, ""),
			`[{"type": "value_error", "loc": ["body", "to_date"], "msg": "Value error, to_date must be after from_date", "input": "2025-09-20T10:00:00", "ctx": {"error": {}}}, {"type": "string_type", "loc": ["body", "account"], "msg": "Input should be a valid string", "input": null}]`},
		{"from_date unreadable: no order check", "/api/v1/sign/edp", edp(map[string]any{"from_date": "x", "to_date": "2025-09-01T10:00:00"}, ""),
			`[{"type": "datetime_from_date_parsing", "loc": ["body", "from_date"], "msg": "Input should be a valid datetime or date, input is too short", "input": "x", "ctx": {"error": "input is too short"}}]`},
		{"to_date a date before", "/api/v1/sign/edp", edp(map[string]any{"to_date": "2025-09-19"}, ""),
			`[{"type": "value_error", "loc": ["body", "to_date"], "msg": "Value error, to_date must be after from_date", "input": "2025-09-19", "ctx": {"error": {}}}]`},
		{"a field missing", "/api/v1/sign/edp", missingAccount,
			`[{"type": "missing", "loc": ["body", "account"], "msg": "Field required", "input": ` + missingAccount + `}]`},
		{"CAP", "/api/v1/sign/cap", capBody,
			`[{"type": "dict_type", "loc": ["body", "edp_data_attachment"], "msg": "Input should be a valid dictionary", "input": [1]}, {"type": "value_error", "loc": ["body", "cap_permission_expires"], "msg": "Value error, cap_permission_expires must be after cap_permission_granted", "input": "2025-09-20T10:00:00", "ctx": {"error": {}}}, {"type": "missing", "loc": ["body", "edp_member_id"], "msg": "Field required", "input": ` + capBody + `}, {"type": "value_error", "loc": ["body", "to_date"], "msg": "Value error, to_date must be after from_date", "input": "2025-09-19T10:00:00", "ctx": {"error": {}}}]`},
		{"CAP, a null attachment", "/api/v1/sign/cap", strings.Replace(capBody, `[1]`, `null`, 1),
			`{"type": "dict_type", "loc": ["body", "edp_data_attachment"], "msg": "Input should be a valid dictionary", "input": null}`},
	} {
		status, body := post(t, url+c.path, "application/json", c.body)
		var got struct{ Detail []any }
		if status != 422 || json.Unmarshal(body, &got) != nil {
			t.Errorf("%s: %d %s, want 422", c.name, status, body)
			continue
		}
		var want any
		if err := json.Unmarshal([]byte(c.want), &want); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if first, ok := want.(map[string]any); ok { // only the first problem is compared
			got.Detail, want = got.Detail[:1], []any{first}
		}
		if !reflect.DeepEqual(any(got.Detail), want) {
			t.Errorf("%s:\n got %s\nwant %s", c.name, body, c.want)
		}
	}
}
