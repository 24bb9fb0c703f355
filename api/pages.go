package api

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/ib1/provenanced/api/wire"
)

// The pages (record viewer, Swagger UI) and every script and style they load are embedded:
// a signing daemon's pages pull no code from the network, and the daemon needs no npm at
// build time. assets/ holds the npm files (see assets/fetch.sh); pages/ holds our own.
//
//go:embed pages/*.html pages/*.js pages/*.css
//go:embed assets/*.js assets/*.css assets/*.LICENSE assets/*.NOTICE
var pageFS embed.FS

// An asset is served from pageFS as it is embedded, never copied to the heap: the assets
// are megabytes that a daemon would otherwise keep live whether or not anyone opens a
// page, and the garbage collector's target (GOGC=400) grows with the live heap, five
// times over (measured: 16 MiB of peak RSS). Its ETag is computed on its first request,
// so a daemon whose pages nobody opens never reads them.
type asset struct {
	name  string // in pageFS
	ctype string
	etag  func() string
}

// assets maps a name under /assets/ to its content; pages maps a page route to its HTML.
var assets, pages = loadPages()

func loadPages() (map[string]*asset, map[string][]byte) {
	a := map[string]*asset{}
	p := map[string][]byte{}
	types := map[string]string{
		".js":      "text/javascript; charset=utf-8",
		".css":     "text/css; charset=utf-8",
		".LICENSE": "text/plain; charset=utf-8",
		".NOTICE":  "text/plain; charset=utf-8",
	}
	for _, dir := range []string{"assets", "pages"} {
		entries, _ := fs.ReadDir(pageFS, dir)
		for _, e := range entries {
			ext := path.Ext(e.Name())
			if ext == ".html" {
				p["/"+strings.TrimSuffix(e.Name(), ".html")], _ = pageFS.ReadFile(dir + "/" + e.Name())
				continue
			}
			name := dir + "/" + e.Name()
			a[e.Name()] = &asset{name, types[ext], sync.OnceValue(func() string { return etagOf(name) })}
		}
	}
	return a, p
}

// etagOf is the quoted hex of the first 16 bytes of a pageFS file's SHA-256.
func etagOf(name string) string {
	f, err := pageFS.Open(name)
	if err != nil {
		return ""
	}
	defer f.Close()
	h := sha256.New()
	io.Copy(h, f)
	return `"` + hex.EncodeToString(h.Sum(nil)[:16]) + `"`
}

// pageCSP is the Content-Security-Policy of the pages: scripts and styles only from this
// daemon, fetches only to it, nothing framed or framing, no inline script or style
// element. Images may be data: URLs, which Swagger UI's stylesheet uses for its icons.
// The viewer's policy adds 'wasm-unsafe-eval': viz-global.js carries Graphviz as
// WebAssembly bytes, and a page may compile WebAssembly only with this keyword (Chromium
// refuses WebAssembly.instantiate without it); it allows no JavaScript eval.
const pageCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

var viewerCSP = strings.Replace(pageCSP, "script-src 'self';", "script-src 'self' 'wasm-unsafe-eval';", 1)

func pageHeaders(h http.Header, csp string) {
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
}

// page serves one of the embedded HTML pages, at its route.
func (a *API) page(w http.ResponseWriter, r *http.Request) {
	body, ok := pages[r.URL.Path]
	if !ok {
		wire.Error(w, http.StatusNotFound, "not_found", "no page "+r.URL.Path, "")
		return
	}
	csp := pageCSP
	if r.URL.Path == "/viewer" {
		csp = viewerCSP
	}
	pageHeaders(w.Header(), csp)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
}

// asset serves a script or style of the pages; the ETag lets a browser revalidate the
// large files cheaply instead of fetching them again.
func (a *API) asset(w http.ResponseWriter, r *http.Request) {
	f, ok := assets[r.PathValue("file")]
	if !ok {
		wire.Error(w, http.StatusNotFound, "not_found", "no asset named "+r.PathValue("file"), "")
		return
	}
	pageHeaders(w.Header(), pageCSP)
	w.Header().Set("Content-Type", f.ctype)
	w.Header().Set("Cache-Control", "no-cache")
	file, err := pageFS.Open(f.name)
	if err != nil { // embedded at build time: cannot happen but for a broken build
		wire.Error(w, http.StatusInternalServerError, "internal", "the asset cannot be read", "")
		return
	}
	defer file.Close()
	w.Header().Set("ETag", f.etag())
	// An embedded file reads and seeks over the binary's own bytes.
	http.ServeContent(w, r, "", time.Time{}, file.(io.ReadSeeker))
}
