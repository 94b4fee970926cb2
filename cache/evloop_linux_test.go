//go:build linux

package cache

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"substrate/internal/faults"
)

// eachLoopMode runs f once for each way a loop waits (evloop_linux.go):
// on Go's poller (Config.Threads 0) and on threads of its own (Threads 2,
// with GOMAXPROCS raised above that for the test if it is not).
func eachLoopMode(t *testing.T, f func(t *testing.T, threads int)) {
	for _, m := range []struct {
		name    string
		threads int
	}{{"poller", 0}, {"threads", 2}} {
		t.Run(m.name, func(t *testing.T) {
			if m.threads > 0 && runtime.GOMAXPROCS(0) <= m.threads {
				prev := runtime.GOMAXPROCS(m.threads + 1)
				t.Cleanup(func() { runtime.GOMAXPROCS(prev) })
			}
			f(t, m.threads)
		})
	}
}

// startLoopServer starts a server with one plain TCP listener, served by
// the event loops: Config.Threads of them on threads of their own, or
// GOMAXPROCS on Go's poller (eachLoopMode).
func startLoopServer(t *testing.T, threads int, edit func(*Config)) (*Server, string) {
	t.Helper()
	cfg := NewConfig()
	cfg.Addrs = []string{"127.0.0.1:0"}
	cfg.Threads = threads
	if edit != nil {
		edit(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	checkLoops(t, s, threads)
	return s, s.Addrs()[0].String()
}

// checkLoops checks that s runs the loops Config.Threads asks for.
func checkLoops(t *testing.T, s *Server, threads int) {
	t.Helper()
	want := threads
	if threads == 0 {
		want = runtime.GOMAXPROCS(0)
	}
	if len(s.loops) != want {
		t.Fatalf("%d event loops, want %d", len(s.loops), want)
	}
	for _, l := range s.loops {
		if l.own != (threads > 0) {
			t.Fatalf("loop on a thread of its own: %v, want %v", l.own, threads > 0)
		}
	}
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// loopConns counts the server's connections an event loop holds (not
// handed over).
func loopConns(s *Server) (inLoop, total int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if c.ev != nil && c.ev.nc == nil {
			inLoop++
		}
	}
	return inLoop, len(s.conns)
}

// TestLoopManyConnections: 300 connections on the loops at once, each
// with its own keys, every reply checked; curr_connections follows.
func TestLoopManyConnections(t *testing.T) {
	eachLoopMode(t, func(t *testing.T, threads int) {
		s, addr := startLoopServer(t, threads, nil)
		const n = 300
		conns := make([]*client, n)
		for i := range conns {
			conns[i] = dial(t, addr)
		}
		// Every connection is registered once it has answered.
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i, c := range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for r := range 20 {
					k := fmt.Sprintf("k%d-%d", i, r)
					v := strings.Repeat(string(rune('a'+r%26)), 1+(i*r)%300)
					want := fmt.Sprintf("STORED\r\nVALUE %s %d %d\r\n%s\r\nEND\r\n", k, r, len(v), v)
					c.nc.SetDeadline(time.Now().Add(20 * time.Second))
					if _, err := fmt.Fprintf(c.nc, "set %s %d 0 %d\r\n%s\r\nget %s\r\nmn\r\n", k, r, len(v), v, k); err != nil {
						errs <- err
						return
					}
					var got strings.Builder
					for {
						line, err := c.r.ReadString('\n')
						if err != nil {
							errs <- fmt.Errorf("conn %d: %v after %q", i, err, got.String())
							return
						}
						if line == "MN\r\n" {
							break
						}
						got.WriteString(line)
					}
					if got.String() != want {
						errs <- fmt.Errorf("conn %d round %d: got %q, want %q", i, r, got.String(), want)
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		inLoop, total := loopConns(s)
		if inLoop != n || total != n {
			t.Errorf("%d of %d connections in the loops, want %d of %d", inLoop, total, n, n)
		}
		st := conns[0].stats("")
		if got := conns[0].statInt(st, "curr_connections"); got != n {
			t.Errorf("curr_connections %d, want %d", got, n)
		}
		for _, c := range conns[1:] {
			c.nc.Close()
		}
		waitFor(t, "closed connections to be forgotten", func() bool { _, total := loopConns(s); return total == 1 })
		if got := conns[0].statInt(conns[0].stats(""), "curr_connections"); got != 1 {
			t.Errorf("curr_connections %d after closing the others, want 1", got)
		}
		if s.handovers.Load() != 0 {
			t.Errorf("%d handovers for clients that read their replies", s.handovers.Load())
		}
	})
}

// TestLoopSplitFrames sends text, meta and binary requests cut in two at
// every byte boundary, waiting until the loop has read the first part,
// and expects the same replies as when they arrive whole.
func TestLoopSplitFrames(t *testing.T) {
	eachLoopMode(t, func(t *testing.T, threads int) {
		s, addr := startLoopServer(t, threads, nil)
		text := "set a 5 0 3\r\nabc\r\nget a b\r\nincr n 1\r\nms m 2 T0 F7\r\nhi\r\nmg m v f\r\ngets a\r\nappend a 0 0 2\r\nde\r\nget a\r\n"
		bin := binReq(BinSet, "bk", u32(9)+u32(0), "value", 7, 0) + binReq(BinGetK, "bk", "", "", 8, 0) + binReq(BinNoop, "", "", "", 9, 0)
		for _, tc := range []struct {
			name, req string
		}{{"text", text}, {"binary", bin}} {
			t.Run(tc.name, func(t *testing.T) {
				whole := dial(t, addr)
				whole.send(tc.req)
				want := readN(t, whole, tc.name, tc.req)
				c := dial(t, addr)
				for i := 1; i < len(tc.req); i++ {
					before := s.statsSum().bytesRead.Load()
					c.send(tc.req[:i])
					waitFor(t, "the first part to be read", func() bool { return s.statsSum().bytesRead.Load() >= before+uint64(i) })
					c.send(tc.req[i:])
					got := readN(t, c, tc.name, tc.req)
					if got != normalizeCAS(want, got) {
						t.Fatalf("split at %d: got %q, want %q", i, got, want)
					}
				}
			})
		}
		// A large value in many reads, and a get of it.
		c := dial(t, addr)
		v := strings.Repeat("0123456789abcdef", 60000) // 960,000 B
		req := fmt.Sprintf("set big 0 0 %d\r\n%s\r\n", len(v), v)
		for i := 0; i < len(req); i += 65521 {
			before := s.statsSum().bytesRead.Load()
			c.send(req[i:min(i+65521, len(req))])
			waitFor(t, "the chunk to be read", func() bool { return s.statsSum().bytesRead.Load() >= before+uint64(min(65521, len(req)-i)) })
		}
		if got := c.roundTrip("get big\r\n"); got != "STORED\r\nVALUE big 0 960000\r\n"+v+"\r\nEND\r\n" {
			t.Errorf("large value in pieces: %d bytes back", len(got))
		}
	})
}

// readN reads the reply to one pass of the test requests: for text, up
// to the last get's END (the request ends in a get); for binary, up to
// the noop's reply.
func readN(t *testing.T, c *client, proto, req string) string {
	t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	var out strings.Builder
	if proto == "text" {
		ends := 3 // get a b, gets a, get a
		for ends > 0 {
			line, err := c.r.ReadString('\n')
			if err != nil {
				t.Fatalf("read after %q: %v", out.String(), err)
			}
			out.WriteString(line)
			if line == "END\r\n" {
				ends--
			}
		}
		return out.String()
	}
	for {
		var h [BinHeaderLen]byte
		if _, err := io.ReadFull(c.r, h[:]); err != nil {
			t.Fatalf("read after %q: %v", out.String(), err)
		}
		body := make([]byte, int(h[8])<<24|int(h[9])<<16|int(h[10])<<8|int(h[11]))
		if _, err := io.ReadFull(c.r, body); err != nil {
			t.Fatal(err)
		}
		out.Write(h[:])
		out.Write(body)
		if h[1] == BinNoop {
			return out.String()
		}
	}
}

// normalizeCAS: the text pass has gets, whose CAS grows from pass to
// pass; and the binary set and getk replies carry CAS too. The comparison
// is on the shape: same length, and identical apart from CAS digits or
// bytes, which are checked to be where a CAS is.
func normalizeCAS(want, got string) string {
	if strings.HasPrefix(want, "STORED") || strings.HasPrefix(want, "\x81") && len(want) == len(got) {
		// Text: the gets line is "VALUE a 5 3 CAS"; binary: bytes 16-23 of
		// each header. Take got's CAS into want where they differ.
		return casFrom(want, got)
	}
	return want
}

func casFrom(want, got string) string {
	if want[0] == 0x81 {
		w := []byte(want)
		for off := 0; off+BinHeaderLen <= len(w); {
			copy(w[off+16:off+24], got[off+16:off+24])
			off += BinHeaderLen + (int(w[off+8])<<24 | int(w[off+9])<<16 | int(w[off+10])<<8 | int(w[off+11]))
		}
		return string(w)
	}
	wl := strings.Split(want, "\r\n")
	gl := strings.Split(got, "\r\n")
	if len(wl) != len(gl) {
		return want
	}
	for i := range wl {
		if strings.HasPrefix(wl[i], "VALUE a 5 3 ") && strings.HasPrefix(gl[i], "VALUE a 5 3 ") {
			wl[i] = gl[i]
		}
	}
	return strings.Join(wl, "\r\n")
}

// TestLoopClientNeverReads: a client pipelines gets of a large value and
// reads nothing. The loop hands the connection to a goroutine blocked on
// its write, other clients are served meanwhile, the server does not
// buffer the replies, and once the client reads it gets every reply and
// the connection goes on working; a panic there closes only it.
func TestLoopClientNeverReads(t *testing.T) {
	eachLoopMode(t, func(t *testing.T, threads int) {
		s, addr := startLoopServer(t, threads, func(c *Config) { c.Logger = nil })
		const size, gets = 512 << 10, 200 // 100 MiB of replies
		v := strings.Repeat("x", size)
		setup := dial(t, addr)
		if got := setup.roundTrip(fmt.Sprintf("set big 0 0 %d\r\n%s\r\n", size, v)); got != "STORED\r\n" {
			t.Fatalf("set: %q", got)
		}
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		heapBefore := ms.HeapAlloc

		slow := dial(t, addr)
		slow.send(strings.Repeat("get big\r\n", gets) + "mn\r\n")
		waitFor(t, "a handover", func() bool { return s.handovers.Load() == 1 })
		// Others are served while it blocks, on every loop.
		for range 2 * len(s.loops) {
			b := dial(t, addr)
			if got := b.roundTrip("get none\r\n"); got != "END\r\n" {
				t.Fatalf("bystander: %q", got)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&ms)
		if grew := int64(ms.HeapAlloc) - int64(heapBefore); grew > 16<<20 {
			t.Errorf("heap grew by %d B while %d B of replies were pending", grew, gets*size)
		}
		if inLoop, total := loopConns(s); total != 2*len(s.loops)+2 || inLoop != total-1 {
			t.Errorf("%d of %d connections in the loops, want all but the slow one", inLoop, total)
		}
		// Now read: every reply is there, in order.
		slow.nc.SetReadDeadline(time.Now().Add(30 * time.Second))
		br := bufio.NewReaderSize(slow.r, 1<<20)
		for i := range gets {
			line, err := br.ReadString('\n')
			if err != nil || line != fmt.Sprintf("VALUE big 0 %d\r\n", size) {
				t.Fatalf("reply %d: %q, %v", i, line, err)
			}
			if _, err := br.Discard(size + 2); err != nil {
				t.Fatal(err)
			}
			if line, _ := br.ReadString('\n'); line != "END\r\n" {
				t.Fatalf("reply %d ends with %q", i, line)
			}
		}
		if line, _ := br.ReadString('\n'); line != "MN\r\n" {
			t.Fatalf("after the gets: %q", line)
		}
		slow.r = br
		if got := slow.roundTrip("set k 0 0 1\r\nz\r\nget k\r\n"); got != "STORED\r\nVALUE k 0 1\r\nz\r\nEND\r\n" {
			t.Errorf("handed-over connection after reading: %q", got)
		}
		// A panic on the handed-over connection closes only it.
		defer faults.ResetLogBudget() // tests that read a panic's line come later
		defer faults.Arm(SiteConn, "boom")()
		before := faults.Count(faults.Memcached)
		slow.send("get xboomx\r\n")
		if got := slow.expectEOF(); got != "" {
			t.Errorf("offender got %q", got)
		}
		if got := faults.Count(faults.Memcached) - before; got != 1 {
			t.Errorf("%d panics counted, want 1", got)
		}
		if got := setup.roundTrip("get k\r\n"); got != "VALUE k 0 1\r\nz\r\nEND\r\n" {
			t.Errorf("bystander after the panic: %q", got)
		}
		waitFor(t, "the closed connection to be forgotten", func() bool { _, total := loopConns(s); return total == 2*len(s.loops)+1 })
	})
}

// TestLoopPanicSparesItsLoop: a panic in one loop connection, in the
// middle of a batch of ready connections, closes only that connection;
// every other connection, on the same loop or not, is still served.
func TestLoopPanicSparesItsLoop(t *testing.T) {
	eachLoopMode(t, func(t *testing.T, threads int) {
		s, addr := startLoopServer(t, threads, func(c *Config) { c.Logger = nil })
		defer faults.ResetLogBudget() // tests that read a panic's line come later
		defer faults.Arm(SiteConn, "boom")()
		var others []*client
		for range 8 * len(s.loops) {
			others = append(others, dial(t, addr))
		}
		offender := dial(t, addr)
		before := faults.Count(faults.Memcached)
		for _, c := range others {
			c.send("set k 0 0 1\r\nx\r\n")
		}
		offender.send("set a 0 0 1\r\nx\r\nget a xboomx\r\n")
		if got := offender.expectEOF(); got != "" {
			t.Errorf("offender got %q", got)
		}
		for i, c := range others {
			if got := c.roundTrip("get k\r\n"); got != "STORED\r\nVALUE k 0 1\r\nx\r\nEND\r\n" {
				t.Errorf("connection %d: %q", i, got)
			}
		}
		if got := faults.Count(faults.Memcached) - before; got != 1 {
			t.Errorf("%d panics counted, want 1", got)
		}
		waitFor(t, "the offender to be forgotten", func() bool { _, total := loopConns(s); return total == len(others) })
	})
}

// TestLoopShutdownWithConnectionsOpen: Shutdown closes idle loop
// connections, one holding half a command, one handed over and blocked
// writing, and returns once every goroutine has ended.
func TestLoopShutdownWithConnectionsOpen(t *testing.T) {
	eachLoopMode(t, func(t *testing.T, threads int) {
		cfg := NewConfig()
		cfg.Addrs = []string{"127.0.0.1:0"}
		cfg.Threads = threads
		s, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		checkLoops(t, s, threads)
		addr := s.Addrs()[0].String()
		var cs []*client
		for range 20 {
			c := dial(t, addr)
			c.roundTrip("version\r\n")
			cs = append(cs, c)
		}
		half := dial(t, addr)
		half.roundTrip("version\r\n")
		half.send("set h 0 0 10\r\nabc")
		v := strings.Repeat("y", 256<<10)
		setup := dial(t, addr)
		setup.roundTrip(fmt.Sprintf("set big 0 0 %d\r\n%s\r\n", len(v), v))
		blocked := dial(t, addr)
		blocked.send(strings.Repeat("get big\r\n", 100))
		waitFor(t, "a handover", func() bool { return s.handovers.Load() == 1 })

		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Fatalf("shutdown: %v", err)
		}
		for i, c := range append(append(cs, half, setup), blocked) {
			c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err := io.Copy(io.Discard, c.r)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Errorf("connection %d still open after Shutdown", i)
			}
		}
		// Shutdown returned: the loops' goroutines and the handed-over
		// connection's have ended (Server.wg).
		if _, total := loopConns(s); total != 0 {
			t.Errorf("%d connections left after Shutdown", total)
		}
	})
}

// TestLoopThreadsWithoutSpareP: with GOMAXPROCS not above Config.Threads
// (the loops' threads would hold every P while they wait) the Threads
// loops wait on Go's poller instead, and serve; the stats report Threads
// as the worker threads either way.
func TestLoopThreadsWithoutSpareP(t *testing.T) {
	prev := runtime.GOMAXPROCS(2)
	defer runtime.GOMAXPROCS(prev)
	for _, threads := range []int{2, 3} {
		cfg := NewConfig()
		cfg.Addrs = []string{"127.0.0.1:0"}
		cfg.Threads = threads
		s, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		if len(s.loops) != threads || s.loops[0].own {
			t.Errorf("Threads %d, GOMAXPROCS 2: %d loops, own thread %v; want %d on Go's poller", threads, len(s.loops), s.loops[0].own, threads)
		}
		c := dial(t, s.Addrs()[0].String())
		if got := c.roundTrip("set k 0 0 1\r\nv\r\nget k\r\n"); got != "STORED\r\nVALUE k 0 1\r\nv\r\nEND\r\n" {
			t.Errorf("Threads %d: %q", threads, got)
		}
		want := fmt.Sprint(threads)
		if got := c.stats("settings")["num_threads"]; got != want {
			t.Errorf("stats settings num_threads %q, want %q", got, want)
		}
		if got := c.stats("")["threads"]; got != want {
			t.Errorf("stats threads %q, want %q", got, want)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		cancel()
	}
}
