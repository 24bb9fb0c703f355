package testenv

import (
	"crypto/ecdsa"
	"crypto/rand"
	"encoding/json"
	"net/http"
)

// BareSignHandler is what a developer would write in ten minutes: decode {"digest"} with
// encoding/json, sign with the key in memory, encode the answer. The benchmarks measure
// the daemon, with its checks, metrics and logs, against it.
func BareSignHandler(key *ecdsa.PrivateKey) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Digest []byte `json:"digest"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || len(req.Digest) != 32 {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		sig, err := ecdsa.SignASN1(rand.Reader, key, req.Digest)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(struct {
			Signature []byte `json:"signature"`
		}{sig})
	})
}
