package deploy

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// HEALTHCHECK is part of Docker's image format, not the OCI one: podman and buildah
// build OCI images by default, and the image they made had no health check. make image
// asks them for Docker's format, and docker (which has no --format) for nothing; the
// build commands the Containerfiles' comments give do the same. No container engine runs
// here: what make would run is read with make -n.
func TestImageBuildKeepsTheHealthCheck(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Fatal("make is missing: apt-get install make (.ci/deps does)")
	}
	for engine, want := range map[string]bool{"podman": true, "/usr/bin/podman": true, "buildah": true, "docker": false} {
		cmd := exec.Command("make", "-s", "-n", "image", "CONTAINER="+engine)
		cmd.Dir = ".."
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("make -n image CONTAINER=%s: %v\n%s", engine, err, out)
		}
		line := strings.TrimSpace(string(out))
		if !strings.HasPrefix(line, engine+" build ") {
			t.Fatalf("make -n image CONTAINER=%s runs %q", engine, line)
		}
		if got := strings.Contains(line, " --format docker "); got != want {
			t.Errorf("make image with %s: --format docker %v, want %v: %s", engine, got, want, line)
		}
	}
	for _, f := range []string{"container/Containerfile", "container/Containerfile.pkcs11"} {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, cmd := range regexp.MustCompile(`(?m)^#\s+(podman|buildah) build .*$`).FindAllString(string(data), -1) {
			if !strings.Contains(cmd, "--format docker") {
				t.Errorf("%s: %s drops the HEALTHCHECK: add --format docker", f, strings.TrimSpace(strings.TrimPrefix(cmd, "#")))
			}
		}
	}
}
