package api

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"strings"
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

type asset struct {
	data  []byte
	ctype string
	etag  string
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
			data, _ := pageFS.ReadFile(dir + "/" + e.Name())
			ext := path.Ext(e.Name())
			if ext == ".html" {
				p["/"+strings.TrimSuffix(e.Name(), ".html")] = data
				continue
			}
			sum := sha256.Sum256(data)
			a[e.Name()] = &asset{data, types[ext], `"` + hex.EncodeToString(sum[:16]) + `"`}
		}
	}
	return a, p
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
	w.Header().Set("ETag", f.etag)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(f.data))
}
