package awskms_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/ib1/provenanced/client"
	"github.com/ib1/provenanced/conf"
	"github.com/ib1/provenanced/daemon"
	"github.com/ib1/provenanced/testenv"
)

// BenchmarkKMSSign measures what the daemon costs on top of KMS: signatures by 1, 4 and
// 16 concurrent clients through the daemon's Unix socket, against the same clients
// calling Sign on the same emulator directly with the SDK, in the same run.
//
// At each level the two ways alternate in rounds (b.N signatures each way in all), so
// that whatever else the machine runs weighs on both alike; the order flips every round.
// Each level reports ops/s and the median latency of each way, and the daemon's cost:
// cost-% (throughput lost) and added-p50-% (median latency added), each the median over
// the rounds of the round's own comparison. ns/op counts the signatures of both ways.
//
// Wall-clock figures on a shared machine are noisy, so each level also reports CPU time
// per signature, which the machine's other load barely moves: of this process (the
// clients, plus the daemon on the daemon's way) and of the emulator. cpu-cost-% is the
// throughput the daemon would cost where CPU is the limit, as it is here:
// 1 - (direct + KMS CPU) / (daemon + KMS CPU).
//
//	go test -run '^$' -bench KMSSign -benchtime 4000x ./backends/awskms/
//
// The emulator, the daemon and the clients share the machine's cores; the emulator's
// CPU is what limits both ways.
func BenchmarkKMSSign(b *testing.B) {
	lk := testenv.StartLocalKMS(b)
	key := lk.NewSigningKey(b, newPKI(b), "alias/bench")
	d := benchDaemon(b, writeConfig(b, b.TempDir(), key.Bundle, "alias/bench", lk.Endpoint()))

	// The direct client is an ordinary SDK client, given the same connection pool as
	// the daemon's so that the comparison is of the daemon, not of pool sizes.
	cfg, err := config.LoadDefaultConfig(context.Background(),
		config.WithRegion(testenv.LocalKMSRegion),
		config.WithHTTPClient(awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
			tr.MaxIdleConns, tr.MaxIdleConnsPerHost = 256, 256
		})))
	if err != nil {
		b.Fatal(err)
	}
	direct := kms.NewFromConfig(cfg, func(o *kms.Options) { o.BaseEndpoint = aws.String(lk.Endpoint()) })
	digest := sha256.Sum256([]byte("benchmark"))
	signDirect := func(ctx context.Context) error {
		_, err := direct.Sign(ctx, &kms.SignInput{KeyId: &key.ARN, Message: digest[:], MessageType: types.MessageTypeDigest, SigningAlgorithm: types.SigningAlgorithmSpecEcdsaSha256})
		return err
	}
	signDaemon := func(ctx context.Context) error {
		_, err := d.SignDigest(ctx, "signing", digest[:])
		return err
	}
	const rounds = 10
	for _, clients := range []int{1, 4, 16} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			per := max(b.N/rounds, clients)
			var dirLat, dmnLat []time.Duration
			var dirTime, dmnTime time.Duration
			var dirCPU, dmnCPU, kmsCPU time.Duration
			var costs, added []float64
			run := func(sign func(context.Context) error, self, emu *time.Duration) round {
				s0, e0 := cpuSelf(b), cpuOf(b, lk.Pid())
				r := runClients(b, clients, per, sign)
				*self += cpuSelf(b) - s0
				*emu += cpuOf(b, lk.Pid()) - e0
				return r
			}
			for r := range rounds {
				var dr, dm round
				if r%2 == 0 {
					dr = run(signDirect, &dirCPU, &kmsCPU)
					dm = run(signDaemon, &dmnCPU, &kmsCPU)
				} else {
					dm = run(signDaemon, &dmnCPU, &kmsCPU)
					dr = run(signDirect, &dirCPU, &kmsCPU)
				}
				dirLat, dmnLat = append(dirLat, dr.lat...), append(dmnLat, dm.lat...)
				dirTime, dmnTime = dirTime+dr.took, dmnTime+dm.took
				costs = append(costs, 100*(1-dr.took.Seconds()/dm.took.Seconds()))
				added = append(added, 100*(float64(median(dm.lat))/float64(median(dr.lat))-1))
			}
			n := float64(len(dirLat))
			b.ReportMetric(n/dirTime.Seconds(), "direct-ops/s")
			b.ReportMetric(n/dmnTime.Seconds(), "daemon-ops/s")
			b.ReportMetric(float64(median(dirLat).Microseconds()), "direct-p50-µs")
			b.ReportMetric(float64(median(dmnLat).Microseconds()), "daemon-p50-µs")
			b.ReportMetric(medianF(costs), "cost-%")
			b.ReportMetric(medianF(added), "added-p50-%")
			perOp := func(d time.Duration) float64 { return float64(d.Microseconds()) / n }
			kms := perOp(kmsCPU) / 2 // both ways' signatures
			b.ReportMetric(perOp(dirCPU), "direct-cpu-µs/op")
			b.ReportMetric(perOp(dmnCPU), "daemon-cpu-µs/op")
			b.ReportMetric(kms, "kms-cpu-µs/op")
			b.ReportMetric(100*(1-(perOp(dirCPU)+kms)/(perOp(dmnCPU)+kms)), "cpu-cost-%")
		})
	}
}

// benchDaemon serves cfg in this process until the benchmark's cleanup, and returns a
// client of its socket. (The daemon's tests with KMS keys are cmd/provenanced's.)
func benchDaemon(b *testing.B, cfg *conf.Config) *client.Client {
	ctx, cancel := context.WithCancel(context.Background())
	listening := make(chan struct{})
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	d, err := daemon.New(ctx, cfg, daemon.Options{Logger: log, Listening: func(string, string) { close(listening) }})
	if err != nil {
		cancel()
		b.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- d.Serve(ctx) }()
	select {
	case <-listening:
	case err := <-served:
		cancel()
		b.Fatalf("the daemon stopped at start: %v", err)
	}
	b.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			b.Error(err)
		}
	})
	c, err := client.New(client.Options{Socket: cfg.Server.Socket})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(c.Close)
	return c
}

// round is one way's share of a round: each signature's latency, and the wall time.
type round struct {
	lat  []time.Duration
	took time.Duration
}

// runClients signs n times from `clients` goroutines.
func runClients(b *testing.B, clients, n int, sign func(context.Context) error) round {
	ctx := context.Background()
	lat := make([]time.Duration, n)
	var next atomic.Int64
	var failed atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				t0 := time.Now()
				if err := sign(ctx); err != nil {
					failed.Store(err)
					return
				}
				lat[i] = time.Since(t0)
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	return round{lat: lat, took: took}
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func medianF(f []float64) float64 {
	s := slices.Clone(f)
	slices.Sort(s)
	return (s[(len(s)-1)/2] + s[len(s)/2]) / 2
}

// cpuSelf is this process's CPU time so far, user and system.
func cpuSelf(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuOf is a process's CPU time so far, user and system, from /proc (in clock ticks of
// 10 ms: rounds of a second or more keep the error small).
func cpuOf(b *testing.B, pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command name, which is in parentheses and may hold spaces:
	// utime and stime are the 14th and 15th of the line.
	f := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+2:]))
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		b.Fatalf("/proc/%d/stat: %q", pid, data)
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond
}
