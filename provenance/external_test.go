package provenance

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// Cross-checks of records this package writes, against two independent implementations:
// testdata/ib1check.py (Python "cryptography") and the openssl command line tool.

var (
	pythonOnce sync.Once
	pythonPath string
)

// findPython returns a python3 that can import cryptography. Not finding one is a test
// failure, not a skip: the cross-check is part of what these tests promise.
func findPython(t testing.TB) string {
	t.Helper()
	pythonOnce.Do(func() {
		candidates := []string{}
		if p, err := exec.LookPath("python3"); err == nil {
			candidates = append(candidates, p)
		}
		candidates = append(candidates, "/usr/bin/python3")
		for _, c := range candidates {
			if exec.Command(c, "-c", "import cryptography").Run() == nil {
				pythonPath = c
				return
			}
		}
	})
	if pythonPath == "" {
		t.Fatal("no python3 that can import cryptography: install python3-cryptography (Debian: apt-get install python3-cryptography) to run the ib1check.py cross-check")
	}
	return pythonPath
}

// ib1check verifies a record with testdata/ib1check.py (rootPath: a PEM file) and returns
// its decoded output.
func ib1check(t testing.TB, data []byte, rootPath, framework string) (any, error) {
	t.Helper()
	py := findPython(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "record.json")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(py, "testdata/ib1check.py", "verify", "--root", rootPath, "--framework", framework, file)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, &exec.ExitError{Stderr: []byte(stderr.String())}
	}
	v, perr := ParseJSON(out, Limits{})
	if perr != nil {
		t.Fatalf("ib1check.py output is not JSON: %v", perr)
	}
	return v, nil
}

// ib1checkVerdict runs ib1check.py verify on a record and returns its verdict and, for a
// refusal, its reason; unlike ib1check it does not need the output to be JSON (Python
// writes a float that overflowed as Infinity).
func ib1checkVerdict(t testing.TB, data []byte, rootPath, framework string) (bool, string) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "record.json")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(findPython(t), "testdata/ib1check.py", "verify", "--root", rootPath, "--framework", framework, file)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err := cmd.Run()
	if _, exited := err.(*exec.ExitError); err != nil && !exited {
		t.Fatal(err)
	}
	return err == nil, stderr.String()
}

// checkWithIB1Check requires ib1check.py to accept the record and decode it to the same
// JSON values as this package.
func checkWithIB1Check(t testing.TB, rec *Record, rootFile, framework string, decoded []*Object) {
	t.Helper()
	data, err := rec.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ib1check(t, data, filepath.Join(vectorsDir, rootFile), framework)
	if err != nil {
		t.Fatalf("ib1check.py rejects the record: %s", err.(*exec.ExitError).Stderr)
	}
	if !JSONEqual(got, stepsAsList(decoded)) {
		t.Fatalf("ib1check.py decodes differently: %s", sameOrdered(stepsAsList(decoded), got, "$"))
	}
}

// checkWithOpenSSL checks every container of rec with openssl: its ECDSA signature over the
// data for signing (openssl dgst -verify) and its signing certificate's chain to the root at
// the signing time (openssl verify -attime).
func checkWithOpenSSL(t testing.TB, rec *Record, rootFile string) {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Fatal("openssl is needed for this cross-check")
	}
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	run := func(args ...string) (string, error) {
		out, err := exec.Command("openssl", args...).CombinedOutput()
		return string(out), err
	}
	root := filepath.Join(vectorsDir, rootFile)
	n := 0
	var walk func(c *Container)
	walk = func(c *Container) {
		n++
		prefix := strconv.Itoa(n) + "-"
		entry, ok := rec.Certificate(c.Serial)
		if !ok {
			t.Fatalf("no certificates entry for %s", c.Serial)
		}
		leaf, err := parseCertificatePEM(entry[0])
		if err != nil {
			t.Fatal(err)
		}
		pub, err := x509.MarshalPKIXPublicKey(leaf.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		pubFile := write(prefix+"pub.pem", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}))
		sig, err := decodeBase64URL(c.Signature)
		if err != nil {
			t.Fatal(err)
		}
		sigFile := write(prefix+"sig.der", sig)
		data := DataForSigning(rec.Framework, c)
		dataFile := write(prefix+"data.txt", []byte(data))
		if out, err := run("dgst", "-sha256", "-verify", pubFile, "-signature", sigFile, dataFile); err != nil || !strings.Contains(out, "Verified OK") {
			t.Fatalf("openssl dgst rejects the signature of container %s: %v %s", c.Serial, err, out)
		}
		// The same command must fail on other data, or the check above proves nothing.
		badFile := write(prefix+"bad.txt", []byte(data+"x"))
		if out, err := run("dgst", "-sha256", "-verify", pubFile, "-signature", sigFile, badFile); err == nil || strings.Contains(out, "Verified OK") {
			t.Fatalf("openssl dgst accepts a signature over altered data: %s", out)
		}
		leafFile := write(prefix+"leaf.pem", []byte(entry[0]))
		var issuers []byte
		for _, s := range entry[1:] {
			ie, ok := rec.Certificate(s)
			if !ok {
				t.Fatalf("no certificates entry for issuer %s", s)
			}
			issuers = append(issuers, ie[0]...)
		}
		when, ok := parseSigningTime(c.Timestamp)
		if !ok {
			t.Fatalf("bad signing time %q", c.Timestamp)
		}
		args := []string{"verify", "-attime", strconv.FormatInt(when.Unix(), 10), "-CAfile", root}
		if len(issuers) > 0 {
			args = append(args, "-untrusted", write(prefix+"issuers.pem", issuers))
		}
		if out, err := run(append(args, leafFile)...); err != nil || !strings.Contains(out, ": OK") {
			t.Fatalf("openssl verify rejects the chain of %s at %s: %v %s", c.Serial, c.Timestamp, err, out)
		}
		for _, e := range c.Elements {
			if e.Container != nil {
				walk(e.Container)
			}
		}
	}
	walk(rec.Steps)
}
