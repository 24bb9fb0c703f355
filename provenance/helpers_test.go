package provenance

import (
	"crypto"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

const vectorsDir = "testdata/vectors"

type manifest struct {
	Framework string `json:"framework"`
	Root      string `json:"root"`
	Vectors   []struct {
		File      string `json:"file"`
		Expected  string `json:"expected"`
		Check     string `json:"check"`
		Decoded   string `json:"decoded"`
		Root      string `json:"root"`
		Framework string `json:"framework"`
		Also      []struct {
			Root      string `json:"root"`
			Framework string `json:"framework"`
			Expected  string `json:"expected"`
		} `json:"also"`
	} `json:"vectors"`
}

func loadManifest(t testing.TB) *manifest {
	t.Helper()
	var m manifest
	if err := json.Unmarshal(readVector(t, "manifest.json"), &m); err != nil {
		t.Fatal(err)
	}
	if len(m.Vectors) == 0 || m.Framework == "" || m.Root == "" {
		t.Fatal("manifest.json looks empty")
	}
	return &m
}

func readVector(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(vectorsDir, name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func loadRoots(t testing.TB, name string) []*x509.Certificate {
	t.Helper()
	roots, err := ParseRootsPEM(readVector(t, name))
	if err != nil {
		t.Fatal(err)
	}
	return roots
}

func newTestVerifier(t testing.TB, root, framework string, opts ...Option) *Verifier {
	t.Helper()
	v, err := NewVerifier(loadRoots(t, root), framework, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// loadSigner loads pki/<name>-key.pem and pki/<name>-bundle.pem.
func loadSigner(t testing.TB, dir, name string) (crypto.Signer, []*x509.Certificate) {
	t.Helper()
	keyPEM := readVector(t, filepath.Join(dir, name+"-key.pem"))
	block, _ := pemDecode(keyPEM)
	if block == nil {
		t.Fatal("no key PEM")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := ParseChainPEM(readVector(t, filepath.Join(dir, name+"-bundle.pem")))
	if err != nil {
		t.Fatal(err)
	}
	return k.(crypto.Signer), chain
}

// sameOrdered compares two JSON values strictly: object members in the same order, numbers
// by the same text. It returns a description of the first difference, or "".
func sameOrdered(a, b any, path string) string {
	switch x := a.(type) {
	case *Object:
		y, ok := b.(*Object)
		if !ok {
			return fmt.Sprintf("%s: object vs %T", path, b)
		}
		if len(x.Members) != len(y.Members) {
			return fmt.Sprintf("%s: %d members vs %d", path, len(x.Members), len(y.Members))
		}
		for i := range x.Members {
			if x.Members[i].Key != y.Members[i].Key {
				return fmt.Sprintf("%s: member %d is %q vs %q", path, i, x.Members[i].Key, y.Members[i].Key)
			}
			if d := sameOrdered(x.Members[i].Value, y.Members[i].Value, path+"."+x.Members[i].Key); d != "" {
				return d
			}
		}
		return ""
	case []any:
		y, ok := b.([]any)
		if !ok {
			return fmt.Sprintf("%s: list vs %T", path, b)
		}
		if len(x) != len(y) {
			return fmt.Sprintf("%s: %d items vs %d", path, len(x), len(y))
		}
		for i := range x {
			if d := sameOrdered(x[i], y[i], fmt.Sprintf("%s[%d]", path, i)); d != "" {
				return d
			}
		}
		return ""
	default:
		if a != b {
			return fmt.Sprintf("%s: %#v vs %#v", path, a, b)
		}
		return ""
	}
}

func stepsAsList(steps []*Object) []any {
	out := make([]any, len(steps))
	for i, s := range steps {
		out[i] = s
	}
	return out
}

func mustParseJSON(t testing.TB, data []byte) any {
	t.Helper()
	v, err := ParseJSON(data, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func jsonNumber(s string) json.Number { return json.Number(s) }
