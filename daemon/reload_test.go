package daemon

import (
	"context"
	"crypto"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ib1/provenanced/client"
	"github.com/ib1/provenanced/conf"
	"github.com/ib1/provenanced/internal/devsetup"
	"github.com/ib1/provenanced/testenv"
)

// reloadable writes a config with keys "signing" and "other" in a new folder and returns
// a daemon whose Load reads it again, and a function that rewrites it.
func reloadable(t *testing.T) (*Daemon, func(otherKey string)) {
	t.Helper()
	dir := t.TempDir()
	if _, _, err := devsetup.NewDevFiles(dir, time.Now()); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"other-a.pem", "other-b.pem"} {
		k, _ := devsetup.NewKey()
		p, _ := devsetup.KeyPEM(k)
		os.WriteFile(filepath.Join(dir, name), p, 0o600)
	}
	var path string
	write := func(otherKey string) {
		c := testenv.NewConfig().
			Table("server", "socket", "p.sock").
			Table("provenance", "root_ca", "root-ca.pem", "key", "signing").
			DevKey()
		if otherKey != "" {
			c.PEMKey("other", otherKey, "")
		}
		path = c.Write(t, dir)
	}
	write("other-a.pem")
	cfg, err := conf.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(context.Background(), cfg, Options{Load: func() (*conf.Config, error) { return conf.Load(path) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.close)
	return d, write
}

// A reload keeps the open backend of a key whose table did not change, opens a changed
// one afresh, and releases the old generation's backends only once the request that was
// running on it has finished.
func TestReloadKeepsUnchangedBackendsAndDrains(t *testing.T) {
	d, write := reloadable(t)
	g0 := d.acquire() // a request in flight across the reload
	write("other-b.pem")
	if err := d.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	g1 := d.cur.Load()
	if g1 == g0 {
		t.Fatal("the reload did not swap the generation")
	}
	if !g1.key("signing").SharesBackend(g0.key("signing")) {
		t.Error("the unchanged key was reopened")
	}
	if g1.key("other").SharesBackend(g0.key("other")) {
		t.Error("the changed key kept its old backend")
	}
	if len(g0.release) != 1 || g0.release[0] != g0.key("other") {
		t.Errorf("to close after the drain: %v, want the old key other only", g0.release)
	}
	select {
	case <-g0.drained:
		t.Fatal("the old generation was closed under a running request")
	default:
	}
	g0.done()
	select {
	case <-g0.drained:
	case <-time.After(5 * time.Second):
		t.Fatal("the old generation was not closed after its last request")
	}
	if v := reloadOK(t, d); v != 1 {
		t.Errorf("reload_successful = %v", v)
	}

	// A key removed; then a config that does not load: the generation stays.
	write("")
	if err := d.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	g2 := d.cur.Load()
	if g2.key("other") != nil || !g2.key("signing").SharesBackend(g0.key("signing")) {
		t.Error("after removing other: wrong keys")
	}
	write("absent.pem")
	if err := d.Reload(context.Background()); err == nil {
		t.Fatal("a reload with a missing key file succeeded")
	}
	if d.cur.Load() != g2 || reloadOK(t, d) != 0 {
		t.Errorf("a failed reload changed the generation or left reload_successful at %v", reloadOK(t, d))
	}
}

// Requests and reloads at once: every request gets a generation that is not closed
// under it (run with -race to check the counting too).
func TestAcquireRacesReload(t *testing.T) {
	d, write := reloadable(t)
	var stop atomic.Bool
	var wg sync.WaitGroup
	var bad atomic.Int64
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				g := d.acquire()
				select {
				case <-g.drained:
					bad.Add(1)
				default:
				}
				g.done()
			}
		}()
	}
	for i := range 20 {
		write([]string{"other-a.pem", "other-b.pem"}[i%2])
		if err := d.Reload(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	if bad.Load() != 0 {
		t.Errorf("%d requests got a generation already closed", bad.Load())
	}
}

// A reload that swaps and retires the generation between acquire's load of the pointer
// and its count (acquireGap holds acquire there while it runs): the retired generation,
// with no request counted on it, closes its released backends at once, and acquire must
// see the pointer moved, put the old generation back and serve the new one.
// TestAcquireRacesReload leaves this window to chance and does not hit it.
func TestAcquireAcrossARetirement(t *testing.T) {
	d, write := reloadable(t)
	g0 := d.cur.Load()
	gaps := 0
	acquireGap = func() {
		gaps++
		if gaps > 1 {
			return
		}
		write("other-b.pem")
		if err := d.Reload(context.Background()); err != nil {
			t.Errorf("reload in the gap: %v", err)
		}
	}
	t.Cleanup(func() { acquireGap = nil })
	g := d.acquire()
	defer g.done()
	g1 := d.cur.Load()
	if g1 == g0 {
		t.Fatal("the reload in the gap did not swap the generation")
	}
	select {
	case <-g0.drained:
	default:
		t.Fatal("the retired generation did not finish: the gap was not between the load and the count")
	}
	if g != g1 {
		t.Fatalf("acquire returned the generation retired in the gap (drained: %v), not the current one", isClosed(g.drained))
	}
	if n := g0.refs.Load(); n != 0 {
		t.Errorf("the retired generation still counts %d request(s)", n)
	}
	if gaps != 2 {
		t.Errorf("acquire went through the gap %d times, want 2 (once more after putting the old generation back)", gaps)
	}
	digest := sha256.Sum256([]byte("after the gap"))
	for _, name := range []string{"signing", "other"} {
		if _, err := g.key(name).SignContext(context.Background(), digest[:], crypto.SHA256); err != nil {
			t.Errorf("key %s of the acquired generation: %v", name, err)
		}
	}
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// reloadOK is provenanced_config_last_reload_successful as the registry gathers it.
func reloadOK(t *testing.T, d *Daemon) float64 {
	t.Helper()
	mfs, err := d.metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "provenanced_config_last_reload_successful" {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatal("no provenanced_config_last_reload_successful")
	return 0
}

// BenchmarkAcquire is what every request pays for reloadability: counting itself in and
// out of the generation it is served by.
func BenchmarkAcquire(b *testing.B) {
	d := &Daemon{}
	d.cur.Store(&generation{drained: make(chan struct{})})
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			d.acquire().done()
		}
	})
}

// Signing over the socket while reloads swap the keys under it: no request fails, and
// (under -race) nothing the requests, the health state and the reload share is raced.
func TestServeWhileReloading(t *testing.T) {
	d, write := reloadable(t)
	listening := make(chan struct{})
	d.opts.Listening = func(string, string) { close(listening) }
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- d.Serve(ctx) }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	<-listening
	c, err := client.New(client.Options{Socket: d.cfg.Server.Socket})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var stop atomic.Bool
	var failed, signed atomic.Int64
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; !stop.Load(); n++ {
				digest := sha256.Sum256(fmt.Appendf(nil, "%d %d", i, n))
				key := []string{"signing", "other"}[n%2]
				if _, err := c.SignDigest(ctx, key, digest[:]); err != nil {
					failed.Add(1)
					t.Errorf("%s: %v", key, err)
					return
				}
				signed.Add(1)
			}
		}()
	}
	for i := range 10 {
		write([]string{"other-b.pem", "other-a.pem"}[i%2])
		if err := d.Reload(ctx); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	stop.Store(true)
	wg.Wait()
	if failed.Load() != 0 || signed.Load() == 0 {
		t.Errorf("%d signed, %d failed", signed.Load(), failed.Load())
	}
}
