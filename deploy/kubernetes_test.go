package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// splitYAML returns the documents of a multi-document YAML file.
func splitYAML(t *testing.T, path string) [][]byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var docs [][]byte
	for _, d := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(data), -1) {
		if strings.TrimSpace(regexp.MustCompile(`(?m)^#.*$`).ReplaceAllString(d, "")) != "" {
			docs = append(docs, []byte(d))
		}
	}
	return docs
}

// strict decodes one document into out as the API server's strict field validation
// does: case-sensitive field names, no unknown and no duplicate fields (a misspelt or
// misplaced field would otherwise be dropped silently). encoding/json, which
// yaml.UnmarshalStrict uses, matches field names case-insensitively.
func strict(t *testing.T, doc []byte, out any) {
	t.Helper()
	if err := strictDecode(doc, out); err != nil {
		t.Fatalf("strict decoding into %T: %v\n%s", out, err, doc)
	}
}

func strictDecode(doc []byte, out any) error {
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	strictErrs, err := sigsjson.UnmarshalStrict(j, out)
	if err != nil {
		return err
	}
	return errors.Join(strictErrs...)
}

type sidecarManifest struct {
	sa         corev1.ServiceAccount
	cm         corev1.ConfigMap
	deployment appsv1.Deployment
	service    corev1.Service
	netpols    []networkingv1.NetworkPolicy
}

func loadSidecar(t *testing.T) *sidecarManifest {
	t.Helper()
	m := &sidecarManifest{}
	seen := map[string]int{}
	for _, doc := range splitYAML(t, "kubernetes/sidecar.yaml") {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			t.Fatal(err)
		}
		seen[tm.Kind]++
		switch tm.APIVersion + " " + tm.Kind {
		case "v1 ServiceAccount":
			strict(t, doc, &m.sa)
		case "v1 ConfigMap":
			strict(t, doc, &m.cm)
		case "apps/v1 Deployment":
			strict(t, doc, &m.deployment)
		case "v1 Service":
			strict(t, doc, &m.service)
		case "networking.k8s.io/v1 NetworkPolicy":
			var np networkingv1.NetworkPolicy
			strict(t, doc, &np)
			m.netpols = append(m.netpols, np)
		default:
			t.Fatalf("unexpected %s %s", tm.APIVersion, tm.Kind)
		}
	}
	for k, n := range map[string]int{"ServiceAccount": 1, "ConfigMap": 1, "Deployment": 1, "Service": 1, "NetworkPolicy": 2} {
		if seen[k] != n {
			t.Errorf("%d %s documents, want %d", seen[k], k, n)
		}
	}
	return m
}

// The strict decoding catches a misspelt, a misplaced and a repeated field: the check
// itself can fail.
func TestKubernetesStrictDecodingFails(t *testing.T) {
	head := "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  template:\n    spec:\n      containers:\n        - name: a\n          image: a:1\n"
	for _, tail := range []string{
		"          restartpolicy: Always\n",                                // the case differs
		"          startupProbe: {httpGet: {path: /readyz}, port: 9464}\n", // port one level too high
		"          image: b:2\n",                                           // twice
	} {
		var d appsv1.Deployment
		if err := strictDecode([]byte(head+tail), &d); err == nil {
			t.Errorf("decoded without error:\n%s", tail)
		}
	}
}

func TestKubernetesSidecar(t *testing.T) {
	m := loadSidecar(t)
	pod := m.deployment.Spec.Template
	spec := pod.Spec

	// A native sidecar: an init container that restarts, with a startup probe, so the
	// application starts once it can sign and stops before it.
	var sidecar *corev1.Container
	for i := range spec.InitContainers {
		if spec.InitContainers[i].Name == "provenanced" {
			sidecar = &spec.InitContainers[i]
		}
	}
	if sidecar == nil {
		t.Fatal("no init container provenanced")
	}
	if sidecar.RestartPolicy == nil || *sidecar.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Error("provenanced is not a native sidecar: restartPolicy: Always")
	}
	for _, c := range spec.Containers {
		if strings.Contains(c.Image, "provenanced") {
			t.Errorf("provenanced also runs as a regular container %s", c.Name)
		}
	}

	// Probes on the metrics-only port, readiness from /readyz.
	metricsPort := int32(0)
	for _, p := range sidecar.Ports {
		if p.Name == "metrics" {
			metricsPort = p.ContainerPort
		}
	}
	if metricsPort == 0 {
		t.Fatal("the sidecar has no port named metrics")
	}
	for name, p := range map[string]*corev1.Probe{"startupProbe": sidecar.StartupProbe, "readinessProbe": sidecar.ReadinessProbe, "livenessProbe": sidecar.LivenessProbe} {
		want := "/readyz"
		if name == "livenessProbe" {
			want = "/healthz"
		}
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != want || p.HTTPGet.Port.String() != "metrics" {
			t.Errorf("%s: want httpGet %s on port metrics, got %+v", name, want, p)
		}
	}

	// The config: the socket on the shared volume, no signing listener on the network,
	// the metrics listener on the port the probes use.
	var cfg struct {
		Server  map[string]any
		Clients map[string]struct {
			UIDs []int64 `toml:"uids"`
		}
	}
	if _, err := toml.Decode(m.cm.Data["provenanced.toml"], &cfg); err != nil {
		t.Fatalf("the ConfigMap's provenanced.toml: %v", err)
	}
	if _, ok := cfg.Server["http"]; ok {
		t.Errorf("server.http is set (%v): the signing API would listen on the pod's network", cfg.Server["http"])
	}
	if got := fmt.Sprint(cfg.Server["metrics_http"]); got != fmt.Sprintf("0.0.0.0:%d", metricsPort) {
		t.Errorf("server.metrics_http = %s, want 0.0.0.0:%d", got, metricsPort)
	}
	sock := fmt.Sprint(cfg.Server["socket"])
	shared := map[string]bool{}
	for _, c := range append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...) {
		for _, vm := range c.VolumeMounts {
			if vm.Name == "socket" && strings.HasPrefix(sock, vm.MountPath+"/") {
				shared[c.Name] = true
			}
		}
	}
	if !shared["provenanced"] || !shared["app"] {
		t.Errorf("the socket %s is not on a volume both containers mount: %v", sock, shared)
	}

	// The policy admits the application container's user.
	for _, c := range spec.Containers {
		if c.Name != "app" {
			continue
		}
		if c.SecurityContext == nil || c.SecurityContext.RunAsUser == nil {
			t.Fatal("the app container's uid is not set: [clients.app] cannot name it")
		}
		found := false
		for _, u := range cfg.Clients["app"].UIDs {
			found = found || u == *c.SecurityContext.RunAsUser
		}
		if !found {
			t.Errorf("[clients.app] uids %v does not hold the app container's uid %d", cfg.Clients["app"].UIDs, *c.SecurityContext.RunAsUser)
		}
	}

	// IRSA reaches the sidecar only: every other container is skipped.
	skip := map[string]bool{}
	for _, n := range strings.Split(pod.Annotations["eks.amazonaws.com/skip-containers"], ",") {
		skip[strings.TrimSpace(n)] = true
	}
	for _, c := range append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...) {
		if c.Name == "provenanced" && skip[c.Name] {
			t.Error("the sidecar is skipped: it would get no credentials")
		}
		if c.Name != "provenanced" && !skip[c.Name] {
			t.Errorf("container %s receives the IRSA credentials: list it in eks.amazonaws.com/skip-containers", c.Name)
		}
	}
	if m.sa.Annotations["eks.amazonaws.com/role-arn"] == "" || spec.ServiceAccountName != m.sa.Name {
		t.Error("the pod does not use the ServiceAccount with the role")
	}

	// Images pinned by version.
	for _, c := range append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...) {
		if !regexp.MustCompile(`^[^:@]+(:[0-9][A-Za-z0-9._-]*|@sha256:[0-9a-f]{64})$`).MatchString(c.Image) {
			t.Errorf("container %s: image %s is not pinned by version", c.Name, c.Image)
		}
	}

	// Memory request above the daemon's peak RSS as measured under load.
	peak := measuredPeakRSS(t)
	req := sidecar.Resources.Requests[corev1.ResourceMemory]
	if req.Cmp(peak) <= 0 {
		t.Errorf("memory request %s is not above the measured peak RSS %s (bench/results.md)", req.String(), peak.String())
	}
	if lim, ok := sidecar.Resources.Limits[corev1.ResourceMemory]; !ok || lim.Cmp(req) < 0 {
		t.Errorf("memory limit %v below the request %s", lim.String(), req.String())
	}

	// The Service reaches the metrics port of these pods (the NetworkPolicies: below).
	if !selects(m.service.Spec.Selector, pod.Labels) || len(m.service.Spec.Ports) != 1 || m.service.Spec.Ports[0].TargetPort.String() != "metrics" {
		t.Errorf("the Service does not select the pods' metrics port: %+v", m.service.Spec)
	}
}

func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// measuredPeakRSS is the largest "daemon peak RSS" of bench/results.md.
func measuredPeakRSS(t *testing.T) resource.Quantity {
	t.Helper()
	f, err := os.Open("../bench/results.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	re := regexp.MustCompile(`\| ([0-9.]+) MiB \|`)
	max := 0.0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		for _, m := range re.FindAllStringSubmatch(sc.Text(), -1) {
			if v, err := strconv.ParseFloat(m[1], 64); err == nil && v > max {
				max = v
			}
		}
	}
	if max == 0 {
		t.Fatal("no peak RSS in bench/results.md")
	}
	return *resource.NewQuantity(int64(max*(1<<20)), resource.BinarySI)
}

// The restricted Pod Security Standard, as the admission controller checks it
// (kubernetes.io/docs/concepts/security/pod-security-standards), for every container,
// plus a read-only root file system.
func TestKubernetesRestrictedPodSecurity(t *testing.T) {
	m := loadSidecar(t)
	for _, problem := range restrictedViolations(m.deployment.Spec.Template.Spec) {
		t.Error(problem)
	}
	// The checker finds what it should: a container without a securityContext fails.
	bad := m.deployment.Spec.Template.Spec.DeepCopy()
	bad.Containers[0].SecurityContext = nil
	bad.SecurityContext.SeccompProfile = nil
	if len(restrictedViolations(*bad)) < 3 {
		t.Errorf("the restricted check missed a container without securityContext: %v", restrictedViolations(*bad))
	}
}

func restrictedViolations(spec corev1.PodSpec) []string {
	var out []string
	psc := spec.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	if spec.HostNetwork || spec.HostPID || spec.HostIPC {
		out = append(out, "host namespaces are used")
	}
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			out = append(out, "hostPath volume "+v.Name)
		}
		if v.ConfigMap == nil && v.EmptyDir == nil && v.Projected == nil && v.Secret == nil && v.DownwardAPI == nil &&
			v.PersistentVolumeClaim == nil && v.Ephemeral == nil && v.CSI == nil {
			out = append(out, "volume "+v.Name+" is of a type restricted does not allow")
		}
	}
	if psc.RunAsUser != nil && *psc.RunAsUser == 0 {
		out = append(out, "the pod runs as uid 0")
	}
	all := append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...)
	for _, c := range all {
		sc := c.SecurityContext
		if sc == nil {
			sc = &corev1.SecurityContext{}
		}
		bad := func(f string, a ...any) {
			out = append(out, fmt.Sprintf("container %s: ", c.Name)+fmt.Sprintf(f, a...))
		}
		if sc.Privileged != nil && *sc.Privileged {
			bad("privileged")
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			bad("allowPrivilegeEscalation must be false")
		}
		nonRoot := (sc.RunAsNonRoot != nil && *sc.RunAsNonRoot) || (sc.RunAsNonRoot == nil && psc.RunAsNonRoot != nil && *psc.RunAsNonRoot)
		if !nonRoot {
			bad("runAsNonRoot must be true")
		}
		if sc.RunAsUser != nil && *sc.RunAsUser == 0 {
			bad("runAsUser 0")
		}
		seccomp := sc.SeccompProfile
		if seccomp == nil {
			seccomp = psc.SeccompProfile
		}
		if seccomp == nil || (seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault && seccomp.Type != corev1.SeccompProfileTypeLocalhost) {
			bad("seccompProfile must be RuntimeDefault or Localhost")
		}
		dropsAll := false
		if sc.Capabilities != nil {
			for _, d := range sc.Capabilities.Drop {
				dropsAll = dropsAll || d == "ALL"
			}
			for _, a := range sc.Capabilities.Add {
				if a != "NET_BIND_SERVICE" {
					bad("adds capability %s", a)
				}
			}
		}
		if !dropsAll {
			bad("capabilities must drop ALL")
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			bad("readOnlyRootFilesystem must be true")
		}
		for _, p := range c.Ports {
			if p.HostPort != 0 {
				bad("hostPort %d", p.HostPort)
			}
		}
	}
	return out
}

// podMonitor is the part of the Prometheus Operator's PodMonitor the example uses; the
// CRD's Go types would bring the operator's module into this one for three fields.
type podMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Selector            metav1.LabelSelector `json:"selector"`
		JobLabel            string               `json:"jobLabel"`
		PodMetricsEndpoints []struct {
			Port        string          `json:"port"`
			Path        string          `json:"path"`
			Interval    string          `json:"interval"`
			Relabelings []relabelConfig `json:"relabelings"`
		} `json:"podMetricsEndpoints"`
	} `json:"spec"`
}

// relabelConfig is a Prometheus relabeling as the operator's CRDs spell it.
type relabelConfig struct {
	SourceLabels []string `json:"sourceLabels"`
	Separator    *string  `json:"separator"`
	TargetLabel  string   `json:"targetLabel"`
	Regex        string   `json:"regex"`
	Replacement  *string  `json:"replacement"`
	Action       string   `json:"action"`
}

func TestKubernetesPodMonitor(t *testing.T) {
	docs := splitYAML(t, "kubernetes/podmonitor.yaml")
	if len(docs) != 1 {
		t.Fatalf("%d documents", len(docs))
	}
	var pm podMonitor
	strict(t, docs[0], &pm)
	if pm.APIVersion != "monitoring.coreos.com/v1" || pm.Kind != "PodMonitor" {
		t.Errorf("%s %s", pm.APIVersion, pm.Kind)
	}
	m := loadSidecar(t)
	if !selects(pm.Spec.Selector.MatchLabels, m.deployment.Spec.Template.Labels) {
		t.Error("the PodMonitor does not select the Deployment's pods")
	}
	if len(pm.Spec.PodMetricsEndpoints) != 1 || pm.Spec.PodMetricsEndpoints[0].Port != "metrics" || pm.Spec.PodMetricsEndpoints[0].Path != "/metrics" {
		t.Errorf("endpoints %+v", pm.Spec.PodMetricsEndpoints)
	}
}

// The Kubernetes modules are test-only: they never reach the daemon's binary.
func TestKubernetesModulesNotInBinary(t *testing.T) {
	out, err := runGo(t, "version", "-m", daemonBin)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(out, []byte("github.com/ib1/provenanced")) {
		t.Fatalf("go version -m printed no module list:\n%s", out)
	}
	for _, mod := range []string{"k8s.io/", "sigs.k8s.io/"} {
		if bytes.Contains(out, []byte(mod)) {
			t.Errorf("the daemon binary contains %s modules", mod)
		}
	}
}
