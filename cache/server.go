package cache

import (
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
	loops     []*loop       // event loops for plain TCP connections (evloop_linux.go)
	next      int           // the loop the next connection goes to
	handovers atomic.Uint64 // loop connections handed to a goroutine (tests)
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
	if s.tls == nil && len(s.cfg.Addrs) > 0 || len(s.cfg.NoTLSAddrs) > 0 {
		if err := s.startLoops(); err != nil {
			for _, l := range ls {
				l.Close()
			}
			for _, pc := range udp {
				pc.Close()
			}
			return err
		}
	}
	for i, l := range ls {
		if i < len(useTLS) && !useTLS[i] {
			if a := s.newRawAccepter(l); a != nil {
				ls[i] = a
			}
		}
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
			switch {
			case c.ev == nil:
				c.nc.Close()
			case c.ev.nc != nil:
				c.ev.nc.Close() // handed over to a goroutine
			}
		}
		s.stopLoops() // they close their own connections
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
	raw, _ := l.(*rawAccepter)
	for {
		var nc net.Conn
		fd := -1
		var peer net.Addr
		var err error
		if raw != nil {
			fd, peer, err = raw.accept()
		} else {
			nc, err = l.Accept()
		}
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
		if fd >= 0 {
			s.mu.Lock()
			if !s.closed && len(s.conns) < s.cfg.MaxConns {
				if c, err := s.adoptFD(fd, peer, l.Addr()); err == nil {
					s.conns[c] = struct{}{}
					s.mu.Unlock()
					continue
				}
			}
			s.mu.Unlock()
			// Closed, full, or no loop took it: as a net.Conn, below.
			if nc, err = fdConn(fd); err != nil {
				continue
			}
		}
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
		if !tlsOn {
			if c, err := s.adopt(nc, l.Addr()); err == nil {
				s.conns[c] = struct{}{}
				s.mu.Unlock()
				continue
			}
		} else {
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
	if c.peer != nil {
		key = logging.PeerKey(c.peer)
	}
	return c.s.limit.Allow(key, slog.LevelInfo)
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
