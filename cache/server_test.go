package cache

import (
	"bytes"
	"context"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	if err := NewConfig().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	bad := []func(*Config){
		func(c *Config) { c.Addrs = nil },
		func(c *Config) { c.Addrs = []string{"nohostport"} },
		func(c *Config) { c.MemoryLimit = 0 },
		func(c *Config) { c.MaxConns = 0 },
		func(c *Config) { c.MaxItemSize = 512 },
		func(c *Config) { c.MaxItemSize = 2 << 30 },
		func(c *Config) { c.MemoryLimit = 1 << 20 }, // -I 1m must be <= -m/2
	}
	for i, f := range bad {
		c := NewConfig()
		f(&c)
		err := c.Validate()
		if err == nil || !strings.HasPrefix(err.Error(), "cache: ") {
			t.Errorf("case %d: %v", i, err)
		}
		if _, err := New(c); err == nil {
			t.Errorf("case %d: New accepted invalid config", i)
		}
	}
}

func TestLifecycle(t *testing.T) {
	cfg := NewConfig()
	cfg.Addrs = []string{"127.0.0.1:0", "127.0.0.1:0"}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	addrs := s.Addrs()
	if len(addrs) != 2 {
		t.Fatalf("addrs %v", addrs)
	}
	for _, a := range addrs {
		c := dial(t, a.String())
		if got := c.roundTrip("version\r\n"); got != "VERSION 1.6.18\r\n" {
			t.Errorf("%s: %q", a, got)
		}
	}
	// An idle connection must not hold up Shutdown.
	idle := dial(t, addrs[0].String())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	if got := idle.expectEOF(); got != "" {
		t.Errorf("idle conn got %q", got)
	}
	if _, err := net.DialTimeout("tcp", addrs[0].String(), time.Second); err == nil {
		t.Error("still accepting after Shutdown")
	}
	if err := s.Start(context.Background()); err != ErrServerClosed {
		t.Errorf("Start after Shutdown: %v", err)
	}
}

func TestStartBindFailure(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	free := freePort(t)
	cfg := NewConfig()
	cfg.Addrs = []string{"127.0.0.1:" + strconv.Itoa(free), l.Addr().String()}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err == nil || !strings.HasPrefix(err.Error(), "cache: ") {
		t.Fatalf("Start with a taken port: %v", err)
	}
	// The first listener must have been closed again.
	l2, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(free))
	if err != nil {
		t.Fatalf("first address still bound: %v", err)
	}
	l2.Close()
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestIPv6Listen(t *testing.T) {
	if l, err := net.Listen("tcp", "[::1]:0"); err != nil {
		t.Skip("no IPv6 loopback")
	} else {
		l.Close()
	}
	cfg := NewConfig()
	cfg.Addrs = []string{"[::1]:0"}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())
	c := dial(t, s.Addrs()[0].String())
	if got := c.roundTrip("set k 0 0 1\r\nx\r\nget k\r\n"); got != "STORED\r\nVALUE k 0 1\r\nx\r\nEND\r\n" {
		t.Errorf("got %q", got)
	}
}

// writeCounter is a net.Conn that feeds one scripted input and counts the
// Write calls the server makes.
type writeCounter struct {
	net.Conn
	mu     sync.Mutex
	in     *bytes.Reader
	writes int
	out    bytes.Buffer
	done   chan struct{}
}

func (w *writeCounter) Read(b []byte) (int, error) {
	w.mu.Lock()
	n, _ := w.in.Read(b)
	w.mu.Unlock()
	if n == 0 {
		<-w.done
		return 0, net.ErrClosed
	}
	return n, nil
}

func (w *writeCounter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes++
	w.out.Write(b)
	if bytes.HasSuffix(w.out.Bytes(), []byte("MN\r\n")) {
		select {
		case <-w.done:
		default:
			close(w.done)
		}
	}
	return len(b), nil
}

func (w *writeCounter) Close() error                { return nil }
func (w *writeCounter) RemoteAddr() net.Addr        { return &net.TCPAddr{} }
func (w *writeCounter) SetDeadline(time.Time) error { return nil }

// TestFlushCoalescing: a pipelined batch of 200 commands that arrives in
// one read is answered with a single write.
func TestFlushCoalescing(t *testing.T) {
	cfg := NewConfig()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var req strings.Builder
	for range 100 {
		req.WriteString("set k 0 0 1\r\nx\r\nget k\r\n")
	}
	req.WriteString("mn\r\n")
	wc := &writeCounter{in: bytes.NewReader([]byte(req.String())), done: make(chan struct{})}
	c := newConn(s, wc, &net.TCPAddr{})
	c.serve()
	want := strings.Repeat("STORED\r\nVALUE k 0 1\r\nx\r\nEND\r\n", 100) + "MN\r\n"
	if wc.out.String() != want {
		t.Fatalf("replies differ: %d bytes", wc.out.Len())
	}
	if wc.writes != 1 {
		t.Errorf("%d writes for one pipelined batch, want 1", wc.writes)
	}
}

// BenchmarkServer measures pipelined set+get round trips over loopback
// against our server and (if installed) memcached, for comparison.
func BenchmarkServer(b *testing.B) {
	run := func(b *testing.B, addr string) {
		c := dial(b, addr)
		var req strings.Builder
		for i := range 16 {
			k := "bench" + strconv.Itoa(i)
			req.WriteString("set " + k + " 0 0 100 noreply\r\n" + strings.Repeat("v", 100) + "\r\nget " + k + "\r\n")
		}
		batch := req.String()
		b.ResetTimer()
		for range b.N {
			c.roundTrip(batch)
		}
		b.ReportMetric(float64(b.N*32)/b.Elapsed().Seconds(), "ops/s")
	}
	b.Run("ours", func(b *testing.B) { run(b, startOurs(b, serverOpts{})) })
	b.Run("memcached", func(b *testing.B) {
		needMemcached(b)
		run(b, startMemcached(b, serverOpts{}))
	})
}
