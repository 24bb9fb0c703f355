package main

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/ib1/provenanced/audit"
	"github.com/ib1/provenanced/provenance"
)

func init() {
	register("audit", "check an audit log (audit verify) or record a known break in it (audit acknowledge)", auditCmd)
}

const auditUsage = `usage: provenanced audit verify [-cert FILE | -key FILE] [-head HEX|FILE] [-partial] FILE...
       provenanced audit acknowledge -config FILE -reason TEXT

verify: FILEs in order, the oldest first (audit.jsonl.2 audit.jsonl.1 audit.jsonl).
acknowledge: record in the log a break between the audit file and its head file that
the daemon refuses to start with, once you know why (a restored backup, a lost disk).`

func auditCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && isHelp(args[0]) {
		fmt.Fprintln(stderr, auditUsage)
		return nil
	}
	if len(args) == 0 || (args[0] != "verify" && args[0] != "acknowledge") {
		fmt.Fprintln(stderr, auditUsage)
		return usageError("audit: the subcommands are verify and acknowledge")
	}
	if args[0] == "acknowledge" {
		return auditAcknowledge(args[1:], stdout, stderr)
	}
	return auditVerify(args[1:], stdout, stderr)
}

func auditVerify(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("audit verify", "[-cert FILE | -key FILE] [-head HEX|FILE] [-partial] FILE...", stderr)
	certFile := fs.String("cert", "", "the seal key's certificate `file` (PEM): every checkpoint's signature is checked")
	keyFile := fs.String("key", "", "the seal key's public key `file` (PEM), instead of -cert")
	head := fs.String("head", "", "the chain's head as last known: the head `file` ([audit] head_file), or the hash of the last line as the daemon logged it")
	partial := fs.Bool("partial", false, "the first FILE need not start the log (older files were rotated away): nothing then shows lines before it were not removed")
	if err := parseFlags(fs, args, 1<<20); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usageError("audit verify: name at least one FILE")
	}
	opts := audit.VerifyOptions{Partial: *partial}
	var err error
	if opts.Key, err = sealPublicKey(*certFile, *keyFile); err != nil {
		return err
	}
	if *head != "" {
		if opts.Head, err = audit.ParseHead(*head); err != nil {
			return err
		}
	}
	res, err := audit.Verify(fs.Args(), opts)
	if err != nil {
		var ce *audit.ChainError
		if errors.As(err, &ce) {
			return fmt.Errorf("chain broken at %w", ce)
		}
		return err
	}
	printChain(stdout, stderr, res, opts.Key != nil)
	return nil
}

func printChain(stdout, stderr io.Writer, res *audit.Chain, sealed bool) {
	start := "the log's first line"
	if !res.Anchored && res.Entries > 0 {
		start = fmt.Sprintf("seq %d (earlier lines are in files not given)", res.FirstSeq)
	}
	fmt.Fprintf(stdout, "OK %d entries, seq %d..%d, from %s; head %s\n", res.Entries, res.FirstSeq, res.LastSeq, start, res.Head)
	if sealed {
		fmt.Fprintf(stdout, "sealed: %d lines by %d checkpoints; %d after the last checkpoint, not sealed yet\n", res.Sealed, res.Checkpoints, res.Unsealed())
	} else {
		fmt.Fprintf(stderr, "warning: the hash chain alone was checked (%d checkpoints seen, their signatures not): nothing proves the chain was not rewritten; give -cert or -key\n", res.Checkpoints)
	}
	for _, a := range res.Acknowledged {
		fmt.Fprintf(stdout, "acknowledged break: the head file said seq %d; reason: %s\n", a.Head.Seq, a.Reason)
	}
}

// sealPublicKey reads -cert or -key; nil when neither is given.
func sealPublicKey(certFile, keyFile string) (crypto.PublicKey, error) {
	switch {
	case certFile != "" && keyFile != "":
		return nil, usageError("audit verify: give -cert or -key, not both")
	case certFile != "":
		data, err := os.ReadFile(certFile)
		if err != nil {
			return nil, err
		}
		chain, err := provenance.ParseChainPEM(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", certFile, err)
		}
		return chain[0].PublicKey, nil
	case keyFile != "":
		data, err := os.ReadFile(keyFile)
		if err != nil {
			return nil, err
		}
		b, _ := pem.Decode(data)
		if b == nil || b.Type != "PUBLIC KEY" {
			return nil, fmt.Errorf("%s: not a PEM PUBLIC KEY (GET /v1/keys/NAME gives the seal key's public_key)", keyFile)
		}
		return x509.ParsePKIXPublicKey(b.Bytes)
	}
	return nil, nil
}

func auditAcknowledge(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("audit acknowledge", "-config FILE -reason TEXT", stderr)
	configPath := fs.String("config", "", "the daemon's config `file`")
	reason := fs.String("reason", "", "why the log broke, for whoever reads it later (required)")
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	if *reason == "" {
		return usageError("audit acknowledge: give -reason: the line records why the chain broke")
	}
	cfg, err := loadConfig(*configPath)
	if err != nil {
		return err
	}
	a := &cfg.Audit
	head := a.HeadFilePath(os.Getenv("STATE_DIRECTORY"))
	if a.File == "" || a.File == "-" || head == "" {
		return fmt.Errorf("%s: [audit] names no file with a head file: nothing to acknowledge", cfg.File)
	}
	ack, done, err := audit.Acknowledge(a.File, head, *reason)
	if err != nil {
		return err
	}
	if !done {
		fmt.Fprintf(stdout, "nothing to acknowledge: %s agrees with %s\n", a.File, head)
		return nil
	}
	end := "was empty"
	if ack.File != nil {
		end = fmt.Sprintf("ended at seq %d", ack.File.Seq)
	}
	fmt.Fprintf(stdout, "acknowledged in %s: the file %s, the head file %s said seq %d; the daemon can start\n", a.File, end, head, ack.Head.Seq)
	return nil
}
