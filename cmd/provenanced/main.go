// Command provenanced is a signing daemon for the IB1 Trust Framework and its clients.
// It has one command that runs the daemon, three that talk to a running daemon and six
// that work offline on the config's keys, on records, on the audit log or on tokens:
//
//	provenanced serve [-config FILE | -dev DIR [-hsm]]
//	provenanced keys [-socket S | -url U [-ca F] [-cert F [-cert-key F]]] [-json]
//	provenanced sign -key NAME (-digest HEX | -in FILE) [-socket S | -url U [TLS flags]] [-out FILE]
//	provenanced health [-ready] [-socket S | -url U [TLS flags]]
//	provenanced keygen -config FILE -key NAME
//	provenanced csr -config FILE -key NAME (-subject DN [-uri URI]... | -from CSR) [-out FILE]
//	provenanced cert check [-config FILE] [-key NAME] [-root ROOT.pem]
//	provenanced record sign|verify|graph [flags]
//	provenanced audit verify [-cert FILE | -key FILE] [-head HEX|FILE] [-partial] FILE...
//	provenanced audit acknowledge -config FILE -reason TEXT
//	provenanced token new [-out FILE]
//	provenanced version | --version
//	provenanced help [COMMAND [SUBCOMMAND]]
//
// 'provenanced help COMMAND' (or 'provenanced COMMAND -h') describes a command's flags;
// docs/command-line.md has the rest.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/ib1/provenanced/conf"
)

// command is one subcommand. run returns an error for exit status 1, a usageError or a
// config error for 2.
type command struct {
	summary string
	run     func(args []string, stdout, stderr io.Writer) error
}

var commands = map[string]command{}

func register(name, summary string, run func(args []string, stdout, stderr io.Writer) error) {
	commands[name] = command{summary, run}
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "-h", "-help", "--help":
		usage(stdout)
		return 0
	case "-version", "--version":
		args = []string{"version"}
	case "help":
		if len(args) == 1 {
			usage(stdout)
			return 0
		}
		// "help CMD [SUB]" is "CMD [SUB] -h", printed on standard output since it was asked for.
		if _, ok := commands[args[1]]; !ok {
			fmt.Fprintf(stderr, "provenanced: unknown command %q\n\n", args[1])
			usage(stderr)
			return 2
		}
		return run(append(append([]string{}, args[1:]...), "-h"), stdout, stdout)
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "provenanced: unknown command %q\n\n", args[0])
		usage(stderr)
		return 2
	}
	err := cmd.run(args[1:], stdout, stderr)
	if err == nil {
		return 0
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	fmt.Fprintf(stderr, "provenanced %s: %v\n", args[0], err)
	var ue usageError
	var ce *conf.Error
	if errors.As(err, &ue) || errors.As(err, &ce) {
		return 2
	}
	var ec exitCode
	if errors.As(err, &ec) {
		return int(ec)
	}
	return 1
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: provenanced COMMAND [flags]\n\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-8s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\n'provenanced help COMMAND' (or 'provenanced COMMAND -h') describes a command's flags;\n'provenanced --version' prints the version.")
}

// isHelp reports whether arg asks for help, as the flag package understands it.
func isHelp(arg string) bool { return arg == "-h" || arg == "-help" || arg == "--help" }

// subcommandHelp prints the usage of a command made of subcommands and returns
// flag.ErrHelp (exit status 0).
func subcommandHelp(w io.Writer, name, synopsis string, subs ...string) error {
	fmt.Fprintf(w, "usage: provenanced %s %s\n\nsubcommands:\n", name, synopsis)
	for i := 0; i+1 < len(subs); i += 2 {
		fmt.Fprintf(w, "  %-8s %s\n", subs[i], subs[i+1])
	}
	fmt.Fprintf(w, "\n'provenanced %s SUBCOMMAND -h' describes a subcommand's flags.\n", name)
	return flag.ErrHelp
}

// usageError is a mistake on the command line: exit status 2.
type usageError string

func (e usageError) Error() string { return string(e) }

// exitCode is an error whose message has been printed and that asks for a given status.
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// newFlags returns a FlagSet whose errors are usage errors.
func newFlags(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: provenanced %s %s\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args; errors and stray arguments are usage errors.
func parseFlags(fs *flag.FlagSet, args []string, maxArgs int) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError(err.Error())
	}
	if fs.NArg() > maxArgs {
		return usageError("unexpected arguments: " + strings.Join(fs.Args(), " "))
	}
	return nil
}
