package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// The TPM drop-in lets the service reach /dev/tpmrm0, which the unit's PrivateDevices=yes
// hides, and no other device; systemd-analyze verify says nothing about it, the unit keeps
// an exposure of 2.5 or lower with it, and the TPM section of the docs points at it.
func TestSystemdTPMDropIn(t *testing.T) {
	sa := systemdAnalyze(t)
	dir := installUnits(t, "tpm.conf")
	cmd := exec.Command(sa, "verify", filepath.Join(dir, "provenanced.service"))
	cmd.Env = append(os.Environ(), "SYSTEMD_UNIT_PATH="+dir+":", "SYSTEMD_LOG_COLOR=0")
	if out, err := cmd.CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) != 0 {
		t.Fatalf("systemd-analyze verify with tpm.conf: %v\n%s", err, out)
	}
	s := unitSettings(t, "systemd/provenanced.service.d/tpm.conf")
	for k, v := range map[string]string{"Service.PrivateDevices": "no", "Service.DevicePolicy": "closed", "Service.DeviceAllow": "/dev/tpmrm0 rw"} {
		if got := s[k]; len(got) != 1 || got[0] != v {
			t.Errorf("tpm.conf: %s = %q, want %q alone", k, got, v)
		}
	}
	env := strings.Join(s["Service.Environment"], " ")
	if !strings.Contains(env, "TPM2_PKCS11_TCTI=device:/dev/tpmrm0") {
		t.Errorf("tpm.conf does not point tpm2-pkcs11 at /dev/tpmrm0: %q", env)
	}
	cmd = exec.Command(sa, "security", "--offline=yes", "--no-pager", filepath.Join(dir, "provenanced.service"))
	cmd.Env = append(os.Environ(), "SYSTEMD_UNIT_PATH="+dir+":", "SYSTEMD_COLORS=0")
	out, err := cmd.CombinedOutput()
	m := exposureRE.FindSubmatch(out)
	if err != nil || m == nil {
		t.Fatalf("systemd-analyze security with tpm.conf: %v\n%s", err, out)
	}
	if score, _ := strconv.ParseFloat(string(m[1]), 64); score > 2.5 {
		t.Errorf("exposure with tpm.conf %.1f, want 2.5 or lower", score)
	} else {
		t.Logf("systemd-analyze security with tpm.conf: exposure %.1f", score)
	}
	doc, err := os.ReadFile("../docs/pkcs11.md")
	if err != nil {
		t.Fatal(err)
	}
	_, tpmSection, _ := strings.Cut(string(doc), "## A TPM 2.0")
	if !strings.Contains(tpmSection, "deploy/systemd/provenanced.service.d/tpm.conf") {
		t.Error("docs/pkcs11.md's TPM section does not point at the drop-in")
	}
}
