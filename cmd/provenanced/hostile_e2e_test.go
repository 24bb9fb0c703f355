package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ib1/provenanced/testenv"
)

// The attacks of "A hostile neighbour gets nothing", each against the real binary, the
// attacker a process of user nobody (uid 65534) that is no client: it fills the disk
// with refusals, holds thousands of idle connections, verifies big records, while a
// configured client keeps signing and its latency is measured. The figures each test
// logs are the ones docs/security.md (Limits) states.

// hostile is a daemon with a socket every user may open, a TCP listener, a metrics
// listener, the clients "me" (root's group, on the socket) and "svc" (a token, on TCP),
// and an audit log.
type hostile struct {
	*testenv.Process
	dir, audit, token, metrics string
}

// startHostile starts it; auditFile "" puts the audit log in the config's folder; more
// adds to the configuration.
func startHostile(t *testing.T, auditFile string, more func(*testenv.Config)) *hostile {
	t.Helper()
	dir := t.TempDir()
	// nobody must reach the socket and run the test binary's copy.
	os.Chmod(dir, 0o755)
	os.Chmod(filepath.Dir(dir), 0o755)
	os.Chmod(filepath.Dir(daemonBin), 0o755)
	_, files, err := testenv.NewDevFiles(dir, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	h := &hostile{dir: dir, audit: auditFile, metrics: freeAddr(t)}
	if h.audit == "" {
		h.audit = filepath.Join(dir, "audit.jsonl")
	}
	h.token = newTokenFile(t, filepath.Join(dir, "svc.token"))
	addr := freeAddr(t)
	cfg := testenv.NewConfig().
		Table("server", "socket", "p.sock", "socket_mode", "0666", "http", addr, "metrics_http", h.metrics).
		Table("provenance", "root_ca", files.RootCA).
		Table("keys.signing", "backend", "pem", "private_key", files.PrivateKey, "certificates", files.Bundle).
		Table("clients.me", "gids", []int{0}, "keys", []string{"signing"}, "allow", []string{"sign"}).
		Table("clients.svc", "token_file", "svc.token", "keys", []string{"signing"}, "allow", []string{"sign", "records"}).
		Table("audit", "file", h.audit)
	if more != nil {
		more(cfg)
	}
	path := cfg.Write(t, dir)
	h.Process = testenv.StartDaemon(t, daemonBin, filepath.Join(dir, "p.sock"), addr, nil, "serve", "-config", path)
	return h
}

// newTokenFile makes a token with the command a user would run, and returns it.
func newTokenFile(t *testing.T, path string) string {
	t.Helper()
	if out, code := testenv.Run(daemonBin, nil, "token", "new", "-out", path); code != 0 {
		t.Fatalf("token new: %s", out)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// legit is a configured client signing one digest at a time over one kept-alive
// connection, on the socket (as "me") or over TCP (as "svc").
type legit struct {
	c   *http.Client
	url string
	tok string
}

func (h *hostile) legitSocket() *legit {
	return &legit{c: testenv.UnixClient(h.Socket), url: "http://localhost/v1/keys/signing/sign"}
}

func (h *hostile) legitTCP() *legit {
	return &legit{c: &http.Client{Timeout: 30 * time.Second}, url: "http://" + h.HTTP + "/v1/keys/signing/sign", tok: h.token}
}

func (l *legit) sign(i int) (time.Duration, error) {
	req, _ := http.NewRequest("POST", l.url, strings.NewReader(digestBody(i)))
	req.Header.Set("Content-Type", "application/json")
	if l.tok != "" {
		req.Header.Set("Authorization", "Bearer "+l.tok)
	}
	start := time.Now()
	resp, err := l.c.Do(req)
	if err != nil {
		return 0, err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	took := time.Since(start)
	if resp.StatusCode != 200 {
		return took, fmt.Errorf("%d %s", resp.StatusCode, b)
	}
	return took, nil
}

// latencies is what a legit client saw.
type latencies struct {
	took []time.Duration
	errs []error
}

func (l *latencies) p(q float64) time.Duration {
	if len(l.took) == 0 {
		return 0
	}
	s := slices.Clone(l.took)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

func (l *latencies) String() string {
	return fmt.Sprintf("%d signatures, p50 %v, p99 %v, %d errors", len(l.took), l.p(0.50).Round(10*time.Microsecond), l.p(0.99).Round(10*time.Microsecond), len(l.errs))
}

// keepSigning signs with l, pausing every between signatures, until stop is closed.
func keepSigning(l *legit, between time.Duration, stop <-chan struct{}) *latencies {
	out := &latencies{}
	for i := 0; ; i++ {
		select {
		case <-stop:
			return out
		default:
		}
		took, err := l.sign(i)
		if err != nil {
			out.errs = append(out.errs, err)
		} else {
			out.took = append(out.took, took)
		}
		time.Sleep(between)
	}
}

// attack runs this test binary as nobody in attacker mode (see init) with args, and
// returns its report. It runs until the attacker's -for is up.
func attack(t *testing.T, args ...string) map[string]any {
	t.Helper()
	cmd := exec.Command(asClientBin(t), args...)
	cmd.Env = append(os.Environ(), hostileEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobodyID, Gid: nobodyID}}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("the attacker %v: %v\n%s", args, err, stderr.String())
	}
	var report map[string]any
	if err := json.Unmarshal(out, &report); err != nil {
		t.Fatalf("the attacker's report %q: %v", out, err)
	}
	report["cpu_s"] = (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Round(10 * time.Millisecond).Seconds()
	return report
}

// processCPU is a process's user and system CPU time so far (/proc/PID/stat).
func processCPU(t *testing.T, pid int) time.Duration {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	var u, s int64
	fmt.Sscan(f[11], &u)
	fmt.Sscan(f[12], &s)
	return time.Duration(u+s) * time.Second / 100
}

// hostileEnv makes this test binary the attacker (see init).
const hostileEnv = "PROVENANCED_TEST_HOSTILE"

// reopenAfter: the attacker opens again after this long what the daemon closes.
var reopenAfter time.Duration

func init() {
	if os.Getenv(hostileEnv) != "1" {
		return
	}
	fs := flag.NewFlagSet("attacker", flag.ExitOnError)
	mode := fs.String("mode", "", "flood, idle or verify")
	sock := fs.String("socket", "", "the daemon's socket")
	addrs := fs.String("addr", "", "TCP addresses, comma-separated")
	n := fs.Int("n", 8, "connections per target")
	dur := fs.Duration("for", 10*time.Second, "how long")
	body := fs.String("body", "", "verify: the file whose content is POSTed")
	fs.DurationVar(&reopenAfter, "reopen", 100*time.Millisecond, "idle: open a closed connection again after this long (negative: never)")
	fs.Parse(os.Args[1:])
	var targets []string
	if *sock != "" {
		targets = append(targets, "unix:"+*sock)
	}
	for _, a := range strings.Split(*addrs, ",") {
		if a != "" {
			targets = append(targets, "tcp:"+a)
		}
	}
	var report any
	switch *mode {
	case "flood":
		report = flood(targets, *n, *dur)
	case "idle":
		report = holdIdle(targets, *n, *dur)
	case "verify":
		data, err := os.ReadFile(*body)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		report = verifyFlood(targets, *n, *dur, data)
	default:
		fmt.Fprintln(os.Stderr, "unknown mode", *mode)
		os.Exit(2)
	}
	json.NewEncoder(os.Stdout).Encode(report)
	os.Exit(0)
}

func dialTarget(target string) (net.Conn, error) {
	network, addr, _ := strings.Cut(target, ":")
	return net.DialTimeout(network, addr, 5*time.Second)
}

// refusedRequests are what a stranger sends to be refused: the longest key name a head
// carries, a name that is not UTF-8, a wrong token, an empty Authorization, no identity.
var refusedRequests = []struct{ path, auth string }{
	{"/v1/keys/" + strings.Repeat("%3C", 20000) + "/sign", ""},
	{"/v1/keys/sign%FF%FEing/sign", ""},
	{"/v1/keys/signing/sign", "Bearer wrong-token-wrong-token-wrong"},
	{"/v1/keys/signing/sign", " "},
	{"/v1/keys/signing/sign", ""},
	{"/v1/records", ""},
}

// flood sends refused requests on n kept-alive connections per target, as fast as the
// daemon answers, reconnecting when it closes one.
func flood(targets []string, n int, dur time.Duration) map[string]any {
	var total atomic.Int64
	var mu sync.Mutex
	codes := map[string]int{}
	deadline := time.Now().Add(dur)
	var wg sync.WaitGroup
	for _, target := range targets {
		for w := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var c net.Conn
				var br *bufio.Reader
				for i := w; time.Now().Before(deadline); i++ {
					if c == nil {
						var err error
						if c, err = dialTarget(target); err != nil {
							time.Sleep(10 * time.Millisecond)
							continue
						}
						br = bufio.NewReader(c)
					}
					rq := refusedRequests[i%len(refusedRequests)]
					head := "POST " + rq.path + " HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
					if rq.auth != "" {
						head += "Authorization:" + rq.auth + "\r\n"
					}
					c.SetDeadline(time.Now().Add(5 * time.Second))
					_, err := io.WriteString(c, head+"\r\n{}")
					var resp *http.Response
					if err == nil {
						resp, err = http.ReadResponse(br, nil)
					}
					if err != nil {
						c.Close()
						c = nil
						continue
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					total.Add(1)
					mu.Lock()
					codes[fmt.Sprint(resp.StatusCode)]++
					mu.Unlock()
				}
				if c != nil {
					c.Close()
				}
			}()
		}
	}
	wg.Wait()
	return map[string]any{"requests": total.Load(), "codes": codes}
}

// holdIdle keeps n connections per target open, each after one request, as idle as the
// keep-alive connection of a client between requests; one the daemon closes is opened
// again 100 ms later. (Opened again at once, it is a loop of connect and close that burns
// the CPU of both processes: an attack a local user has with any server, and without
// one. Its figures are in the test's log when PROVENANCED_TEST_HOT_LOOP=1.)
func holdIdle(targets []string, n int, dur time.Duration) map[string]any {
	var opened, closedByDaemon, held, maxHeld atomic.Int64
	deadline := time.Now().Add(dur)
	var wg sync.WaitGroup
	for _, target := range targets {
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(deadline) {
					c, err := dialTarget(target)
					if err != nil {
						time.Sleep(50 * time.Millisecond)
						continue
					}
					opened.Add(1)
					c.SetDeadline(deadline)
					br := bufio.NewReader(c)
					if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"); err == nil {
						if resp, err := http.ReadResponse(br, nil); err == nil {
							io.Copy(io.Discard, resp.Body)
							resp.Body.Close()
							if h := held.Add(1); h > maxHeld.Load() {
								maxHeld.Store(h) // a high-water mark; races only lower it
							}
							br.ReadByte() // idle until the daemon (or the deadline) closes it
							held.Add(-1)
						}
					}
					c.Close()
					if time.Now().Before(deadline) {
						closedByDaemon.Add(1)
						if reopenAfter < 0 {
							return
						}
						time.Sleep(reopenAfter)
					}
				}
			}()
		}
	}
	wg.Wait()
	return map[string]any{"opened": opened.Load(), "closed_by_daemon": closedByDaemon.Load(), "max_held": maxHeld.Load()}
}

// verifyFlood posts body to /v1/records/verify on n connections per target.
func verifyFlood(targets []string, n int, dur time.Duration, body []byte) map[string]any {
	var total atomic.Int64
	var mu sync.Mutex
	codes := map[string]int{}
	deadline := time.Now().Add(dur)
	var wg sync.WaitGroup
	for _, target := range targets {
		network, addr, _ := strings.Cut(target, ":")
		tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}}
		c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(deadline) {
					resp, err := c.Post("http://localhost/v1/records/verify", "application/json", strings.NewReader(`{"record":`+string(body)+`}`))
					if err != nil {
						continue
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					total.Add(1)
					mu.Lock()
					codes[fmt.Sprint(resp.StatusCode)]++
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	return map[string]any{"requests": total.Load(), "codes": codes}
}

// auditBytes sums the bytes of the audit lines (newlines included) that no configured
// client's request wrote, and returns the longest.
func auditBytes(t *testing.T, path string) (strangers, longest int, lines []map[string]any) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		lines = append(lines, m)
		if m["client"] == nil {
			strangers += len(sc.Bytes()) + 1
			longest = max(longest, len(sc.Bytes())+1)
		}
	}
	return strangers, longest, lines
}

// tmpfs mounts a tmpfs of size in a new folder, unmounted at cleanup; it skips the test
// where mounting is not allowed.
func tmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0755", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs (root is needed): %v %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", dir, err, out)
		}
	})
	return dir
}

// strangerAuditBound is the most audit bytes peers strangers can cause in secs seconds,
// as docs/security.md states it: the burst, then the rate, each line at most lineMax
// bytes, and a summary line per peer and 10 s.
func strangerAuditBound(peers int, secs float64) int {
	const rate, burst, lineMax, summaryMax = 5, 20, 600, 400
	return peers * (int((burst+rate*secs)*lineMax) + int(secs/10+1)*summaryMax)
}

// The disk-fill attack: nobody floods both listeners with requests that are refused
// (the longest key names a head can carry, names that are not UTF-8, wrong tokens, empty
// Authorization headers, no identity) while the audit log sits on a 1 MiB tmpfs and the
// configured clients keep signing. The audit log grows by at most the stated bound, the
// disk never fills, and no configured client sees anything but a signature.
func TestStrangerCannotFillTheAuditDisk(t *testing.T) {
	disk := tmpfs(t, "1m")
	h := startHostile(t, filepath.Join(disk, "audit.jsonl"), nil)
	const dur = 10 * time.Second
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var sock, tcp *latencies
	wg.Add(2)
	go func() { defer wg.Done(); sock = keepSigning(h.legitSocket(), 50*time.Millisecond, stop) }()
	go func() { defer wg.Done(); tcp = keepSigning(h.legitTCP(), 50*time.Millisecond, stop) }()
	start := time.Now()
	report := attack(t, "-mode", "flood", "-socket", h.Socket, "-addr", h.HTTP, "-n", "8", "-for", dur.String())
	secs := time.Since(start).Seconds()
	close(stop)
	wg.Wait()
	for name, l := range map[string]*latencies{"socket": sock, "tcp": tcp} {
		t.Logf("the configured client on the %s under the flood: %s", name, l)
		if len(l.errs) > 0 {
			t.Errorf("the configured client on the %s was refused: %v", name, l.errs[0])
		}
	}
	time.Sleep(11 * time.Second) // the last summary lines
	strangers, longest, lines := auditBytes(t, h.audit)
	bound := strangerAuditBound(2, secs+11)
	t.Logf("the stranger sent %v refused requests in %.1f s (%v); its audit lines: %d bytes, %.0f bytes/s, the longest %d bytes; bound %d bytes",
		report["requests"], secs, report["codes"], strangers, float64(strangers)/secs, longest, bound)
	if strangers > bound || longest > 600 {
		t.Errorf("the stranger wrote %d audit bytes (longest line %d), more than the stated %d (600)", strangers, longest, bound)
	}
	if n, _ := report["requests"].(float64); n < 1000 {
		t.Errorf("the flood sent only %v requests: it did not test much", n)
	}
	var summaries int
	for _, l := range lines {
		if l["op"] == "refusals" {
			summaries++
		}
		if k, _ := l["key"].(string); len(k) > 64 || strings.ContainsAny(k, "<\ufffd%") {
			t.Errorf("an audit line carries the key name sent: %v", l)
		}
	}
	if summaries == 0 {
		t.Error("no summary line counts the refusals past the budget")
	}
	if out, code := testenv.Run(daemonBin, nil, "audit", "verify", h.audit); code != 0 {
		t.Errorf("audit verify: %s", out)
	}
	resp, err := h.Client().Get(h.URL("/readyz"))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("/readyz after the flood: %v %v", resp, err)
	}
	resp.Body.Close()
	if strings.Contains(h.Output(), strings.Repeat("\\u003c", 100)) || strings.Count(h.Output(), "\n") > 2000 {
		t.Errorf("the daemon's log grew with the flood: %d lines", strings.Count(h.Output(), "\n"))
	}
}

// quietLatencies is what the configured clients see with nobody attacking: the
// reference for the bounds under attack on a machine that others load too.
func quietLatencies(t *testing.T, h *hostile) (sock, tcp *latencies) {
	t.Helper()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); sock = keepSigning(h.legitSocket(), 10*time.Millisecond, stop) }()
	go func() { defer wg.Done(); tcp = keepSigning(h.legitTCP(), 10*time.Millisecond, stop) }()
	time.Sleep(3 * time.Second)
	close(stop)
	wg.Wait()
	t.Logf("with nobody attacking: socket %s; tcp %s", sock, tcp)
	return sock, tcp
}

// starved reports whether l, under attack, is slower than a client that is merely
// sharing a busy machine: this bound is about starvation (before the limits, 2,000 idle
// connections left a new client with no answer at all), not about speed. 50 ms is the
// issue's figure; a machine whose load alone takes the quiet p99 past a third of it gets
// three times its quiet p99 instead.
func starved(l, quiet *latencies) (bool, time.Duration) {
	bound := max(50*time.Millisecond, 3*quiet.p(0.99))
	return len(l.errs) > 0 || l.p(0.99) > bound, bound
}

// fromAddr is an HTTP client whose every request is a new connection from the loopback
// address ip.
func fromAddr(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
}

// 2,000 idle connections from nobody on each listener (the socket, TCP and the metrics
// listener), each opened again as soon as the daemon closes it: configured clients keep
// signing, a new client of each kind gets in, and the metrics listener still answers a
// probe.
func TestIdleConnectionsStarveNobody(t *testing.T) {
	h := startHostile(t, "", nil)
	quietSock, quietTCP := quietLatencies(t, h)
	const dur = 20 * time.Second
	done := make(chan map[string]any)
	args := []string{"-mode", "idle", "-socket", h.Socket, "-addr", h.HTTP + "," + h.metrics, "-n", "2000", "-for", dur.String()}
	if v := os.Getenv("PROVENANCED_TEST_REOPEN"); v != "" {
		args = append(args, "-reopen", v)
	}
	cpu0 := processCPU(t, h.Cmd.Process.Pid)
	go func() { done <- attack(t, args...) }()
	time.Sleep(5 * time.Second) // the connections opened and held
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var sock, tcp *latencies
	wg.Add(2)
	go func() { defer wg.Done(); sock = keepSigning(h.legitSocket(), 10*time.Millisecond, stop) }()
	go func() { defer wg.Done(); tcp = keepSigning(h.legitTCP(), 10*time.Millisecond, stop) }()
	// Newcomers, each on a fresh connection: a client on the socket, a token client on
	// TCP and a probe on the metrics listener, these two from another address than
	// nobody's (127.0.0.2, as a kubelet's is not a neighbour pod's). On one shared address
	// a stranger's loop of connections competes with a client's new ones (docs/security.md).
	var fresh []string
	other := fromAddr("127.0.0.2")
	for i := range 20 {
		for name, try := range map[string]func() error{
			"socket": func() error {
				_, err := (&legit{c: testenv.UnixClient(h.Socket), url: "http://localhost/v1/keys/signing/sign"}).sign(i)
				return err
			},
			"tcp": func() error {
				_, err := (&legit{c: other, url: "http://" + h.HTTP + "/v1/keys/signing/sign", tok: h.token}).sign(i)
				return err
			},
			"metrics": func() error {
				resp, err := other.Get("http://" + h.metrics + "/healthz")
				if err == nil {
					resp.Body.Close()
				}
				return err
			},
		} {
			if err := try(); err != nil {
				fresh = append(fresh, name+": "+err.Error())
			}
		}
		time.Sleep(300 * time.Millisecond)
	}
	report := <-done
	cpu := processCPU(t, h.Cmd.Process.Pid) - cpu0
	close(stop)
	wg.Wait()
	t.Logf("nobody's connections: %v; the daemon's CPU meanwhile: %v (%.0f %% of a core)", report, cpu, 100*cpu.Seconds()/dur.Seconds())
	for name, l := range map[string][2]*latencies{"socket": {sock, quietSock}, "tcp": {tcp, quietTCP}} {
		bad, bound := starved(l[0], l[1])
		t.Logf("the configured client on the %s under 2,000 idle connections a listener: %s (bound %v)", name, l[0], bound)
		if bad {
			t.Errorf("the configured client on the %s starved: %s, bound %v; first error %v", name, l[0], bound, append(l[0].errs, nil)[0])
		}
	}
	if len(fresh) > 0 {
		t.Errorf("%d of 60 newcomers did not get in, first: %s", len(fresh), fresh[0])
	}
	if held, _ := report["max_held"].(float64); held > 512+512+16 {
		t.Errorf("nobody held %v connections at once, more than the listeners' bounds", held)
	}
	m := scrape(t, "http://"+h.metrics+"/metrics")
	if !strings.Contains(m, `provenanced_connections_closed_total{listener="socket",reason="idle_closed_for_room"}`) {
		t.Errorf("the metrics do not count the connections closed for room:\n%s", grepLines(m, "provenanced_connections"))
	}
	t.Logf("%s", grepLines(m, "provenanced_connections"))
}
