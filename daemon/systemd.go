package daemon

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"unsafe"
)

// The two halves of systemd's protocol with a service, written here rather than taken
// from github.com/coreos/go-systemd: each is a few lines over the standard library
// (sd_notify(3) is one datagram, sd_listen_fds(3) is two variables and fds from 3 on),
// and the tests run them against the real counterparts (systemd-socket-activate, and a
// unixgram socket as NOTIFY_SOCKET), so a dependency would add code to trust without
// adding a check.

// sdNotify sends state ("READY=1", ...) to the service manager when it asked for it
// ($NOTIFY_SOCKET); without it, it does nothing. The variable is kept: every later
// state (RELOADING, STOPPING) goes to the same socket.
func sdNotify(state string) error {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return nil
	}
	if addr[0] != '/' && addr[0] != '@' {
		return fmt.Errorf("NOTIFY_SOCKET %q: only a Unix socket path or an abstract name (@...) is supported", addr)
	}
	// A name starting with @ is in the abstract namespace; the net package maps it.
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("NOTIFY_SOCKET: %w", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return fmt.Errorf("NOTIFY_SOCKET: %w", err)
	}
	return nil
}

// monotonicUsec is CLOCK_MONOTONIC in microseconds, the clock systemd wants with
// RELOADING=1 (MONOTONIC_USEC) to tell this reload from an earlier one. Go's time
// package keeps a monotonic reading but does not expose its origin.
func monotonicUsec() int64 {
	var ts syscall.Timespec
	const clockMonotonic = 1
	syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clockMonotonic, uintptr(unsafe.Pointer(&ts)), 0)
	return ts.Sec*1_000_000 + ts.Nsec/1_000
}

// inherited are the listeners systemd passed (socket activation).
type inherited struct {
	socket  *net.UnixListener
	http    net.Listener
	metrics net.Listener
}

// listenFDsStart is SD_LISTEN_FDS_START: the first passed fd.
const listenFDsStart = 3

// systemdListeners takes the sockets systemd passed ($LISTEN_PID is this process,
// $LISTEN_FDS of them from fd 3): a Unix stream socket becomes the socket listener, a
// TCP socket the HTTP listener, or the metrics listener when its name
// (FileDescriptorName=, in $LISTEN_FDNAMES) is "metrics". The variables are then unset,
// so that no child process takes the fds for its own.
func systemdListeners() (inherited, error) {
	var in inherited
	pid, fds := os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS")
	if fds == "" {
		return in, nil
	}
	names := strings.Split(os.Getenv("LISTEN_FDNAMES"), ":")
	defer func() {
		os.Unsetenv("LISTEN_PID")
		os.Unsetenv("LISTEN_FDS")
		os.Unsetenv("LISTEN_FDNAMES")
	}()
	if p, err := strconv.Atoi(pid); err != nil || p != os.Getpid() {
		return in, nil // meant for another process (the variables leaked through an exec)
	}
	n, err := strconv.Atoi(fds)
	if err != nil || n < 0 {
		return in, fmt.Errorf("LISTEN_FDS=%q is not a number of file descriptors", fds)
	}
	for i := range n {
		fd := listenFDsStart + i
		name := ""
		if i < len(names) {
			name = names[i]
		}
		syscall.CloseOnExec(fd)
		// net.FileListener takes a datagram socket too, and fails only at Accept.
		typ, terr := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_TYPE)
		acc, aerr := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_ACCEPTCONN)
		if terr != nil || aerr != nil || typ != syscall.SOCK_STREAM || acc != 1 {
			in.close()
			return inherited{}, fmt.Errorf("socket activation: fd %d (%q) is not a listening stream socket; use ListenStream= in the .socket unit", fd, name)
		}
		f := os.NewFile(uintptr(fd), "LISTEN_FD_"+strconv.Itoa(fd))
		l, err := net.FileListener(f) // a dup; the original is closed below
		f.Close()
		if err != nil {
			in.close()
			return inherited{}, fmt.Errorf("socket activation: fd %d (%q) is not a listening stream socket: %v; use ListenStream= in the .socket unit", fd, name, err)
		}
		var slot *net.Listener
		switch l := l.(type) {
		case *net.UnixListener:
			if in.socket != nil {
				l.Close()
				in.close()
				return inherited{}, fmt.Errorf("socket activation: more than one Unix socket passed (fd %d); provenanced serves one", fd)
			}
			in.socket = l
			continue
		case *net.TCPListener:
			slot = &in.http
			if name == "metrics" {
				slot = &in.metrics
			}
		default:
			l.Close()
			in.close()
			return inherited{}, fmt.Errorf("socket activation: fd %d (%q) is a %T, not a Unix or TCP stream socket", fd, name, l)
		}
		if *slot != nil {
			l.Close()
			in.close()
			return inherited{}, fmt.Errorf("socket activation: two TCP sockets passed for the same listener (fd %d); name the metrics one FileDescriptorName=metrics", fd)
		}
		*slot = l
	}
	return in, nil
}

func (in inherited) close() {
	if in.socket != nil {
		in.socket.Close()
	}
	for _, l := range []net.Listener{in.http, in.metrics} {
		if l != nil {
			l.Close()
		}
	}
}
