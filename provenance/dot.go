package provenance

import (
	"strconv"
	"strings"
)

// DOT draws decoded steps (the output of Verify) as a Graphviz digraph: one node per step,
// shaped by type (permission invhouse, origin diamond, receipt box3d, process parallelogram,
// others box), labelled with its type and id, and clustered by the name of its signer; an
// edge from a step to each step it refers to, labelled with the member that refers to it:
// "of" (a transfer's data), "transfer" (a receipt's transfer), "inputs" (a process's inputs)
// and "permissions". References to ids not in the record are not drawn. A transfer step's
// "to" member is drawn as a dashed edge: to the cluster of that member's steps when it
// signed some, otherwise to a dashed ellipse naming the member (nodes m0, m1, ...).
func DOT(steps []*Object) []byte {
	var b strings.Builder
	b.WriteString("digraph provenance {\n")
	b.WriteString("  rankdir=BT;\n")
	b.WriteString("  compound=true;\n")
	b.WriteString("  graph [fontname=\"Helvetica\", fontsize=11];\n")
	b.WriteString("  node [fontname=\"Helvetica\", fontsize=10];\n")
	b.WriteString("  edge [fontname=\"Helvetica\", fontsize=9];\n")

	// Nodes are named s0, s1, ... so that hostile ids need no care; labels are escaped.
	node := map[string]string{}
	for i, s := range steps {
		if id, ok := s.GetString("id"); ok {
			if _, dup := node[id]; !dup {
				node[id] = "s" + strconv.Itoa(i)
			}
		}
	}
	var clusters []string
	members := map[string][]int{}
	clusterOf := map[string]int{} // a signer's member URL -> its cluster
	var loose []int
	for i, s := range steps {
		name, ok := signerField(s, "name")
		if !ok {
			loose = append(loose, i)
			continue
		}
		if _, seen := members[name]; !seen {
			clusters = append(clusters, name)
		}
		members[name] = append(members[name], i)
		if member, ok := signerField(s, "member"); ok {
			if _, seen := clusterOf[member]; !seen {
				clusterOf[member] = len(clusters) - 1
			}
		}
	}
	writeNode := func(indent string, i int) {
		s := steps[i]
		typ, _ := s.GetString("type")
		id, _ := s.GetString("id")
		b.WriteString(indent)
		b.WriteString("s" + strconv.Itoa(i))
		b.WriteString(" [shape=")
		b.WriteString(shapeFor(typ))
		b.WriteString(", label=")
		b.WriteString(dotQuote(typ + "\n" + id))
		b.WriteString("];\n")
	}
	for ci, name := range clusters {
		b.WriteString("  subgraph cluster_" + strconv.Itoa(ci) + " {\n")
		b.WriteString("    label=" + dotQuote(name) + ";\n")
		b.WriteString("    style=rounded;\n")
		for _, i := range members[name] {
			writeNode("    ", i)
		}
		b.WriteString("  }\n")
	}
	for _, i := range loose {
		writeNode("  ", i)
	}
	for i, s := range steps {
		from := "s" + strconv.Itoa(i)
		for _, m := range s.Members {
			var targets []string
			switch m.Key {
			case "of", "transfer":
				if t, ok := m.Value.(string); ok {
					targets = []string{t}
				}
			case "inputs", "permissions":
				for _, e := range asList(m.Value) {
					if t, ok := e.(string); ok {
						targets = append(targets, t)
					}
				}
			}
			for _, t := range targets {
				to, ok := node[t]
				if !ok {
					continue
				}
				b.WriteString("  " + from + " -> " + to + " [label=" + dotQuote(m.Key) + "];\n")
			}
		}
	}
	external := map[string]string{}
	for i, s := range steps {
		if typ, _ := s.GetString("type"); typ != "transfer" {
			continue
		}
		to, ok := s.GetString("to")
		if !ok {
			continue
		}
		from := "s" + strconv.Itoa(i)
		if c, ok := clusterOf[to]; ok {
			// constraint=false: the recipient's steps come later and point back at this
			// transfer; this edge must not pull the layout the other way.
			first := "s" + strconv.Itoa(members[clusters[c]][0])
			b.WriteString("  " + from + " -> " + first + " [label=\"to\", style=dashed, constraint=false, lhead=cluster_" + strconv.Itoa(c) + "];\n")
			continue
		}
		m, ok := external[to]
		if !ok {
			m = "m" + strconv.Itoa(len(external))
			external[to] = m
			b.WriteString("  " + m + " [shape=ellipse, style=dashed, label=" + dotQuote(to) + "];\n")
		}
		b.WriteString("  " + from + " -> " + m + " [label=\"to\", style=dashed];\n")
	}
	b.WriteString("}\n")
	return []byte(b.String())
}

func shapeFor(typ string) string {
	switch typ {
	case "permission":
		return "invhouse"
	case "origin":
		return "diamond"
	case "receipt":
		return "box3d"
	case "process":
		return "parallelogram"
	default:
		return "box"
	}
}

// signerField is a member ("name", "member") of the step's signer, from its _signature.
func signerField(step *Object, field string) (string, bool) {
	sig, ok := step.Get("_signature")
	if !ok {
		return "", false
	}
	so, ok := sig.(*Object)
	if !ok {
		return "", false
	}
	signed, ok := so.Get("signed")
	if !ok {
		return "", false
	}
	signer, ok := signed.(*Object)
	if !ok {
		return "", false
	}
	return signer.GetString(field)
}

// dotQuote writes s as a DOT quoted string for a label: quotes and backslashes escaped (a
// backslash would otherwise start a label escape such as \N), line breaks as \n, other
// control characters replaced by spaces.
func dotQuote(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n':
			b.WriteString(`\n`)
		case r < 0x20 || r == 0x7F || r == 0x2028 || r == 0x2029:
			b.WriteByte(' ')
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
