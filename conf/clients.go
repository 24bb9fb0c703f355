package conf

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"os"
	"reflect"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"
)

// Operations a client may be allowed (the contract's names).
const (
	OpSign    = "sign"    // POST /v1/keys/{name}/sign
	OpRecords = "records" // POST /v1/records, /api/v1/sign/edp, /api/v1/sign/cap
	OpCSR     = "csr"     // POST /v1/keys/{name}/csr
)

// Operations lists every operation a policy may name.
var Operations = []string{OpSign, OpRecords, OpCSR}

// Client is one [clients.NAME] table: who the client is (any of its identities) and what
// it may do.
type Client struct {
	Name string `toml:"-"`
	UIDs []int  `toml:"uids"`
	GIDs []int  `toml:"gids"`
	// TokenFile is read at start (and on reload) into TokenDigest; the file must not be
	// readable by group or others.
	TokenFile   string   `toml:"token_file"`
	TokenSHA256 string   `toml:"token_sha256"`
	TLSURI      string   `toml:"tls_uri"`
	TLSDNS      string   `toml:"tls_dns"`
	TLSCN       string   `toml:"tls_cn"`
	Keys        []string `toml:"keys"`
	Allow       []string `toml:"allow"`
	// Rate is requests per second, 0 for no limit.
	Rate float64 `toml:"rate"`

	// TokenDigest is the SHA-256 of the client's bearer token, from token_file or
	// token_sha256; nil when the client has no token. It never leaves the process.
	TokenDigest []byte `toml:"-"`
}

// AllKeys reports whether the client may use every key.
func (c *Client) AllKeys() bool { return slices.Contains(c.Keys, "*") }

// Allows reports whether the client may do op with key.
func (c *Client) Allows(op, key string) bool {
	return slices.Contains(c.Allow, op) && (c.AllKeys() || slices.Contains(c.Keys, key))
}

// clientOrder lists the [clients.NAME] tables in file order.
func clientOrder(md toml.MetaData) []string {
	var names []string
	seen := map[string]bool{}
	for _, k := range md.Keys() {
		if len(k) == 2 && k[0] == "clients" && !seen[k[1]] {
			seen[k[1]] = true
			names = append(names, k[1])
		}
	}
	return names
}

// parseClients decodes the [clients.NAME] tables strictly, in file order.
func (c *Config) parseClients(md toml.MetaData, raw map[string]toml.Primitive) error {
	accepted := strings.Join(tomlFields(reflect.TypeOf(Client{})), ", ")
	for _, name := range clientOrder(md) {
		cl := &Client{Name: name}
		if err := md.PrimitiveDecode(raw[name], cl); err != nil {
			return &Error{File: c.File, Key: "clients." + name, Msg: "cannot decode", Err: err}
		}
		for _, u := range md.Undecoded() {
			if len(u) >= 3 && u[0] == "clients" && u[1] == name {
				return c.Errorf(u.String(), "unknown key; [clients.%s] accepts %s", name, accepted)
			}
		}
		if cl.TokenFile != "" {
			cl.TokenFile = c.Path(cl.TokenFile)
		}
		c.Clients = append(c.Clients, cl)
	}
	return nil
}

// CheckClients validates the clients: each has an identity, names only configured keys
// and known operations, and no two clients share an identity (a request must never be
// able to pass for either of two clients). Token files are read here, so a token file
// that others can read stops the daemon at start.
func (c *Config) CheckClients() error {
	owners := identityOwners{}
	for _, cl := range c.Clients {
		if err := c.checkClient(cl, owners); err != nil {
			return err
		}
	}
	return nil
}

// checkClient checks one client and claims its identities in owners.
func (c *Config) checkClient(cl *Client, owners identityOwners) error {
	if cl.Name == "" || strings.ContainsFunc(cl.Name, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return c.Errorf("clients."+cl.Name, "a client's name must be printable")
	}
	if err := c.readClientToken(cl); err != nil {
		return err
	}
	if len(cl.UIDs) == 0 && len(cl.GIDs) == 0 && cl.TokenDigest == nil && cl.TLSURI == "" && cl.TLSDNS == "" && cl.TLSCN == "" {
		return c.Errorf("clients."+cl.Name, "no identity; set uids, gids, token_file, token_sha256, tls_uri, tls_dns or tls_cn")
	}
	if err := c.claimIdentities(cl, owners); err != nil {
		return err
	}
	if len(cl.Keys) == 0 {
		return c.Errorf(cl.configKey("keys"), "missing; name the keys this client may use, or [\"*\"] for every key")
	}
	for _, k := range cl.Keys {
		if k != "*" && c.KeyByName(k) == nil {
			return c.Errorf(cl.configKey("keys"), "no key named %q; keys: %s (or \"*\" for every key)", k, strings.Join(c.KeyNames(), ", "))
		}
	}
	if len(cl.Allow) == 0 {
		return c.Errorf(cl.configKey("allow"), "missing; list the operations this client may use: %s", strings.Join(Operations, ", "))
	}
	for _, op := range cl.Allow {
		if !slices.Contains(Operations, op) {
			return c.Errorf(cl.configKey("allow"), "unknown operation %q; operations: %s", op, strings.Join(Operations, ", "))
		}
	}
	if cl.Rate < 0 || math.IsNaN(cl.Rate) || math.IsInf(cl.Rate, 0) {
		return c.Errorf(cl.configKey("rate"), "must be a positive number of requests per second (0 or absent: no limit)")
	}
	return nil
}

// configKey is the config key of one of the client's fields, as errors name it.
func (cl *Client) configKey(field string) string { return "clients." + cl.Name + "." + field }

// readClientToken sets the client's TokenDigest from token_file or token_sha256.
func (c *Config) readClientToken(cl *Client) error {
	if cl.TokenFile != "" && cl.TokenSHA256 != "" {
		return c.Errorf(cl.configKey("token_file"), "set token_file or token_sha256, not both")
	}
	if cl.TokenFile != "" {
		d, err := readTokenFile(cl.TokenFile)
		if err != nil {
			return &Error{File: c.File, Key: cl.configKey("token_file"), Msg: err.Error()}
		}
		cl.TokenDigest = d
	}
	if cl.TokenSHA256 != "" {
		d, err := hex.DecodeString(cl.TokenSHA256)
		if err != nil || len(d) != sha256.Size {
			return c.Errorf(cl.configKey("token_sha256"), "must be 64 hexadecimal characters (the SHA-256 of the token, as `sha256sum` prints it)")
		}
		cl.TokenDigest = d
	}
	return nil
}

// identityOwners maps each identity claimed so far to the client that claimed it.
type identityOwners map[identity]string

// identity is one way a request can name a client: kind is "token", "uids", "gids",
// "tls_uri", "tls_dns" or "tls_cn".
type identity struct{ kind, value string }

// claimIdentities claims each of the client's identities, refusing one that an earlier
// client has.
func (c *Config) claimIdentities(cl *Client, owners identityOwners) error {
	claim := func(field, kind, value string) error {
		o := identity{kind, value}
		if prev, ok := owners[o]; ok {
			return c.Errorf(cl.configKey(field), "the same identity as [clients.%s]; a request must name one client only", prev)
		}
		owners[o] = cl.Name
		return nil
	}
	if cl.TokenDigest != nil {
		if err := claim("token", "token", string(cl.TokenDigest)); err != nil {
			return err
		}
	}
	for _, f := range []struct {
		field string
		ids   []int
	}{{"uids", cl.UIDs}, {"gids", cl.GIDs}} {
		for _, id := range f.ids {
			if id < 0 || id > math.MaxUint32-1 {
				return c.Errorf(cl.configKey(f.field), "%d is not a valid id", id)
			}
			if err := claim(f.field, f.field, fmt.Sprint(id)); err != nil {
				return err
			}
		}
	}
	for _, f := range []struct{ field, value string }{{"tls_uri", cl.TLSURI}, {"tls_dns", cl.TLSDNS}, {"tls_cn", cl.TLSCN}} {
		if f.value == "" {
			continue
		}
		if err := claim(f.field, f.field, f.value); err != nil {
			return err
		}
	}
	return nil
}

// readTokenFile reads a bearer token and returns its SHA-256. The file must be private to
// its owner: a token others can read is a token others can use.
func readTokenFile(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read the token file: %v", unwrapPathError(err))
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%s has mode %04o, so other users can read the token; run: chmod 600 %s", path, uint32(perm), path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read the token file: %v", unwrapPathError(err))
	}
	tok := strings.TrimSpace(string(data))
	if tok == "" {
		return nil, fmt.Errorf("%s is empty; write the token in it (for example: openssl rand -hex 32 > %s)", path, path)
	}
	if strings.ContainsAny(tok, " \t\r\n") {
		return nil, fmt.Errorf("%s holds more than one line or word; a token file holds the token only", path)
	}
	sum := sha256.Sum256([]byte(tok))
	return sum[:], nil
}
