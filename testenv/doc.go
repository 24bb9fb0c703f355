// Package testenv builds the parts that tests, benchmarks and developers need to run
// provenanced for real: SoftHSM and TPM tokens, a local KMS emulator and a fault proxy in
// front of it, the daemon as a process, its configs, a headless browser, load generators
// and second-opinion checkers.
// The test PKI in the IB1 Trust Framework's shape is internal/devsetup's, which `serve
// -dev` uses too (so the certificates a developer tries the daemon with are the ones the
// tests run against): tests call it there.
//
// Nothing here is linked into the daemon binary.
package testenv
