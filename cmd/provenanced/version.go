package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/ib1/provenanced/daemon"
)

func init() {
	register("version", "print version and build information", func(args []string, stdout, stderr io.Writer) error {
		fs := newFlags("version", "", stderr)
		if err := parseFlags(fs, args, 0); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "provenanced %s\n", versionString())
		fmt.Fprintf(stdout, "revision: %s\n", daemon.BuildRevision())
		fmt.Fprintf(stdout, "go: %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, s := range bi.Settings {
				if s.Key == "vcs.time" {
					fmt.Fprintf(stdout, "%s: %s\n", s.Key, s.Value)
				}
			}
		}
		return nil
	})
}
