package deploy

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/ib1/provenanced/testenv"
)

func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool is missing: apt-get install prometheus (.ci/deps does)")
	}
	return p
}

// The alert rules are valid, and behave as alerts_test.yml says: each alert fires on the
// series it is about, after its for:, with its labels and annotations, and not before.
func TestAlertRules(t *testing.T) {
	pt := promtool(t)
	if out, err := exec.Command(pt, "check", "rules", "prometheus/alerts.yml").CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	out, err := exec.Command(pt, "test", "rules", "prometheus/alerts_test.yml").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "SUCCESS") {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
	// Every alert has a test.
	rules, tests := alertNames(t)
	for _, a := range rules {
		if !tests[a] {
			t.Errorf("alert %s has no test in alerts_test.yml", a)
		}
	}
}

func alertNames(t *testing.T) ([]string, map[string]bool) {
	t.Helper()
	var rf struct {
		Groups []struct {
			Rules []struct {
				Alert string `json:"alert"`
			} `json:"rules"`
		} `json:"groups"`
	}
	data, _ := os.ReadFile("prometheus/alerts.yml")
	if err := yaml.Unmarshal(data, &rf); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			names = append(names, r.Alert)
		}
	}
	var tf struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string `json:"alertname"`
				ExpAlerts []any  `json:"exp_alerts"`
			} `json:"alert_rule_test"`
		} `json:"tests"`
	}
	data, _ = os.ReadFile("prometheus/alerts_test.yml")
	if err := yaml.Unmarshal(data, &tf); err != nil {
		t.Fatal(err)
	}
	fired := map[string]bool{}
	for _, tc := range tf.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fired[a.Alertname] = true
			}
		}
	}
	return names, fired
}

type dashboard struct {
	Title  string `json:"title"`
	UID    string `json:"uid"`
	Panels []struct {
		Type    string `json:"type"`
		Title   string `json:"title"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	data, err := os.ReadFile("grafana/provenanced.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("grafana/provenanced.json: %v", err)
	}
	return d
}

// Every query of the dashboard is valid PromQL (promtool checks it as a recording rule,
// with Grafana's variables filled in), and the dashboard shows what the issue lists.
func TestDashboard(t *testing.T) {
	d := loadDashboard(t)
	if d.UID == "" || d.Title == "" {
		t.Error("the dashboard has no uid or title")
	}
	vars := strings.NewReplacer("$__rate_interval", "5m", "$instance", ".*", "$key", ".*", "$job", ".*")
	var rules strings.Builder
	rules.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	n := 0
	var titles []string
	for _, p := range d.Panels {
		if p.Type == "row" {
			continue
		}
		titles = append(titles, p.Title)
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			n++
			expr, _ := json.Marshal(vars.Replace(tg.Expr)) // a JSON string is a YAML string
			fmt.Fprintf(&rules, "      - record: dashboard:q%d\n        expr: %s\n", n, expr)
		}
	}
	path := filepath.Join(t.TempDir(), "dashboard-rules.yml")
	os.WriteFile(path, []byte(rules.String()), 0o644)
	if out, err := exec.Command(promtool(t), "check", "rules", path).CombinedOutput(); err != nil {
		t.Fatalf("a dashboard query is not valid PromQL: %v\n%s", err, out)
	}
	all := strings.ToLower(strings.Join(titles, "\n"))
	for _, want := range []string{"signatures per second", "latency by backend and key", "errors by reason",
		"certificate days left", "backend up", "audit", "reload", "kms", "pkcs#11"} {
		if !strings.Contains(all, want) {
			t.Errorf("no panel about %q; panels:\n%s", want, all)
		}
	}
}

var metricName = regexp.MustCompile(`\b(provenanced_[a-z0-9_]+|process_[a-z_]+|up)\b`)

// Metrics that a development daemon (one PEM key, no clients, no audit log, never
// reloaded) does not export, each named in INTERFACES.md by the feature that adds it.
var metricsElsewhere = map[string]string{
	"provenanced_kms_retries_total":                            "an awskms key",
	"provenanced_kms_throttled_total":                          "an awskms key",
	"provenanced_pkcs11_session_wait_seconds":                  "a pkcs11 key",
	"provenanced_audit_writes_total":                           "[audit] file",
	"provenanced_audit_up":                                     "[audit] file",
	"provenanced_audit_seal_failures_total":                    "[audit] seal_key",
	"provenanced_rate_limited_total":                           "[clients.NAME] rate",
	"provenanced_config_last_reload_successful":                "reload",
	"provenanced_config_last_reload_success_timestamp_seconds": "reload",
	"up": "Prometheus itself",
}

// Every metric the dashboard and the alerts use is one the daemon exports: the names a
// running daemon's /metrics lists, and the few that need a feature it does not have.
func TestDashboardAndAlertMetricsExist(t *testing.T) {
	dir := t.TempDir()
	addr, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	testenv.StartDaemon(t, daemonBin, filepath.Join(dir, "provenanced.sock"), addr,
		[]string{"PROVENANCED_HTTP=" + addr}, "serve", "-dev", dir)
	exported := map[string]bool{}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, m := range regexp.MustCompile(`(?m)^# TYPE (\S+) (\S+)$`).FindAllStringSubmatch(string(body), -1) {
		exported[m[1]] = true
	}
	if !exported["provenanced_sign_duration_seconds"] {
		t.Fatalf("the daemon's /metrics lacks provenanced_sign_duration_seconds:\n%s", body)
	}
	used := map[string]bool{}
	d, _ := os.ReadFile("grafana/provenanced.json")
	a, _ := os.ReadFile("prometheus/alerts.yml")
	for _, src := range [][]byte{d, a} {
		for _, m := range metricName.FindAllString(string(src), -1) {
			used[m] = true
		}
	}
	var unknown []string
	for m := range used {
		base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(m, "_bucket"), "_count"), "_sum")
		if !exported[m] && !exported[base] && metricsElsewhere[m] == "" && metricsElsewhere[base] == "" {
			unknown = append(unknown, m)
		}
	}
	sort.Strings(unknown)
	if len(unknown) > 0 {
		t.Errorf("used but not exported: %v", unknown)
	}
}
