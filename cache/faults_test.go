package cache

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"substrate/internal/faults"
	"substrate/internal/testkit"
)

// startPanicServer starts a server with every kind of listener (TCP,
// unix socket, UDP) logging into a buffer; with tf, the TCP listener
// speaks TLS and a plain one is added.
func startPanicServer(t *testing.T, tf *tlsFiles) (*Server, *testkit.Buffer) {
	t.Helper()
	logs := &testkit.Buffer{}
	cfg := NewConfig()
	cfg.Addrs = []string{"127.0.0.1:0"}
	cfg.UnixSocket = filepath.Join(t.TempDir(), "sock")
	cfg.UDPAddrs = []string{"127.0.0.1:0"}
	if tf != nil {
		cfg.TLS = NewTLSConfig(tf.srvCert, tf.srvKey)
		cfg.NoTLSAddrs = []string{"127.0.0.1:0"}
	}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return s, logs
}

// checkContained checks the aftermath of one injected panic: counted once
// for memcached, one ERROR line naming the site, and a bystander client
// (connected before the panic) still served.
func checkContained(t *testing.T, before uint64, logs *testkit.Buffer, site string, bystander *client) {
	t.Helper()
	// The count goes up before the line is logged: wait for the line.
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(logs.String(), "level=ERROR") && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got := faults.Count(faults.Memcached) - before; got != 1 {
		t.Errorf("memcached panics counted: %d, want 1", got)
	}
	var errLines int
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "level=ERROR") {
			errLines++
			if !strings.Contains(l, site) || !strings.Contains(l, "peer=") || !strings.Contains(l, "stack=") {
				t.Errorf("error line lacks site, peer or stack: %.300s", l)
			}
		}
	}
	if errLines != 1 {
		t.Errorf("%d ERROR lines, want 1:\n%s", errLines, logs.String())
	}
	if got := bystander.roundTrip("set other 0 0 2\r\nok\r\nget other\r\n"); got != "STORED\r\nVALUE other 0 2\r\nok\r\nEND\r\n" {
		t.Errorf("bystander: %q", got)
	}
}

// TestPanicClosesOnlyThatConnection injects a panic at each cache site
// and checks that only the offender is dropped.
func TestPanicClosesOnlyThatConnection(t *testing.T) {
	t.Run("text", func(t *testing.T) {
		s, logs := startPanicServer(t, nil)
		defer faults.Arm(SiteConn, "boom")()
		bystander := dial(t, s.Addrs()[0].String())
		bystander.roundTrip("version\r\n")
		before := faults.Count(faults.Memcached)
		c := dial(t, s.Addrs()[0].String())
		c.send("set a 0 0 1\r\nx\r\nget a xboomx\r\n")
		// The reply to the set was still buffered: a panicking
		// connection is closed, not flushed.
		if got := c.expectEOF(); got != "" {
			t.Errorf("offender got %q", got)
		}
		checkContained(t, before, logs, SiteConn, bystander)
	})
	t.Run("meta", func(t *testing.T) {
		s, logs := startPanicServer(t, nil)
		defer faults.Arm(SiteConn, "boom")()
		bystander := dial(t, s.Addrs()[0].String())
		before := faults.Count(faults.Memcached)
		c := dial(t, s.Addrs()[0].String())
		c.send("ms boom 1\r\nx\r\n")
		if got := c.expectEOF(); got != "" {
			t.Errorf("offender got %q", got)
		}
		checkContained(t, before, logs, SiteConn, bystander)
	})
	t.Run("meta under the shard lock", func(t *testing.T) {
		s, logs := startPanicServer(t, nil)
		defer faults.Arm(SiteMeta, "boom")()
		bystander := dial(t, s.Addrs()[0].String())
		bystander.roundTrip("set boom 0 0 1\r\nx\r\n")
		before := faults.Count(faults.Memcached)
		c := dial(t, s.Addrs()[0].String())
		c.send("mg boom v\r\n")
		if got := c.expectEOF(); got != "" {
			t.Errorf("offender got %q", got)
		}
		checkContained(t, before, logs, SiteMeta, bystander)
		// The same key's shard was locked when the panic hit: it must
		// have been released (a classic get takes the same lock).
		if got := bystander.roundTrip("get boom\r\n"); got != "VALUE boom 0 1\r\nx\r\nEND\r\n" {
			t.Errorf("after the panic under the lock: %q", got)
		}
	})
	t.Run("binary", func(t *testing.T) {
		s, logs := startPanicServer(t, nil)
		defer faults.Arm(SiteBinary, "boom")()
		bystander := dial(t, s.Addrs()[0].String())
		before := faults.Count(faults.Memcached)
		c := dial(t, s.Addrs()[0].String())
		c.send(binReq(BinGet, "a-boom", "", "", 1, 0))
		if got := c.expectEOF(); got != "" {
			t.Errorf("offender got %q", got)
		}
		checkContained(t, before, logs, SiteBinary, bystander)
	})
	t.Run("unix", func(t *testing.T) {
		s, logs := startPanicServer(t, nil)
		defer faults.Arm(SiteConn, "boom")()
		bystander := dial(t, s.cfg.UnixSocket)
		before := faults.Count(faults.Memcached)
		c := dial(t, s.cfg.UnixSocket)
		c.send("delete boom\r\n")
		if got := c.expectEOF(); got != "" {
			t.Errorf("offender got %q", got)
		}
		checkContained(t, before, logs, SiteConn, bystander)
	})
	t.Run("udp", func(t *testing.T) {
		s, logs := startPanicServer(t, nil)
		defer faults.Arm(SiteConn, "boom")()
		bystander := dial(t, s.Addrs()[0].String())
		before := faults.Count(faults.Memcached)
		u := dialUDP(t, s.UDPAddrs()[0].String())
		// The panicking datagram is dropped; the socket's next datagram,
		// from the same client, is answered.
		if got := u.exchange(udpFrame(7, 0, 1, "get boom\r\n")); len(got) != 0 {
			t.Errorf("panicking datagram answered %q", got)
		}
		if got := u.exchange(udpFrame(8, 0, 1, "set u 0 0 1\r\nx\r\n")); len(got) != 1 || got[0] != "8/0/1:STORED\r\n" {
			t.Errorf("next datagram: %q", got)
		}
		checkContained(t, before, logs, SiteConn, bystander)
	})
	t.Run("tls", func(t *testing.T) {
		tf := newTLSFiles(t)
		s, logs := startPanicServer(t, tf)
		defer faults.Arm(SiteTLS, "boom")()
		addrs := s.Addrs() // TLS, plain, unix
		bystander, err := dialTLS(t, tf, addrs[0].String(), nil)
		if err != nil {
			t.Fatal(err)
		}
		bystander.roundTrip("version\r\n")
		before := faults.Count(faults.Memcached)
		d := &net.Dialer{Timeout: 2 * time.Second}
		nc, err := tls.DialWithDialer(d, "tcp", addrs[0].String(), &tls.Config{ServerName: "boom.example", InsecureSkipVerify: true})
		if err == nil {
			nc.Close()
			t.Fatal("handshake with the armed server name succeeded")
		}
		checkContained(t, before, logs, SiteTLS, bystander)
	})
}

// TestCacheMemlimitCap: with MaxMemoryLimit (substrate serve), the
// cache cannot be raised past its share; lowering and raising back
// within it work as in memcached.
func TestCacheMemlimitCap(t *testing.T) {
	cfg := NewConfig()
	cfg.Addrs = []string{"127.0.0.1:0"}
	cfg.MemoryLimit = 64 << 20
	cfg.MaxMemoryLimit = 64 << 20
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())
	c := dial(t, s.Addrs()[0].String())
	want := "CLIENT_ERROR cannot set maxbytes to more than 64m (the cache's share of substrate's memory)\r\nOK\r\nOK\r\n"
	if got := c.roundTrip("cache_memlimit 65\r\ncache_memlimit 32\r\ncache_memlimit 64\r\n"); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := s.store.limit.Load(); got != 64<<20 {
		t.Errorf("limit %d", got)
	}
	if got := c.stats("settings")["maxbytes"]; got != "67108864" {
		t.Errorf("maxbytes %s", got)
	}
}
