package deploy

import (
	"os"
	"strings"
	"testing"
)

// The metrics socket's comment says where it listens, as its ListenStream= does: it said
// "for a Prometheus on another host" while listening on 127.0.0.1.
func TestSystemdMetricsSocketSaysWhereItListens(t *testing.T) {
	data, err := os.ReadFile("systemd/provenanced-metrics.socket")
	if err != nil {
		t.Fatal(err)
	}
	listen := unitSettings(t, "systemd/provenanced-metrics.socket")["Socket.ListenStream"]
	if len(listen) != 1 {
		t.Fatalf("ListenStream = %q", listen)
	}
	var comment strings.Builder
	for _, line := range strings.Split(string(data), "\n") {
		if c, ok := strings.CutPrefix(line, "#"); ok {
			comment.WriteString(c + " ")
		}
	}
	if !strings.Contains(comment.String(), listen[0]) {
		t.Errorf("the comment does not name the address the socket listens on, %s:\n%s", listen[0], comment.String())
	}
	if strings.HasPrefix(listen[0], "127.") && strings.Contains(comment.String(), "for a Prometheus on another host") {
		t.Error("the comment offers a loopback socket to another host")
	}
}
