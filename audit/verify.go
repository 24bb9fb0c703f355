package audit

import (
	"bufio"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
)

// ChainError is where a chain breaks.
type ChainError struct {
	File string
	Line int // 1-based
	Msg  string
}

func (e *ChainError) Error() string {
	return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
}

// Chain is what Verify found in an intact chain.
type Chain struct {
	Entries  int
	FirstSeq uint64
	LastSeq  uint64
	// Head is the hash of the last line: compare it with the daemon's log to check that
	// the last line is unchanged.
	Head string
	// Anchored is true when the chain starts at the log's first line (seq 1 after
	// nothing); otherwise its first line's predecessor is not among the files given.
	Anchored bool
	// Checkpoints counts the checkpoint lines; Sealed the lines up to the head the last
	// of them seals (those a signature vouches for, when Verify was given the key).
	Checkpoints int
	Sealed      int
	// lastCheckpoint is the number of lines up to the last checkpoint line, itself
	// included.
	lastCheckpoint int
	// Acknowledged lists the breaks an operator acknowledged (provenanced audit
	// acknowledge), in order.
	Acknowledged []Acknowledgement
}

// Unsealed is the number of lines after the last checkpoint, that no signature vouches
// for yet (the next checkpoint will).
func (c *Chain) Unsealed() int { return c.Entries - c.lastCheckpoint }

// VerifyOptions say what Verify checks beyond the hash chain.
type VerifyOptions struct {
	// Key is the seal key's public key: every checkpoint's signature is checked, and a
	// log with lines but no checkpoint fails. Without it, checkpoints are checked
	// against the chain only, and nothing proves the chain was not rewritten.
	Key crypto.PublicKey
	// Head is a head the chain is known to have reached (the head file, or the hash the
	// daemon logged): lines missing before it fail.
	Head *Head
	// Partial accepts a chain whose first line follows lines not given (older files
	// deleted by rotation): nothing then shows that lines before it were not removed.
	Partial bool
}

// verifyLine is what Verify reads of a line.
type verifyLine struct {
	Seq         *uint64          `json:"seq"`
	Prev        *string          `json:"prev"`
	Time        string           `json:"time"`
	Op          string           `json:"op"`
	Checkpoint  *Checkpoint      `json:"checkpoint"`
	Acknowledge *Acknowledgement `json:"acknowledge"`
}

// verifier walks a chain line by line.
type verifier struct {
	opts     VerifyOptions
	res      Chain
	prev     [sha256.Size]byte
	havePrev bool
	file     string
	n        int
	atHead   string // the hash of the line at the seq of opts.Head, when there is one
}

// Verify checks the chain of the files given, in order (the oldest first): each line is
// an entry, its seq is one more than the previous one's (or more, on an acknowledged
// break), its prev is the hash of the previous line, and every checkpoint seals the line
// before it. It names the first line that breaks the chain.
func Verify(files []string, opts VerifyOptions) (*Chain, error) {
	if opts.Key != nil {
		if _, ok := opts.Key.(*ecdsa.PublicKey); !ok {
			return nil, fmt.Errorf("the seal key's public key is a %T, not an ECDSA key", opts.Key)
		}
	}
	v := &verifier{opts: opts}
	for _, name := range files {
		if err := v.file1(name); err != nil {
			return nil, err
		}
	}
	return v.finish()
}

func (v *verifier) file1(name string) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	v.file, v.n = name, 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	for sc.Scan() {
		v.n++
		if err := v.line(sc.Bytes()); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

func (v *verifier) bad(format string, args ...any) error {
	return &ChainError{File: v.file, Line: v.n, Msg: fmt.Sprintf(format, args...)}
}

// line checks one line against the one before it.
func (v *verifier) line(line []byte) error {
	var e verifyLine
	if err := json.Unmarshal(line, &e); err != nil {
		return v.bad("not a JSON audit entry (%v): the line was edited or is torn", err)
	}
	if e.Seq == nil || e.Prev == nil {
		return v.bad("no seq or prev: not an audit entry")
	}
	p, ok := hexHash(*e.Prev)
	if !ok {
		return v.bad("prev is not a hex SHA-256")
	}
	seq := *e.Seq
	switch {
	case v.havePrev && p != v.prev:
		return v.bad("prev does not match the line before it (seq %d): that line was edited, or lines were removed, inserted or reordered here", v.res.LastSeq)
	case v.havePrev && seq != v.res.LastSeq+1 && !(e.Op == "acknowledge" && seq > v.res.LastSeq):
		return v.bad("seq %d follows seq %d: lines were removed, inserted or reordered here", seq, v.res.LastSeq)
	case !v.havePrev:
		v.res.FirstSeq = seq
		v.res.Anchored = seq == 1 && p == emptyHash
		if seq == 1 && !v.res.Anchored {
			return v.bad("seq 1 must follow nothing (prev %x)", emptyHash)
		}
		if !v.res.Anchored && !v.opts.Partial {
			return v.bad("the chain starts at seq %d, after lines not given: the first lines were removed, or older files are missing; give them (oldest first), or -partial to check from here on", seq)
		}
	}
	if e.Op == "checkpoint" {
		if err := v.checkpoint(&e, *e.Prev); err != nil {
			return err
		}
	}
	if e.Op == "acknowledge" && e.Acknowledge != nil {
		v.res.Acknowledged = append(v.res.Acknowledged, *e.Acknowledge)
	}
	v.prev = sha256.Sum256(line)
	if h := v.opts.Head; h != nil && h.Seq == seq {
		v.atHead = hashHexOf(v.prev)
	}
	v.havePrev = true
	v.res.LastSeq = seq
	v.res.Entries++
	return nil
}

// checkpoint checks a checkpoint line: it seals the line before it, and its signature is
// the seal key's.
func (v *verifier) checkpoint(e *verifyLine, prev string) error {
	cp := e.Checkpoint
	if cp == nil {
		return v.bad("a checkpoint line without its checkpoint")
	}
	if cp.Seq != *e.Seq-1 || cp.Head != prev {
		return v.bad("the checkpoint seals seq %d (head %s), not the line before it (seq %d, head %s)", cp.Seq, cp.Head, *e.Seq-1, prev)
	}
	if v.opts.Key != nil {
		digest := sha256.Sum256(CheckpointText(cp.Origin, cp.Seq, cp.Head, e.Time))
		if !ecdsa.VerifyASN1(v.opts.Key.(*ecdsa.PublicKey), digest[:], cp.Signature) {
			return v.bad("the checkpoint's signature is not the seal key's: the lines before it were rewritten, or the key is not this log's")
		}
	}
	v.res.Checkpoints++
	v.res.Sealed = v.res.Entries // every line before this one; the checkpoint itself is not yet
	v.res.lastCheckpoint = v.res.Entries + 1
	return nil
}

// finish checks the end of the chain against what is known beyond the files.
func (v *verifier) finish() (*Chain, error) {
	res := &v.res
	if v.havePrev {
		res.Head = hashHexOf(v.prev)
	}
	if v.opts.Key != nil && res.Entries > 0 && res.Checkpoints == 0 {
		return nil, errors.New("nothing is sealed: no checkpoint in the files given, though a seal key was given; a sealed log has one every seal_interval")
	}
	if h := v.opts.Head; h != nil {
		if err := v.againstHead(h); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// againstHead checks that the chain reached h: a head with only a hash (as the daemon
// logs it) must be the last line's.
func (v *verifier) againstHead(h *Head) error {
	res := &v.res
	switch {
	case h.Seq == 0 && h.Hash != res.Head:
		return fmt.Errorf("chain broken at the end: the last line (seq %d) hashes to %s, not to the head %s: it was edited, or lines were removed or added at the end", res.LastSeq, res.Head, h.Hash)
	case h.Seq > res.LastSeq || res.Entries == 0:
		return fmt.Errorf("lines missing at the end: the head says the chain reached seq %d, but the files end at seq %d", h.Seq, res.LastSeq)
	case h.Seq < res.FirstSeq:
		return fmt.Errorf("the head (seq %d) is before the files given (from seq %d): give the file that holds it", h.Seq, res.FirstSeq)
	case v.atHead != h.Hash:
		return fmt.Errorf("chain broken before the head: the line at seq %d hashes to %s, not to the head's %s: the lines up to it were rewritten", h.Seq, v.atHead, h.Hash)
	}
	return nil
}
