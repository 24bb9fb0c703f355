package deploy

import (
	"fmt"
	"os"
	"os/exec"
	"testing"

	"github.com/ib1/provenanced/testenv"
)

// daemonBin is the provenanced binary, in a directory every user may enter: some tests
// run it as another user, as a container runtime would.
var daemonBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "provenanced-deploy-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Chmod(dir, 0o755)
	daemonBin, err = testenv.BuildDaemon(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func runGo(t *testing.T, args ...string) ([]byte, error) {
	t.Helper()
	return exec.Command("go", args...).CombinedOutput()
}
