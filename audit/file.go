package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// openFile opens path for appending (creating it, mode 0600), which must be a regular
// file: a device or a pipe would swallow lines that the log then counts as written.
func openFile(path string) (*os.File, error) {
	if err := regular(path); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("cannot open the audit file: %w", err)
	}
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("the audit file %s is not a regular file; name a file (or \"-\" for standard output)", path)
	}
	return f, nil
}

// regular refuses a path that exists and is not a regular file (after symlinks).
func regular(path string) error {
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cannot open the audit file: %w", err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("the audit file %s is a %s, not a regular file; name a file (or \"-\" for standard output)", path, kind(st.Mode()))
	}
	return nil
}

func kind(m fs.FileMode) string {
	switch {
	case m&fs.ModeCharDevice != 0:
		return "character device"
	case m&fs.ModeDevice != 0:
		return "device"
	case m&fs.ModeNamedPipe != 0:
		return "named pipe"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m.IsDir():
		return "directory"
	}
	return "special file"
}

// tail reads the file's lines backwards from its end, in growing chunks, calling each
// with a line (without its newline) until it returns false. A file that does not end with
// a newline has a torn last line: an error, as the chain cannot continue from it.
func tail(path string, each func(line []byte) bool) (size int64, err error) {
	r, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer r.Close()
	st, err := r.Stat()
	if err != nil {
		return 0, err
	}
	size = st.Size()
	if size == 0 {
		return 0, nil
	}
	end := size // lines before end are not seen yet
	for n := int64(64 << 10); ; n *= 2 {
		start := max(end-n, 0)
		buf := make([]byte, end-start)
		if _, err := r.ReadAt(buf, start); err != nil {
			return 0, err
		}
		if end == size && buf[len(buf)-1] != '\n' {
			return 0, fmt.Errorf("%s does not end with a newline: its last line is incomplete; move the file aside", path)
		}
		body := bytes.TrimSuffix(buf, []byte("\n"))
		for {
			i := bytes.LastIndexByte(body, '\n')
			if i < 0 && start > 0 {
				break // the line begins in the chunk before
			}
			if !each(body[i+1:]) {
				return size, nil
			}
			if i < 0 {
				return size, nil // the file's first line
			}
			body = body[:i]
			end = start + int64(i) + 1
		}
	}
}

// lastLine returns the file's last line without its newline (nil for an empty file),
// and the file's size.
func lastLine(path string) ([]byte, int64, error) {
	var last []byte
	size, err := tail(path, func(line []byte) bool {
		last = append([]byte(nil), line...)
		return false
	})
	return last, size, err
}

// lineSeq is a line's seq.
func lineSeq(line []byte) (uint64, error) {
	var e struct {
		Seq *uint64 `json:"seq"`
	}
	if err := json.Unmarshal(line, &e); err != nil {
		return 0, err
	}
	if e.Seq == nil {
		return 0, errors.New("no seq")
	}
	return *e.Seq, nil
}

// resume is where the chain goes on in the file at path, given what the head file says
// (nil: nothing): after the file's last line, or after head when the file is empty. A
// file that does not hold head (its end before it, or another line at its seq) is a
// *HeadMismatchError; lines after head (written after the head file, before a crash)
// are fine.
func resume(path, headFile string, head *Head) (seq uint64, prev [32]byte, size int64, err error) {
	last, size, err := lastLine(path)
	if err != nil {
		return 0, prev, 0, fmt.Errorf("cannot read the audit file: %w", err)
	}
	if last == nil {
		if head == nil {
			return 0, emptyHash, 0, nil
		}
		h, _ := hexHash(head.Hash)
		return head.Seq, h, 0, nil
	}
	lastSeq, err := lineSeq(last)
	if err != nil {
		return 0, prev, 0, fmt.Errorf("audit file %s: its last line is not an audit entry (%v); move the file aside", path, err)
	}
	end := Head{Seq: lastSeq, Hash: hashHex(last)}
	if head == nil || (end == *head) {
		return lastSeq, sha256.Sum256(last), size, nil
	}
	mismatch := &HeadMismatchError{File: path, HeadFile: headFile, FileEnd: &end, Head: *head}
	if lastSeq < head.Seq {
		mismatch.Why = "lines are missing at the end of the file"
		return 0, prev, 0, mismatch
	}
	var found []byte
	if _, err := tail(path, func(line []byte) bool {
		s, err := lineSeq(line)
		if err == nil && s == head.Seq {
			found = append([]byte(nil), line...)
		}
		return err == nil && s > head.Seq
	}); err != nil {
		return 0, prev, 0, fmt.Errorf("cannot read the audit file: %w", err)
	}
	switch {
	case found == nil:
		mismatch.Why = "the file does not hold the line the head file names"
	case hashHex(found) != head.Hash:
		mismatch.Why = "the line at that seq is not the one the head file names: it was changed"
	default:
		return lastSeq, sha256.Sum256(last), size, nil
	}
	return 0, prev, 0, mismatch
}
