package testenv

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
)

// RechainAudit sets the prev of every audit line from from on (and the head of every
// checkpoint) to the hash of the line before it, as whoever rewrites an audit file
// without the seal key would: the hash chain holds again, the seal does not. Lines keep
// their newline.
func RechainAudit(t TB, lines [][]byte, from int) [][]byte {
	t.Helper()
	for i := max(from, 1); i < len(lines); i++ {
		sum := sha256.Sum256(bytes.TrimSuffix(lines[i-1], []byte("\n")))
		var m map[string]any
		dec := json.NewDecoder(bytes.NewReader(lines[i]))
		dec.UseNumber()
		if err := dec.Decode(&m); err != nil {
			t.Fatalf("audit line %d: %v", i+1, err)
		}
		m["prev"] = hex.EncodeToString(sum[:])
		if cp, ok := m["checkpoint"].(map[string]any); ok {
			cp["head"] = m["prev"]
		}
		b, _ := json.Marshal(m)
		lines[i] = append(b, '\n')
	}
	return lines
}

// AuditLines reads an audit file's lines, each decoded as JSON.
func AuditLines(t TB, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("%v", err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	return out
}
