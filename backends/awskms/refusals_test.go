package awskms_test

import (
	"strings"
	"testing"

	"github.com/ib1/provenanced/backends"
	"github.com/ib1/provenanced/testenv"
)

// Error answers in forms other than KMS's JSON are read into AWS's code and message, and
// one that is no AWS answer at all (a proxy's page) says so without repeating it. A code
// that the SDK models becomes that type, as from KMS's JSON: NotFoundException is a key
// that does not exist. (moto's own XML refusals are in TestRefusalsAtStart.)
func TestErrorBodies(t *testing.T) {
	lk := testenv.StartLocalKMS(t)
	key, proxy, _ := testenv.BehindProxy(t, lk)
	cases := []struct {
		name  string
		fault testenv.KMSFault
		want  string
	}{
		{"query XML", testenv.KMSFault{Status: 403, XML: true, Code: "AccessDenied", Msg: "User: arn:aws:iam::111122223333:user/x is not authorized to perform: kms:GetPublicKey"},
			"GetPublicKey: AccessDenied: User: arn:aws:iam::111122223333:user/x is not authorized to perform: kms:GetPublicKey (the daemon's identity needs kms:GetPublicKey"},
		{"query XML, a modelled code", testenv.KMSFault{Status: 400, XML: true, Code: "NotFoundException", Msg: "Key 'alias/provenance' does not exist"},
			"has no key alias/provenance: NotFoundException: Key 'alias/provenance' does not exist"},
		{"moto's XML", testenv.KMSFault{Status: 403, ContentType: "application/xml", Body: `<?xml version="1.0" encoding="utf-8"?>
<ErrorResponse><Errors><Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match the signature you provided.</Message><Type>Sender</Type></Error></Errors></ErrorResponse>`},
			"GetPublicKey: SignatureDoesNotMatch: The request signature we calculated does not match the signature you provided. (AWS refused the credentials"},
		{"JSON with an Error object", testenv.KMSFault{Status: 403, ContentType: "application/json", Body: `{"Error":{"Code":"ExpiredToken","Message":"The security token included in the request is expired"},"RequestId":"x"}`},
			"GetPublicKey: ExpiredToken: The security token included in the request is expired (AWS refused the credentials"},
		{"KMS's JSON", testenv.KMSFault{Status: 400, Code: "AccessDeniedException", Msg: "no"},
			"GetPublicKey: AccessDeniedException: no (the daemon's identity needs kms:GetPublicKey"},
		{"a proxy's page", testenv.KMSFault{Status: 403, ContentType: "text/html", Body: "<html><body><h1>403 Forbidden</h1>Authorization: AWS4-HMAC-SHA256 echoed</body></html>"},
			"HTTP status 403 from AWS KMS, with a text/html answer that is not KMS's"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.fault.Times = -1
			proxy.Reset()
			proxy.Inject("GetPublicKey", tc.fault)
			cfg := writeConfig(t, t.TempDir(), key.Bundle, "alias/provenance", proxy.URL)
			_, err := backends.Open(ctxT(t), cfg.Keys[0], backends.Options{})
			t.Log(err)
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "echoed") {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
}
