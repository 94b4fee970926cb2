//go:build linux

package cache

import (
	"io"
	"net"
	"testing"
)

// TestLoopRequestAllocs checks that a loop serves a text get (hit and
// miss), a set and a delete without allocating: the request path of
// memcaslap's load. A set allocates the item's buffer (key and value)
// and nothing else. The client side reuses its buffers, and
// testing.AllocsPerRun counts every goroutine's allocations, so the
// loop's are in the figure.
func TestLoopRequestAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation counts")
	}
	eachLoopMode(t, func(t *testing.T, threads int) {
		_, addr := startLoopServer(t, threads, nil)
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		buf := make([]byte, 256)
		do := func(req []byte, want string) {
			if _, err := nc.Write(req); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(nc, buf[:len(want)]); err != nil {
				t.Fatal(err)
			}
			if string(buf[:len(want)]) != want {
				t.Fatalf("%q: got %q, want %q", req, buf[:len(want)], want)
			}
		}
		set := []byte("set k 5 0 3\r\nxyz\r\n")
		do(set, "STORED\r\n")
		for _, c := range []struct {
			name, req, want string
			max             float64
		}{
			{"get hit", "get k\r\n", "VALUE k 5 3\r\nxyz\r\nEND\r\n", 0},
			{"get miss", "get nokey\r\n", "END\r\n", 0},
			{"gets", "gets nokey k\r\n", "", 0},
			{"set", "set k 5 0 3\r\nxyz\r\n", "STORED\r\n", 1},
			{"delete miss", "delete nokey\r\n", "NOT_FOUND\r\n", 0},
			{"touch", "touch k 0\r\n", "TOUCHED\r\n", 0},
		} {
			want := c.want
			if c.name == "gets" {
				// The CAS varies: ask once for the reply's length.
				do(set, "STORED\r\n")
				if _, err := io.WriteString(nc, c.req); err != nil {
					t.Fatal(err)
				}
				n, err := nc.Read(buf)
				if err != nil {
					t.Fatal(err)
				}
				want = string(buf[:n])
			}
			req := []byte(c.req)
			got := testing.AllocsPerRun(2000, func() { do(req, want) })
			if got > c.max {
				t.Errorf("%s: %.2f allocations per request, want at most %.0f", c.name, got, c.max)
			}
		}
	})
}

// TestLoopStatsAddUp checks that "stats" adds up the loops' own counters
// (loopState.stats) and the server's, and that "stats reset" clears them
// all: connections spread over every loop.
func TestLoopStatsAddUp(t *testing.T) {
	eachLoopMode(t, func(t *testing.T, threads int) {
		s, addr := startLoopServer(t, threads, nil)
		conns := 3 * len(s.loops)
		for i := range conns {
			c := dial(t, addr)
			if got := c.roundTrip("set k 0 0 1\r\nv\r\n"); got != "STORED\r\n" {
				t.Fatalf("set: %q", got)
			}
			for range i + 1 {
				if got := c.roundTrip("get k nokey\r\n"); got != "VALUE k 0 1\r\nv\r\nEND\r\n" {
					t.Fatalf("get: %q", got)
				}
			}
		}
		gets := conns * (conns + 1) / 2 // 1 + 2 + ... + conns commands of 2 keys
		c := dial(t, addr)
		st := c.stats("")
		for k, want := range map[string]int64{"cmd_get": int64(2 * gets), "get_hits": int64(gets), "get_misses": int64(gets),
			"cmd_set": int64(conns), "total_connections": int64(conns + 1 + 1)} {
			if got := c.statInt(st, k); got != want {
				t.Errorf("%s = %d, want %d", k, got, want)
			}
		}
		if c.statInt(st, "bytes_read") == 0 || c.statInt(st, "bytes_written") == 0 {
			t.Errorf("bytes_read %s, bytes_written %s", st["bytes_read"], st["bytes_written"])
		}
		busy := 0
		for _, l := range s.loops {
			if l.stats.cmdGet.Load() > 0 {
				busy++
			}
		}
		if busy < len(s.loops) {
			t.Errorf("%d of %d loops counted gets: the connections did not spread", busy, len(s.loops))
		}
		if got := c.roundTrip("stats reset\r\n"); got != "RESET\r\n" {
			t.Fatalf("stats reset: %q", got)
		}
		st = c.stats("")
		for _, k := range []string{"cmd_get", "get_hits", "get_misses", "cmd_set"} {
			if got := c.statInt(st, k); got != 0 {
				t.Errorf("after stats reset: %s = %d", k, got)
			}
		}
	})
}
