package access

import (
	"context"
	"crypto/x509"
	"sync/atomic"
	"time"
)

// Conn is what access control keeps about one connection, for all the requests it
// carries: whoever accepts connections (the daemon) makes one per connection and puts it
// in the connection's context (WithConn).
type Conn struct {
	// Identified, when set, is called (on the request's goroutine) the first time a
	// request on the connection is recognised as a configured client's: the daemon then
	// counts the connection among those it keeps room for.
	Identified func()
	identified atomic.Bool

	// verdict caches the re-verification of the connection's client certificate against
	// one policy's client CAs, so that it costs one verification per connection and
	// configuration, not one per request.
	verdict atomic.Pointer[certVerdict]
}

type certVerdict struct {
	policy *Policy
	leaf   *x509.Certificate
	ok     bool
	until  time.Time // the earliest notAfter of the chain found
}

type connKey struct{}

// WithConn puts c in a connection's context.
func WithConn(ctx context.Context, c *Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// markIdentified calls Identified, once per connection.
func (c *Conn) markIdentified() {
	if c.Identified != nil && !c.identified.Load() && c.identified.CompareAndSwap(false, true) {
		c.Identified()
	}
}

func connFrom(ctx context.Context) *Conn {
	c, _ := ctx.Value(connKey{}).(*Conn)
	return c
}
