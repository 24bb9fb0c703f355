package deploy

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// No booted systemd runs where these tests run, so the unit cannot be started with the
// documented paths. Instead the paths the daemon writes, as the docs and the drop-ins
// configure them, are checked against what the unit's sandbox leaves writable: under
// ProtectSystem=strict that is the unit's own directories (RuntimeDirectory= and the
// rest), ReadWritePaths= and, with PrivateTmp=, /tmp and /var/tmp. A path outside them
// fails at start: the audit log's at /var/log/provenanced, before LogsDirectory=, made the
// daemon exit 2 for good (RestartPreventExitStatus=2).

// sandboxDirs maps each *Directory= setting to the folder its names are made in.
var sandboxDirs = map[string]string{
	"Service.RuntimeDirectory": "/run", "Service.StateDirectory": "/var/lib", "Service.CacheDirectory": "/var/cache",
	"Service.LogsDirectory": "/var/log", "Service.ConfigurationDirectory": "/etc",
}

// writablePaths is what a service with these settings may write.
func writablePaths(t *testing.T, s map[string][]string) []string {
	t.Helper()
	if v := s["Service.ProtectSystem"]; len(v) == 0 || v[len(v)-1] != "strict" {
		t.Fatalf("ProtectSystem = %q: this check assumes strict", v)
	}
	var out []string
	for key, base := range sandboxDirs {
		for _, v := range s[key] {
			for _, name := range strings.Fields(v) {
				out = append(out, filepath.Join(base, name))
			}
		}
	}
	for _, v := range s["Service.ReadWritePaths"] {
		for _, p := range strings.Fields(v) {
			out = append(out, strings.TrimLeft(p, "-+"))
		}
	}
	if v := s["Service.PrivateTmp"]; len(v) > 0 && v[len(v)-1] == "yes" {
		out = append(out, "/tmp", "/var/tmp")
	}
	return out
}

func under(path string, dirs []string) bool {
	for _, d := range dirs {
		if path == d || strings.HasPrefix(path, d+"/") {
			return true
		}
	}
	return false
}

// documentedAuditFiles are the [audit] file paths the docs give.
func documentedAuditFiles(t *testing.T) []string {
	t.Helper()
	re := regexp.MustCompile(`(?m)^file = "(/[^"]+)"`)
	var out []string
	for _, page := range []string{"../docs/audit.md", "../docs/security.md"} {
		data, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllStringSubmatch(string(data), -1) {
			out = append(out, m[1])
		}
	}
	if len(out) == 0 {
		t.Fatal("no [audit] file path in docs/audit.md or docs/security.md")
	}
	return out
}

// The paths the daemon writes under the shipped unit are writable there: the audit log
// where the docs put it, the audit head and a PKCS#11 key's state in $STATE_DIRECTORY,
// the socket's folder, and, with the TPM drop-in, the tpm2-pkcs11 store. The check fails
// for a unit without LogsDirectory=.
func TestSystemdSandboxWritesTheDocumentedPaths(t *testing.T) {
	unit := unitSettings(t, "systemd/provenanced.service")
	tpm := unitSettings(t, "systemd/provenanced.service.d/tpm.conf")
	var store string
	for _, v := range tpm["Service.Environment"] {
		for _, kv := range strings.Fields(v) {
			if p, ok := strings.CutPrefix(kv, "TPM2_PKCS11_STORE="); ok {
				store = p
			}
		}
	}
	need := map[string]string{
		"/var/lib/provenanced/audit.head":                 "the audit head ([audit] head_file's default, $STATE_DIRECTORY/audit.head)",
		"/var/lib/provenanced/pkcs11-refused-pin-ID.json": "a PKCS#11 key's record of a refused PIN (state_dir, default $STATE_DIRECTORY)",
		"/run/provenanced/provenanced.sock":               "the socket, when the daemon creates it",
		store:                                             "the TPM drop-in's TPM2_PKCS11_STORE",
	}
	for _, f := range documentedAuditFiles(t) {
		need[f] = "the audit log as the docs configure it"
		need[f+".1"] = "the audit log moved by logrotate beside it"
	}
	writable := writablePaths(t, unit)
	for path, what := range need {
		if !under(path, writable) {
			t.Errorf("%s (%s) is not writable under the unit's sandbox; writable: %v", path, what, writable)
		}
	}
	if got := unit["Service.StateDirectory"]; !contains(got, "provenanced") {
		t.Errorf("StateDirectory = %q: $STATE_DIRECTORY is not /var/lib/provenanced", got)
	}

	// The check can fail: the unit as it was, without LogsDirectory=.
	delete(unit, "Service.LogsDirectory")
	if under("/var/log/provenanced/audit.jsonl", writablePaths(t, unit)) {
		t.Error("without LogsDirectory= the audit log still counts as writable: the check checks nothing")
	}
}
