package daemon

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSocketHasItsModeAndIsRemoved(t *testing.T) {
	for _, mode := range []os.FileMode{0o600, 0o660, 0o666} {
		path := filepath.Join(t.TempDir(), "p.sock")
		s, err := listenUnix(path, mode)
		if err != nil {
			t.Fatal(err)
		}
		st, err := os.Lstat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode()&os.ModeSocket == 0 || st.Mode().Perm() != mode {
			t.Errorf("socket mode %v, want %v", st.Mode(), mode)
		}
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		c.Close()
		entries, _ := os.ReadDir(filepath.Dir(path))
		if len(entries) != 1 {
			t.Errorf("the private folder was left behind: %v", entries)
		}
		s.Close()
		if _, err := os.Lstat(path); !os.IsNotExist(err) {
			t.Errorf("socket file still there after Close: %v", err)
		}
	}
}

func TestStaleSocketIsReplaced(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.sock")
	// A crashed daemon leaves its socket file with nobody listening.
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("no stale socket to test with: %v", err)
	}
	s, err := listenUnix(path, 0o600)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	defer s.Close()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

func TestLiveSocketIsAnError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.sock")
	first, err := listenUnix(path, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	go func() {
		for {
			c, err := first.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	if s, err := listenUnix(path, 0o600); err == nil {
		s.Close()
		t.Fatal("a second daemon took over a live socket")
	} else if !strings.Contains(err.Error(), "another process is listening") {
		t.Errorf("err = %v", err)
	}
	if _, err := net.Dial("unix", path); err != nil {
		t.Errorf("the first daemon's socket was disturbed: %v", err)
	}
}

func TestNotASocketIsLeftAlone(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.sock")
	os.WriteFile(path, []byte("precious"), 0o600)
	if s, err := listenUnix(path, 0o600); err == nil {
		s.Close()
		t.Fatal("listened over a regular file")
	} else if !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("err = %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "precious" {
		t.Error("the file was changed")
	}
}

func TestSocketErrors(t *testing.T) {
	if _, err := listenUnix("/nonexistent-dir/p.sock", 0o600); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("missing folder: %v", err)
	}
	long := "/tmp/" + strings.Repeat("x", 120) + ".sock"
	if _, err := listenUnix(long, 0o600); err == nil || !strings.Contains(err.Error(), "at most 107") {
		t.Errorf("long path: %v", err)
	}
}
