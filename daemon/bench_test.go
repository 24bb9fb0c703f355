package daemon

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/base64"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ib1/provenanced/backends"
	pembackend "github.com/ib1/provenanced/backends/pem"
	"github.com/ib1/provenanced/conf"
	"github.com/ib1/provenanced/internal/devsetup"
	"github.com/ib1/provenanced/testenv"
)

// The benchmarks of single signatures with a PEM key: in process, through the daemon
// over its Unix socket, and through a bare net/http server that only decodes
// {"digest"}, signs and encodes — driven by the same load generator, in the same run.
//
//	go test -run '^$' -bench 'Sign' -benchtime 20000x ./daemon/

const benchClients = 32

// startBenchDaemon runs a daemon in this process on a Unix socket, logging JSON lines to
// a file as it would to journald.
func startBenchDaemon(b *testing.B) (string, *Daemon) {
	b.Helper()
	dir := b.TempDir()
	if _, _, err := devsetup.NewDevFiles(dir, time.Now()); err != nil {
		b.Fatal(err)
	}
	cfg := testenv.NewConfig().Table("server", "socket", "p.sock", "http", "").DevKey().Load(b, dir)
	logFile, err := os.Create(filepath.Join(dir, "log.json"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { logFile.Close() })
	log := slog.New(slog.NewJSONHandler(logFile, nil)) // as `provenanced serve` logs
	d, err := New(context.Background(), cfg, Options{Logger: log, Version: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	d.opts.Listening = func(string, string) { close(ready) }
	done := make(chan error, 1)
	go func() { done <- d.Serve(ctx) }()
	select {
	case <-ready:
	case err := <-done:
		b.Fatal(err)
	}
	b.Cleanup(func() { cancel(); <-done })
	return cfg.Server.Socket, d
}

// startBareServer is the naive server the daemon is measured against.
func startBareServer(b *testing.B, key *ecdsa.PrivateKey) string {
	b.Helper()
	sock := filepath.Join(b.TempDir(), "bare.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: testenv.BareSignHandler(key)}
	go srv.Serve(l)
	b.Cleanup(func() { srv.Close() })
	return sock
}

// signLoad drives POST path on the socket with {"digest"} from benchClients clients, each
// on keep-alive connections, with the load generator of the benchmark harness.
func signLoad(b *testing.B, sock, path string) {
	b.Helper()
	d := sha256.Sum256([]byte("bench"))
	p := testenv.NewPoster("unix", sock, path, []byte(`{"digest":"`+base64.StdEncoding.EncodeToString(d[:])+`"}`), benchClients)
	defer p.Close()
	op := func(int) error { return p.Do() }
	testenv.Load(benchClients, benchClients*8, op) // warm both ends
	b.ResetTimer()
	r := testenv.Load(benchClients, b.N, op)
	b.StopTimer()
	if r.Errors > 0 {
		b.Fatalf("%d errors, first: %v", r.Errors, r.FirstError)
	}
	b.ReportMetric(r.OpsPerSec(), "ops/s")
	b.ReportMetric(float64(r.P50.Microseconds()), "p50-µs")
	b.ReportMetric(float64(r.P99.Microseconds()), "p99-µs")
}

// BenchmarkSignInProcess signs through the PEM backend's key as the daemon holds it
// (with its metrics observer), on all cores.
func BenchmarkSignInProcess(b *testing.B) {
	dir := b.TempDir()
	if _, _, err := devsetup.NewDevFiles(dir, time.Now()); err != nil {
		b.Fatal(err)
	}
	spec := conf.NewKey("signing", "pem", "", "bench", &pembackend.Options{PrivateKey: filepath.Join(dir, "signing-key.pem")})
	m := NewMetrics("bench")
	k, err := backends.Open(context.Background(), spec, backends.Options{Observe: m.signObserver})
	if err != nil {
		b.Fatal(err)
	}
	d := sha256.Sum256([]byte("bench"))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := k.SignContext(context.Background(), d[:], crypto.SHA256); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

func BenchmarkSignDaemonUnix32(b *testing.B) {
	sock, _ := startBenchDaemon(b)
	signLoad(b, sock, "/v1/keys/signing/sign")
}

func BenchmarkSignBareUnix32(b *testing.B) {
	key, err := devsetup.NewKey()
	if err != nil {
		b.Fatal(err)
	}
	sock := startBareServer(b, key)
	signLoad(b, sock, "/sign")
}
