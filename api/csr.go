package api

import (
	"context"
	"crypto/rand"
	"errors"
	"net/http"

	"github.com/ib1/provenanced/api/wire"
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
	ctx, cancel := context.WithTimeout(r.Context(), a.opts.SignTimeout)
	defer cancel()
	csr, err := provenance.CreateCSR(rand.Reader, e.key.WithContext(ctx), in)
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
