package backends

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

// ParseBundle parses a PEM certificate bundle: the key's certificate first, then the
// intermediates. Anything in it that is not a certificate is an error, so that a private
// key pasted into a bundle by mistake is noticed rather than ignored.
func ParseBundle(data []byte) ([]*x509.Certificate, error) {
	var chain []*x509.Certificate
	rest := data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("block %d is a %q, not a CERTIFICATE; a bundle holds certificates only", len(chain)+1, b.Type)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(chain)+1, err)
		}
		chain = append(chain, c)
	}
	if len(chain) == 0 {
		return nil, errors.New("no PEM certificate found")
	}
	return chain, nil
}
