package main

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/ib1/provenanced/conf"
)

func init() {
	register("token", "make a bearer token for a [clients.NAME] (token new [-out FILE])", tokenCmd)
}

func tokenCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || isHelp(args[0]) {
		err := subcommandHelp(stderr, "token", "new [-out FILE]", "new", "print a new token (256 random bits, base64url), or write it to FILE with mode 0600")
		if len(args) == 0 {
			return usageError("token: name a subcommand")
		}
		return err
	}
	if args[0] != "new" {
		return usageError("token: the only subcommand is new")
	}
	fs := newFlags("token new", "[-out FILE]", stderr)
	out := fs.String("out", "", "write the token to `FILE` (created with mode 0600; an existing file is an error, never overwritten) and print its token_sha256")
	if err := parseFlags(fs, args[1:], 0); err != nil {
		return err
	}
	tok, err := newToken()
	if err != nil {
		return err
	}
	if *out == "" {
		fmt.Fprintln(stdout, tok)
		return nil
	}
	if err := writeNew(*out, tok+"\n"); err != nil {
		return err
	}
	sum := sha256.Sum256([]byte(tok))
	fmt.Fprintf(stdout, "wrote %s (mode 0600): name it as token_file, or put token_sha256 = %q in the config and give the file to the client only\n", *out, hex.EncodeToString(sum[:]))
	return nil
}

// newToken is 32 random bytes in base64url: 43 characters, 256 bits, far beyond the
// 128 bits a token file must carry. The distinct-bytes check of a token file (conf)
// refuses a random one with odds too small to matter; drawing again costs nothing.
func newToken() (string, error) {
	for {
		var b [32]byte
		if _, err := rand.Read(b[:]); err != nil {
			return "", fmt.Errorf("token: reading random bytes: %w", err)
		}
		tok := base64.RawURLEncoding.EncodeToString(b[:])
		if conf.TokenStrong(tok) {
			return tok, nil
		}
	}
}

// writeNew creates path with mode 0600 and writes s; a file already there is an error.
func writeNew(path, s string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s exists; a token file is never overwritten: remove it first, or choose another name", path)
	}
	if err != nil {
		return err
	}
	if _, err := f.WriteString(s); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	return f.Close()
}
