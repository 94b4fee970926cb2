package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"substrate/broker/amqp"
	"substrate/broker/store"
	"substrate/internal/faults"
	"substrate/internal/logging"
	"substrate/internal/netutil"
)

// Config configures a Server. Build it with NewConfig and adjust fields.
type Config struct {
	Addrs       []string      // "host:port" TCP listen addresses; port 0 allowed in tests
	Definitions Definitions   // nil: NewMemDefinitions(); New and Start call EnsureDefaults on it
	Logger      *slog.Logger  // nil: discard; per-connection lines are rate-limited
	Heartbeat   time.Duration // proposed in connection.tune (whole seconds); 0 proposes none
	FrameMax    uint32        // proposed in connection.tune; 0 means no limit (not recommended)
	ChannelMax  uint16        // proposed in connection.tune; 0 means no limit
	// StoreDir holds the message store (DATA/broker): persistent messages
	// of durable queues live there across restarts, and their publisher
	// confirms wait for its fsync. "" keeps every message in memory only.
	StoreDir string
	// MemoryHighWatermark is the memory alarm's threshold in bytes of
	// the broker's own memory: queued and in-flight bodies, bodies being
	// assembled, connection buffers (see memory.go); 0 turns the alarm off.
	MemoryHighWatermark uint64
	// DiskFreeLimit is RabbitMQ's disk_free_limit in bytes: while the
	// filesystem of StoreDir has less free space, publishers are blocked
	// ("low on disk resource"), as with the memory alarm; 0 turns the
	// disk alarm off.
	DiskFreeLimit uint64
	// MaxConnections is RabbitMQ's connection_max: connections beyond it
	// are refused as RabbitMQ refuses them; 0 means no limit.
	MaxConnections int
	// TLSAddrs are the AMQPS listen addresses (RabbitMQ's listeners.ssl,
	// port 5671): each connection completes a TLS handshake before
	// the AMQP protocol header, and may log in with EXTERNAL.
	TLSAddrs []string
	// TLS is the server configuration of TLSAddrs, required with them
	// (tlsutil.Store.ServerConfig: certificates reloadable at run time).
	TLS *tls.Config
	// Log, when not nil, is the message store, in place of the one
	// StoreDir would open: in a cluster, the Raft-replicated store of
	// the current term (broker/replica). Start recovers from it and
	// Shutdown closes it. StoreDir then only names the filesystem the
	// disk alarm watches.
	Log store.Log
	// External says connections come only through Serve, from listeners
	// the caller owns (a cluster node forwards connections to its leader
	// while it is not the leader itself): Start binds nothing, and Addrs
	// and TLSAddrs must be empty.
	External bool
	// Fence, when not nil, holds every write to clients while this
	// broker may not act (a cluster leader's lease: internal/raftnode's
	// Lease), so that a deposed leader, frozen or cut off while the
	// others elected another, sends no delivery from memory when it
	// wakes. A connection whose Fence is lost for good is closed
	// without a word (its broker is being shut down).
	Fence Fence

	storeTweak   func(*store.Config)              // tests: adjust the message store's config
	memUsage     func() uint64                    // tests: memory in use, in place of the broker's accounting
	diskFree     func(dir string) (uint64, error) // tests: free bytes of dir's filesystem, in place of statfs
	diskInterval time.Duration                    // tests: disk check interval, in place of 1 s
	wrapListener func(net.Listener) net.Listener  // tests: wrap each bound listener (accept errors)
	parkAfter    time.Duration                    // tests: Server.parkAfter if not 0 (< 0: never park)
}

// NewConfig returns RabbitMQ's defaults: listen on 127.0.0.1:5672,
// heartbeat 60 s, frame_max 131072, channel_max 2047.
func NewConfig() Config {
	return Config{
		Addrs:      []string{"127.0.0.1:5672"},
		Heartbeat:  60 * time.Second,
		FrameMax:   131072,
		ChannelMax: 2047,
	}
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	if c.External {
		if len(c.Addrs) > 0 || len(c.TLSAddrs) > 0 {
			return errors.New("broker: listen addresses with External (connections come through Serve)")
		}
	} else if len(c.Addrs) == 0 && len(c.TLSAddrs) == 0 {
		return errors.New("broker: no listen address")
	}
	if len(c.TLSAddrs) > 0 && c.TLS == nil {
		return errors.New("broker: TLS listen addresses without a TLS configuration")
	}
	for _, a := range append(slices.Clone(c.Addrs), c.TLSAddrs...) {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("broker: listen address %q: %w", a, err)
		}
	}
	if c.FrameMax != 0 && c.FrameMax < amqp.FrameMinSize {
		return fmt.Errorf("broker: frame_max %d is below the minimum %d", c.FrameMax, amqp.FrameMinSize)
	}
	if c.Heartbeat < 0 || c.Heartbeat > 65535*time.Second {
		return fmt.Errorf("broker: heartbeat %v out of range", c.Heartbeat)
	}
	if c.Heartbeat%time.Second != 0 {
		return fmt.Errorf("broker: heartbeat %v is not a whole number of seconds", c.Heartbeat)
	}
	return nil
}

// Server is the AMQP 0-9-1 broker.
type Server struct {
	cfg   Config
	defs  Definitions
	log   *slog.Logger
	peers *logging.Limiter // rate-limits log lines per peer IP (conn.logf)
	lim   keyedLog         // the same limiter for lines about no peer (the message store)
	store store.Log        // nil without Config.StoreDir; set by Start before any queue exists

	alarm    alarm         // the memory and disk alarms (memory.go, disk.go)
	blocked  atomic.Int64  // connections blocked by them
	mem      memAccount    // the broker's own memory, for the memory alarm
	diskFree atomic.Uint64 // last free-space reading of StoreDir's filesystem

	adminMu   sync.Mutex // serializes admin changes (and their Definitions writes)
	authState            // users and permissions (auth.go)

	vhMu   sync.RWMutex
	vhosts map[string]*vhost

	connMu sync.Mutex
	conns  map[*conn]struct{}
	// Statistics (stats.go): the message counters and traffic of
	// connections that ended (under connMu), object churn, and the
	// source of connection ids.
	retired    statValues
	retiredNet NetStats
	retiredVH  map[*vhost]*vhostTotals // dropped with the vhost
	churn      churn
	connSeq    atomic.Uint64

	lnMu      sync.Mutex
	listeners []net.Listener // Config.Addrs, then Config.TLSAddrs
	nTLS      int            // how many of listeners (the last ones) are TLS
	errc      chan error
	started   bool
	stopping  atomic.Bool
	shutOnce  sync.Once
	shutDone  chan struct{}
	stopc     chan struct{}  // closed when Shutdown starts
	wg        sync.WaitGroup // accept loops and connection goroutines

	// parker holds idle connections' readers (park_linux.go); nil
	// without epoll. parkAfter is how long a reader waits for input
	// before it parks (0: never); tests shorten it.
	parker    *parker
	parkAfter time.Duration

	// silentCloseDelay is how long a connection whose handshake failed
	// stays open before its socket is closed (RabbitMQ's
	// SILENT_CLOSE_DELAY, 3 s); tests shorten it.
	silentCloseDelay time.Duration
}

// sleep waits d or until Shutdown starts.
func (s *Server) sleep(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.stopc:
	}
}

// New checks cfg and returns a Server that has not started. It does not
// touch cfg.Definitions: Start loads them, after EnsureDefaults.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{
		cfg:      cfg,
		defs:     cfg.Definitions,
		log:      cfg.Logger,
		vhosts:   map[string]*vhost{},
		conns:    map[*conn]struct{}{},
		errc:     make(chan error, 1),
		shutDone: make(chan struct{}),
		stopc:    make(chan struct{}),

		silentCloseDelay: 3 * time.Second,
		parkAfter:        idleParkAfter,
	}
	if cfg.parkAfter != 0 {
		s.parkAfter = max(cfg.parkAfter, 0)
	}
	s.users, s.perms = map[string]User{}, map[string]*compiledPerm{}
	if s.defs == nil {
		s.defs = NewMemDefinitions()
	}
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s.peers = logging.NewLimiter(s.log, "amqp", 10, time.Second)
	s.lim = keyedLog{s.peers, "broker"}
	return s, nil
}

// Name returns "amqp".
func (s *Server) Name() string { return "amqp" }

// Start loads the definitions (creating RabbitMQ's defaults in an empty
// store), recreates durable exchanges, queues and bindings, binds every
// address and returns once each listener accepts.
func (s *Server) Start(ctx context.Context) error {
	s.lnMu.Lock()
	defer s.lnMu.Unlock()
	if s.started {
		return errors.New("broker: already started")
	}
	if err := EnsureDefaults(ctx, s.defs); err != nil {
		return fmt.Errorf("broker: definitions: %w", err)
	}
	set, err := s.defs.Load(ctx)
	if err != nil {
		return fmt.Errorf("broker: definitions: %w", err)
	}
	if err := s.openStore(); err != nil {
		return err
	}
	fail := func(err error) error {
		for _, l := range s.listeners {
			l.Close()
		}
		s.listeners = nil
		if s.parker != nil {
			s.parker.close()
			s.parker = nil
		}
		s.closeStore()
		return err
	}
	if err := s.loadDefinitions(set); err != nil {
		return fail(err)
	}
	if err := s.recoverMessages(); err != nil {
		return fail(err)
	}
	if p, err := newParker(); err == nil {
		s.parker = p
	} else if runtime.GOOS == "linux" {
		s.log.Warn("amqp: idle connections keep their reader goroutines", "err", err)
	}
	var lc net.ListenConfig
	for _, a := range s.cfg.Addrs {
		ln, err := lc.Listen(ctx, "tcp", a)
		if err != nil {
			return fail(fmt.Errorf("broker: listen %s: %w", a, err))
		}
		if s.cfg.wrapListener != nil {
			ln = s.cfg.wrapListener(ln)
		}
		s.listeners = append(s.listeners, ln)
	}
	for _, a := range s.cfg.TLSAddrs {
		ln, err := lc.Listen(ctx, "tcp", a)
		if err != nil {
			return fail(fmt.Errorf("broker: listen %s (TLS): %w", a, err))
		}
		if s.cfg.wrapListener != nil {
			ln = s.cfg.wrapListener(ln)
		}
		s.listeners = append(s.listeners, tls.NewListener(ln, s.cfg.TLS))
		s.nTLS++
	}
	s.started = true
	if s.cfg.MemoryHighWatermark > 0 {
		s.wg.Add(1)
		go s.watchMemory()
	}
	if s.cfg.DiskFreeLimit > 0 && s.cfg.StoreDir != "" {
		s.wg.Add(1)
		go s.watchDisk()
	}
	for _, ln := range s.listeners {
		s.wg.Add(1)
		go s.acceptLoop(ln)
	}
	addrs := make([]string, len(s.listeners))
	for i, l := range s.listeners {
		addrs[i] = l.Addr().String()
	}
	plain := len(addrs) - s.nTLS
	s.log.Info("amqp broker listening", "addrs", addrs[:plain], "tls_addrs", addrs[plain:])
	return nil
}

func (s *Server) loadDefinitions(set *DefinitionSet) error {
	if err := s.loadAuth(set); err != nil {
		return err
	}
	s.vhMu.Lock()
	for _, v := range set.VHosts {
		vh := newVHost(s, v.Name)
		vh.limits = v.Limits.clone()
		vh.setLimits(v.Limits)
		s.vhosts[v.Name] = vh
	}
	s.vhMu.Unlock()
	s.loadPolicies(set) // before the queues and exchanges they apply to
	for _, e := range set.Exchanges {
		if vh := s.vhost(e.VHost); vh != nil {
			vh.restoreExchange(e)
		}
	}
	for _, q := range set.Queues {
		if vh := s.vhost(q.VHost); vh != nil {
			vh.restoreQueue(q)
		}
	}
	for _, b := range set.Bindings {
		if vh := s.vhost(b.VHost); vh != nil {
			vh.restoreBinding(b)
		}
	}
	return nil
}

// acceptLoop accepts connections on ln until Shutdown. With
// MaxConnections it stops accepting while that many of ln's connections
// are open, as RabbitMQ's connection_max (ranch's max_connections per
// listener) does: further clients wait in the kernel's listen backlog
// and are served when a connection closes; nothing refuses them. A
// temporary accept error (EMFILE, ENFILE: out of descriptors) makes it
// sleep, 5 ms doubling up to 1 s, as net/http's Server does, instead of
// spinning or giving up; it logs once per episode.
func (s *Server) acceptLoop(ln net.Listener) {
	defer s.wg.Done()
	var slots chan struct{}
	if n := s.cfg.MaxConnections; n > 0 {
		slots = make(chan struct{}, n)
	}
	var bo netutil.AcceptBackoff
	for {
		if slots != nil && !s.takeSlot(ln, slots) {
			return
		}
		nc, err := ln.Accept()
		if err != nil {
			if slots != nil {
				<-slots
			}
			if s.stopping.Load() {
				return
			}
			if !netutil.TemporaryAccept(err) {
				select {
				case s.errc <- fmt.Errorf("broker: accept on %s: %w", ln.Addr(), err):
				default:
				}
				return
			}
			d, first := bo.Next()
			if first {
				s.log.Warn("amqp: accept failing, backing off until it recovers", "listener", ln.Addr().String(), "err", err)
			}
			s.sleep(d)
			continue
		}
		if n, since := bo.Reset(); n > 0 {
			s.log.Info("amqp: accepting again", "listener", ln.Addr().String(), "failures", n, "after", since.Round(time.Millisecond))
		}
		var release func()
		if slots != nil {
			release = func() { <-slots }
		}
		s.admit(nc, release)
	}
}

// takeSlot waits for a free connection_max slot of ln; false when Shutdown
// started.
func (s *Server) takeSlot(ln net.Listener, slots chan struct{}) bool {
	return netutil.TakeSlot(slots, s.stopc, func() {
		s.log.Warn("amqp: connection_max reached, not accepting until a connection closes",
			"listener", ln.Addr().String(), "connection_max", cap(slots))
	})
}

// admit starts a new connection's reader. A panic here (the
// amqp.accept site) closes only that socket; the accept loop goes on.
func (s *Server) admit(nc net.Conn, release func()) {
	started := false
	defer faults.Recover(s.log, faults.AMQP, nc.RemoteAddr().String(), func(any) {
		if !started {
			nc.Close()
			if release != nil {
				release()
			}
		}
	})
	faults.Point("amqp.accept", nc.RemoteAddr().String())
	c := newConn(s, nc)
	c.release = release
	s.connMu.Lock()
	if s.stopping.Load() {
		s.connMu.Unlock()
		nc.Close()
		if release != nil {
			release()
		}
		started = true
		return
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.connMu.Unlock()
	started = true
	go c.serve() // the writer starts when there is output (outbound.kick)
}

// Fence says whether a broker may write to its clients (Config.Fence).
type Fence interface {
	// Held reports whether it may, now; it is called before every write
	// and must be cheap.
	Held() bool
	// Wait blocks until Held is true (true) or never will be again
	// (false).
	Wait() bool
}

// Serve serves a connection accepted by the caller's listener (Config.External):
// a plain AMQP socket, or a *tls.Conn whose handshake has not run yet
// (it runs on the connection's reader, as on the broker's own TLS
// listeners). After Shutdown started the socket is closed at once.
func (s *Server) Serve(nc net.Conn) { s.ServeRelease(nc, nil) }

// ServeRelease is Serve with release called once when the connection has
// ended (at once when it is not served): the caller's connection_max slot
// (a cluster node counts the connections its own listeners accepted).
func (s *Server) ServeRelease(nc net.Conn, release func()) {
	if !s.isStarted() {
		nc.Close()
		if release != nil {
			release()
		}
		return
	}
	s.admit(nc, release)
}

func (s *Server) isStarted() bool {
	s.lnMu.Lock()
	defer s.lnMu.Unlock()
	return s.started
}

// Addrs returns the addresses the listeners are bound to (with the real
// port when the configuration said 0).
func (s *Server) Addrs() []net.Addr {
	s.lnMu.Lock()
	defer s.lnMu.Unlock()
	out := make([]net.Addr, len(s.listeners))
	for i, l := range s.listeners {
		out[i] = l.Addr()
	}
	return out
}

// Err reports a listener failure while running. It is nil-safe.
func (s *Server) Err() <-chan error {
	if s == nil {
		return nil
	}
	return s.errc
}

// ShutdownReason is the reason text RabbitMQ gives clients when it stops.
const shutdownText = "broker forced connection closure with reason 'shutdown'"

// Shutdown stops accepting, sends every client connection.close 320
// CONNECTION_FORCED (as RabbitMQ does when it stops), waits up to a second
// (or ctx) for their close-ok, closes the sockets and waits for every
// goroutine. It is idempotent; later calls wait for the first to finish.
func (s *Server) Shutdown(ctx context.Context) error {
	first := false
	s.shutOnce.Do(func() { first = true })
	if !first {
		select {
		case <-s.shutDone:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	defer close(s.shutDone)
	s.stopping.Store(true)
	close(s.stopc)
	s.lnMu.Lock()
	for _, l := range s.listeners {
		l.Close()
	}
	s.lnMu.Unlock()
	grace := time.Second
	if d, ok := ctx.Deadline(); ok && time.Until(d) < grace {
		grace = max(time.Until(d)/2, 0)
	}
	for _, c := range s.connections() {
		c.forceClose(amqp.ConnectionForced, "CONNECTION_FORCED - "+shutdownText, grace)
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		for _, c := range s.connections() {
			c.closeSocket()
		}
		<-done
		err = ctx.Err()
	}
	if s.parker != nil {
		s.parker.close() // every connection has ended: none is parked
	}
	s.vhMu.RLock()
	for _, vh := range s.vhosts {
		vh.stopTimers()
	}
	s.vhMu.RUnlock()
	if cerr := s.closeStore(); err == nil {
		err = cerr
	}
	return err
}

func (s *Server) connections() []*conn {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	out := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		out = append(out, c)
	}
	return out
}

// removeConn forgets c, folding its statistics into the server's
// (Server.retired), so that global sums never go back.
func (s *Server) removeConn(c *conn) {
	s.connMu.Lock()
	if _, ok := s.conns[c]; ok {
		v, n := c.totals()
		s.retired.addAll(&v)
		s.retiredNet.add(n)
		c.mu.Lock()
		vh := c.vh
		c.mu.Unlock()
		if vh != nil && s.vhost(vh.name) == vh { // not deleted meanwhile
			t := s.retiredVH[vh]
			if t == nil {
				t = new(vhostTotals)
				if s.retiredVH == nil {
					s.retiredVH = map[*vhost]*vhostTotals{}
				}
				s.retiredVH[vh] = t
			}
			t.stats.addAll(&v)
			t.net.add(n)
		}
	}
	delete(s.conns, c)
	s.connMu.Unlock()
}

func (s *Server) vhost(name string) *vhost {
	s.vhMu.RLock()
	defer s.vhMu.RUnlock()
	return s.vhosts[name]
}

// keyedLog logs through a Limiter under one fixed key.
type keyedLog struct {
	l   *logging.Limiter
	key string
}

func (k keyedLog) Log(level slog.Level, msg string, args ...any) { k.l.Log(k.key, level, msg, args...) }
