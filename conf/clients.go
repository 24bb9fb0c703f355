package conf

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"math"
	"net/url"
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
	OpDebug   = "debug"   // /debug/pprof/ (server.pprof)
)

// Operations lists every operation a policy may name.
var Operations = []string{OpSign, OpRecords, OpCSR, OpDebug}

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
	// Rate is signatures per second (a batch of N costs N), 0 for no limit.
	Rate float64 `toml:"rate"`

	// TokenDigest is the SHA-256 of the client's bearer token, from token_file or
	// token_sha256; nil when the client has no token. It never leaves the process.
	TokenDigest []byte `toml:"-"`
}

// AllKeys reports whether the client may use every key.
func (c *Client) AllKeys() bool { return slices.Contains(c.Keys, "*") }

// Allows reports whether the client may do op with key ("" for an operation that names
// no key, such as debug).
func (c *Client) Allows(op, key string) bool {
	return slices.Contains(c.Allow, op) && (key == "" || c.AllKeys() || slices.Contains(c.Keys, key))
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
	owners := map[owner]string{}
	for i, cl := range c.Clients {
		if cl.Name == "" || strings.ContainsFunc(cl.Name, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			return c.Errorf("clients."+cl.Name, "a client's name must be printable")
		}
		if err := c.readToken(cl, c.Clients[:i]); err != nil {
			return err
		}
		if len(cl.UIDs) == 0 && len(cl.GIDs) == 0 && cl.TokenDigest == nil && cl.TLSURI == "" && cl.TLSDNS == "" && cl.TLSCN == "" {
			return c.Errorf("clients."+cl.Name, "no identity; set uids, gids, token_file, token_sha256, tls_uri, tls_dns or tls_cn")
		}
		if err := c.claimIdentities(cl, owners); err != nil {
			return err
		}
		if err := c.checkPolicy(cl); err != nil {
			return err
		}
	}
	return nil
}

// owner is an identity a client claims: its kind (the field) and value.
type owner struct{ kind, value string }

// readToken sets cl's TokenDigest from token_file or token_sha256, and refuses one that
// a client before it (earlier) has.
func (c *Config) readToken(cl *Client, earlier []*Client) error {
	key := func(field string) string { return "clients." + cl.Name + "." + field }
	if cl.TokenFile != "" && cl.TokenSHA256 != "" {
		return c.Errorf(key("token_file"), "set token_file or token_sha256, not both")
	}
	if cl.TokenFile != "" {
		d, err := readTokenFile(cl.TokenFile)
		if err != nil {
			return &Error{File: c.File, Key: key("token_file"), Msg: err.Error()}
		}
		cl.TokenDigest = d
	}
	if cl.TokenSHA256 != "" {
		d, err := hex.DecodeString(cl.TokenSHA256)
		if err != nil || len(d) != sha256.Size {
			return c.Errorf(key("token_sha256"), "must be 64 hexadecimal characters (the SHA-256 of the token, as `sha256sum` prints it)")
		}
		cl.TokenDigest = d
	}
	if cl.TokenDigest == nil {
		return nil
	}
	for _, prev := range earlier {
		// Constant time like every comparison of a token's digest, so that no search for
		// one ever needs to be told apart.
		if prev.TokenDigest != nil && subtle.ConstantTimeCompare(prev.TokenDigest, cl.TokenDigest) == 1 {
			return c.Errorf(key("token"), "the same identity as [clients.%s]; a request must name one client only", prev.Name)
		}
	}
	return nil
}

// claimIdentities records cl's uids, gids and certificate names in owners, refusing one
// that another client has claimed. Certificate names are claimed as a certificate's are
// matched (NormalURI, NormalDNS): two clients whose names differ only where a
// certificate's cannot would both match it.
func (c *Config) claimIdentities(cl *Client, owners map[owner]string) error {
	key := func(field string) string { return "clients." + cl.Name + "." + field }
	claim := func(field, value string) error {
		o := owner{field, value}
		if prev, ok := owners[o]; ok {
			return c.Errorf(key(field), "the same identity as [clients.%s]; a request must name one client only", prev)
		}
		owners[o] = cl.Name
		return nil
	}
	for _, f := range []struct {
		field string
		ids   []int
	}{{"uids", cl.UIDs}, {"gids", cl.GIDs}} {
		for _, id := range f.ids {
			if id < 0 || id > math.MaxUint32-1 {
				return c.Errorf(key(f.field), "%d is not a valid id", id)
			}
			if err := claim(f.field, fmt.Sprint(id)); err != nil {
				return err
			}
		}
	}
	names := map[string]string{"tls_dns": NormalDNS(cl.TLSDNS), "tls_cn": cl.TLSCN}
	if cl.TLSURI != "" {
		u, ok := NormalURI(cl.TLSURI)
		if !ok {
			return c.Errorf(key("tls_uri"), "%q is not an absolute URI such as \"spiffe://example.org/billing\"", cl.TLSURI)
		}
		names["tls_uri"] = u
	}
	for _, field := range []string{"tls_uri", "tls_dns", "tls_cn"} {
		if v := names[field]; v != "" {
			if err := claim(field, v); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkPolicy checks what cl may do: configured keys, known operations, a sane rate.
func (c *Config) checkPolicy(cl *Client) error {
	key := func(field string) string { return "clients." + cl.Name + "." + field }
	if len(cl.Keys) == 0 && !onlyDebug(cl.Allow) {
		return c.Errorf(key("keys"), "missing; name the keys this client may use, or [\"*\"] for every key")
	}
	for _, k := range cl.Keys {
		if k != "*" && c.KeyByName(k) == nil {
			return c.Errorf(key("keys"), "no key named %q; keys: %s (or \"*\" for every key)", k, strings.Join(c.KeyNames(), ", "))
		}
	}
	if len(cl.Allow) == 0 {
		return c.Errorf(key("allow"), "missing; list the operations this client may use: %s", strings.Join(Operations, ", "))
	}
	for _, op := range cl.Allow {
		if !slices.Contains(Operations, op) {
			return c.Errorf(key("allow"), "unknown operation %q; operations: %s", op, strings.Join(Operations, ", "))
		}
	}
	if cl.Rate < 0 || math.IsNaN(cl.Rate) || math.IsInf(cl.Rate, 0) {
		return c.Errorf(key("rate"), "must be a positive number of signatures per second (0 or absent: no limit)")
	}
	return nil
}

// onlyDebug reports a policy that allows debug alone, which names no key.
func onlyDebug(allow []string) bool {
	return len(allow) > 0 && !slices.ContainsFunc(allow, func(op string) bool { return op != OpDebug })
}

// NormalURI is a URI as a certificate's URI SAN is matched: its scheme and host in lower
// case (RFC 3986 says they are case-insensitive), the rest as it is. ok is false for a
// string that is not an absolute URI.
func NormalURI(s string) (string, bool) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" {
		return "", false
	}
	u.Scheme = strings.ToLower(u.Scheme)
	u.Host = strings.ToLower(u.Host)
	return u.String(), true
}

// NormalDNS is a DNS name as a certificate's DNS SAN is matched: in lower case, without a
// final dot.
func NormalDNS(s string) string { return strings.TrimSuffix(strings.ToLower(s), ".") }

// MinTokenChars and MinTokenDistinct are what a token file must hold at least: 22 base64
// characters carry 132 bits, and 16 different bytes keep out a token typed by hand
// ("aaaa...", "password1234...") that is long but guessable.
const (
	MinTokenChars    = 22
	MinTokenDistinct = 16
)

// readTokenFile reads a bearer token and returns its SHA-256. The file must be private to
// its owner: a token others can read (or write) is a token others can use. A token must
// be strong enough that guessing it is hopeless at any rate the daemon answers.
func readTokenFile(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read the token file: %v", unwrapPathError(err))
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%s has mode %04o, so other users can read or change the token; run: chmod 600 %s", path, uint32(perm), path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read the token file: %v", unwrapPathError(err))
	}
	tok := strings.TrimSpace(string(data))
	if tok == "" {
		return nil, fmt.Errorf("%s is empty; make a token with: provenanced token new -out %s", path, path)
	}
	if strings.ContainsAny(tok, " \t\r\n") {
		return nil, fmt.Errorf("%s holds more than one line or word; a token file holds the token only", path)
	}
	if n, distinct := len(tok), distinctBytes(tok); !TokenStrong(tok) {
		return nil, fmt.Errorf("%s holds a weak token (%d characters, %d different); a token needs at least %d base64 characters (128 bits), %d of them different; make one with: provenanced token new -out %s",
			path, n, distinct, MinTokenChars, MinTokenDistinct, path)
	}
	sum := sha256.Sum256([]byte(tok))
	return sum[:], nil
}

// TokenStrong reports whether a token is as strong as a token file's must be: at least
// MinTokenChars characters, MinTokenDistinct of them different.
func TokenStrong(tok string) bool {
	return len(tok) >= MinTokenChars && distinctBytes(tok) >= MinTokenDistinct
}

func distinctBytes(s string) int {
	var seen [256]bool
	n := 0
	for i := 0; i < len(s); i++ {
		if !seen[s[i]] {
			seen[s[i]] = true
			n++
		}
	}
	return n
}
