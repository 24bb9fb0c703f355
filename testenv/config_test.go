package testenv

import (
	"path/filepath"
	"reflect"
	"testing"

	"github.com/ib1/provenanced/conf"
	"github.com/ib1/provenanced/internal/devsetup"
)

// What Config writes, the daemon's own loader reads: values quoted and listed by the TOML
// library, tables in the order given.
func TestConfigIsReadByConf(t *testing.T) {
	dir := t.TempDir()
	c := NewConfig().
		Table("server", "socket", `p "quoted".sock`, "http", "").
		Table("keys.second", "backend", "pem", "private_key", "b.pem").
		Table("keys.first", "backend", "pem", "private_key", "a.pem").
		Table("clients.app", "uids", []int{1001}, "keys", []string{"*"}, "allow", []string{"sign"}, "rate", 2.5).
		Table("server", "socket_mode", "0600", "http", nil)
	cfg, err := conf.Parse(c.Write(t, dir), []byte(c.String()))
	if err != nil {
		t.Fatalf("%v\n%s", err, c)
	}
	if cfg.Server.HTTP != "" || cfg.Server.SocketMode != 0o600 || !filepathEndsWith(cfg.Server.Socket, `p "quoted".sock`) {
		t.Errorf("server: %+v\n%s", cfg.Server, c)
	}
	if names := cfg.KeyNames(); len(names) != 2 || names[0] != "second" || names[1] != "first" {
		t.Errorf("keys in the wrong order: %v", names)
	}
	if len(cfg.Clients) != 1 || cfg.Clients[0].UIDs[0] != 1001 || cfg.Clients[0].Rate != 2.5 {
		t.Errorf("clients: %+v", cfg.Clients)
	}
}

// DevConfig and DevKey say what `serve -dev`'s config says (devsetup.ConfigHead and a PEM
// key table written by hand), as conf reads them; Append and Comment write what they say.
func TestDevConfigAppendAndComment(t *testing.T) {
	dir := t.TempDir()
	built := DevConfig("127.0.0.1:8080", "root-ca.pem").DevKey()
	byHand := devsetup.ConfigHead("# serve -dev", "127.0.0.1:8080", "root-ca.pem") +
		"backend = \"pem\"\nprivate_key = \"signing-key.pem\"\ncertificates = \"signing-bundle.pem\"\n"
	want, err := conf.Parse(filepath.Join(dir, "provenanced.toml"), []byte(byHand))
	if err != nil {
		t.Fatal(err)
	}
	got := built.Load(t, dir)
	if len(got.Keys) != 1 || !got.Keys[0].SameKey(want.Keys[0]) || got.Keys[0].Certificates != want.Keys[0].Certificates {
		t.Errorf("the key reads as %+v, want %+v", got.Keys[0], want.Keys[0])
	}
	got.Keys, want.Keys = nil, nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("DevConfig().DevKey() reads as\n%+v\nConfigHead and the key as\n%+v\n%s", got, want, built)
	}
	a := NewConfig().Table("server", "socket", "a").Table("keys.k", "backend", "pem")
	a.Append(NewConfig().Table("audit", "file", "f").Table("server", "http", "")).Append(nil)
	if s := a.String(); s != "[server]\nsocket = \"a\"\nhttp = \"\"\n\n[keys.k]\nbackend = \"pem\"\n\n[audit]\nfile = \"f\"\n" {
		t.Errorf("Append: %q", s)
	}
	if c := NewConfig().Comment("one\n\ntwo").Table("server", "socket", "s").String(); c != "# one\n#\n# two\n\n[server]\nsocket = \"s\"\n" {
		t.Errorf("a comment: %q", c)
	}
}

func filepathEndsWith(p, suffix string) bool {
	return len(p) >= len(suffix) && p[len(p)-len(suffix):] == suffix
}
