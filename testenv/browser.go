package testenv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// The tests that need a browser (the pages', and a web page that tries to make the daemon
// sign) drive headless Chromium through github.com/chromedp/chromedp, started here and
// only here (tests only: testenv is never linked into the daemon).

// ChromiumPath is the browser the tests run: $PROVENANCED_CHROMIUM, or the first of
// chromium (the Debian package), chromium-browser and google-chrome on $PATH.
func ChromiumPath() (string, error) {
	if p := os.Getenv("PROVENANCED_CHROMIUM"); p != "" {
		return p, nil
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", errors.New("testenv: chromium not found: install the Debian package chromium (make deps), or set PROVENANCED_CHROMIUM")
}

// chromiumFlags are the command-line flags of every browser the tests start, beside the
// fresh profile (--user-data-dir) that chromedp makes for each: headless, no sandbox
// (the tests run as root in CI), no GPU, and nothing but the pages under test on the
// network (this machine's refuses the rest).
var chromiumFlags = []chromedp.ExecAllocatorOption{
	chromedp.Headless, chromedp.NoSandbox, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
	chromedp.Flag("disable-gpu", true), chromedp.Flag("disable-dev-shm-usage", true),
	chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
	chromedp.Flag("disable-sync", true), chromedp.Flag("disable-quic", true),
	chromedp.Flag("disable-default-apps", true), chromedp.Flag("disable-extensions", true),
	chromedp.WindowSize(1400, 1000),
}

// StartBrowser starts a headless Chromium with a fresh profile and opens one tab. It
// returns the tab's chromedp context, for chromedp.Run and chromedp.Do (derive a timeout
// from it per test: a timeout on the context that started the browser would stop it), and
// a function that returns what the tab logged so far: console calls, uncaught exceptions
// and the browser's log (Content-Security-Policy violations among them), as lines such as
// "error (security): …", "console.log: …" and "exception: …".
// The browser, its child processes and its profile are gone at cleanup.
func StartBrowser(t TB) (ctx context.Context, console func() []string) {
	t.Helper()
	bin, err := ChromiumPath()
	if err != nil {
		t.Fatalf("%v", err)
	}
	var output SyncBuffer
	// chromedp gives each browser a fresh --user-data-dir, and removes it after killing
	// whatever process still uses it.
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		append([]chromedp.ExecAllocatorOption{chromedp.ExecPath(bin), chromedp.CombinedOutput(&output)}, chromiumFlags...)...)

	var mu sync.Mutex
	var lines []string
	// A listener runs in order with the replies, so a message logged before a command
	// returned is recorded by then.
	ctx, cancelTab := chromedp.NewContext(allocCtx, chromedp.WithListener(func(ev any) {
		if line := consoleLine(ev); line != "" {
			mu.Lock()
			lines = append(lines, line)
			mu.Unlock()
		}
	}))
	t.Cleanup(func() { cancelTab(); cancelAlloc() })
	// The first action starts the browser, bound to this context (no timeout).
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("testenv: start chromium: %v\n%s", err, output.String())
	}
	return ctx, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), lines...)
	}
}

// consoleLine is the line a console event is recorded as, or "" for other events.
func consoleLine(ev any) string {
	switch ev := ev.(type) {
	case *log.EventEntryAdded:
		e := ev.Entry
		return string(e.Level) + " (" + string(e.Source) + "): " + e.Text
	case *runtime.EventConsoleAPICalled:
		var parts []string
		for _, a := range ev.Args {
			var v any
			if json.Unmarshal(a.Value, &v) == nil && v != nil {
				parts = append(parts, fmt.Sprint(v))
			} else {
				parts = append(parts, a.Description)
			}
		}
		return "console." + string(ev.Type) + ": " + strings.Join(parts, " ")
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		line := "exception: " + d.Text
		if d.Exception != nil {
			line += " " + d.Exception.Description
		}
		return line
	}
	return ""
}

// WaitJS is an action that evaluates the JavaScript expression every 50ms until it is
// true; only the context's deadline ends the wait. It evaluates in whatever document the
// tab has (Runtime.evaluate with no context id), unlike chromedp.Poll, which names the
// execution context that chromedp last saw: just after a navigation that can be the
// previous document's, and Poll fails with "Cannot find context with specified id"
// (TestViewerInBrowser failed so in 9 runs of 10).
func WaitJS(expr string) chromedp.Action[chromedp.Void] {
	check := chromedp.Evaluate[bool]("!!(" + expr + ")")
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		for {
			ok, err := check(ctx, t)
			if err != nil {
				return chromedp.Void{}, fmt.Errorf("waiting for %s: %w", expr, err)
			}
			if ok {
				return chromedp.Void{}, nil
			}
			select {
			case <-ctx.Done():
				return chromedp.Void{}, fmt.Errorf("waiting for %s: %w", expr, ctx.Err())
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
}
