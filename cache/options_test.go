package cache

import (
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// These tests check the memcached switches that change behaviour (-F, -C,
// -X, -b, -A) against Debian's memcached started with the same switch:
// every expected reply below is also what memcached 1.6.18 answers.

func TestDisableFlushAll(t *testing.T) {
	forEachTarget(t, serverOpts{noFlush: true}, func(t *testing.T, addr string) {
		c := dial(t, addr)
		for _, tc := range []struct{ req, want string }{
			{"set a 0 0 1\r\nx\r\n", "STORED\r\n"},
			{"flush_all\r\n", "CLIENT_ERROR flush_all not allowed\r\n"},
			{"flush_all 0\r\n", "CLIENT_ERROR flush_all not allowed\r\n"},
			{"flush_all noreply\r\n", ""},
			{"get a\r\n", "VALUE a 0 1\r\nx\r\nEND\r\n"},
		} {
			if got := c.roundTrip(tc.req); got != tc.want {
				t.Errorf("%q: got %q, want %q", tc.req, got, tc.want)
			}
		}
		st := c.stats("settings")
		if st["flush_enabled"] != "no" {
			t.Errorf("stats settings flush_enabled %q, want no", st["flush_enabled"])
		}
		b := dial(t, addr)
		got := b.binRoundTrip(binReq(BinFlush, "", "", "", 1, 0) + binReq(BinFlushQ, "", "", "", 2, 0))
		want := binErr(BinFlush, BinStatusAuthError, 1) + binErr(BinFlushQ, BinStatusAuthError, 2)
		if got != want {
			t.Errorf("binary flush, flushq: %v, want %v", parseBinResps(t, got), parseBinResps(t, want))
		}
		if got := b.binRoundTrip(binReq(BinGet, "a", "", "", 3, 0)); len(parseBinResps(t, got)) != 1 || parseBinResps(t, got)[0].value != "x" {
			t.Errorf("get after binary flush: %v", parseBinResps(t, got))
		}
		// memcached counts the refused text flushes, not the binary ones.
		if n := c.stats("")["cmd_flush"]; n != "3" {
			t.Errorf("cmd_flush %s, want 3", n)
		}
	})
}

func TestDisableCAS(t *testing.T) {
	forEachTarget(t, serverOpts{noCAS: true}, func(t *testing.T, addr string) {
		c := dial(t, addr)
		for _, tc := range []struct{ req, want string }{
			{"set a 0 0 1\r\nx\r\n", "STORED\r\n"},
			{"gets a\r\n", "VALUE a 0 1 0\r\nx\r\nEND\r\n"},
			// The request's CAS never matches the item's missing one.
			{"cas a 0 0 1 5\r\ny\r\n", "EXISTS\r\n"},
			{"cas a 0 0 1 0\r\ny\r\n", "EXISTS\r\n"},
			{"cas zz 0 0 1 0\r\ny\r\n", "NOT_FOUND\r\n"},
			{"mg a c v\r\n", "VA 1 c0\r\nx\r\n"},
			{"ms a 1 C0\r\nq\r\n", "EX\r\n"},
			{"ms a 1 C99\r\nq\r\n", "EX\r\n"},
			{"ms b 1 C5\r\nz\r\n", "NF\r\n"},
			// Appends are not checked; deletes and arithmetic compare with 0.
			{"ms a 1 MA C5\r\ny\r\n", "HD\r\n"},
			{"append a 0 0 1\r\nz\r\n", "STORED\r\n"},
			{"mg a c v\r\n", "VA 3 c0\r\nxyz\r\n"},
			{"md a C3\r\n", "EX\r\n"},
			{"set n 0 0 1\r\n5\r\n", "STORED\r\n"},
			{"incr n 1\r\n", "6\r\n"},
			{"gets n\r\n", "VALUE n 0 1 0\r\n6\r\nEND\r\n"},
			{"ma n C7\r\n", "EX\r\n"},
			{"ma n C0 v c\r\n", "VA 1 c0\r\n7\r\n"},
			{"md a C0\r\n", "HD\r\n"},
			{"mg a v\r\n", "EN\r\n"},
		} {
			if got := c.roundTrip(tc.req); got != tc.want {
				t.Errorf("%q: got %q, want %q", tc.req, got, tc.want)
			}
		}
		st := c.stats("")
		for k, want := range map[string]string{"cas_misses": "2", "cas_hits": "0", "cas_badval": "4"} {
			if st[k] != want {
				t.Errorf("stats %s %s, want %s", k, st[k], want)
			}
		}
		if v := c.stats("settings")["cas_enabled"]; v != "no" {
			t.Errorf("stats settings cas_enabled %q, want no", v)
		}
		// Binary: a store's CAS is lost with the item's CAS field (so it
		// is a plain set); every CAS returned is 0; a delete compares with 0.
		b := dial(t, addr)
		got := parseBinResps(t, b.binRoundTrip(
			binReq(BinSet, "k", setExtras(0, 0), "v", 1, 0)+
				binReq(BinSet, "k", setExtras(0, 0), "w", 2, 12345)+
				binReq(BinGet, "k", "", "", 3, 0)+
				binReq(BinDelete, "k", "", "", 4, 5)+
				binReq(BinDelete, "k", "", "", 5, 0)))
		want := []struct {
			status uint16
			value  string
		}{{0, ""}, {0, ""}, {0, "w"}, {BinStatusKeyExists, "Data exists for key."}, {0, ""}}
		if len(got) != len(want) {
			t.Fatalf("binary replies %v", got)
		}
		for i, w := range want {
			if got[i].status != w.status || got[i].cas != 0 || (w.value != "" && got[i].value != w.value) {
				t.Errorf("binary reply %d: %v, want status %#x cas 0 value %q", i, got[i], w.status, w.value)
			}
		}
	})
}

// TestDisableCASItemSize: memcached's items lose their 8-byte CAS field
// under -C, which "stats bytes" shows.
func TestDisableCASItemSize(t *testing.T) {
	for _, o := range []serverOpts{{}, {noCAS: true}} {
		want := "127" // 61 + 66
		if o.noCAS {
			want = "111" // 53 + 58
		}
		forEachTarget(t, o, func(t *testing.T, addr string) {
			c := dial(t, addr)
			c.roundTrip("set a 0 0 1\r\nx\r\nset b 5 0 2\r\nxy\r\n")
			if got := c.stats("")["bytes"]; got != want {
				t.Errorf("-C %v: bytes %s, want %s", o.noCAS, got, want)
			}
		})
	}
}

func TestDisableDumping(t *testing.T) {
	forEachTarget(t, serverOpts{noDump: true}, func(t *testing.T, addr string) {
		c := dial(t, addr)
		if got := c.roundTrip("stats cachedump 1 1\r\n"); got != "CLIENT_ERROR stats cachedump not allowed\r\n" {
			t.Errorf("stats cachedump: %q", got)
		}
		if v := c.stats("settings")["dump_enabled"]; v != "no" {
			t.Errorf("stats settings dump_enabled %q, want no", v)
		}
	})
}

func TestDisableWatch(t *testing.T) {
	forEachTarget(t, serverOpts{noWatch: true}, func(t *testing.T, addr string) {
		if got := dial(t, addr).roundTrip("watch\r\n"); got != "CLIENT_ERROR watch commands not allowed\r\n" {
			t.Errorf("watch: %q", got)
		}
	})
}

// listenQueue returns the backlog ss reports (Send-Q of a listening
// socket) for the TCP port or unix socket path of addr.
func listenQueue(t *testing.T, addr string) int {
	t.Helper()
	ss, err := exec.LookPath("ss")
	if err != nil {
		needTool(t, "ss (iproute2)")
	}
	var out []byte
	if network(addr) == "unix" {
		out, err = exec.Command(ss, "-Hlx", "src", addr).Output()
	} else {
		_, port, _ := net.SplitHostPort(addr)
		out, err = exec.Command(ss, "-Hltn", "sport", "=", ":"+port).Output()
	}
	if err != nil {
		t.Fatalf("ss: %v", err)
	}
	f := strings.Fields(string(out))
	// ss -l columns: [Netid] State Recv-Q Send-Q Local Peer
	for i, w := range f {
		if w == "LISTEN" && i+2 < len(f) {
			n, err := strconv.Atoi(f[i+2])
			if err != nil {
				break
			}
			return n
		}
	}
	t.Fatalf("no listening socket for %s in %q", addr, out)
	return 0
}

func TestListenBacklog(t *testing.T) {
	for _, o := range []serverOpts{{backlog: 77}, {backlog: 5, unix: true}, {}} {
		want := o.backlog
		if want == 0 {
			want = DefaultBacklog
		}
		forEachTarget(t, o, func(t *testing.T, addr string) {
			if got := listenQueue(t, addr); got != want {
				t.Errorf("listen backlog (ss Send-Q) %d, want %d", got, want)
			}
			if got := dial(t, addr).stats("settings")["tcp_backlog"]; got != strconv.Itoa(want) {
				t.Errorf("stats settings tcp_backlog %s, want %d", got, want)
			}
		})
	}
}

func TestShutdownCommand(t *testing.T) {
	forEachTarget(t, serverOpts{}, func(t *testing.T, addr string) {
		c := dial(t, addr)
		if got := c.roundTrip("shutdown\r\nshutdown graceful\r\n"); got != "ERROR: shutdown not enabled\r\nERROR: shutdown not enabled\r\n" {
			t.Errorf("shutdown without -A: %q", got)
		}
		if got := c.stats("settings")["shutdown_command"]; got != "no" {
			t.Errorf("shutdown_command %q", got)
		}
	})
	for _, cmd := range []string{"shutdown\r\n", "shutdown graceful\r\n"} {
		forEachTarget(t, serverOpts{shutdown: true}, func(t *testing.T, addr string) {
			c := dial(t, addr)
			if got := c.stats("settings")["shutdown_command"]; got != "yes" {
				t.Errorf("shutdown_command %q", got)
			}
			if got := c.roundTrip("shutdown foo\r\nshutdown graceful now\r\n"); got != "CLIENT_ERROR invalid shutdown mode\r\nCLIENT_ERROR invalid shutdown mode\r\n" {
				t.Errorf("bad modes: %q", got)
			}
			c.send(cmd)
			if got := c.expectEOF(); got != "" {
				t.Errorf("%q answered %q, want the connection closed without a reply", cmd, got)
			}
			// The server stops: its port refuses connections.
			deadline := time.Now().Add(5 * time.Second)
			for {
				nc, err := net.DialTimeout("tcp", addr, time.Second)
				if err != nil {
					break
				}
				nc.Close()
				if time.Now().After(deadline) {
					t.Fatalf("%q: still accepting connections", cmd)
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

// TestDisableCASItemSizeLimit: under -C the 8 bytes of CAS are not counted
// against -I either.
func TestDisableCASItemSizeLimit(t *testing.T) {
	for _, o := range []serverOpts{{}, {noCAS: true}} {
		fits := DefaultMaxItemSize - itemHeaderSize - casSize - 2 - 2 // key "a" + NUL, value CR LF
		if o.noCAS {
			fits += casSize
		}
		forEachTarget(t, o, func(t *testing.T, addr string) {
			c := dial(t, addr)
			for _, tc := range []struct {
				n    int
				want string
			}{{fits, "STORED\r\n"}, {fits + 1, "SERVER_ERROR object too large for cache\r\n"}} {
				req := "set a 0 0 " + strconv.Itoa(tc.n) + "\r\n" + strings.Repeat("v", tc.n) + "\r\n"
				if got := c.roundTrip(req); got != tc.want {
					t.Errorf("-C %v: a %d-byte value: %q, want %q", o.noCAS, tc.n, got, tc.want)
				}
			}
		})
	}
}
