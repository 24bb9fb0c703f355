package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ib1/provenanced/testenv"
)

type harness struct {
	cfg      settings
	self     string
	rows     []row
	notes    []string
	failures int
}

// backendSetup is a backend made ready for a run: the daemon's config and the
// in-process baseline of single signatures with the same key.
type backendSetup struct {
	config   string                                  // the daemon's TOML (socket and http set)
	baseline func(clients, n int) testenv.LoadResult // in-process signatures
	// allCores: the baseline always runs on every core (ECDSA in memory), whatever the
	// client count.
	allCores bool
	extra    func(h *harness, d *daemonProc) error // backend-specific rows
	clients  []int                                 // client counts, when not -clients
	cleanup  func()
}

// daemonProc is the real daemon, started for a backend.
type daemonProc struct {
	cmd     *exec.Cmd
	socket  string
	http    string
	startup time.Duration // exec to /readyz 200
	stderr  *bytes.Buffer
}

func (h *harness) run(backend string) error {
	dir := filepath.Join(h.cfg.work, backend)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var s *backendSetup
	var err error
	switch backend {
	case "pem":
		s, err = setupPEM(dir)
	case "awskms":
		s, err = setupKMS(dir)
	case "pkcs11":
		s, err = setupPKCS11(dir)
	case "tpm":
		s, err = setupTPM(dir)
	case "p11kit":
		s, err = setupP11Kit(dir)
	default:
		return fmt.Errorf("unknown backend %q", backend)
	}
	if err != nil {
		return err
	}
	if s.cleanup != nil {
		defer s.cleanup()
	}
	d, err := h.startDaemon(s.config, dir)
	if err != nil {
		return err
	}
	defer d.stop()
	h.note(fmt.Sprintf("%s: from `serve -config` to `/readyz` 200 in %s.", backend, d.startup.Round(100*time.Microsecond)))
	counts := h.cfg.clients
	if s.clients != nil {
		counts = s.clients
	}
	for _, transport := range []string{"unix", "tcp"} {
		for _, c := range counts {
			r := h.drive(d, transport, c, signBody(), "/v1/keys/signing/sign", 1)
			r.Backend, r.Workload = backend, "sign"
			clients := c
			if s.allCores {
				clients = runtime.GOMAXPROCS(0)
			}
			base := s.baseline(clients, h.cfg.n)
			r.Baseline, r.BaseP50 = base.OpsPerSec(), base.P50
			h.add(r)
		}
	}
	if s.extra != nil {
		if err := s.extra(h, d); err != nil {
			return err
		}
	}
	return nil
}

func (h *harness) add(r row) {
	h.rows = append(h.rows, r)
	fmt.Fprintf(os.Stderr, "%-7s %-5s %-12s %3d clients: %8.0f ops/s  p50 %-9s p99 %-9s baseline %.0f\n",
		r.Backend, r.Transport, r.Workload, r.Clients, r.Ops, dur(r.P50), dur(r.P99), r.Baseline)
}

func (h *harness) note(n string) { h.notes = append(h.notes, n) }

// startDaemon runs the daemon binary on config and waits for /readyz.
func (h *harness) startDaemon(config, dir string) (*daemonProc, error) {
	sock := filepath.Join(dir, "provenanced.sock")
	addr, err := testenv.FreePort()
	if err != nil {
		return nil, err
	}
	d := &daemonProc{socket: sock, http: addr, stderr: &bytes.Buffer{}}
	d.cmd = exec.Command(h.cfg.bin, "serve", "-config", config)
	d.cmd.Env = append(os.Environ(), "PROVENANCED_SOCKET="+sock, "PROVENANCED_HTTP="+addr)
	// The daemon logs a line per request, as in production; to a file, as journald would
	// take it, not to a pipe the harness must drain.
	logFile, err := os.Create(filepath.Join(dir, "daemon.log"))
	if err != nil {
		return nil, err
	}
	d.cmd.Stderr = logFile
	start := time.Now()
	if err := d.cmd.Start(); err != nil {
		return nil, err
	}
	c := testenv.UnixClient(sock)
	for {
		resp, err := c.Get("http://provenanced/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				d.startup = time.Since(start)
				return d, nil
			}
		}
		if time.Since(start) > 30*time.Second {
			d.stop()
			log, _ := os.ReadFile(logFile.Name())
			return nil, fmt.Errorf("the daemon was not ready within 30 s:\n%s", log)
		}
		time.Sleep(200 * time.Microsecond)
	}
}

func (d *daemonProc) stop() {
	d.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { d.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		d.cmd.Process.Kill()
		<-done
	}
}

// resetPeakRSS sets the process's high-water mark of resident memory (VmHWM) back to
// its resident memory now, so that the next reading is this row's peak alone
// (proc(5), clear_refs: 5).
func resetPeakRSS(pid int) {
	os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

// memory reads the process's peak resident memory since the last reset (VmHWM) and its
// anonymous resident memory now (RssAnon: the heap and stacks, without the binary's
// mapped pages, whose size depends on how the kernel maps a fresh file).
func memory(pid int) (peak, anon int64) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmHWM:":
			peak = kb << 10
		case "RssAnon:":
			anon = kb << 10
		}
	}
	return peak, anon
}

func signBody() []byte {
	d := sha256.Sum256([]byte("provenanced bench"))
	return []byte(`{"digest":"` + base64.StdEncoding.EncodeToString(d[:]) + `"}`)
}

// drive sends n POSTs of body to path from clients clients and measures them. per is
// the number of operations one request stands for (a batch's size).
func (h *harness) drive(d *daemonProc, transport string, clients int, body []byte, path string, per int) row {
	return h.driveAt(d.cmd.Process.Pid, d.socket, d.http, transport, clients, body, path, per, h.cfg.n/per)
}

// driveAt measures the server process pid on its socket or address: the rate and latency
// the load generator sees, and the server's own CPU time per operation, which the load
// generator on the same cores does not distort.
func (h *harness) driveAt(pid int, socket, addr, transport string, clients int, body []byte, path string, per, n int) row {
	network, target := "unix", socket
	if transport == "tcp" {
		network, target = "tcp", addr
	}
	p := testenv.NewPoster(network, target, path, body, clients)
	defer p.Close()
	op := func(int) error { return p.Do() }
	// Warm both ends before measuring.
	testenv.Load(clients, clients*8, op)
	if n < clients {
		n = clients
	}
	resetPeakRSS(pid)
	cpu0 := cpuTime(pid)
	res := testenv.Load(clients, n, op)
	cpu := cpuTime(pid) - cpu0
	peak, anon := memory(pid)
	if res.Errors > 0 {
		h.failures++
		fmt.Fprintf(os.Stderr, "%s %s: %d errors, first: %v\n", transport, path, res.Errors, res.FirstError)
	}
	r := row{Transport: transport, Clients: clients, Ops: res.OpsPerSec() * float64(per), P50: res.P50, P99: res.P99, PeakRSS: peak, AnonRSS: anon}
	if ops := (res.Ops - res.Errors) * per; ops > 0 && cpu > 0 {
		r.CPU = cpu / time.Duration(ops)
	}
	return r
}

// cpuTime is a process's user and system CPU time so far (/proc/PID/stat, fields 14 and
// 15, in USER_HZ ticks, which Linux fixes at 100 a second).
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name, field 2, is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 > len(b) {
		return 0
	}
	f := strings.Fields(string(b[i+2:])) // f[0] is field 3
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100
}

// inProcess runs op on workers goroutines n times and returns the rate.
func inProcess(workers, n int, op func() error) testenv.LoadResult {
	return testenv.Load(workers, n, func(int) error { return op() })
}
