package api_test

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ib1/provenanced/api"
	"github.com/ib1/provenanced/backends"
)

// The handlers of the two figures make bench compares, in process and without HTTP: an
// EDP record (POST /api/v1/sign/edp) and a batch of 64 digests, whose time per signature
// is the unit of "a record costs N signatures". The daemon's HTTP and request log come on
// top of both (make bench measures them); these show what the handlers themselves cost.
//
//	go test -run '^$' -bench 'EDPHandler|Batch64Handler' -benchmem ./api/

func benchHandler(b *testing.B, path, body string, per int) {
	k := openDevKey(b)
	_, a := newServer(b, api.Options{
		Keys:            []*backends.Key{k},
		MaxRequestBytes: 1 << 20,
		Provenance:      &api.Provenance{Verifier: vectorVerifier(b), Key: k, Scheme: scheme},
	})
	h := a.Handler()
	serve := func() {
		r := httptest.NewRequest("POST", path, strings.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != http.StatusOK {
			b.Fatalf("%d %s", w.Code, w.Body)
		}
	}
	serve()
	b.ReportAllocs()
	cpu := cpuTime(b)
	for b.Loop() {
		serve()
	}
	// CPU time, which other load on the machine disturbs less than the wall clock.
	b.ReportMetric(float64((cpuTime(b)-cpu).Nanoseconds())/float64(b.N*per), "cpu-ns/signature")
}

// cpuTime is the CPU time this process has used so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func BenchmarkEDPHandler(b *testing.B) { benchHandler(b, "/api/v1/sign/edp", edpRequest, 1) }

func BenchmarkBatch64Handler(b *testing.B) {
	items := make([]map[string]string, 64)
	for i := range items {
		d := sha256.Sum256([]byte(fmt.Sprint("batch ", i)))
		items[i] = map[string]string{"digest": base64.StdEncoding.EncodeToString(d[:])}
	}
	body, _ := json.Marshal(map[string]any{"batch": items})
	benchHandler(b, "/v1/keys/signing/sign", string(body), 64)
}
