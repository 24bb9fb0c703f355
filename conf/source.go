package conf

import (
	"context"
	"os"
	"strings"
)

// ReadSource reads a certificate source: a file path, or an s3://bucket/key object
// (s3.go). Its errors do not repeat ref: callers name it, as they name a file.
func ReadSource(ctx context.Context, ref string) ([]byte, error) {
	if strings.HasPrefix(ref, "s3://") {
		return readS3(ctx, ref)
	}
	data, err := os.ReadFile(ref)
	if err != nil {
		return nil, unwrapPathError(err)
	}
	return data, nil
}
