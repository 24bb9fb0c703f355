package daemon

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ib1/provenanced/conf"
)

// socketPathProblem is what is wrong with path as the daemon's socket that only the
// configuration, or the folder it names, can fix: too long, its folder missing or not
// writable (a read-only file system under ProtectSystem=strict, say), a file that is not a
// socket in the way. Serve reports it as a configuration error (exit status 2), and serve
// -check finds it without listening.
func socketPathProblem(path string) error {
	if len(path) > maxSocketPath {
		return fmt.Errorf("socket path %s is %d bytes; Unix sockets allow at most %d: choose a shorter path", path, len(path), maxSocketPath)
	}
	dir := filepath.Dir(path)
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return fmt.Errorf("socket %s: its folder %s does not exist; create it (systemd: RuntimeDirectory=provenanced)", path, dir)
	}
	if err := unix.Access(dir, unix.W_OK|unix.X_OK); err != nil {
		return fmt.Errorf("socket %s: the daemon cannot create files in its folder %s: %v; give its user that folder (systemd: RuntimeDirectory=provenanced, or ReadWritePaths= under ProtectSystem=strict)", path, dir, err)
	}
	if st, err := os.Lstat(path); err == nil && st.Mode()&fs.ModeSocket == 0 {
		return fmt.Errorf("socket %s: a file that is not a socket is in the way (mode %s); the daemon will not remove it", path, st.Mode())
	}
	return nil
}

// tcpListenProblem tells a TCP address that the configuration must change (exit status
// 2: no such address on this machine, a port the user may not bind, a malformed address)
// from one that is only busy now, which a restart may find free.
func tcpListenProblem(err error) bool {
	return !errors.Is(err, syscall.EADDRINUSE)
}

// CheckListeners checks what serve would listen on, without serving: the socket's path
// and folder (a socket is created and removed in a private folder beside it, as serve
// does), and each TCP address, bound and released. A configuration error is a
// *conf.Error; what is only busy now (a running daemon's own socket or port, when the
// check runs before a reload) is a note, not a failure.
func CheckListeners(cfg *conf.Config) (notes []string, err error) {
	s := &cfg.Server
	if s.Socket != "" {
		note, err := checkSocket(s.Socket)
		if err != nil {
			return nil, cfg.Errorf("server.socket", "%v", err)
		}
		if note != "" {
			notes = append(notes, note)
		}
	}
	for _, l := range []struct{ key, addr string }{{"server.http", s.HTTP}, {"server.metrics_http", s.MetricsHTTP}} {
		if l.addr == "" {
			continue
		}
		ln, err := net.Listen("tcp", l.addr)
		switch {
		case err == nil:
			ln.Close()
		case tcpListenProblem(err):
			return nil, cfg.Errorf(l.key, "cannot listen on %s: %v", l.addr, err)
		default:
			notes = append(notes, fmt.Sprintf("%s: %s is in use now (by the running daemon?); serve cannot listen there until it is free", l.key, l.addr))
		}
	}
	return notes, nil
}

// checkSocket is CheckListeners' part for the Unix socket.
func checkSocket(path string) (note string, err error) {
	if err := socketPathProblem(path); err != nil {
		return "", err
	}
	tmpDir, err := os.MkdirTemp(filepath.Dir(path), ".provenanced-check-")
	if err != nil {
		return "", fmt.Errorf("socket %s: cannot create a private folder beside it: %w", path, err)
	}
	defer os.RemoveAll(tmpDir)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(tmpDir, "s"), Net: "unix"})
	if err != nil {
		return "", fmt.Errorf("socket %s: cannot create a socket in its folder: %w", path, err)
	}
	l.Close()
	if _, err := os.Lstat(path); err != nil {
		return "", nil
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err != nil {
		return "", nil // a stale socket, which serve replaces
	}
	c.Close()
	return fmt.Sprintf("server.socket: a process listens on %s now (the running daemon?); serve cannot listen there until it stops", path), nil
}
