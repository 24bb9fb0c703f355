package testenv

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/BurntSushi/toml"
)

// Config builds a provenanced configuration for a test: tables and their keys in the
// order given (the order of [keys.*] and [clients.*] means something to the daemon), each
// value encoded by the TOML library the daemon reads it with, so that no test quotes a
// path or a list by hand.
//
//	cfg := testenv.NewConfig().
//		Table("server", "socket", "p.sock").
//		Table("keys.signing", "backend", "pem", "private_key", files.PrivateKey)
//	path := cfg.Write(t, dir)
type Config struct {
	tables []*configTable
}

type configTable struct {
	name string
	keys []string
	vals map[string]any
}

// NewConfig is an empty configuration.
func NewConfig() *Config { return &Config{} }

// Table sets keys of the table name ("server", "keys.signing", "clients.billing"), given
// as key, value pairs; the table is added at the end the first time it is named. A nil
// value removes the key.
func (c *Config) Table(name string, kv ...any) *Config {
	if len(kv)%2 != 0 {
		panic("testenv.Config.Table: keys and values come in pairs")
	}
	t := c.table(name)
	for i := 0; i < len(kv); i += 2 {
		k := kv[i].(string)
		if kv[i+1] == nil {
			t.remove(k)
			continue
		}
		if _, ok := t.vals[k]; !ok {
			t.keys = append(t.keys, k)
		}
		t.vals[k] = kv[i+1]
	}
	return c
}

// Without removes the table name.
func (c *Config) Without(name string) *Config {
	for i, t := range c.tables {
		if t.name == name {
			c.tables = append(c.tables[:i], c.tables[i+1:]...)
			break
		}
	}
	return c
}

func (c *Config) table(name string) *configTable {
	for _, t := range c.tables {
		if t.name == name {
			return t
		}
	}
	t := &configTable{name: name, vals: map[string]any{}}
	c.tables = append(c.tables, t)
	return t
}

func (t *configTable) remove(k string) {
	delete(t.vals, k)
	for i, have := range t.keys {
		if have == k {
			t.keys = append(t.keys[:i], t.keys[i+1:]...)
			return
		}
	}
}

// String is the configuration as TOML.
func (c *Config) String() string {
	var b strings.Builder
	for i, t := range c.tables {
		if i > 0 {
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, "[%s]\n", t.name)
		for _, k := range t.keys {
			var v bytes.Buffer
			if err := toml.NewEncoder(&v).Encode(map[string]any{k: t.vals[k]}); err != nil {
				panic(fmt.Sprintf("testenv.Config: %s.%s: %v", t.name, k, err))
			}
			b.Write(v.Bytes())
		}
	}
	return b.String()
}

// Write writes the configuration to provenanced.toml in dir (the config's relative
// paths are relative to dir) and returns its path.
func (c *Config) Write(t TB, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "provenanced.toml")
	if err := os.WriteFile(path, []byte(c.String()), 0o644); err != nil {
		t.Fatalf("writing the config: %v", err)
	}
	return path
}
