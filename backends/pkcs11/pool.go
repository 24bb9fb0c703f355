//go:build cgo

package pkcs11

import "context"

// pool bounds and reuses a key's signing sessions. A PKCS#11 session runs one operation
// at a time, so each signature borrows a session for SignInit and Sign and gives it back.
// Sessions are opened when needed, up to the pool's size, and kept while they work; the
// login they need is held by the key's anchor session, not by them.
//
// A signature waits for a session as long as its context allows and no longer: a token
// that is slow or hung turns into a 503 at the request's deadline, not a pile of blocked
// requests.
type pool struct {
	// slots holds one token per session that exists or is being opened.
	slots chan struct{}
	idle  chan *session
}

func newPool(size int) *pool {
	return &pool{slots: make(chan struct{}, size), idle: make(chan *session, size)}
}

// get returns an idle session, or nil with a slot reserved: the caller then opens a
// session, and calls drop if it cannot.
func (p *pool) get(ctx context.Context) (*session, error) {
	select {
	case s := <-p.idle:
		return s, nil
	default:
	}
	select {
	case s := <-p.idle:
		return s, nil
	case p.slots <- struct{}{}:
		return nil, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// put gives a working session back.
func (p *pool) put(s *session) { p.idle <- s }

// drop gives back the slot of a session that was closed, forgotten or never opened.
func (p *pool) drop() { <-p.slots }

// takeIdle removes every idle session (to close them) and gives back their slots.
func (p *pool) takeIdle() []*session {
	var out []*session
	for {
		select {
		case s := <-p.idle:
			out = append(out, s)
			p.drop()
		default:
			return out
		}
	}
}

// getIdle waits for an idle session only: the token will not open another.
func (p *pool) getIdle(ctx context.Context) (*session, error) {
	select {
	case s := <-p.idle:
		return s, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// empty reports whether the key has no signing session open (nor one being opened) that
// a waiter could get.
func (p *pool) empty() bool { return len(p.slots) == 0 }
