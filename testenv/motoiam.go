package testenv

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// Identities in moto's IAM: users with an access key and one inline policy. moto checks
// them only after EnforceIAM, and then for every request, KMS's included, as AWS does:
// an unknown access key is refused (403, InvalidClientTokenId), and an action the
// identity's policy does not allow is denied (403, AccessDenied). Both answers are AWS's
// query-protocol XML (<ErrorResponse>), not KMS's JSON: what a KMS client meets from
// some proxies and AWS front ends too.
//
// The IAM calls are signed form posts (IAM's query protocol) rather than an SDK client,
// which this module does not otherwise need.

// NewIdentity creates the IAM user name, allowed actions ("kms:Sign") on every resource,
// and returns its access key.
func (m *Moto) NewIdentity(t TB, name string, actions ...string) Credentials {
	t.Helper()
	m.iam(t, url.Values{"Action": {"CreateUser"}, "UserName": {name}})
	m.SetPolicy(t, name, actions...)
	var out struct {
		Key Credentials `xml:"CreateAccessKeyResult>AccessKey"`
	}
	if err := xml.Unmarshal(m.iam(t, url.Values{"Action": {"CreateAccessKey"}, "UserName": {name}}), &out); err != nil || out.Key.AccessKeyID == "" {
		t.Fatalf("testenv: moto CreateAccessKey %s: %v", name, err)
	}
	return out.Key
}

// SetPolicy replaces what user may do: actions on every resource (none: nothing).
func (m *Moto) SetPolicy(t TB, user string, actions ...string) {
	t.Helper()
	stmt := []map[string]any{}
	if len(actions) > 0 {
		stmt = append(stmt, map[string]any{"Effect": "Allow", "Action": actions, "Resource": "*"})
	}
	doc, _ := json.Marshal(map[string]any{"Version": "2012-10-17", "Statement": stmt})
	m.iam(t, url.Values{"Action": {"PutUserPolicy"}, "UserName": {user}, "PolicyName": {"provenanced-test"}, "PolicyDocument": {string(doc)}})
}

// EnforceIAM has moto check every later request's credentials and policy, from now until
// the test ends. Client (and so CreateKey and the rest) then uses an administrator
// created first; a test's daemon needs an identity of NewIdentity.
func (m *Moto) EnforceIAM(t TB) {
	t.Helper()
	if m.creds() != (Credentials{DummyAccessKeyID, DummySecretKey}) {
		return // enforced already
	}
	admin := m.NewIdentity(t, "provenanced-test-admin", "*")
	m.mu.Lock()
	m.admin = admin
	m.mu.Unlock()
	// moto's own switch: check every request after the next 0 unchecked ones.
	resp, err := http.Post(m.Endpoint()+"/moto-api/reset-auth", "text/plain", strings.NewReader("0"))
	if err != nil {
		t.Fatalf("testenv: moto reset-auth: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("testenv: moto reset-auth: HTTP %d", resp.StatusCode)
	}
}

// iam makes one IAM call, signed with SigV4 for service iam (which is how moto's server
// tells an IAM request from another), and returns its XML answer.
func (m *Moto) iam(t TB, form url.Values) []byte {
	t.Helper()
	form.Set("Version", "2010-05-08")
	body := form.Encode()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "POST", m.Endpoint()+"/", strings.NewReader(body))
	if err != nil {
		t.Fatalf("%v", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	sum := sha256.Sum256([]byte(body))
	c := m.creds()
	creds := aws.Credentials{AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey}
	if err := v4.NewSigner().SignHTTP(ctx, creds, req, hex.EncodeToString(sum[:]), "iam", "us-east-1", time.Now()); err != nil {
		t.Fatalf("testenv: signing an IAM call: %v", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("testenv: moto IAM %s: %v", form.Get("Action"), err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("testenv: moto IAM %s: HTTP %d: %s", form.Get("Action"), resp.StatusCode, data)
	}
	return data
}

// String names the identity by its access key id, never its secret.
func (c Credentials) String() string { return fmt.Sprintf("access key %s", c.AccessKeyID) }

// KMSIdentity gives the test, on emulator e, an identity that may do allow ("kms:Sign",
// "kms:GetPublicKey") and nothing else, or, with badCreds, credentials that AWS does not
// know. It returns the endpoint to reach e through, the environment that carries the
// identity's credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), and the fault proxy
// (nil on moto). moto checks identities itself (EnforceIAM, done here) and refuses as
// IAM does in front of KMS: AWS query XML, HTTP 403. local-kms checks nothing, so a fault
// proxy in front of it answers what KMS answers such an identity, in KMS's JSON.
func KMSIdentity(t TB, e KMSEmulator, name string, badCreds bool, allow ...string) (string, []string, *KMSProxy) {
	t.Helper()
	if m, ok := e.(*Moto); ok {
		m.EnforceIAM(t)
		c := Credentials{AccessKeyID: "AKIAPROVENANCEDUNKNOWN", SecretAccessKey: "never-issued"}
		if !badCreds {
			c = m.NewIdentity(t, name, allow...)
		}
		return m.Endpoint(), []string{"AWS_ACCESS_KEY_ID=" + c.AccessKeyID, "AWS_SECRET_ACCESS_KEY=" + c.SecretAccessKey}, nil
	}
	proxy := NewKMSProxy(t, e.Endpoint())
	RefuseAs(proxy, badCreds, allow...)
	return proxy.URL, nil, proxy
}

// RefuseAs has proxy answer GetPublicKey and Sign as KMS answers an identity that may do
// only allow, or credentials it does not know; it forgets the proxy's earlier faults.
func RefuseAs(proxy *KMSProxy, badCreds bool, allow ...string) {
	proxy.Reset()
	for _, op := range []string{"GetPublicKey", "Sign"} {
		switch {
		case badCreds:
			proxy.Inject(op, KMSFault{Status: 400, Code: "UnrecognizedClientException", Msg: "The security token included in the request is invalid.", Times: -1})
		case !slices.Contains(allow, "kms:"+op):
			proxy.Inject(op, KMSFault{Status: 400, Code: "AccessDeniedException", Times: -1,
				Msg: fmt.Sprintf("User: arn:aws:sts::%s:assumed-role/provenanced/pod is not authorized to perform: kms:%s on resource: arn:aws:kms:%s:%s:key/x because no identity-based policy allows the kms:%s action", LocalKMSAccount, op, LocalKMSRegion, LocalKMSAccount, op)})
		}
	}
}
