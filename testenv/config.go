package testenv

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/ib1/provenanced/conf"
	"github.com/ib1/provenanced/internal/devsetup"
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
	comment string
	tables  []*configTable
}

type configTable struct {
	name string
	keys []string
	vals map[string]any
}

// NewConfig is an empty configuration.
func NewConfig() *Config { return &Config{} }

// DevConfig is the [server] and [provenance] tables of the config that `serve -dev` writes
// (devsetup.ConfigHead): the socket provenanced.sock beside the config (mode 0600), TCP on
// httpAddr ("" for none), the sandbox trust framework, rootCA (relative to the config's
// folder) and the key "signing", whose table the caller adds.
func DevConfig(httpAddr, rootCA string) *Config {
	return NewConfig().
		Table("server", "socket", "provenanced.sock", "socket_mode", "0600", "http", httpAddr).
		Table("provenance", "trust_framework", devsetup.SandboxTrustFramework, "scheme", devsetup.SandboxScheme,
			"root_ca", rootCA, "key", "signing")
}

// DevKey adds [keys.signing]: the PEM key and bundle that devsetup.NewDevFiles writes
// (signing-key.pem and signing-bundle.pem in the config's folder).
func (c *Config) DevKey() *Config {
	return c.PEMKey("signing", "signing-key.pem", "signing-bundle.pem")
}

// PEMKey adds [keys.NAME] with the pem backend: privateKey, and certificates when bundle
// is not "".
func (c *Config) PEMKey(name, privateKey, bundle string) *Config {
	c.Table("keys."+name, "backend", "pem", "private_key", privateKey)
	if bundle != "" {
		c.Table("keys."+name, "certificates", bundle)
	}
	return c
}

// Comment sets the comment that opens the file, one "# " line per line of text.
func (c *Config) Comment(text string) *Config {
	c.comment = text
	return c
}

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

// Append adds o's tables after c's, in o's order; a table that c has already takes o's
// keys.
func (c *Config) Append(o *Config) *Config {
	if o == nil {
		return c
	}
	for _, t := range o.tables {
		c.table(t.name)
		for _, k := range t.keys {
			c.Table(t.name, k, t.vals[k])
		}
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
	if c.comment != "" {
		for _, line := range strings.Split(c.comment, "\n") {
			b.WriteString(strings.TrimSpace("# "+line) + "\n")
		}
		b.WriteByte('\n')
	}
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
	return c.WriteFile(t, filepath.Join(dir, "provenanced.toml"))
}

// WriteFile writes the configuration to path, whole or not at all (a daemon that reloads
// it never reads half), and returns path.
func (c *Config) WriteFile(t TB, path string) string {
	t.Helper()
	if err := devsetup.WriteFileAtomic(path, []byte(c.String()), 0o644); err != nil {
		t.Fatalf("writing the config: %v", err)
	}
	return path
}

// Load writes the configuration to provenanced.toml in dir and reads it with the
// daemon's own loader, failing the test if it does not load.
func (c *Config) Load(t TB, dir string) *conf.Config {
	t.Helper()
	cfg, err := conf.Load(c.Write(t, dir))
	if err != nil {
		t.Fatalf("%v\n%s", err, c)
	}
	return cfg
}
