package deploy

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ib1/provenanced/testenv"
)

// syscallSet expands a systemd syscall group (systemd-analyze syscall-filter), its
// nested groups included.
func syscallSet(t *testing.T, sa, group string, into map[string]bool) {
	t.Helper()
	out, err := exec.Command(sa, "syscall-filter", group).Output()
	if err != nil {
		t.Fatalf("systemd-analyze syscall-filter %s: %v", group, err)
	}
	for _, line := range strings.Split(string(out), "\n")[1:] {
		name := strings.TrimSpace(line)
		switch {
		case name == "" || strings.HasPrefix(name, "#"):
		case strings.HasPrefix(name, "@"):
			syscallSet(t, sa, name, into)
		default:
			into[name] = true
		}
	}
}

// unitSyscallFilter is what the unit's SystemCallFilter= lines allow: the groups of the
// allow list, minus those of the "~" lines.
func unitSyscallFilter(t *testing.T, sa string) map[string]bool {
	t.Helper()
	s := unitSettings(t, "systemd/provenanced.service")
	allowed, denied := map[string]bool{}, map[string]bool{}
	for _, v := range s["Service.SystemCallFilter"] {
		set := allowed
		if strings.HasPrefix(v, "~") {
			set, v = denied, v[1:]
		}
		for _, g := range strings.Fields(v) {
			if strings.HasPrefix(g, "@") {
				syscallSet(t, sa, g, set)
			} else {
				set[g] = true
			}
		}
	}
	if len(allowed) < 100 {
		t.Fatalf("the unit's filter allows only %d system calls?", len(allowed))
	}
	for n := range denied {
		delete(allowed, n)
	}
	return allowed
}

// The daemon's system calls, from start through signing over both listeners, records,
// metrics and readiness to a clean stop, are all within the unit's SystemCallFilter: a
// call outside it would fail with EPERM under systemd. strace records them, for a PEM key
// and for a key in a SoftHSM token (the PKCS#11 module's own calls included). Not
// covered: a KMS key (the SDK's calls are Go's network calls, as the HTTP listener's)
// and other vendors' modules.
func TestSystemCallFilterCoversTheDaemon(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
	}{{"pem", nil}, {"pkcs11", []string{"-hsm"}}} {
		t.Run(tc.name, func(t *testing.T) { syscallsWithin(t, tc.args) })
	}
}

func syscallsWithin(t *testing.T, extra []string) {
	sa := systemdAnalyze(t)
	st, err := exec.LookPath("strace")
	if err != nil {
		t.Fatal("strace is missing: apt-get install strace (.ci/deps does)")
	}
	allowed := unitSyscallFilter(t, sa)
	dir := t.TempDir()
	addr, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	summary := filepath.Join(dir, "strace.txt")
	cmd := exec.Command(st, append([]string{"-f", "-c", "-U", "name,calls", "-o", summary, daemonBin, "serve", "-dev", filepath.Join(dir, "dev")}, extra...)...)
	cmd.Env = append(os.Environ(), "PROVENANCED_HTTP="+addr)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
		}
	}()
	base := "http://" + addr
	deadline := time.Now().Add(60 * time.Second)
	for {
		if resp, err := http.Get(base + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the daemon under strace never became ready:\n%s", stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	digest := sha256.Sum256([]byte("seccomp"))
	for _, args := range [][]string{
		{"sign", "-url", base, "-key", "signing", "-digest", fmt.Sprintf("%x", digest)},
		{"sign", "-socket", filepath.Join(dir, "dev", "provenanced.sock"), "-key", "signing", "-digest", fmt.Sprintf("%x", digest)},
		{"keys", "-url", base},
		{"health", "-ready", "-url", base},
	} {
		if out, err := exec.Command(daemonBin, args...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	body := `{"steps":[{"type":"origin","scheme":"https://registry.core.sandbox.trust.ib1.org/scheme/perseus","a":"Zürich"}]}`
	resp, err := http.Post(base+"/v1/records", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("POST /v1/records: %s", resp.Status)
	}
	if resp, err := http.Get(base + "/metrics"); err == nil {
		resp.Body.Close()
	}
	// SIGTERM to the daemon, strace's child.
	children, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", cmd.Process.Pid, cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.Fields(string(children))[0])
	if err != nil {
		t.Fatal(err)
	}
	syscall.Kill(pid, syscall.SIGTERM)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the daemon did not stop cleanly: %v\n%s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the daemon did not stop on SIGTERM")
	}
	data, err := os.ReadFile(summary)
	if err != nil {
		t.Fatal(err)
	}
	used := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^([a-z_0-9]+)\s+\d+\s*$`).FindAllStringSubmatch(string(data), -1) {
		if m[1] != "total" {
			used[m[1]] = true
		}
	}
	if len(used) < 20 || !used["accept4"] || !used["write"] {
		t.Fatalf("strace recorded too little (%d calls):\n%s", len(used), data)
	}
	var outside []string
	for n := range used {
		if !allowed[n] {
			outside = append(outside, n)
		}
	}
	sort.Strings(outside)
	if len(outside) > 0 {
		t.Errorf("the daemon made system calls the unit's SystemCallFilter refuses: %v", outside)
	}
	t.Logf("%d distinct system calls, all allowed", len(used))
}
