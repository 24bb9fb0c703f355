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
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ThalesGroup/crypto11"

	"github.com/ib1/provenanced/backends"
	"github.com/ib1/provenanced/backends/pkcs11"
	"github.com/ib1/provenanced/client"
	"github.com/ib1/provenanced/conf"
	"github.com/ib1/provenanced/daemon"
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

// load runs b.N calls of sign from n goroutines and reports the rate and p99.
func load(b *testing.B, n int, sign func(digest []byte) error) {
	digests := make([][]byte, 256)
	for i := range digests {
		d := sha256.Sum256([]byte{byte(i)})
		digests[i] = d[:]
	}
	var next atomic.Int64
	lat := make([][]time.Duration, n)
	var wg sync.WaitGroup
	var failed atomic.Pointer[error]
	b.ResetTimer()
	cpu0 := cpuTime()
	start := time.Now()
	for g := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				t0 := time.Now()
				if err := sign(digests[i%256]); err != nil {
					failed.Store(&err)
					return
				}
				lat[g] = append(lat[g], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu := cpuTime() - cpu0
	b.StopTimer()
	if err := failed.Load(); err != nil {
		b.Fatal(*err)
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "sig/s")
	b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
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
			load(b, n, func(d []byte) error {
				_, err := key.Sign(rand.Reader, d, crypto.SHA256)
				return err
			})
		})
	}
}

func benchSpec(b *testing.B, k pkcs11.BenchKey, sessions int) string {
	return fmt.Sprintf("[keys.signing]\nbackend = \"pkcs11\"\nmodule = %q\ntoken_label = %q\nkey_label = %q\npin = \"file:%s\"\nmax_sessions = %d\n", k.Module, k.Token, k.Label, k.PINFile, sessions)
}

func BenchmarkBackendInProcess(b *testing.B) {
	k := pkcs11.Bench()
	for _, n := range callers {
		b.Run(fmt.Sprintf("callers=%d", n), func(b *testing.B) {
			cfg, err := conf.Parse(filepath.Join(b.TempDir(), "bench.toml"), []byte("[server]\nsocket = \"s\"\n"+benchSpec(b, k, benchSessions)))
			if err != nil {
				b.Fatal(err)
			}
			key, err := backends.Open(context.Background(), cfg.Keys[0], backends.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer key.Close()
			load(b, n, func(d []byte) error {
				_, err := key.SignContext(context.Background(), d, crypto.SHA256)
				return err
			})
		})
	}
}

// BenchmarkDaemonUnixSocket signs through the daemon's Unix socket, with two load
// generators: the client package (net/http, JSON), and a lean one that writes a ready-made
// request on its own keep-alive connection and reads the answer, so that less of the two
// shared cores goes to generating the load.
func BenchmarkDaemonUnixSocket(b *testing.B) {
	k := pkcs11.Bench()
	for _, n := range callers {
		for _, gen := range []string{"client", "lean"} {
			b.Run(fmt.Sprintf("callers=%d/load=%s", n, gen), func(b *testing.B) {
				socket, stop := benchDaemon(b, k)
				defer stop()
				var sign func([]byte) error
				switch gen {
				case "client":
					c, err := client.New(client.Options{Socket: socket, MaxConns: n})
					if err != nil {
						b.Fatal(err)
					}
					defer c.Close()
					sign = func(d []byte) error {
						_, err := c.SignDigest(context.Background(), "signing", d)
						return err
					}
				case "lean":
					conns := make(chan *leanConn, n)
					for range n {
						lc, err := dialLean(socket)
						if err != nil {
							b.Fatal(err)
						}
						defer lc.Close()
						conns <- lc
					}
					sign = func(d []byte) error {
						lc := <-conns
						defer func() { conns <- lc }()
						return lc.sign(d)
					}
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
	text := fmt.Sprintf("[server]\nsocket = \"d.sock\"\nhttp = \"\"\n\n%s", benchSpec(b, k, benchSessions))
	cfg, err := conf.Parse(filepath.Join(dir, "bench.toml"), []byte(text))
	if err != nil {
		b.Fatal(err)
	}
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

// leanConn is one keep-alive HTTP/1.1 connection that sends sign requests and checks
// that the answer is a 200 with a signature.
type leanConn struct {
	net.Conn
	r   *bufio.Reader
	req []byte
}

func dialLean(socket string) (*leanConn, error) {
	c, err := net.Dial("unix", socket)
	if err != nil {
		return nil, err
	}
	return &leanConn{Conn: c, r: bufio.NewReaderSize(c, 4096)}, nil
}

var signatureField = []byte(`"signature":"`)

func (c *leanConn) sign(digest []byte) error {
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
