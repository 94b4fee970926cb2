package main

import (
	"context"
	"errors"
	"math"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"substrate/broker"
	"substrate/cache"
	"substrate/internal/logging"
)

func startTestCache(t *testing.T, protocol string) *cache.Server {
	t.Helper()
	cfg := cache.NewConfig()
	cfg.Addrs = []string{"127.0.0.1:0"}
	cfg.Protocol = protocol
	srv, err := cache.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	return srv
}

// TestCacheCheck: the cache answers version in the protocol its listener
// speaks; a closed cache fails the check, naming memcached.
func TestCacheCheck(t *testing.T) {
	for _, proto := range []string{"auto", "ascii", "binary"} {
		t.Run(proto, func(t *testing.T) {
			srv := startTestCache(t, proto)
			h := &health{checks: []serviceCheck{cacheCheck(srv)}}
			if f := h.Failures(context.Background()); len(f) != 0 {
				t.Fatalf("healthy cache: %v", f)
			}
			srv.Shutdown(context.Background())
			f := h.Failures(context.Background())
			if len(f) != 1 || !strings.HasPrefix(f[0], "memcached: ") {
				t.Fatalf("closed cache: %v", f)
			}
		})
	}
}

// TestBrokerCheck: a broker that accepts and has no alarm passes; one
// whose disk alarm is on (a limit above any disk's free space) fails with
// the alarm named; a stopped one fails.
func TestBrokerCheck(t *testing.T) {
	start := func(limit uint64) *broker.Server {
		cfg := broker.NewConfig()
		cfg.Addrs = []string{"127.0.0.1:0"}
		cfg.StoreDir = filepath.Join(t.TempDir(), "broker")
		cfg.DiskFreeLimit = limit
		cfg.Logger = logging.Discard()
		b, err := broker.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Shutdown(context.Background()) })
		return b
	}
	b := start(0)
	h := &health{checks: []serviceCheck{brokerCheck(b)}}
	if f := h.Failures(context.Background()); len(f) != 0 {
		t.Fatalf("healthy broker: %v", f)
	}
	b.Shutdown(context.Background())
	if f := h.Failures(context.Background()); len(f) != 1 || !strings.HasPrefix(f[0], "amqp: ") {
		t.Fatalf("stopped broker: %v", f)
	}

	b = start(math.MaxInt64)
	h = &health{checks: []serviceCheck{brokerCheck(b)}}
	deadline := time.Now().Add(10 * time.Second)
	for !b.DiskAlarm() {
		if time.Now().After(deadline) {
			t.Fatal("disk alarm not set")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if f := h.Failures(context.Background()); len(f) != 1 || !strings.HasPrefix(f[0], "amqp: disk alarm in effect") {
		t.Fatalf("disk alarm: %v", f)
	}
}

// TestFailuresParallelAndBounded: checks run in parallel, each within
// healthTimeout, so hung checks cost one timeout, not one each; the lines
// keep the services' order; a panicking check fails only itself.
func TestFailuresParallelAndBounded(t *testing.T) {
	release := make(chan struct{}) // the hung checks ignore their context
	t.Cleanup(func() { close(release) })
	hang := func(context.Context) error { <-release; return nil }
	h := &health{log: logging.Discard(), checks: []serviceCheck{
		{"etcd", hang},
		{"amqp", func(context.Context) error { return nil }},
		{"memcached", hang},
		{"redis", func(context.Context) error { panic("boom") }},
		{"http", func(context.Context) error { return errors.New("down") }},
	}}
	t0 := time.Now()
	f := h.Failures(context.Background())
	if d := time.Since(t0); d > healthTimeout+time.Second {
		t.Errorf("took %v", d)
	}
	want := []string{"etcd: no answer within 2s", "memcached: no answer within 2s", "redis: check panicked: boom", "http: down"}
	if strings.Join(f, "\n") != strings.Join(want, "\n") {
		t.Errorf("got %q, want %q", f, want)
	}
}

// TestWatchdogPingsWhileHealthy: with WATCHDOG_USEC set, WATCHDOG=1
// arrives on NOTIFY_SOCKET every half interval while the services
// answer, also while one is degraded (an alarm), stops while one does
// not answer, and resumes.
func TestWatchdogPingsWhileHealthy(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "200000") // 200 ms: a ping every 100 ms
	var state atomic.Int32              // 0 healthy, 1 degraded, 2 not answering
	h := &health{checks: []serviceCheck{{"amqp", func(context.Context) error {
		switch state.Load() {
		case 1:
			return degradedError{errors.New("disk alarm in effect")}
		case 2:
			return errors.New("not accepting")
		}
		return nil
	}}}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); watchdog(ctx, logging.Discard(), h) }()
	defer func() { cancel(); <-done }()

	buf := make([]byte, 64)
	read := func(within time.Duration) (string, bool) {
		conn.SetReadDeadline(time.Now().Add(within))
		n, err := conn.Read(buf)
		if err != nil {
			return "", false
		}
		return string(buf[:n]), true
	}
	pings := func(what string) {
		t.Helper()
		for i := range 3 {
			if msg, ok := read(5 * time.Second); !ok || msg != "WATCHDOG=1" {
				t.Fatalf("%s: ping %d: %q %v", what, i, msg, ok)
			}
		}
	}
	pings("healthy")
	state.Store(1)
	if f := h.Failures(context.Background()); len(f) != 1 {
		t.Fatalf("/healthz failures while degraded: %q", f)
	}
	pings("degraded")
	state.Store(2)
	// At most one ping already on its way; then silence for several
	// periods.
	read(150 * time.Millisecond)
	if msg, ok := read(500 * time.Millisecond); ok {
		t.Fatalf("pinged while a service does not answer: %q", msg)
	}
	state.Store(0)
	if msg, ok := read(5 * time.Second); !ok || msg != "WATCHDOG=1" {
		t.Fatalf("no ping once healthy again: %q %v", msg, ok)
	}
}

// TestWatchdogOff: without WATCHDOG_USEC the watchdog returns at once.
func TestWatchdogOff(t *testing.T) {
	t.Setenv("WATCHDOG_USEC", "")
	done := make(chan struct{})
	go func() { defer close(done); watchdog(context.Background(), logging.Discard(), &health{}) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("watchdog runs without WATCHDOG_USEC")
	}
}
