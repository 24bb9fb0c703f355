package testenv

import (
	"context"
	"os"
	"os/exec"
	"time"
)

// Chromium finds headless Chromium (Debian's chromium package; .ci/run installs it) and
// returns its path and a function that loads a URL, lets its scripts run, and returns the
// DOM as it then is. Each load runs a fresh browser with a profile of its own in a
// temporary folder, no network but what the page asks for, and no sandbox (tests run as
// root in CI).
func Chromium(t TB) (bin string, dumpDOM func(url string) string) {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			bin = p
			break
		}
	}
	if bin == "" {
		t.Fatalf("headless Chromium is not installed (Debian: apt-get install chromium; see .ci/run)")
	}
	dumpDOM = func(url string) string {
		t.Helper()
		profile, err := os.MkdirTemp("", "provenanced-chromium-")
		if err != nil {
			t.Fatalf("chromium profile: %v", err)
		}
		defer os.RemoveAll(profile)
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin,
			"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
			"--disable-background-networking", "--disable-component-update", "--disable-sync",
			"--disable-default-apps", "--disable-extensions", "--no-first-run", "--no-default-browser-check",
			"--user-data-dir="+profile,
			// Virtual time runs the page's timers and waits for its fetches before the dump.
			"--virtual-time-budget=15000",
			"--dump-dom", url)
		cmd.Env = append(os.Environ(), "HOME="+profile)
		var stderr SyncBuffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("chromium --dump-dom %s: %v\n%s", url, err, stderr.String())
		}
		return string(out)
	}
	return bin, dumpDOM
}
