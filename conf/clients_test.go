package conf

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// goodToken is as strong as a token must be: 22 characters, 16 of them different.
const goodToken = "k3Jq9xVb2LmT7wZp4RfYs1"

const clientKeys = `
[keys.signing]
backend = "pem"
private_key = "k.pem"

[keys.other]
backend = "pem"
private_key = "o.pem"
`

func TestClientsParse(t *testing.T) {
	dir := t.TempDir()
	tok := filepath.Join(dir, "billing.token")
	if err := os.WriteFile(tok, []byte(goodToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("other-token"))
	p := filepath.Join(dir, "p.toml")
	os.WriteFile(p, []byte(clientKeys+`
[clients.billing]
uids = [1001]
token_file = "billing.token"
keys = ["signing"]
allow = ["sign", "records"]
rate = 200

[clients.ops]
gids = [2001]
token_sha256 = "`+hex.EncodeToString(sum[:])+`"
tls_uri = "spiffe://example.org/ops"
keys = ["*"]
allow = ["csr"]

[audit]
file = "audit/audit.jsonl"
`), 0o644)
	cfg, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Clients) != 2 || cfg.Clients[0].Name != "billing" || cfg.Clients[1].Name != "ops" {
		t.Fatalf("clients = %+v", cfg.Clients)
	}
	b := cfg.Clients[0]
	want := sha256.Sum256([]byte(goodToken))
	if string(b.TokenDigest) != string(want[:]) {
		t.Errorf("token digest of the file's token (trailing newline trimmed) differs")
	}
	if b.Rate != 200 || !b.Allows("sign", "signing") || b.Allows("sign", "other") || b.Allows("csr", "signing") {
		t.Errorf("billing's policy is wrong: %+v", b)
	}
	o := cfg.Clients[1]
	if string(o.TokenDigest) != string(sum[:]) || !o.Allows("csr", "other") || o.Allows("sign", "other") {
		t.Errorf("ops' policy is wrong: %+v", o)
	}
	if cfg.Audit.File != filepath.Join(dir, "audit/audit.jsonl") {
		t.Errorf("audit file = %q", cfg.Audit.File)
	}
}

func TestClientsErrors(t *testing.T) {
	dir := t.TempDir()
	open := filepath.Join(dir, "open.token")
	os.WriteFile(open, []byte("tok"), 0o644)
	os.Chmod(open, 0o644)
	empty := filepath.Join(dir, "empty.token")
	os.WriteFile(empty, nil, 0o600)
	short := filepath.Join(dir, "short.token")
	os.WriteFile(short, []byte(goodToken[:21]), 0o600)
	plain := filepath.Join(dir, "plain.token")
	os.WriteFile(plain, []byte("abcdefabcdefabcdefabcdefabcdefab"), 0o600)
	writable := filepath.Join(dir, "writable.token")
	os.WriteFile(writable, []byte(goodToken), 0o602)
	os.Chmod(writable, 0o602)
	for _, tc := range []struct{ name, table, want string }{
		{"unknown key", "uids = [1]\nkeys = [\"*\"]\nallow = [\"sign\"]\nroles = [\"x\"]", `clients.a.roles: unknown key; [clients.a] accepts uids, gids, token_file`},
		{"unknown operation", "uids = [1]\nkeys = [\"*\"]\nallow = [\"sign\", \"delete\"]", `clients.a.allow: unknown operation "delete"; operations: sign, records, csr, debug`},
		{"unknown key name", "uids = [1]\nkeys = [\"signing\", \"nope\"]\nallow = [\"sign\"]", `clients.a.keys: no key named "nope"; keys: signing, other`},
		{"no identity", "keys = [\"*\"]\nallow = [\"sign\"]", `clients.a: no identity; set uids`},
		{"no keys", "uids = [1]\nallow = [\"sign\"]", `clients.a.keys: missing`},
		{"no allow", "uids = [1]\nkeys = [\"*\"]", `clients.a.allow: missing`},
		{"bad hash", "token_sha256 = \"abc\"\nkeys = [\"*\"]\nallow = [\"sign\"]", `clients.a.token_sha256: must be 64 hexadecimal characters`},
		{"token file readable by others", "token_file = \"open.token\"\nkeys = [\"*\"]\nallow = [\"sign\"]", "has mode 0644, so other users can read or change the token; run: chmod 600 " + open},
		{"token file writable by others", "token_file = \"writable.token\"\nkeys = [\"*\"]\nallow = [\"sign\"]", "has mode 0602, so other users can read or change the token"},
		{"token of 21 characters", "token_file = \"short.token\"\nkeys = [\"*\"]\nallow = [\"sign\"]", "holds a weak token (21 characters, 21 different); a token needs at least 22 base64 characters (128 bits), 16 of them different; make one with: provenanced token new -out " + short},
		{"token of 6 different bytes", "token_file = \"plain.token\"\nkeys = [\"*\"]\nallow = [\"sign\"]", "(32 characters, 6 different)"},
		{"key named *", "uids = [1]\nkeys = [\"*\"]\nallow = [\"sign\"]\n[keys.\"*\"]\nbackend = \"pem\"", `keys."*": a key's name is 1 to 64 ASCII letters`},
		{"same URI but for case", "tls_uri = \"spiffe://Example.org/app\"\nkeys = [\"*\"]\nallow = [\"sign\"]\n[clients.b]\ntls_uri = \"SPIFFE://example.ORG/app\"\nkeys = [\"*\"]\nallow = [\"sign\"]", "clients.b.tls_uri: the same identity as [clients.a]"},
		{"same DNS name but for case and dot", "tls_dns = \"app.example.org\"\nkeys = [\"*\"]\nallow = [\"sign\"]\n[clients.b]\ntls_dns = \"App.Example.org.\"\nkeys = [\"*\"]\nallow = [\"sign\"]", "clients.b.tls_dns: the same identity as [clients.a]"},
		{"same token", "token_sha256 = \"" + strings.Repeat("ab", 32) + "\"\nkeys = [\"*\"]\nallow = [\"sign\"]\n[clients.b]\ntoken_sha256 = \"" + strings.Repeat("AB", 32) + "\"\nkeys = [\"*\"]\nallow = [\"sign\"]", "clients.b.token: the same identity as [clients.a]"},
		{"a URI that is not one", "tls_uri = \"example.org/app\"\nkeys = [\"*\"]\nallow = [\"sign\"]", "clients.a.tls_uri: \"example.org/app\" is not an absolute URI"},
		{"empty token file", "token_file = \"empty.token\"\nkeys = [\"*\"]\nallow = [\"sign\"]", "is empty"},
		{"missing token file", "token_file = \"none.token\"\nkeys = [\"*\"]\nallow = [\"sign\"]", "clients.a.token_file: cannot read the token file: no such file or directory"},
		{"negative rate", "uids = [1]\nkeys = [\"*\"]\nallow = [\"sign\"]\nrate = -1", "clients.a.rate: must be a positive number"},
		{"shared uid", "uids = [7]\nkeys = [\"*\"]\nallow = [\"sign\"]\n[clients.b]\nuids = [7]\nkeys = [\"*\"]\nallow = [\"sign\"]", "clients.b.uids: the same identity as [clients.a]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, "p.toml")
			os.WriteFile(p, []byte(clientKeys+"\n[clients.a]\n"+tc.table+"\n"), 0o644)
			_, err := Load(p)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "tok\"") || strings.Contains(err.Error(), goodToken[:21]) {
				t.Errorf("the error shows the token: %v", err)
			}
		})
	}
}

func TestAuditUnknownKey(t *testing.T) {
	p := writeConfig(t, clientKeys+"\n[audit]\nfile = \"-\"\nsync = true\n")
	_, err := Load(p)
	if err == nil || !strings.Contains(err.Error(), "audit.sync: unknown key; [audit] accepts file") {
		t.Fatalf("err = %v", err)
	}
}

func TestDebugOnlyClientNamesNoKey(t *testing.T) {
	cfg, err := Load(writeConfig(t, clientKeys+"\n[clients.ops]\nuids = [1]\nallow = [\"debug\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c := cfg.Clients[0]; !c.Allows(OpDebug, "") || c.Allows(OpSign, "signing") {
		t.Errorf("ops: %+v", c)
	}
}

func TestKeyNames(t *testing.T) {
	for name, ok := range map[string]bool{
		"signing": true, "a": true, "edp-2026.v1_b": true, "0": true, strings.Repeat("k", 64): true,
		"": false, "*": false, "-x": false, ".x": false, "a b": false, "a/b": false, "é": false,
		"sign\xffing": false, strings.Repeat("k", 65): false, "a%2Fb": false,
	} {
		if ValidKeyName(name) != ok {
			t.Errorf("ValidKeyName(%q) = %v", name, !ok)
		}
	}
}
