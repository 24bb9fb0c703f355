package testenv

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
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

// Poster sends one prepared JSON POST again and again through net/http's client, over
// keep-alive connections: the load generator of the benchmarks. Its own CPU does not
// matter to them, which measure the server's CPU from /proc.
type Poster struct {
	client *http.Client
	url    string
	body   []byte
}

// NewPoster posts body to path on addr, over "unix" (addr is a socket path) or "tcp",
// keeping up to conns connections open.
func NewPoster(network, addr, path string, body []byte, conns int) *Poster {
	tr := &http.Transport{MaxIdleConns: conns, MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns, IdleConnTimeout: time.Minute}
	url := "http://" + addr + path
	if network == "unix" {
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", addr)
		}
		url = "http://localhost" + path
	}
	return &Poster{client: &http.Client{Transport: tr, Timeout: time.Minute}, url: url, body: body}
}

// Do posts once and reads the whole answer, which must be a 200.
func (p *Poster) Do() error {
	resp, err := p.client.Post(p.url, "application/json", bytes.NewReader(p.body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("answer %s: %s", resp.Status, bytes.TrimSpace(b))
	}
	return nil
}

// Close closes the idle connections.
func (p *Poster) Close() { p.client.CloseIdleConnections() }
