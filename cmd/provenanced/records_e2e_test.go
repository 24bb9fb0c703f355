package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ib1/provenanced/provenance"
	"github.com/ib1/provenanced/testenv"
)

const sandboxTF = "https://registry.core.sandbox.trust.ib1.org/trust-framework"

// The original service's test_client.py, against the real binary: post its EDP example,
// then pass the returned record as edp_data_attachment to /api/v1/sign/cap.
var testClientEDP = map[string]string{
	"from_date":          "2025-09-20T10:00:00",
	"to_date":            "2025-10-19T10:00:00",
	"permission_granted": "2025-09-19T10:00:00",
	"permission_expires": "2025-11-19T10:00:00",
	"service_url":        "https://api.example.com",
	"account":            "test-account-123",
	"fapi_id":            "fapi-transaction-456",
	"cap_member":         "cap-member-789",
	"origin_url":         "https://www.smartdcc.co.uk/",
	"origin_license_url": "https://smartenergycodecompany.co.uk/documents/sec/consolidated-sec/",
}

func testClientCAP(edpRecord json.RawMessage, edpMember string) map[string]any {
	return map[string]any{
		"edp_data_attachment":    edpRecord,
		"cap_member_id":          "cap-member-789",
		"bank_member_id":         "bank-member-001",
		"cap_account":            "cap-account-002",
		"cap_permission_granted": "2025-09-19T10:00:00",
		"cap_permission_expires": "2026-09-19T10:00:00",
		"grid_intensity_origin":  "https://api.carbonintensity.org.uk/",
		"grid_intensity_license": "https://creativecommons.org/licenses/by/4.0/",
		"postcode":               "CF99",
		"edp_service_url":        "https://api.example.com",
		"edp_member_id":          edpMember,
		"bank_service_url":       "https://bank.example.com",
		"from_date":              "2025-09-20T10:00:00",
		"to_date":                "2025-10-19T10:00:00",
	}
}

func postJSON(t *testing.T, c *http.Client, url string, body any) (int, []byte) {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Post(url, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

func recordsCount(t *testing.T, c *http.Client, url, op, outcome string) int {
	t.Helper()
	series := `provenanced_records_total{operation="` + op + `",outcome="` + outcome + `"}`
	n, ok := metricValue(t, c, url, series)
	if !ok {
		t.Fatalf("no %s in /metrics", series)
	}
	return n
}

func TestOriginalTestClientFlow(t *testing.T) {
	p, dir := startDev(t)
	base := "http://" + p.HTTP
	c := http.DefaultClient
	status, edp := postJSON(t, c, base+"/api/v1/sign/edp", testClientEDP)
	if status != 200 {
		t.Fatalf("sign/edp: %d %s", status, edp)
	}
	// The dev member is an energy data provider; the CAP request names it as the EDP.
	status, decoded := postJSON(t, c, base+"/api/v1/decode", json.RawMessage(edp))
	if status != 200 {
		t.Fatalf("decode: %d %s", status, decoded)
	}
	var steps []map[string]any
	json.Unmarshal(decoded, &steps)
	member := steps[0]["_signature"].(map[string]any)["signed"].(map[string]any)["member"].(string)
	if steps[0]["timestamp"] != "2025-09-19T10:00:00Z" {
		t.Errorf("permission timestamp %v, want 2025-09-19T10:00:00Z (not the original's 2025-09-19T1Z)", steps[0]["timestamp"])
	}

	status, capRec := postJSON(t, c, base+"/api/v1/sign/cap", testClientCAP(edp, member))
	if status != 200 {
		t.Fatalf("sign/cap: %d %s", status, capRec)
	}
	// A second opinion: the independent Python verifier accepts both records and decodes
	// them as the daemon does.
	root := filepath.Join(dir, "root-ca.pem")
	for name, rec := range map[string][]byte{"edp": edp, "cap": capRec} {
		out, err := testenv.IB1Check(rec, root, sandboxTF)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		status, mine := postJSON(t, c, base+"/api/v1/decode", json.RawMessage(rec))
		if status != 200 {
			t.Fatalf("decode %s: %d %s", name, status, mine)
		}
		a, _ := provenance.ParseJSON(out, provenance.Limits{})
		b, _ := provenance.ParseJSON(mine, provenance.Limits{})
		if !provenance.JSONEqual(a, b) {
			t.Errorf("%s: ib1check.py decodes\n%s\nthe daemon decodes\n%s", name, out, mine)
		}
	}
	if n := recordsCount(t, c, base+"/metrics", "sign", "ok"); n != 2 {
		t.Errorf("records_total{sign,ok} = %d, want 2", n)
	}
	if n := recordsCount(t, c, base+"/metrics", "verify", "ok"); n < 4 {
		t.Errorf("records_total{verify,ok} = %d, want at least 4", n)
	}
	// A record that fails verification is counted as invalid, not dropped.
	tampered := bytes.Replace(edp, []byte(`Z","ME`), []byte(`Z","MF`), 1) // the signature's DER header
	if bytes.Equal(tampered, edp) {
		t.Fatalf("no signature to tamper with in %s", edp)
	}
	before := recordsCount(t, c, base+"/metrics", "verify", "invalid")
	if status, body := postJSON(t, c, base+"/v1/records/verify", map[string]json.RawMessage{"record": tampered}); status != http.StatusBadRequest {
		t.Fatalf("verify of a tampered record: %d %s", status, body)
	}
	if n := recordsCount(t, c, base+"/metrics", "verify", "invalid"); n != before+1 {
		t.Errorf("records_total{verify,invalid} = %d after a tampered record, want %d", n, before+1)
	}
}

// copyVectorPKI copies the reference vectors' root and the EDP's bundle and key into dir
// (the key with mode 0600, as the PEM backend demands).
func copyVectorPKI(t *testing.T, dir string) {
	t.Helper()
	src := filepath.Join("..", "..", "provenance", "testdata", "vectors", "pki")
	os.MkdirAll(filepath.Join(dir, "certs"), 0o755)
	for from, to := range map[string]string{"root-ca-cert.pem": "certs/root-ca.pem", "123456-bundle.pem": "certs/bundle.pem", "123456-key.pem": "certs/key.pem"} {
		data, err := os.ReadFile(filepath.Join(src, from))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, to), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// TestOriginalEnvFile runs the daemon as the original ran: no config, a .env file in the
// working directory.
func TestOriginalEnvFile(t *testing.T) {
	dir := t.TempDir()
	copyVectorPKI(t, dir)
	os.WriteFile(filepath.Join(dir, ".env"), []byte(`ROOT_CA_CERTIFICATE=./certs/root-ca.pem
# SIGNING_KEY would be used only without KMS_KEY_ID
SIGNING_KEY=./certs/key.pem
SIGNING_BUNDLE=./certs/bundle.pem
SCHEME_URI=https://registry.core.sandbox.trust.ib1.org/scheme/perseus
`), 0o600)
	addr, _ := testenv.FreePort()
	cmd := exec.Command(daemonBin, "serve")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PROVENANCED_HTTP="+addr)
	var out bytes.Buffer
	cmd.Stderr = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	base := "http://" + addr
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready: %s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	status, edp := postJSON(t, http.DefaultClient, base+"/api/v1/sign/edp", testClientEDP)
	if status != 200 {
		t.Fatalf("sign/edp: %d %s", status, edp)
	}
	if _, err := testenv.IB1Check(edp, filepath.Join(dir, "certs/root-ca.pem"), sandboxTF); err != nil {
		t.Fatal(err)
	}
	var rec struct {
		Certificates map[string]any `json:"certificates"`
	}
	json.Unmarshal(edp, &rec)
	if _, ok := rec.Certificates["123456"]; !ok {
		t.Errorf("the record is not signed by the .env's key (certificates %v)", rec.Certificates)
	}

	// Without ROOT_CA_CERTIFICATE the daemon says what it needs and exits 2.
	empty := t.TempDir()
	cmd2 := exec.Command(daemonBin, "serve")
	cmd2.Dir = empty
	cmd2.Env = append(os.Environ(), "PROVENANCED_HTTP=127.0.0.1:0")
	msg, _ := cmd2.CombinedOutput()
	if cmd2.ProcessState.ExitCode() != 2 || !strings.Contains(string(msg), "ROOT_CA_CERTIFICATE") || !strings.Contains(string(msg), "-config") {
		t.Errorf("no configuration: exit %d: %s", cmd2.ProcessState.ExitCode(), msg)
	}
}

func TestRecordCommands(t *testing.T) {
	dir := t.TempDir()
	copyVectorPKI(t, dir)
	cfg := testenv.NewConfig().Table("provenance", "root_ca", "certs/root-ca.pem").PEMKey("edp", "certs/key.pem", "certs/bundle.pem").
		WriteFile(t, filepath.Join(dir, "p.toml"))
	steps := filepath.Join(dir, "steps.json")
	os.WriteFile(steps, []byte(`[{"type":"origin","scheme":"https://registry.core.sandbox.trust.ib1.org/scheme/perseus","b":1,"a":"Zürich"},{"type":"transfer","of":"x"}]`), 0o644)
	out, code := runSplit(t, "record", "sign", "-config", cfg, "-steps", steps)
	if code != 0 {
		t.Fatalf("record sign: %d %s", code, out)
	}
	recFile := filepath.Join(dir, "rec.json")
	os.WriteFile(recFile, []byte(out), 0o644)
	if _, err := testenv.IB1Check([]byte(out), filepath.Join(dir, "certs/root-ca.pem"), sandboxTF); err != nil {
		t.Fatal(err)
	}
	// Append to it: the received record is verified first.
	more := filepath.Join(dir, "more.json")
	os.WriteFile(more, []byte(`{"type":"receipt","transfer":"x"}`), 0o644)
	out2, code := runSplit(t, "record", "sign", "-config", cfg, "-record", recFile, "-steps", more)
	if code != 0 {
		t.Fatalf("record sign -record: %d %s", code, out2)
	}
	rec2 := filepath.Join(dir, "rec2.json")
	os.WriteFile(rec2, []byte(out2), 0o644)
	out, code = runSplit(t, "record", "verify", "-root", filepath.Join(dir, "certs/root-ca.pem"), "-framework", sandboxTF, rec2)
	if code != 0 || !strings.Contains(out, `"a": "Z\u00fcrich"`) && !strings.Contains(out, `"a": "Zürich"`) {
		t.Fatalf("record verify: %d %s", code, out)
	}
	var decoded []map[string]any
	if err := json.Unmarshal([]byte(out), &decoded); err != nil || len(decoded) != 3 {
		t.Fatalf("decoded: %v %s", err, out)
	}
	out, code = runSplit(t, "record", "graph", "-root", filepath.Join(dir, "certs/root-ca.pem"), rec2)
	if code != 0 || !strings.HasPrefix(out, "digraph") {
		t.Fatalf("record graph: %d %s", code, out)
	}
	// Invalid records: exit status 1 with the failed check.
	bad := filepath.Join("..", "..", "provenance", "testdata", "vectors", "invalid", "origins-reordered.json")
	out, code = runSplit(t, "record", "verify", "-root", filepath.Join(dir, "certs/root-ca.pem"), "-framework", sandboxTF, bad)
	if code != 1 || !strings.Contains(out, "origins") {
		t.Errorf("invalid record: %d %s", code, out)
	}
	out, code = runSplit(t, "record", "sign", "-config", cfg, "-record", bad, "-steps", more)
	if code != 1 || !strings.Contains(out, "does not verify") {
		t.Errorf("sign on an invalid record: %d %s", code, out)
	}
}

// runSplit runs the binary and returns stdout (or, on failure, stderr) and the exit code.
func runSplit(t *testing.T, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(daemonBin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Run()
	if cmd.ProcessState.ExitCode() != 0 {
		return stderr.String(), cmd.ProcessState.ExitCode()
	}
	return stdout.String(), 0
}
