// Package testenv builds the parts that tests, benchmarks and developers need to run
// provenanced for real: a test PKI in the IB1 Trust Framework's shape (from
// internal/devsetup, which `serve -dev` uses too, so the certificates a developer tries the
// daemon with are the ones the tests run against), SoftHSM tokens, a local KMS emulator,
// the daemon as a process, load generators and second-opinion checkers.
//
// Nothing here is linked into the daemon binary.
package testenv

import "github.com/ib1/provenanced/internal/devsetup"

// The test PKI and SoftHSM's discovery, under the names the tests have always used.
type (
	CA     = devsetup.CA
	PKI    = devsetup.PKI
	Member = devsetup.Member
	Files  = devsetup.Files
)

const (
	SandboxTrustFramework = devsetup.SandboxTrustFramework
	SandboxScheme         = devsetup.SandboxScheme
	DevRole               = devsetup.DevRole
	SoftHSMInstall        = devsetup.SoftHSMInstall
)

var (
	DevMember       = devsetup.DevMember
	NewPKI          = devsetup.NewPKI
	NewKey          = devsetup.NewKey
	CertPEM         = devsetup.CertPEM
	KeyPEM          = devsetup.KeyPEM
	DevFiles        = devsetup.DevFiles
	ConfigHead      = devsetup.ConfigHead
	WriteFileAtomic = devsetup.WriteFileAtomic
	NewDevFiles     = devsetup.NewDevFiles
	FindSoftHSM     = devsetup.FindSoftHSM
)
