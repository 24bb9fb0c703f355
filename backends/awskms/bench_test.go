package awskms_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/ib1/provenanced/testenv"
)

// benchResult is one sub-benchmark's last (largest) run.
type benchResult struct {
	opsPerSec float64
	p50       time.Duration
}

// BenchmarkKMSSign measures what the daemon costs on top of KMS: signatures by 1, 4 and
// 16 concurrent clients through the daemon's Unix socket, against the same clients
// calling Sign on the same emulator directly with the SDK, in the same run. Each
// reports ops/s and the median latency; the parent logs the table with the daemon's
// cost in throughput and in p50.
//
//	go test -run '^$' -bench BenchmarkKMSSign -benchtime 3s ./backends/awskms/
//
// The emulator, the daemon and the clients share the machine's cores; the emulator's
// CPU is what limits both paths.
func BenchmarkKMSSign(b *testing.B) {
	lk := testenv.StartLocalKMS(b)
	key := lk.NewSigningKey(b, newPKI(b), "alias/bench")
	d := startDaemon(b, writeConfig(b, b.TempDir(), key.Bundle, kmsTOML("alias/bench", lk.Endpoint())))

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
	ways := []struct {
		name string
		sign func(ctx context.Context) error
	}{
		{"direct", func(ctx context.Context) error {
			_, err := direct.Sign(ctx, &kms.SignInput{KeyId: &key.ARN, Message: digest[:], MessageType: types.MessageTypeDigest, SigningAlgorithm: types.SigningAlgorithmSpecEcdsaSha256})
			return err
		}},
		{"daemon", func(ctx context.Context) error {
			_, err := d.SignDigest(ctx, "signing", digest[:])
			return err
		}},
	}
	levels := []int{1, 4, 16}
	results := map[string]benchResult{}
	for _, clients := range levels {
		for _, w := range ways {
			name := fmt.Sprintf("clients=%d/%s", clients, w.name)
			b.Run(name, func(b *testing.B) {
				results[name] = runClients(b, clients, w.sign)
			})
		}
	}
	var t strings.Builder
	fmt.Fprintf(&t, "\n%-8s %12s %12s %10s %12s %12s %10s\n", "clients", "direct op/s", "daemon op/s", "cost", "direct p50", "daemon p50", "added")
	for _, c := range levels {
		dr, dm := results[fmt.Sprintf("clients=%d/direct", c)], results[fmt.Sprintf("clients=%d/daemon", c)]
		if dr.opsPerSec == 0 || dm.opsPerSec == 0 {
			continue
		}
		fmt.Fprintf(&t, "%-8d %12.0f %12.0f %9.1f%% %12v %12v %9.1f%%\n", c, dr.opsPerSec, dm.opsPerSec,
			100*(1-dm.opsPerSec/dr.opsPerSec), dr.p50.Round(time.Microsecond), dm.p50.Round(time.Microsecond),
			100*(float64(dm.p50)/float64(dr.p50)-1))
	}
	b.Log(t.String())
}

// runClients signs b.N times from `clients` goroutines and reports throughput and the
// median latency.
func runClients(b *testing.B, clients int, sign func(context.Context) error) benchResult {
	ctx := context.Background()
	lat := make([]time.Duration, b.N)
	var next atomic.Int64
	var failed atomic.Value
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
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
	elapsed := time.Since(start)
	b.StopTimer()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	slices.Sort(lat)
	r := benchResult{opsPerSec: float64(b.N) / elapsed.Seconds(), p50: lat[len(lat)/2]}
	b.ReportMetric(r.opsPerSec, "ops/s")
	b.ReportMetric(float64(r.p50.Microseconds()), "p50-µs")
	return r
}
