// Command testenv gives a developer what the PKCS#11 tests run against: a SoftHSM token
// with a P-256 key generated in it, a test PKI with the key's certificate, the PIN in a
// file and a config that serves the key with the pkcs11 backend. It prints the config
// and the commands to run the daemon with it. `make testenv` runs it.
//
//	go run ./testenv/cmd/testenv [-dir .testenv] [-bin bin/provenanced]
//
// With "issue" it plays the Directory for a member trying the daemon locally: it makes a
// test root CA and intermediate, and issues a member certificate in the IB1 profile for the
// public key of a CSR (one made by provenanced csr, whatever backend holds the key).
//
//	go run ./testenv/cmd/testenv issue -csr signing.csr -dir /etc/provenanced
package main

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/ib1/provenanced/internal/devsetup"
	"github.com/ib1/provenanced/testenv"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "issue" {
		if err := issueCmd(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "testenv issue:", err)
			os.Exit(1)
		}
		return
	}
	dir := flag.String("dir", ".testenv", "the `folder` to build in (kept if it holds a config already)")
	bin := flag.String("bin", "bin/provenanced", "the daemon `binary` the printed commands run")
	http := flag.String("http", "127.0.0.1:8080", "the config's server.http (\"\" for the Unix socket only)")
	flag.Parse()
	if err := run(*dir, *bin, *http); err != nil {
		fmt.Fprintln(os.Stderr, "testenv:", err)
		os.Exit(1)
	}
}

func run(dir, bin, http string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	config := filepath.Join(abs, "provenanced.toml")
	softhsm := filepath.Join(abs, "softhsm", "softhsm2.conf")
	if _, err := os.Stat(config); err == nil {
		fmt.Printf("Using the test environment in %s (remove it to start afresh).\n\n", abs)
	} else if errors.Is(err, fs.ErrNotExist) {
		if _, err := testenv.BuildHSM(abs, testenv.HSMOptions{HTTP: http}); err != nil {
			return err
		}
		fmt.Printf("Built a test environment in %s: a SoftHSM token \"provenance\" with the P-256 key \"signing\", a test PKI and its certificate.\n\n", abs)
	} else {
		return err
	}
	text, err := os.ReadFile(config)
	if err != nil {
		return err
	}
	module, err := devsetup.FindSoftHSM()
	if err != nil {
		return err
	}
	pin := filepath.Join(abs, "user.pin")
	fmt.Printf("%s:\n\n%s\n", config, text)
	fmt.Printf(`Run the daemon with it:

  export SOFTHSM2_CONF=%s
  %s serve -config %s

and try it from another terminal:

  curl -s --unix-socket %s http://localhost/v1/keys
  %s sign -socket %s -key signing -digest $(printf hello | sha256sum | cut -d' ' -f1)

Look into the token:

  SOFTHSM2_CONF=%s pkcs11-tool --module %s --token-label provenance --login --pin "$(cat %s)" --list-objects
`, softhsm, bin, config, filepath.Join(abs, "provenanced.sock"), bin, filepath.Join(abs, "provenanced.sock"), softhsm, module, pin)
	return nil
}
