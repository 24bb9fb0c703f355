package api

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"html/template"
	"net/http"
	"sort"
	"strings"
	"sync"

	"github.com/ib1/provenanced/api/wire"
	"github.com/yuin/goldmark"
)

//go:embed openapi.json
var openAPIDoc []byte

func (a *API) openAPI(w http.ResponseWriter, r *http.Request) {
	wire.Bytes(w, http.StatusOK, openAPIDoc)
}

func (a *API) index(w http.ResponseWriter, r *http.Request) {
	type route struct {
		Method string `json:"method"`
		Path   string `json:"path"`
	}
	var routes []route
	for _, rt := range a.routes {
		routes = append(routes, route{rt.Method, strings.TrimSuffix(rt.Path, "{$}")})
	}
	wire.JSON(w, http.StatusOK, map[string]any{
		"name":    "provenanced",
		"about":   "signing daemon for the IB1 Trust Framework: keys in an HSM (PKCS#11), AWS KMS or a PEM file; IB1 provenance records",
		"version": a.opts.Version,
		"openapi": "/openapi.json",
		"docs":    "/docs",
		"viewer":  "/viewer",
		"routes":  routes,
	})
}

// docs serves the OpenAPI document as a page, rendered once: it needs no script, from
// elsewhere or at all, since a signing daemon's pages should not pull code from the
// network, and the original service's users know /api-docs.
func (a *API) docs(w http.ResponseWriter, r *http.Request) {
	page, err := docsHTML()
	if err != nil {
		wire.Error(w, http.StatusInternalServerError, "internal", "the OpenAPI document does not render", "")
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	// Its only style is inline, and it has nothing else to load.
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	w.Write(page)
}

// docsHTML is the /api-docs page: the descriptions are CommonMark (as OpenAPI says), so
// they are rendered with goldmark, which escapes any raw HTML in them.
var docsHTML = sync.OnceValues(func() ([]byte, error) {
	var doc struct {
		Info struct {
			Title       string `json:"title"`
			Description string `json:"description"`
		} `json:"info"`
		Paths map[string]map[string]struct {
			Summary     string `json:"summary"`
			Description string `json:"description"`
		} `json:"paths"`
	}
	if err := json.Unmarshal(openAPIDoc, &doc); err != nil {
		return nil, err
	}
	type op struct {
		Method, Path, Summary string
		Description           template.HTML
	}
	var ops []op
	for p, methods := range doc.Paths {
		for m, o := range methods {
			d, err := markdown(o.Description)
			if err != nil {
				return nil, err
			}
			ops = append(ops, op{strings.ToUpper(m), p, o.Summary, d})
		}
	}
	sort.Slice(ops, func(i, j int) bool {
		if ops[i].Path != ops[j].Path {
			return ops[i].Path < ops[j].Path
		}
		return ops[i].Method < ops[j].Method
	})
	desc, err := markdown(doc.Info.Description)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	err = docsPage.Execute(&b, map[string]any{"Title": doc.Info.Title, "Description": desc, "Ops": ops})
	return b.Bytes(), err
})

func markdown(text string) (template.HTML, error) {
	var b bytes.Buffer
	if err := goldmark.Convert([]byte(text), &b); err != nil {
		return "", err
	}
	return template.HTML(b.String()), nil // goldmark leaves out raw HTML unless told otherwise
}

var docsPage = template.Must(template.New("docs").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{.Title}}</title>
<style>body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}
code{background:#f3f3f3;padding:0 .2em}h2{font-size:1.05rem;margin:1.5rem 0 .2rem}</style></head>
<body><h1>{{.Title}}</h1>{{.Description}}
<p>The machine-readable description is <a href="/openapi.json">/openapi.json</a> (OpenAPI 3.1); <a href="/docs">/docs</a> is the same, interactive.</p>
{{range .Ops}}<h2><code>{{.Method}} {{.Path}}</code> — {{.Summary}}</h2>{{.Description}}
{{end}}</body></html>
`))
