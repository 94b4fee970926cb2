package broker

import (
	"net"
	"runtime"
	"syscall"
	"testing"
	"time"

	"substrate/broker/amqp"
)

// clientProps are amqp091-go's client properties (version 1.10).
var clientProps = amqp.Table{
	"product":  "AMQP 0.9.1 Client",
	"version":  "β",
	"platform": "golang",
	"capabilities": amqp.Table{
		"connection.blocked":           true,
		"consumer_cancel_notify":       true,
		"basic.nack":                   true,
		"publisher_confirms":           true,
		"authentication_failure_close": true,
	},
	"information": "https://github.com/rabbitmq/amqp091-go",
}

// idleHello is what an OpenStack service's reply-queue connection does
// before it waits: log in (heartbeat 60 s), open a channel, declare an
// exclusive server-named queue and consume from it. It is sent in one
// write, and the client never reads the replies.
func idleHello(tb testing.TB) []byte {
	b := []byte(amqp.ProtocolHeader)
	for _, f := range []struct {
		ch uint16
		m  amqp.Method
	}{
		{0, &amqp.ConnectionStartOk{Mechanism: "PLAIN", Response: "\x00guest\x00guest", ClientProperties: clientProps}},
		{0, &amqp.ConnectionTuneOk{ChannelMax: 2047, FrameMax: 131072, Heartbeat: 60}},
		{0, &amqp.ConnectionOpen{VirtualHost: "/"}},
		{1, &amqp.ChannelOpen{}},
		{1, &amqp.QueueDeclare{Exclusive: true, AutoDelete: true}},
		{1, &amqp.BasicConsume{NoAck: true, Exclusive: true}}, // "": the queue just declared
	} {
		var err error
		if b, err = amqp.AppendMethodFrame(b, f.ch, f.m); err != nil {
			tb.Fatal(err)
		}
	}
	return b
}

// idleFootprint opens n idle connections (idleHello) from bare sockets
// that hold nothing else, and returns what the process gained per
// connection once they are all consuming, and parked if s parks idle
// readers: live Go heap (after a
// collection), goroutine stack memory in use and goroutines. The client
// sockets' own few hundred bytes of heap are included.
func idleFootprint(tb testing.TB, s *Server, n int) (heap, stack, goroutines float64) {
	tb.Helper()
	measure := func() (heap, stack uint64, g int) {
		// Two collections: stacks shrink at a collection, and the second
		// one frees what the first one's finalizers released.
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc, ms.StackInuse, runtime.NumGoroutine()
	}
	hello := idleHello(tb)
	h0, s0, g0 := measure()
	socks := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range socks {
			c.Close()
		}
	}()
	for range n {
		c, err := net.Dial("tcp", addrOf(s))
		if err != nil {
			tb.Fatal(err)
		}
		socks = append(socks, c)
		if _, err := c.Write(hello); err != nil {
			tb.Fatal(err)
		}
	}
	eventually(tb, 30*time.Second, func() bool {
		consumers := 0
		for _, q := range s.Queues("/") {
			consumers += q.Consumers
		}
		return consumers == n
	}, "every connection consuming")
	if s.parker != nil && s.parkAfter > 0 {
		waitParked(tb, s, n)
	}
	h1, s1, g1 := measure()
	per := func(a, b uint64) float64 { return (float64(b) - float64(a)) / float64(n) }
	return per(h0, h1), per(s0, s1), float64(g1-g0) / float64(n)
}

// TestIdleConnectionFootprint (issue 9): 2,000 reply-queue connections
// must fit in 25 KB of RSS each, and Go's collector lets RSS run to about
// twice what is live (heap and stacks), so what is live per connection
// must stay well under 12 KB: a parked one (idle, the usual state of an
// OpenStack service's connections) holds only its heap; one whose reader
// still waits (parking off, or busy within the last second) also its
// reader's 4 KB stack.
func TestIdleConnectionFootprint(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	const n = 2000
	raiseNoFile(t, 2*n+256)
	for _, tc := range []struct {
		name      string
		parkAfter time.Duration
		maxLive   float64 // heap+stacks, bytes
		maxG      float64
	}{
		// 14 KiB: stacks are 4 KB each, 8 KB under the race detector.
		{"reader waiting", -1, 14 << 10, 1.05},
		{"parked", 50 * time.Millisecond, 7 << 10, 0.01},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t, func(c *Config) { c.parkAfter = tc.parkAfter })
			if tc.parkAfter > 0 && s.parker == nil {
				t.Skip("no parker on " + runtime.GOOS)
			}
			heap, stack, g := idleFootprint(t, s, n)
			t.Logf("%d idle connections (channel, exclusive queue, consumer): %.0f B live heap + %.0f B stacks = %.1f KiB per connection, %.2f goroutines each",
				n, heap, stack, (heap+stack)/1024, g)
			if heap+stack > tc.maxLive {
				t.Errorf("%.1f KiB live per idle connection, want at most %.1f KiB", (heap+stack)/1024, tc.maxLive/1024)
			}
			if g > tc.maxG {
				t.Errorf("%.2f goroutines per idle connection, want at most %.2f", g, tc.maxG)
			}
		})
	}
}

func waitParked(t testing.TB, s *Server, n int) {
	t.Helper()
	var got int
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if got = s.parker.count(); got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections parked, want %d", got, n)
		}
	}
}

// BenchmarkIdleConnections reports the same figures as
// TestIdleConnectionFootprint for b.N connections (run it with
// -benchtime 2000x).
func BenchmarkIdleConnections(b *testing.B) {
	raiseNoFile(b, uint64(2*b.N+256))
	s := startServer(b)
	heap, stack, g := idleFootprint(b, s, b.N)
	b.ReportMetric(heap, "heapB/conn")
	b.ReportMetric(stack, "stackB/conn")
	b.ReportMetric(g, "goroutines/conn")
	b.ReportMetric(0, "ns/op")
}

// raiseNoFile raises the soft RLIMIT_NOFILE to at least n (both ends of
// every connection are in this process).
func raiseNoFile(tb testing.TB, n uint64) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		tb.Fatal(err)
	}
	if lim.Cur >= n {
		return
	}
	if lim.Max < n {
		tb.Fatalf("RLIMIT_NOFILE hard limit %d, need %d descriptors", lim.Max, n)
	}
	lim.Cur = n
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		tb.Fatal(err)
	}
}
