package awskms_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ib1/provenanced/client"
	"github.com/ib1/provenanced/conf"
	"github.com/ib1/provenanced/daemon"
	"github.com/ib1/provenanced/internal/devsetup"
	"github.com/ib1/provenanced/testenv"
)

func TestMain(m *testing.M) {
	// The backend takes credentials from the SDK's standard chain, as in production:
	// here, dummy ones from the environment, with ~/.aws and instance metadata shut out.
	testenv.SetAWSTestEnv()
	os.Exit(m.Run())
}

func newPKI(t testing.TB) *devsetup.PKI {
	t.Helper()
	pki, err := devsetup.NewPKI(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return pki
}

// writeConfig writes and loads testenv.KMSConfig in dir with [keys.signing] changed by
// set (key, value pairs; a nil value removes the key).
func writeConfig(t testing.TB, dir string, bundle []byte, keyID, endpoint string, set ...any) *conf.Config {
	t.Helper()
	return testenv.KMSConfig(t, dir, bundle, keyID, endpoint).Table("keys.signing", set...).Load(t, dir)
}

// runningDaemon is a daemon served in-process on a Unix socket.
type runningDaemon struct {
	*client.Client
	socket string
	hc     *http.Client
	log    *testenv.SyncBuffer // the daemon's JSON log
}

func startDaemon(t testing.TB, cfg *conf.Config) *runningDaemon {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	listening := make(chan struct{})
	log := &testenv.SyncBuffer{}
	d, err := daemon.New(ctx, cfg, daemon.Options{Logger: slog.New(slog.NewJSONHandler(log, nil)), Listening: func(string, string) { close(listening) }})
	if err != nil {
		cancel()
		t.Fatalf("daemon.New: %v", err)
	}
	errc := make(chan error, 1)
	go func() { errc <- d.Serve(ctx) }()
	select {
	case <-listening:
	case err := <-errc:
		cancel()
		t.Fatalf("the daemon stopped at start: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	c, err := client.New(client.Options{Socket: cfg.Server.Socket})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	sock := cfg.Server.Socket
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
	return &runningDaemon{Client: c, socket: sock, hc: hc, log: log}
}

// get returns a route's status and body.
func (d *runningDaemon) get(t testing.TB, path string) (int, string) {
	t.Helper()
	resp, err := d.hc.Get("http://provenanced" + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// backendUp is provenanced_backend_up of key "signing", as /metrics shows it.
func (d *runningDaemon) backendUp(t testing.TB) string {
	t.Helper()
	return d.series(t, `provenanced_backend_up{backend="awskms",key="signing"}`)
}

// signCount is the number of signatures of key "signing" timed with outcome.
func (d *runningDaemon) signCount(t testing.TB, outcome string) string {
	t.Helper()
	return d.series(t, `provenanced_sign_duration_seconds_count{backend="awskms",key="signing",outcome="`+outcome+`"}`)
}

// series is the value of one series (its name and labels as /metrics prints them).
func (d *runningDaemon) series(t testing.TB, name string) string {
	t.Helper()
	_, body := d.get(t, "/metrics")
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, name+" ") {
			return strings.TrimSpace(line[len(name):])
		}
	}
	t.Fatalf("no %s in /metrics", name)
	return ""
}

// fault is an answer the proxy gives instead of KMS's.
type fault struct {
	status int
	code   string // __type, as KMS's JSON protocol has it
	msg    string
	times  int  // how many requests to answer so; < 0 for all
	hang   bool // answer nothing until the caller gives up
	drop   bool // close the connection without answering
	echo   bool // answer an error whose message repeats the request's credentials
}

// faultProxy stands between the daemon and the emulator, on 127.0.0.1, counting the
// requests of each KMS operation and answering some of them with a fault: the emulator
// cannot throttle, deny access or drop a connection mid-request on demand.
type faultProxy struct {
	*httptest.Server
	mu     sync.Mutex
	counts map[string]int
	faults map[string]*fault
	stop   chan struct{}
}

func newFaultProxy(t testing.TB, upstream string) *faultProxy {
	t.Helper()
	u, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{counts: map[string]int{}, faults: map[string]*fault{}, stop: make(chan struct{})}
	rp := httputil.NewSingleHostReverseProxy(u)
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		op := strings.TrimPrefix(r.Header.Get("X-Amz-Target"), "TrentService.")
		p.mu.Lock()
		p.counts[op]++
		f := p.faults[op]
		if f != nil && f.times != 0 {
			if f.times > 0 {
				f.times--
			}
			p.mu.Unlock()
			if f.drop {
				io.Copy(io.Discard, r.Body)
				conn, _, err := http.NewResponseController(w).Hijack()
				if err == nil {
					conn.Close()
				}
				return
			}
			if f.hang {
				// The server notices a caller that hangs up only once the body is read.
				io.Copy(io.Discard, r.Body)
				select {
				case <-r.Context().Done():
				case <-p.stop:
				}
				return
			}
			msg := f.msg
			if f.echo {
				msg += " Authorization: " + r.Header.Get("Authorization") + " X-Amz-Security-Token: " + r.Header.Get("X-Amz-Security-Token")
			}
			w.Header().Set("Content-Type", "application/x-amz-json-1.1")
			w.WriteHeader(f.status)
			fmt.Fprintf(w, `{"__type":%q,"message":%q}`, f.code, msg)
			return
		}
		p.mu.Unlock()
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(p.Close)
	t.Cleanup(func() { close(p.stop) }) // runs first: Close waits for handlers
	return p
}

// behindProxy makes a KMS key in a new emulator and a config that reaches it through a
// fault proxy.
func behindProxy(t testing.TB) (*testenv.LocalKMS, testenv.KMSKey, *faultProxy, *conf.Config) {
	t.Helper()
	lk := testenv.StartLocalKMS(t)
	key := lk.NewSigningKey(t, newPKI(t), "alias/provenance")
	proxy := newFaultProxy(t, lk.Endpoint())
	return lk, key, proxy, writeConfig(t, t.TempDir(), key.Bundle, "alias/provenance", proxy.URL)
}

func (p *faultProxy) inject(op string, f fault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.faults[op] = &f
}

func (p *faultProxy) count(op string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.counts[op]
}

func (p *faultProxy) reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.counts = map[string]int{}
	p.faults = map[string]*fault{}
}
