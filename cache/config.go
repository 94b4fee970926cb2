package cache

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
)

// Defaults match memcached 1.6.18's command-line defaults.
const (
	DefaultMemoryLimit = 64 << 20 // memcached -m 64
	DefaultMaxConns    = 1024     // memcached -c 1024
	DefaultMaxItemSize = 1 << 20  // memcached -I 1m

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
}

// NewConfig returns a Config with memcached's defaults and the standard
// listen address 127.0.0.1:11211.
func NewConfig() Config {
	return Config{
		Addrs:       []string{"127.0.0.1:11211"},
		MemoryLimit: DefaultMemoryLimit,
		MaxConns:    DefaultMaxConns,
		MaxItemSize: DefaultMaxItemSize,
	}
}

// Validate reports the first problem with c. The rules follow memcached's
// start-up checks (-I between 1k and 1024m and at most half of -m).
func (c Config) Validate() error {
	if len(c.Addrs) == 0 {
		return errors.New("cache: no listen addresses")
	}
	for _, a := range c.Addrs {
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
