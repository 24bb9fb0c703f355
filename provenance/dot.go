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
	b.WriteString(dotHeader)
	g := groupBySigner(steps)
	for ci, name := range g.names {
		b.WriteString("  subgraph cluster_" + strconv.Itoa(ci) + " {\n")
		b.WriteString("    label=" + dotQuote(name) + ";\n")
		b.WriteString("    style=rounded;\n")
		for _, i := range g.steps[name] {
			writeDOTNode(&b, "    ", i, steps[i])
		}
		b.WriteString("  }\n")
	}
	for _, i := range g.loose {
		writeDOTNode(&b, "  ", i, steps[i])
	}
	writeReferenceEdges(&b, steps)
	writeTransferEdges(&b, steps, g)
	b.WriteString("}\n")
	return []byte(b.String())
}

// dotHeader opens the graph. Bottom to top, so that the steps a step refers to, which come
// before it, are drawn above it; compound, so that a transfer's edge can end at the border
// of its recipient's cluster (lhead).
const dotHeader = "digraph provenance {\n" +
	"  rankdir=BT;\n" +
	"  compound=true;\n" +
	"  graph [fontname=\"Helvetica\", fontsize=11];\n" +
	"  node [fontname=\"Helvetica\", fontsize=10];\n" +
	"  edge [fontname=\"Helvetica\", fontsize=9];\n"

// signerGroups are the steps grouped into one cluster per signer name, in the order the
// names first appear.
type signerGroups struct {
	names     []string         // cluster_0's signer name first
	steps     map[string][]int // a signer name -> the indexes of its steps
	clusterOf map[string]int   // a signer's member URL -> its cluster
	loose     []int            // steps with no signer, drawn outside every cluster
}

func groupBySigner(steps []*Object) signerGroups {
	g := signerGroups{steps: map[string][]int{}, clusterOf: map[string]int{}}
	for i, s := range steps {
		name, ok := signerField(s, "name")
		if !ok {
			g.loose = append(g.loose, i)
			continue
		}
		if _, seen := g.steps[name]; !seen {
			g.names = append(g.names, name)
		}
		g.steps[name] = append(g.steps[name], i)
		if member, ok := signerField(s, "member"); ok {
			if _, seen := g.clusterOf[member]; !seen {
				g.clusterOf[member] = len(g.names) - 1
			}
		}
	}
	return g
}

// writeDOTNode writes the node of steps[i]. Nodes are named s0, s1, ... so that hostile
// ids need no care; labels are escaped.
func writeDOTNode(b *strings.Builder, indent string, i int, s *Object) {
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

// writeReferenceEdges draws an edge from each step to each step of the record it refers to.
func writeReferenceEdges(b *strings.Builder, steps []*Object) {
	node := map[string]string{} // a step id -> its node, the first step's if ids repeat
	for i, s := range steps {
		if id, ok := s.GetString("id"); ok {
			if _, dup := node[id]; !dup {
				node[id] = "s" + strconv.Itoa(i)
			}
		}
	}
	for i, s := range steps {
		from := "s" + strconv.Itoa(i)
		for _, m := range s.Members {
			for _, t := range referencedIDs(m) {
				to, ok := node[t]
				if !ok {
					continue
				}
				b.WriteString("  " + from + " -> " + to + " [label=" + dotQuote(m.Key) + "];\n")
			}
		}
	}
}

// referencedIDs are the step ids that a member of a step refers to, if it is a member that
// refers to steps.
func referencedIDs(m Member) []string {
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
	return targets
}

// writeTransferEdges draws each transfer's "to": an edge to the recipient's cluster if it
// signed steps of the record, otherwise to a node naming it.
func writeTransferEdges(b *strings.Builder, steps []*Object, g signerGroups) {
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
		if c, ok := g.clusterOf[to]; ok {
			// constraint=false: the recipient's steps come later and point back at this
			// transfer; this edge must not pull the layout the other way.
			first := "s" + strconv.Itoa(g.steps[g.names[c]][0])
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
