package daemon

import (
	"fmt"
	"net"
	"os"
	"syscall"

	"github.com/coreos/go-systemd/v22/activation"
	sddaemon "github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"
)

// systemd's protocol with a service comes from github.com/coreos/go-systemd: sd_notify(3)
// and sd_listen_fds(3) ($LISTEN_PID, $LISTEN_FDS, $LISTEN_FDNAMES, close-on-exec, the
// variables unset). What is ours is only which passed socket becomes which listener, and
// the refusal of a socket that is not a listening stream socket, which go-systemd's
// Listeners would skip without a word.

// sdNotify sends state ("READY=1", ...) to the service manager when it asked for it
// ($NOTIFY_SOCKET); without it, it does nothing. The variable is kept: every later
// state (RELOADING, STOPPING) goes to the same socket.
func sdNotify(state string) error {
	if _, err := sddaemon.SdNotify(false, state); err != nil {
		return fmt.Errorf("NOTIFY_SOCKET: %w", err)
	}
	return nil
}

// monotonicUsec is CLOCK_MONOTONIC in microseconds, the clock systemd wants with
// RELOADING=1 (MONOTONIC_USEC) to tell this reload from an earlier one. Go's time
// package keeps a monotonic reading but does not expose its origin.
func monotonicUsec() int64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Sec*1_000_000 + ts.Nsec/1_000
}

// inherited are the listeners systemd passed (socket activation).
type inherited struct {
	socket  *net.UnixListener
	http    net.Listener
	metrics net.Listener
}

// systemdListeners takes the sockets systemd passed: a Unix stream socket becomes the
// socket listener, a TCP socket the HTTP listener, or the metrics listener when its name
// (FileDescriptorName=) is "metrics".
func systemdListeners() (inherited, error) {
	var in inherited
	files := activation.Files(true)
	for i, f := range files {
		l, err := passedListener(f)
		f.Close() // net.FileListener took a dup
		if err == nil {
			err = in.take(l, f.Name())
		}
		if err != nil {
			for _, rest := range files[i+1:] {
				rest.Close()
			}
			in.close()
			return inherited{}, err
		}
	}
	return in, nil
}

// passedListener is the listener of a passed fd, which must be a listening stream socket
// (net.FileListener takes a datagram socket too, and fails only at Accept).
func passedListener(f *os.File) (net.Listener, error) {
	fd := int(f.Fd())
	typ, terr := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_TYPE)
	acc, aerr := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_ACCEPTCONN)
	if terr != nil || aerr != nil || typ != syscall.SOCK_STREAM || acc != 1 {
		return nil, fmt.Errorf("socket activation: fd %d (%q) is not a listening stream socket; use ListenStream= in the .socket unit", fd, f.Name())
	}
	l, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("socket activation: fd %d (%q) is not a listening stream socket: %v; use ListenStream= in the .socket unit", fd, f.Name(), err)
	}
	return l, nil
}

// take puts l, passed under name, in its slot.
func (in *inherited) take(l net.Listener, name string) error {
	var slot *net.Listener
	switch l := l.(type) {
	case *net.UnixListener:
		if in.socket != nil {
			l.Close()
			return fmt.Errorf("socket activation: more than one Unix socket passed (%q); provenanced serves one", name)
		}
		in.socket = l
		return nil
	case *net.TCPListener:
		slot = &in.http
		if name == "metrics" {
			slot = &in.metrics
		}
	default:
		l.Close()
		return fmt.Errorf("socket activation: %q is a %T, not a Unix or TCP stream socket", name, l)
	}
	if *slot != nil {
		l.Close()
		return fmt.Errorf("socket activation: two TCP sockets passed for the same listener (%q); name the metrics one FileDescriptorName=metrics", name)
	}
	*slot = l
	return nil
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
