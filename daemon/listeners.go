package daemon

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"

	"github.com/ib1/provenanced/api/wire"
	"github.com/ib1/provenanced/conf"
)

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
	if hh, _, err := net.SplitHostPort(host); err == nil {
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
