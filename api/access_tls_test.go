package api_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/ib1/provenanced/api"
	"github.com/ib1/provenanced/api/access"
	"github.com/ib1/provenanced/backends"
	"github.com/ib1/provenanced/conf"
)

// A client certificate issued by ca: its identity is in uri, dns or cn.
func clientCert(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, uri, dns, cn string) tls.Certificate {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if uri != "" {
		u, _ := url.Parse(uri)
		tmpl.URIs = []*url.URL{u}
	}
	if dns != "" {
		tmpl.DNSNames = []string{dns}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}
}

// Identity from a verified client certificate: by its URI SANs if it has any, else by its
// DNS SANs, else by its CN; never a fallback from one to the next.
func TestAccessByClientCertificate(t *testing.T) {
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "clients CA"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	caDER, _ := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	ca, _ := x509.ParseCertificate(caDER)
	clients := []*conf.Client{
		{Name: "spiffe", TLSURI: "spiffe://example.org/billing", Keys: []string{"signing"}, Allow: []string{"sign"}},
		{Name: "dns", TLSDNS: "billing.example.org", Keys: []string{"signing"}, Allow: []string{"csr"}},
		{Name: "cn", TLSCN: "billing-cn", Keys: []string{"*"}, Allow: []string{"sign"}},
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	a, err := api.New(api.Options{Keys: []*backends.Key{openDevKey(t)}, MaxRequestBytes: 4096, Access: access.NewPolicy(clients, access.Options{ClientCAs: pool})})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(a.Handler())
	srv.TLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	srv.StartTLS()
	defer srv.Close()
	digest := `{"digest":"` + strings.Repeat("A", 43) + `="}`
	for _, tc := range []struct {
		name          string
		uri, dns, cn  string
		want          int
		wantInMessage string
	}{
		{"URI SAN", "spiffe://example.org/billing", "billing.example.org", "billing-cn", 200, ""},
		{"URI SAN, its host in capitals", "spiffe://EXAMPLE.org/billing", "", "", 200, ""},
		{"DNS SAN before CN", "", "billing.example.org", "billing-cn", 403, `client \"dns\" may not sign`},
		{"CN", "", "", "billing-cn", 200, ""},
		// The deliberate bug of the issue: a URI that matches no client fell back to the CN.
		{"a URI of no client, the CN of one", "spiffe://example.org/other", "", "billing-cn", 401, `the client certificate (URI spiffe://example.org/other) is not a configured client's`},
		{"a DNS name of no client, the CN of one", "", "other.example.org", "billing-cn", 401, `(DNS other.example.org) is not a configured client's`},
		{"unknown certificate", "spiffe://example.org/other", "", "someone", 401, `the client certificate (URI spiffe://example.org/other) is not a configured client's`},
	} {
		cert := clientCert(t, ca, caKey, tc.uri, tc.dns, tc.cn)
		tr := srv.Client().Transport.(*http.Transport).Clone()
		tr.TLSClientConfig.Certificates = []tls.Certificate{cert}
		c := &http.Client{Transport: tr}
		resp, err := c.Post(srv.URL+"/v1/keys/signing/sign", "application/json", strings.NewReader(digest))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.want || !strings.Contains(string(body), tc.wantInMessage) {
			t.Errorf("%s: %d %s; want %d %s", tc.name, resp.StatusCode, body, tc.want, tc.wantInMessage)
		}
	}
}
