package main

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ib1/provenanced/internal/devsetup"
	"github.com/ib1/provenanced/testenv"
)

// The listeners, tried as an attacker would: pipelining, running the daemon out of file
// descriptors, slow and silent clients, heads that promise large bodies, web pages and
// foreign Host names. Each runs the real binary.

// startConfig runs the daemon on a config file with the development key and PKI, its
// socket p.sock in the config's folder, and the tables of more (nil for none) added.
// httpAddr is the TCP address the config names, "" for none.
func startConfig(t *testing.T, more *testenv.Config, httpAddr string) (*testenv.Process, string, *ecdsa.PublicKey) {
	t.Helper()
	dir := t.TempDir()
	_, files, err := devsetup.NewDevFiles(dir, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c := testenv.NewConfig().Table("server", "socket", "p.sock").Append(more)
	if httpAddr != "" {
		c.Table("server", "http", httpAddr)
	}
	cfg := c.DevKey().WriteFile(t, filepath.Join(dir, "p.toml"))
	p := testenv.StartDaemon(t, daemonBin, filepath.Join(dir, "p.sock"), httpAddr, nil, "serve", "-config", cfg)
	return p, dir, bundleKey(t, files.Bundle)
}

// bundleKey is the public key of a bundle's first certificate.
func bundleKey(t *testing.T, path string) *ecdsa.PublicKey {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatalf("%s: no PEM", path)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c.PublicKey.(*ecdsa.PublicKey)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	addr, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

func digestOf(s string) []byte {
	d := sha256.Sum256([]byte(s))
	return d[:]
}

func signBody(digest []byte) string {
	return `{"digest":"` + base64.StdEncoding.EncodeToString(digest) + `"}`
}

// signHead is a sign request's head with a Content-Length, as it goes on the wire.
func signRequest(host string, digest []byte) string {
	body := signBody(digest)
	return fmt.Sprintf("POST /v1/keys/signing/sign HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", host, len(body), body)
}

// chunkedSignRequest is the same request with a chunked body.
func chunkedSignRequest(host string, digest []byte) string {
	body := signBody(digest)
	return fmt.Sprintf("POST /v1/keys/signing/sign HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", host, len(body), body)
}

// readSignature reads one answer from br and checks that it is a signature over digest.
func readSignature(t *testing.T, br *bufio.Reader, pub *ecdsa.PublicKey, digest []byte, what string) {
	t.Helper()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("%s: %d %s %v", what, resp.StatusCode, body, err)
	}
	var out struct{ Signature []byte }
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatalf("%s: %s: %v", what, body, err)
	}
	if !ecdsa.VerifyASN1(pub, digest, out.Signature) {
		t.Fatalf("%s: the signature is not over this request's digest", what)
	}
}

func dial(t *testing.T, network, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return c
}

// Pipelined requests, in one write, each get their own answer, in order and whole: a
// Content-Length body then a chunked one; three requests, the last closing the
// connection; a POST followed by a stray CRLF.
func TestPipelinedRequestsEachGetTheirOwnAnswer(t *testing.T) {
	addr := freeAddr(t)
	p, _, pub := startConfig(t, nil, addr)
	for _, network := range []string{"tcp", "unix"} {
		target, host := addr, addr
		if network == "unix" {
			target, host = p.Socket, "localhost"
		}
		a, b, c := digestOf(network+" a"), digestOf(network+" b"), digestOf(network+" c")

		conn := dial(t, network, target)
		io.WriteString(conn, signRequest(host, a)+chunkedSignRequest(host, b))
		br := bufio.NewReader(conn)
		readSignature(t, br, pub, a, network+" pair, first (Content-Length)")
		readSignature(t, br, pub, b, network+" pair, second (chunked)")

		conn = dial(t, network, target)
		io.WriteString(conn, "GET /v1/keys/signing HTTP/1.1\r\nHost: "+host+"\r\n\r\n"+
			chunkedSignRequest(host, c)+
			"GET /healthz HTTP/1.1\r\nHost: "+host+"\r\nConnection: close\r\n\r\n")
		br = bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || !strings.Contains(string(body), `"name":"signing"`) {
			t.Fatalf("%s triple, first: %d %s", network, resp.StatusCode, body)
		}
		readSignature(t, br, pub, c, network+" triple, second")
		resp, err = http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		body, err = io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || err != nil || resp.ContentLength != int64(len(body)) {
			t.Fatalf("%s triple, third: %d %q %v", network, resp.StatusCode, body, err)
		}
		if rest, err := io.ReadAll(br); len(rest) != 0 || err != nil {
			t.Fatalf("%s triple: after the answer to Connection: close: %q %v", network, rest, err)
		}

		conn = dial(t, network, target)
		io.WriteString(conn, signRequest(host, a)+"\r\n")
		readSignature(t, bufio.NewReader(conn), pub, a, network+" POST then CRLF")
	}
}

// Running out of file descriptors does not end the daemon: accept fails with EMFILE,
// net/http backs off and tries again, and once the connections close the daemon signs.
func TestOutOfFileDescriptorsTheDaemonWaits(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	sock := filepath.Join(dir, "provenanced.sock")
	p := testenv.StartDaemon(t, "prlimit", sock, addr, []string{"PROVENANCED_HTTP=" + addr},
		"--nofile=64:64", daemonBin, "serve", "-dev", dir)
	var conns []net.Conn
	for range 120 {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			break // the backlog is full: the daemon has stopped accepting
		}
		conns = append(conns, c)
	}
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(p.Output(), "too many open files") {
		if time.Now().After(deadline) {
			t.Fatalf("accept never failed with %d connections under nofile=64:\n%s", len(conns), p.Output())
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, c := range conns {
		c.Close()
	}
	if code, _ := p.Wait(500 * time.Millisecond); code != -1 {
		t.Fatalf("the daemon exited (%d) after EMFILE:\n%s", code, p.Output())
	}
	c := p.Client()
	deadline = time.Now().Add(20 * time.Second)
	for {
		resp, err := c.Post(p.URL("/v1/keys/signing/sign"), "application/json", strings.NewReader(signBody(digestOf("after EMFILE"))))
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("after EMFILE: %d %s", resp.StatusCode, body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the daemon does not sign after the connections closed: %v\n%s", err, p.Output())
		}
		time.Sleep(100 * time.Millisecond)
	}
	p.Signal(syscall.SIGTERM)
	if code, err := p.Wait(20 * time.Second); code != 0 {
		t.Errorf("SIGTERM after EMFILE: exit %d %v", code, err)
	}
}

// A connection that sends no head, or half of one, is closed at the head timeout (5 s),
// not kept for the idle timeout; a head with bare LF line ends is answered at once.
func TestHeadDeadlines(t *testing.T) {
	addr := freeAddr(t)
	startConfig(t, nil, addr)
	for name, send := range map[string]string{"nothing": "", "half a head": "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c := dial(t, "tcp", addr)
			io.WriteString(c, send)
			start := time.Now()
			n, err := c.Read(make([]byte, 1024))
			took := time.Since(start)
			if took < 4*time.Second || took > 12*time.Second {
				t.Errorf("closed after %v (read %d bytes, %v), want about 5 s", took, n, err)
			}
		})
	}
	t.Run("bare LF", func(t *testing.T) {
		t.Parallel()
		c := dial(t, "tcp", addr)
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		io.WriteString(c, "GET /healthz HTTP/1.1\nHost: 127.0.0.1\n\n")
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "HTTP/1.1 ") {
			t.Errorf("bare LF head: %q %v, want an answer at once", line, err)
		}
	})
}

// A client that pipelines and never reads its answers holds its connection only until the
// write deadline (sign_timeout + 15 s): SIGTERM then finishes well within a long
// shutdown_timeout. A connection idle for longer than the write deadline still gets a
// whole large answer: the deadline is set afresh for each request.
func TestWriteDeadlines(t *testing.T) {
	addr := freeAddr(t)
	p, _, _ := startConfig(t, testenv.NewConfig().Table("server", "sign_timeout", "100ms", "shutdown_timeout", "90s"), addr)

	idle := dial(t, "tcp", addr)
	idle.SetDeadline(time.Now().Add(2 * time.Minute))
	br := bufio.NewReader(idle)
	io.WriteString(idle, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("first request: %v", err)
	} else {
		io.ReadAll(resp.Body)
	}

	stuck := dial(t, "tcp", addr)
	stuck.SetDeadline(time.Now().Add(2 * time.Minute))
	go func() {
		// About 25 MB of answers (the OpenAPI document, 24 KB, a thousand times): more
		// than the socket buffers hold.
		req := strings.Repeat("GET /openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 1000)
		io.WriteString(stuck, req)
	}()

	time.Sleep(16 * time.Second) // past the write deadline of 15.1 s
	io.WriteString(idle, "GET /openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("after 16 s idle: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 || len(body) < 4096 || int64(len(body)) != resp.ContentLength {
		t.Fatalf("after 16 s idle: %d, %d bytes of %d, %v", resp.StatusCode, len(body), resp.ContentLength, err)
	}

	// The client that never read was given up on: the answers buffered before its write
	// deadline are there, then the connection ends.
	sr := bufio.NewReader(stuck)
	answers := 0
	for ; answers < 1000; answers++ {
		resp, err := http.ReadResponse(sr, nil)
		if err != nil {
			break
		}
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			break
		}
	}
	if answers == 1000 || answers == 0 {
		t.Errorf("the client that did not read got %d of 1000 answers, want the connection closed part way", answers)
	}

	start := time.Now()
	p.Signal(syscall.SIGTERM)
	code, err := p.Wait(80 * time.Second)
	if code != 0 {
		t.Fatalf("SIGTERM: exit %d %v\n%s", code, err, p.Output())
	}
	if took := time.Since(start); took > 30*time.Second {
		t.Errorf("shutdown took %v: the client that never reads held it", took)
	}
	if strings.Contains(p.Output(), "cut off") {
		t.Errorf("requests were cut off at shutdown_timeout:\n%s", p.Output())
	}
}

// vmRSS is a process's resident memory in bytes.
func vmRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// Heads that promise a megabyte each and send ten bytes cost the daemon almost nothing:
// the body buffer grows as bytes arrive. (Allocated from Content-Length, 300 of them were
// 300 MB.)
func TestLargeContentLengthWithoutBodyAllocatesNothing(t *testing.T) {
	addr := freeAddr(t)
	p, _, _ := startConfig(t, nil, addr)
	pid := p.Cmd.Process.Pid
	before := vmRSS(t, pid)
	head := "POST /v1/keys/signing/sign HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1048576\r\n\r\n{\"digest\":"
	var peak int64
	for range 300 {
		c := dial(t, "tcp", addr)
		io.WriteString(c, head)
	}
	// Every head has been read once a request sent after them all is answered.
	resp, err := p.Client().Get(p.URL("/healthz"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for range 10 {
		peak = max(peak, vmRSS(t, pid))
		time.Sleep(50 * time.Millisecond)
	}
	if grew := peak - before; grew > 16<<20 {
		t.Errorf("300 heads of Content-Length 1048576 grew the daemon by %d MiB", grew>>20)
	}
	t.Logf("resident memory %d MiB before, %d MiB with 300 bodies pending", before>>20, peak>>20)
}

// A loopback listener answers only a loopback Host or one in allowed_hosts (DNS
// rebinding); every POST must be application/json (a web page's cross-site POST can only
// be text/plain, a form or multipart). The Unix socket has no Host to check.
func TestLoopbackListenerRefusesForeignHostsAndSimplePosts(t *testing.T) {
	addr := freeAddr(t)
	p, _, _ := startConfig(t, testenv.NewConfig().Table("server", "allowed_hosts", []string{"signer.internal"}), addr)
	_, port, _ := net.SplitHostPort(addr)
	do := func(url, host, ctype string) (int, string) {
		t.Helper()
		method, body := "GET", io.Reader(nil)
		if ctype != "" {
			method, body = "POST", strings.NewReader(signBody(digestOf("web")))
		}
		req, _ := http.NewRequest(method, url, body)
		req.Host = host
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		c := http.DefaultClient
		if !strings.HasPrefix(url, "http://"+addr) {
			c = p.Client()
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	tcp := "http://" + addr
	signs := func() int { return scrapeSignCount(t, p.Client(), p.URL("/metrics")) }
	before := signs()
	for _, host := range []string{"evil.example", "evil.example:" + port, "127.0.0.1.nip.io:" + port, "signer.internal.evil.example", "0.0.0.0:" + port} {
		for _, ctype := range []string{"", "application/json"} {
			status, body := do(tcp+"/v1/keys/signing/sign", host, ctype)
			if ctype == "" {
				status, body = do(tcp+"/v1/keys", host, "")
			}
			if status != http.StatusMisdirectedRequest || !strings.Contains(body, "allowed_hosts") {
				t.Errorf("Host %q %s: %d %s, want 421 naming allowed_hosts", host, ctype, status, body)
			}
		}
	}
	for _, host := range []string{"localhost", "localhost:" + port, "127.0.0.1:" + port, "[::1]:" + port, "127.0.0.2", "LOCALHOST.", "signer.internal", "Signer.Internal:" + port} {
		if status, body := do(tcp+"/v1/keys/signing/sign", host, "application/json"); status != 200 {
			t.Errorf("Host %q: %d %s, want 200", host, status, body)
		}
	}
	for _, ctype := range []string{"text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"} {
		for _, url := range []string{tcp + "/v1/keys/signing/sign", tcp + "/api/v1/sign/edp", p.URL("/v1/keys/signing/sign")} {
			if status, body := do(url, "localhost", ctype); status != http.StatusUnsupportedMediaType || !strings.Contains(body, "application/json") {
				t.Errorf("%s as %s: %d %s, want 415", url, ctype, status, body)
			}
		}
	}
	if status, body := do(p.URL("/v1/keys"), "evil.example", ""); status != 200 {
		t.Errorf("the Unix socket checks Host: %d %s", status, body)
	}
	if got := signs() - before; got != 8 {
		t.Errorf("%d signatures, want the 8 of the allowed requests", got)
	}
	// The daemon never grants a cross-origin read: no CORS header, on any answer.
	req, _ := http.NewRequest("OPTIONS", tcp+"/v1/keys/signing/sign", nil)
	req.Header.Set("Origin", "http://evil.example")
	req.Header.Set("Access-Control-Request-Method", "POST")
	req.Header.Set("Access-Control-Request-Headers", "content-type")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for name := range resp.Header {
		if strings.HasPrefix(strings.ToLower(name), "access-control-") {
			t.Errorf("preflight answered with %s", name)
		}
	}
}

// A config file without server.http opens no TCP socket at all; SIGHUP is caught (the
// daemon reloads and keeps serving); SIGTERM then stops it cleanly and removes the socket.
func TestSocketOnlyConfigAndSIGHUP(t *testing.T) {
	p, _, pub := startConfig(t, nil, "")
	pid := p.Cmd.Process.Pid
	if n := tcpSockets(t, pid); n != 0 {
		t.Errorf("the daemon holds %d TCP sockets with a socket-only config", n)
	}
	if !strings.Contains(p.Output(), `"http":""`) {
		t.Errorf("the log does not say there is no TCP listener:\n%s", p.Output())
	}

	if err := p.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.Output(), "SIGHUP") {
		if time.Now().After(deadline) {
			t.Fatalf("nothing logged about SIGHUP:\n%s", p.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
	c := dial(t, "unix", p.Socket)
	io.WriteString(c, signRequest("localhost", digestOf("after SIGHUP")))
	readSignature(t, bufio.NewReader(c), pub, digestOf("after SIGHUP"), "after SIGHUP")

	p.Signal(syscall.SIGTERM)
	if code, err := p.Wait(20 * time.Second); code != 0 {
		t.Fatalf("SIGTERM: exit %d %v\n%s", code, err, p.Output())
	}
	if _, err := os.Lstat(p.Socket); !os.IsNotExist(err) {
		t.Errorf("the socket is left behind: %v", err)
	}
}

// tcpSockets counts the sockets among pid's file descriptors that /proc/net/tcp and tcp6
// list.
func tcpSockets(t *testing.T, pid int) int {
	t.Helper()
	inodes := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			if fields := strings.Fields(line); len(fields) > 9 {
				inodes[fields[9]] = true
			}
		}
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	n, sockets := 0, 0
	for _, fd := range fds {
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if inode, ok := strings.CutPrefix(link, "socket:["); err == nil && ok {
			sockets++
			if inodes[strings.TrimSuffix(inode, "]")] {
				n++
			}
		}
	}
	if sockets == 0 {
		t.Fatal("the daemon holds no socket at all: cannot tell")
	}
	return n
}

// tlsServer is the [server] table of a TLS listener with tlsFiles' files in dir, asking
// for client certificates of its CA.
func tlsServer(dir string) *testenv.Config {
	return testenv.NewConfig().Table("server", "tls_cert", filepath.Join(dir, "server.pem"), "tls_key", filepath.Join(dir, "server-key.pem"),
		"tls_client_ca", filepath.Join(dir, "ca.pem"))
}

// tlsFiles writes a CA, a server certificate for 127.0.0.1 and a client certificate, all
// issued by that CA, and returns the client's and the CA's for the test's side.
func tlsFiles(t *testing.T, dir string) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	caKey := newKey()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	issue := func(serial int64, tmpl *x509.Certificate, name string) tls.Certificate {
		k := newKey()
		tmpl.SerialNumber, tmpl.NotBefore, tmpl.NotAfter = big.NewInt(serial), time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, _ := x509.MarshalPKCS8PrivateKey(k)
		os.WriteFile(filepath.Join(dir, name+".pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
		os.WriteFile(filepath.Join(dir, name+"-key.pem"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}
	}
	issue(2, &x509.Certificate{Subject: pkix.Name{CommonName: "provenanced"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, "server")
	client := issue(3, &x509.Certificate{Subject: pkix.Name{CommonName: "app"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, "client")
	os.WriteFile(filepath.Join(dir, "ca.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return client, pool
}

// tls_cert and tls_key make the TCP listener HTTPS (TLS 1.2 at least); tls_client_ca
// requires a client certificate issued by that CA.
func TestTLSListener(t *testing.T) {
	certDir := t.TempDir()
	clientCert, pool := tlsFiles(t, certDir)
	addr := freeAddr(t)
	_, _, pub := startConfig(t, tlsServer(certDir), addr)
	client := func(cfg *tls.Config) *http.Client {
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
	}
	url := "https://" + addr + "/v1/keys/signing/sign"
	d := digestOf("over TLS")

	resp, err := client(&tls.Config{RootCAs: pool, Certificates: []tls.Certificate{clientCert}}).Post(url, "application/json", strings.NewReader(signBody(d)))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var out struct{ Signature []byte }
	if resp.StatusCode != 200 || json.Unmarshal(body, &out) != nil || !ecdsa.VerifyASN1(pub, d, out.Signature) {
		t.Fatalf("with a client certificate: %d %s", resp.StatusCode, body)
	}
	for name, cfg := range map[string]*tls.Config{
		"no client certificate": {RootCAs: pool},
		"TLS 1.1":               {RootCAs: pool, Certificates: []tls.Certificate{clientCert}, MaxVersion: tls.VersionTLS11},
	} {
		resp, err := client(cfg).Post(url, "application/json", strings.NewReader(signBody(d)))
		if err == nil {
			resp.Body.Close()
			t.Errorf("%s: %d, want the handshake refused", name, resp.StatusCode)
		}
	}
	if resp, err := http.Post("http://"+addr+"/v1/keys/signing/sign", "application/json", strings.NewReader(signBody(d))); err == nil {
		if resp.StatusCode == 200 {
			t.Errorf("plain HTTP signed on the TLS listener")
		}
		resp.Body.Close()
	}
}

// Heads that a lenient reader takes and a proxy in front may read otherwise (the raw
// material of request smuggling) are refused with 400, and nothing is signed.
func TestAmbiguousHeadsAreRefused(t *testing.T) {
	addr := freeAddr(t)
	p, _, _ := startConfig(t, nil, addr)
	body := signBody(digestOf("smuggled"))
	before := scrapeSignCount(t, p.Client(), p.URL("/metrics"))
	for _, head := range []string{
		"Content-Length: 157\x0b",
		"Content-Length: 157\xc2\xa0",
		"Content-Length: -0",
		"Content-Length: +" + strconv.Itoa(len(body)),
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\nContent-Length: 5",
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\nTransfer-Encoding: chunked",
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\nHost: a b<script>",
	} {
		c := dial(t, "tcp", addr)
		host := "Host: 127.0.0.1\r\n"
		if strings.Contains(head, "Host:") {
			host = "" // the head's own is the only one
		}
		io.WriteString(c, "POST /v1/keys/signing/sign HTTP/1.1\r\n"+host+"Content-Type: application/json\r\n"+head+"\r\n\r\n"+body)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Errorf("%q: %v", head, err)
			continue
		}
		resp.Body.Close()
		if resp.StatusCode != 400 {
			t.Errorf("%q: %d, want 400", head, resp.StatusCode)
		}
	}
	if n := scrapeSignCount(t, p.Client(), p.URL("/metrics")) - before; n != 0 {
		t.Errorf("%d requests with an ambiguous head were signed", n)
	}
}
