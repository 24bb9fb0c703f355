//go:build cgo

package pkcs11

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ib1/provenanced/conf"
)

// Options are the backend's fields of a [keys.NAME] table. A key may instead be given as
// one RFC 7512 URI in the common field uri; the two ways exclude each other, except for
// max_sessions, which a URI cannot say.
type Options struct {
	// Module is the path of the vendor's PKCS#11 library (relative paths are relative to
	// the config file). It comes from the config only: nothing a client sends chooses
	// the library the daemon loads.
	Module string `toml:"module"`
	// TokenLabel and TokenSerial select the token; give one or both.
	TokenLabel  string `toml:"token_label"`
	TokenSerial string `toml:"token_serial"`
	// KeyLabel (CKA_LABEL) and KeyID (CKA_ID, in hex) select the private key; give one
	// or both.
	KeyLabel string `toml:"key_label"`
	KeyID    string `toml:"key_id"`
	// PIN says where the user PIN is: "env:NAME" or "file:PATH". Never the PIN itself.
	PIN string `toml:"pin"`
	// MaxSessions bounds the sessions this key opens on the token, the logged-in
	// session that holds the login included; at least 2, default 8.
	MaxSessions int `toml:"max_sessions"`
	// ReadyCheckInterval is how often a key that has not signed lately makes a test
	// signature, so that a token that died (or hung) between requests is noticed; a Go
	// duration, default 5s.
	ReadyCheckInterval string `toml:"ready_check_interval"`
	// StateDir is where the key remembers a PIN its token refused, so that a restart
	// does not offer it again (default: $STATE_DIRECTORY, which systemd's StateDirectory=
	// sets; without either, only for as long as the process runs).
	StateDir string `toml:"state_dir"`
}

// DefaultReadyCheckInterval is ready_check_interval when the config does not say.
const DefaultReadyCheckInterval = 5 * time.Second

// DefaultMaxSessions is max_sessions when the config does not say.
const DefaultMaxSessions = 8

// config is a key's checked options, whichever way they were written.
type config struct {
	module       string
	tokenLabel   string
	tokenSerial  string
	manufacturer string // URI only
	model        string // URI only
	keyLabel     string
	keyID        []byte
	pin          pinSource
	maxSessions  int
	fromURI      bool
	readyEvery   time.Duration
	stateDir     string // "" = remember refused PINs in memory only
}

// field names the config field that holds what an error is about: with a URI, the uri.
func (c *config) field(name string) string {
	if c.fromURI {
		return "uri"
	}
	return name
}

// location is Signer.Location: where the key is, without anything secret.
func (c *config) location() string {
	var b strings.Builder
	b.WriteString("PKCS#11 token")
	if c.tokenLabel != "" {
		fmt.Fprintf(&b, " %q", c.tokenLabel)
	}
	if c.tokenSerial != "" {
		fmt.Fprintf(&b, " serial %q", c.tokenSerial)
	}
	b.WriteString(" key")
	if c.keyLabel != "" {
		fmt.Fprintf(&b, " label %q", c.keyLabel)
	}
	if c.keyID != nil {
		fmt.Fprintf(&b, " id %s", hex.EncodeToString(c.keyID))
	}
	return b.String()
}

// parseConfig decodes and checks a key's table (or its uri).
func parseConfig(spec *conf.Key) (*config, error) {
	var o Options
	if err := spec.Decode(&o); err != nil {
		return nil, err
	}
	c := &config{maxSessions: o.MaxSessions, readyEvery: DefaultReadyCheckInterval}
	if o.ReadyCheckInterval != "" {
		d, err := time.ParseDuration(o.ReadyCheckInterval)
		if err != nil || d < 100*time.Millisecond || d > time.Hour {
			return nil, spec.Errorf("ready_check_interval", "must be a duration from 100ms to 1h, such as \"5s\"; got %q", o.ReadyCheckInterval)
		}
		c.readyEvery = d
	}
	switch {
	case o.StateDir != "":
		c.stateDir = spec.Path(o.StateDir)
	case os.Getenv("STATE_DIRECTORY") != "":
		// systemd may list several, separated by colons; the first is this unit's own.
		c.stateDir, _, _ = strings.Cut(os.Getenv("STATE_DIRECTORY"), ":")
	}
	var err error
	if spec.URI != "" {
		err = c.selectFromURI(spec, &o)
	} else {
		err = c.selectFromFields(spec, &o)
	}
	if err != nil {
		return nil, err
	}
	if c.module == "" {
		return nil, spec.Errorf(c.field("module"), "missing: the path of the HSM vendor's PKCS#11 library, such as %q (uri: ?module-path=...)", "/usr/lib/softhsm/libsofthsm2.so")
	}
	c.module = spec.Path(c.module)
	if c.tokenLabel == "" && c.tokenSerial == "" {
		return nil, spec.Errorf(c.field("token_label"), "missing: name the token by token_label or token_serial (uri: token= or serial=)")
	}
	if c.keyLabel == "" && c.keyID == nil {
		return nil, spec.Errorf(c.field("key_label"), "missing: name the key by key_label or key_id (uri: object= or id=)")
	}
	switch {
	case c.maxSessions == 0:
		c.maxSessions = DefaultMaxSessions
	case c.maxSessions < 2:
		return nil, spec.Errorf("max_sessions", "must be at least 2 (one session holds the login, the others sign), got %d", c.maxSessions)
	}
	return c, nil
}

// selectFromURI takes the module, token, key and PIN source from the key's uri, which
// must then be the only place that names them.
func (c *config) selectFromURI(spec *conf.Key, o *Options) error {
	var given []string
	for _, f := range []struct{ name, v string }{{"module", o.Module}, {"token_label", o.TokenLabel}, {"token_serial", o.TokenSerial}, {"key_label", o.KeyLabel}, {"key_id", o.KeyID}, {"pin", o.PIN}} {
		if f.v != "" {
			given = append(given, f.name)
		}
	}
	if len(given) > 0 {
		return spec.Errorf("uri", "give the key either as uri or as fields, not both (%s also set); max_sessions, ready_check_interval and state_dir are the only fields a uri may have beside it", strings.Join(given, ", "))
	}
	u, err := parseURI(spec.URI)
	if err != nil {
		return spec.Errorf("uri", "%v", err)
	}
	c.fromURI = true
	c.module, c.tokenLabel, c.tokenSerial = u.modulePath, u.token, u.serial
	c.manufacturer, c.model = u.manufacturer, u.model
	c.keyLabel, c.keyID = u.object, u.id
	if u.pinSource != "" {
		if c.pin, err = parsePINSource(spec, "uri", u.pinSource, true); err != nil {
			return err
		}
	}
	return nil
}

// selectFromFields takes the module, token, key and PIN source from the key's fields.
func (c *config) selectFromFields(spec *conf.Key, o *Options) error {
	c.module, c.tokenLabel, c.tokenSerial, c.keyLabel = o.Module, o.TokenLabel, o.TokenSerial, o.KeyLabel
	if o.KeyID != "" {
		id, err := parseHexID(o.KeyID)
		if err != nil {
			return spec.Errorf("key_id", "%v", err)
		}
		c.keyID = id
	}
	if o.PIN != "" {
		p, err := parsePINSource(spec, "pin", o.PIN, false)
		if err != nil {
			return err
		}
		c.pin = p
	}
	return nil
}

// checkModule makes sure the library exists before it is handed to dlopen, whose errors
// say little.
func checkModule(spec *conf.Key, c *config) error {
	st, err := os.Stat(c.module)
	if err != nil {
		hint := ""
		if strings.Contains(c.module, "softhsm") {
			hint = " (apt-get install softhsm2)"
		}
		return spec.Errorf(c.field("module"), "cannot use the PKCS#11 library %s: %v%s", c.module, unwrapPath(err), hint)
	}
	if st.IsDir() {
		return spec.Errorf(c.field("module"), "%s is a folder, not a PKCS#11 library", c.module)
	}
	return nil
}

func parseHexID(s string) ([]byte, error) {
	h := strings.ReplaceAll(strings.TrimPrefix(strings.TrimPrefix(s, "0x"), "0X"), ":", "")
	id, err := hex.DecodeString(h)
	if err != nil || len(id) == 0 {
		return nil, fmt.Errorf("%q is not a CKA_ID in hex (such as \"01\" or \"a1:b2:c3\")", s)
	}
	return id, nil
}

// pinSource says where the PIN is. It holds no secret, so it may be printed.
type pinSource struct {
	env  string // the environment variable's name
	file string // an absolute path
}

func (p pinSource) set() bool { return p.env != "" || p.file != "" }

func (p pinSource) String() string {
	switch {
	case p.env != "":
		return "env:" + p.env
	case p.file != "":
		return "file:" + p.file
	}
	return "(no PIN)"
}

// parsePINSource reads "env:NAME" or "file:PATH"; in a URI's pin-source also the RFC 8089
// forms "file:///PATH" and a bare absolute path. A value of any other shape is refused
// without quoting it, since it may be the PIN itself.
func parsePINSource(spec *conf.Key, field, v string, inURI bool) (pinSource, error) {
	switch {
	case strings.HasPrefix(v, "env:"):
		name := strings.TrimPrefix(v, "env:")
		if name == "" || strings.ContainsAny(name, "= \t") {
			return pinSource{}, spec.Errorf(field, "the PIN source env:NAME needs the name of an environment variable")
		}
		return pinSource{env: name}, nil
	case strings.HasPrefix(v, "file:"):
		p := strings.TrimPrefix(v, "file:")
		if strings.HasPrefix(p, "//") {
			u, err := url.Parse(v)
			if err != nil || (u.Host != "" && u.Host != "localhost") {
				return pinSource{}, spec.Errorf(field, "the PIN source must be file:PATH or file:///PATH")
			}
			p = u.Path
		}
		if p == "" {
			return pinSource{}, spec.Errorf(field, "the PIN source file:PATH needs a path")
		}
		return pinSource{file: spec.Path(p)}, nil
	case inURI && filepath.IsAbs(v):
		return pinSource{file: v}, nil
	}
	return pinSource{}, spec.Errorf(field, "the PIN must come from \"env:NAME\" or \"file:PATH\"; a PIN written into the config is not accepted (the value is not repeated here)")
}

// errNoPIN is returned by read when the source holds nothing.
var errNoPIN = errors.New("no PIN")

// read returns the PIN. Its errors name the source and never contain what was read.
func (p pinSource) read() (string, error) {
	switch {
	case p.env != "":
		v, ok := os.LookupEnv(p.env)
		if !ok {
			return "", fmt.Errorf("the PIN source %s: the environment variable %s is not set", p, p.env)
		}
		if v == "" {
			return "", fmt.Errorf("the PIN source %s: %w: the environment variable is empty", p, errNoPIN)
		}
		return v, nil
	case p.file != "":
		f, err := os.Open(p.file)
		if err != nil {
			return "", fmt.Errorf("the PIN source %s: %v", p, unwrapPath(err))
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return "", fmt.Errorf("the PIN source %s: %v", p, unwrapPath(err))
		}
		if st.Mode().Perm()&0o007 != 0 {
			return "", fmt.Errorf("the PIN source %s is open to all users (mode %04o); run chmod o-rwx %s", p, st.Mode().Perm(), p.file)
		}
		b, err := io.ReadAll(io.LimitReader(f, 4096))
		if err != nil {
			return "", fmt.Errorf("the PIN source %s: %v", p, unwrapPath(err))
		}
		v := strings.TrimRight(string(b), "\r\n")
		if v == "" {
			return "", fmt.Errorf("the PIN source %s: %w: the file is empty", p, errNoPIN)
		}
		return v, nil
	}
	return "", errNoPIN
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// uri is a parsed RFC 7512 PKCS#11 URI, as far as this backend uses one.
type uri struct {
	token, serial, manufacturer, model string
	object                             string
	id                                 []byte
	modulePath                         string
	pinSource                          string
}

var (
	uriPathAttrs  = []string{"id", "manufacturer", "model", "object", "serial", "token", "type"}
	uriQueryAttrs = []string{"module-path", "pin-source"}
)

// parseURI parses "pkcs11:token=T;object=O;id=%01?module-path=/lib.so&pin-source=file:/p".
// An attribute it does not know is an error rather than ignored: a key chosen by an
// attribute that was silently dropped would be the wrong key.
func parseURI(s string) (*uri, error) {
	rest, ok := strings.CutPrefix(s, "pkcs11:")
	if !ok {
		return nil, errors.New("a PKCS#11 URI begins with \"pkcs11:\" (RFC 7512)")
	}
	path, query, _ := strings.Cut(rest, "?")
	u := &uri{}
	seen := map[string]bool{}
	for _, part := range splitNonEmpty(path, ";") {
		k, v, err := uriAttr(part, seen)
		if err != nil {
			return nil, err
		}
		if err := u.setPathAttr(k, v); err != nil {
			return nil, err
		}
	}
	for _, part := range splitNonEmpty(query, "&") {
		k, v, err := uriAttr(part, seen)
		if err != nil {
			return nil, err
		}
		if err := u.setQueryAttr(k, v); err != nil {
			return nil, err
		}
	}
	return u, nil
}

// errPINValue refuses pin-value, in the path or the query: RFC 7512 allows it in either.
var errPINValue = errors.New("pin-value puts the PIN into the config, which provenanced does not accept; use pin-source=file:PATH or pin-source=env:NAME (the value is not repeated here)")

// setPathAttr takes one attribute of the URI's path (before "?").
func (u *uri) setPathAttr(k, v string) error {
	switch k {
	case "token":
		u.token = v
	case "serial":
		u.serial = v
	case "manufacturer":
		u.manufacturer = v
	case "model":
		u.model = v
	case "object":
		u.object = v
	case "id":
		if v == "" {
			return errors.New("id= is empty")
		}
		u.id = []byte(v)
	case "type":
		if v != "private" {
			return fmt.Errorf("type=%s: the signing key is a private key; write type=private or leave type out", v)
		}
	case "pin-value":
		return errPINValue
	case "slot-id", "slot-description", "slot-manufacturer":
		return fmt.Errorf("%s: slots change (SoftHSM renumbers them when a token is initialised); name the token by token= or serial=", k)
	default:
		return fmt.Errorf("unknown path attribute %q; accepted: %s (and, after \"?\", %s)", k, strings.Join(uriPathAttrs, ", "), strings.Join(uriQueryAttrs, ", "))
	}
	return nil
}

// setQueryAttr takes one attribute of the URI's query (after "?").
func (u *uri) setQueryAttr(k, v string) error {
	switch k {
	case "module-path":
		u.modulePath = v
	case "pin-source":
		u.pinSource = v
	case "pin-value":
		return errPINValue
	case "module-name":
		return errors.New("module-name: give the library's full path with module-path=")
	default:
		return fmt.Errorf("unknown query attribute %q; accepted: %s", k, strings.Join(uriQueryAttrs, ", "))
	}
	return nil
}

func splitNonEmpty(s, sep string) []string {
	var out []string
	for _, p := range strings.Split(s, sep) {
		if p != "" {
			out = append(out, p)
		}
	}
	return out
}

// uriAttr splits and percent-decodes one name=value. Values are decoded as RFC 3986 says,
// so "+" stays "+".
func uriAttr(part string, seen map[string]bool) (string, string, error) {
	k, raw, ok := strings.Cut(part, "=")
	if !ok {
		return "", "", errors.New("an attribute without \"=\" (attributes are name=value)")
	}
	k = strings.ToLower(k)
	if seen[k] {
		return "", "", fmt.Errorf("%s appears twice", k)
	}
	seen[k] = true
	v, err := url.PathUnescape(raw)
	if err != nil {
		if k == "pin-value" {
			return k, "", nil
		}
		return "", "", fmt.Errorf("%s: bad percent-encoding", k)
	}
	return k, v, nil
}
