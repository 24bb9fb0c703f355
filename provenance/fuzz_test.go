package provenance

import (
	"bufio"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

var knownChecks = map[string]bool{
	CheckTrustFramework: true, CheckContainerVersion: true, CheckSerialFormat: true,
	CheckCertificateLookup: true, CheckCertificatePath: true, CheckSignature: true,
	CheckSigningTime: true, CheckStepDecoding: true, CheckContainerShape: true, CheckOrigins: true,
}

// FuzzVerify feeds arbitrary bytes to parse+verify+decode, seeded with every vector file.
// Whatever the input: no panic, bounded work, and either a *VerifyError naming a known
// check or a record whose re-encoding verifies to the same steps. And an oracle: a vector
// file keeps its manifest verdict (and failing check), and a record accepted here is
// either a seed vector written differently (same record once re-encoded: it differs only
// in JSON spelling, which no signature covers) or accepted by ib1check.py too.
func FuzzVerify(f *testing.F) {
	files, err := filepath.Glob(filepath.Join(vectorsDir, "*", "*.json"))
	if err != nil || len(files) < 20 {
		f.Fatalf("vector files: %v (%d)", err, len(files))
	}
	files = append(files, filepath.Join(vectorsDir, "manifest.json"))
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	m := loadManifest(f)
	v := newTestVerifier(f, m.Root, m.Framework)
	// The verdicts the manifest gives the vector files (under its root and framework).
	type verdict struct{ expected, check string }
	verdicts := map[[32]byte]verdict{}
	for _, vec := range m.Vectors {
		if vec.Root != "" || vec.Framework != "" {
			continue
		}
		verdicts[sha256.Sum256(readVector(f, vec.File))] = verdict{vec.Expected, vec.Check}
	}
	// The valid vectors re-encoded (parsed, not verified: what is valid is the manifest's
	// word): an accepted input that re-encodes to one of them is that vector, written
	// differently.
	seeds := map[[32]byte]bool{}
	for _, vec := range m.Vectors {
		if vec.Expected != "valid" || vec.Root != "" || vec.Framework != "" {
			continue
		}
		rec, err := v.ParseRecord(readVector(f, vec.File))
		if err != nil {
			f.Fatal(err)
		}
		out, _ := rec.Marshal()
		seeds[sha256.Sum256(out)] = true
	}
	// A seed that is a different record, valid: bank.json with its certificates in reverse
	// order, so that the oracle's ib1check.py path runs in every plain test run too.
	f.Add(mutateVector(f, "records/bank.json", func(top *Object) {
		certs, _ := top.Get("certificates")
		c := certs.(*Object)
		slices.Reverse(c.Members)
	}))
	oracle := newIB1CheckWorker(f, filepath.Join(vectorsDir, m.Root), m.Framework)
	originStep := NewObject(Member{"type", "origin"})
	f.Fuzz(func(t *testing.T, data []byte) {
		rec, steps, err := v.VerifyJSON(data)
		if want, ok := verdicts[sha256.Sum256(data)]; ok {
			var ve *VerifyError
			switch {
			case want.expected == "valid" && err != nil:
				t.Fatalf("a valid vector is refused: %v", err)
			case want.expected == "invalid" && (!errors.As(err, &ve) || ve.Check != want.check):
				t.Fatalf("an invalid vector gets %v, want a %s failure", err, want.check)
			}
		}
		if err != nil {
			var ve *VerifyError
			if !errors.As(err, &ve) || !knownChecks[ve.Check] || !strings.HasPrefix(err.Error(), ve.Check+": ") {
				t.Fatalf("error without a known check: %v", err)
			}
			if rec != nil || steps != nil {
				t.Fatal("results returned with an error")
			}
			return
		}
		if len(Filter(steps, originStep)) != len(rec.Origins) {
			t.Fatal("origins do not match the origin steps")
		}
		again, err := rec.Marshal()
		if err != nil {
			t.Fatalf("verified record does not encode: %v", err)
		}
		_, steps2, err := v.VerifyJSON(again)
		if err != nil {
			t.Fatalf("re-encoded record fails: %v", err)
		}
		if d := sameOrdered(stepsAsList(steps), stepsAsList(steps2), "$"); d != "" {
			t.Fatalf("re-encoded record decodes differently: %s", d)
		}
		_ = DOT(steps)
		if !seeds[sha256.Sum256(again)] {
			if ok, reason := oracle.verify(t, data); !ok {
				t.Fatalf("accepted here, refused by ib1check.py: %s", reason)
			}
		}
	})
}

// ib1checkWorker is one python3 running ib1check.py's verifier on records sent to it one
// after another (so a fuzz run does not start Python per input), with its answers cached.
type ib1checkWorker struct {
	mu     sync.Mutex
	in     io.WriteCloser
	out    *bufio.Reader
	answer map[[32]byte]string
}

const ib1checkWorkerScript = `import json, sys
sys.path.insert(0, sys.argv[1])
import ib1check
anchors = ib1check.load_anchors(sys.argv[2])
while True:
    line = sys.stdin.buffer.readline()
    if not line:
        break
    data = sys.stdin.buffer.read(int(line))
    try:
        ib1check.Verifier(anchors, sys.argv[3]).verify(json.loads(data))
        answer = "ok"
    except Exception as e:  # every refusal, whatever its kind
        answer = "invalid: %s: %s" % (type(e).__name__, e)
    sys.stdout.write(answer.replace("\n", " ") + "\n")
    sys.stdout.flush()
`

func newIB1CheckWorker(f *testing.F, root, framework string) *ib1checkWorker {
	cmd := exec.Command(findPython(f), "-c", ib1checkWorkerScript, "testdata", root, framework)
	in, err := cmd.StdinPipe()
	if err != nil {
		f.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		f.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() {
		in.Close() // the worker ends at end of input
		cmd.Wait()
	})
	return &ib1checkWorker{in: in, out: bufio.NewReader(out), answer: map[[32]byte]string{}}
}

func (w *ib1checkWorker) verify(t *testing.T, record []byte) (bool, string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	key := sha256.Sum256(record)
	answer, ok := w.answer[key]
	if !ok {
		if _, err := fmt.Fprintf(w.in, "%d\n%s", len(record), record); err != nil {
			t.Fatalf("ib1check.py worker: %v", err)
		}
		line, err := w.out.ReadString('\n')
		if err != nil {
			t.Fatalf("ib1check.py worker: %v", err)
		}
		answer = strings.TrimSuffix(line, "\n")
		w.answer[key] = answer
	}
	return answer == "ok", answer
}

// FuzzParseJSON checks the JSON reader and writer: what is accepted is valid JSON (by
// encoding/json), and writing it out and reading it back gives the same ordered value.
func FuzzParseJSON(f *testing.F) {
	for _, line := range strings.Split(string(readVector(f, "records/unicode.step-json.txt")), "\n") {
		f.Add([]byte(line))
	}
	for _, s := range []string{`{"a":1,"a":2}`, `"\ud800"`, `[1e400,-0.0,1E-7]`, "\"\u2028\"", `{"":{"":[]}}`, `{"k":"\u00e9\ud83d\udd0b"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := ParseJSON(data, Limits{MaxDepth: 16, MaxStringBytes: 4096})
		if err != nil {
			return
		}
		if !json.Valid(data) {
			t.Fatalf("accepted invalid JSON %q", data)
		}
		out, err := AppendJSON(nil, v)
		if err != nil {
			t.Fatalf("cannot write back %q: %v", data, err)
		}
		for _, c := range out {
			if c < 0x20 || c > 0x7e {
				t.Fatalf("non-ASCII output %q", out)
			}
		}
		back, err := ParseJSON(out, Limits{MaxDepth: 16, MaxStringBytes: 1 << 20})
		if err != nil {
			t.Fatalf("cannot read back %q: %v", out, err)
		}
		if d := sameOrdered(v, back, "$"); d != "" {
			t.Fatalf("round trip of %q differs: %s", data, d)
		}
		// Writing is deterministic and idempotent.
		out2, _ := AppendJSON(nil, back)
		if string(out2) != string(out) {
			t.Fatalf("second write differs: %q vs %q", out, out2)
		}
	})
}
