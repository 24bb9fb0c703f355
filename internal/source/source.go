// Package source reads the certificate sources a configuration names: a file path, or an
// s3://bucket/key object read with the AWS SDK's standard chain, as the original service
// did. The configuration only names them (conf does no I/O beyond its own files); the
// daemon and the commands read them here and give this reader to the backends.
package source

import (
	"context"
	"errors"
	"os"
	"strings"
)

// Read reads a certificate source: a file path, or an s3://bucket/key object (s3.go).
// Its errors do not repeat ref: callers name it, as they name a file.
func Read(ctx context.Context, ref string) ([]byte, error) {
	if strings.HasPrefix(ref, "s3://") {
		return readS3(ctx, ref)
	}
	data, err := os.ReadFile(ref)
	var pe *os.PathError
	if errors.As(err, &pe) {
		return nil, pe.Err
	}
	return data, err
}
