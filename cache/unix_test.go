package cache

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestUnixSocket runs text, meta and binary exchanges over a unix socket
// on both servers.
func TestUnixSocket(t *testing.T) {
	forEachTarget(t, serverOpts{unix: true}, func(t *testing.T, path string) {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o700 {
			t.Errorf("socket mode %v", fi.Mode())
		}
		c := dial(t, path)
		if got := c.roundTrip("set k 1 0 2\r\nhi\r\nget k\r\n"); got != "STORED\r\nVALUE k 1 2\r\nhi\r\nEND\r\n" {
			t.Errorf("text: %q", got)
		}
		st := c.stats("settings")
		if st["domain_socket"] != path || st["umask"] != "700" || st["binding_protocol"] != "auto-negotiate" {
			t.Errorf("settings: domain_socket %q umask %q binding_protocol %q", st["domain_socket"], st["umask"], st["binding_protocol"])
		}
		b := dial(t, path)
		want := binRes(BinGet, 0, u32(1), "", "hi", 3, 1)
		if got := b.binRoundTrip(binReq(BinGet, "k", "", "", 3, 0)); got != want {
			t.Errorf("binary: %v", parseBinResps(t, got))
		}
	})
}

// TestUnixSocketDisablesTCP documents memcached's rule the lead maps -s
// onto: with -s, no TCP port is opened even when -p is given.
func TestUnixSocketDisablesTCP(t *testing.T) {
	needMemcached(t)
	port := freePort(t)
	path := filepath.Join(t.TempDir(), "sock")
	cmd := execMemcached(t, "-u", "root", "-l", "127.0.0.1", "-p", itoa(port), "-U", "0", "-s", path)
	_ = cmd
	deadline := time.Now().Add(5 * time.Second)
	for {
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("memcached -s did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if c, err := net.Dial("tcp", "127.0.0.1:"+itoa(port)); err == nil {
		c.Close()
		t.Error("memcached -s also listens on TCP")
	}
}

func TestUnixSocketLifecycle(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sock")
	// A stale socket file is replaced, as memcached does.
	stale, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	cfg := NewConfig()
	cfg.Addrs = []string{"127.0.0.1:0"}
	cfg.UnixSocket = path
	cfg.UnixMask = 0o755
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("socket: %v %v", fi, err)
	}
	if len(s.Addrs()) != 2 {
		t.Errorf("addrs %v", s.Addrs())
	}
	c := dial(t, path)
	if got := c.roundTrip("version\r\n"); got != "VERSION 1.6.18\r\n" {
		t.Errorf("got %q", got)
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("socket file left after Shutdown: %v", err)
	}

	// A regular file in the way is not removed.
	if err := os.WriteFile(path, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	s2, _ := New(cfg)
	if err := s2.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "listen unix") {
		t.Errorf("start over a regular file: %v", err)
		s2.Shutdown(context.Background())
	}

	cfg.Addrs = nil
	if err := cfg.Validate(); err != nil {
		t.Errorf("unix only: %v", err)
	}
	cfg.UnixSocket = ""
	if err := cfg.Validate(); err == nil {
		t.Error("no listeners accepted")
	}
	cfg.UnixSocket, cfg.UnixMask = path, 0o1777
	if err := cfg.Validate(); err == nil {
		t.Error("mask with sticky bit accepted")
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// execMemcached starts memcached with args and kills it (by PID) at the
// end of the test.
func execMemcached(t testing.TB, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(memcachedBin, args...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd
}
