package audit

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
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
}

// Verify checks the chain of the files given, in order (the oldest first): each
// line is an entry, its seq is one more than the previous one's, and its prev is the hash
// of the previous line. It names the first line that breaks the chain.
func Verify(files []string) (*Chain, error) {
	var res Chain
	var prev [sha256.Size]byte
	havePrev := false
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 64<<20)
		n := 0
		for sc.Scan() {
			n++
			line := sc.Bytes()
			bad := func(format string, args ...any) error {
				f.Close()
				return &ChainError{File: name, Line: n, Msg: fmt.Sprintf(format, args...)}
			}
			var e struct {
				Seq  *uint64 `json:"seq"`
				Prev *string `json:"prev"`
			}
			if err := json.Unmarshal(line, &e); err != nil {
				return nil, bad("not a JSON audit entry (%v): the line was edited or is torn", err)
			}
			if e.Seq == nil || e.Prev == nil {
				return nil, bad("no seq or prev: not an audit entry")
			}
			p, err := hex.DecodeString(*e.Prev)
			if err != nil || len(p) != sha256.Size {
				return nil, bad("prev is not a hex SHA-256")
			}
			switch {
			case havePrev && !bytes.Equal(p, prev[:]):
				return nil, bad("prev does not match the line before it (seq %d): that line was edited, or lines were removed, inserted or reordered here", res.LastSeq)
			case havePrev && *e.Seq != res.LastSeq+1:
				return nil, bad("seq %d follows seq %d: lines were removed, inserted or reordered here", *e.Seq, res.LastSeq)
			case !havePrev:
				res.FirstSeq = *e.Seq
				res.Anchored = *e.Seq == 1 && bytes.Equal(p, emptyHash[:])
				if *e.Seq == 1 && !res.Anchored {
					return nil, bad("seq 1 must follow nothing (prev %x)", emptyHash)
				}
			}
			prev = sha256.Sum256(line)
			havePrev = true
			res.LastSeq = *e.Seq
			res.Entries++
		}
		err = sc.Err()
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	if havePrev {
		res.Head = hex.EncodeToString(prev[:])
	}
	return &res, nil
}
