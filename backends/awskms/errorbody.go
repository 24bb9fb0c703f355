package awskms

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"io"
	"mime"
	"strings"

	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// Not every refusal on the way to KMS comes in KMS's JSON ({"__type": ..., "message":
// ...}). AWS's front ends and IAM checks in front of a service, some proxies and VPC
// endpoint policies, and emulators (moto) answer in AWS's query protocol, XML:
//
//	<ErrorResponse><Error><Type>Sender</Type><Code>InvalidClientTokenId</Code>
//	<Message>The security token included in the request is invalid.</Message></Error></ErrorResponse>
//
// and some in a JSON form of it ({"Error": {"Code": ..., "Message": ...}}). The SDK's
// awsJson deserializer (smithy-go's transport/http/protocol/awsjson, deserializeError)
// decodes the body as JSON before it looks at anything else and, when that fails, returns
// a DeserializationError that holds neither the code nor the message, not even the code
// in the X-Amzn-ErrorType header it would otherwise have used: all that reaches the
// daemon is "HTTP status 403". Worse, the refusal then has no code by which to tell it
// from a fault that a retry or a restart could mend.
//
// readErrorBodies sits between that deserializer and the transport: an error answer in
// one of those forms is rewritten into KMS's own JSON form before the SDK reads it, so
// that the SDK builds the same error it builds for KMS's answers (a modelled type such as
// *types.NotFoundException where the code is one, else a smithy.APIError with the code
// and message), and the retryer, permanent and reason all see KMS's words.
var readErrorBodies = middleware.DeserializeMiddlewareFunc("provenancedErrorBodies", func(ctx context.Context, in middleware.DeserializeInput, next middleware.DeserializeHandler) (middleware.DeserializeOutput, middleware.Metadata, error) {
	out, md, err := next.HandleDeserialize(ctx, in)
	resp, ok := out.RawResponse.(*smithyhttp.Response)
	if err != nil || !ok || resp.StatusCode < 300 || resp.Body == nil {
		return out, md, err
	}
	// Error bodies are small; a larger one is not one of these and is left whole.
	body, rerr := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	rest := resp.Body
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(body), rest), rest}
	if rerr != nil {
		return out, md, err
	}
	if code, msg, ok := foreignError(resp.Header.Get("Content-Type"), body); ok {
		kmsJSON, _ := json.Marshal(map[string]string{"__type": code, "message": msg})
		resp.Body = struct {
			io.Reader
			io.Closer
		}{bytes.NewReader(kmsJSON), rest}
		resp.Header.Set("Content-Type", "application/x-amz-json-1.1")
		// The header would win over the body's code in the SDK; an XML answer's header,
		// when it has one, says the same, and a stale one must not.
		resp.Header.Del("X-Amzn-ErrorType")
		resp.ContentLength = int64(len(kmsJSON))
	}
	return out, md, err
})

func addReadErrorBodies(st *middleware.Stack) error {
	return st.Deserialize.Insert(readErrorBodies, "OperationDeserializer", middleware.After)
}

// foreignError reads the code and message of an error body that is not in KMS's JSON
// form but in one the SDK would not read: AWS query XML, or JSON with an "Error" object.
// ok is false for anything else, KMS's own form included, which the SDK reads itself.
func foreignError(contentType string, body []byte) (code, msg string, ok bool) {
	trimmed := bytes.TrimSpace(body)
	mt, _, _ := mime.ParseMediaType(contentType)
	switch {
	case strings.HasSuffix(mt, "xml") || bytes.HasPrefix(trimmed, []byte("<")):
		return xmlError(trimmed)
	case bytes.HasPrefix(trimmed, []byte("{")):
		var v struct {
			Type  string `json:"__type"`
			Error *struct {
				Code, Message string
			}
		}
		if json.Unmarshal(trimmed, &v) != nil || v.Type != "" || v.Error == nil || v.Error.Code == "" {
			return "", "", false
		}
		return v.Error.Code, v.Error.Message, true
	}
	return "", "", false
}

// xmlError finds the first <Error> element, wherever it is (AWS's <ErrorResponse><Error>,
// moto's <ErrorResponse><Errors><Error>, S3's bare <Error>), and reads its Code and
// Message.
func xmlError(body []byte) (code, msg string, ok bool) {
	d := xml.NewDecoder(bytes.NewReader(body))
	for {
		tok, err := d.Token()
		if err != nil {
			return "", "", false
		}
		start, isStart := tok.(xml.StartElement)
		if !isStart || start.Name.Local != "Error" {
			continue
		}
		var e struct{ Code, Message string }
		if d.DecodeElement(&e, &start) != nil || e.Code == "" {
			return "", "", false
		}
		return strings.TrimSpace(e.Code), strings.TrimSpace(e.Message), true
	}
}
