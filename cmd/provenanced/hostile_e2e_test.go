package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	neturl "net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ib1/provenanced/internal/devsetup"
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
	_, files, err := devsetup.NewDevFiles(dir, time.Now())
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
// again after -reopen (never, when negative). Opened again at once, it is a loop of
// connect and close that burns the CPU of both processes: an attack a local user has
// with any server, and without one.
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
	disk := testenv.Tmpfs(t, 1<<20)
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

// starved reports whether l, under attack, is slower than bound allows: a bound about
// starvation (before the limits, 2,000 idle connections left a new client with no answer
// at all), not about speed; a machine whose load alone takes the quiet p99 past a third
// of it gets three times its quiet p99 instead.
func starved(l, quiet *latencies, bound time.Duration) (bool, time.Duration) {
	bound = max(bound, 3*quiet.p(0.99))
	return len(l.errs) > 0 || l.p(0.99) > bound, bound
}

// newcomers tries n times each: a client on the socket, a token client on TCP and a probe
// on the metrics listener, each on a fresh connection, these two from another address
// than nobody's (127.0.0.2, as a kubelet's is not a neighbour pod's: on one shared address
// a stranger's loop of connections competes with a client's new ones, docs/security.md).
// It returns what failed.
func newcomers(h *hostile, n int) []string {
	var fresh []string
	other := fromAddr("127.0.0.2")
	for i := range n {
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
	return fresh
}

// fromAddr is an HTTP client whose every request is a new connection from the loopback
// address ip.
func fromAddr(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
}

// 2,000 idle connections from nobody on each listener (the socket, TCP and the metrics
// listener): configured clients keep signing with a p99 under 50 ms, a new client of each
// kind gets in, and the metrics listener still answers a probe. Then the same with every
// connection the daemon closes opened again 100 ms later (a loop of some 7,000
// connections a second that costs the attacker most of a core and the daemon about half
// of one): the bound is then 250 ms, the two processes sharing two busy cores with the
// clients.
func TestIdleConnectionsStarveNobody(t *testing.T) {
	h := startHostile(t, "", nil)
	quietSock, quietTCP := quietLatencies(t, h)
	for _, phase := range []struct {
		name   string
		reopen string
		bound  time.Duration
	}{{"held", "-1s", 50 * time.Millisecond}, {"reopened every 100 ms", "100ms", 250 * time.Millisecond}} {
		sock, tcp, fresh, report := idleAttack(t, h, phase.reopen)
		for name, l := range map[string][2]*latencies{"socket": {sock, quietSock}, "tcp": {tcp, quietTCP}} {
			bad, bound := starved(l[0], l[1], phase.bound)
			t.Logf("%s: the configured client on the %s under 2,000 idle connections a listener: %s (bound %v)", phase.name, name, l[0], bound)
			if bad {
				t.Errorf("%s: the configured client on the %s starved: %s, bound %v; first error %v", phase.name, name, l[0], bound, append(l[0].errs, nil)[0])
			}
		}
		if len(fresh) > 0 {
			t.Errorf("%s: %d of 60 newcomers did not get in, first: %s", phase.name, len(fresh), fresh[0])
		}
		if held, _ := report["max_held"].(float64); held > 512+512+16 {
			t.Errorf("%s: nobody held %v connections at once, more than the listeners' bounds", phase.name, held)
		}
	}
	m := scrape(t, "http://"+h.metrics+"/metrics")
	if !strings.Contains(m, `provenanced_connections_closed_total{listener="socket",reason="idle_closed_for_room"}`) {
		t.Errorf("the metrics do not count the connections closed for room:\n%s", grepLines(m, "provenanced_connections"))
	}
	t.Logf("%s", grepLines(m, "provenanced_connections"))
}

// idleAttack has nobody hold 2,000 connections on each listener for 20 s, opening again
// after reopen (negative: never) what the daemon closes, while the clients sign and
// newcomers try to get in; it returns what the clients saw, the newcomers that failed and
// the attacker's report.
func idleAttack(t *testing.T, h *hostile, reopen string) (sock, tcp *latencies, fresh []string, report map[string]any) {
	t.Helper()
	const dur = 20 * time.Second
	done := make(chan map[string]any)
	args := []string{"-mode", "idle", "-socket", h.Socket, "-addr", h.HTTP + "," + h.metrics, "-n", "2000", "-for", dur.String(), "-reopen", reopen}
	cpu0 := processCPU(t, h.Cmd.Process.Pid)
	go func() { done <- attack(t, args...) }()
	time.Sleep(5 * time.Second) // the connections opened and held
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); sock = keepSigning(h.legitSocket(), 10*time.Millisecond, stop) }()
	go func() { defer wg.Done(); tcp = keepSigning(h.legitTCP(), 10*time.Millisecond, stop) }()
	fresh = newcomers(h, 20)
	report = <-done
	cpu := processCPU(t, h.Cmd.Process.Pid) - cpu0
	close(stop)
	wg.Wait()
	t.Logf("reopen %s: nobody's connections: %v; the daemon's CPU meanwhile: %v (%.0f %% of a core)", reopen, report, cpu, 100*cpu.Seconds()/dur.Seconds())
	return sock, tcp, fresh, report
}

// post sends body to path over c (with a bearer token when tok is set) and returns the
// status, the Retry-After header and the body.
func post(t *testing.T, c *http.Client, url, tok, body string) (int, string, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Retry-After"), string(b)
}

func batchBody(n int) string {
	items := make([]string, n)
	for i := range items {
		items[i] = digestBody(i)
	}
	return `{"batch":[` + strings.Join(items, ",") + `]}`
}

// rate is in signatures: a client limited to 5 a second signed 6,667 a second in
// batches of 1,000. Now a batch costs its size, one that would go past the rate is
// refused whole, and the refusals' audit lines are bounded like any others'.
func TestBatchAgainstRate(t *testing.T) {
	h := startHostile(t, "", func(c *testenv.Config) { c.Table("clients.svc", "rate", 5) })
	c := &http.Client{Timeout: 30 * time.Second}
	url := "http://" + h.HTTP + "/v1/keys/signing/sign"
	signs := func() int { return scrapeSignCount(t, c, "http://"+h.metrics+"/metrics") }
	before := signs()
	if code, retry, body := post(t, c, url, h.token, batchBody(1000)); code != 429 || retry != "" || !strings.Contains(body, "may make 5 signatures at once at most") {
		t.Fatalf("a batch of 1,000 at 5 a second: %d %q %s", code, retry, body)
	}
	if code, _, body := post(t, c, url, h.token, batchBody(5)); code != 200 {
		t.Fatalf("a batch of 5: %d %s", code, body)
	}
	if code, retry, body := post(t, c, url, h.token, batchBody(3)); code != 429 || retry != "1" {
		t.Fatalf("3 more at once: %d %q %s", code, retry, body)
	}
	if n := signs() - before; n != 5 {
		t.Fatalf("%d signatures made, want the batch of 5 only", n)
	}
	// The attack of the issue: batches of 1,000 as fast as they are answered.
	start := time.Now()
	var signed, refused int
	for time.Since(start) < 6*time.Second {
		code, _, _ := post(t, c, url, h.token, batchBody(1000))
		if code == 200 {
			signed += 1000
		} else {
			refused++
		}
	}
	secs := time.Since(start).Seconds()
	if n := signs() - before; n != 5 || signed != 0 {
		t.Errorf("%d signatures in 6 s of batches of 1,000, want none", n-5)
	}
	time.Sleep(11 * time.Second) // the summary line
	var svcLines, svcBytes int
	_, _, lines := auditBytes(t, h.audit)
	raw, _ := os.ReadFile(h.audit)
	for i, l := range lines {
		if l["client"] == "svc" && l["status"] == 429.0 {
			svcLines++
			svcBytes += len(strings.Split(string(raw), "\n")[i]) + 1
		}
	}
	t.Logf("batches of 1,000 at rate 5: %d refused in %.1f s, %d audit lines (%d bytes) for them", refused, secs, svcLines, svcBytes)
	if max := 20 + int(5*(secs+11)) + 3; svcLines > max {
		t.Errorf("%d audit lines of 429s, more than the budget's %d", svcLines, max)
	}
	time.Sleep(time.Second)
	if code, _, body := post(t, c, url, h.token, batchBody(5)); code != 200 {
		t.Errorf("a batch of 5 a second later: %d %s", code, body)
	}
}

// clientCA is a CA for client certificates, with a server certificate for 127.0.0.1,
// written to dir as ca.pem, server.pem and server-key.pem.
type clientCA struct {
	ca    *x509.Certificate
	key   *ecdsa.PrivateKey
	trust *x509.CertPool // for the client: the server's CA
}

func newClientCA(t *testing.T, dir string) *clientCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "clients CA"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	c := &clientCA{ca: ca, key: key, trust: x509.NewCertPool()}
	c.trust.AddCert(ca)
	server := c.issue(t, &x509.Certificate{IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	keyDER, _ := x509.MarshalPKCS8PrivateKey(server.PrivateKey)
	os.WriteFile(filepath.Join(dir, "ca.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(filepath.Join(dir, "server.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: server.Certificate[0]}), 0o644)
	os.WriteFile(filepath.Join(dir, "server-key.pem"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)
	return c
}

// issue makes a certificate of tmpl's names and usage.
func (c *clientCA) issue(t *testing.T, tmpl *x509.Certificate) tls.Certificate {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl.SerialNumber, tmpl.NotBefore, tmpl.NotAfter = big.NewInt(time.Now().UnixNano()), time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.ca, &k.PublicKey, c.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}
}

// clientCert is a client certificate with a URI SAN (when uri is set) and a CN.
func (c *clientCA) clientCert(t *testing.T, uri, cn string) tls.Certificate {
	tmpl := &x509.Certificate{Subject: pkix.Name{CommonName: cn}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if uri != "" {
		u, _ := neturl.Parse(uri)
		tmpl.URIs = []*neturl.URL{u}
	}
	return c.issue(t, tmpl)
}

// oneConnection is an HTTPS client that keeps one connection, with cert, and reports
// whether each request reused it.
func oneConnection(ca *clientCA, cert tls.Certificate) (*http.Client, *atomic.Int64) {
	var fresh atomic.Int64
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.trust, Certificates: []tls.Certificate{cert}}, MaxConnsPerHost: 1}
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		fresh.Add(1)
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}, &fresh
}

// A reload that removes a client CA ends what its certificates may do at once, also on
// connections opened before (they went on signing 100 s later): their next request is a
// 401; and a reload that removes a client ends it on the socket connection it holds.
func TestReloadEndsRemovedIdentitiesOnOpenConnections(t *testing.T) {
	certs := t.TempDir()
	ca := newClientCA(t, certs)
	tlsTable := func(c *testenv.Config) {
		c.Table("server", "tls_cert", filepath.Join(certs, "server.pem"), "tls_key", filepath.Join(certs, "server-key.pem"), "tls_client_ca", filepath.Join(certs, "ca.pem")).
			Table("clients.app", "tls_uri", "spiffe://example.org/app", "keys", []string{"signing"}, "allow", []string{"sign"})
	}
	h := startHostile(t, "", tlsTable)
	httpsURL := "https://" + h.HTTP + "/v1/keys/signing/sign"
	app, dials := oneConnection(ca, ca.clientCert(t, "spiffe://example.org/app", "app"))
	sock := testenv.UnixClient(h.Socket)
	if code, _, body := post(t, app, httpsURL, "", digestBody(1)); code != 200 {
		t.Fatalf("app before the reload: %d %s", code, body)
	}
	if code, _, body := post(t, sock, "http://localhost/v1/keys/signing/sign", "", digestBody(2)); code != 200 {
		t.Fatalf("me before the reload: %d %s", code, body)
	}
	// Another CA in the same files (the server's certificate too), and no client "me".
	newCA := newClientCA(t, certs)
	cfg := filepath.Join(h.dir, "provenanced.toml")
	text, _ := os.ReadFile(cfg)
	os.WriteFile(cfg, []byte(strings.Replace(string(text), "[clients.me]\ngids = [0]", "[clients.nobody-here]\ngids = [4242]", 1)), 0o644)
	h.Signal(syscall.SIGHUP)
	waitFor(t, "the reload", func() bool { return strings.Contains(h.Output(), "configuration reloaded") })
	code, _, body := post(t, app, httpsURL, "", digestBody(3))
	if code != 401 || !strings.Contains(body, "does not chain to the configured client CA") || dials.Load() != 1 {
		t.Errorf("app on its connection from before the reload: %d %s (%d connections)", code, body, dials.Load())
	}
	code, _, body = post(t, sock, "http://localhost/v1/keys/signing/sign", "", digestBody(4))
	if code != 401 || !strings.Contains(body, "uid 0 (gid 0) is not a configured client") {
		t.Errorf("me, removed, on its connection from before the reload: %d %s", code, body)
	}
	fresh, _ := oneConnection(newCA, ca.clientCert(t, "spiffe://example.org/app", "app"))
	if _, err := fresh.Post(httpsURL, "application/json", strings.NewReader(digestBody(5))); err == nil {
		t.Error("a new handshake with a certificate of the removed CA")
	}
	renewed, _ := oneConnection(newCA, newCA.clientCert(t, "spiffe://example.org/app", "app"))
	if code, _, body := post(t, renewed, httpsURL, "", digestBody(6)); code != 200 {
		t.Errorf("app with a certificate of the new CA: %d %s", code, body)
	}
}

// A certificate identifies by its URI SAN if it has one: one whose URI names no client
// but whose CN is that of client ops (every key, CSRs) was ops. A configuration in which
// one certificate could name two clients does not start.
func TestCertificateURIDoesNotFallBackToCN(t *testing.T) {
	certs := t.TempDir()
	ca := newClientCA(t, certs)
	h := startHostile(t, "", func(c *testenv.Config) {
		c.Table("server", "tls_cert", filepath.Join(certs, "server.pem"), "tls_key", filepath.Join(certs, "server-key.pem"), "tls_client_ca", filepath.Join(certs, "ca.pem")).
			Table("clients.ops", "tls_cn", "ops", "keys", []string{"*"}, "allow", []string{"sign", "csr"}).
			Table("clients.app", "tls_uri", "spiffe://example.org/app", "keys", []string{"signing"}, "allow", []string{"sign"})
	})
	base := "https://" + h.HTTP + "/v1/keys/signing/"
	for _, tc := range []struct {
		uri, cn   string
		path      string
		want      int
		wantInMsg string
	}{
		{"spiffe://example.org/intruder", "ops", "csr", 401, "(URI spiffe://example.org/intruder) is not a configured client's"},
		{"spiffe://example.org/intruder", "ops", "sign", 401, "is not a configured client's"},
		{"spiffe://example.org/app", "ops", "csr", 403, `client \"app\" may not request a CSR`},
		{"", "ops", "csr", 200, "CERTIFICATE REQUEST"},
	} {
		c, _ := oneConnection(ca, ca.clientCert(t, tc.uri, tc.cn))
		body := digestBody(1)
		if tc.path == "csr" {
			body = `{"subject":"/CN=x"}`
		}
		code, _, got := post(t, c, base+tc.path, "", body)
		if code != tc.want || !strings.Contains(got, tc.wantInMsg) {
			t.Errorf("URI %q CN %q %s: %d %s; want %d %s", tc.uri, tc.cn, tc.path, code, got, tc.want, tc.wantInMsg)
		}
	}
}

// The Go client (here the command line's) never follows a redirect to another scheme
// or host: an https daemon, or whatever answers in its place, that redirected to http://
// got the request again in clear, with the bearer token.
func TestRedirectDoesNotTakeTheTokenAlong(t *testing.T) {
	var leaked []string
	var mu sync.Mutex
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		leaked = append(leaked, r.Method+" "+r.URL.Path+" "+r.Header.Get("Authorization"))
		mu.Unlock()
		w.Write([]byte(`{"keys":[]}`))
	}))
	defer plain.Close()
	secure := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, plain.URL+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	defer secure.Close()
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: secure.Certificate().Raw}), 0o644)
	tok := filepath.Join(dir, "t.token")
	newTokenFile(t, tok)
	env := []string{"SSL_CERT_FILE=" + caFile}
	for _, args := range [][]string{
		{"keys", "-url", secure.URL, "-token-file", tok},
		{"sign", "-url", secure.URL, "-token-file", tok, "-key", "signing", "-digest", strings.Repeat("ab", 32)},
	} {
		out, code := testenv.Run(daemonBin, env, args...)
		if code != 1 || !strings.Contains(out, "not following a redirect from https://") {
			t.Errorf("%v: exit %d: %s", args, code, out)
		}
	}
	if len(leaked) != 0 {
		t.Errorf("the plain server got %q", leaked)
	}
}

// On a loopback listener a Host that names loopback only at its start or end is a
// stranger's: a page from localhost.evil.example, rebound to 127.0.0.1, gets 421. (A
// deliberate bug that took any Host beginning with "localhost" passed the day's tests.)
func TestLookalikeHostsAreMisdirected(t *testing.T) {
	h := startHostile(t, "", nil)
	for _, host := range []string{"localhost.evil.example", "localhostevil.example", "evil.localhost", "evillocalhost", "127.0.0.1.evil.example", "localhost.:8080.evil"} {
		req, _ := http.NewRequest("POST", "http://"+h.HTTP+"/v1/keys/signing/sign", strings.NewReader(digestBody(1)))
		req.Host = host
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+h.token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMisdirectedRequest && resp.StatusCode != http.StatusBadRequest {
			t.Errorf("Host %q: %d, want 421", host, resp.StatusCode)
		}
	}
}

// bigRecord has the client svc sign a record of about 800 kB (one step holding 600 kB),
// and writes it where nobody can read it.
func bigRecord(t *testing.T, h *hostile) string {
	t.Helper()
	c := &http.Client{Timeout: 30 * time.Second}
	code, _, rec := post(t, c, "http://"+h.HTTP+"/v1/records", h.token, `{"steps":[{"type":"note","data":"`+strings.Repeat("x", 600_000)+`"}]}`)
	if code != 200 {
		t.Fatalf("signing the big record: %d %.300s", code, rec)
	}
	path := filepath.Join(h.dir, "big.json")
	if err := os.WriteFile(path, []byte(strings.TrimSpace(rec)), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// 16 connections verifying records of 800 kB took another client's signing p50 from
// 2 ms to 236 ms. Verifications take turns now (verify_concurrency, GOMAXPROCS by
// default), and a client's signatures go on between them.
func TestVerificationFloodLeavesSigning(t *testing.T) {
	h := startHostile(t, "", func(c *testenv.Config) {
		if v := os.Getenv("PROVENANCED_TEST_VERIFY_CONCURRENCY"); v != "" {
			n, _ := strconv.Atoi(v)
			c.Table("server", "verify_concurrency", n)
		}
	})
	record := bigRecord(t, h)
	quietSock, quietTCP := quietLatencies(t, h)
	const dur = 15 * time.Second
	done := make(chan map[string]any)
	go func() {
		done <- attack(t, "-mode", "verify", "-addr", h.HTTP, "-n", "16", "-body", record, "-for", dur.String())
	}()
	time.Sleep(2 * time.Second)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var sock, tcp *latencies
	wg.Add(2)
	go func() { defer wg.Done(); sock = keepSigning(h.legitSocket(), 10*time.Millisecond, stop) }()
	go func() { defer wg.Done(); tcp = keepSigning(h.legitTCP(), 10*time.Millisecond, stop) }()
	time.Sleep(dur - 4*time.Second)
	close(stop)
	wg.Wait()
	report := <-done
	t.Logf("nobody's verifications: %v", report)
	for name, l := range map[string][2]*latencies{"socket": {sock, quietSock}, "tcp": {tcp, quietTCP}} {
		t.Logf("the configured client on the %s while 16 connections verify 800 kB records: %s (quiet p50 %v)", name, l[0], l[1].p(0.5))
		if len(l[0].errs) > 0 || l[0].p(0.5) > max(25*time.Millisecond, 5*l[1].p(0.5)) {
			t.Errorf("the configured client on the %s: %s", name, l[0])
		}
	}
	if codes, _ := report["codes"].(map[string]any); codes["200"] == nil {
		t.Errorf("no verification succeeded: %v", report)
	}
}

// What a configuration must not say: a token a stranger could guess, a key every
// policy's "*" would also name, two clients one certificate could be, a config file any
// user may rewrite. Each stops the daemon at start (exit 2) with what fixes it; a client
// by uid 0 is a warning.
func TestHostileConfigsRefusedAtStart(t *testing.T) {
	dir := t.TempDir()
	_, files, err := devsetup.NewDevFiles(dir, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	weak := filepath.Join(dir, "weak.token")
	os.WriteFile(weak, []byte("x\n"), 0o600)
	base := func() *testenv.Config {
		return testenv.NewConfig().Table("server", "socket", "p.sock").
			Table("keys.signing", "backend", "pem", "private_key", files.PrivateKey, "certificates", files.Bundle)
	}
	client := func(c *testenv.Config, name string, kv ...any) *testenv.Config {
		return c.Table("clients."+name, append(kv, "keys", []string{"*"}, "allow", []string{"sign"})...)
	}
	for _, tc := range []struct {
		name string
		cfg  *testenv.Config
		mode os.FileMode
		want string
	}{
		{"a token of one character", client(base(), "a", "token_file", weak), 0o644, "holds a weak token (1 characters, 1 different); a token needs at least 22 base64 characters (128 bits), 16 of them different; make one with: provenanced token new -out " + weak},
		{"a key named *", base().Table(`keys."*"`, "backend", "pem", "private_key", files.PrivateKey), 0o644, `keys."*": a key's name is 1 to 64 ASCII letters`},
		{"two clients one certificate could be", client(client(base(), "a", "tls_dns", "app.example.org"), "b", "tls_dns", "App.Example.org."), 0o644, "clients.b.tls_dns: the same identity as [clients.a]"},
		{"a config any user may write", base(), 0o666, "so any user can change who may sign; run: chmod o-w"},
	} {
		path := tc.cfg.Write(t, dir)
		os.Chmod(path, tc.mode)
		out, code := testenv.Run(daemonBin, nil, "serve", "-check", "-config", path)
		if code != 2 || !strings.Contains(out, tc.want) {
			t.Errorf("%s: exit %d: %s\nwant exit 2 and %q", tc.name, code, out, tc.want)
		}
	}
	path := client(base(), "root", "uids", []int{0}).Write(t, dir)
	os.Chmod(path, 0o644)
	if out, code := testenv.Run(daemonBin, nil, "serve", "-check", "-config", path); code != 0 || !strings.Contains(out, "a client is identified by uid 0 (root)") {
		t.Errorf("a client by uid 0: exit %d: %s", code, out)
	}
}

// A socket peer whose uid is one client's and whose gid is another's is the uid's
// client: nobody (uid and gid 65534) signs as app, which may sign, not as grp, which may
// only request CSRs. (A deliberate bug that tried the gid first passed the day's tests.)
func TestSocketPeerIsItsUIDsClient(t *testing.T) {
	d := startAccessDaemon(t, testenv.NewConfig().
		Table("clients.grp", "gids", []int{65534}, "keys", []string{"signing"}, "allow", []string{"csr"}).
		Table("clients.app", "uids", []int{65534}, "keys", []string{"signing"}, "allow", []string{"sign"}), "")
	code, body := d.do(t, request{name: "nobody signs", socket: true, nobody: true, path: "/v1/keys/signing/sign", body: digestBody(1)})
	if code != 200 {
		t.Fatalf("nobody: %d %s", code, body)
	}
	if lines := testenv.AuditLines(t, d.audit); len(lines) != 1 || lines[0]["client"] != "app" {
		t.Errorf("the audit line: %v", lines)
	}
}
