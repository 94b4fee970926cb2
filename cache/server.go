package cache

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"substrate/internal/faults"
	"substrate/internal/logging"
	"substrate/internal/netutil"
)

const (
	readBufSize  = 4 << 10  // initial read buffer; grows for long lines and values
	maxIdleRead  = 64 << 10 // a drained read buffer above this is shrunk back
	writeBufSize = 16 << 10 // pooled: held only while replies are pending
)

// Server is a memcached 1.6.18-compatible cache server.
//
// Lifecycle: New, Start (binds and starts accepting), Shutdown (idempotent;
// stops accepting, closes connections and waits for all goroutines).
type Server struct {
	cfg   Config
	log   *slog.Logger
	clk   *clock
	store *store
	stats serverStats
	limit *logging.Limiter // log lines per peer IP
	tls   *tlsState        // when cfg.TLS

	mu        sync.Mutex
	started   bool
	closed    bool
	listeners []net.Listener
	udp       []net.PacketConn
	conns     map[*conn]struct{}
	wg        sync.WaitGroup
	verbosity atomic.Uint32
	shutdown  sync.Once // OnShutdown is called once
}

// parseMaxItem is the parsers' item size limit: -I, which under -C holds
// items casSize bytes larger than itemTotal counts (they have no CAS).
func (s *Server) parseMaxItem() int {
	if s.cfg.NoCAS {
		return s.cfg.MaxItemSize + casSize
	}
	return s.cfg.MaxItemSize
}

// New validates cfg and returns a server that is not yet listening.
func New(cfg Config) (*Server, error) {
	err := cfg.Validate()
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	clk := newClock()
	s := &Server{
		cfg:   cfg,
		log:   log,
		clk:   clk,
		store: newStore(cfg.MemoryLimit, cfg.NoEvict, clk),
		conns: make(map[*conn]struct{}),
	}
	s.limit = logging.NewLimiter(log, "memcached", 10, time.Second)
	if cfg.NoCAS {
		s.store.noCAS, s.store.casAdj = true, casSize
	}
	s.verbosity.Store(uint32(min(max(cfg.Verbosity, 0), math.MaxUint32)))
	if cfg.TLS != nil {
		if s.tls, err = newTLSState(cfg.TLS); err != nil {
			return nil, err
		}
	}
	if cfg.SASL {
		if _, err = loadPasswordFile(cfg.SASLPasswordFile); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Start binds every configured address and starts serving. It returns once
// all listeners accept connections, or the first bind error after closing
// the listeners it had opened.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrServerClosed
	}
	if s.started {
		return errors.New("cache: server already started")
	}
	var lc net.ListenConfig
	var ls []net.Listener
	var useTLS []bool
	for i, a := range append(s.cfg.Addrs[:len(s.cfg.Addrs):len(s.cfg.Addrs)], s.cfg.NoTLSAddrs...) {
		l, err := lc.Listen(ctx, "tcp", a)
		if err != nil {
			for _, l := range ls {
				l.Close()
			}
			return fmt.Errorf("cache: listen %s: %w", a, err)
		}
		ls = append(ls, l)
		if err := setBacklog(l, s.cfg.Backlog); err != nil {
			for _, l := range ls {
				l.Close()
			}
			return err
		}
		useTLS = append(useTLS, s.tls != nil && i < len(s.cfg.Addrs))
	}
	if s.cfg.UnixSocket != "" {
		l, err := listenUnix(ctx, s.cfg.UnixSocket, s.cfg.UnixMask)
		if err != nil {
			for _, l := range ls {
				l.Close()
			}
			return err
		}
		ls = append(ls, l)
		if err := setBacklog(l, s.cfg.Backlog); err != nil {
			for _, l := range ls {
				l.Close()
			}
			return err
		}
	}
	udp, err := s.listenUDP(ctx)
	if err != nil {
		for _, l := range ls {
			l.Close()
		}
		return err
	}
	s.started = true
	s.listeners = ls
	s.startUDP(udp)
	for i, l := range ls {
		s.wg.Add(1)
		tlsOn := i < len(useTLS) && useTLS[i]
		go s.acceptLoop(l, tlsOn)
		s.log.Info("cache listening", "addr", l.Addr().String(), "tls", tlsOn)
	}
	return nil
}

// Addrs returns the bound listen addresses (after Start).
func (s *Server) Addrs() []net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]net.Addr, len(s.listeners))
	for i, l := range s.listeners {
		out[i] = l.Addr()
	}
	return out
}

// Shutdown stops accepting, closes every client connection and waits for
// all goroutines the server started, or for ctx to end. It is idempotent.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		for _, l := range s.listeners {
			l.Close()
		}
		for _, pc := range s.udp {
			pc.Close()
		}
		for c := range s.conns {
			c.nc.Close()
		}
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// acceptLoop accepts clients of l; with tlsOn they speak TLS (after the
// connection limit is checked in plain text, as memcached does).
func (s *Server) acceptLoop(l net.Listener, tlsOn bool) {
	defer s.wg.Done()
	var bo netutil.AcceptBackoff
	for {
		nc, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: sleep 5 ms doubling
			// to 1 s (net/http's backoff), logging once per episode.
			// Other errors are retried the same way: the cache keeps its
			// listener rather than lose it.
			d, first := bo.Next()
			if first {
				s.log.Warn("cache: accept failing, backing off until it recovers", "addr", l.Addr().String(),
					"err", err, "temporary", netutil.TemporaryAccept(err))
			}
			if !s.sleep(d) {
				return
			}
			continue
		}
		if n, lasted := bo.Reset(); n > 0 {
			s.log.Info("cache: accepting again", "addr", l.Addr().String(), "failures", n, "after", lasted.Round(time.Millisecond))
		}
		s.stats.totalConns.Add(1)
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			return
		}
		if len(s.conns) >= s.cfg.MaxConns {
			s.mu.Unlock()
			s.stats.rejectedConns.Add(1)
			if s.limit.Allow(logging.PeerKey(nc.RemoteAddr()), slog.LevelWarn) {
				s.log.Warn("cache connection rejected: too many open connections", "remote", nc.RemoteAddr().String())
			}
			nc.SetWriteDeadline(time.Now().Add(time.Second))
			io.WriteString(nc, ErrTooManyConns.Reply+"\r\n")
			nc.Close()
			continue
		}
		if tlsOn {
			nc = tls.Server(nc, s.tls.base)
		}
		c := newConn(s, nc, l.Addr())
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			c.serve()
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

// sleep waits d, or until Shutdown closed the server (false).
func (s *Server) sleep(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		s.mu.Lock()
		closed := s.closed
		s.mu.Unlock()
		if closed {
			return false
		}
		left := time.Until(deadline)
		if left <= 0 {
			return true
		}
		time.Sleep(min(left, 50*time.Millisecond))
	}
}

// warnOK reports whether a warning about key (not a peer: "sasl") may be
// logged now.
func (s *Server) warnOK(key string) bool { return s.limit.Allow(key, slog.LevelWarn) }

// logOK reports whether a line about this connection's peer may be logged
// now: each peer IP has its own budget (logging.Limiter).
func (c *conn) logOK() bool {
	key := "udp"
	if c.nc != nil {
		key = logging.PeerKey(c.nc.RemoteAddr())
	}
	return c.s.limit.Allow(key, slog.LevelInfo)
}

// conn is one client connection. All its fields are owned by its serve
// goroutine.
type conn struct {
	s       *Server
	nc      net.Conn
	in      io.Reader // nc, or its rawIO
	listen  net.Addr
	w       *bufio.Writer // from writerPool; returned while the conn waits for input
	out     countingWriter
	p       Parser
	scratch []byte
	lastCmd atomic.Uint32 // rel time of the last command, read by stats conns
	held    *shard        // shard locked by a meta command (lockShard), for panic cleanup
	state   atomic.Uint32
}

type countingWriter struct {
	w io.Writer
	n *atomic.Uint64
}

func (cw countingWriter) Write(b []byte) (int, error) {
	n, err := cw.w.Write(b)
	cw.n.Add(uint64(n))
	return n, err
}

func newConn(s *Server, nc net.Conn, listen net.Addr) *conn {
	c := &conn{s: s, nc: nc, in: nc, listen: listen}
	c.out = countingWriter{nc, &s.stats.bytesWritten}
	if r := newRawIO(nc); r != nil {
		c.in, c.out.w = r, r
	}
	c.w = writerPool.Get().(*bufio.Writer)
	c.w.Reset(c.out)
	c.p.MaxItemSize = s.parseMaxItem()
	c.lastCmd.Store(s.clk.now())
	return c
}

var writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, writeBufSize) }}

// serve is the connection's reader loop: parse every complete command in
// the buffer, execute it, and flush replies only before blocking on the
// socket again (so a pipelined batch costs one write).
func (c *conn) serve() {
	// A panic while serving this client closes only this connection
	// (memcached has no error reply for it): logged once, counted, and
	// the deferred close below still runs.
	defer faults.Recover(c.s.log, faults.Memcached, remoteString(c.nc), func(any) { c.releaseShard() })
	defer func() {
		c.nc.Close()
		if c.w != nil {
			c.w.Reset(nil)
			writerPool.Put(c.w)
			c.w = nil
		}
	}()
	if tc, ok := c.nc.(*tls.Conn); ok {
		if err := c.s.tls.handshake(tc); err != nil {
			if c.logOK() {
				c.s.log.Info("cache: TLS handshake failed", "remote", remoteString(c.nc), "err", err)
			}
			return
		}
	}
	buf := make([]byte, readBufSize)
	start, end := 0, 0
	swallow := 0
	first := true
	for {
		for {
			if swallow > 0 {
				n := min(swallow, end-start)
				start += n
				swallow -= n
				if swallow > 0 {
					break
				}
			}
			if start == end {
				break
			}
			if first {
				first = false
				// memcached -B auto: the first byte picks the protocol;
				// -B binary or SASL: only binary; -B ascii: only text.
				if c.s.binaryFirst(buf[start]) {
					c.serveBinary(buf, start, end)
					return
				}
			}
			if c.p.Need > 0 && end-start < c.p.Need {
				break
			}
			cmd, n, err := c.p.Parse(buf[start:end])
			if err == ErrIncomplete {
				break
			}
			c.lastCmd.Store(c.s.clk.now())
			if c.w == nil {
				c.w = writerPool.Get().(*bufio.Writer)
				c.w.Reset(c.out)
			}
			closeConn := c.exec(cmd, err)
			start += n
			swallow = cmd.Swallow
			if closeConn {
				if err == nil || err == ErrTooManyConns || cmd.Op == OpQuit {
					c.w.Flush()
				} else if e, ok := err.(*Error); ok && e.Reply == "" {
					if err != ErrHTTPRequest && c.logOK() {
						c.s.log.Info("cache: closing connection", "remote", c.nc.RemoteAddr().String(), "reason", err.Error())
					}
				}
				return
			}
		}
		var ok bool
		buf, end, ok = c.refill(buf, start, end, c.p.Need, swallow == 0)
		start = 0
		if !ok {
			return
		}
	}
}

// refill makes room in buf for more input and reads once: pending bytes
// move to the front, the buffer grows for a long line or a data block of
// need bytes and shrinks back when empty; when idle (nothing half-sent),
// the write buffer is flushed and returned to the pool, so idle
// connections hold none. It returns the buffer, the end of its data (which
// now starts at 0), and false when the connection is done.
func (c *conn) refill(buf []byte, start, end, need int, idle bool) ([]byte, int, bool) {
	if start == end {
		end = 0
		if len(buf) > maxIdleRead {
			buf = make([]byte, readBufSize)
		}
	} else if start > 0 {
		copy(buf, buf[start:end])
		end -= start
	}
	want := len(buf)
	if need > want {
		want = need
	} else if end == len(buf) {
		want = 2 * len(buf)
	}
	if want > len(buf) {
		nb := make([]byte, want)
		copy(nb, buf[:end])
		buf = nb
	}
	if idle && c.w != nil {
		if c.w.Buffered() > 0 {
			if err := c.w.Flush(); err != nil {
				return buf, end, false
			}
		}
		c.w.Reset(nil)
		writerPool.Put(c.w)
		c.w = nil
	}
	n, err := c.in.Read(buf[end:])
	if n > 0 {
		end += n
		c.s.stats.bytesRead.Add(uint64(n))
	}
	return buf, end, err == nil
}
