// Package conf reads provenanced's configuration: the TOML file of the interface contract
// and, for a drop-in replacement of the original provenance service, its environment.
//
// Every error names the file, the key at fault and what would be accepted, because a
// signing daemon that starts with a half-understood configuration is worse than one that
// does not start.
package conf

import (
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Defaults of the [server] and [provenance] sections.
const (
	// DefaultHTTP is where the original service's environment mode listens, as the
	// original did. A config file gets a TCP listener only when it names one.
	DefaultHTTP            = "127.0.0.1:8080"
	DefaultSocketMode      = 0o660
	DefaultMaxRequestBytes = 1 << 20
	DefaultShutdownTimeout = 15 * time.Second
	DefaultSignTimeout     = 10 * time.Second
	DefaultMaxBatch        = 1000
	DefaultTrustFramework  = "https://registry.core.sandbox.trust.ib1.org/trust-framework"
	DefaultScheme          = "https://registry.core.sandbox.trust.ib1.org/scheme/perseus"
)

// Defaults of the abuse limits of [server]; docs/security.md (Limits) states the worst
// case each leaves.
const (
	DefaultMaxConnections        = 512
	DefaultMaxConnectionsPerPeer = 64
	DefaultMetricsMaxConnections = 16
	DefaultIdleTimeout           = 30 * time.Second
	DefaultRefusalRate           = 5
	DefaultRefusalBurst          = 20
)

// Config is the whole configuration of a daemon.
type Config struct {
	// File is the absolute path of the config file, or a description such as
	// "environment" when the configuration did not come from a file. Errors name it.
	File       string
	Server     Server
	Provenance Provenance
	// Keys in the order the file lists them.
	Keys []*Key
	// Clients in the order the file lists them (clients.go); none = no access control.
	Clients []*Client
	Audit   Audit
}

// Server is the [server] section.
type Server struct {
	Socket     string   `toml:"socket"`      // "" = no Unix socket
	SocketMode FileMode `toml:"socket_mode"` // permissions of the socket file
	HTTP       string   `toml:"http"`        // "" or absent = no TCP listener
	// TLSCert and TLSKey make the TCP listener speak HTTPS; with TLSClientCA it requires
	// client certificates that chain to it.
	TLSCert     string `toml:"tls_cert"`
	TLSKey      string `toml:"tls_key"`
	TLSClientCA string `toml:"tls_client_ca"`
	// AllowedHosts are the Host names, besides loopback ones, that a TCP listener on a
	// loopback address answers.
	AllowedHosts    []string `toml:"allowed_hosts"`
	MaxRequestBytes int64    `toml:"max_request_bytes"`
	ShutdownTimeout Duration `toml:"shutdown_timeout"`
	// SignTimeout bounds each request's wait for a backend; a backend that does not
	// answer in time gives 503 rather than a hung client.
	SignTimeout Duration `toml:"sign_timeout"`
	MaxBatch    int      `toml:"max_batch"`
	// Pprof serves /debug/pprof/ on the Unix socket only, never on TCP.
	Pprof bool `toml:"pprof"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `toml:"log_level"`
	// MetricsHTTP is a TCP listener that serves only /metrics, /healthz and /readyz, for
	// a scraper or a probe that must not reach the signing routes; "" = none.
	MetricsHTTP string `toml:"metrics_http"`

	// MaxConnections bounds the open connections of each listener (the socket and http
	// each), MaxConnectionsPerPeer those of one peer (a uid on the socket, an address on
	// TCP) on one listener, MetricsMaxConnections those of metrics_http; at a bound, idle
	// connections are closed to make room. IdleTimeout closes a connection that waits that
	// long for its next request.
	MaxConnections        int      `toml:"max_connections"`
	MaxConnectionsPerPeer int      `toml:"max_connections_per_peer"`
	MetricsMaxConnections int      `toml:"metrics_max_connections"`
	IdleTimeout           Duration `toml:"idle_timeout"`
	// RefusalRate and RefusalBurst are the token bucket of refused requests per peer (per
	// client, for a recognised one): within it each refusal has its audit line; past it a
	// stranger gets 429 and the refusals are counted in one line per interval.
	RefusalRate  float64 `toml:"refusal_rate"`
	RefusalBurst int     `toml:"refusal_burst"`
	// VerifyConcurrency bounds the record verifications that the routes open to everyone
	// run at once; 0 = GOMAXPROCS-1, at least one (a core is left to signatures).
	VerifyConcurrency int `toml:"verify_concurrency"`
}

// Provenance is the [provenance] section.
type Provenance struct {
	TrustFramework string `toml:"trust_framework"`
	Scheme         string `toml:"scheme"`
	RootCA         string `toml:"root_ca"` // a path or s3://bucket/key
	Key            string `toml:"key"`     // the [keys.NAME] that signs records
	// Bounds on received records, so that a hostile record costs bounded work.
	MaxDepth       int   `toml:"max_depth"`
	MaxSteps       int   `toml:"max_steps"`
	MaxRecordBytes int64 `toml:"max_record_bytes"`
	MaxStringBytes int64 `toml:"max_string_bytes"`
}

// Defaults returns a Config with every default filled in and no keys.
func Defaults() *Config {
	return &Config{
		Server: Server{
			SocketMode:      DefaultSocketMode,
			MaxRequestBytes: DefaultMaxRequestBytes,
			ShutdownTimeout: Duration(DefaultShutdownTimeout),
			SignTimeout:     Duration(DefaultSignTimeout),
			MaxBatch:        DefaultMaxBatch,
			LogLevel:        "info",

			MaxConnections:        DefaultMaxConnections,
			MaxConnectionsPerPeer: DefaultMaxConnectionsPerPeer,
			MetricsMaxConnections: DefaultMetricsMaxConnections,
			IdleTimeout:           Duration(DefaultIdleTimeout),
			RefusalRate:           DefaultRefusalRate,
			RefusalBurst:          DefaultRefusalBurst,
		},
		Provenance: Provenance{
			TrustFramework: DefaultTrustFramework,
			Scheme:         DefaultScheme,
		},
	}
}

// Error is a configuration error: File and Key say where, the message says what is wrong
// and what would be accepted.
type Error struct {
	File string // the config file, or "environment"
	Key  string // e.g. "server.socket_mode" or "keys.signing.private_key"; may be empty
	Msg  string
	Err  error // the underlying cause, if any
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Key != "" {
		b.WriteString(": ")
		b.WriteString(e.Key)
	}
	b.WriteString(": ")
	b.WriteString(e.Msg)
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns a configuration error about key of this config.
func (c *Config) Errorf(key, format string, args ...any) error {
	return &Error{File: c.File, Key: key, Msg: fmt.Sprintf(format, args...)}
}

// Load reads and checks a TOML config file. Relative paths in it are made relative to the
// file's folder. Keys are parsed as far as their common fields; the backend-specific fields
// are decoded by the backend (Key.Decode), which rejects the ones it does not know.
//
// A file that other users may write is refused: whoever can edit it decides who may sign.
func Load(path string) (*Config, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, &Error{File: path, Msg: "cannot resolve the path", Err: err}
	}
	f, err := os.Open(abs)
	if err != nil {
		return nil, &Error{File: abs, Msg: "cannot read the config file", Err: unwrapPathError(err)}
	}
	defer f.Close()
	// The mode of the file read, not of whatever the path names a moment later.
	st, err := f.Stat()
	if err != nil {
		return nil, &Error{File: abs, Msg: "cannot read the config file", Err: unwrapPathError(err)}
	}
	if perm := st.Mode().Perm(); perm&0o002 != 0 {
		return nil, &Error{File: abs, Msg: fmt.Sprintf("the file has mode %04o, so any user can change who may sign; run: chmod o-w %s", uint32(perm), abs)}
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, &Error{File: abs, Msg: "cannot read the config file", Err: unwrapPathError(err)}
	}
	return Parse(abs, data)
}

// Parse checks a config given as TOML text; file names it in errors and is the base of
// relative paths.
func Parse(file string, data []byte) (*Config, error) {
	cfg := Defaults()
	cfg.File = file
	raw := fileTables{Server: &cfg.Server, Provenance: &cfg.Provenance, Audit: &cfg.Audit}
	syntax, md, err := decodeTOML(file, data, &raw)
	if err != nil {
		return nil, err
	}
	for _, k := range md.Undecoded() {
		if len(k) >= 2 && k[0] == "keys" {
			continue // the backend decides, in Key.Decode
		}
		if len(k) >= 3 && k[0] == "clients" {
			continue // parseClients names the client
		}
		return nil, cfg.unknownKey(k)
	}
	if err := cfg.parseKeys(md, raw.Keys, syntax); err != nil {
		return nil, err
	}
	if err := cfg.parseClients(md, raw.Clients); err != nil {
		return nil, err
	}
	cfg.resolvePaths()
	cfg.Audit.resolvePaths(cfg)
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	if err := cfg.CheckClients(); err != nil {
		return nil, err
	}
	if err := cfg.checkAudit(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// fileTables are a config file's top-level tables: the sections decode straight into the
// Config, while keys and clients are held back for parseKeys and parseClients.
type fileTables struct {
	Server     *Server                   `toml:"server"`
	Provenance *Provenance               `toml:"provenance"`
	Keys       map[string]toml.Primitive `toml:"keys"`
	Clients    map[string]toml.Primitive `toml:"clients"`
	Audit      *Audit                    `toml:"audit"`
}

// decodeTOML decodes data into raw. Syntax is checked first, alone, so that a value the
// TOML grammar accepts but a key does not (a bad duration) can be reported against its
// key. The syntax check's untyped tree is returned too: SameKey compares keys' tables in it.
func decodeTOML(file string, data []byte, raw *fileTables) (map[string]any, toml.MetaData, error) {
	var syntax map[string]any
	if _, err := toml.Decode(string(data), &syntax); err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, toml.MetaData{}, &Error{File: file, Msg: fmt.Sprintf("not valid TOML: %s (line %d)", pe.Message, pe.Position.Line)}
		}
		return nil, toml.MetaData{}, &Error{File: file, Msg: "not valid TOML", Err: err}
	}
	md, err := toml.Decode(string(data), raw)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) && pe.LastKey != "" {
			return nil, toml.MetaData{}, &Error{File: file, Key: pe.LastKey, Msg: fmt.Sprintf("%s (line %d)", pe.Message, pe.Position.Line)}
		}
		return nil, toml.MetaData{}, &Error{File: file, Msg: "cannot decode", Err: err}
	}
	return syntax, md, nil
}

// parseKeys reads the [keys.NAME] tables in file order, as far as their common fields;
// the backend decodes the rest (Key.Decode).
func (c *Config) parseKeys(md toml.MetaData, prims map[string]toml.Primitive, syntax map[string]any) error {
	dir := filepath.Dir(c.File)
	for _, name := range keyOrder(md) {
		if !ValidKeyName(name) {
			return &Error{File: c.File, Key: "keys." + strconv.Quote(name), Msg: KeyNameRule}
		}
		k := &Key{Name: name, File: c.File, Dir: dir, fromTOML: true, md: md, prim: prims[name]}
		if tables, ok := syntax["keys"].(map[string]any); ok {
			k.table, _ = tables[name].(map[string]any)
		}
		var common struct {
			Backend      string `toml:"backend"`
			Certificates string `toml:"certificates"`
			URI          string `toml:"uri"`
		}
		if err := md.PrimitiveDecode(k.prim, &common); err != nil {
			return &Error{File: c.File, Key: "keys." + name, Msg: "cannot decode", Err: err}
		}
		k.Backend = common.Backend
		k.URI = common.URI
		if k.Backend == "" && k.URI != "" {
			// A URI names its backend by its scheme: "pkcs11:token=...".
			if i := strings.IndexByte(k.URI, ':'); i > 0 {
				k.Backend = k.URI[:i]
			}
		}
		if k.Backend == "" {
			return &Error{File: c.File, Key: "keys." + name + ".backend", Msg: "missing; set backend = \"pem\", \"pkcs11\" or \"awskms\""}
		}
		k.Certificates = c.ResolveSource(common.Certificates)
		c.Keys = append(c.Keys, k)
	}
	return nil
}

// keyOrder lists the [keys.NAME] tables in the order the file has them, so that listings
// and errors follow the file.
func keyOrder(md toml.MetaData) []string {
	var names []string
	seen := map[string]bool{}
	for _, k := range md.Keys() {
		if len(k) == 2 && k[0] == "keys" && !seen[k[1]] {
			seen[k[1]] = true
			names = append(names, k[1])
		}
	}
	return names
}

func (c *Config) unknownKey(k toml.Key) error {
	section := k[0]
	var accepted []string
	switch section {
	case "server":
		accepted = tomlFields(reflect.TypeOf(Server{}))
	case "provenance":
		accepted = tomlFields(reflect.TypeOf(Provenance{}))
	case "audit":
		accepted = tomlFields(reflect.TypeOf(Audit{}))
	case "clients":
		return c.Errorf(k.String(), "clients are tables: [clients.NAME]")
	default:
		return c.Errorf(k.String(), "unknown section; accepted: [server], [provenance], [keys.NAME], [clients.NAME], [audit]")
	}
	return c.Errorf(k.String(), "unknown key; [%s] accepts %s", section, strings.Join(accepted, ", "))
}

func (c *Config) resolvePaths() {
	if c.Server.Socket != "" {
		c.Server.Socket = c.Path(c.Server.Socket)
	}
	for _, p := range []*string{&c.Server.TLSCert, &c.Server.TLSKey, &c.Server.TLSClientCA} {
		if *p != "" {
			*p = c.Path(*p)
		}
	}
	c.Provenance.RootCA = c.ResolveSource(c.Provenance.RootCA)
}

// Path resolves p relative to the config file's folder.
func (c *Config) Path(p string) string {
	if p == "" || filepath.IsAbs(p) || c.File == "" || !filepath.IsAbs(c.File) {
		return p
	}
	return filepath.Join(filepath.Dir(c.File), p)
}

// ResolveSource resolves a certificate source: s3:// URLs stay as they are, paths are
// made relative to the config file.
func (c *Config) ResolveSource(s string) string {
	if s == "" || strings.HasPrefix(s, "s3://") {
		return s
	}
	return c.Path(s)
}

// Check validates the values that do not depend on a backend.
func (c *Config) Check() error {
	s := &c.Server
	if s.SocketMode&^0o777 != 0 {
		return c.Errorf("server.socket_mode", "%#o has bits beyond 0777", uint32(s.SocketMode))
	}
	if s.HTTP != "" {
		if _, _, err := net.SplitHostPort(s.HTTP); err != nil {
			return c.Errorf("server.http", "%q is not host:port (for example \"127.0.0.1:8080\"; \"\" for no TCP listener)", s.HTTP)
		}
	}
	if s.MetricsHTTP != "" {
		if _, _, err := net.SplitHostPort(s.MetricsHTTP); err != nil {
			return c.Errorf("server.metrics_http", "%q is not host:port (for example \"127.0.0.1:9090\"; \"\" or absent for none)", s.MetricsHTTP)
		}
	}
	if (s.TLSCert == "") != (s.TLSKey == "") {
		return c.Errorf("server.tls_cert", "tls_cert and tls_key go together: set both, or neither")
	}
	if s.TLSClientCA != "" && s.TLSCert == "" {
		return c.Errorf("server.tls_client_ca", "needs tls_cert and tls_key: client certificates are asked for only over TLS")
	}
	for _, h := range s.AllowedHosts {
		if h == "" || strings.ContainsAny(h, " /:@[]") {
			return c.Errorf("server.allowed_hosts", "%q is not a host name (give names without port, such as \"signer.internal\")", h)
		}
	}
	if s.MaxRequestBytes <= 0 {
		return c.Errorf("server.max_request_bytes", "must be a positive number of bytes, got %d", s.MaxRequestBytes)
	}
	if s.ShutdownTimeout <= 0 {
		return c.Errorf("server.shutdown_timeout", "must be a positive duration such as \"15s\"")
	}
	if s.SignTimeout <= 0 {
		return c.Errorf("server.sign_timeout", "must be a positive duration such as \"10s\"")
	}
	if s.MaxBatch <= 0 {
		return c.Errorf("server.max_batch", "must be a positive number, got %d", s.MaxBatch)
	}
	if err := c.checkLimits(); err != nil {
		return err
	}
	switch s.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return c.Errorf("server.log_level", "%q is not one of debug, info, warn, error", s.LogLevel)
	}
	p := &c.Provenance
	if p.Key != "" && c.KeyByName(p.Key) == nil {
		return c.Errorf("provenance.key", "no [keys.%s] in this file; keys: %s", p.Key, strings.Join(c.KeyNames(), ", "))
	}
	for _, f := range []struct {
		key string
		n   int64
	}{{"provenance.max_depth", int64(p.MaxDepth)}, {"provenance.max_steps", int64(p.MaxSteps)}, {"provenance.max_record_bytes", p.MaxRecordBytes}, {"provenance.max_string_bytes", p.MaxStringBytes}} {
		if f.n < 0 {
			return c.Errorf(f.key, "must not be negative (0 = the default)")
		}
	}
	return nil
}

// checkLimits validates the abuse limits of [server].
func (c *Config) checkLimits() error {
	s := &c.Server
	for _, f := range []struct {
		key string
		n   int
	}{{"server.max_connections", s.MaxConnections}, {"server.max_connections_per_peer", s.MaxConnectionsPerPeer},
		{"server.metrics_max_connections", s.MetricsMaxConnections}, {"server.refusal_burst", s.RefusalBurst}} {
		if f.n <= 0 {
			return c.Errorf(f.key, "must be a positive number, got %d", f.n)
		}
	}
	if s.MaxConnectionsPerPeer > s.MaxConnections {
		return c.Errorf("server.max_connections_per_peer", "%d is more than max_connections (%d)", s.MaxConnectionsPerPeer, s.MaxConnections)
	}
	if s.IdleTimeout <= 0 {
		return c.Errorf("server.idle_timeout", "must be a positive duration such as \"30s\"")
	}
	if !(s.RefusalRate > 0) || math.IsInf(s.RefusalRate, 0) {
		return c.Errorf("server.refusal_rate", "must be a positive number of refused requests per second")
	}
	if s.VerifyConcurrency < 0 {
		return c.Errorf("server.verify_concurrency", "must not be negative (0 = one less than the cores Go uses, at least one)")
	}
	return nil
}

// KeyNameRule is the rule of a key's name, as errors state it.
const KeyNameRule = "a key's name is 1 to 64 ASCII letters, digits, '.', '_' or '-', beginning with a letter or digit"

// ValidKeyName reports whether name follows KeyNameRule. Every route that takes a key
// name checks it before any other work: a name that cannot be a key's is refused for the
// cost of a glance, and a log line, an audit line or an answer never carries more than 64
// plain characters of what a client sent (and never "*", which in a policy means every
// key).
func ValidKeyName(name string) bool {
	if len(name) == 0 || len(name) > 64 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case i > 0 && (c == '.' || c == '_' || c == '-'):
		default:
			return false
		}
	}
	return true
}

// KeyByName returns the [keys.NAME] table, or nil.
func (c *Config) KeyByName(name string) *Key {
	for _, k := range c.Keys {
		if k.Name == name {
			return k
		}
	}
	return nil
}

// KeyNames lists the configured keys' names in file order.
func (c *Config) KeyNames() []string {
	names := make([]string, len(c.Keys))
	for i, k := range c.Keys {
		names[i] = k.Name
	}
	return names
}

// SigningKey names the key that signs records: provenance.key, or the only key.
func (c *Config) SigningKey() (string, error) {
	if c.Provenance.Key != "" {
		return c.Provenance.Key, nil
	}
	switch len(c.Keys) {
	case 0:
		return "", c.Errorf("keys", "no key is configured; add a [keys.NAME] table")
	case 1:
		return c.Keys[0].Name, nil
	}
	return "", c.Errorf("provenance.key", "missing: with several keys (%s), name the one that signs records", strings.Join(c.KeyNames(), ", "))
}

// ApplyEnv applies the PROVENANCED_HTTP and PROVENANCED_SOCKET overrides ("off" turns a
// listener off). getenv is os.Getenv outside tests.
func (c *Config) ApplyEnv(getenv func(string) string) error {
	if v := getenv("PROVENANCED_HTTP"); v != "" {
		if v == "off" {
			v = ""
		}
		c.Server.HTTP = v
	}
	if v := getenv("PROVENANCED_SOCKET"); v != "" {
		if v == "off" {
			v = ""
		} else if !filepath.IsAbs(v) {
			// Relative to where the operator ran the command, as any path on a command line.
			abs, err := filepath.Abs(v)
			if err != nil {
				return &Error{File: "environment", Key: "PROVENANCED_SOCKET", Msg: "cannot resolve the path", Err: err}
			}
			v = abs
		}
		c.Server.Socket = v
	}
	if c.Server.HTTP != "" {
		if _, _, err := net.SplitHostPort(c.Server.HTTP); err != nil {
			return &Error{File: "environment", Key: "PROVENANCED_HTTP", Msg: fmt.Sprintf("%q is not host:port or \"off\"", c.Server.HTTP)}
		}
	}
	if c.Server.HTTP == "" && c.Server.Socket == "" {
		return &Error{File: c.File, Key: "server", Msg: "neither a Unix socket nor a TCP address is configured; set server.socket or server.http (or PROVENANCED_SOCKET / PROVENANCED_HTTP)"}
	}
	return nil
}

// Key is one [keys.NAME] table.
type Key struct {
	Name         string
	Backend      string
	Certificates string // a path (absolute) or an s3:// URL; "" for a key without a certificate yet
	URI          string // an RFC 7512 pkcs11: URI, when the key is given that way
	File         string // the config file, for errors
	Dir          string // the config file's folder, the base of relative paths

	// Vars names, for a key built from the original's environment, the variable each
	// field came from, so that errors name what the operator set.
	Vars map[string]string

	fromTOML bool
	table    map[string]any // the key's table as the file has it, for SameKey
	md       toml.MetaData
	prim     toml.Primitive
	opts     any // what Decode copies for keys not read from TOML
}

// NewKey describes a key that did not come from a TOML file (the original service's
// environment, tests). opts is what Decode gives the backend: either a pointer to (or
// value of) the backend's options struct, copied as it is, or a map of fields named as
// in TOML, decoded as strictly as a file.
func NewKey(name, backend, certificates, source string, opts any) *Key {
	return &Key{Name: name, Backend: backend, Certificates: certificates, File: source, opts: opts}
}

// Decode fills v, a pointer to a backend's options struct with toml tags, from the key's
// table. A field of the table that v does not have is an error that lists what the
// backend accepts. The common fields (backend, certificates, uri) are accepted by every
// backend; v should not declare them.
func (k *Key) Decode(v any) error {
	if fields, ok := k.opts.(map[string]any); ok {
		return k.decodeFields(fields, v)
	}
	if k.opts != nil {
		rv := reflect.ValueOf(v)
		ov := reflect.ValueOf(k.opts)
		if ov.Kind() == reflect.Pointer {
			ov = ov.Elem()
		}
		if rv.Kind() != reflect.Pointer || rv.Elem().Type() != ov.Type() {
			return k.Errorf("", "internal: options of type %T given for %T", k.opts, v)
		}
		rv.Elem().Set(ov)
		return nil
	}
	if !k.fromTOML {
		return nil
	}
	if err := k.md.PrimitiveDecode(k.prim, v); err != nil {
		return &Error{File: k.File, Key: "keys." + k.Name, Msg: "cannot decode", Err: err}
	}
	for _, u := range k.md.Undecoded() {
		if len(u) >= 3 && u[0] == "keys" && u[1] == k.Name {
			accepted := append([]string{"backend", "certificates"}, tomlFields(reflect.TypeOf(v).Elem())...)
			sort.Strings(accepted[2:])
			return &Error{File: k.File, Key: u.String(), Msg: fmt.Sprintf("unknown key for backend %q; it accepts %s", k.Backend, strings.Join(accepted, ", "))}
		}
	}
	return nil
}

// decodeFields decodes fields named as in TOML (a key built from the environment) with
// the same strictness as a file.
func (k *Key) decodeFields(fields map[string]any, v any) error {
	var buf strings.Builder
	if err := toml.NewEncoder(&buf).Encode(fields); err != nil {
		return k.Errorf("", "internal: %v", err)
	}
	md, err := toml.Decode(buf.String(), v)
	if err != nil {
		return k.Errorf("", "%v", err)
	}
	if u := md.Undecoded(); len(u) > 0 {
		return k.Errorf(u[0].String(), "unknown for backend %q", k.Backend)
	}
	return nil
}

// SameKey reports whether k and o open the same key the same way: the same name,
// backend and options, relative paths resolved against the same folder. The certificate
// bundle is left out: a reload reads it again whether or not its reference changed. A
// reload keeps a key's open backend (PKCS#11 sessions, KMS client) when this holds, so
// any option that could change what Open does must count here, and does: the whole
// table is compared.
func (k *Key) SameKey(o *Key) bool {
	if k.Name != o.Name || k.Backend != o.Backend || k.URI != o.URI || k.Dir != o.Dir || k.fromTOML != o.fromTOML {
		return false
	}
	if k.fromTOML {
		return reflect.DeepEqual(withoutCertificates(k.table), withoutCertificates(o.table))
	}
	return reflect.DeepEqual(k.opts, o.opts)
}

func withoutCertificates(t map[string]any) map[string]any {
	out := make(map[string]any, len(t))
	for f, v := range t {
		if f != "certificates" {
			out[f] = v
		}
	}
	return out
}

// Path resolves p relative to the config file's folder.
func (k *Key) Path(p string) string {
	if p == "" || filepath.IsAbs(p) || k.Dir == "" {
		return p
	}
	return filepath.Join(k.Dir, p)
}

// Errorf returns a configuration error about field of this key ("" for the key itself).
func (k *Key) Errorf(field, format string, args ...any) error {
	key := "keys." + k.Name
	if v, ok := k.Vars[field]; ok {
		key = v
	} else if field != "" {
		key += "." + field
	}
	return &Error{File: k.File, Key: key, Msg: fmt.Sprintf(format, args...)}
}

func tomlFields(t reflect.Type) []string {
	var names []string
	for i := 0; i < t.NumField(); i++ {
		if tag := strings.Split(t.Field(i).Tag.Get("toml"), ",")[0]; tag != "" && tag != "-" {
			names = append(names, tag)
		}
	}
	return names
}

// Duration is a time.Duration written as a string such as "15s".
type Duration time.Duration

// UnmarshalText parses "15s", "500ms", "1m".
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%q is not a duration such as \"15s\" or \"500ms\"", b)
	}
	*d = Duration(v)
	return nil
}

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// FileMode is a permission mode written as an octal string such as "0660".
type FileMode os.FileMode

// UnmarshalTOML accepts an octal string ("0660") or a TOML octal integer (0o660).
func (m *FileMode) UnmarshalTOML(v any) error {
	switch v := v.(type) {
	case string:
		return m.UnmarshalText([]byte(v))
	case int64:
		if v < 0 || v&^0o777 != 0 {
			return fmt.Errorf("%d has bits beyond 0777; write an octal string such as \"0660\"", v)
		}
		*m = FileMode(v)
		return nil
	}
	return fmt.Errorf("%v is not a mode; write an octal string such as \"0660\"", v)
}

// UnmarshalText parses an octal mode such as "0660" or "660".
func (m *FileMode) UnmarshalText(b []byte) error {
	v, err := strconv.ParseUint(string(b), 8, 32)
	if err != nil || len(b) == 0 {
		return fmt.Errorf("%q is not an octal mode such as \"0660\"", b)
	}
	if v&^0o777 != 0 {
		return fmt.Errorf("%q has bits beyond 0777; use permission bits only, such as \"0660\"", b)
	}
	*m = FileMode(v)
	return nil
}

func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
