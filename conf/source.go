package conf

import (
	"context"
	"fmt"
	"os"
	"strings"
)

// ReadSource reads a certificate source: a file path, or an s3://bucket/key object.
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

func readS3(ctx context.Context, ref string) ([]byte, error) {
	return nil, fmt.Errorf("%s: s3:// sources are not supported by this build", ref)
}
