package broker

import (
	"fmt"
	"net"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"substrate/broker/amqp"
)

// heapLive returns the Go heap's live bytes after a collection.
func heapLive() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// sendHeader sends basic.publish and a content header declaring size
// body bytes on ch, and no body.
func sendHeader(r *rawClient, ch uint16, queue string, size uint64) {
	r.t.Helper()
	b, _ := amqp.AppendMethodFrame(nil, ch, &amqp.BasicPublish{RoutingKey: queue})
	b, err := amqp.AppendHeaderFrame(b, ch, amqp.ClassBasic, size, &amqp.Properties{})
	if err != nil {
		r.t.Fatal(err)
	}
	r.write(b)
}

// confirmPublisher publishes n messages to queue with confirms on its own
// connection and fails unless all are acked within d.
func confirmPublisher(t *testing.T, url, queue string, n int, d time.Duration) {
	t.Helper()
	ch := channel091(t, dial(t, url))
	if _, err := ch.QueueDeclare(queue, false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	confirms := ch.NotifyPublish(make(chan amqp091.Confirmation, n))
	for i := range n {
		if err := ch.Publish("", queue, false, false, amqp091.Publishing{Body: []byte(fmt.Sprint(i))}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.After(d)
	for range n {
		select {
		case c := <-confirms:
			if !c.Ack {
				t.Fatalf("publish %d nacked", c.DeliveryTag)
			}
		case <-deadline:
			t.Fatalf("confirms stopped coming")
		}
	}
}

// TestMemoryDeclaredBodiesCostNothing: 64 channels each send a content
// header declaring 100 MiB and then nothing. The broker reserves nothing
// for them (its accounting and the Go heap grow by less than 16 MiB), its
// memory alarm stays off, and a confirm-mode publisher on another
// connection keeps getting confirms.
func TestMemoryDeclaredBodiesCostNothing(t *testing.T) {
	s := startServer(t, func(c *Config) { c.MemoryHighWatermark = 256 << 20 })
	heap0, used0 := heapLive(), s.MemoryUsed()
	r := rawOpen(t, addrOf(s))
	for ch := uint16(1); ch <= 64; ch++ {
		if ch > 1 {
			r.send(ch, &amqp.ChannelOpen{})
			expect[*amqp.ChannelOpenOk](r, ch)
		}
		sendHeader(r, ch, "nowhere", 100<<20)
	}
	r.send(65, &amqp.ChannelOpen{}) // processed after every header
	expect[*amqp.ChannelOpenOk](r, 65)
	heap1, used1 := heapLive(), s.MemoryUsed()
	t.Logf("64 headers of 100 MiB: heap %+d KiB, broker accounting %+d KiB", (int64(heap1)-int64(heap0))>>10, (int64(used1)-int64(used0))>>10)
	if d := int64(heap1) - int64(heap0); d > 16<<20 {
		t.Fatalf("heap grew by %d MiB", d>>20)
	}
	if d := int64(used1) - int64(used0); d > 16<<20 {
		t.Fatalf("broker accounting grew by %d MiB", d>>20)
	}
	confirmPublisher(t, urlOf(s), "mb-confirms", 500, 5*time.Second)
	if s.MemoryAlarm() {
		t.Fatal("memory alarm on")
	}
	runtime.KeepAlive(r)
}

// TestMemoryBodyAssemblyCounted: a body being assembled counts toward the
// broker's memory as it arrives (never more than twice what arrived),
// and is released when its connection goes.
func TestMemoryBodyAssemblyCounted(t *testing.T) {
	s := startServer(t)
	r := rawOpen(t, addrOf(s))
	sendHeader(r, 1, "nowhere", 10<<20)
	part := make([]byte, 4<<20)
	r.write(amqp.AppendBodyFrames(nil, 1, part, 131072))
	r.send(2, &amqp.ChannelOpen{})
	expect[*amqp.ChannelOpenOk](r, 2)
	_, assembling, _ := s.MemoryBreakdown()
	if assembling < 4<<20 || assembling > 8<<20 {
		t.Fatalf("assembling %d bytes after 4 MiB of a 10 MiB body", assembling)
	}
	r.nc.Close()
	eventually(t, 2*time.Second, func() bool { _, a, _ := s.MemoryBreakdown(); return a == 0 }, "assembly released")
}

// TestMemoryStoppedAtHeader: with the alarm on, a publisher is blocked at
// its content header, before its body is read.
func TestMemoryStoppedAtHeader(t *testing.T) {
	var used atomic.Uint64
	s := startServer(t, func(c *Config) {
		c.MemoryHighWatermark = 1000
		c.memUsage = used.Load
	})
	r := rawDial(t, addrOf(s))
	r.handshake(rawOpts{caps: amqp.Table{"connection.blocked": true}})
	r.send(1, &amqp.ChannelOpen{})
	expect[*amqp.ChannelOpenOk](r, 1)
	r.send(1, &amqp.QueueDeclare{Queue: "hq"})
	expect[*amqp.QueueDeclareOk](r, 1)
	used.Store(2000)
	eventually(t, 2*time.Second, s.MemoryAlarm, "alarm on")
	sendHeader(r, 1, "hq", 5)
	if b := expect[*amqp.ConnectionBlocked](r, 0); b.Reason != "low on memory" {
		t.Fatalf("reason %q", b.Reason)
	}
	if s.BlockedConnections() != 1 {
		t.Fatalf("BlockedConnections = %d", s.BlockedConnections())
	}
	r.write(amqp.AppendBodyFrames(nil, 1, []byte("hello"), 4096))
	used.Store(10)
	expect[*amqp.ConnectionUnblocked](r, 0)
	other := channel091(t, dial(t, urlOf(s)))
	eventually(t, 2*time.Second, func() bool {
		q, err := other.QueueDeclarePassive("hq", false, false, false, false, nil)
		return err == nil && q.Messages == 1
	}, "the publish after unblock")
}

// TestMemoryAlarmIgnoresOtherHeap: the alarm follows the broker's own
// memory. 200 MiB allocated elsewhere in the process (the cache's items,
// say) leave it off with a 32 MiB watermark; 40 MiB of queued messages
// turn it on, blocking the publisher; a purge turns it off, and the
// accounting returns to (nearly) nothing.
func TestMemoryAlarmIgnoresOtherHeap(t *testing.T) {
	s := startServer(t, func(c *Config) { c.MemoryHighWatermark = 32 << 20 })
	ballast := make([]byte, 200<<20)
	for i := 0; i < len(ballast); i += 4096 {
		ballast[i] = 1
	}
	time.Sleep(5 * memCheckInterval) // a negative check: the alarm must stay off
	if s.MemoryAlarm() {
		t.Fatalf("alarm on with the broker holding %d bytes", s.MemoryUsed())
	}
	// The publisher below blocks in a socket write once the broker stops
	// reading it, holding amqp091-go's locks, so Connection.Close would
	// wait for ever: the socket itself is closed first at cleanup (the
	// cleanups run last-registered first).
	var sock net.Conn
	conn, err := amqp091.DialConfig(urlOf(s), amqp091.Config{Dial: func(network, addr string) (net.Conn, error) {
		c, err := net.DialTimeout(network, addr, 5*time.Second)
		sock = c
		return c, err
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Cleanup(func() { sock.Close() })
	blocked := conn.NotifyBlocked(make(chan amqp091.Blocking, 4))
	ch := channel091(t, conn)
	if _, err := ch.QueueDeclare("big", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, 1<<20)
	go func() {
		for range 40 {
			if ch.Publish("", "big", false, false, amqp091.Publishing{Body: body}) != nil {
				return
			}
		}
	}()
	t0 := time.Now()
	if b := recvTimeout(t, blocked, 30*time.Second); !b.Active || b.Reason != "low on memory" {
		t.Fatalf("got %+v", b)
	}
	t.Logf("blocked after %v", time.Since(t0))
	queued, _, _ := s.MemoryBreakdown()
	if queued < 32<<20 {
		t.Fatalf("alarm on with %d bytes queued", queued)
	}
	other := channel091(t, dial(t, urlOf(s)))
	purge := func() {
		if _, err := other.QueuePurge("big", false); err != nil {
			t.Fatal(err)
		}
	}
	purge()
	if b := recvTimeout(t, blocked, 5*time.Second); b.Active {
		t.Fatalf("got %+v, want unblocked", b)
	}
	t.Logf("unblocked after %v", time.Since(t0))
	eventually(t, 5*time.Second, func() bool {
		purge()
		return s.MemoryUsed() < 1<<20
	}, "accounting back to nothing after the purge")
	t.Logf("drained after %v", time.Since(t0))
	runtime.KeepAlive(ballast)
}

// TestMemorySlowConsumerBounded: a consumer that stops reading while
// 100,000 messages are routed to it gets a bounded amount buffered for it
// (outSoftLimit per connection, plus what the writer has in hand); the
// rest waits in the queue, the Go heap grows by at most 64 MiB, and a
// consumer of another queue is served meanwhile.
func TestMemorySlowConsumerBounded(t *testing.T) {
	const n = 100_000 // fewer would all fit in the kernel's socket buffers
	s := startServer(t)
	slow := rawOpen(t, addrOf(s))
	slow.send(1, &amqp.QueueDeclare{Queue: "slow"})
	expect[*amqp.QueueDeclareOk](slow, 1)
	slow.send(1, &amqp.BasicConsume{Queue: "slow", ConsumerTag: "stuck"})
	expect[*amqp.BasicConsumeOk](slow, 1)
	// From here the slow client reads nothing.

	fastCh := channel091(t, dial(t, urlOf(s)))
	if _, err := fastCh.QueueDeclare("fast", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	fast, err := fastCh.Consume("fast", "", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	heap0 := heapLive()
	pub := channel091(t, dial(t, urlOf(s)))
	body := make([]byte, 100)
	for i := range n {
		if err := pub.Publish("", "slow", false, false, amqp091.Publishing{Body: body}); err != nil {
			t.Fatal(err)
		}
		if i%10_000 == 0 { // the other consumer is served meanwhile
			if err := pub.Publish("", "fast", false, false, amqp091.Publishing{Body: []byte(fmt.Sprint(i))}); err != nil {
				t.Fatal(err)
			}
			if d := recvTimeout(t, fast, 5*time.Second); string(d.Body) != fmt.Sprint(i) {
				t.Fatalf("fast consumer got %q", d.Body)
			}
		}
	}
	inspect := channel091(t, dial(t, urlOf(s)))
	var ready int
	eventually(t, 10*time.Second, func() bool {
		q, err := inspect.QueueDeclarePassive("slow", false, false, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		ready = q.Messages
		info := s.queueInfo(t, "slow")
		return info.MessagesReady+info.MessagesUnacknowledged == n
	}, "every publish routed")
	heap1 := heapLive()
	_, _, outbound := s.MemoryBreakdown()
	t.Logf("%d messages to a stuck consumer: %d ready in the queue, %d delivered, broker outbound %d KiB, heap %+d MiB",
		n, ready, n-ready, outbound>>10, (int64(heap1)-int64(heap0))>>20)
	if outbound > 2*outSoftLimit+64<<10 {
		t.Fatalf("%d bytes buffered for connections: not bounded by outSoftLimit", outbound)
	}
	if ready < n/2 {
		t.Fatalf("only %d of %d messages wait in the queue", ready, n)
	}
	if d := int64(heap1) - int64(heap0); d > 64<<20 {
		t.Fatalf("heap grew by %d MiB", d>>20)
	}
	runtime.KeepAlive(slow)
}

// queueInfo returns a queue's counters in the default vhost.
func (s *Server) queueInfo(t *testing.T, name string) QueueInfo {
	t.Helper()
	q := s.vhost("/").queue(name)
	if q == nil {
		t.Fatalf("no queue %q", name)
	}
	return q.Info()
}
