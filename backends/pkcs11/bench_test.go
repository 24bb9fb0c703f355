//go:build cgo

package pkcs11_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ThalesGroup/crypto11"

	"github.com/ib1/provenanced/backends"
	"github.com/ib1/provenanced/backends/pkcs11"
	"github.com/ib1/provenanced/daemon"
	"github.com/ib1/provenanced/testenv"
)

// The benchmarks sign with the same SoftHSM key three ways, at 1 to 16 concurrent callers:
// crypto11 in this process (the baseline), this backend in this process, and the daemon
// (in this process too) through its Unix socket, with the load generator on the same
// cores. They report signatures per second and the 99th percentile latency.
//
//	go test -run '^$' -bench . -benchtime 2s ./backends/pkcs11
//
// Other programs on the machine move single runs a lot; bench/pkcs11.sh runs every
// benchmark in several rounds and prints the medians as a table.

var callers = []int{1, 2, 4, 8, 16}

// benchSessions is max_sessions for this backend and the daemon: one anchor and four
// signing sessions, about what SoftHSM gains from on two cores.
const benchSessions = 5

// load runs b.N calls of sign from n callers with testenv.Load, the load generator of
// every benchmark of the daemon, and reports the rate, p99 and CPU per signature.
func load(b *testing.B, n int, sign func(caller int, digest []byte) error) {
	digests := make([][]byte, 256)
	for i := range digests {
		d := sha256.Sum256([]byte{byte(i)})
		digests[i] = d[:]
	}
	var next atomic.Int64
	for c := range n { // warm up: sessions opened, connections made
		if err := sign(c, digests[0]); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	cpu0 := cpuTime()
	r := testenv.Load(n, b.N, func(c int) error { return sign(c, digests[next.Add(1)%256]) })
	cpu := cpuTime() - cpu0
	b.StopTimer()
	if r.Errors > 0 {
		b.Fatalf("%d errors, the first: %v", r.Errors, r.FirstError)
	}
	b.ReportMetric(r.OpsPerSec(), "sig/s")
	b.ReportMetric(float64(r.P99.Microseconds()), "p99-µs")
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/op")
}

// cpuTime is the CPU time this process has used, user and system: unlike the rate, the
// CPU a signature costs hardly changes when other programs share the machine.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func BenchmarkCrypto11InProcess(b *testing.B) {
	k := pkcs11.Bench()
	for _, n := range callers {
		b.Run(fmt.Sprintf("callers=%d", n), func(b *testing.B) {
			// n signing sessions plus the one crypto11 keeps for its login.
			ctx, err := crypto11.Configure(&crypto11.Config{Path: k.Module, TokenLabel: k.Token, Pin: k.PIN, MaxSessions: n + 1, PoolWaitTimeout: 10 * time.Second})
			if err != nil {
				b.Fatal(err)
			}
			defer ctx.Close()
			key, err := ctx.FindKeyPair(nil, []byte(k.Label))
			if err != nil || key == nil {
				b.Fatalf("FindKeyPair: %v", err)
			}
			load(b, n, func(_ int, d []byte) error {
				_, err := key.Sign(rand.Reader, d, crypto.SHA256)
				return err
			})
		})
	}
}

// benchConfig is a config with the benchmarks' key, [keys.signing].
func benchConfig(k pkcs11.BenchKey, sessions int) *testenv.Config {
	return testenv.NewConfig().Table("keys.signing", "backend", "pkcs11", "module", k.Module, "token_label", k.Token, "key_label", k.Label,
		"pin", "file:"+k.PINFile, "max_sessions", sessions)
}

func BenchmarkBackendInProcess(b *testing.B) {
	k := pkcs11.Bench()
	for _, n := range callers {
		b.Run(fmt.Sprintf("callers=%d", n), func(b *testing.B) {
			cfg := benchConfig(k, benchSessions).Table("server", "socket", "s").Load(b, b.TempDir())
			key, err := backends.Open(context.Background(), cfg.Keys[0], backends.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer key.Close()
			load(b, n, func(_ int, d []byte) error {
				_, err := key.SignContext(context.Background(), d, crypto.SHA256)
				return err
			})
		})
	}
}

// BenchmarkDaemonUnixSocket signs through the daemon's Unix socket with two HTTP clients:
// net/http (testenv.UnixClient, as the daemon's other benchmarks), and a raw HTTP/1.1
// client that writes each request on a keep-alive connection of its own and reads the
// answer, so that less of the two shared cores goes to making the load.
func BenchmarkDaemonUnixSocket(b *testing.B) {
	k := pkcs11.Bench()
	for _, n := range callers {
		for _, gen := range []string{"http", "raw"} {
			b.Run(fmt.Sprintf("callers=%d/client=%s", n, gen), func(b *testing.B) {
				socket, stop := benchDaemon(b, k)
				defer stop()
				var sign func(int, []byte) error
				switch gen {
				case "http":
					hc := testenv.UnixClient(socket)
					defer hc.CloseIdleConnections()
					sign = func(_ int, d []byte) error {
						req, _ := http.NewRequest("POST", "http://provenanced/v1/keys/signing/sign", strings.NewReader(`{"digest":"`+base64.StdEncoding.EncodeToString(d)+`"}`))
						req.Header.Set("Content-Type", "application/json")
						resp, err := hc.Do(req)
						if err != nil {
							return err
						}
						body, err := io.ReadAll(resp.Body)
						resp.Body.Close()
						if err != nil {
							return err
						}
						if resp.StatusCode != http.StatusOK || !bytes.Contains(body, signatureField) {
							return fmt.Errorf("daemon answered %d %s", resp.StatusCode, body)
						}
						return nil
					}
				case "raw":
					conns := make([]*rawConn, n)
					for c := range conns {
						rc, err := dialRaw(socket)
						if err != nil {
							b.Fatal(err)
						}
						defer rc.Close()
						conns[c] = rc
					}
					sign = func(c int, d []byte) error { return conns[c].sign(d) }
				}
				load(b, n, sign)
			})
		}
	}
}

// benchDaemon runs the daemon in this process on the benchmarks' key and returns its
// socket.
func benchDaemon(b *testing.B, k pkcs11.BenchKey) (string, func()) {
	dir, err := os.MkdirTemp("", "pd-bench-")
	if err != nil {
		b.Fatal(err)
	}
	cfg := benchConfig(k, benchSessions).Table("server", "socket", "d.sock", "http", "").Load(b, dir)
	ctx, cancel := context.WithCancel(context.Background())
	listening := make(chan struct{})
	// The daemon logs each request, as it would in production; only the bytes go nowhere.
	log := slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
	d, err := daemon.New(ctx, cfg, daemon.Options{Logger: log, Listening: func(string, string) { close(listening) }})
	if err != nil {
		b.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- d.Serve(ctx) }()
	<-listening
	return cfg.Server.Socket, func() {
		cancel()
		if err := <-served; err != nil {
			b.Error(err)
		}
		os.RemoveAll(dir)
	}
}

// rawConn is one keep-alive HTTP/1.1 connection that sends sign requests and checks
// that each answer is a 200 with a signature.
type rawConn struct {
	net.Conn
	r   *bufio.Reader
	req []byte
}

func dialRaw(socket string) (*rawConn, error) {
	c, err := net.Dial("unix", socket)
	if err != nil {
		return nil, err
	}
	return &rawConn{Conn: c, r: bufio.NewReaderSize(c, 4096)}, nil
}

var signatureField = []byte(`"signature":"`)

func (c *rawConn) sign(digest []byte) error {
	body := `{"digest":"` + base64.StdEncoding.EncodeToString(digest) + `"}`
	c.req = fmt.Appendf(c.req[:0], "POST /v1/keys/signing/sign HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	if _, err := c.Write(c.req); err != nil {
		return err
	}
	status, err := c.r.ReadSlice('\n')
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(status, []byte("HTTP/1.1 200 ")) {
		return fmt.Errorf("daemon answered %q", status)
	}
	length := -1
	for {
		line, err := c.r.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(line) <= 2 {
			break
		}
		if v, ok := bytes.CutPrefix(line, []byte("Content-Length: ")); ok {
			length, _ = strconv.Atoi(string(bytes.TrimSpace(v)))
		}
	}
	if length < 0 {
		return errors.New("no Content-Length in the answer")
	}
	resp := make([]byte, length)
	if _, err := io.ReadFull(c.r, resp); err != nil {
		return err
	}
	if !bytes.Contains(resp, signatureField) {
		return fmt.Errorf("no signature in %s", resp)
	}
	return nil
}
