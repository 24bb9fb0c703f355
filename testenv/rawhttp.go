package testenv

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
)

// RawConn is one keep-alive HTTP/1.1 connection that sends a prepared request and reads
// the answer with as little work as a client can do. The benchmarks drive the daemon, and
// what they compare it with, through it: Go's net/http client costs tens of µs of CPU per
// request, which on a small machine the client takes from the server it measures.
type RawConn struct {
	conn net.Conn
	r    *bufio.Reader
	body []byte
}

// DialRaw connects over "unix" (addr is a socket path) or "tcp".
func DialRaw(network, addr string) (*RawConn, error) {
	c, err := net.Dial(network, addr)
	if err != nil {
		return nil, err
	}
	return &RawConn{conn: c, r: bufio.NewReaderSize(c, 16<<10)}, nil
}

// RawRequest builds a POST of a JSON body, to send many times.
func RawRequest(path string, body []byte) []byte {
	return fmt.Appendf(nil, "POST %s HTTP/1.1\r\nHost: provenanced\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", path, len(body), body)
}

// Do sends req and reads the answer, which must be a 200 with a Content-Length. The
// body it returns is valid until the next call.
func (c *RawConn) Do(req []byte) ([]byte, error) {
	if _, err := c.conn.Write(req); err != nil {
		return nil, err
	}
	status, err := c.r.ReadSlice('\n')
	if err != nil {
		return nil, err
	}
	ok := bytes.HasPrefix(status, []byte("HTTP/1.1 200 "))
	length := -1
	for {
		line, err := c.r.ReadSlice('\n')
		if err != nil {
			return nil, err
		}
		if len(line) <= 2 {
			break
		}
		if len(line) > 16 && (line[0] == 'C' || line[0] == 'c') && bytes.EqualFold(line[:16], []byte("Content-Length: ")) {
			length, err = strconv.Atoi(string(bytes.TrimSpace(line[16:])))
			if err != nil {
				return nil, fmt.Errorf("bad Content-Length %q", line)
			}
		}
	}
	if length < 0 {
		return nil, errors.New("the answer has no Content-Length")
	}
	if cap(c.body) < length {
		c.body = make([]byte, length)
	}
	c.body = c.body[:length]
	if _, err := io.ReadFull(c.r, c.body); err != nil {
		return nil, err
	}
	if !ok {
		return c.body, fmt.Errorf("answer %q: %s", bytes.TrimSpace(status), c.body)
	}
	return c.body, nil
}

// Close closes the connection.
func (c *RawConn) Close() error { return c.conn.Close() }
