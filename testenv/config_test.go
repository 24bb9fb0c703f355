package testenv

import (
	"testing"

	"github.com/ib1/provenanced/conf"
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

func filepathEndsWith(p, suffix string) bool {
	return len(p) >= len(suffix) && p[len(p)-len(suffix):] == suffix
}
