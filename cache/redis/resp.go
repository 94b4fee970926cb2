package redis

import (
	"bufio"
	"io"
	"net"
	"strconv"
)

// MaxBulkLen is the largest bulk string a client may send (Redis's
// proto-max-bulk-len is 512 MB, but Redis reads a large bulk as it
// arrives; miniredis allocates it whole from the length alone).
const MaxBulkLen = 32 << 20

// respConn sits between a client's socket and miniredis's reader and
// takes out, before miniredis sees them, the two requests that crash
// miniredis (v2.40.0) outside any recover, ending the whole process:
//
//   - an empty command array (*0 or *-1): miniredis's Dispatch indexes
//     args[0]; Redis ignores such a request, and so does respConn;
//   - a bulk length above MaxBulkLen: miniredis allocates length+2 bytes
//     up front (a negative length+2 panics, a large one exhausts
//     memory); respConn ends the connection instead, as Redis does with
//     "invalid bulk length".
//
// It frames the stream exactly as miniredis's readArray and readString
// do (a line to '\n', then a bulk's length+2 bytes), so both always agree
// where a command starts. Anything miniredis would refuse is passed on
// and the stream ends after it: miniredis closes the connection there.
type respConn struct {
	net.Conn
	r       *bufio.Reader
	pending []byte // bytes to hand to miniredis before reading more
	elems   int    // elements left in the current command
	body    int    // bulk bytes (and CRLF) left to pass through
	done    bool   // the stream ends once pending is drained
}

func newRESPConn(c net.Conn) *respConn { return &respConn{Conn: c, r: bufio.NewReader(c)} }

func (c *respConn) Read(p []byte) (int, error) {
	for len(c.pending) == 0 {
		if c.done {
			return 0, io.EOF
		}
		if c.body > 0 {
			n, err := c.r.Read(p[:min(len(p), c.body)])
			c.body -= n
			if c.body == 0 {
				c.elems--
			}
			return n, err
		}
		line, err := c.r.ReadString('\n')
		if err != nil {
			// miniredis's ReadString fails the same way on what is left.
			c.pending, c.done = []byte(line), true
			continue
		}
		c.pending = []byte(line)
		if c.elems == 0 {
			c.command(line)
		} else {
			c.element(line)
		}
	}
	n := copy(p, c.pending)
	c.pending = c.pending[n:]
	return n, nil
}

// command checks a line where miniredis expects an array header.
func (c *respConn) command(line string) {
	if len(line) < 3 || line[0] != '*' {
		c.done = true // ErrProtocol
		return
	}
	n, err := strconv.Atoi(line[1 : len(line)-2])
	switch {
	case err != nil:
		c.done = true
	case n <= 0:
		c.pending = nil // an empty command: dropped, as Redis does
	default:
		c.elems = n
	}
}

// element checks a line where miniredis expects one of a command's
// strings.
func (c *respConn) element(line string) {
	if len(line) < 3 {
		c.done = true
		return
	}
	switch line[0] {
	case '+', '-', ':':
		c.elems--
	case '$':
		n, err := strconv.Atoi(line[1 : len(line)-2])
		switch {
		case err != nil:
			c.done = true
		case n < 0:
			c.elems--
		case n > MaxBulkLen:
			c.pending, c.done = nil, true
		default:
			c.body = n + 2
		}
	default:
		c.done = true
	}
}
