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
// connection once they are all consuming: live Go heap (after a
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
	h1, s1, g1 := measure()
	per := func(a, b uint64) float64 { return (float64(b) - float64(a)) / float64(n) }
	return per(h0, h1), per(s0, s1), float64(g1-g0) / float64(n)
}

// TestIdleConnectionFootprint (issue 9): 2,000 reply-queue connections
// must fit in 25 KB of RSS each, and Go's collector lets RSS run to about
// twice what is live, so what is live per connection (heap and stacks)
// must stay near 12 KB.
func TestIdleConnectionFootprint(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	const n = 2000
	raiseNoFile(t, 2*n+256)
	s := startServer(t)
	heap, stack, g := idleFootprint(t, s, n)
	t.Logf("%d idle connections (channel, exclusive queue, consumer): %.0f B live heap + %.0f B stacks = %.1f KiB per connection, %.1f goroutines each",
		n, heap, stack, (heap+stack)/1024, g)
	// 14 KiB: stacks are 4 KB each, 8 KB under the race detector.
	if heap+stack > 14<<10 {
		t.Errorf("%.1f KiB live per idle connection, want at most 14 KiB", (heap+stack)/1024)
	}
	if g > 1.05 {
		t.Errorf("%.2f goroutines per idle connection, want 1 (its reader; a writer only while there is output)", g)
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
