package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/ib1/provenanced/daemon"
)

// release is the version of this source tree, in semantic versioning; CHANGELOG.md says
// what each version changed, and a test checks that its latest entry is this one. The
// Makefile reads it from here for the image's tag.
const release = "0.1.0"

// version overrides release when the build stamps another (-ldflags "-X
// main.version=0.2.0-rc.1"); the revision is stamped apart (daemon.Revision).
var version = ""

// versionString is the version the binary reports: `version`, the log's "serving" line
// and provenanced_build_info.
func versionString() string {
	if version != "" {
		return version
	}
	return release
}

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
