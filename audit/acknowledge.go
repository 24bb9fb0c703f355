package audit

import (
	"fmt"
	"time"
)

// Acknowledgement is an acknowledge line's "acknowledge" member: a break between the
// file and the head file that an operator recorded, knowing why (a restored backup, a
// lost disk), so that the daemon may start again. It stays in the chain for every later
// verification to show.
type Acknowledgement struct {
	Reason string `json:"reason"`
	// File is where the file ended (nil: it was empty); Head what the head file said.
	File *Head `json:"file"`
	Head Head  `json:"head"`
}

type acknowledgeLine struct {
	Time        string          `json:"time"`
	Seq         uint64          `json:"seq"`
	Client      *string         `json:"client"`
	Op          string          `json:"op"`
	Prev        string          `json:"prev"`
	Acknowledge Acknowledgement `json:"acknowledge"`
}

// Acknowledge records in the log at path a break that Open refused (a
// *HeadMismatchError): it appends an "acknowledge" line that continues the file's own
// chain, with a seq past both the file's and the head file's so that no seq repeats, and
// makes it the head. It reports nil, false when the file and the head file agree.
func Acknowledge(path, headFile, reason string) (*Acknowledgement, bool, error) {
	head, err := ReadHead(headFile)
	if err != nil || head == nil {
		return nil, false, err
	}
	f, err := openFile(path)
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	_, _, _, err = resume(path, headFile, head)
	mismatch, ok := err.(*HeadMismatchError)
	if !ok {
		return nil, false, err // nil: nothing to acknowledge
	}
	ack := Acknowledgement{Reason: reason, File: mismatch.FileEnd, Head: *head}
	seq, prev := head.Seq, emptyHash
	if end := mismatch.FileEnd; end != nil {
		seq, prev = max(seq, end.Seq), mustHash(end.Hash)
	}
	line := lineBytes(&acknowledgeLine{Time: time.Now().UTC().Format(time.RFC3339Nano), Seq: seq + 1, Op: "acknowledge", Prev: hashHexOf(prev), Acknowledge: ack})
	if _, err := f.Write(line); err != nil {
		return nil, false, fmt.Errorf("cannot write the acknowledge line: %w", err)
	}
	if err := f.Sync(); err != nil {
		return nil, false, err
	}
	if err := writeHead(headFile, Head{Seq: seq + 1, Hash: hashHex(line[:len(line)-1])}); err != nil {
		return nil, false, err
	}
	return &ack, true, nil
}
