package daemon

// The PKCS#11 backend registers itself; linking it is all the daemon does with it.
import _ "github.com/ib1/provenanced/backends/pkcs11"
