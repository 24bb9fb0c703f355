//go:build cgo

package pkcs11

import (
	"bytes"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/miekg/pkcs11"
)

// pinGuard remembers, per token, the fingerprint of the last PIN the token refused, so
// that provenanced never offers it again: not at the next reconnection, and — when it
// has a state directory — not after a restart either.
//
// SoftHSM and most HSMs set CKF_USER_PIN_COUNT_LOW after a wrong PIN, and the backend
// then stops before a second try. tpm2-pkcs11 never sets it, and a TPM counts wrong
// PINs in its dictionary-attack counter, which locks the whole TPM (every key on it,
// the SO PIN too) after a few (3 on swtpm's defaults). A service manager restarting a
// daemon with a wrong PIN file would walk it into that lockout one restart at a time;
// the remembered fingerprint stops it after the first.
//
// Where: state_dir, else $STATE_DIRECTORY (systemd's StateDirectory=), which is the
// daemon's own writable place. Not beside the PIN file: that is often read-only (a
// systemd credential, a Kubernetes secret) and shared with whoever writes the PIN.
//
// What: a salted PBKDF2-SHA256 of the PIN, not the PIN, in a 0600 file, so that the
// file does not hand a short PIN to whoever reads it without an effort per guess.
type pinGuard struct {
	dir string
	mu  sync.Mutex
	mem map[string]refusedPIN // by token id: what this process saw, with or without dir
}

type refusedPIN struct {
	Token string    `json:"token"`
	Salt  []byte    `json:"salt"`
	Hash  []byte    `json:"pbkdf2_sha256"`
	At    time.Time `json:"at"`
}

const pinIterations = 100_000

// tokenID names a token for the guard: the library and what the token says it is.
// tpm2-pkcs11 gives every token the serial 0000000000000000, so the label counts too.
func tokenID(module string, ti pkcs11.TokenInfo) string {
	h := sha256.New()
	for _, s := range []string{module, ti.Label, ti.SerialNumber, ti.ManufacturerID, ti.Model} {
		fmt.Fprintf(h, "%d:%s;", len(s), s)
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

func (g *pinGuard) path(id string) string {
	return filepath.Join(g.dir, "pkcs11-refused-pin-"+id+".json")
}

func fingerprint(pin string, salt []byte) []byte {
	k, _ := pbkdf2.Key(sha256.New, pin, salt, pinIterations, 32)
	return k
}

// refused reports whether the token refused this very PIN before, and when.
func (g *pinGuard) refused(id, pin string) (bool, time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	r, ok := g.mem[id]
	if !ok && g.dir != "" {
		b, err := os.ReadFile(g.path(id))
		ok = err == nil && json.Unmarshal(b, &r) == nil && len(r.Salt) > 0
	}
	if !ok {
		return false, time.Time{}
	}
	return bytes.Equal(fingerprint(pin, r.Salt), r.Hash), r.At
}

// remember records that the token refused pin. The error says why it could not be
// written down (the guard then holds for this process only).
func (g *pinGuard) remember(id, label, pin string) error {
	salt := make([]byte, 16)
	rand.Read(salt)
	r := refusedPIN{Token: label, Salt: salt, Hash: fingerprint(pin, salt), At: time.Now().UTC()}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.mem == nil {
		g.mem = map[string]refusedPIN{}
	}
	g.mem[id] = r
	if g.dir == "" {
		return errors.New("no state_dir (nor $STATE_DIRECTORY) to keep it across restarts")
	}
	b, _ := json.Marshal(r)
	tmp, err := os.CreateTemp(g.dir, ".pkcs11-refused-pin-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), g.path(id))
}

// forget drops the record after a good login: a wrong PIN after that is a new mistake.
func (g *pinGuard) forget(id string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.mem, id)
	if g.dir != "" {
		// A directory where the record could be written lets it be removed.
		os.Remove(g.path(id))
	}
}
