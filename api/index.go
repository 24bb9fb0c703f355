package api

import (
	_ "embed"
	"encoding/json"
	"html/template"
	"net/http"
	"sort"
	"strings"

	"github.com/ib1/provenanced/api/wire"
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

// docs renders the OpenAPI document as a page; it needs no script from elsewhere, since a
// signing daemon's pages should not pull code from the network.
func (a *API) docs(w http.ResponseWriter, r *http.Request) {
	var doc struct {
		Info struct {
			Title       string `json:"title"`
			Description string `json:"description"`
			Version     string `json:"version"`
		} `json:"info"`
		Paths map[string]map[string]struct {
			Summary     string `json:"summary"`
			Description string `json:"description"`
		} `json:"paths"`
	}
	if err := json.Unmarshal(openAPIDoc, &doc); err != nil {
		wire.Error(w, http.StatusInternalServerError, "internal", "the OpenAPI document does not parse", "")
		return
	}
	type op struct{ Method, Path, Summary, Description string }
	var ops []op
	for p, methods := range doc.Paths {
		for m, o := range methods {
			ops = append(ops, op{strings.ToUpper(m), p, o.Summary, o.Description})
		}
	}
	sort.Slice(ops, func(i, j int) bool {
		if ops[i].Path != ops[j].Path {
			return ops[i].Path < ops[j].Path
		}
		return ops[i].Method < ops[j].Method
	})
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	docsPage.Execute(w, map[string]any{"Title": doc.Info.Title, "Description": doc.Info.Description, "Ops": ops})
}

var docsPage = template.Must(template.New("docs").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{.Title}}</title>
<style>body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}
code{background:#f3f3f3;padding:0 .2em}h2{font-size:1.05rem;margin-bottom:.2rem}p{margin-top:.2rem}</style></head>
<body><h1>{{.Title}}</h1><p>{{.Description}}</p>
<p>The machine-readable description is <a href="/openapi.json">/openapi.json</a> (OpenAPI 3.1); <a href="/docs">/docs</a> is the same, interactive.</p>
{{range .Ops}}<h2><code>{{.Method}} {{.Path}}</code> — {{.Summary}}</h2><p>{{.Description}}</p>
{{end}}</body></html>
`))
