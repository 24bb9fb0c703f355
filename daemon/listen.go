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
)

// unixSocket is the daemon's Unix socket: the listener and the file it owns.
type unixSocket struct {
	*net.UnixListener
	path string
	info os.FileInfo // the socket file as created, to remove only our own on exit
}

// maxSocketPath is sun_path's size on Linux, less the terminating NUL.
const maxSocketPath = 107

// listenUnix creates the socket at path with exactly mode. The socket is bound inside a
// fresh folder that only the daemon can enter, given its mode there, and then linked to
// path: no client can ever reach it with looser permissions (the race of Listen then
// chmod), and the link fails rather than replace a socket that appeared meanwhile.
// A socket file left by a crashed daemon is replaced; one that another process answers on
// is an error.
func listenUnix(path string, mode os.FileMode) (*unixSocket, error) {
	if err := socketPathProblem(path); err != nil {
		return nil, err
	}
	dir := filepath.Dir(path)
	if err := removeStale(path); err != nil {
		return nil, err
	}
	tmpDir, err := os.MkdirTemp(dir, ".provenanced-")
	if err != nil {
		return nil, fmt.Errorf("socket %s: cannot create a private folder beside it: %w", path, err)
	}
	defer os.RemoveAll(tmpDir)
	tmp := filepath.Join(tmpDir, "s")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	l.SetUnlinkOnClose(false) // the link at tmp is gone; Close removes path itself
	fail := func(err error) (*unixSocket, error) {
		l.Close()
		return nil, err
	}
	if err := os.Chmod(tmp, mode); err != nil {
		return fail(fmt.Errorf("socket %s: cannot set mode %04o: %w", path, mode, err))
	}
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fail(fmt.Errorf("socket %s appeared while the daemon was starting; is another provenanced starting?", path))
		}
		return fail(fmt.Errorf("socket %s: %w", path, err))
	}
	info, err := os.Lstat(path)
	if err != nil {
		return fail(fmt.Errorf("socket %s: %w", path, err))
	}
	return &unixSocket{UnixListener: l, path: path, info: info}, nil
}

// removeStale removes path if it is a socket nobody listens on.
func removeStale(path string) error {
	st, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("socket %s: %w", path, err)
	}
	if st.Mode()&fs.ModeSocket == 0 {
		return fmt.Errorf("socket %s: a file that is not a socket is in the way (mode %s); the daemon will not remove it", path, st.Mode())
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("socket %s: another process is listening on it (another provenanced?); stop it or choose another path", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("socket %s: cannot tell whether it is in use: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("socket %s: cannot remove the stale socket of an earlier run: %w", path, err)
	}
	return nil
}

// Close stops listening and removes the socket file, unless it has been replaced by
// another process's meanwhile.
func (s *unixSocket) Close() error {
	err := s.UnixListener.Close()
	if st, serr := os.Lstat(s.path); serr == nil && os.SameFile(st, s.info) {
		if rerr := os.Remove(s.path); rerr != nil && err == nil {
			err = rerr
		}
	}
	return err
}
