package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/ib1/provenanced/testenv"
)

// requestCount sums provenanced_http_requests_total over the series whose labels include
// every one of labels (other labels, present or future, do not matter).
func requestCount(t *testing.T, c *http.Client, url string, labels ...string) int {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sum := 0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
next:
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "provenanced_http_requests_total{") {
			continue
		}
		for _, l := range labels {
			if !strings.Contains(line, l) {
				continue next
			}
		}
		n, err := strconv.Atoi(line[strings.LastIndexByte(line, ' ')+1:])
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		sum += n
	}
	return sum
}

// A web page from another origin, in a real browser on the same machine, tries to make the
// daemon sign: fetch() with text/plain (a "simple" request the browser sends without
// asking), with application/json (which needs a CORS preflight), both again in no-cors
// mode, and a <form> posting JSON-looking text/plain. The browser reads nothing, and the
// daemon signs nothing: it refuses every POST that is not application/json (415) and
// grants no preflight (no CORS headers), so the JSON POST is never sent.
func TestWebPageCannotSign(t *testing.T) {
	browser, console := testenv.StartBrowser(t)
	p, _ := startDev(t)
	daemon := "http://" + p.HTTP
	digest := base64.StdEncoding.EncodeToString(digestOf("web page"))
	page := strings.NewReplacer("DAEMON", daemon, "B64", digest).Replace(`<!doctype html>
<html><body>
<pre id="out">the script did not run</pre>
<form id="f" method="POST" action="DAEMON/v1/keys/signing/sign" enctype="text/plain" target="sink">
<input name='{"digest":"B64","pad":"' value='"}'></form>
<iframe id="sink" name="sink"></iframe>
<script>
const sign = "DAEMON/v1/keys/signing/sign";
const body = JSON.stringify({digest: "B64"});
const out = {};
async function attempt(name, opts) {
  try {
    const r = await fetch(sign, Object.assign({method: "POST", body: body}, opts));
    out[name] = "answered " + r.status + " " + (r.type === "opaque" ? "(opaque)" : await r.text());
  } catch (e) {
    out[name] = "refused " + e.name;
  }
}
(async () => {
  await attempt("text/plain", {headers: {"Content-Type": "text/plain"}});
  await attempt("application/json", {headers: {"Content-Type": "application/json"}});
  await attempt("no-cors text/plain", {mode: "no-cors", headers: {"Content-Type": "text/plain"}});
  await attempt("no-cors application/json", {mode: "no-cors", headers: {"Content-Type": "application/json"}});
  // The form's answer (or error page) loads into the frame: the result is written then.
  await new Promise(done => { document.getElementById("sink").onload = done; document.getElementById("f").submit(); });
  document.getElementById("out").textContent = "RESULT " + JSON.stringify(out);
})();
</script>
</body></html>`)
	site := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, page)
	}))
	defer site.Close()

	metrics := p.URL("/metrics")
	c := p.Client()
	signedBefore := scrapeSignCount(t, c, metrics)
	refusedBefore := requestCount(t, c, metrics, `route="POST /v1/keys/{name}/sign"`, `code="415"`)

	ctx, cancel := context.WithTimeout(browser, time.Minute)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate(site.URL+"/"), testenv.WaitJS(`document.getElementById("out").textContent.startsWith("RESULT ")`)); err != nil {
		t.Fatalf("the page's script did not finish: %v\npage console: %q", err, console())
	}
	dom, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.documentElement.outerHTML`))
	if err != nil {
		t.Fatal(err)
	}
	_, result, ok := strings.Cut(dom, "RESULT ")
	if !ok {
		t.Fatalf("the page's script did not finish:\n%s", dom)
	}
	result, _, _ = strings.Cut(result, "</pre>")
	t.Logf("the page saw: %s", result)
	for _, name := range []string{`"text/plain":"refused TypeError"`, `"application/json":"refused TypeError"`, `"no-cors text/plain":"answered 0 (opaque)"`, `"no-cors application/json":"answered 0 (opaque)"`} {
		if !strings.Contains(result, name) {
			t.Errorf("the page saw %s, want %s", result, name)
		}
	}
	if strings.Contains(dom, "signature") {
		t.Errorf("a signature reached the page:\n%s", dom)
	}

	if n := scrapeSignCount(t, c, metrics) - signedBefore; n != 0 {
		t.Errorf("the daemon signed %d times for the page", n)
	}
	// The browser did send the simple requests and the form (so the test proves the
	// daemon's refusal, not the browser's): 415 for each of the four. The daemon counts a
	// request once it has answered it, so the last count may lag the browser's load event.
	refused := func() int {
		return requestCount(t, c, metrics, `route="POST /v1/keys/{name}/sign"`, `code="415"`) - refusedBefore
	}
	for deadline := time.Now().Add(5 * time.Second); refused() < 4 && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
	}
	if n := refused(); n != 4 {
		t.Errorf("%d POSTs refused with 415, want 4 (two fetches in cors and no-cors mode as text/plain, no-cors dropping application/json, the form)\n%s", n, p.Output())
	}
	// The JSON POST was asked for (its preflight, OPTIONS, answered 405 without CORS
	// headers) and never sent.
	if n := requestCount(t, c, metrics, `route="/v1/keys/{name}/sign"`, `code="405"`); n != 1 {
		t.Errorf("%d preflights, want 1", n)
	}
	if n := requestCount(t, c, metrics, `route="POST /v1/keys/{name}/sign"`, `code="200"`); n != 0 {
		t.Errorf("%d POSTs signed", n)
	}
}
