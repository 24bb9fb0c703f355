package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/ib1/provenanced/audit"
)

func init() {
	register("audit", "check an audit log's hash chain (audit verify FILE...)", auditCmd)
}

func auditCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "verify" {
		fmt.Fprintln(stderr, "usage: provenanced audit verify [-head HEX] FILE...\n\nFILEs in order, the oldest first (audit.jsonl.2 audit.jsonl.1 audit.jsonl).")
		if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
			return nil
		}
		return usageError("audit: the only subcommand is verify")
	}
	fs := newFlags("audit verify", "[-head HEX] FILE...", stderr)
	head := fs.String("head", "", "the `hash` of the last line, as the daemon logged it (\"audit log closed\" ... head=): checks that the last line, which no later line protects, is unchanged")
	if err := parseFlags(fs, args[1:], 1<<20); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usageError("audit verify: name at least one FILE")
	}
	res, err := audit.Verify(fs.Args())
	if err != nil {
		var ce *audit.ChainError
		if errors.As(err, &ce) {
			return fmt.Errorf("chain broken at %w", ce)
		}
		return err
	}
	if *head != "" && *head != res.Head {
		return fmt.Errorf("chain broken at the end: the last line (seq %d) hashes to %s, not to the head %s: it was edited, or lines were removed or added at the end", res.LastSeq, res.Head, *head)
	}
	start := "the log's first line"
	if !res.Anchored && res.Entries > 0 {
		start = fmt.Sprintf("seq %d (earlier lines are in files not given)", res.FirstSeq)
	}
	fmt.Fprintf(stdout, "OK %d entries, seq %d..%d, from %s; head %s\n", res.Entries, res.FirstSeq, res.LastSeq, start, res.Head)
	return nil
}
