package testenv

import (
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// LoadResult is what a load run measured.
type LoadResult struct {
	Ops     int
	Errors  int
	Elapsed time.Duration
	P50     time.Duration
	P99     time.Duration
	// FirstError is the first error an operation returned.
	FirstError error
}

// OpsPerSec is the rate of successful operations.
func (r LoadResult) OpsPerSec() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Ops-r.Errors) / r.Elapsed.Seconds()
}

// Load runs op n times from clients goroutines, each calling op with its own client
// index, and measures throughput and latency percentiles. It is the one load generator
// of the benchmarks, so that the daemon and its baselines are driven alike.
func Load(clients, n int, op func(client int) error) LoadResult {
	if clients < 1 {
		clients = 1
	}
	var next atomic.Int64
	lat := make([][]time.Duration, clients)
	errs := make([]int, clients)
	var firstErr atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := make([]time.Duration, 0, n/clients+1)
			for next.Add(1) <= int64(n) {
				t := time.Now()
				err := op(c)
				l = append(l, time.Since(t))
				if err != nil {
					errs[c]++
					firstErr.CompareAndSwap(nil, errBox{err})
				}
			}
			lat[c] = l
		}()
	}
	wg.Wait()
	r := LoadResult{Ops: n, Elapsed: time.Since(start)}
	var all []time.Duration
	for c := range clients {
		all = append(all, lat[c]...)
		r.Errors += errs[c]
	}
	if len(all) > 0 {
		sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
		r.P50 = all[len(all)/2]
		r.P99 = all[len(all)*99/100]
	}
	if e, ok := firstErr.Load().(errBox); ok {
		r.FirstError = e.err
	}
	return r
}

type errBox struct{ err error }
