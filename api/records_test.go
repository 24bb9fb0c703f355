package api_test

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ib1/provenanced/api"
	"github.com/ib1/provenanced/backends"
	pembackend "github.com/ib1/provenanced/backends/pem"
	"github.com/ib1/provenanced/conf"
	"github.com/ib1/provenanced/provenance"
	"github.com/ib1/provenanced/testenv"
)

const (
	vectors   = "../provenance/testdata/vectors"
	sandboxTF = "https://registry.core.sandbox.trust.ib1.org/trust-framework"
	scheme    = "https://registry.core.sandbox.trust.ib1.org/scheme/perseus"
)

// vectorKey opens a member key of the reference vectors (copied to a private file, as
// the PEM backend demands).
func vectorKey(t testing.TB, serial string) *backends.Key {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(vectors, "pki", serial+"-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "key.pem")
	os.WriteFile(keyFile, data, 0o600)
	bundle, _ := filepath.Abs(filepath.Join(vectors, "pki", serial+"-bundle.pem"))
	k, err := backends.Open(context.Background(), conf.NewKey("m"+serial, "pem", bundle, "test", &pembackend.Options{PrivateKey: keyFile}), backends.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.Close() })
	return k
}

func vectorVerifier(t testing.TB) *provenance.Verifier {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(vectors, "pki", "root-ca-cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots, err := provenance.ParseRootsPEM(data)
	if err != nil {
		t.Fatal(err)
	}
	v, err := provenance.NewVerifier(roots, sandboxTF)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// counts reads provenanced_records_total{operation, outcome}.
type counts func(op, outcome string) float64

// recordServer serves the API with the EDP (123456) key signing records and the CAP
// (98765) key beside it.
func recordServer(t *testing.T) (string, *backends.Key, *backends.Key, counts) {
	t.Helper()
	edp, capKey := vectorKey(t, "123456"), vectorKey(t, "98765")
	reg := prometheus.NewRegistry()
	srv, _ := newServer(t, api.Options{
		Keys:            []*backends.Key{edp, capKey},
		MaxRequestBytes: 1 << 20,
		Metrics:         api.NewMetrics(reg),
		Provenance:      &api.Provenance{Verifier: vectorVerifier(t), Key: edp, Scheme: scheme},
	})
	return srv.URL, edp, capKey, func(op, outcome string) float64 { return recordCount(t, reg, op, outcome) }
}

func decodeSteps(t *testing.T, body []byte) []map[string]any {
	t.Helper()
	var out struct{ Steps []map[string]any }
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatalf("%s: %v", body, err)
	}
	return out.Steps
}

func TestSignAndVerifyRecords(t *testing.T) {
	url, _, _, c := recordServer(t)
	status, rec := post(t, url+"/v1/records", "application/json", `{"steps":[
		{"type":"origin","scheme":"`+scheme+`","z":1,"a":{"y":2,"b":"Zürich <&>"},"n":9007199254740993},
		{"type":"transfer","timestamp":"2025-01-02T03:04:05Z","of":"x"}]}`)
	if status != 200 {
		t.Fatalf("%d %s", status, rec)
	}
	status, body := post(t, url+"/v1/records/verify", "application/json", `{"record":`+string(rec)+`}`)
	if status != 200 {
		t.Fatalf("verify: %d %s", status, body)
	}
	// Member order, exact numbers and characters survive the round trip.
	if !strings.Contains(string(body), `"type":"origin","scheme":"`+scheme+`","z":1,"a":{"y":2,"b":"Zürich <&>"},"n":9007199254740993`) &&
		!strings.Contains(string(body), `"z":1,"a":{"y":2,"b":"Z\u00fcrich \u003c\u0026\u003e"},"n":9007199254740993`) {
		t.Errorf("decoded steps lost order, numbers or characters: %s", body)
	}
	steps := decodeSteps(t, body)
	if len(steps) != 2 || steps[1]["timestamp"] != "2025-01-02T03:04:05Z" {
		t.Fatalf("steps: %s", body)
	}
	signed := steps[0]["_signature"].(map[string]any)["signed"].(map[string]any)
	if signed["member"] != "https://member.core.sandbox.trust.ib1.org/m/2876152" {
		t.Errorf("signer: %v", signed)
	}

	// The CAP appends to it with its own key; the EDP container is nested and verified.
	status, capRec := post(t, url+"/v1/records", "application/json", `{"record":`+string(rec)+`,"key":"m98765","steps":[{"type":"receipt","transfer":"`+steps[1]["id"].(string)+`"}]}`)
	if status != 200 {
		t.Fatalf("append: %d %s", status, capRec)
	}
	status, body = post(t, url+"/v1/records/verify", "application/json", `{"record":`+string(capRec)+`,"find":{"type":"receipt"},"filter":{"_signature":{"signed":{"name":"Smart Meter Reading Co"}}}}`)
	if status != 200 {
		t.Fatalf("verify: %d %s", status, body)
	}
	var out struct {
		Steps   []map[string]any
		Found   map[string]any
		Matches []map[string]any
	}
	json.Unmarshal(body, &out)
	if len(out.Steps) != 3 || out.Found["type"] != "receipt" || len(out.Matches) != 2 {
		t.Errorf("verify with find/filter: %s", body)
	}
	included := out.Found["_signature"].(map[string]any)["includedBy"].([]any)
	if len(included) != 0 {
		t.Errorf("the CAP's own step is included by %v", included)
	}
	nested := out.Steps[0]["_signature"].(map[string]any)["includedBy"].([]any)
	if len(nested) != 1 || nested[0].(map[string]any)["name"] != "Carbon Accounting Provider" {
		t.Errorf("the EDP's step should be included by the CAP: %v", nested)
	}
	status, dot := post(t, url+"/v1/records/graph", "application/json", `{"record":`+string(capRec)+`}`)
	if status != 200 || !strings.Contains(string(dot), "digraph") || !strings.Contains(string(dot), "diamond") {
		t.Errorf("graph: %d %s", status, dot)
	}
	if c("sign", "ok") != 2 || c("verify", "ok") < 4 {
		t.Errorf("records signed %v, verified %v", c("sign", "ok"), c("verify", "ok"))
	}
}

func TestVerifyVectors(t *testing.T) {
	url, _, _, _ := recordServer(t)
	var manifest struct {
		Vectors []struct {
			File     string `json:"file"`
			Expected string `json:"expected"`
			Check    string `json:"check"`
			Decoded  string `json:"decoded"`
		} `json:"vectors"`
	}
	data, err := os.ReadFile(filepath.Join(vectors, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &manifest); err != nil {
		t.Fatal(err)
	}
	if len(manifest.Vectors) < 20 {
		t.Fatalf("manifest has %d vectors", len(manifest.Vectors))
	}
	for _, v := range manifest.Vectors {
		rec, err := os.ReadFile(filepath.Join(vectors, v.File))
		if err != nil {
			t.Fatal(err)
		}
		status, body := post(t, url+"/v1/records/verify", "application/json", `{"record":`+string(rec)+`}`)
		if v.Expected == "valid" {
			if status != 200 {
				t.Errorf("%s: %d %s", v.File, status, body)
				continue
			}
			want, _ := os.ReadFile(filepath.Join(vectors, v.Decoded))
			var got struct{ Steps json.RawMessage }
			json.Unmarshal(body, &got)
			if !jsonEqual(t, got.Steps, want) {
				t.Errorf("%s: decoded steps differ from %s", v.File, v.Decoded)
			}
			continue
		}
		if status != 400 || !strings.Contains(string(body), v.Check) {
			t.Errorf("%s: %d %s, want 400 naming %s", v.File, status, body, v.Check)
		}
	}
}

func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	va, err := provenance.ParseJSON(a, provenance.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	vb, err := provenance.ParseJSON(b, provenance.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	return provenance.JSONEqual(va, vb)
}

func TestRecordBadInput(t *testing.T) {
	url, _, _, _ := recordServer(t)
	edp, _ := os.ReadFile(filepath.Join(vectors, "records/edp.json"))
	tampered, _ := os.ReadFile(filepath.Join(vectors, "invalid/signature-one-char.json"))
	for _, tc := range []struct {
		path, body, want string
		status           int
	}{
		{"/v1/records", `{"steps":[]}`, "at least one step", 400},
		{"/v1/records", `{"steps":[{"id":"x","type":"origin"}]}`, "steps[0]", 400},
		{"/v1/records", `{"steps":[{"type":"origin","_private":1}]}`, "underscore", 400},
		{"/v1/records", `{"steps":[{"scheme":"x"}]}`, "type", 400},
		{"/v1/records", `{"steps":[{"type":"a","type":"b"}]}`, "steps[0]", 400},
		{"/v1/records", `{"steps":["origin"]}`, "steps[0]", 400},
		{"/v1/records", `{"record":` + string(tampered) + `,"steps":[{"type":"receipt"}]}`, "signature", 400},
		{"/v1/records", `{"steps":[{"type":"origin"}],"key":"nope"}`, "no key named", 404},
		{"/v1/records", `{"stepz":[]}`, `unknown field \"stepz\"`, 400},
		{"/v1/records", `{"steps":[{"type":"t","n":1e999}]}`, "would read it as infinity", 400},
		{"/v1/records", `{"steps":[{"type":"t","n":1` + strings.Repeat("0", 4300) + `}]}`, "an integer of 4301 digits", 400},
		{"/v1/records/verify", `{"record":` + string(tampered) + `}`, "signature", 400},
		{"/v1/records/verify", `{"record":{"ib1:provenance":5}}`, "trust-framework", 400},
		{"/v1/records/verify", `{"record":{"ib1:provenance":"` + sandboxTF + `","origins":[],"steps":"x"}}`, "container-shape", 400},
		{"/v1/records/verify", `{}`, "record: required", 400},
		{"/v1/records/verify", `{"record":` + string(edp) + `,"find":{"type":"nothing"}}`, "find:", 400},
		{"/v1/records/verify", `{"record":` + string(edp) + `,"framework":"https://registry.core.trust.ib1.org/trust-framework"}`, "trust-framework", 400},
		{"/v1/records/graph", `{"record":` + string(tampered) + `}`, "signature", 400},
	} {
		status, body := post(t, url+tc.path, "application/json", tc.body)
		if status != tc.status || !strings.Contains(string(body), tc.want) {
			t.Errorf("%s %.60s: %d %s, want %d mentioning %q", tc.path, tc.body, status, body, tc.status, tc.want)
		}
	}
}

func TestRecordsNotConfigured(t *testing.T) {
	srv, _ := newServer(t, api.Options{Provenance: &api.Provenance{NotConfigured: "provenance.root_ca is not set in X"}})
	for _, path := range []string{"/v1/records", "/v1/records/verify", "/v1/records/graph"} {
		status, body := post(t, srv.URL+path, "application/json", `{}`)
		if status != 503 || !strings.Contains(string(body), "root_ca is not set") {
			t.Errorf("%s: %d %s", path, status, body)
		}
	}
	for _, path := range []string{"/api/v1/sign/edp", "/api/v1/decode"} {
		status, body := post(t, srv.URL+path, "application/json", `{}`)
		if status != 503 || !strings.Contains(string(body), `"detail"`) {
			t.Errorf("%s: %d %s", path, status, body)
		}
	}
}

// The original service's routes, with the payloads of its own test client.
const edpRequest = `{
	"from_date": "2025-09-20T10:00:00",
	"to_date": "2025-10-19T10:00:00",
	"permission_granted": "2025-09-19T10:00:00",
	"permission_expires": "2025-11-19T10:00:00",
	"service_url": "https://api.example.com",
	"account": "test-account-123",
	"fapi_id": "fapi-transaction-456",
	"cap_member": "cap-member-789",
	"origin_url": "https://www.smartdcc.co.uk/",
	"origin_license_url": "https://smartenergycodecompany.co.uk/documents/sec/consolidated-sec/"
}`

func capRequest(attachment string, edpMember string) string {
	return `{
	"edp_data_attachment": ` + attachment + `,
	"cap_member_id": "cap-member-789",
	"bank_member_id": "bank-member-321",
	"cap_account": "cap-account-654",
	"cap_permission_granted": "2025-09-19T11:00:00+01:00",
	"cap_permission_expires": "2026-09-19T11:00:00Z",
	"grid_intensity_origin": "https://api.carbonintensity.org.uk/",
	"grid_intensity_license": "https://creativecommons.org/licenses/by/4.0/",
	"postcode": "CF99",
	"edp_service_url": "https://api.example.com",
	"edp_member_id": "` + edpMember + `",
	"bank_service_url": "https://bank.example.com",
	"from_date": "2025-09-20T10:00:00",
	"to_date": "2025-10-19T10:00:00"
}`
}

func TestOriginalServiceFlow(t *testing.T) {
	url, _, _, _ := recordServer(t)
	status, edpRec := post(t, url+"/api/v1/sign/edp", "application/json", edpRequest)
	if status != 200 {
		t.Fatalf("edp: %d %s", status, edpRec)
	}
	status, decoded := post(t, url+"/api/v1/decode", "application/json", string(edpRec))
	if status != 200 {
		t.Fatalf("decode: %d %s", status, decoded)
	}
	var steps []map[string]any
	json.Unmarshal(decoded, &steps)
	if len(steps) != 3 {
		t.Fatalf("edp steps: %s", decoded)
	}
	perm, origin, transfer := steps[0], steps[1], steps[2]
	if perm["type"] != "permission" || perm["timestamp"] != "2025-09-19T10:00:00Z" || perm["expires"] != "2025-11-19T10:00:00Z" || perm["account"] != "test-account-123" {
		t.Errorf("permission: %v", perm)
	}
	if origin["type"] != "origin" || origin["permissions"].([]any)[0] != perm["id"] || origin["originLicence"] != "https://smartenergycodecompany.co.uk/documents/sec/consolidated-sec/" {
		t.Errorf("origin: %v", origin)
	}
	period := origin["perseus:scheme"].(map[string]any)["meteringPeriod"].(map[string]any)
	if period["from"] != "2025-09-20T00:00Z" || period["to"] != "2025-10-19T00:00Z" {
		t.Errorf("metering period: %v", period)
	}
	if transfer["of"] != origin["id"] || transfer["to"] != "cap-member-789" || transfer["transaction"] != "fapi-transaction-456" || transfer["service"] != "https://api.example.com" {
		t.Errorf("transfer: %v", transfer)
	}

	status, capRec := post(t, url+"/api/v1/sign/cap", "application/json", capRequest(string(edpRec), "https://member.core.sandbox.trust.ib1.org/m/2876152"))
	if status != 200 {
		t.Fatalf("cap: %d %s", status, capRec)
	}
	status, decoded = post(t, url+"/api/v1/decode", "application/json", string(capRec))
	if status != 200 {
		t.Fatalf("decode cap: %d %s", status, decoded)
	}
	steps = nil
	json.Unmarshal(decoded, &steps)
	var types []string
	for _, s := range steps {
		types = append(types, s["type"].(string))
	}
	if strings.Join(types, ",") != "permission,origin,transfer,receipt,permission,origin,process,transfer" {
		t.Fatalf("cap steps: %v", types)
	}
	receipt, capPerm, grid, process, toBank := steps[3], steps[4], steps[5], steps[6], steps[7]
	if receipt["transfer"] != transfer["id"] || capPerm["timestamp"] != "2025-09-19T10:00:00Z" {
		t.Errorf("receipt %v, permission timestamp %v (want the UTC of 11:00+01:00)", receipt, capPerm["timestamp"])
	}
	if capPerm["expires"] != "2026-09-19T11:00:00Z" {
		t.Errorf("CAP permission expires %v, want 2026-09-19T11:00:00Z (YYYY-MM-DDTHH:MM:SSZ)", capPerm["expires"])
	}
	inputs := process["inputs"].([]any)
	if inputs[0] != receipt["id"] || inputs[1] != grid["id"] || toBank["of"] != process["id"] || toBank["to"] != "bank-member-321" || toBank["path"] != "/emissions" {
		t.Errorf("process %v, transfer %v", process, toBank)
	}
	if grid["originLicense"] != "https://creativecommons.org/licenses/by/4.0/" || capPerm["allows"].(map[string]any)["licenses"] == nil {
		t.Errorf("the original's spellings were not kept: %v %v", grid, capPerm)
	}

	// The attachment may also come as a string holding the record.
	quoted, _ := json.Marshal(string(edpRec))
	if status, body := post(t, url+"/api/v1/sign/cap", "application/json", capRequest(string(quoted), "https://member.core.sandbox.trust.ib1.org/m/2876152")); status != 200 {
		t.Errorf("string attachment: %d %s", status, body)
	}
}

func TestOriginalServiceErrors(t *testing.T) {
	url, _, _, _ := recordServer(t)
	status, edpRec := post(t, url+"/api/v1/sign/edp", "application/json", edpRequest)
	if status != 200 {
		t.Fatal(status)
	}
	tampered := strings.Replace(string(edpRec), `"origins":[`, `"origins":["x",`, 1)
	for _, tc := range []struct {
		path, body string
		status     int
		want       string
	}{
		{"/api/v1/sign/edp", `{}`, 422, `"loc":["body","from_date"]`},
		{"/api/v1/sign/edp", `not json`, 422, "json_invalid"},
		{"/api/v1/sign/edp", `[]`, 422, "model_attributes_type"},
		{"/api/v1/sign/edp", strings.Replace(edpRequest, `"test-account-123"`, `123`, 1), 422, `"string_type"`},
		{"/api/v1/sign/edp", strings.Replace(edpRequest, `"test-account-123"`, `null`, 1), 422, `"string_type"`},
		{"/api/v1/sign/edp", strings.Replace(edpRequest, `"2025-09-20T10:00:00"`, `"20/09/2025"`, 1), 422, `"loc":["body","from_date"]`},
		{"/api/v1/sign/edp", strings.Replace(edpRequest, `"2025-10-19T10:00:00"`, `"2025-09-01T10:00:00"`, 1), 422, `"msg":"Value error, to_date must be after from_date"`},
		{"/api/v1/sign/edp", strings.Replace(edpRequest, `"2025-11-19T10:00:00"`, `"2025-09-01T10:00:00"`, 1), 422, `"msg":"Value error, permission_expires must be after permission_granted"`},
		{"/api/v1/sign/cap", capRequest(string(edpRec), "https://member.example/other"), 400, "no transfer step"},
		{"/api/v1/sign/cap", capRequest(tampered, "https://member.core.sandbox.trust.ib1.org/m/2876152"), 400, "origins"},
		{"/api/v1/sign/cap", `{"edp_data_attachment":{}}`, 422, `"loc":["body","cap_member_id"]`},
		{"/api/v1/decode", tampered, 400, "origins"},
		{"/api/v1/decode", `{`, 422, "json_invalid"},
	} {
		status, body := post(t, url+tc.path, "application/json", tc.body)
		if status != tc.status || !strings.Contains(string(body), tc.want) || !strings.Contains(string(body), `"detail"`) {
			t.Errorf("%s %.50q: %d %s, want %d mentioning %s", tc.path, tc.body, status, body, tc.status, tc.want)
		}
	}
}

// The original's clients may send any date-time its pydantic models accept (the full table
// is in seeddate_test.go): offsets without a colon, lower-case t and z, Unix times as
// numbers and as numeric strings. Times are written in UTC, whole seconds.
func TestOriginalServiceDateInputs(t *testing.T) {
	url, _, _, _ := recordServer(t)
	body := strings.NewReplacer(
		`"2025-09-20T10:00:00"`, `"2025-09-20t10:00:00z"`,
		`"2025-10-19T10:00:00"`, `1760868000`,
		`"2025-09-19T10:00:00"`, `"2025-09-19T11:00:00+0100"`,
		`"2025-11-19T10:00:00"`, `"1763546400000"`,
	).Replace(edpRequest)
	status, rec := post(t, url+"/api/v1/sign/edp", "application/json", body)
	if status != 200 {
		t.Fatalf("%d %s", status, rec)
	}
	status, decoded := post(t, url+"/api/v1/decode", "application/json", string(rec))
	if status != 200 {
		t.Fatalf("decode: %d %s", status, decoded)
	}
	var steps []map[string]any
	json.Unmarshal(decoded, &steps)
	perm, transfer := steps[0], steps[2]
	if perm["timestamp"] != "2025-09-19T10:00:00Z" || perm["expires"] != "2025-11-19T10:00:00Z" {
		t.Errorf("permission times: %v %v", perm["timestamp"], perm["expires"])
	}
	params := transfer["parameters"].(map[string]any)
	if params["from"] != "2025-09-20T00:00Z" || params["to"] != "2025-10-19T00:00Z" {
		t.Errorf("metering period: %v", params)
	}
	if _, err := testenv.IB1Check(rec, filepath.Join(vectors, "pki", "root-ca-cert.pem"), sandboxTF); err != nil {
		t.Errorf("the record does not verify with ib1check.py: %v", err)
	}
	for _, tc := range []struct{ from, to, loc string }{
		{`"2025-09-19T10:00:00"`, `"2025-09-19T10:00:00+24:00"`, "permission_granted"},
		{`"2025-09-20T10:00:00"`, `true`, "from_date"},
		{`"2025-09-20T10:00:00"`, `null`, "from_date"},
		{`"2025-10-19T10:00:00"`, `"1e9"`, "to_date"},
	} {
		status, out := post(t, url+"/api/v1/sign/edp", "application/json", strings.Replace(edpRequest, tc.from, tc.to, 1))
		if status != 422 || !strings.Contains(string(out), `"loc":["body","`+tc.loc+`"]`) || !strings.Contains(string(out), "Input should be a valid datetime") {
			t.Errorf("%s = %s: %d %s", tc.loc, tc.to, status, out)
		}
	}
}

// The original's routes, given the inputs the vectors show and the vectors' signing time,
// write the records the original wrote (edp.json, cap.json): decoded, they equal
// edp.decoded.json and cap.decoded.json but for the step ids, which are random.
func TestOriginalRoutesMatchTheVectors(t *testing.T) {
	signedAt := time.Date(2026, 11, 27, 15, 33, 4, 0, time.UTC)
	server := func(serial string) string {
		k := vectorKey(t, serial)
		srv, _ := newServer(t, api.Options{
			Keys:            []*backends.Key{k},
			MaxRequestBytes: 1 << 20,
			Provenance:      &api.Provenance{Verifier: vectorVerifier(t), Key: k, Scheme: scheme, Now: func() time.Time { return signedAt }},
		})
		return srv.URL
	}
	compare := func(name string, rec []byte, url string) {
		t.Helper()
		status, decoded := post(t, url+"/api/v1/decode", "application/json", string(rec))
		if status != 200 {
			t.Fatalf("%s: decode: %d %s", name, status, decoded)
		}
		want, err := os.ReadFile(filepath.Join(vectors, "records", name+".decoded.json"))
		if err != nil {
			t.Fatal(err)
		}
		// Map the vector's ids to ours, step by step (the steps are in record order).
		var got, w []map[string]any
		json.Unmarshal(decoded, &got)
		json.Unmarshal(want, &w)
		if len(got) != len(w) {
			t.Fatalf("%s: %d steps, want %d", name, len(got), len(w))
		}
		text := string(want)
		for i := range w {
			text = strings.ReplaceAll(text, `"`+w[i]["id"].(string)+`"`, `"`+got[i]["id"].(string)+`"`)
		}
		if !jsonEqual(t, decoded, []byte(text)) {
			t.Errorf("%s: decoded record differs from %s.decoded.json (ids aside):\n%s\nwant\n%s", name, name, decoded, text)
		}
	}

	edpURL := server("123456")
	status, edpRec := post(t, edpURL+"/api/v1/sign/edp", "application/json", `{
		"from_date": "2025-09-01T10:00:00", "to_date": "2025-10-01T10:00:00",
		"permission_granted": "2025-08-28T09:15:42Z", "permission_expires": "2026-08-28T09:15:42Z",
		"service_url": "https://api.smartmeterreading.example.com/meter-readings/0",
		"account": "/yl4Y/aV6b80fo5cnmuDDByfuEA=", "fapi_id": "4f0b9c2e-5d7a-4e61-9b3c-1a2d3e4f5a6b",
		"cap_member": "https://member.core.sandbox.trust.ib1.org/m/81524",
		"origin_url": "https://www.smartdcc.co.uk/",
		"origin_license_url": "https://smartenergycodecompany.co.uk/documents/sec/consolidated-sec/"}`)
	if status != 200 {
		t.Fatalf("sign/edp: %d %s", status, edpRec)
	}
	compare("edp", edpRec, edpURL)

	// The CAP signs on the vector's own EDP record, as the original did.
	capURL := server("98765")
	attachment, err := os.ReadFile(filepath.Join(vectors, "records", "edp.json"))
	if err != nil {
		t.Fatal(err)
	}
	status, capRec := post(t, capURL+"/api/v1/sign/cap", "application/json", `{
		"edp_data_attachment": `+string(attachment)+`,
		"cap_member_id": "https://member.core.sandbox.trust.ib1.org/m/81524",
		"bank_member_id": "https://member.core.sandbox.trust.ib1.org/m/71212388",
		"cap_account": "dbd16978-a0a642d9aa2d95318b50e605",
		"cap_permission_granted": "2025-09-02T14:03:05Z", "cap_permission_expires": "2026-09-02T14:03:05Z",
		"grid_intensity_origin": "https://api.carbonintensity.org.uk/",
		"grid_intensity_license": "https://creativecommons.org/licenses/by/4.0/",
		"postcode": "CF99",
		"edp_service_url": "https://api.smartmeterreading.example.com/meter-readings/0",
		"edp_member_id": "https://member.core.sandbox.trust.ib1.org/m/2876152",
		"bank_service_url": "https://api.emissions4u.example.com/emission-report/23",
		"from_date": "2025-09-01", "to_date": "2025-10-01"}`)
	if status != 200 {
		t.Fatalf("sign/cap: %d %s", status, capRec)
	}
	compare("cap", capRec, capURL)
}

// encodings of a JSON body, as a client of the original might send them.
func encodings(body string) map[string][]byte {
	u16 := func(order binary.AppendByteOrder, bom bool) []byte {
		var out []byte
		if bom {
			out = order.AppendUint16(out, 0xFEFF)
		}
		for _, u := range utf16.Encode([]rune(body)) {
			out = order.AppendUint16(out, u)
		}
		return out
	}
	u32 := func(order binary.AppendByteOrder, bom bool) []byte {
		var out []byte
		if bom {
			out = order.AppendUint32(out, 0xFEFF)
		}
		for _, r := range body {
			out = order.AppendUint32(out, uint32(r))
		}
		return out
	}
	return map[string][]byte{
		"utf-8":             []byte(body),
		"utf-8 BOM":         append([]byte("\ufeff"), body...),
		"utf-8 two BOMs":    append([]byte("\ufeff\ufeff"), body...),
		"utf-16le BOM":      u16(binary.LittleEndian, true),
		"utf-16be BOM":      u16(binary.BigEndian, true),
		"utf-16le":          u16(binary.LittleEndian, false),
		"utf-16be":          u16(binary.BigEndian, false),
		"utf-32le BOM":      u32(binary.LittleEndian, true),
		"utf-32be":          u32(binary.BigEndian, false),
		"utf-16le odd byte": append(u16(binary.LittleEndian, true), 'x'),
		"invalid utf-8":     append([]byte(body[:len(body)-1]), 0xFF, '}'),
	}
}

// The original's routes read a body as json.loads does (FastAPI): a UTF-8 byte order mark
// and UTF-16/32 bodies are accepted. Python itself is the oracle: for each encoding, the
// daemon accepts what json.loads accepts, answers 400 "There was an error parsing the body"
// where Python cannot decode the bytes (as FastAPI does), and 422 where the text is not
// JSON. The /v1 routes refuse a byte order mark with a message that says so.
func TestOriginalRoutesReadBodiesAsPythonDoes(t *testing.T) {
	py, err := testenv.Python()
	if err != nil {
		t.Fatal(err)
	}
	// One Python run judges every body (files 0, 1, ... in a directory).
	dir := t.TempDir()
	var bodies [][]byte
	oracle := func() []string {
		for i, b := range bodies {
			os.WriteFile(filepath.Join(dir, strconv.Itoa(i)), b, 0o600)
		}
		out, err := exec.Command(py, "-c", `import json, os, sys
for i in range(int(sys.argv[2])):
    try:
        json.loads(open(os.path.join(sys.argv[1], str(i)), "rb").read())
        print("ok")
    except UnicodeDecodeError:
        print("decode")
    except json.JSONDecodeError:
        print("json")`, dir, strconv.Itoa(len(bodies))).Output()
		if err != nil {
			t.Fatal(err)
		}
		return strings.Fields(string(out))
	}
	url, _, _, _ := recordServer(t)
	status, edpRec := post(t, url+"/api/v1/sign/edp", "application/json", edpRequest)
	if status != 200 {
		t.Fatal(status)
	}
	type request struct{ route, name string }
	var requests []request
	for route, body := range map[string]string{
		"/api/v1/decode":   string(edpRec),
		"/api/v1/sign/edp": edpRequest,
		"/api/v1/sign/cap": capRequest(string(edpRec), "https://member.core.sandbox.trust.ib1.org/m/2876152"),
	} {
		for name, data := range encodings(body) {
			requests = append(requests, request{route, name})
			bodies = append(bodies, data)
		}
	}
	verdicts := oracle()
	if len(verdicts) != len(bodies) {
		t.Fatalf("Python judged %d bodies of %d", len(verdicts), len(bodies))
	}
	for i, data := range bodies {
		route, name, want := requests[i].route, requests[i].name, verdicts[i]
		status, out := post(t, url+route, "application/json", string(data))
		switch {
		case want == "ok" && status == 200,
			want == "decode" && status == 400 && strings.Contains(string(out), "There was an error parsing the body"),
			want == "json" && status == 422 && strings.Contains(string(out), "json_invalid"):
		default:
			t.Errorf("%s, %s: %d %.200s; Python's json.loads: %s", route, name, status, out, want)
		}
	}
	// A repeated name is refused however the body is encoded.
	for name, data := range encodings(`{"a":1,"a":2}`) {
		if name == "invalid utf-8" || name == "utf-16le odd byte" || name == "utf-8 two BOMs" {
			continue
		}
		status, out := post(t, url+"/api/v1/sign/edp", "application/json", string(data))
		if status != 400 || !strings.Contains(string(out), "appears twice") {
			t.Errorf("a repeated name in %s: %d %s", name, status, out)
		}
	}
	for path, body := range map[string]string{
		"/v1/records/verify":    `{"record":` + string(edpRec) + `}`,
		"/v1/keys/m123456/sign": `{"digest":"` + b64(make([]byte, 32)) + `"}`,
	} {
		status, out := post(t, url+path, "application/json", "\ufeff"+body)
		if status != 400 || !strings.Contains(string(out), "byte order mark") {
			t.Errorf("%s with a BOM: %d %s", path, status, out)
		}
		if status, out := post(t, url+path, "application/json", body); status != 200 {
			t.Errorf("%s without: %d %s", path, status, out)
		}
	}
}

// Every POST route takes application/json only (a web page can send text/plain, forms
// and multipart cross-site without a preflight) and refuses a name given twice in one
// object (encoding/json would keep the last, so {"digest":A,"digest":B} signed B).
func TestEveryPostIsStrictJSON(t *testing.T) {
	url, _, _, c := recordServer(t)
	d := sha256.Sum256([]byte("x"))
	digest := `"` + b64(d[:]) + `"`
	dup := map[string]string{
		"/v1/keys/m123456/sign": `{"digest":` + digest + `,"digest":"` + b64(make([]byte, 32)) + `"}`,
		"/v1/keys/m123456/csr":  `{"subject":"a","subject":"b"}`,
		"/v1/records":           `{"steps":[{"type":"origin","x":{"a":1,"a":2}}]}`,
		"/v1/records/verify":    `{"record":{},"record":{}}`,
		"/v1/records/graph":     `{"record":{},"record":{}}`,
		"/api/v1/sign/edp":      `{"edp_id":"a","edp_id":"b"}`,
		"/api/v1/sign/cap":      `{"cap_id":"a","cap_id":"b"}`,
		"/api/v1/decode":        `{"a":1,"a":1}`,
	}
	for path, body := range dup {
		for _, ct := range []string{"text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "", "application/jsonx", "application/merge-patch+json"} {
			status, answer := post(t, url+path, ct, body)
			if status != 415 || !strings.Contains(string(answer), "application/json") {
				t.Errorf("%s as %q: %d %s, want 415 asking for application/json", path, ct, status, answer)
			}
		}
		status, answer := post(t, url+path, "application/json; charset=utf-8", body)
		if status != 400 || !strings.Contains(string(answer), "appears twice") {
			t.Errorf("%s %s: %d %s, want 400 naming the repeated name", path, body, status, answer)
		}
	}
	// A repeated name inside a batch item is found as well, and named with its place.
	status, answer := post(t, url+"/v1/keys/m123456/sign", "application/json", `{"batch":[{"digest":`+digest+`},{"digest":`+digest+`,"digest":`+digest+`}]}`)
	if status != 400 || !strings.Contains(string(answer), `batch[1]: the name \"digest\" appears twice`) {
		t.Errorf("batch: %d %s", status, answer)
	}
	if c("sign", "ok") != 0 {
		t.Errorf("something was signed: %v", c)
	}
	// The same bodies without the repetition are accepted.
	if status, answer := post(t, url+"/v1/keys/m123456/sign", "application/json; charset=utf-8", `{"digest":`+digest+`}`); status != 200 {
		t.Errorf("sign: %d %s", status, answer)
	}
}

// recordCount reads provenanced_records_total{operation=op, outcome}.
func recordCount(t *testing.T, reg *prometheus.Registry, op, outcome string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "provenanced_records_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["operation"] == op && labels["outcome"] == outcome {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no provenanced_records_total{%s,%s}", op, outcome)
	return 0
}

// The daemon signs no record that its own verifier refuses: with max_depth 2, a record
// two containers deep is received and signed no deeper.
func TestSignRecordsWithinTheVerifiersLimits(t *testing.T) {
	edp := vectorKey(t, "123456")
	data, _ := os.ReadFile(filepath.Join(vectors, "pki", "root-ca-cert.pem"))
	roots, _ := provenance.ParseRootsPEM(data)
	v, err := provenance.NewVerifier(roots, sandboxTF, provenance.WithLimits(provenance.Limits{MaxDepth: 2}))
	if err != nil {
		t.Fatal(err)
	}
	srv, _ := newServer(t, api.Options{Keys: []*backends.Key{edp}, MaxRequestBytes: 1 << 20,
		Provenance: &api.Provenance{Verifier: v, Key: edp, Scheme: scheme}})
	rec := []byte(`null`)
	for depth := 1; depth <= 3; depth++ {
		status, body := post(t, srv.URL+"/v1/records", "application/json", `{"record":`+string(rec)+`,"steps":[{"type":"note","n":`+strconv.Itoa(depth)+`}]}`)
		if depth < 3 {
			if status != 200 {
				t.Fatalf("depth %d: %d %s", depth, status, body)
			}
			rec = body
			continue
		}
		if status != 400 || !strings.Contains(string(body), "containers nested 3 deep, more than 2") {
			t.Fatalf("depth 3: %d %s", status, body)
		}
	}
}
