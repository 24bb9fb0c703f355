package deploy

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"
)

// No cluster runs where these tests run, so what the manifests do is worked out as
// Kubernetes and the Prometheus Operator do it: a connection is admitted by the
// NetworkPolicies as the API's semantics say, and a scraped target gets the labels the
// operator's generated relabelings give it; then the alert rules are evaluated by promtool
// against series with those labels.

// peer is where a connection comes from: a pod's namespace (and its labels) and the pod's
// labels.
type peer struct {
	namespace       string
	namespaceLabels map[string]string
	podLabels       map[string]string
}

// admits reports whether policies let a connection from p reach port/protocol of a pod in
// namespace ns with podLabels and containers: with no policy selecting the pod for
// ingress, everything; otherwise what one of their rules allows.
func admits(t *testing.T, policies []networkingv1.NetworkPolicy, ns string, podLabels map[string]string, containers []corev1.Container, p peer, protocol corev1.Protocol, port int32) bool {
	t.Helper()
	selected := false
	for _, np := range policies {
		if !matchesSelector(t, &np.Spec.PodSelector, podLabels) || !hasIngress(np) {
			continue
		}
		selected = true
		for _, rule := range np.Spec.Ingress {
			if fromMatches(t, rule.From, ns, p) && portMatches(rule.Ports, containers, protocol, port) {
				return true
			}
		}
	}
	return !selected
}

func hasIngress(np networkingv1.NetworkPolicy) bool {
	if len(np.Spec.PolicyTypes) == 0 {
		return true // the API's default when policyTypes is empty
	}
	for _, pt := range np.Spec.PolicyTypes {
		if pt == networkingv1.PolicyTypeIngress {
			return true
		}
	}
	return false
}

func matchesSelector(t *testing.T, sel *metav1.LabelSelector, l map[string]string) bool {
	t.Helper()
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Fatal(err)
	}
	return s.Matches(labels.Set(l))
}

func fromMatches(t *testing.T, from []networkingv1.NetworkPolicyPeer, ns string, p peer) bool {
	if len(from) == 0 {
		return true
	}
	for _, f := range from {
		if f.IPBlock != nil {
			t.Fatal("an ipBlock peer: this check does not model it")
		}
		nsOK := f.NamespaceSelector == nil && p.namespace == ns || f.NamespaceSelector != nil && matchesSelector(t, f.NamespaceSelector, p.namespaceLabels)
		podOK := f.PodSelector == nil || matchesSelector(t, f.PodSelector, p.podLabels)
		if nsOK && podOK {
			return true
		}
	}
	return false
}

func portMatches(ports []networkingv1.NetworkPolicyPort, containers []corev1.Container, protocol corev1.Protocol, port int32) bool {
	if len(ports) == 0 {
		return true
	}
	for _, pp := range ports {
		proto := corev1.ProtocolTCP
		if pp.Protocol != nil {
			proto = *pp.Protocol
		}
		if proto != protocol {
			continue
		}
		switch {
		case pp.Port == nil:
			return true
		case pp.Port.Type == 1: // a named port: the container port of that name
			for _, c := range containers {
				for _, cp := range c.Ports {
					if cp.Name == pp.Port.StrVal && cp.ContainerPort == port {
						return true
					}
				}
			}
		case pp.EndPort != nil:
			if port >= pp.Port.IntVal && port <= *pp.EndPort {
				return true
			}
		case pp.Port.IntVal == port:
			return true
		}
	}
	return false
}

// The NetworkPolicies keep the sidecar's metrics port to the monitoring namespace and
// leave every other port of the pods, the application's, as open as it was without them.
// The check can fail: the policy alone, as it was, cut the application off.
func TestNetworkPolicyProtectsOnlyTheSidecarsPort(t *testing.T) {
	m := loadSidecar(t)
	pod := m.deployment.Spec.Template
	containers := append(append([]corev1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...)
	const ns = "payments"
	monitoring := peer{namespace: "monitoring", namespaceLabels: map[string]string{"kubernetes.io/metadata.name": "monitoring"}}
	neighbour := peer{namespace: ns, namespaceLabels: map[string]string{"kubernetes.io/metadata.name": ns}, podLabels: map[string]string{"app": "web"}}
	other := peer{namespace: "elsewhere", namespaceLabels: map[string]string{"kubernetes.io/metadata.name": "elsewhere"}}
	for _, c := range []struct {
		from     peer
		name     string
		protocol corev1.Protocol
		port     int32
		want     bool
	}{
		{monitoring, "monitoring", corev1.ProtocolTCP, 9464, true},
		{neighbour, "a pod of the same namespace", corev1.ProtocolTCP, 9464, false},
		{other, "another namespace", corev1.ProtocolTCP, 9464, false},
		{other, "another namespace", corev1.ProtocolTCP, 8080, true},
		{neighbour, "a pod of the same namespace", corev1.ProtocolTCP, 443, true},
		{other, "another namespace", corev1.ProtocolTCP, 9463, true},
		{other, "another namespace", corev1.ProtocolTCP, 9465, true},
		{other, "another namespace", corev1.ProtocolUDP, 9464, true},
		{other, "another namespace", corev1.ProtocolUDP, 53, true},
		{other, "another namespace", corev1.ProtocolSCTP, 3868, true},
	} {
		if got := admits(t, m.netpols, ns, pod.Labels, containers, c.from, c.protocol, c.port); got != c.want {
			t.Errorf("%s to %s %d: admitted %v, want %v", c.name, c.protocol, c.port, got, c.want)
		}
	}
	var metricsOnly []networkingv1.NetworkPolicy
	for _, np := range m.netpols {
		if np.Name == "provenance-app-metrics" {
			metricsOnly = append(metricsOnly, np)
		}
	}
	if len(metricsOnly) != 1 || admits(t, metricsOnly, ns, pod.Labels, containers, other, corev1.ProtocolTCP, 8080) {
		t.Error("the metrics policy alone does not cut off the application's port 8080: the check checks nothing")
	}
	// The sidecar has no network port but the metrics one: nothing else is left open.
	for _, c := range pod.Spec.InitContainers {
		for _, p := range c.Ports {
			if c.Name == "provenanced" && p.Name != "metrics" {
				t.Errorf("the sidecar has a port %s (%d) the policies do not protect", p.Name, p.ContainerPort)
			}
		}
	}
}

// targetLabels are the labels of the scrape target for the pod's port named by the
// PodMonitor's endpoint, as the Prometheus Operator's generated relabelings give them
// (pkg/prometheus/promcfg.go, generatePodMonitorConfig): namespace, container and pod
// from the pod; job "<namespace>/<name>", or the pod label jobLabel names if the pod has
// it; endpoint, the port's name; then the endpoint's own relabelings; instance, the
// address, if none set it.
func targetLabels(t *testing.T, pm podMonitor, ns, podName, podIP string, podLabels map[string]string, container corev1.Container) map[string]string {
	t.Helper()
	ep := pm.Spec.PodMetricsEndpoints[0]
	var port int32
	for _, p := range container.Ports {
		if p.Name == ep.Port {
			port = p.ContainerPort
		}
	}
	if port == 0 {
		t.Fatalf("container %s has no port %q", container.Name, ep.Port)
	}
	l := map[string]string{
		"__address__": fmt.Sprintf("%s:%d", podIP, port),
		"namespace":   ns, "container": container.Name, "pod": podName,
		"job": ns + "/" + pm.Name, "endpoint": ep.Port,
	}
	if v := podLabels[pm.Spec.JobLabel]; pm.Spec.JobLabel != "" && v != "" {
		l["job"] = v
	}
	for _, rc := range ep.Relabelings {
		relabel(t, l, rc)
	}
	if l["instance"] == "" {
		l["instance"] = l["__address__"]
	}
	for k := range l {
		if strings.HasPrefix(k, "__") {
			delete(l, k)
		}
	}
	return l
}

// relabel applies one relabeling of action replace, Prometheus's default and the only one
// the PodMonitor uses.
func relabel(t *testing.T, l map[string]string, rc relabelConfig) {
	t.Helper()
	if rc.Action != "" && strings.ToLower(rc.Action) != "replace" {
		t.Fatalf("relabeling action %q: this check models replace only", rc.Action)
	}
	sep, regex, repl := ";", "(.*)", "$1"
	if rc.Separator != nil {
		sep = *rc.Separator
	}
	if rc.Regex != "" {
		regex = rc.Regex
	}
	if rc.Replacement != nil {
		repl = *rc.Replacement
	}
	var vals []string
	for _, s := range rc.SourceLabels {
		vals = append(vals, l[s])
	}
	re := regexp.MustCompile("^(?:" + regex + ")$")
	src := strings.Join(vals, sep)
	m := re.FindStringSubmatchIndex(src)
	if m == nil {
		return
	}
	v := string(re.ExpandString(nil, repl, src, m))
	if v == "" {
		delete(l, rc.TargetLabel)
		return
	}
	l[rc.TargetLabel] = v
}

// The alerts fire on the series a Prometheus run by the operator scrapes through the
// PodMonitor: evaluated by promtool on series labelled as the operator labels the
// sidecar's target, ProvenancedDown (up{job="provenanced"}) and ProvenancedBackendDown
// fire, with the target's labels. Without the PodMonitor's relabeling the job would be
// "<namespace>/provenanced", and ProvenancedDown never fires: the test shows that too.
func TestPodMonitorJobMeetsTheAlerts(t *testing.T) {
	pm := loadPodMonitor(t)
	m := loadSidecar(t)
	pod := m.deployment.Spec.Template
	var sidecar corev1.Container
	for _, c := range pod.Spec.InitContainers {
		if c.Name == "provenanced" {
			sidecar = c
		}
	}
	target := targetLabels(t, pm, "payments", "provenance-app-7c9d8-x2k4q", "10.1.2.3", pod.Labels, sidecar)
	if target["job"] != "provenanced" {
		t.Errorf("the PodMonitor's job is %q, the alerts' is provenanced", target["job"])
	}
	runAlertsOn(t, target, true)

	bare := pm
	bare.Spec.PodMetricsEndpoints = append(bare.Spec.PodMetricsEndpoints[:0:0], pm.Spec.PodMetricsEndpoints...)
	bare.Spec.PodMetricsEndpoints[0].Relabelings = nil
	unrelabelled := targetLabels(t, bare, "payments", "provenance-app-7c9d8-x2k4q", "10.1.2.3", pod.Labels, sidecar)
	if unrelabelled["job"] != "payments/provenanced" {
		t.Errorf("without the relabeling the job is %q, want the operator's payments/provenanced", unrelabelled["job"])
	}
	runAlertsOn(t, unrelabelled, false)
}

func loadPodMonitor(t *testing.T) podMonitor {
	t.Helper()
	docs := splitYAML(t, "kubernetes/podmonitor.yaml")
	var pm podMonitor
	strict(t, docs[0], &pm)
	return pm
}

// runAlertsOn has promtool evaluate alerts.yml on a scrape target with these labels that
// stops answering and whose key cannot sign; down says whether ProvenancedDown must fire.
func runAlertsOn(t *testing.T, target map[string]string, down bool) {
	t.Helper()
	rules, err := filepath.Abs("prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	sel := promLabels(target)
	backend := promLabels(merge(target, map[string]string{"key": "signing", "backend": "awskms"}))
	expDown := "[]"
	if down {
		expDown = fmt.Sprintf("\n          - exp_labels: %s\n            exp_annotations: %s", yamlFlow(merge(target, map[string]string{"severity": "critical"})),
			yamlFlow(annotations(t, "ProvenancedDown", target)))
	}
	expBackend := fmt.Sprintf("\n          - exp_labels: %s\n            exp_annotations: %s",
		yamlFlow(merge(target, map[string]string{"severity": "critical", "key": "signing", "backend": "awskms"})),
		yamlFlow(annotations(t, "ProvenancedBackendDown", merge(target, map[string]string{"key": "signing", "backend": "awskms"}))))
	test := fmt.Sprintf(`rule_files: [%q]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'up%s'
        values: '1 0x10'
      - series: 'provenanced_backend_up%s'
        values: '1 1 0x10'
    alert_rule_test:
      - eval_time: 5m
        alertname: ProvenancedDown
        exp_alerts: %s
      - eval_time: 5m
        alertname: ProvenancedBackendDown
        exp_alerts: %s
`, rules, sel, backend, expDown, expBackend)
	path := filepath.Join(t.TempDir(), "podmonitor_test.yml")
	if err := os.WriteFile(path, []byte(test), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(promtool(t), "test", "rules", path).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "SUCCESS") {
		t.Errorf("promtool test rules on the PodMonitor's labels %v: %v\n%s\n%s", target, err, out, test)
	}
}

func merge(a, b map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

func sortedKeys(l map[string]string) []string {
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// promLabels is {a="x",b="y"}.
func promLabels(l map[string]string) string {
	var parts []string
	for _, k := range sortedKeys(l) {
		parts = append(parts, fmt.Sprintf("%s=%q", k, l[k]))
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// yamlFlow is a YAML flow mapping of l.
func yamlFlow(l map[string]string) string {
	var parts []string
	for _, k := range sortedKeys(l) {
		parts = append(parts, fmt.Sprintf("%q: %q", k, l[k]))
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// annotations are the alert's annotations from alerts.yml with {{ $labels.NAME }} filled
// in from l: the only template the two alerts' annotations use.
func annotations(t *testing.T, alert string, l map[string]string) map[string]string {
	t.Helper()
	var rf struct {
		Groups []struct {
			Rules []struct {
				Alert       string            `json:"alert"`
				Annotations map[string]string `json:"annotations"`
			} `json:"rules"`
		} `json:"groups"`
	}
	data, err := os.ReadFile("prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, &rf); err != nil {
		t.Fatal(err)
	}
	tmpl := regexp.MustCompile(`\{\{ \$labels\.([a-z_]+) \}\}`)
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Alert != alert {
				continue
			}
			out := map[string]string{}
			for k, v := range r.Annotations {
				if strings.Contains(tmpl.ReplaceAllString(v, ""), "{{") {
					t.Fatalf("%s's %s uses a template this check does not fill in: %s", alert, k, v)
				}
				out[k] = tmpl.ReplaceAllStringFunc(v, func(s string) string { return l[tmpl.FindStringSubmatch(s)[1]] })
			}
			return out
		}
	}
	t.Fatalf("no alert %s in alerts.yml", alert)
	return nil
}
