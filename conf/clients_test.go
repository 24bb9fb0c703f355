package conf

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

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
	if err := os.WriteFile(tok, []byte("s3cret-token\n"), 0o600); err != nil {
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
	want := sha256.Sum256([]byte("s3cret-token"))
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
	for _, tc := range []struct{ name, table, want string }{
		{"unknown key", "uids = [1]\nkeys = [\"*\"]\nallow = [\"sign\"]\nroles = [\"x\"]", `clients.a.roles: unknown key; [clients.a] accepts uids, gids, token_file`},
		{"unknown operation", "uids = [1]\nkeys = [\"*\"]\nallow = [\"sign\", \"delete\"]", `clients.a.allow: unknown operation "delete"; operations: sign, records, csr`},
		{"unknown key name", "uids = [1]\nkeys = [\"signing\", \"nope\"]\nallow = [\"sign\"]", `clients.a.keys: no key named "nope"; keys: signing, other`},
		{"no identity", "keys = [\"*\"]\nallow = [\"sign\"]", `clients.a: no identity; set uids`},
		{"no keys", "uids = [1]\nallow = [\"sign\"]", `clients.a.keys: missing`},
		{"no allow", "uids = [1]\nkeys = [\"*\"]", `clients.a.allow: missing`},
		{"bad hash", "token_sha256 = \"abc\"\nkeys = [\"*\"]\nallow = [\"sign\"]", `clients.a.token_sha256: must be 64 hexadecimal characters`},
		{"token file readable by others", "token_file = \"open.token\"\nkeys = [\"*\"]\nallow = [\"sign\"]", "has mode 0644, so other users can read the token; run: chmod 600 " + open},
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
			if strings.Contains(err.Error(), "tok\"") {
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
