package audit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"time"
)

// Seal is how the log signs its checkpoints (audit-seal.md): every Interval after the first
// line it has not sealed, at every reopen and at Close, a checkpoint line carries a
// signature over the chain's head, so that whoever holds the seal key's public key can
// tell a removed, added or changed line before the last checkpoint, which a hash chain
// alone cannot show to anyone who can rewrite the file.
type Seal struct {
	// Signer signs the SHA-256 digest of a checkpoint's text (ECDSA, ASN.1 DER).
	Signer Signer
	// Key is the seal key's name ([keys.NAME]), written in each checkpoint.
	Key string
	// Origin names the log in the signed text.
	Origin string
	// Interval is the longest a line waits for its checkpoint (default 10s).
	Interval time.Duration
	// Timeout bounds one signature (default 5s).
	Timeout time.Duration
}

// Signer signs a digest with the seal key.
type Signer interface {
	SignDigest(ctx context.Context, digest []byte) ([]byte, error)
}

// SignerFunc is a Signer.
type SignerFunc func(ctx context.Context, digest []byte) ([]byte, error)

// SignDigest calls f.
func (f SignerFunc) SignDigest(ctx context.Context, digest []byte) ([]byte, error) {
	return f(ctx, digest)
}

// Checkpoint is a checkpoint line's "checkpoint" member: the head it seals (the line
// before the checkpoint) and the signature over CheckpointText.
type Checkpoint struct {
	Origin    string `json:"origin"`
	Seq       uint64 `json:"seq"`
	Head      string `json:"head"`
	Key       string `json:"key"`
	Signature []byte `json:"signature"`
}

// CheckpointText is the text a checkpoint's signature is over (its SHA-256): exactly
// these lines, each ending in a newline, so that openssl dgst -sha256 -verify checks it
// with nothing but the public key. time is the checkpoint line's own "time", as written.
func CheckpointText(origin string, seq uint64, head, time string) []byte {
	return []byte("provenanced audit checkpoint v1\norigin " + origin + "\nseq " + strconv.FormatUint(seq, 10) +
		"\nhead " + head + "\ntime " + time + "\n")
}

// checkpointLine is a checkpoint as a line of the log.
type checkpointLine struct {
	Time       string     `json:"time"`
	Seq        uint64     `json:"seq"`
	Client     *string    `json:"client"`
	Op         string     `json:"op"`
	Prev       string     `json:"prev"`
	Checkpoint Checkpoint `json:"checkpoint"`
}

// signCheckpoint signs the checkpoint of head (seq, hash) at time t.
func (s *Seal) signCheckpoint(ctx context.Context, seq uint64, head [32]byte, t string) (*Checkpoint, error) {
	h := hex.EncodeToString(head[:])
	digest := sha256.Sum256(CheckpointText(s.Origin, seq, h, t))
	ctx, cancel := context.WithTimeout(ctx, s.timeout())
	defer cancel()
	sig, err := s.Signer.SignDigest(ctx, digest[:])
	if err != nil {
		return nil, fmt.Errorf("seal key %q: %w", s.Key, err)
	}
	return &Checkpoint{Origin: s.Origin, Seq: seq, Head: h, Key: s.Key, Signature: sig}, nil
}

func (s *Seal) interval() time.Duration {
	if s == nil || s.Interval <= 0 {
		return 10 * time.Second
	}
	return s.Interval
}

func (s *Seal) timeout() time.Duration {
	if s.Timeout <= 0 {
		return 5 * time.Second
	}
	return s.Timeout
}

func hashHex(line []byte) string {
	h := sha256.Sum256(line)
	return hex.EncodeToString(h[:])
}

func hashHexOf(h [32]byte) string { return hex.EncodeToString(h[:]) }

func hexHash(s string) ([32]byte, bool) {
	var h [32]byte
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(h) {
		return h, false
	}
	copy(h[:], b)
	return h, true
}
