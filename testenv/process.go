package testenv

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

// TB is the part of testing.TB the helpers use; testenv does not import "testing"
// because the daemon binary links it (serve -dev).
type TB interface {
	Helper()
	TempDir() string
	Cleanup(func())
	Fatalf(format string, args ...any)
	Logf(format string, args ...any)
}

// ModuleRoot is the folder of this module's go.mod.
func ModuleRoot() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", fmt.Errorf("testenv: cannot locate the module")
	}
	return filepath.Dir(filepath.Dir(file)), nil
}

// BuildDaemon builds the provenanced binary into dir and returns its path.
func BuildDaemon(dir string) (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "provenanced")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/provenanced")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("testenv: go build: %v\n%s", err, out)
	}
	return bin, nil
}

// FreePort returns a loopback address with a port that was free a moment ago.
func FreePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// Process is a daemon run as a child process, as an operator would run it.
type Process struct {
	Cmd    *exec.Cmd
	Socket string // "" when it has none
	HTTP   string // host:port, "" when it has none
	stderr *SyncBuffer
	done   chan struct{}
	err    error
}

// StartDaemon runs bin with args and extra environment, and waits until /healthz answers
// on its socket (or, without one, on TCP). The process is killed at cleanup if it still
// runs.
func StartDaemon(t TB, bin string, socket, httpAddr string, env []string, args ...string) *Process {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	p := &Process{Cmd: cmd, Socket: socket, HTTP: httpAddr, stderr: &SyncBuffer{}, done: make(chan struct{})}
	cmd.Stderr = p.stderr
	cmd.Stdout = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			cmd.Process.Kill()
			<-p.done
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	c := p.Client()
	for {
		select {
		case <-p.done:
			t.Fatalf("the daemon exited at start: %v\n%s", p.err, p.stderr.String())
		default:
		}
		if resp, err := c.Get(p.URL("/healthz")); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the daemon did not answer /healthz within 20s\n%s", p.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Client returns an HTTP client that reaches the daemon on its socket, or on TCP.
func (p *Process) Client() *http.Client {
	if p.Socket == "" {
		return &http.Client{Timeout: 30 * time.Second}
	}
	return UnixClient(p.Socket)
}

// URL is the URL of path on the daemon for Client.
func (p *Process) URL(path string) string {
	if p.Socket == "" {
		return "http://" + p.HTTP + path
	}
	return "http://provenanced" + path
}

// UnixClient returns an HTTP client whose every connection goes to socket.
func UnixClient(socket string) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		MaxIdleConnsPerHost: 64,
	}}
}

// Signal sends sig to the daemon.
func (p *Process) Signal(sig syscall.Signal) error { return p.Cmd.Process.Signal(sig) }

// Wait waits up to timeout for the daemon to exit and returns its exit code (-1 when it
// was killed by a signal or did not exit in time).
func (p *Process) Wait(timeout time.Duration) (int, error) {
	select {
	case <-p.done:
	case <-time.After(timeout):
		return -1, fmt.Errorf("the daemon did not exit within %v", timeout)
	}
	if p.Cmd.ProcessState == nil {
		return -1, p.err
	}
	return p.Cmd.ProcessState.ExitCode(), nil
}

// Output is what the daemon wrote to stderr and stdout so far.
func (p *Process) Output() string { return p.stderr.String() }

// Run runs bin to completion and returns its combined output and exit code.
func Run(bin string, env []string, args ...string) (string, int) {
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	out, _ := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), cmd.ProcessState.ExitCode()
}

// SyncBuffer is an output that a process (or a logger) writes while a test reads it.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
