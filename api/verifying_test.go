package api

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/ib1/provenanced/api/wire"
)

// At most n verifications at once; the next waits, and gets its slot as one ends. The
// slot is given back before the answer goes out.
func TestVerifySlots(t *testing.T) {
	a := &API{verifying: newVerifySlots(1)}
	held := make(chan struct{})
	release := make(chan struct{})
	go a.withSlot(httptest.NewRecorder(), httptest.NewRequest("POST", "/", nil), wire.Error, func(w http.ResponseWriter) {
		close(held)
		<-release
	})
	<-held
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, ok := a.verifying.take(ctx); ok {
		t.Fatal("a second slot of one")
	}
	got := make(chan int, 1)
	go func() {
		rec := httptest.NewRecorder()
		a.withSlot(rec, httptest.NewRequest("POST", "/", nil), wire.Error, func(w http.ResponseWriter) {
			if len(a.verifying) != 1 {
				t.Error("working without the slot")
			}
			w.WriteHeader(http.StatusTeapot)
		})
		if len(a.verifying) != 0 {
			t.Error("the slot was not given back")
		}
		got <- rec.Code
	}()
	time.Sleep(20 * time.Millisecond)
	close(release)
	if code := <-got; code != http.StatusTeapot {
		t.Errorf("the waiting verification answered %d", code)
	}
}
