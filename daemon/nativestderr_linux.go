//go:build linux

package daemon

import (
	"bufio"
	"os"
	"runtime/debug"
	"syscall"
)

// CaptureNativeStderr keeps what native code writes to the process's stderr out of the
// log stream, which also goes to stderr. PKCS#11 modules print to file descriptor 2 on
// their own (tpm2-pkcs11 its "ERROR: ..." lines, p11-kit its warnings), and those lines
// would land between the daemon's JSON lines and break whatever parses them.
//
// It moves the real stderr to a new descriptor (returned: the daemon logs there), puts
// a pipe at descriptor 2, and returns each line read from the pipe, for the daemon to log
// as a field of a JSON line. Go's crash output (a panic, a fatal error) goes to the real
// stderr as well, so that a dying process is not left talking into a pipe nobody reads.
// restore puts the real stderr back at descriptor 2 (for the error a failed start prints
// on its way out) and closes lines once the pipe is drained.
func CaptureNativeStderr() (out *os.File, lines <-chan string, restore func(), err error) {
	fd, err := syscall.Dup(2)
	if err != nil {
		return nil, nil, nil, err
	}
	syscall.CloseOnExec(fd)
	out = os.NewFile(uintptr(fd), "/dev/stderr")
	if err := debug.SetCrashOutput(out, debug.CrashOptions{}); err != nil {
		out.Close()
		return nil, nil, nil, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		out.Close()
		return nil, nil, nil, err
	}
	if err := syscall.Dup3(int(w.Fd()), 2, 0); err != nil {
		r.Close()
		w.Close()
		out.Close()
		return nil, nil, nil, err
	}
	// Descriptor 2 is now the pipe's only writer: putting stderr back ends the pipe.
	w.Close()
	restore = func() { syscall.Dup3(fd, 2, 0) }
	ch := make(chan string, 64)
	lines = ch
	go func() {
		s := bufio.NewScanner(r)
		s.Buffer(make([]byte, 4096), 64*1024)
		for s.Scan() {
			select {
			case ch <- s.Text():
			default: // a module printing faster than the log takes it loses lines, not time
			}
		}
		r.Close()
		close(ch)
	}()
	return out, lines, restore, nil
}
