package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/ib1/provenanced/backends"
	"github.com/ib1/provenanced/conf"
	"github.com/ib1/provenanced/internal/source"
	"github.com/ib1/provenanced/provenance"
)

func init() {
	register("record", "sign, verify or draw a provenance record offline (record sign|verify|graph)", recordCmd)
}

func recordCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && isHelp(args[0]) {
		return subcommandHelp(stderr, "record", "sign|verify|graph [flags]",
			"sign", "append steps to a record (or start one) and sign it with a key of the config",
			"verify", "verify a record against a root CA and print its steps",
			"graph", "verify a record and print its steps as a Graphviz DOT graph")
	}
	if len(args) == 0 {
		return usageError("usage: provenanced record sign|verify|graph [flags]")
	}
	switch args[0] {
	case "sign":
		return recordSign(args[1:], stdout, stderr)
	case "verify":
		return recordVerify(args[1:], stdout, stderr, false)
	case "graph":
		return recordVerify(args[1:], stdout, stderr, true)
	}
	return usageError(fmt.Sprintf("unknown subcommand record %s; use sign, verify or graph", args[0]))
}

// readInput reads the named file, or standard input for "" or "-".
func readInput(name string) ([]byte, error) {
	if name == "" || name == "-" {
		return io.ReadAll(io.LimitReader(os.Stdin, 256<<20))
	}
	return os.ReadFile(name)
}

// loadVerifier reads the root CA of -root (cfg nil) or of cfg's provenance.root_ca; one
// that cannot be read or is no root is exit status 2 (certRoots).
func loadVerifier(ctx context.Context, cfg *conf.Config, rootPath, framework string, lim provenance.Limits) (*provenance.Verifier, error) {
	roots, err := certRoots(ctx, cfg, rootPath, cfg == nil)
	if err != nil {
		return nil, err
	}
	return provenance.NewVerifier(roots, framework, provenance.WithLimits(lim))
}

func recordVerify(args []string, stdout, stderr io.Writer, graph bool) error {
	name := "record verify"
	if graph {
		name = "record graph"
	}
	fs := newFlags(name, "-root ROOT.pem [-framework URL] [RECORD.json]", stderr)
	root := fs.String("root", "", "the root CA certificate(s), PEM (a path or s3://)")
	framework := fs.String("framework", "", "the trust framework URL the record must name (default: the one it names)")
	if err := parseFlags(fs, args, 1); err != nil {
		return err
	}
	if *root == "" {
		return usageError("-root ROOT.pem is required")
	}
	data, err := readInput(fs.Arg(0))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	v, err := loadVerifier(ctx, nil, *root, conf.DefaultTrustFramework, provenance.Limits{})
	if err != nil {
		return err
	}
	rec, err := v.ParseRecord(data)
	if err != nil {
		return fmt.Errorf("invalid: %v", err)
	}
	want := *framework
	if want == "" {
		want = rec.Framework
		fmt.Fprintf(stderr, "trust framework (as the record names it): %s\n", want)
	}
	steps, err := v.VerifyWithFramework(rec, want)
	if err != nil {
		return fmt.Errorf("invalid: %v", err)
	}
	if graph {
		_, err = stdout.Write(provenance.DOT(steps))
		return err
	}
	out, err := json.MarshalIndent(steps, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "%s\n", out)
	return err
}

func recordSign(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("record sign", "-config FILE [-key NAME] [-record IN.json] -steps STEPS.json", stderr)
	configPath := fs.String("config", "", "the config `file` ([provenance] and the key)")
	keyName := fs.String("key", "", "the key's `name` (default provenance.key)")
	in := fs.String("record", "", "a received record to append to (verified first)")
	stepsPath := fs.String("steps", "", "the new steps: a JSON list of step objects (- for standard input)")
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	if *stepsPath == "" {
		return usageError("-steps STEPS.json is required")
	}
	cfg, err := loadConfig(*configPath)
	if err != nil {
		return err
	}
	spec, err := recordKey(cfg, *keyName)
	if err != nil {
		return err
	}
	if cfg.Provenance.RootCA == "" {
		return cfg.Errorf("provenance.root_ca", "missing: records are verified against it")
	}
	rawSteps, err := readSteps(*stepsPath)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b, err := newRecordBuilder(ctx, cfg, *in, *stepsPath, rawSteps)
	if err != nil {
		return err
	}
	k, err := backends.Open(ctx, spec, backends.Options{ReadSource: source.Read})
	if err != nil {
		return err
	}
	defer k.Close()
	if k.Leaf() == nil {
		return spec.Errorf("certificates", "missing: a record's signer is known by its certificate")
	}
	rec, err := b.Sign(ctx, k, k.Certificates())
	if err != nil {
		return err
	}
	out, err := rec.Marshal()
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "%s\n", out)
	return err
}

// recordKey is the key named, or by default the one provenance.key names.
func recordKey(cfg *conf.Config, name string) (*conf.Key, error) {
	if name == "" {
		var err error
		if name, err = cfg.SigningKey(); err != nil {
			return nil, err
		}
	}
	spec := cfg.KeyByName(name)
	if spec == nil {
		return nil, cfg.Errorf("keys."+name, "no such key; keys: %s", strings.Join(cfg.KeyNames(), ", "))
	}
	return spec, nil
}

// readSteps reads the new steps: a JSON list of step objects, or one step object.
func readSteps(path string) ([]json.RawMessage, error) {
	data, err := readInput(path)
	if err != nil {
		return nil, err
	}
	var raw []json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		raw = []json.RawMessage{data} // one step object
	}
	return raw, nil
}

// newRecordBuilder starts the record: the received record in, if any, verified with the
// configured root CA and limits, then the new steps (read from stepsPath, which errors
// name).
func newRecordBuilder(ctx context.Context, cfg *conf.Config, in, stepsPath string, rawSteps []json.RawMessage) (*provenance.Builder, error) {
	pc := cfg.Provenance
	v, err := loadVerifier(ctx, cfg, pc.RootCA, pc.TrustFramework, provenance.Limits{MaxDepth: pc.MaxDepth, MaxSteps: pc.MaxSteps, MaxRecordBytes: int(pc.MaxRecordBytes), MaxStringBytes: int(pc.MaxStringBytes)})
	if err != nil {
		return nil, err
	}
	b := provenance.NewBuilder(pc.TrustFramework, time.Now(), nil).WithLimits(v.Limits())
	if in != "" {
		data, err := readInput(in)
		if err != nil {
			return nil, err
		}
		rec, err := v.ParseRecord(data)
		if err == nil {
			_, err = b.Receive(v, rec)
		}
		if err != nil {
			return nil, fmt.Errorf("%s does not verify: %v", in, err)
		}
	}
	for i, raw := range rawSteps {
		s, err := provenance.ParseStep(raw)
		if err == nil {
			_, err = b.AddStep(s)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: step %d: %v", stepsPath, i, err)
		}
	}
	return b, nil
}
