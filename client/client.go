// Package client is a Go client of provenanced, over its Unix socket or over HTTP.
//
//	c, err := client.New(client.Options{Socket: "/run/provenanced/provenanced.sock"})
//	sig, err := c.SignDigest(ctx, "signing", digest) // DER ECDSA over SHA-256
//
// It depends on the standard library only, so that an application that signs through the
// daemon does not pull in the daemon.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Options say where the daemon is. Exactly one of Socket and URL is set.
type Options struct {
	Socket string // path of the daemon's Unix socket
	URL    string // base URL, such as http://127.0.0.1:8080
	// HTTPClient replaces the default client (for TLS or a proxy); it must fit URL.
	HTTPClient *http.Client
	// MaxConns bounds the connections kept open to the daemon (default 64).
	MaxConns int
	// Token is sent as "Authorization: Bearer TOKEN" when the daemon has [clients.NAME]
	// with a token (ReadTokenFile reads one).
	Token string
	// TLSConfig is for an https:// URL: the daemon's CA (RootCAs) and, for mutual TLS, a
	// client certificate (Certificates or GetClientCertificate). Ignored with HTTPClient.
	TLSConfig *tls.Config
}

// Client talks to one daemon. It is safe for concurrent use.
type Client struct {
	base  string
	hc    *http.Client
	token string
}

// New returns a client of the daemon that opts name.
func New(opts Options) (*Client, error) {
	if (opts.Socket == "") == (opts.URL == "") {
		return nil, errors.New("client: set exactly one of Socket and URL")
	}
	max := opts.MaxConns
	if max <= 0 {
		max = 64
	}
	if opts.Socket != "" {
		path := opts.Socket
		d := net.Dialer{Timeout: 5 * time.Second}
		tr := &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return d.DialContext(ctx, "unix", path)
			},
			MaxIdleConns:        max,
			MaxIdleConnsPerHost: max,
			IdleConnTimeout:     idleConnTimeout,
		}
		return &Client{base: "http://provenanced", hc: &http.Client{Transport: tr, CheckRedirect: sameOrigin(nil)}, token: opts.Token}, nil
	}
	u, err := url.Parse(opts.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("client: %q is not an http:// or https:// URL", opts.URL)
	}
	var hc *http.Client
	if opts.HTTPClient != nil {
		c := *opts.HTTPClient // the caller's stays as it is
		hc = &c
	} else {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConns, tr.MaxIdleConnsPerHost = max, max
		tr.IdleConnTimeout = idleConnTimeout
		if opts.TLSConfig != nil {
			tr.TLSClientConfig = opts.TLSConfig.Clone()
		}
		hc = &http.Client{Transport: tr}
	}
	hc.CheckRedirect = sameOrigin(hc.CheckRedirect)
	if opts.Token != "" && u.Scheme == "http" && !isLoopback(u.Hostname()) {
		return nil, fmt.Errorf("client: a bearer token would cross the network in clear to %s; use https://", u.Host)
	}
	return &Client{base: strings.TrimRight(opts.URL, "/"), hc: hc, token: opts.Token}, nil
}

// idleConnTimeout is shorter than the daemon's idle_timeout (30 s by default): a client
// that closes an idle connection first never sends a request on one the daemon is closing.
const idleConnTimeout = 20 * time.Second

// sameOrigin is a CheckRedirect that follows a redirect only to the scheme, host and port
// the request went to, then asks next (nil: net/http's default). A redirect elsewhere
// (https to http above all) would carry the request's body, and for a downgrade to the
// same host the bearer token too, to wherever the answer says.
func sameOrigin(next func(*http.Request, []*http.Request) error) func(*http.Request, []*http.Request) error {
	return func(req *http.Request, via []*http.Request) error {
		from := via[0].URL
		if req.URL.Scheme != from.Scheme || !strings.EqualFold(req.URL.Host, from.Host) {
			return fmt.Errorf("provenanced: not following a redirect from %s://%s to %s://%s: another scheme or host", from.Scheme, from.Host, req.URL.Scheme, req.URL.Host)
		}
		if next != nil {
			return next(req, via)
		}
		if len(via) >= 10 {
			return errors.New("provenanced: stopped after 10 redirects")
		}
		return nil
	}
}

// Close closes idle connections.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

// Error is an error answer of the daemon.
type Error struct {
	Status  int    // HTTP status
	Code    string // bad_request, not_found, too_large, unsupported_media_type, unavailable, internal
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("provenanced: %d %s: %s", e.Status, e.Code, e.Message)
}

// Key is a key as the daemon lists it.
type Key struct {
	Name         string   `json:"name"`
	Backend      string   `json:"backend"`
	Algorithm    string   `json:"algorithm"`
	PublicKey    string   `json:"public_key"`   // PEM
	Certificates []string `json:"certificates"` // PEM, leaf first
	Serial       string   `json:"serial,omitempty"`
	NotAfter     string   `json:"not_after,omitempty"`
}

// Keys lists the daemon's keys.
func (c *Client) Keys(ctx context.Context) ([]Key, error) {
	var out struct {
		Keys []Key `json:"keys"`
	}
	return out.Keys, c.do(ctx, http.MethodGet, "/v1/keys", nil, &out)
}

// Key returns one key.
func (c *Client) Key(ctx context.Context, name string) (*Key, error) {
	var k Key
	if err := c.do(ctx, http.MethodGet, "/v1/keys/"+url.PathEscape(name), nil, &k); err != nil {
		return nil, err
	}
	return &k, nil
}

type signResponse struct {
	Key       string `json:"key"`
	Algorithm string `json:"algorithm"`
	Signature []byte `json:"signature"`
	Batch     []struct {
		Signature []byte `json:"signature"`
		Error     *Error `json:"error"`
	} `json:"batch"`
}

// SignDigest asks key to sign a 32-byte SHA-256 digest; the signature is ASN.1 DER.
func (c *Client) SignDigest(ctx context.Context, key string, digest []byte) ([]byte, error) {
	return c.sign(ctx, key, map[string]string{"digest": base64.StdEncoding.EncodeToString(digest)})
}

// SignMessage asks key to sign SHA-256(message).
func (c *Client) SignMessage(ctx context.Context, key string, message []byte) ([]byte, error) {
	return c.sign(ctx, key, map[string]string{"message": base64.StdEncoding.EncodeToString(message)})
}

func (c *Client) sign(ctx context.Context, key string, body any) ([]byte, error) {
	var out signResponse
	if err := c.do(ctx, http.MethodPost, "/v1/keys/"+url.PathEscape(key)+"/sign", body, &out); err != nil {
		return nil, err
	}
	return out.Signature, nil
}

// BatchResult is one item of a batch: a signature, or the error of that item.
type BatchResult struct {
	Signature []byte
	Err       *Error
}

// SignDigests signs many digests in one round trip; results are in the same order.
func (c *Client) SignDigests(ctx context.Context, key string, digests [][]byte) ([]BatchResult, error) {
	items := make([]map[string]string, len(digests))
	for i, d := range digests {
		items[i] = map[string]string{"digest": base64.StdEncoding.EncodeToString(d)}
	}
	var out signResponse
	if err := c.do(ctx, http.MethodPost, "/v1/keys/"+url.PathEscape(key)+"/sign", map[string]any{"batch": items}, &out); err != nil {
		return nil, err
	}
	if len(out.Batch) != len(digests) {
		return nil, fmt.Errorf("provenanced: %d results for %d digests", len(out.Batch), len(digests))
	}
	res := make([]BatchResult, len(out.Batch))
	for i, b := range out.Batch {
		res[i] = BatchResult{Signature: b.Signature, Err: b.Error}
	}
	return res, nil
}

// Do sends a JSON request to path and decodes a JSON answer into out (unless out is nil).
// It serves the routes that have no method of their own here.
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	return c.do(ctx, method, path, in, out)
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error  *Error `json:"error"`
			Detail any    `json:"detail"`
		}
		if json.Unmarshal(data, &e) == nil && e.Error != nil {
			e.Error.Status = resp.StatusCode
			return e.Error
		}
		if e.Detail != nil {
			d, _ := json.Marshal(e.Detail)
			return &Error{Status: resp.StatusCode, Code: "error", Message: string(d)}
		}
		return &Error{Status: resp.StatusCode, Code: "error", Message: strings.TrimSpace(string(data))}
	}
	if out == nil {
		return nil
	}
	if raw, ok := out.(*[]byte); ok {
		*raw = data
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("provenanced: cannot decode the answer to %s %s: %w", method, path, err)
	}
	return nil
}
