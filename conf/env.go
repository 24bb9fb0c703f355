package conf

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// The original provenance service's environment variables.
const (
	EnvRootCA         = "ROOT_CA_CERTIFICATE"
	EnvSigningBundle  = "SIGNING_BUNDLE"
	EnvSigningKey     = "SIGNING_KEY"
	EnvKMSKeyID       = "KMS_KEY_ID"
	EnvScheme         = "SCHEME_URI"
	EnvTrustFramework = "TRUST_FRAMEWORK_URL"
)

// EnvSource is where FromEnvironment reads: the process environment, then a .env file.
type EnvSource struct {
	Getenv func(string) string // os.Getenv outside tests
	// DotEnv is the .env file to read ("" for none). Variables set in the environment
	// win over the file's, as with the original's settings loader.
	DotEnv string
	// Dir is the base of relative paths (the working directory, as for the original).
	Dir string
}

// FromEnvironment builds a config from the original service's variables, so that its
// `--env-file=.env` setup runs the daemon: ROOT_CA_CERTIFICATE and SIGNING_BUNDLE are
// required; KMS_KEY_ID selects the AWS KMS backend, otherwise SIGNING_KEY the PEM one.
// Unlike the original, a KMS key that fails is an error: the daemon never falls back to
// SIGNING_KEY. It returns the config and the .env file's variables (the AWS SDK reads
// credentials from the process environment, so the caller exports the AWS_* ones).
func FromEnvironment(src EnvSource) (*Config, map[string]string, error) {
	env, err := readEnvironment(src)
	if err != nil {
		return nil, nil, err
	}
	cfg := Defaults()
	cfg.File = env.file
	cfg.Server.HTTP = DefaultHTTP // as the original listened
	root, bundle := env.get(EnvRootCA), env.get(EnvSigningBundle)
	if root == "" {
		return nil, nil, env.missing(EnvRootCA, "the root signing CA certificate")
	}
	if bundle == "" {
		return nil, nil, env.missing(EnvSigningBundle, "the signing certificate followed by its intermediates")
	}
	cfg.Provenance.RootCA = env.path(root)
	if v := env.get(EnvScheme); v != "" {
		cfg.Provenance.Scheme = v
	}
	if v := env.get(EnvTrustFramework); v != "" {
		cfg.Provenance.TrustFramework = v
	}
	key, err := env.signingKey(bundle)
	if err != nil {
		return nil, nil, err
	}
	cfg.Keys = []*Key{key}
	cfg.Provenance.Key = key.Name
	if err := cfg.Check(); err != nil {
		return nil, nil, err
	}
	return cfg, env.dotenv, nil
}

// environment is the original service's variables: the process environment over the .env
// file's.
type environment struct {
	src    EnvSource
	dotenv map[string]string
	file   string // what errors name as the config's file
}

// readEnvironment reads the .env file, if there is one; a missing one is no error, as
// for the original.
func readEnvironment(src EnvSource) (*environment, error) {
	env := &environment{src: src, dotenv: map[string]string{}, file: "environment"}
	if src.DotEnv != "" {
		dotenv, err := ReadDotEnv(src.DotEnv)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		env.dotenv = dotenv
		if err == nil {
			env.file = "environment and " + src.DotEnv
		}
	}
	return env, nil
}

func (e *environment) get(name string) string {
	if v := strings.TrimSpace(e.src.Getenv(name)); v != "" {
		return v
	}
	return strings.TrimSpace(e.dotenv[name])
}

// path makes p relative to the working directory, as the original read it; s3:// sources
// are not paths.
func (e *environment) path(p string) string {
	if p == "" || strings.HasPrefix(p, "s3://") || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(e.src.Dir, p)
}

// missing names every variable the original service reads, since someone who left one out
// may not know the others either.
func (e *environment) missing(name, what string) error {
	return &Error{File: e.file, Key: name, Msg: "missing: " + what + " (a path or s3://bucket/key); the original service's variables are " +
		strings.Join([]string{EnvRootCA, EnvSigningBundle, EnvSigningKey + " or " + EnvKMSKeyID, EnvScheme, EnvTrustFramework}, ", ") +
		"; or run with -config FILE"}
}

// signingKey is the key KMS_KEY_ID or else SIGNING_KEY names, with the certificates in
// bundle. Its Vars name the variables each field came from, for errors.
func (e *environment) signingKey(bundle string) (*Key, error) {
	switch kms, pemKey := e.get(EnvKMSKeyID), e.get(EnvSigningKey); {
	case kms != "":
		fields := map[string]any{"key_id": kms}
		if region := firstNonEmpty(e.get("AWS_REGION"), e.get("AWS_DEFAULT_REGION")); region != "" {
			fields["region"] = region
		}
		key := NewKey("signing", "awskms", e.path(bundle), e.file, fields)
		key.Vars = map[string]string{"key_id": EnvKMSKeyID, "region": "AWS_REGION or AWS_DEFAULT_REGION", "certificates": EnvSigningBundle}
		return key, nil
	case pemKey != "":
		key := NewKey("signing", "pem", e.path(bundle), e.file, map[string]any{"private_key": e.path(pemKey)})
		key.Vars = map[string]string{"private_key": EnvSigningKey, "certificates": EnvSigningBundle}
		return key, nil
	}
	return nil, &Error{File: e.file, Key: EnvKMSKeyID, Msg: "no signing key: set " + EnvKMSKeyID + " (AWS KMS) or " + EnvSigningKey + " (a PEM key file)"}
}

// IgnoredSigningKey says, for a log line, that SIGNING_KEY is set but unused because
// KMS_KEY_ID selects KMS; "" when that is not the case.
func IgnoredSigningKey(cfg *Config, src EnvSource, dotenv map[string]string) string {
	if len(cfg.Keys) != 1 || cfg.Keys[0].Backend != "awskms" {
		return ""
	}
	if firstNonEmpty(src.Getenv(EnvSigningKey), dotenv[EnvSigningKey]) == "" {
		return ""
	}
	return EnvSigningKey + " is set but not used: " + EnvKMSKeyID + " selects AWS KMS, and provenanced never falls back from KMS to a key file"
}

func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if v = strings.TrimSpace(v); v != "" {
			return v
		}
	}
	return ""
}

// ReadDotEnv reads a .env file: NAME=value lines, # comments, blank lines, an optional
// "export " prefix, and values in single or double quotes.
func ReadDotEnv(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	vars := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		line = strings.TrimPrefix(line, "export ")
		name, value, ok := strings.Cut(line, "=")
		name = strings.TrimSpace(name)
		if !ok || name == "" || strings.ContainsAny(name, " \t") {
			return nil, &Error{File: path, Key: fmt.Sprintf("line %d", n), Msg: "not NAME=value"}
		}
		value = strings.TrimSpace(value)
		if len(value) >= 2 && (value[0] == '"' || value[0] == '\'') && value[len(value)-1] == value[0] {
			value = value[1 : len(value)-1]
		} else if i := strings.Index(value, " #"); i >= 0 {
			value = strings.TrimSpace(value[:i])
		}
		vars[name] = value
	}
	return vars, sc.Err()
}
