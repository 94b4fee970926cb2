package cache

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"sync"
	"sync/atomic"

	"substrate/internal/faults"
)

// conn is one client connection. Its fields are owned by whoever serves
// it: its serve goroutine, or (a plain TCP connection on Linux) the event
// loop that holds it, until a write would block and the connection is
// handed to a goroutine of its own (evloop_linux.go).
type conn struct {
	s       *Server
	nc      net.Conn  // nil for a socket accepted by a loop's accept (acceptRaw)
	peer    net.Addr  // nc's remote address
	in      io.Reader // nc, or its rawIO
	listen  net.Addr
	w       *bufio.Writer  // the loop's spare or from writerPool; returned while the conn waits for input
	out     countingWriter // c.w writes to &out
	st      *serverStats   // the server's counters, or the serving loop's (see statsSum)
	p       Parser
	scratch []byte
	lastCmd atomic.Uint32 // rel time of the last command, read by stats conns
	held    *shard        // shard locked by a meta command (lockShard), for panic cleanup
	ev      *evConn       // set when an event loop serves the connection

	// Input: buf[start:end] is read but not yet parsed; swallow bytes
	// still to come are discarded (the rest of a refused data block).
	buf          []byte
	start, end   int
	swallow      int
	sawFirstByte bool     // the protocol is chosen (from the first byte)
	bin          *binConn // the connection speaks the binary protocol
}

func newConn(s *Server, nc net.Conn, listen net.Addr) *conn {
	c := new(conn)
	c.init(s, nc, listen)
	return c
}

// init sets up a zero conn (newConn; a loop's recycled loopConn).
func (c *conn) init(s *Server, nc net.Conn, listen net.Addr) {
	c.s, c.nc, c.in, c.listen, c.st = s, nc, nc, listen, &s.stats
	if nc != nil {
		c.peer = nc.RemoteAddr()
	}
	c.out = countingWriter{nc, &s.stats.bytesWritten}
	if r := newRawIO(nc); r != nil {
		c.in, c.out.w = r, r
	}
	c.p.MaxItemSize = s.parseMaxItem()
	c.lastCmd.Store(s.clk.now())
}

var writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, writeBufSize) }}

// loopState is what an event loop lends the connection it is serving
// (conn.servingLoop): a loop serves one connection at a time and sends
// its replies before it serves the next, so one write buffer and one read
// buffer serve all of a loop's connections while they have no partial
// input or reply pending, as memcached's worker threads share their read
// and response buffers. It belongs to the goroutine running the loop.
type loopState struct {
	stats  serverStats   // this loop's connections' counters (see statsSum)
	spareW *bufio.Writer // the write buffer, while no connection holds it
	spareR []byte        // a read buffer of readBufSize, likewise
	now    uint32        // clock.now when the loop last woke up (conn.now)
}

// now is the server's clock for a command: the serving loop's reading
// from its last wake-up, else a fresh one. A loop reads the clock once
// per wake-up for every request of that batch; a batch lasts
// microseconds, where memcached's own clock (current_time) is updated
// once a second.
func (c *conn) now() uint32 {
	if ls := c.servingLoop(); ls != nil {
		return ls.now
	}
	return c.s.clk.now()
}

// markActive records the time of a command for "stats conns".
func (c *conn) markActive(now uint32) {
	if c.lastCmd.Load() != now {
		c.lastCmd.Store(now)
	}
}

// takeReadBuf gives the connection a read buffer if it has none: the
// serving loop's spare or a new one.
func (c *conn) takeReadBuf() {
	if c.buf != nil {
		return
	}
	if ls := c.servingLoop(); ls != nil && ls.spareR != nil {
		c.buf, ls.spareR = ls.spareR, nil
		return
	}
	c.buf = make([]byte, readBufSize)
}

// releaseReadBuf gives an empty read buffer of the initial size back to
// the serving loop, when the loop has none spare and the connection has
// no partial input.
func (c *conn) releaseReadBuf() {
	ls := c.servingLoop()
	if ls == nil || c.start != c.end || len(c.buf) != readBufSize {
		return
	}
	if ls.spareR == nil {
		ls.spareR = c.buf
	}
	c.buf = nil
	c.start, c.end = 0, 0
}

// releaseWriter returns the write buffer to the serving loop's spare or
// to the pool (replies still in it are dropped).
func (c *conn) releaseWriter() {
	if c.w == nil {
		return
	}
	if ls := c.servingLoop(); ls != nil && ls.spareW == nil {
		ls.spareW = c.w
	} else {
		c.w.Reset(nil)
		writerPool.Put(c.w)
	}
	c.w = nil
}

// serve is the connection's goroutine: read, then process every complete
// command (process), and flush replies only before blocking on the socket
// again, so a pipelined batch costs one write.
func (c *conn) serve() {
	// A panic while serving this client closes only this connection
	// (memcached has no error reply for it): logged once, counted, and
	// the deferred close below still runs.
	defer faults.Recover(c.s.log, faults.Memcached, c.remote(), func(any) { c.releaseShard() })
	defer func() {
		c.nc.Close()
		c.releaseWriter()
	}()
	if tc, ok := c.nc.(*tls.Conn); ok {
		if err := c.s.tls.handshake(tc); err != nil {
			if c.logOK() {
				c.s.log.Info("cache: TLS handshake failed", "remote", c.remote(), "err", err)
			}
			return
		}
	}
	c.buf = make([]byte, readBufSize)
	c.serveLoop()
}

// serveLoop is serve's loop, also entered by a connection an event loop
// handed over with input still buffered.
func (c *conn) serveLoop() {
	for {
		if c.process() {
			return
		}
		c.makeRoom()
		if !c.flushIdle() {
			return
		}
		n, err := c.in.Read(c.buf[c.end:])
		if n > 0 {
			c.end += n
			c.s.stats.bytesRead.Add(uint64(n))
		}
		if err != nil {
			return
		}
	}
}

// process parses and executes every complete command or request in
// buf[start:end], in the text or the binary protocol (chosen by the first
// byte). It returns true when the connection must be closed; replies it
// must send first are flushed.
func (c *conn) process() bool {
	for {
		if c.swallow > 0 {
			n := min(c.swallow, c.end-c.start)
			c.start += n
			c.swallow -= n
			if c.swallow > 0 {
				return false
			}
		}
		if c.start == c.end {
			return false
		}
		if !c.sawFirstByte {
			c.sawFirstByte = true
			// memcached -B auto: the first byte picks the protocol;
			// -B binary or SASL: only binary; -B ascii: only text.
			if c.s.binaryFirst(c.buf[c.start]) {
				c.bin = &binConn{}
				c.bin.p.MaxItemSize = c.s.parseMaxItem()
				c.bin.p.SASL = c.s.cfg.SASL
			}
		}
		var more, closeConn bool
		if c.bin != nil {
			more, closeConn = c.stepBinary()
		} else {
			more, closeConn = c.stepText()
		}
		if closeConn {
			return true
		}
		if !more {
			return false
		}
	}
}

// need is how many bytes the parser needs before it can go on (0: a line).
func (c *conn) need() int {
	if c.bin != nil {
		return c.bin.p.Need
	}
	return c.p.Need
}

// writer makes sure the connection has a write buffer: the serving
// loop's spare (a loop flushes each connection's replies before it serves
// the next, so one buffer serves them all), else one from the pool.
func (c *conn) writer() {
	if c.w != nil {
		return
	}
	if ls := c.servingLoop(); ls != nil && ls.spareW != nil {
		c.w, ls.spareW = ls.spareW, nil
	} else {
		c.w = writerPool.Get().(*bufio.Writer)
	}
	c.w.Reset(&c.out)
}

// stepText runs one text or meta command: more is false when the buffer
// holds no complete command.
func (c *conn) stepText() (more, closeConn bool) {
	if c.p.Need > 0 && c.end-c.start < c.p.Need {
		return false, false
	}
	cmd, n, err := c.p.Parse(c.buf[c.start:c.end])
	if err == ErrIncomplete {
		return false, false
	}
	c.markActive(c.now())
	c.writer()
	closeConn = c.exec(cmd, err)
	c.start += n
	c.swallow = cmd.Swallow
	if closeConn {
		if err == nil || err == ErrTooManyConns || cmd.Op == OpQuit {
			c.w.Flush()
		} else if e, ok := err.(*Error); ok && e.Reply == "" {
			if err != ErrHTTPRequest && c.logOK() {
				c.s.log.Info("cache: closing connection", "remote", c.remote(), "reason", err.Error())
			}
		}
	}
	return true, closeConn
}

// stepBinary runs one binary request, as stepText.
func (c *conn) stepBinary() (more, closeConn bool) {
	b := c.bin
	if b.p.Need > 0 && c.end-c.start < b.p.Need {
		return false, false
	}
	req, n, err := b.p.Parse(c.buf[c.start:c.end])
	if err == ErrIncomplete {
		return false, false
	}
	c.markActive(c.now())
	c.writer()
	c.start += n
	if be, ok := err.(*BinaryError); ok {
		c.swallow = be.Swallow
		if be.Silent {
			if c.logOK() {
				c.s.log.Info("cache: closing connection", "remote", c.remote(), "reason", be.Error())
			}
			return true, true
		}
	}
	if c.execBinary(b, req, err) {
		c.w.Flush()
		return true, true
	}
	return true, false
}

// makeRoom makes room in buf for the next read: pending bytes move to the
// front, the buffer grows for a long line or a data block of need bytes
// (no more than today's parser asks for) and shrinks back when empty.
func (c *conn) makeRoom() {
	if c.start == c.end {
		c.start, c.end = 0, 0
		if len(c.buf) > maxIdleRead {
			c.buf = make([]byte, readBufSize)
		}
	} else if c.start > 0 {
		copy(c.buf, c.buf[c.start:c.end])
		c.end -= c.start
		c.start = 0
	}
	want := len(c.buf)
	if need := c.need(); need > want {
		want = need
	} else if c.end == len(c.buf) {
		want = 2 * len(c.buf)
	}
	if want > len(c.buf) {
		nb := make([]byte, want)
		copy(nb, c.buf[:c.end])
		c.buf = nb
	}
}

// flushIdle, when the connection is idle (nothing half-discarded), sends
// the buffered replies and returns the write buffer to the pool, so idle
// connections hold none. It returns false when the write failed.
func (c *conn) flushIdle() bool {
	if c.swallow != 0 || c.w == nil {
		return true
	}
	if c.w.Buffered() > 0 {
		if err := c.w.Flush(); err != nil {
			return false
		}
	}
	c.releaseWriter()
	return true
}
