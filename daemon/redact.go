package daemon

import (
	"context"
	"log/slog"
	"regexp"
	"strings"
)

// redactingHandler keeps credentials out of the log. The daemon logs a backend's error
// text as it is (the operator needs the endpoint, the ARN, the upstream's words), and an
// upstream — a misconfigured endpoint, a proxy, an attacker's server — can echo the
// request's Authorization or X-Amz-Security-Token header into that text. Backends keep
// their own secrets out of their errors; this catches what came back from outside.
type redactingHandler struct{ slog.Handler }

func (h redactingHandler) Handle(ctx context.Context, r slog.Record) error {
	dirty := false
	r.Attrs(func(a slog.Attr) bool {
		dirty = a.Value.Kind() == slog.KindString && suspicious(a.Value.String())
		return !dirty
	})
	if !dirty {
		return h.Handler.Handle(ctx, r)
	}
	clean := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	r.Attrs(func(a slog.Attr) bool {
		if a.Value.Kind() == slog.KindString {
			a.Value = slog.StringValue(redact(a.Value.String()))
		}
		clean.AddAttrs(a)
		return true
	})
	return h.Handler.Handle(ctx, clean)
}

func (h redactingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return redactingHandler{h.Handler.WithAttrs(as)}
}

func (h redactingHandler) WithGroup(name string) slog.Handler {
	return redactingHandler{h.Handler.WithGroup(name)}
}

// suspicious is the cheap test run on every string logged: most are short names.
func suspicious(s string) bool {
	if len(s) < 20 {
		return false
	}
	return strings.Contains(s, "AWS4-") || strings.Contains(s, "Signature=") || strings.Contains(s, "Credential=") ||
		strings.Contains(s, "IA") || longToken(s)
}

// longToken reports a run of 100 or more base64 characters: a session token (several
// hundred), a bearer token or a key; nothing the daemon logs on purpose looks so.
func longToken(s string) bool {
	run := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == '/' || c == '=' || c == '-' || c == '_' {
			if run++; run >= 100 {
				return true
			}
		} else {
			run = 0
		}
	}
	return false
}

var secrets = []*regexp.Regexp{
	// SigV4: the Authorization header's credential scope and signature.
	regexp.MustCompile(`AWS4-HMAC-SHA256[^"',;]*`),
	regexp.MustCompile(`(Credential|Signature|SignedHeaders)=[^\s"',;&]*`),
	// Access key ids (long-term AKIA, temporary ASIA).
	regexp.MustCompile(`\b(AKIA|ASIA)[A-Z0-9]{16}\b`),
	// Session tokens and anything else long and opaque.
	regexp.MustCompile(`[A-Za-z0-9+/=_-]{100,}`),
}

func redact(s string) string {
	for _, re := range secrets {
		s = re.ReplaceAllString(s, "[redacted]")
	}
	return s
}
