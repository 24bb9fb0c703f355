package provenance

import (
	"sync"
	"testing"
)

// TestConcurrentVerify shares one Verifier (its caches and scratch pool) between goroutines
// verifying different records; run with -race to check the sharing.
func TestConcurrentVerify(t *testing.T) {
	m := loadManifest(t)
	v := newTestVerifier(t, m.Root, m.Framework, WithCacheSizes(2, 2)) // small: evictions happen
	files := []string{"records/edp.json", "records/cap.json", "records/bank.json", "records/unicode.json", "records/signed-2020-by-since-expired-cert.json"}
	want := map[string]any{}
	data := map[string][]byte{}
	for _, f := range files {
		want[f] = mustParseJSON(t, readVector(t, f[:len(f)-len(".json")]+".decoded.json"))
		data[f] = readVector(t, f)
	}
	bad := readVector(t, "invalid/nested-signature-altered.json")
	var wg sync.WaitGroup
	errs := make(chan string, 100)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 10; i++ {
				f := files[(g+i)%len(files)]
				_, steps, err := v.VerifyJSON(data[f])
				if err != nil {
					errs <- f + ": " + err.Error()
					return
				}
				if d := sameOrdered(stepsAsList(steps), want[f], "$"); d != "" {
					errs <- f + ": " + d
					return
				}
				if _, _, err := v.VerifyJSON(bad); err == nil {
					errs <- "tampered record accepted"
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if n := v.chains.len(); n > 2 {
		t.Errorf("path cache holds %d entries, bound is 2", n)
	}
	if n := v.certs.len(); n > 2 {
		t.Errorf("certificate cache holds %d entries, bound is 2", n)
	}
}
