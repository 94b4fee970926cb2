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
