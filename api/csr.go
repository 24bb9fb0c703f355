package api

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net/http"

	"github.com/ib1/provenanced/api/access"
	"github.com/ib1/provenanced/api/wire"
	"github.com/ib1/provenanced/audit"
	"github.com/ib1/provenanced/provenance"
)

type csrRequest struct {
	Subject string   `json:"subject"`
	URIs    []string `json:"uris"`
	DNS     []string `json:"dns"`
	// From is an existing CSR (PEM) whose subject and extensions the new one takes.
	From string `json:"from"`
}

// csr answers a PKCS#10 request for the key, signed through its backend.
func (a *API) csr(w http.ResponseWriter, r *http.Request) {
	e, ok := a.lookupKey(w, r)
	if !ok {
		return
	}
	var req csrRequest
	if !a.decodeRequest(w, r, &req, "subject, uris, dns, from") {
		return
	}
	in := provenance.CSRRequest{Subject: req.Subject, URIs: req.URIs, DNS: req.DNS}
	if req.From != "" {
		in.From = []byte(req.From)
	}
	entry := access.Entry(r.Context())
	if entry != nil {
		entry.CSR = &audit.CSR{Subject: req.Subject, URIs: req.URIs, DNS: req.DNS} // as asked, until signed
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.opts.SignTimeout)
	defer cancel()
	csr, err := provenance.CreateCSR(rand.Reader, e.key.WithContext(ctx), in)
	if err == nil && entry != nil {
		entry.CSR = signedCSR(csr) // what was signed, also when copied from another CSR
	}
	var invalid *provenance.CSRError
	if errors.As(err, &invalid) {
		wire.Error(w, http.StatusBadRequest, "bad_request", invalid.Msg, "")
		return
	}
	if err != nil {
		a.writeSignError(w, r, e, err)
		return
	}
	wire.JSON(w, http.StatusOK, &struct {
		CSR string `json:"csr"`
	}{string(csr)})
}

// signedCSR is what a CSR the daemon made names, for its audit line.
func signedCSR(csrPEM []byte) *audit.CSR {
	b, _ := pem.Decode(csrPEM)
	if b == nil {
		return nil
	}
	c, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return nil
	}
	out := &audit.CSR{Subject: c.Subject.String(), DNS: c.DNSNames}
	for _, u := range c.URIs {
		out.URIs = append(out.URIs, u.String())
	}
	return out
}
