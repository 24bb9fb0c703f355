// Package fakes3 serves an S3-compatible bucket store (github.com/johannesboyne/gofakes3,
// in memory) on 127.0.0.1 for tests of s3:// sources. It is a package of its own so that
// the daemon binary, which links testenv, does not link an S3 server.
package fakes3

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/ib1/provenanced/testenv"
)

// Server is an in-memory S3 on a loopback port. Clients reach it by path
// (URL/bucket/key), as AWS_ENDPOINT_URL_S3 makes provenanced do.
type Server struct {
	URL     string
	backend *s3mem.Backend

	mu     sync.Mutex
	denied map[string]bool // "bucket/key"
}

// Start serves an empty store until the test ends.
func Start(t testenv.TB) *Server {
	t.Helper()
	s := &Server{backend: s3mem.New(), denied: map[string]bool{}}
	fake := gofakes3.New(s.backend).Server()
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// gofakes3 checks no credentials and has no policies: Deny stands in for an
		// IAM or bucket policy that refuses the object, answering as S3 does.
		s.mu.Lock()
		denied := s.denied[strings.TrimPrefix(r.URL.Path, "/")]
		s.mu.Unlock()
		if denied {
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprint(w, `<?xml version="1.0" encoding="UTF-8"?>`+"\n"+`<Error><Code>AccessDenied</Code><Message>Access Denied</Message><RequestId>FAKES3DENIED</RequestId></Error>`)
			return
		}
		fake.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	s.URL = ts.URL
	return s
}

// Put stores an object, creating its bucket if need be.
func (s *Server) Put(t testenv.TB, bucket, key string, data []byte) {
	t.Helper()
	if ok, _ := s.backend.BucketExists(bucket); !ok {
		if err := s.backend.CreateBucket(bucket); err != nil {
			t.Fatalf("fakes3: create bucket %s: %v", bucket, err)
		}
	}
	if _, err := s.backend.PutObject(bucket, key, map[string]string{}, bytes.NewReader(data), int64(len(data)), nil); err != nil {
		t.Fatalf("fakes3: put s3://%s/%s: %v", bucket, key, err)
	}
}

// Deny makes every request for the object answer 403 AccessDenied.
func (s *Server) Deny(bucket, key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.denied[bucket+"/"+key] = true
}
