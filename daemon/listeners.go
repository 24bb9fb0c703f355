package daemon

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"

	"github.com/ib1/provenanced/api/wire"
	"github.com/ib1/provenanced/conf"
)

// listeners are what the daemon serves on: each listener with its server, and the
// addresses for the log.
type listeners struct {
	all                   []served
	socket, http, metrics string
	tls                   bool // the HTTP listener speaks TLS
}

// served is one listener and the server on it.
type served struct {
	l   net.Listener
	srv *http.Server
}

func (ls *listeners) close() {
	for _, s := range ls.all {
		s.l.Close()
	}
}

// listen opens the listeners the config names, or takes those systemd passed (in): the
// Unix socket, the HTTP listener and the metrics listener. On error it closes what it
// opened; in stays the caller's.
func (d *Daemon) listen(in inherited) (*listeners, error) {
	s := &d.cfg.Server
	ls := &listeners{}
	socketHandler := d.handler
	if s.Pprof {
		socketHandler = d.withPprof(socketHandler)
	}
	socketLimit := newConnLimit("socket", s.MaxConnections, s.MaxConnectionsPerPeer, true, d.conns)
	switch {
	case in.socket != nil:
		ls.all = append(ls.all, served{d.limited(in.socket, socketLimit), d.server(socketHandler, socketLimit)})
		ls.socket = in.socket.Addr().String()
		if s.Socket != "" && ls.socket != s.Socket {
			d.log.Warn("the socket systemd passed is not at server.socket; clients must use the systemd one", "systemd", ls.socket, "server.socket", s.Socket)
		}
	case s.Socket != "":
		if err := socketPathProblem(s.Socket); err != nil {
			return nil, d.cfg.Errorf("server.socket", "%v", err) // exit status 2, as serve -check says
		}
		l, err := listenUnix(s.Socket, os.FileMode(s.SocketMode))
		if err != nil {
			return nil, err
		}
		ls.all = append(ls.all, served{d.limited(l, socketLimit), d.server(socketHandler, socketLimit)})
		ls.socket = s.Socket
	}
	ls.tls = d.cur.Load().tls != nil
	var err error
	apiLimit := newConnLimit("http", s.MaxConnections, s.MaxConnectionsPerPeer, true, d.conns)
	// The metrics listener's own small bound: a scraper and a probe or two need no more,
	// and whoever fills it reaches no other listener's room.
	metricsLimit := newConnLimit("metrics", s.MetricsMaxConnections, max(1, s.MetricsMaxConnections/4), false, d.conns)
	if ls.http, err = d.listenTCP(ls, in.http, s.HTTP, "server.http", ls.tls, func(h http.Handler) http.Handler { return h }, apiLimit); err == nil {
		ls.metrics, err = d.listenTCP(ls, in.metrics, s.MetricsHTTP, "server.metrics_http", false, metricsOnly, metricsLimit)
	}
	if err != nil {
		ls.close()
		return nil, err
	}
	ls.tls = ls.tls && ls.http != ""
	return ls, nil
}

// listenTCP serves wrap(the API with its metrics and request log) on a TCP listener,
// passed or opened on addr (none when both are empty), and returns its address. On
// loopback, only requests for a loopback Host or an allowed_hosts name reach the API
// (hostGuard).
func (d *Daemon) listenTCP(ls *listeners, passed net.Listener, addr, key string, useTLS bool, wrap func(http.Handler) http.Handler, lim *connLimit) (string, error) {
	l := passed
	if l == nil {
		if addr == "" {
			return "", nil
		}
		var err error
		if l, err = net.Listen("tcp", addr); err != nil {
			if tcpListenProblem(err) {
				return "", d.cfg.Errorf(key, "cannot listen on %s: %v", addr, err)
			}
			return "", fmt.Errorf("%s: %s: cannot listen on %s: %w", d.cfg.File, key, addr, err)
		}
	}
	handler := d.handler
	if isLoopback(l.Addr()) {
		handler = newObserved(hostGuard(d.api, d.cfg.Server.AllowedHosts), d.log, d.metrics, d.refusals)
	}
	a := l.Addr().String()
	l = d.limited(l, lim) // under TLS: a newcomer refused costs no handshake
	if useTLS {
		l = tls.NewListener(l, d.tlsConfig())
	}
	ls.all = append(ls.all, served{l, d.server(wrap(handler), lim)})
	return a, nil
}

// limited is l under lim.
func (d *Daemon) limited(l net.Listener, lim *connLimit) net.Listener {
	return &limitedListener{Listener: l, lim: lim, peerOf: d.peerOf}
}

// loadTLS builds the TCP listener's TLS configuration from [server] tls_cert, tls_key
// and tls_client_ca; nil when TLS is not configured. With a client CA, every client must
// present a certificate that chains to it.
func loadTLS(cfg *conf.Config) (*tls.Config, error) {
	s := &cfg.Server
	if s.TLSCert == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(s.TLSCert, s.TLSKey)
	if err != nil {
		return nil, cfg.Errorf("server.tls_cert", "cannot load the certificate %s with the key %s: %v", s.TLSCert, s.TLSKey, err)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if s.TLSClientCA != "" {
		pemBytes, err := os.ReadFile(s.TLSClientCA)
		if err != nil {
			return nil, cfg.Errorf("server.tls_client_ca", "%v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemBytes) {
			return nil, cfg.Errorf("server.tls_client_ca", "%s holds no PEM certificate", s.TLSClientCA)
		}
		tc.ClientCAs = pool
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return tc, nil
}

// isLoopback reports a listener bound to a loopback address: only processes on this
// machine reach it, and among them a web page in a browser, through DNS rebinding.
func isLoopback(a net.Addr) bool {
	t, ok := a.(*net.TCPAddr)
	return ok && t.IP.IsLoopback()
}

// hostGuard serves only requests whose Host names loopback or one of allowed. On a
// loopback listener this defeats DNS rebinding: a page from evil.example, its name
// rebound to 127.0.0.1, still sends Host: evil.example. The answer is 421 Misdirected
// Request: the request reached a server that does not answer for that name.
func hostGuard(next http.Handler, allowed []string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hostAllowed(r.Host, allowed) {
			next.ServeHTTP(w, r)
			return
		}
		msg := "Host " + strconv.Quote(r.Host) + " is not served here: this listener is on loopback and answers localhost, 127.0.0.1 and [::1]"
		if len(allowed) > 0 {
			msg += " and " + strings.Join(allowed, ", ")
		}
		msg += "; add the name to [server] allowed_hosts to serve it"
		wire.Error(w, http.StatusMisdirectedRequest, "misdirected_request", msg, "")
	})
}

func hostAllowed(host string, allowed []string) bool {
	h := host
	if hh, port, err := net.SplitHostPort(host); err == nil {
		// SplitHostPort takes anything after the last colon for a port: "localhost.:1.evil"
		// would be localhost. (RFC 3986 allows an empty port.)
		if _, err := strconv.ParseUint(port, 10, 16); err != nil && port != "" {
			return false
		}
		h = hh
	}
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	h = strings.TrimSuffix(strings.ToLower(h), ".")
	if h == "localhost" {
		return true
	}
	if ip := net.ParseIP(h); ip != nil && ip.IsLoopback() {
		return true
	}
	for _, a := range allowed {
		if strings.EqualFold(h, strings.TrimSuffix(a, ".")) {
			return true
		}
	}
	return false
}
