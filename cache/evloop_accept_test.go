//go:build linux

package cache

import (
	"net"
	"testing"

	"golang.org/x/sys/unix"
)

// TestLoopAcceptedSocketOptions checks that a connection accepted for the
// event loops (rawAccepter, which bypasses net.TCPListener.Accept) has
// the options Go's Accept would have set: TCP_NODELAY and keep-alive
// every 15 s; and that the peer address is the client's.
func TestLoopAcceptedSocketOptions(t *testing.T) {
	eachLoopMode(t, func(t *testing.T, threads int) {
		s, addr := startLoopServer(t, threads, nil)
		if _, ok := s.listeners[0].(*rawAccepter); !ok {
			t.Fatalf("listener is a %T, want a *rawAccepter", s.listeners[0])
		}
		c := dial(t, addr)
		if got := c.roundTrip("set k 0 0 1\r\nv\r\n"); got != "STORED\r\n" {
			t.Fatalf("set: %q", got)
		}
		fd, peer := -1, ""
		for _, l := range s.loops {
			// Under l.mu: a loop recycles a conn after taking it out of
			// l.conns.
			l.mu.Lock()
			for k, c := range l.conns {
				fd, peer = int(k), c.remote()
			}
			l.mu.Unlock()
		}
		if fd < 0 {
			t.Fatal("the connection is not served by a loop")
		}
		if want := c.nc.LocalAddr().String(); peer != want {
			t.Errorf("peer %q, want %q", peer, want)
		}
		for _, o := range []struct {
			name       string
			level, opt int
			want       int
		}{
			{"TCP_NODELAY", unix.IPPROTO_TCP, unix.TCP_NODELAY, 1},
			{"SO_KEEPALIVE", unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
			{"TCP_KEEPIDLE", unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 15},
			{"TCP_KEEPINTVL", unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, 15},
		} {
			v, err := unix.GetsockoptInt(fd, o.level, o.opt)
			if err != nil {
				t.Fatalf("%s: %v", o.name, err)
			}
			if v != o.want {
				t.Errorf("%s = %d, want %d", o.name, v, o.want)
			}
		}
		// Go's own accepted connection, for comparison: the options are
		// the ones it sets.
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		go func() {
			if nc, err := net.Dial("tcp", l.Addr().String()); err == nil {
				defer nc.Close()
			}
		}()
		gc, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer gc.Close()
		rc, _ := gc.(*net.TCPConn).SyscallConn()
		rc.Control(func(gfd uintptr) {
			for _, opt := range []struct{ level, opt int }{{unix.IPPROTO_TCP, unix.TCP_NODELAY}, {unix.SOL_SOCKET, unix.SO_KEEPALIVE},
				{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE}, {unix.IPPROTO_TCP, unix.TCP_KEEPINTVL}} {
				g, _ := unix.GetsockoptInt(int(gfd), opt.level, opt.opt)
				o, _ := unix.GetsockoptInt(fd, opt.level, opt.opt)
				if g != o {
					t.Errorf("option %d/%d: Go's accepted connection has %d, the loop's %d", opt.level, opt.opt, g, o)
				}
			}
		})
	})
}
