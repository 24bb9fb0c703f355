//go:build !cgo

package pkcs11

import (
	"context"
	"crypto"

	"github.com/ib1/provenanced/backends"
	"github.com/ib1/provenanced/conf"
)

// Name is the backend's name in the config.
const Name = "pkcs11"

// A binary built with CGO_ENABLED=0 cannot load a PKCS#11 module (a C library), so the
// backend is there by name only: a config naming it fails with why, not with "unknown
// backend".
func init() {
	backends.Register(Name, backends.Backend{Open: unavailable[backends.Signer], Generate: unavailable[crypto.PublicKey], URI: true})
}

func unavailable[T any](_ context.Context, spec *conf.Key) (T, error) {
	var zero T
	return zero, spec.Errorf("backend", "this provenanced was built without cgo (CGO_ENABLED=0), and the %s backend needs cgo to load a PKCS#11 module; use a binary built with cgo", Name)
}
