package daemon

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestParseHead(t *testing.T) {
	c := &conn{hdr: http.Header{}, saved: map[string]string{}}
	for _, tc := range []struct {
		head string
		ok   bool
	}{
		{"POST /v1/keys/signing/sign HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n", true},
		{"GET /v1/keys?x=1 HTTP/1.1\r\nHost: x\r\n\r\n", true},
		{"GET / HTTP/1.1\r\nhost: x\r\nconnection: keep-alive\r\n\r\n", true},
		{"GET / HTTP/1.0\r\nHost: x\r\n\r\n", false},
		{"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n", false},
		{"DELETE /v1/keys HTTP/1.1\r\nHost: x\r\n\r\n", false},
		{"GET / HTTP/1.1\r\n\r\n", false}, // no Host: net/http answers 400
		{"POST /x HTTP/1.1\r\nHost: x\r\n\r\n", false},
		{"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", false},
		{"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", false},
		{"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n", false},
		{"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n", false},
		{"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", false},
		{"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\n\r\n", false},
		{"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", false},
		{"GET / HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n", false},
		{"GET / HTTP/1.1\r\nHost: x\r\nX: a\x01b\r\n\r\n", false},
		{"GET /a//b HTTP/1.1\r\nHost: x\r\n\r\n", false},
		{"GET /a/../b HTTP/1.1\r\nHost: x\r\n\r\n", false},
		{"GET /a/%2e HTTP/1.1\r\nHost: x\r\n\r\n", false},
		{"GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n", false},
		{"GET /v1/keys/{name} HTTP/1.1\r\nHost: x\r\n\r\n", false},
		{"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", false},
		{"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n", false},
	} {
		clear(c.hdr)
		c.vals = c.vals[:0]
		h, ok := parseHead([]byte(tc.head), c)
		if ok != tc.ok {
			t.Errorf("%q: taken = %v, want %v", tc.head, ok, tc.ok)
		}
		if ok && h.header.Get("Host") != "x" {
			t.Errorf("%q: Host = %q", tc.head, h.header.Get("Host"))
		}
	}
}

// testServer serves h on a Unix socket through the daemon's server.
func testServer(t *testing.T, h http.Handler) (*server, string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "s.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	std := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second, IdleTimeout: time.Minute, ConnContext: connContext}
	s := newServer(h, std, 1<<20, slog.New(slog.DiscardHandler))
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	t.Cleanup(func() {
		s.Close()
		<-done
	})
	return s, sock
}

// echoHandler answers with what it saw, and whether the daemon's reader took the request
// (a net/http request has a Body of net/http's own type).
func echoHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		_, own := w.(*respWriter)
		p, _ := r.Context().Value(peerKey{}).(*peer)
		uid := -1
		if p != nil {
			uid = p.uid
		}
		fmt.Fprintf(w, "%s %s body=%q own=%v uid=%d q=%s ct=%s", r.Method, r.URL.Path, b, own, uid, r.URL.RawQuery, r.Header.Get("Content-Type"))
	})
	mux.HandleFunc("/sized", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "5")
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(201)
		io.WriteString(w, "hello")
	})
	mux.HandleFunc("/panic", func(w http.ResponseWriter, r *http.Request) { panic("boom") })
	return mux
}

func rawExchange(t *testing.T, sock, req string, responses int) []*http.Response {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	var out []*http.Response
	for range responses {
		resp, err := http.ReadResponse(br, nil)
		for err == nil && resp.StatusCode == http.StatusContinue {
			resp, err = http.ReadResponse(br, nil)
		}
		if err != nil {
			t.Fatalf("reading a response to %q: %v", req, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body = io.NopCloser(strings.NewReader(string(body)))
		out = append(out, resp)
	}
	return out
}

func body(r *http.Response) string {
	b, _ := io.ReadAll(r.Body)
	return string(b)
}

func TestServerTakesCommonRequestsAndHandsOverTheRest(t *testing.T) {
	_, sock := testServer(t, echoHandler())
	// Three pipelined requests on one connection, all taken by the daemon's reader.
	rs := rawExchange(t, sock,
		"POST /echo?a=1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"+
			"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n"+
			"GET /sized HTTP/1.1\r\nHost: x\r\n\r\n", 3)
	if got := body(rs[0]); !strings.Contains(got, `POST /echo body="{}" own=true`) || !strings.Contains(got, "q=a=1 ct=application/json") || !strings.Contains(got, "uid=") || strings.Contains(got, "uid=-1") {
		t.Errorf("first: %s", got)
	}
	if got := body(rs[1]); !strings.Contains(got, "GET /echo") || !strings.Contains(got, "own=true") {
		t.Errorf("second: %s", got)
	}
	if rs[2].StatusCode != 201 || body(rs[2]) != "hello" || rs[2].ContentLength != 5 || rs[2].Header.Get("Date") == "" {
		t.Errorf("third: %d %v %v", rs[2].StatusCode, rs[2].ContentLength, rs[2].Header)
	}
	if rs[0].ContentLength <= 0 || rs[0].Header.Get("Content-Type") == "" {
		t.Errorf("an answer without a Content-Length or type: %v", rs[0].Header)
	}

	// What the reader does not take is served by net/http, on the same connection, with
	// the peer's credentials still known.
	for _, tc := range []struct{ req, want string }{
		{"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", `POST /echo body="abc" own=false`},
		{"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\nabc", `body="abc" own=false`},
		{"GET /echo HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 6000) + "\r\n\r\n", "own=false"},
	} {
		rs := rawExchange(t, sock, tc.req+"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n", 2)
		if got := body(rs[0]); !strings.Contains(got, tc.want) || strings.Contains(got, "uid=-1") {
			t.Errorf("%.40q: %d %s, want %s", tc.req, rs[0].StatusCode, got, tc.want)
		}
		if got := body(rs[1]); !strings.Contains(got, "GET /echo") || !strings.Contains(got, "own=false") {
			t.Errorf("%.40q: the next request on the connection: %s", tc.req, got)
		}
	}
	if rs := rawExchange(t, sock, "GET /echo HTTP/1.0\r\nHost: x\r\n\r\n", 1); !strings.Contains(body(rs[0]), "own=false") {
		t.Errorf("HTTP/1.0: %s", body(rs[0]))
	}
	if rs := rawExchange(t, sock, "GET /echo HTTP/1.1\r\n\r\n", 1); rs[0].StatusCode != 400 {
		t.Errorf("no Host: %d, want net/http's 400", rs[0].StatusCode)
	}
	if rs := rawExchange(t, sock, "GET /a//echo HTTP/1.1\r\nHost: x\r\n\r\n", 1); rs[0].StatusCode/100 != 3 {
		t.Errorf("unclean path: %d, want the ServeMux's redirect", rs[0].StatusCode)
	}
}

func TestServerSurvivesPanicsAndShortBodies(t *testing.T) {
	_, sock := testServer(t, echoHandler())
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "GET /panic HTTP/1.1\r\nHost: x\r\n\r\n")
	if _, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
		t.Error("a panicking handler produced an answer")
	}
	c.Close()
	c, _ = net.Dial("unix", sock)
	io.WriteString(c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nshort")
	c.Close()
	if rs := rawExchange(t, sock, "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n", 1); rs[0].StatusCode != 200 {
		t.Errorf("after a panic and a short body: %d", rs[0].StatusCode)
	}
}

func TestServerShutdown(t *testing.T) {
	release := make(chan struct{})
	var started atomic.Int32
	mux := http.NewServeMux()
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		started.Add(1)
		<-release
		io.WriteString(w, "done")
	})
	mux.Handle("/", echoHandler())
	s, sock := testServer(t, mux)
	// An idle keep-alive connection, and one in the middle of a request.
	idle, _ := net.Dial("unix", sock)
	io.WriteString(idle, "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(idle)
	if resp, err := http.ReadResponse(br, nil); err != nil {
		t.Fatal(err)
	} else {
		io.ReadAll(resp.Body)
	}
	busy, _ := net.Dial("unix", sock)
	io.WriteString(busy, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	for started.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(context.Background()) }()
	idle.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := br.ReadByte(); err == nil {
		t.Error("the idle connection was not closed")
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) with a request in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	resp, err := http.ReadResponse(bufio.NewReader(busy), nil)
	if err != nil || body(resp) != "done" {
		t.Fatalf("the request in flight did not finish: %v", err)
	}
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
	if _, err := net.Dial("unix", sock); err == nil {
		t.Error("still accepting after Shutdown")
	}
}
