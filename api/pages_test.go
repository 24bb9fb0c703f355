package api_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/ib1/provenanced/api"
	"github.com/ib1/provenanced/backends"
	"github.com/ib1/provenanced/testenv"
)

// artifacts is where the browser tests keep their screenshots: $PROVENANCED_ARTIFACTS
// (CI keeps that folder), or the test's temporary folder.
func artifacts(t *testing.T) string {
	dir := os.Getenv("PROVENANCED_ARTIFACTS")
	if dir == "" {
		return t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	file := filepath.Join(artifacts(t), name)
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // 100: PNG
	if err == nil {
		err = os.WriteFile(file, png, 0o644)
	}
	if err != nil {
		t.Errorf("screenshot: %v", err)
		return
	}
	t.Logf("screenshot: %s", file)
}

// noPolicyViolations fails the test if the page reported a Content-Security-Policy
// violation or an uncaught exception: the pages must work under their own policy.
func noPolicyViolations(t *testing.T, console func() []string) {
	t.Helper()
	for _, line := range console() {
		if strings.Contains(line, "Content Security Policy") || strings.HasPrefix(line, "exception") {
			t.Errorf("page console: %s", line)
		}
	}
}

type manifestVector struct {
	File     string `json:"file"`
	Expected string `json:"expected"`
	Check    string `json:"check"`
	Decoded  string `json:"decoded"`
}

func readManifest(t *testing.T) []manifestVector {
	data, err := os.ReadFile(filepath.Join(vectors, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Vectors []manifestVector `json:"vectors"`
	}
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	return m.Vectors
}

// TestViewerInBrowser opens /viewer in headless Chromium for every vector of the
// manifest: a valid record is drawn with every step as an element carrying its id, an
// invalid one is shown as failing the manifest's check.
func TestViewerInBrowser(t *testing.T) {
	srv, _, _, _ := recordServer(t)
	browser, console := testenv.StartBrowser(t)
	ctx, cancel := context.WithTimeout(browser, 3*time.Minute)
	defer cancel()

	var drawn, failed int
	for _, v := range readManifest(t) {
		record, err := os.ReadFile(filepath.Join(vectors, v.File))
		if err != nil {
			t.Fatal(err)
		}
		// A fresh load each time, so that the state read below is this record's.
		if err := chromedp.Do(ctx, chromedp.Navigate("about:blank"),
			chromedp.Navigate(srv+"/viewer#record="+base64.RawURLEncoding.EncodeToString(record))); err != nil {
			t.Fatal(err)
		}
		wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
		err = chromedp.Do(wctx, testenv.WaitJS(`["drawn", "failed", "error"].includes(document.body.dataset.state)`))
		wcancel()
		if err != nil {
			t.Fatalf("%s: %v\npage console: %q", v.File, err, console())
		}
		type viewerState struct {
			State, Check, Status string
			IDs                  []string
		}
		page, err := chromedp.Run(ctx, chromedp.Evaluate[viewerState](`({state: document.body.dataset.state, check: document.body.dataset.check || "",
			status: document.getElementById("status").textContent,
			ids: [...document.querySelectorAll("#graph svg [data-step-id]")].map(e => e.dataset.stepId)})`))
		if err != nil {
			t.Fatal(err)
		}
		switch v.Expected {
		case "valid":
			if page.State != "drawn" {
				t.Errorf("%s: state %q: %s", v.File, page.State, page.Status)
				continue
			}
			drawn++
			var decoded []struct {
				ID string `json:"id"`
			}
			data, err := os.ReadFile(filepath.Join(vectors, v.Decoded))
			if err != nil {
				t.Fatal(err)
			}
			json.Unmarshal(data, &decoded)
			var want []string
			for _, s := range decoded {
				want = append(want, s.ID)
			}
			sort.Strings(want)
			sort.Strings(page.IDs)
			if len(want) == 0 || !slices.Equal(page.IDs, want) {
				t.Errorf("%s: steps drawn %v, want %v", v.File, page.IDs, want)
			}
		case "invalid":
			if page.State != "failed" || page.Check != v.Check || !strings.Contains(page.Status, "Failed check: "+v.Check) {
				t.Errorf("%s: state %q check %q (want failed, %q): %s", v.File, page.State, page.Check, v.Check, page.Status)
				continue
			}
			failed++
			if len(page.IDs) != 0 {
				t.Errorf("%s: an invalid record was drawn", v.File)
			}
		}
	}
	if drawn < 6 || failed < 16 {
		t.Errorf("drawn %d valid and showed %d invalid vectors; the manifest has 6 and 16", drawn, failed)
	}
	noPolicyViolations(t, console)

	// Input that is no record: an error, not a verdict.
	for _, c := range []struct{ fragment, want string }{
		{"#record=eyJub3QiOiJqc29uIg", "The record is not JSON"},
		{"#record=a+b/c", "#record= is not base64url"},
	} {
		chromedp.Do(ctx, chromedp.Navigate("about:blank"))
		if err := chromedp.Do(ctx, chromedp.Navigate(srv+"/viewer"+c.fragment)); err != nil {
			t.Fatal(err)
		}
		if err := chromedp.Do(ctx, testenv.WaitJS(`document.body.dataset.state === "error"`)); err != nil {
			t.Fatalf("%s: %v", c.fragment, err)
		}
		msg, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("status").textContent`))
		if !strings.Contains(msg, c.want) {
			t.Errorf("%s: %q, want %q", c.fragment, msg, c.want)
		}
	}

	// A record chosen as a file.
	if err := chromedp.Do(ctx, chromedp.Navigate(srv+"/viewer")); err != nil {
		t.Fatal(err)
	}
	file, _ := filepath.Abs(filepath.Join(vectors, "records/unicode.json"))
	if err := chromedp.Do(ctx, chromedp.SetUploadFiles(chromedp.CSS("#file"), []string{file})); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, testenv.WaitJS(`document.body.dataset.state === "drawn" && document.querySelector("#graph [data-step-id]")`)); err != nil {
		t.Fatalf("a record chosen as a file: %v", err)
	}

	// A record pasted, and a step selected: its signer, signing time and certificate.
	record, _ := os.ReadFile(filepath.Join(vectors, "records/bank.json"))
	if err := chromedp.Do(ctx, chromedp.Navigate(srv+"/viewer")); err != nil {
		t.Fatal(err)
	}
	text, _ := json.Marshal(string(record))
	if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`document.getElementById("record").value = `+string(text)+`;
		document.querySelector("#input button").click()`)); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, testenv.WaitJS(`document.body.dataset.state === "drawn"`)); err != nil {
		t.Fatal(err)
	}
	// The CAP's process step, signed by 98765 and included in the bank's record.
	const processStep = `[...document.querySelectorAll("#graph [data-step-id]")].find(g => g.querySelector("text")?.textContent === "process")`
	if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](processStep+`.dispatchEvent(new MouseEvent("click", {bubbles: true}))`)); err != nil {
		t.Fatal(err)
	}
	details, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("details").hidden ? "" : document.getElementById("details").innerText`))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"Carbon Accounting Provider", "https://member.core.sandbox.trust.ib1.org/m/81524",
		"carbon-accounting-provider", "https://member.core.sandbox.trust.ib1.org/a/26241",
		"Signed at", "98765", "Valid from", "Valid until", "Included by", `"type": "process"`,
	} {
		if !strings.Contains(details, want) {
			t.Errorf("the selected step's details lack %q:\n%s", want, details)
		}
	}
	screenshot(t, ctx, "viewer-bank.png")
	noPolicyViolations(t, console)
}

// TestDocsInBrowser opens /docs (Swagger UI) in headless Chromium: every route served is
// shown, and "Try it out" on the sign operation gets a signature that verifies.
func TestDocsInBrowser(t *testing.T) {
	key := vectorKey(t, "123456")
	srvURL, a := pagesServer(t, key)
	browser, console := testenv.StartBrowser(t)
	ctx, cancel := context.WithTimeout(browser, 2*time.Minute)
	defer cancel()

	if err := chromedp.Do(ctx, chromedp.Navigate(srvURL+"/docs"),
		testenv.WaitJS(`document.body.dataset.state === "ready" && document.querySelector(".opblock")`)); err != nil {
		t.Fatal(err)
	}
	shown, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll(".opblock")].map(o =>
		o.querySelector(".opblock-summary-method").textContent + " " + o.querySelector(".opblock-summary-path").dataset.path)`))
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, r := range a.Routes() {
		want = append(want, r.Method+" "+strings.TrimSuffix(r.Path, "{$}"))
	}
	for r := range daemonRoutes {
		want = append(want, r)
	}
	sort.Strings(want)
	sort.Strings(shown)
	if !slices.Equal(shown, want) {
		t.Errorf("Swagger UI shows %v\nthe daemon serves %v", shown, want)
	}

	// Try it out: POST /v1/keys/{name}/sign with a digest, through Swagger UI's own form.
	digest := sha256.Sum256([]byte("tried out in a browser"))
	body, _ := json.Marshal(map[string]string{"digest": base64.StdEncoding.EncodeToString(digest[:])})
	bodyJS, _ := json.Marshal(string(body))
	steps := []string{
		`document.querySelector("#operations-keys-sign .opblock-summary-control").click()`,
		`document.querySelector("#operations-keys-sign .try-out__btn").click()`,
		// React owns these fields: set them through the native setter, then tell React.
		`(() => { const set = (el, v) => { Object.getOwnPropertyDescriptor(Object.getPrototypeOf(el), "value").set.call(el, v);
			el.dispatchEvent(new Event("input", {bubbles: true})); el.dispatchEvent(new Event("change", {bubbles: true})); };
			const op = document.querySelector("#operations-keys-sign");
			set(op.querySelector("tr[data-param-name=name] input"), "m123456");
			set(op.querySelector("textarea.body-param__text"), ` + string(bodyJS) + `); })()`,
		`document.querySelector("#operations-keys-sign .execute").click()`,
	}
	waits := []string{
		`document.querySelector("#operations-keys-sign .opblock-summary-control")`,
		`document.querySelector("#operations-keys-sign .try-out__btn")`,
		`document.querySelector("#operations-keys-sign textarea.body-param__text")`,
		// Swagger UI takes a typed parameter after a debounce: wait until its state has it.
		`JSON.stringify(ui.specSelectors.parameterValues(["/v1/keys/{name}/sign", "post"])).includes("m123456")`,
	}
	for i := range steps {
		if err := chromedp.Do(ctx, testenv.WaitJS(waits[i])); err != nil {
			screenshot(t, browser, "docs-failed.png")
			t.Fatalf("step %d: %v", i, err)
		}
		if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](steps[i])); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	if err := chromedp.Do(ctx, testenv.WaitJS(`document.querySelector("#operations-keys-sign .live-responses-table tr.response .response-col_status")`)); err != nil {
		screenshot(t, browser, "docs-failed.png")
		t.Fatal(err)
	}
	answer, err := chromedp.Run(ctx, chromedp.Evaluate[struct{ Status, Body string }](`(() => { const t = document.querySelector("#operations-keys-sign .live-responses-table");
		return {status: t.querySelector("tr.response .response-col_status").textContent.trim(),
			body: t.querySelector("tr.response .response-col_description pre").textContent}; })()`))
	if err != nil {
		t.Fatal(err)
	}
	var sig struct {
		Key       string `json:"key"`
		Signature []byte `json:"signature"`
	}
	if !strings.HasPrefix(answer.Status, "200") || json.Unmarshal([]byte(answer.Body), &sig) != nil {
		t.Fatalf("Try it out answered %q: %s", answer.Status, answer.Body)
	}
	if sig.Key != "m123456" || !ecdsa.VerifyASN1(key.Public().(*ecdsa.PublicKey), digest[:], sig.Signature) {
		t.Errorf("Try it out: the signature %+v does not verify", sig)
	}
	screenshot(t, ctx, "docs-try-it-out.png")
	noPolicyViolations(t, console)
}

func pagesServer(t *testing.T, key *backends.Key) (string, *api.API) {
	srv, a := newServer(t, api.Options{Keys: []*backends.Key{key}})
	return srv.URL, a
}

// TestPagesHeaders checks what the browser tests cannot see directly: each page and asset
// carries the Content-Security-Policy, and the assets are the files fetched and checked.
func TestPagesHeaders(t *testing.T) {
	srv, _ := newServer(t, api.Options{})
	for _, path := range []string{"/viewer", "/docs", "/assets/viewer.js", "/assets/docs.js", "/assets/viz-global.js", "/assets/swagger-ui-bundle.js", "/assets/swagger-ui.css"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		csp := resp.Header.Get("Content-Security-Policy")
		// Only the viewer compiles WebAssembly (Graphviz).
		scripts := "script-src 'self';"
		if path == "/viewer" {
			scripts = "script-src 'self' 'wasm-unsafe-eval';"
		}
		if resp.StatusCode != 200 || !strings.Contains(csp, "default-src 'none'; "+scripts) || strings.Contains(csp, "unsafe-inline") || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: %d, CSP %q", path, resp.StatusCode, csp)
		}
		if strings.HasSuffix(path, ".js") && !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/javascript") {
			t.Errorf("%s: Content-Type %q", path, resp.Header.Get("Content-Type"))
		}
		if !strings.HasPrefix(path, "/assets/") && (strings.Contains(string(body), "<script>") || strings.Contains(string(body), "http://") || strings.Contains(string(body), "https://")) {
			t.Errorf("%s: an inline script or an address elsewhere in the page", path)
		}
	}
	sums, err := os.ReadFile("assets/SHA256SUMS")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(sums)), "\n") {
		want, name, _ := strings.Cut(line, "  ")
		resp, err := http.Get(srv.URL + "/assets/" + name)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if got := sha256.Sum256(body); resp.StatusCode != 200 || want != hex.EncodeToString(got[:]) {
			t.Errorf("/assets/%s: %d, not the file SHA256SUMS lists", name, resp.StatusCode)
		}
	}
	if status, _ := get(t, srv.URL+"/assets/..%2fapi.go"); status != 404 {
		t.Errorf("/assets/..%%2fapi.go: %d", status)
	}
}

// TestPagesCSPIsExact pins each page's and asset's whole Content-Security-Policy: the
// checks above look for parts of it, so a directive dropped elsewhere in the header
// (frame-ancestors, base-uri, form-action) would pass them, and no browser test frames
// a page to notice.
func TestPagesCSPIsExact(t *testing.T) {
	const page = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
		"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
	const viewer = "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' data:; " +
		"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
	want := map[string]string{"/docs": page, "/viewer": viewer}
	sums, err := os.ReadFile("assets/SHA256SUMS")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(sums)), "\n") {
		_, name, _ := strings.Cut(line, "  ")
		want["/assets/"+name] = page
	}
	ours, err := filepath.Glob("pages/*")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range ours {
		if name := filepath.Base(f); !strings.HasSuffix(name, ".html") {
			want["/assets/"+name] = page
		}
	}
	srv, _ := newServer(t, api.Options{})
	for path, csp := range want {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: %d", path, resp.StatusCode)
			continue
		}
		if got := resp.Header.Values("Content-Security-Policy"); len(got) != 1 || got[0] != csp {
			t.Errorf("%s: Content-Security-Policy %q\nwant %q", path, got, csp)
		}
		if got := resp.Header.Get("X-Frame-Options"); got != "DENY" {
			t.Errorf("%s: X-Frame-Options %q, want DENY", path, got)
		}
	}
}

// TestOpenAPIExamples sends every request example of the OpenAPI document to the daemon:
// each is answered 200, so the examples Swagger UI fills in, and a generated client's
// documentation, are requests that work (the record examples are reference vectors).
func TestOpenAPIExamples(t *testing.T) {
	srv, _, _, _ := recordServer(t)
	var doc struct {
		Paths map[string]map[string]struct {
			RequestBody struct {
				Content map[string]struct {
					Examples map[string]struct {
						Ref   string          `json:"$ref"`
						Value json.RawMessage `json:"value"`
					} `json:"examples"`
				} `json:"content"`
			} `json:"requestBody"`
		} `json:"paths"`
		Components struct {
			Examples map[string]struct {
				Value json.RawMessage `json:"value"`
			} `json:"examples"`
		} `json:"components"`
	}
	status, body := get(t, srv+"/openapi.json")
	if status != 200 || json.Unmarshal(body, &doc) != nil {
		t.Fatalf("/openapi.json: %d", status)
	}
	n := 0
	for path, ops := range doc.Paths {
		for method, op := range ops {
			for name, ex := range op.RequestBody.Content["application/json"].Examples {
				value := ex.Value
				if ex.Ref != "" {
					value = doc.Components.Examples[strings.TrimPrefix(ex.Ref, "#/components/examples/")].Value
				}
				url := srv + strings.ReplaceAll(path, "{name}", "m123456")
				if status, answer := post(t, url, "application/json", string(value)); status != 200 {
					t.Errorf("%s %s example %q: %d %s", strings.ToUpper(method), path, name, status, answer)
				}
				n++
			}
		}
	}
	if n < 9 {
		t.Errorf("only %d request examples", n)
	}
}

// TestVerifyDetails checks the per-step signatures the viewer shows against the steps:
// one per step, in order, each naming the certificate of the member that signed the step.
func TestVerifyDetails(t *testing.T) {
	srv, _, _, _ := recordServer(t)
	record, err := os.ReadFile(filepath.Join(vectors, "records/bank.json"))
	if err != nil {
		t.Fatal(err)
	}
	status, body := post(t, srv+"/v1/records/verify", "application/json", `{"details": true, "record": `+string(record)+`}`)
	var out struct {
		Steps []struct {
			Signature struct {
				Signed struct{ Name string } `json:"signed"`
			} `json:"_signature"`
		} `json:"steps"`
		Signatures []struct {
			Serial      string `json:"serial"`
			SignedAt    string `json:"signed_at"`
			Certificate struct {
				Subject   string
				NotBefore time.Time `json:"not_before"`
				NotAfter  time.Time `json:"not_after"`
			} `json:"certificate"`
		} `json:"signatures"`
	}
	if status != 200 || json.Unmarshal(body, &out) != nil {
		t.Fatalf("%d %s", status, body)
	}
	if len(out.Steps) != 9 || len(out.Signatures) != len(out.Steps) {
		t.Fatalf("%d steps, %d signatures", len(out.Steps), len(out.Signatures))
	}
	serials := map[string]bool{}
	for i, s := range out.Signatures {
		signedAt, err := time.Parse(time.RFC3339, s.SignedAt)
		if err != nil || !strings.Contains(s.Certificate.Subject, "O="+out.Steps[i].Signature.Signed.Name+",") ||
			s.Certificate.NotBefore.IsZero() || signedAt.Before(s.Certificate.NotBefore) || signedAt.After(s.Certificate.NotAfter) {
			t.Errorf("step %d signed by %q: %+v", i, out.Steps[i].Signature.Signed.Name, s)
		}
		serials[s.Serial] = true
	}
	if len(serials) != 3 {
		t.Errorf("serials %v, want the three signers'", serials)
	}
	// Without details, the answer is as before.
	status, body = post(t, srv+"/v1/records/verify", "application/json", `{"record": `+string(record)+`}`)
	if status != 200 || strings.Contains(string(body), `"signatures"`) {
		t.Errorf("without details: %d, signatures present", status)
	}
}
