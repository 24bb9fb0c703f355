package audit

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Head is the chain's head: the seq of the last line written and the hex SHA-256 of its
// bytes (without the newline). Kept in the head file, it lets a new, moved, reopened or
// emptied file and a restarted daemon continue the same chain, and lets audit verify know
// how far the chain went.
type Head struct {
	Seq  uint64 `json:"seq"`
	Hash string `json:"hash"`
}

func headOf(seq uint64, hash [32]byte) Head {
	return Head{Seq: seq, Hash: hex.EncodeToString(hash[:])}
}

// ReadHead reads a head file; a file that does not exist is no head (nil, nil).
func ReadHead(path string) (*Head, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cannot read the audit head file: %w", err)
	}
	var h Head
	if err := json.Unmarshal(data, &h); err != nil || !isHash(h.Hash) {
		return nil, fmt.Errorf("the audit head file %s is not {\"seq\": N, \"hash\": \"<64 hex>\"}", path)
	}
	return &h, nil
}

// ParseHead reads -head: a head file, or the hash of the last line alone (as the daemon
// logs it).
func ParseHead(s string) (*Head, error) {
	if isHash(s) {
		return &Head{Hash: strings.ToLower(s)}, nil
	}
	h, err := ReadHead(s)
	if err == nil && h == nil {
		err = fmt.Errorf("%s: neither a 64-hex-digit hash nor a head file", s)
	}
	return h, err
}

func isHash(s string) bool {
	b, err := hex.DecodeString(s)
	return err == nil && len(b) == 32
}

// writeHead replaces the head file with h: written beside it, synced, then renamed, so
// that a crash leaves the old head or the new one, never half of either.
func writeHead(path string, h Head) error {
	data, _ := json.Marshal(h)
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("cannot write the audit head file: %w", err)
	}
	_, err = tmp.Write(append(data, '\n'))
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("cannot write the audit head file: %w", err)
	}
	return nil
}

// HeadMismatchError is a log file whose end is not where the head file says the chain
// was: lines removed, or the file replaced, since the head was written.
type HeadMismatchError struct {
	File, HeadFile string
	FileEnd        *Head // nil: the file holds no line of this chain's head
	Head           Head
	Why            string
}

func (e *HeadMismatchError) Error() string {
	end := "is empty"
	if e.FileEnd != nil {
		end = fmt.Sprintf("ends at seq %d (hash %s)", e.FileEnd.Seq, e.FileEnd.Hash)
	}
	return fmt.Sprintf("the audit file %s %s, but the head file %s says the chain reached seq %d (hash %s): %s",
		e.File, end, e.HeadFile, e.Head.Seq, e.Head.Hash, e.Why)
}
