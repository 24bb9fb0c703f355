package daemon

// The backends a config can name, all of them here: each registers itself when linked.
// Without cgo the pkcs11 backend is a stub that says so when a key names it.
import (
	_ "github.com/ib1/provenanced/backends/awskms"
	_ "github.com/ib1/provenanced/backends/pem"
	_ "github.com/ib1/provenanced/backends/pkcs11"
)
