package testenv

import (
	"os/exec"
	"syscall"
)

// dieWithParent has the kernel kill the emulator if the test process dies without its
// cleanups (a test timeout's panic), so that no emulator outlives its test.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
