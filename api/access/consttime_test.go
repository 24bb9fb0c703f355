package access

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// secretName is a name that holds a bearer token or its digest.
var secretName = regexp.MustCompile(`(?i)^(tok|token|tokens?digest|tokensha256|bearer|auth)$|token(digest|sha256)`)

// Every comparison of a bearer token or its digest is constant-time: no ==, no
// bytes.Equal, no map lookup keyed by one, in any package that handles them. The test
// reads the source, so it fails the day someone writes `string(sum[:]) == ...`, which no
// timing test on a busy machine would notice. (PKCS#11 tokens, in backends/ and the test
// parts, are hardware, and provenance's tokens are JSON's: neither is a secret.)
func TestTokenComparisonsAreConstantTime(t *testing.T) {
	root := filepath.Join("..", "..")
	fset := token.NewFileSet()
	var found []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			switch rel {
			case "backends", "testenv", "bench", "internal/devsetup", "provenance", ".git":
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			if what := variableTimeComparison(n); what != "" {
				found = append(found, fset.Position(n.Pos()).String()+": "+what)
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range found {
		t.Errorf("%s: compare tokens and their digests with crypto/subtle.ConstantTimeCompare", f)
	}
}

// variableTimeComparison says what in n compares a secret in variable time, if anything.
func variableTimeComparison(n ast.Node) string {
	switch n := n.(type) {
	case *ast.BinaryExpr:
		switch n.Op {
		case token.EQL, token.NEQ, token.LSS, token.GTR, token.LEQ, token.GEQ:
		default:
			return ""
		}
		if trivial(n.X) || trivial(n.Y) {
			return "" // against "", nil or a length: says nothing of the secret's bytes
		}
		if mentionsSecret(n.X) || mentionsSecret(n.Y) {
			return "a " + n.Op.String() + " comparison"
		}
	case *ast.CallExpr:
		sel, ok := n.Fun.(*ast.SelectorExpr)
		if !ok {
			return ""
		}
		pkg, _ := sel.X.(*ast.Ident)
		if pkg == nil {
			return ""
		}
		switch pkg.Name + "." + sel.Sel.Name {
		case "bytes.Equal", "bytes.Compare", "bytes.HasPrefix", "strings.Compare", "strings.EqualFold", "strings.HasPrefix",
			"reflect.DeepEqual", "slices.Equal", "slices.Compare", "slices.Contains", "slices.Index":
			for _, a := range n.Args {
				if mentionsSecret(a) {
					return pkg.Name + "." + sel.Sel.Name
				}
			}
		}
	case *ast.IndexExpr:
		if mentionsSecret(n.Index) {
			return "a lookup keyed by a secret"
		}
	case *ast.CaseClause:
		for _, e := range n.List {
			if mentionsSecret(e) {
				return "a switch case"
			}
		}
	case *ast.SwitchStmt:
		if n.Tag != nil && mentionsSecret(n.Tag) {
			return "a switch on a secret"
		}
	}
	return ""
}

func trivial(e ast.Expr) bool {
	switch e := e.(type) {
	case *ast.BasicLit:
		return true
	case *ast.Ident:
		return e.Name == "nil"
	case *ast.CallExpr:
		if id, ok := e.Fun.(*ast.Ident); ok && counts[id.Name] {
			return true
		}
	}
	return false
}

// counts are functions whose result is a count, which says nothing of which bytes a
// secret holds (distinctBytes: conf's strength check of a token file).
var counts = map[string]bool{"len": true, "cap": true, "distinctBytes": true}

func mentionsSecret(e ast.Expr) bool {
	found := false
	ast.Inspect(e, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.Ident:
			found = found || secretName.MatchString(n.Name)
		case *ast.CallExpr:
			// len(token) and the like are counts, not the secret's bytes.
			if id, ok := n.Fun.(*ast.Ident); ok && counts[id.Name] {
				return false
			}
		}
		return !found
	})
	return found
}
