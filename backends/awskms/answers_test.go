package awskms_test

import (
	"crypto/sha256"
	"net/http"
	"strings"
	"testing"

	"github.com/ib1/provenanced/testenv"
)

// An endpoint that echoes the request's credentials into its error (a misconfigured
// endpoint, a proxy, an attacker's server): neither the answer nor /readyz nor the log
// shows them. The answers name the key and a request id; the log has the rest.
func TestUpstreamEchoReachesNoAnswerAndNoLog(t *testing.T) {
	token := "IQoJb3JpZ2luX2VjE" + strings.Repeat("Xy9+/Q", 70) + "=="
	t.Setenv("AWS_SESSION_TOKEN", token) // so that the SDK sends X-Amz-Security-Token
	_, _, proxy, cfg := behindProxy(t)
	d := startDaemon(t, cfg)
	proxy.inject("Sign", fault{status: 400, code: "AccessDeniedException", msg: "not authorized.", echo: true, times: -1})
	proxy.inject("GetPublicKey", fault{status: 400, code: "AccessDeniedException", msg: "not authorized.", echo: true, times: -1})

	digest := sha256.Sum256([]byte("echo"))
	_, err := d.SignDigest(ctxT(t), "signing", digest[:])
	d.wantStatus(t, err, http.StatusServiceUnavailable, "AccessDeniedException", "not authorized.", "Authorization:", "X-Amz-Security-Token:")
	status, body := d.get(t, "/readyz")
	if status != http.StatusServiceUnavailable || !strings.Contains(body, `key \"signing\" (awskms) cannot sign now`) {
		t.Errorf("/readyz = %d %s", status, body)
	}
	// /readyz answers from what the failed Sign showed (it calls no KMS operation itself);
	// the log has that answer, the echo redacted by the same handler every line goes through.
	log := d.log.String()
	if !strings.Contains(log, "AccessDeniedException") || !strings.Contains(log, "X-Amz-Security-Token:") {
		t.Errorf("the log lacks the upstream's answer:\n%s", log)
	}
	for _, secret := range []string{token, token[:40], testenv.DummyAccessKeyID, "AWS4-HMAC-SHA256", "Signature=", "Credential="} {
		if strings.Contains(body, secret) {
			t.Errorf("/readyz shows %q: %s", secret, body)
		}
		if strings.Contains(log, secret) {
			t.Errorf("the log shows %q:\n%s", secret, log)
		}
	}
}
