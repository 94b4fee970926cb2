package cache

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
)

// Defaults match memcached 1.6.18's command-line defaults.
const (
	DefaultMemoryLimit = 64 << 20 // memcached -m 64
	DefaultMaxConns    = 1024     // memcached -c 1024
	DefaultMaxItemSize = 1 << 20  // memcached -I 1m
	DefaultUnixMask    = 0o700    // memcached -a 0700

	minItemSize = 1 << 10    // memcached rejects -I below 1k
	maxItemSize = 1024 << 20 // and above 1024m
)

// Config configures a Server. Build one with NewConfig and adjust fields;
// New calls Validate.
type Config struct {
	Addrs       []string     // "host:port" TCP listen addresses; port 0 picks a free port
	MemoryLimit int64        // bytes of item memory (memcached -m, in MB there); default 64 MiB
	MaxConns    int          // simultaneous client connections (memcached -c); default 1024
	MaxItemSize int          // largest item including memcached's per-item overhead (-I); default 1 MiB
	NoEvict     bool         // memcached -M: refuse writes when full instead of evicting
	Logger      *slog.Logger // nil discards

	// MaxMemoryLimit caps what cache_memlimit may set (0: no cap, as in
	// memcached). substrate serve sets it to MemoryLimit, the cache's
	// share of the process's memory budget; a larger request answers a
	// CLIENT_ERROR line and leaves the limit unchanged.
	MaxMemoryLimit int64

	// UnixSocket, when set, also listens on this unix stream socket path
	// (memcached -s). A stale socket file there is replaced; the file is
	// removed at Shutdown. Addrs may be empty when it is set.
	UnixSocket string
	// UnixMask is the permission mode of the socket file (memcached -a,
	// octal, default 0700).
	UnixMask os.FileMode

	// UDPAddrs are "host:port" UDP addresses served with memcached's UDP
	// frame header, text and binary protocols (memcached -U). Empty disables UDP.
	UDPAddrs []string

	// NoTLSAddrs are further "host:port" TCP addresses that always speak
	// plain text, even with TLS (memcached's "-l notls:host:port").
	NoTLSAddrs []string
	// TLS, when set, makes every listener in Addrs speak TLS (memcached
	// -Z). The files are loaded by New and again by refresh_certs.
	TLS *TLSConfig

	// TLSSettings, when TLS is nil, are the ssl_* settings "stats
	// settings" reports: memcached -o ssl_... without -Z, which has no
	// other effect there either.
	TLSSettings *TLSConfig

	// Protocol is memcached's -B: "auto" (or "") picks the protocol of
	// each connection (and UDP datagram) from its first byte, "binary"
	// speaks only the binary protocol, "ascii" only the text ones (a
	// binary request is then parsed as text, as memcached does).
	Protocol string

	// SASL requires SASL PLAIN authentication (memcached -S): every
	// listener speaks only the binary protocol, and binary commands other
	// than the SASL ones and version fail until the connection has
	// authenticated. Requires SASLPasswordFile; incompatible with UDPAddrs.
	SASL bool
	// SASLPasswordFile holds the accepted credentials, one "user:password"
	// per line (memcached's MEMCACHED_SASL_PWDB format, see the package
	// documentation). New checks it; every login reads it again.
	SASLPasswordFile string

	// NoCAS is memcached -C: items carry no CAS value (every CAS reads
	// 0), "cas" and meta sets with C answer EXISTS/EX for an existing
	// item, a binary store's CAS is ignored, and delete/arith compare
	// against 0, as memcached 1.6.18 does.
	NoCAS bool
	// NoFlushAll is memcached -F: flush_all answers "CLIENT_ERROR
	// flush_all not allowed" (binary flush: "Auth failure.") and flushes
	// nothing.
	NoFlushAll bool
	// NoDumping is memcached -X: "stats cachedump" answers "CLIENT_ERROR
	// stats cachedump not allowed" (it is not implemented otherwise).
	NoDumping bool
	// NoWatch is memcached -W: "watch" answers "CLIENT_ERROR watch
	// commands not allowed" (it is not implemented otherwise: ERROR).
	NoWatch bool
	// Backlog is the listen(2) backlog of the TCP and unix listeners
	// (memcached -b, default 1024), passed as memcached passes it: the
	// kernel caps it at net.core.somaxconn and reads a negative one as
	// that cap. NewConfig sets the default; 0 is a backlog of 0.
	Backlog int
	// Threads is memcached -t, the number of worker threads: on Linux
	// that many event loops serve the plain TCP connections, each on an
	// OS thread of its own that sleeps in epoll_wait as memcached's
	// workers do (evloop_linux.go), provided GOMAXPROCS is above Threads
	// (substrate memcached sets it so); "stats settings" reports it as
	// num_threads and "stats" as threads. 0 (a process that serves other
	// things too): GOMAXPROCS loops that wait on Go's poller, and the
	// stats report GOMAXPROCS.
	Threads int
	// Verbosity is the initial "stats settings" verbosity (memcached -v
	// count); the verbosity command changes it.
	Verbosity int
	// OnShutdown, when set, enables the text command "shutdown"
	// (memcached -A): the connection is closed without a reply and
	// OnShutdown is called once, from the connection's goroutine, with
	// graceful set for "shutdown graceful"; it must not block (it must not
	// wait for Shutdown, which waits for that goroutine): the caller
	// stops the server and the process exits 0, as memcached does.
	// Without it, shutdown answers "ERROR: shutdown not enabled".
	OnShutdown func(graceful bool)
}

// DefaultBacklog is memcached's default listen backlog (-b 1024).
const DefaultBacklog = 1024

// NewConfig returns a Config with memcached's defaults and the standard
// listen address 127.0.0.1:11211.
func NewConfig() Config {
	return Config{
		Addrs:       []string{"127.0.0.1:11211"},
		MemoryLimit: DefaultMemoryLimit,
		MaxConns:    DefaultMaxConns,
		MaxItemSize: DefaultMaxItemSize,
		UnixMask:    DefaultUnixMask,
		Backlog:     DefaultBacklog,
	}
}

// Validate reports the first problem with c. The rules follow memcached's
// start-up checks (-I between 1k and 1024m and at most half of -m).
func (c Config) Validate() error {
	if len(c.Addrs) == 0 && len(c.NoTLSAddrs) == 0 && c.UnixSocket == "" && len(c.UDPAddrs) == 0 {
		return errors.New("cache: no listen addresses")
	}
	if c.UnixMask&^os.ModePerm != 0 {
		return fmt.Errorf("cache: unix socket mask %#o has bits outside 0777", uint32(c.UnixMask))
	}
	switch c.Protocol {
	case "", "auto", "binary", "ascii":
	default:
		return fmt.Errorf("cache: unknown protocol %q (auto, binary or ascii)", c.Protocol)
	}
	for _, a := range c.UDPAddrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("cache: bad UDP listen address %q: %w", a, err)
		}
	}
	if c.SASL {
		if len(c.UDPAddrs) > 0 {
			return errors.New("cache: cannot enable UDP while using binary SASL authentication")
		}
		if c.SASLPasswordFile == "" {
			return errors.New("cache: SASL enabled without a password file")
		}
		if _, err := loadPasswordFile(c.SASLPasswordFile); err != nil {
			return err
		}
	}
	if t := c.TLS; t != nil {
		if t.VerifyMode < 0 || t.VerifyMode > 3 {
			return fmt.Errorf("cache: TLS verify mode %d is not 0..3", t.VerifyMode)
		}
		if t.MinVersion < 0 || t.MinVersion > 3 {
			return fmt.Errorf("cache: TLS minimum version %d is not 0..3", t.MinVersion)
		}
	}
	for _, a := range append(c.Addrs[:len(c.Addrs):len(c.Addrs)], c.NoTLSAddrs...) {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("cache: bad listen address %q: %w", a, err)
		}
	}
	if c.MemoryLimit <= 0 {
		return fmt.Errorf("cache: memory limit must be positive, got %d", c.MemoryLimit)
	}
	if c.MaxConns <= 0 {
		return fmt.Errorf("cache: maximum connections must be greater than 0, got %d", c.MaxConns)
	}
	if c.MaxItemSize < minItemSize {
		return fmt.Errorf("cache: item max size cannot be less than 1024 bytes, got %d", c.MaxItemSize)
	}
	if c.MaxItemSize > maxItemSize {
		return fmt.Errorf("cache: cannot set item size limit higher than 1024 mb, got %d", c.MaxItemSize)
	}
	if int64(c.MaxItemSize) > c.MemoryLimit/2 {
		return fmt.Errorf("cache: item max size %d must not exceed half the memory limit %d", c.MaxItemSize, c.MemoryLimit)
	}
	return nil
}

// binaryOnly reports whether every connection speaks the binary protocol
// (-B binary, or -S).
func (c *Config) binaryOnly() bool { return c.SASL || c.Protocol == "binary" }

// binaryFirst reports whether a connection or datagram whose first byte
// is b speaks the binary protocol.
func (s *Server) binaryFirst(b byte) bool {
	if s.cfg.binaryOnly() {
		return true
	}
	return b == BinRequestMagic && s.cfg.Protocol != "ascii"
}

// bindingProtocol is stats settings' binding_protocol, as memcached names
// it.
func (s *Server) bindingProtocol() string {
	switch {
	case s.cfg.binaryOnly():
		return "binary"
	case s.cfg.Protocol == "ascii":
		return "ascii"
	}
	return "auto-negotiate"
}
