package daemon

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// server serves one listener. It reads the common request itself — HTTP/1.1, GET or a
// POST with a Content-Length, plain headers — builds the *http.Request and serves it
// through the same handler as net/http would, with a ResponseWriter that writes the whole
// answer in one go. A connection that sends anything else (chunked bodies, Expect,
// Upgrade, HTTP/1.0, odd or oversized headers, escaped or unclean paths) is handed,
// unread bytes and all, to a net/http server for the rest of its life, so every case
// this reader does not take is served exactly as net/http serves it.
//
// Why: net/http's per-request work (a textproto header reader, a URL parser, chunking
// and connection state machinery) costs more CPU than the signature a request asks for,
// on the path every signing client takes. The daemon must cost less than a naive
// net/http server that only signs.
type server struct {
	handler      http.Handler
	std          *http.Server // serves the connections handed over
	handoff      *handoffListener
	maxBody      int64
	headTimeout  time.Duration
	readTimeout  time.Duration
	writeTimeout time.Duration
	idleTimeout  time.Duration
	connContext  func(context.Context, net.Conn) context.Context
	log          *slog.Logger

	mu       sync.Mutex
	listener net.Listener
	conns    map[*conn]bool // true while a request is being served
	closing  bool
	active   sync.WaitGroup // running connections
	stdDone  chan error
}

const (
	maxHeadBytes = 8 << 10 // a request head larger than this goes to net/http
	maxHeaders   = 64
)

func newServer(h http.Handler, std *http.Server, maxBody int64, log *slog.Logger) *server {
	s := &server{
		handler:      h,
		std:          std,
		maxBody:      maxBody,
		headTimeout:  std.ReadHeaderTimeout,
		readTimeout:  std.ReadTimeout,
		writeTimeout: std.WriteTimeout,
		idleTimeout:  std.IdleTimeout,
		connContext:  std.ConnContext,
		log:          log,
		conns:        map[*conn]bool{},
		stdDone:      make(chan error, 1),
	}
	return s
}

// Serve accepts connections on l until Shutdown or Close.
func (s *server) Serve(l net.Listener) error {
	s.mu.Lock()
	s.listener = l
	s.handoff = &handoffListener{addr: l.Addr(), conns: make(chan net.Conn), done: make(chan struct{})}
	s.mu.Unlock()
	go func() { s.stdDone <- s.std.Serve(s.handoff) }()
	for {
		nc, err := l.Accept()
		if err != nil {
			s.mu.Lock()
			closing := s.closing
			s.mu.Unlock()
			if closing {
				return http.ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(5 * time.Millisecond)
				continue
			}
			return err
		}
		c := &conn{s: s, nc: nc, br: bufio.NewReaderSize(nc, 4<<10), bw: bufio.NewWriterSize(nc, 4<<10)}
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			nc.Close()
			return http.ErrServerClosed
		}
		s.conns[c] = false
		s.active.Add(1)
		s.mu.Unlock()
		go c.serve()
	}
}

// Shutdown stops accepting, closes idle connections, and waits for requests in flight
// to finish, or for ctx; then it closes what is left.
func (s *server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	if s.listener != nil {
		s.listener.Close()
	}
	for c, busy := range s.conns {
		if !busy {
			c.nc.Close()
		}
	}
	s.mu.Unlock()
	stdErr := make(chan error, 1)
	go func() { stdErr <- s.std.Shutdown(ctx) }()
	done := make(chan struct{})
	go func() { s.active.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
		s.Close()
	}
	if e := <-stdErr; e != nil && err == nil {
		err = e
	}
	return err
}

// Close closes the listener and every connection at once.
func (s *server) Close() error {
	s.mu.Lock()
	s.closing = true
	if s.listener != nil {
		s.listener.Close()
	}
	for c := range s.conns {
		c.nc.Close()
	}
	s.mu.Unlock()
	return s.std.Close()
}

// conn is one connection served here.
type conn struct {
	s    *server
	nc   net.Conn
	br   *bufio.Reader
	bw   *bufio.Writer
	ctx  context.Context
	w    respWriter
	peer string
	// The request header map, its value slices and the strings of the last request's
	// header values are kept from one request to the next: a client sends the same
	// headers every time, and handlers do not keep a request's header.
	hdr   http.Header
	vals  []string
	saved map[string]string
}

// setBusy marks the connection as serving a request (or idle); it reports false when the
// server is shutting down: the connection must not take another request, and one that
// has just finished a request closes rather than wait for the next.
func (c *conn) setBusy(busy bool) bool {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	if c.s.closing {
		return false
	}
	c.s.conns[c] = busy
	return true
}

func (c *conn) forget() {
	c.s.mu.Lock()
	delete(c.s.conns, c)
	c.s.mu.Unlock()
	c.s.active.Done()
}

func (c *conn) serve() {
	handedOff := false
	defer func() {
		if !handedOff {
			c.nc.Close()
		}
		c.forget()
	}()
	c.ctx = context.Background()
	if c.s.connContext != nil {
		c.ctx = c.s.connContext(c.ctx, c.nc)
	}
	c.peer = c.nc.RemoteAddr().String()
	if c.peer == "" || c.peer == "@" {
		c.peer = "unix"
	}
	c.w.c = c
	for {
		c.nc.SetReadDeadline(time.Now().Add(c.s.idleTimeout))
		if _, err := c.br.Peek(1); err != nil {
			return
		}
		rq, ok := c.readHead()
		if !ok {
			// Not a request this reader takes: net/http serves the connection from here,
			// starting with the bytes still buffered.
			if c.br.Buffered() == 0 && rq.err != nil {
				return
			}
			handedOff = c.s.handoff.give(&handedConn{Conn: c.nc, r: c.br})
			return
		}
		if !c.setBusy(true) {
			return
		}
		keep := c.serveRequest(rq)
		if !c.setBusy(false) || !keep {
			c.bw.Flush() // a pipelined answer still in the buffer
			return
		}
	}
}

// head is a parsed request head.
type head struct {
	method, target, path, query string
	header                      http.Header
	contentLength               int64
	host                        string
	size                        int // bytes of the head, blank line included
	err                         error
}

// readHead parses the next request head without consuming it. ok is false when the
// request is not one this reader takes (then nothing has been consumed).
func (c *conn) readHead() (head, bool) {
	var buf []byte
	waited := false
	for {
		n := c.br.Buffered()
		if n == 0 {
			n = 1
		}
		b, err := c.br.Peek(n)
		if i := bytes.Index(b, []byte("\r\n\r\n")); i >= 0 {
			buf = b[:i+4]
			break
		}
		if err != nil {
			return head{err: err}, false
		}
		if len(b) >= maxHeadBytes || len(b) >= c.br.Size() {
			return head{}, false
		}
		if !waited {
			// The head did not come whole with its first bytes: the rest has
			// ReadHeaderTimeout to arrive. (Most requests come in one piece and skip this.)
			c.nc.SetReadDeadline(time.Now().Add(c.s.headTimeout))
			waited = true
		}
		if _, err := c.br.Peek(len(b) + 1); err != nil {
			return head{err: err}, false
		}
	}
	if c.hdr == nil {
		c.hdr, c.saved = make(http.Header, 8), make(map[string]string, 8)
	}
	clear(c.hdr)
	c.vals = c.vals[:0]
	h, ok := parseHead(buf, c)
	if !ok {
		return head{}, false
	}
	if h.contentLength > c.s.maxBody {
		return head{}, false // net/http reads it and answers 413
	}
	h.size = len(buf)
	return h, true
}

// parseHead parses a request head in the strict subset that this reader serves. Anything
// else (and anything ambiguous) is refused, to be served by net/http.
func parseHead(buf []byte, c *conn) (head, bool) {
	var h head
	line, rest, _ := bytes.Cut(buf, []byte("\r\n"))
	method, rl, ok1 := bytes.Cut(line, []byte(" "))
	target, proto, ok2 := bytes.Cut(rl, []byte(" "))
	if !ok1 || !ok2 || string(proto) != "HTTP/1.1" {
		return h, false
	}
	switch string(method) {
	case "GET":
		h.method = "GET"
	case "POST":
		h.method = "POST"
	default:
		return h, false
	}
	if !cleanTarget(target) {
		return h, false
	}
	h.target = string(target)
	h.path, h.query, _ = stringsCut(h.target, '?')
	h.header = c.hdr
	h.contentLength = -1
	n := 0
	for len(rest) > 2 {
		var l []byte
		l, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		n++
		if n > maxHeaders || len(l) == 0 || l[0] == ' ' || l[0] == '\t' || bytes.IndexByte(l, '\n') >= 0 {
			return h, false
		}
		name, value, ok := bytes.Cut(l, []byte(":"))
		if !ok || !validName(name) {
			return h, false
		}
		value = bytes.TrimSpace(value)
		for _, b := range value {
			if b < ' ' && b != '\t' || b == 0x7f {
				return h, false
			}
		}
		key := headerName(name)
		switch key {
		case "Content-Length":
			if h.contentLength >= 0 || len(value) == 0 || len(value) > 15 {
				return h, false
			}
			v, err := strconv.ParseInt(string(value), 10, 64)
			if err != nil || v < 0 || value[0] == '+' {
				return h, false
			}
			h.contentLength = v
		case "Transfer-Encoding", "Expect", "Upgrade", "Te", "Trailer":
			return h, false
		case "Connection":
			if !bytes.EqualFold(value, []byte("keep-alive")) {
				return h, false
			}
		case "Host":
			if h.host != "" {
				return h, false
			}
			h.host = c.value(key, value)
		}
		v := c.value(key, value)
		if vs, seen := h.header[key]; seen {
			h.header[key] = append(vs, v)
		} else {
			c.vals = append(c.vals, v)
			h.header[key] = c.vals[len(c.vals)-1 : len(c.vals) : len(c.vals)]
		}
	}
	if h.host == "" {
		return h, false // net/http answers 400
	}
	switch {
	case h.method == "POST" && h.contentLength < 0:
		return h, false
	case h.method == "GET" && h.contentLength > 0:
		return h, false
	}
	if h.contentLength < 0 {
		h.contentLength = 0
	}
	return h, true
}

// headerName canonicalises a header name; the usual ones without allocating.
func headerName(b []byte) string {
	for _, k := range commonHeaders {
		if len(k) == len(b) && bytes.EqualFold(b, []byte(k)) {
			return k
		}
	}
	return textproto.CanonicalMIMEHeaderKey(string(b))
}

var commonHeaders = [...]string{"Host", "Content-Type", "Content-Length", "User-Agent", "Accept", "Accept-Encoding", "Connection", "Authorization"}

// value returns v as a string, the one kept from an earlier request when it is the same.
func (c *conn) value(key string, v []byte) string {
	if s, ok := c.saved[key]; ok && s == string(v) {
		return s
	}
	s := string(v)
	if len(c.saved) < 16 {
		c.saved[key] = s
	}
	return s
}

// cleanTarget accepts an origin-form target whose path needs no decoding and no cleaning
// (the ServeMux would redirect "//" and dot segments, and decode "%").
func cleanTarget(t []byte) bool {
	if len(t) == 0 || t[0] != '/' || len(t) > 2048 {
		return false
	}
	path := t
	if i := bytes.IndexByte(t, '?'); i >= 0 {
		path = t[:i]
	}
	for i, b := range path {
		switch {
		case b >= 'a' && b <= 'z', b >= 'A' && b <= 'Z', b >= '0' && b <= '9', b == '-', b == '_', b == '~':
		case b == '/':
			if i+1 < len(path) && path[i+1] == '/' {
				return false
			}
		case b == '.':
			if path[i-1] == '/' {
				return false
			}
		default:
			return false
		}
	}
	for _, b := range t[len(path):] {
		if b <= ' ' || b >= 0x7f || b == '#' {
			return false
		}
	}
	return true
}

func validName(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

func stringsCut(s string, sep byte) (string, string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == sep {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// serveRequest reads the body, serves the request and writes the answer. It reports
// whether the connection may take another request.
func (c *conn) serveRequest(h head) (keep bool) {
	c.br.Discard(h.size)
	var body []byte
	if h.contentLength > int64(c.br.Buffered()) {
		c.nc.SetReadDeadline(time.Now().Add(c.s.readTimeout))
	}
	if h.contentLength > 0 {
		// A new slice for each request: handlers may keep what they parse from it.
		body = make([]byte, h.contentLength)
		if _, err := io.ReadFull(c.br, body); err != nil {
			return false
		}
	}
	req := &http.Request{
		Method:        h.method,
		URL:           &url.URL{Path: h.path, RawQuery: h.query},
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h.header,
		Body:          &bodyReader{b: body},
		ContentLength: h.contentLength,
		Host:          h.host,
		RemoteAddr:    c.peer,
		RequestURI:    h.target,
	}
	if h.contentLength == 0 {
		req.Body = http.NoBody
	}
	req = req.WithContext(c.ctx)
	c.w.reset()
	defer func() {
		if p := recover(); p != nil {
			if p != http.ErrAbortHandler {
				c.s.log.Error("panic serving a request", "route", req.Pattern, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			}
			keep = false
		}
	}()
	c.s.handler.ServeHTTP(&c.w, req)
	if err := c.w.finish(); err != nil {
		return false
	}
	if c.br.Buffered() == 0 {
		c.nc.SetWriteDeadline(time.Now().Add(c.s.writeTimeout))
		if err := c.bw.Flush(); err != nil {
			return false
		}
	}
	return true
}

// bodyReader is a request body already read.
type bodyReader struct {
	b []byte
	i int
}

func (r *bodyReader) Read(p []byte) (int, error) {
	if r.i >= len(r.b) {
		return 0, io.EOF
	}
	n := copy(p, r.b[r.i:])
	r.i += n
	return n, nil
}

func (r *bodyReader) Close() error { return nil }

// Bytes is the whole body (api.InMemoryBody): handlers need not copy it again.
func (r *bodyReader) Bytes() []byte { return r.b }

// respWriter writes one answer: the head when the handler has set a Content-Length and
// the status, otherwise the body is kept and written with its length at the end.
type respWriter struct {
	c       *conn
	header  http.Header
	status  int
	direct  bool // head written, body goes straight out
	buf     []byte
	written int64
	length  int64
}

func (w *respWriter) reset() {
	if w.header == nil {
		w.header = make(http.Header, 4)
	} else {
		clear(w.header)
	}
	w.status, w.direct, w.buf, w.written, w.length = 0, false, w.buf[:0], 0, -1
}

func (w *respWriter) Header() http.Header { return w.header }

func (w *respWriter) WriteHeader(code int) {
	if w.status != 0 {
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	w.status = code
	if cl := w.header.Get("Content-Length"); cl != "" {
		if n, err := strconv.ParseInt(cl, 10, 64); err == nil && n >= 0 {
			w.length = n
			w.writeHead(n)
			w.direct = true
		}
	}
}

func (w *respWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if w.direct {
		if w.written+int64(len(b)) > w.length {
			return 0, http.ErrContentLength
		}
		w.written += int64(len(b))
		return w.c.bw.Write(b)
	}
	w.buf = append(w.buf, b...)
	return len(b), nil
}

func (w *respWriter) finish() error {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if w.direct {
		if w.written != w.length {
			return http.ErrContentLength // the client would wait for the rest: close
		}
		return nil
	}
	if _, ok := w.header["Content-Type"]; !ok && len(w.buf) > 0 && w.status != http.StatusNoContent {
		w.header.Set("Content-Type", http.DetectContentType(w.buf))
	}
	w.writeHead(int64(len(w.buf)))
	_, err := w.c.bw.Write(w.buf)
	if cap(w.buf) > 64<<10 {
		w.buf = nil // do not keep a large answer's buffer for every idle connection
	}
	return err
}

func (w *respWriter) writeHead(length int64) {
	bw := w.c.bw
	bw.WriteString("HTTP/1.1 ")
	var num [20]byte
	bw.Write(strconv.AppendInt(num[:0], int64(w.status), 10))
	bw.WriteByte(' ')
	bw.WriteString(http.StatusText(w.status))
	bw.WriteString("\r\nDate: ")
	bw.WriteString(httpDate())
	bw.WriteString("\r\nContent-Length: ")
	bw.Write(strconv.AppendInt(num[:0], length, 10))
	bw.WriteString("\r\n")
	for k, vs := range w.header {
		if k == "Content-Length" || k == "Date" || k == "Transfer-Encoding" || k == "Connection" {
			continue
		}
		for _, v := range vs {
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(headerValue(v))
			bw.WriteString("\r\n")
		}
	}
	bw.WriteString("\r\n")
}

// headerValue drops line breaks a handler might have put in a value.
func headerValue(v string) string {
	for i := 0; i < len(v); i++ {
		if v[i] == '\r' || v[i] == '\n' {
			return string(bytes.Map(func(r rune) rune {
				if r == '\r' || r == '\n' {
					return ' '
				}
				return r
			}, []byte(v)))
		}
	}
	return v
}

var dateCache atomic.Pointer[dateValue]

type dateValue struct {
	sec  int64
	text string
}

// httpDate is the Date header's value, formatted once a second.
func httpDate() string {
	now := time.Now()
	if d := dateCache.Load(); d != nil && d.sec == now.Unix() {
		return d.text
	}
	d := &dateValue{sec: now.Unix(), text: now.UTC().Format(http.TimeFormat)}
	dateCache.Store(d)
	return d.text
}

// handoffListener gives net/http the connections this reader hands over.
type handoffListener struct {
	addr  net.Addr
	conns chan net.Conn
	once  sync.Once
	done  chan struct{}
}

func (l *handoffListener) give(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *handoffListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *handoffListener) Addr() net.Addr { return l.addr }

// handedConn is a connection handed to net/http with the bytes already buffered.
type handedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *handedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// NetConn is the connection underneath, for SO_PEERCRED.
func (c *handedConn) NetConn() net.Conn { return c.Conn }
