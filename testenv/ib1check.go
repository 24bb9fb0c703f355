package testenv

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
)

var (
	pythonOnce sync.Once
	pythonPath string
)

// Python returns a python3 that can import the "cryptography" package, which
// provenance/testdata/ib1check.py needs: python3 on PATH, else Debian's /usr/bin/python3
// (where apt's python3-cryptography goes). Not finding one is an error, never a skip.
func Python() (string, error) {
	pythonOnce.Do(func() {
		var candidates []string
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
		return "", fmt.Errorf("no python3 that can import cryptography: apt-get install python3-cryptography")
	}
	return pythonPath, nil
}

// IB1Check verifies a record with the independent Python verifier
// provenance/testdata/ib1check.py and returns its decoded output (JSON), or its reason
// for rejecting the record.
func IB1Check(record []byte, rootFile, framework string) ([]byte, error) {
	py, err := Python()
	if err != nil {
		return nil, err
	}
	root, err := ModuleRoot()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "ib1check-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "record.json")
	if err := os.WriteFile(file, record, 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command(py, filepath.Join(root, "provenance", "testdata", "ib1check.py"), "verify", "--root", rootFile, "--framework", framework, file)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("ib1check.py: %v: %s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	return out, nil
}
