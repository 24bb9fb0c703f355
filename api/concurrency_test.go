package api_test

import (
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// Records are encoded in pooled buffers (and their steps in pooled scratch): EDP records
// signed at once on many connections must each come back whole, verify, and hold their own
// request's values.
func TestConcurrentEDPRecords(t *testing.T) {
	url, _, _, _ := recordServer(t)
	v := vectorVerifier(t)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 10 {
				account := strings.Repeat("a", g*40+i) // records of different lengths
				resp, err := http.Post(url+"/api/v1/sign/edp", "application/json", strings.NewReader(strings.Replace(edpRequest, "test-account-123", account, 1)))
				if err != nil {
					t.Error(err)
					return
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 {
					t.Errorf("%d %s %v", resp.StatusCode, body, err)
					return
				}
				_, steps, err := v.VerifyJSON(body)
				if err != nil {
					t.Errorf("record %d of client %d does not verify: %v", i, g, err)
					return
				}
				if got, _ := steps[0].GetString("account"); got != account {
					t.Errorf("record %d of client %d has account %q, want %q", i, g, got, account)
				}
			}
		}()
	}
	wg.Wait()
}
