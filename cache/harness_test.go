package cache

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"substrate/internal/testkit"
)

const memcachedBin = "/usr/bin/memcached"

// target is a server under test: ours, or Debian's memcached.
type target struct {
	name string
	addr string
}

type serverOpts struct {
	memMB   int    // -m
	noEvict bool   // -M
	conns   int    // -c
	sasl    bool   // -S with the users in saslUsers
	unix    bool   // -s <temp dir>/sock instead of TCP; the address is the path
	proto   string // -B, if set
	noCAS   bool   // -C
	noFlush bool   // -F
	noDump  bool   // -X
	noWatch bool   // -W
	backlog int    // -b, if set
	// shutdown is -A: ours stops (Shutdown) when the command arrives,
	// as memcached exits.
	shutdown bool
}

// saslUsers are the credentials of SASL test servers.
var saslUsers = map[string]string{"user": "secret", "other": "pass2"}

// startOurs starts our server on a loopback port 0 and returns its address.
func startOurs(t testing.TB, o serverOpts) string {
	t.Helper()
	cfg := NewConfig()
	cfg.Addrs = []string{"127.0.0.1:0"}
	if o.memMB > 0 {
		cfg.MemoryLimit = int64(o.memMB) << 20
	}
	cfg.NoEvict = o.noEvict
	cfg.Protocol = o.proto
	cfg.NoCAS, cfg.NoFlushAll, cfg.NoDumping, cfg.NoWatch = o.noCAS, o.noFlush, o.noDump, o.noWatch
	if o.backlog != 0 {
		cfg.Backlog = o.backlog
	}
	var srv *Server
	if o.shutdown {
		cfg.OnShutdown = func(bool) {
			go srv.Shutdown(context.Background())
		}
	}
	if o.conns > 0 {
		cfg.MaxConns = o.conns
	}
	if o.sasl {
		cfg.SASL = true
		cfg.SASLPasswordFile = writePasswordFile(t)
	}
	if o.unix {
		cfg.Addrs = nil
		cfg.UnixSocket = filepath.Join(t.TempDir(), "sock")
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv = s
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
	if o.unix {
		return cfg.UnixSocket
	}
	return s.Addrs()[0].String()
}

func freePort(t testing.TB) int {
	return testkit.FreePort(t)
}

// startMemcached runs /usr/bin/memcached on a free loopback port, waits
// until it accepts, and kills it (by PID) when the test ends.
func startMemcached(t testing.TB, o serverOpts) string {
	t.Helper()
	return startMemcachedEnv(t, o, nil)
}

// startMemcachedEnv is startMemcached with extra environment; with o.sasl
// and a nil env it builds the SASL configuration itself (saslConf).
func startMemcachedEnv(t testing.TB, o serverOpts, env []string) string {
	t.Helper()
	port := freePort(t)
	args := []string{"-u", "nobody", "-l", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "0", "-t", "1"}
	if o.memMB > 0 {
		args = append(args, "-m", strconv.Itoa(o.memMB))
	}
	if o.noEvict {
		args = append(args, "-M")
	}
	if o.conns > 0 {
		args = append(args, "-c", strconv.Itoa(o.conns))
	}
	if o.proto != "" {
		args = append(args, "-B", o.proto)
	}
	for _, f := range []struct {
		on   bool
		flag string
	}{{o.noCAS, "-C"}, {o.noFlush, "-F"}, {o.noDump, "-X"}, {o.noWatch, "-W"}, {o.shutdown, "-A"}} {
		if f.on {
			args = append(args, f.flag)
		}
	}
	if o.backlog != 0 {
		args = append(args, "-b", strconv.Itoa(o.backlog))
	}
	if o.sasl {
		if env == nil {
			env = saslConf(t)
		}
		args = append(args, "-S")
		args[1] = "root" // the sasldb in the test's temporary directory is private
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	if o.unix {
		addr = filepath.Join(t.TempDir(), "sock")
		args[1] = "root" // memcached binds after dropping privileges; the temp dir is private
		args = append(args, "-s", addr, "-a", "700")
	}
	cmd := exec.Command(memcachedBin, args...)
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout(network(addr), addr, time.Second)
		if err == nil {
			c.Close()
			return addr
		}
		if time.Now().After(deadline) {
			t.Fatalf("memcached did not start: %v; stderr: %s", err, stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// forEachTarget runs body against our server and, when installed, against
// Debian's memcached with the same options, so every assertion is checked
// against the real daemon too.
func forEachTarget(t *testing.T, o serverOpts, body func(t *testing.T, addr string)) {
	t.Run("ours", func(t *testing.T) { body(t, startOurs(t, o)) })
	t.Run("memcached", func(t *testing.T) {
		needMemcached(t)
		body(t, startMemcached(t, o))
	})
}

// needMemcached skips a comparison with Debian's memcached when it is not
// installed, or fails it under SUBSTRATE_REQUIRE_CLIENTS=1 (CI), so that
// a comparison never disappears silently.
func needMemcached(t testing.TB) {
	t.Helper()
	if _, err := os.Stat(memcachedBin); err == nil {
		return
	}
	if os.Getenv("SUBSTRATE_REQUIRE_CLIENTS") == "1" {
		t.Fatalf("%s is not installed (SUBSTRATE_REQUIRE_CLIENTS=1)", memcachedBin)
	}
	t.Skipf("%s is not installed", memcachedBin)
}

// network is "unix" for socket paths, else "tcp".
func network(addr string) string {
	if strings.HasPrefix(addr, "/") {
		return "unix"
	}
	return "tcp"
}

// client is a raw text-protocol connection.
type client struct {
	t  testing.TB
	nc net.Conn
	r  *bufio.Reader
}

func dial(t testing.TB, addr string) *client {
	t.Helper()
	nc, err := net.DialTimeout(network(addr), addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &client{t: t, nc: nc, r: bufio.NewReaderSize(nc, 1<<16)}
}

func (c *client) send(s string) {
	c.t.Helper()
	c.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c.nc, s); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// roundTrip sends req followed by "mn\r\n" and returns everything the
// server answered before "MN\r\n": the exact reply bytes of req, with no
// timing guesses.
func (c *client) roundTrip(req string) string {
	c.t.Helper()
	c.send(req + "mn\r\n")
	return c.readUntilMN()
}

func (c *client) readUntilMN() string {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	var out bytes.Buffer
	for {
		line, err := c.r.ReadBytes('\n')
		if err != nil {
			c.t.Fatalf("read after %q: %v", out.String(), err)
		}
		if string(line) == "MN\r\n" {
			return out.String()
		}
		out.Write(line)
	}
}

// expectEOF asserts the server closes the connection, returning what it
// sent first.
func (c *client) expectEOF() string {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c.r)
	if err != nil {
		c.t.Fatalf("expected EOF, got %v after %q", err, b)
	}
	return string(b)
}

func (c *client) stats(sub string) map[string]string {
	c.t.Helper()
	cmd := "stats"
	if sub != "" {
		cmd += " " + sub
	}
	out := c.roundTrip(cmd + "\r\n")
	m := map[string]string{}
	for _, l := range strings.Split(out, "\r\n") {
		f := strings.SplitN(l, " ", 3)
		if len(f) == 3 && f[0] == "STAT" {
			m[f[1]] = f[2]
		}
	}
	return m
}

func (c *client) statInt(m map[string]string, k string) int64 {
	c.t.Helper()
	v, err := strconv.ParseInt(m[k], 10, 64)
	if err != nil {
		c.t.Fatalf("stat %s = %q", k, m[k])
	}
	return v
}

func value(n int, fill byte) string { return strings.Repeat(string(fill), n) }

func setCmd(key string, flags, exp, n int) string {
	return fmt.Sprintf("set %s %d %d %d\r\n%s\r\n", key, flags, exp, n, value(n, 'v'))
}

// needTool skips when a tool a test runs is missing, or fails under
// SUBSTRATE_REQUIRE_CLIENTS=1.
func needTool(t testing.TB, what string) {
	t.Helper()
	if os.Getenv("SUBSTRATE_REQUIRE_CLIENTS") == "1" {
		t.Fatalf("%s is not installed (SUBSTRATE_REQUIRE_CLIENTS=1)", what)
	}
	t.Skipf("%s is not installed", what)
}
