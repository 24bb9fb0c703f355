package daemon

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestLogKeepsNoCredential(t *testing.T) {
	token := strings.Repeat("FwoGZXIvYXdzEJr//////////", 8)
	var buf bytes.Buffer
	log := slog.New(redactingHandler{slog.NewJSONHandler(&buf, nil)}).With("key", "signing")
	log.Warn("sign failed", "route", "POST /v1/keys/{name}/sign", "error",
		"AWS KMS key arn:aws:kms:eu-west-2:111122223333:key/x: AccessDeniedException: echo Authorization: AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20261201/eu-west-2/kms/aws4_request, SignedHeaders=host;x-amz-date, Signature=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef X-Amz-Security-Token: "+token)
	out := buf.String()
	for _, secret := range []string{"AKIAIOSFODNN7EXAMPLE", "0123456789abcdef", token[:100], "Credential=", "Signature="} {
		if strings.Contains(out, secret) {
			t.Errorf("the log shows %q: %s", secret, out)
		}
	}
	for _, kept := range []string{"arn:aws:kms:eu-west-2:111122223333:key/x", "AccessDeniedException", `"key":"signing"`, `"route":"POST /v1/keys/{name}/sign"`} {
		if !strings.Contains(out, kept) {
			t.Errorf("the log lost %q: %s", kept, out)
		}
	}
}
