package integration

import (
	"bufio"
	"context"
	encbin "encoding/binary"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	wire "substrate/broker/amqp"
)

// Memory containment (issue 9, "one memory budget, divided on purpose"):
// what one client's declared sizes, one slow consumer or a full cache can
// do to every other publisher and to the process's RSS.

// confirmProbe is a publisher on its own connection in confirm mode: it
// publishes small messages one at a time to queue and waits for each
// confirm. It records connection.blocked notifications.
type confirmProbe struct {
	t       *testing.T
	conn    *amqp.Connection
	ch      *amqp.Channel
	queue   string
	mu      sync.Mutex
	blocked []string
}

func newConfirmProbe(t *testing.T, s *server, queue string) *confirmProbe {
	t.Helper()
	conn, err := dialAMQP(s, "guest", "guest")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	p := &confirmProbe{t: t, conn: conn, queue: queue}
	blk := conn.NotifyBlocked(make(chan amqp.Blocking, 16))
	go func() {
		for b := range blk {
			p.mu.Lock()
			p.blocked = append(p.blocked, fmt.Sprintf("active=%v reason=%q", b.Active, b.Reason))
			p.mu.Unlock()
		}
	}()
	if p.ch, err = conn.Channel(); err != nil {
		t.Fatal(err)
	}
	if _, err := p.ch.QueueDeclare(queue, false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := p.ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	return p
}

// publish sends n messages of size bytes, each after the previous one's
// confirm, and returns the slowest confirm's latency, or an error for a
// nack or a confirm that took longer than wait. It may run on any
// goroutine.
func (p *confirmProbe) publish(n, size int, wait time.Duration) (time.Duration, error) {
	body := make([]byte, size)
	var slowest time.Duration
	for i := range n {
		t0 := time.Now()
		dc, err := p.ch.PublishWithDeferredConfirm("", p.queue, false, false, amqp.Publishing{Body: body})
		if err != nil {
			return slowest, fmt.Errorf("confirm probe: publish %d: %w", i, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		ack, err := dc.WaitContext(ctx)
		cancel()
		if err != nil {
			return slowest, fmt.Errorf("confirm probe: no confirm for message %d within %v (connection.blocked: %v)", i, wait, p.blockedEvents())
		}
		if !ack {
			return slowest, fmt.Errorf("confirm probe: message %d nacked", i)
		}
		slowest = max(slowest, time.Since(t0))
	}
	return slowest, nil
}

// mustPublish is publish that fails the test on error.
func (p *confirmProbe) mustPublish(n, size int, wait time.Duration) time.Duration {
	p.t.Helper()
	d, err := p.publish(n, size, wait)
	if err != nil {
		p.t.Fatal(err)
	}
	return d
}

func (p *confirmProbe) blockedEvents() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.blocked)
}

// TestDeclaredBodySizeIsNotReserved: one logged-in client opens 64
// channels and sends on each a basic.publish with a content header that
// declares a 100 MiB body, and then nothing. The broker must not reserve
// the declared sizes: RSS and the Go heap grow by less than 16 MiB, and a
// confirm-mode publisher on another connection keeps getting its confirms
// (no memory alarm: the watermark is 256 MiB, far above the idle server
// and far below 64 × 100 MiB). RabbitMQ 3.10 accumulates body frames as
// they come and only checks the declared size against max_message_size.
func TestDeclaredBodySizeIsNotReserved(t *testing.T) {
	s := serve(t, "--amqp-memory-high-watermark", "256MiB")
	pid := s.cmd.Process.Pid
	probe := newConfirmProbe(t, s, "rel.declared.probe")
	probe.mustPublish(20, 1024, 10*time.Second) // warm
	settleRSS(t, s)
	baseRSS := rssKB(t, pid)
	baseHeap, _ := metricOK(t, s, "go_memstats_heap_inuse_bytes")

	r := dialRaw(t, s.amqpPort)
	const channels = 64
	for ch := uint16(1); ch <= channels; ch++ {
		r.openChannel(ch)
		r.header(ch, "rel.declared.probe", 100<<20)
	}
	// channel.open-ok on one more channel: the server has read and handled
	// every header before it (a connection's frames are handled in order).
	if err := r.alive(channels+1, 10*time.Second); err != nil {
		t.Fatalf("the connection that sent the headers: %v", err)
	}

	maxRSS := rssKB(t, pid)
	slowest, probeErr := probe.publish(200, 1024, 5*time.Second)
	maxRSS = max(maxRSS, rssKB(t, pid))
	heap, _ := metricOK(t, s, "go_memstats_heap_inuse_bytes")
	alarm, _ := metricOK(t, s, "substrate_amqp_memory_alarm")
	t.Logf("%d headers declaring 100 MiB each: RSS %d -> %d KB (+%d KB), Go heap in use %d -> %d KB (%+d KB), memory alarm %v; 200 confirms, slowest %v",
		channels, baseRSS, maxRSS, maxRSS-baseRSS, int(baseHeap)>>10, int(heap)>>10, (int(heap)-int(baseHeap))>>10, alarm, slowest)
	if maxRSS-baseRSS >= 16<<10 {
		t.Errorf("RSS grew by %d KB, want less than 16 MiB", maxRSS-baseRSS)
	}
	if heap-baseHeap >= 16<<20 {
		t.Errorf("the Go heap grew by %d KB: the declared sizes were reserved", (int(heap)-int(baseHeap))>>10)
	}
	if probeErr != nil {
		t.Error(probeErr)
	}
	if b := probe.blockedEvents(); len(b) > 0 {
		t.Errorf("the confirm publisher was blocked: %v", b)
	}
	// The offender's connection is still served (it did nothing wrong
	// yet: a body may take its time).
	if err := r.alive(channels+2, 10*time.Second); err != nil {
		t.Errorf("the connection that sent the headers: %v", err)
	}
}

// TestStalledConsumerIsBounded: a consumer (no-ack, so no prefetch limit
// applies) stops reading its socket while 100,000 messages of 256 bytes
// are routed to its queue. What the broker buffers for it must be
// bounded: RSS grows by at most 64 MiB (the queue itself holds 100,000 ×
// 256 bytes = 24 MiB of bodies). A consumer of another queue on another
// connection keeps receiving, with low latency, messages published every
// 10 ms during the flood.
//
// RabbitMQ bounds this with credit flow between the queue and the
// connection's writer plus TCP backpressure: the queue process stops
// handing deliveries to a writer that cannot write.
func TestStalledConsumerIsBounded(t *testing.T) {
	s := serve(t)
	pid := s.cmd.Process.Pid

	// The consumer on the other queue: bodies carry their publish time.
	other, err := dialAMQP(s, "guest", "guest")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	och, err := other.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := och.QueueDeclare("rel.stall.other", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	odel, err := och.Consume("rel.stall.other", "", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}

	settleRSS(t, s)
	baseRSS := rssKB(t, pid)

	// The stalled consumer: a raw connection with a small receive buffer
	// that consumes and then never reads again.
	r := dialRaw(t, s.amqpPort)
	r.c.(*net.TCPConn).SetReadBuffer(16 << 10)
	r.openChannel(1)
	r.send(1, &wire.QueueDeclare{Queue: "rel.stall"})
	if _, ok := r.expect(1).(*wire.QueueDeclareOk); !ok {
		t.Fatal("no queue.declare-ok")
	}
	r.send(1, &wire.BasicConsume{Queue: "rel.stall", ConsumerTag: "stalled", NoAck: true})
	if _, ok := r.expect(1).(*wire.BasicConsumeOk); !ok {
		t.Fatal("no basic.consume-ok")
	}

	// The flood, from its own connection.
	pub, err := dialAMQP(s, "guest", "guest")
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	pch, err := pub.Channel()
	if err != nil {
		t.Fatal(err)
	}
	const n = 100000
	body := make([]byte, 256)
	flooded := make(chan error, 1)
	go func() {
		for i := range n {
			if err := pch.Publish("", "rel.stall", false, false, amqp.Publishing{Body: body}); err != nil {
				flooded <- fmt.Errorf("flood publish %d: %w", i, err)
				return
			}
		}
		flooded <- nil
	}()

	// Meanwhile: a message to the other queue every 10 ms, its latency
	// measured, and the server's RSS sampled.
	tick := time.NewTicker(10 * time.Second / 1000)
	defer tick.Stop()
	var lat []time.Duration
	maxRSS := baseRSS
	floodDone := false
	var floodTime time.Duration
	t0 := time.Now()
	tail := time.Time{}
	for {
		<-tick.C
		if !floodDone {
			select {
			case err := <-flooded:
				if err != nil {
					t.Fatal(err)
				}
				floodDone, floodTime, tail = true, time.Since(t0), time.Now().Add(2*time.Second)
			default:
			}
		}
		if floodDone && time.Now().After(tail) {
			break
		}
		if time.Since(t0) > 90*time.Second {
			t.Fatalf("the flood of %d messages did not finish within 90 s", n)
		}
		stamp := make([]byte, 8)
		encbin.BigEndian.PutUint64(stamp, uint64(time.Now().UnixNano()))
		if err := och.Publish("", "rel.stall.other", false, false, amqp.Publishing{Body: stamp}); err != nil {
			t.Fatal(err)
		}
		select {
		case d := <-odel:
			lat = append(lat, time.Since(time.Unix(0, int64(encbin.BigEndian.Uint64(d.Body)))))
		case <-time.After(5 * time.Second):
			t.Fatalf("the other queue's consumer got nothing for 5 s (after %d messages)", len(lat))
		}
		maxRSS = max(maxRSS, rssKB(t, pid))
	}
	q, err := och.QueueDeclarePassive("rel.stall", false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(lat)
	p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
	t.Logf("%d messages flooded in %v to a consumer that stopped reading: RSS %d -> %d KB (+%d KB), %d still in its queue; "+
		"other queue's consumer: %d messages, latency p50 %v p99 %v max %v",
		n, floodTime.Round(time.Millisecond), baseRSS, maxRSS, maxRSS-baseRSS, q.Messages, len(lat),
		p50.Round(10*time.Microsecond), p99.Round(10*time.Microsecond), lat[len(lat)-1].Round(10*time.Microsecond))
	if maxRSS-baseRSS > 64<<10 {
		t.Errorf("RSS grew by %d KB, want at most 64 MiB", maxRSS-baseRSS)
	}
	if p99 > 250*time.Millisecond {
		t.Errorf("the other consumer's p99 latency was %v", p99)
	}
	if q.Messages == 0 {
		t.Errorf("every message left the stalled consumer's queue: they are buffered for a consumer that does not read")
	}
}

// TestFullCacheDoesNotBlockPublishers: the cache filled to its -m 64 (and
// past it: 128 MB of values, evicting) while the broker's watermark is 32
// MiB. The watermark covers the broker's own memory, not the cache's
// items: a publisher in confirm mode is never sent connection.blocked and
// keeps getting its confirms, and the alarm gauge stays 0. (Three daemons
// have no way to do this to each other; memcached's -m is its own.)
func TestFullCacheDoesNotBlockPublishers(t *testing.T) {
	s := serve(t, "--memcached-options", "-m 64", "--amqp-memory-high-watermark", "32MiB")
	probe := newConfirmProbe(t, s, "rel.cache.probe")
	if _, err := probe.publish(20, 1024, 10*time.Second); err != nil {
		t.Errorf("before the cache was filled: %v", err)
	}

	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", s.memcachedPort))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	w := bufio.NewWriterSize(c, 1<<16)
	rd := bufio.NewReader(c)
	value := strings.Repeat("v", 4000)
	const n = 32000 // 128 MB of values into -m 64
	done := make(chan error, 1)
	go func() {
		for i := range n {
			line, err := rd.ReadString('\n')
			if err != nil {
				done <- err
				return
			}
			if line != "STORED\r\n" {
				done <- fmt.Errorf("set %d: %q", i, line)
				return
			}
		}
		done <- nil
	}()
	// Publish while the cache fills, and after.
	type probed struct {
		slowest time.Duration
		err     error
	}
	during := make(chan probed, 1)
	go func() {
		d, err := probe.publish(200, 1024, 5*time.Second)
		during <- probed{d, err}
	}()
	for i := range n {
		fmt.Fprintf(w, "set rel%06d 0 0 %d\r\n%s\r\n", i, len(value), value)
	}
	w.Flush()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	pd := <-during
	if pd.err != nil {
		t.Errorf("while the cache filled: %v", pd.err)
	}
	after, err := probe.publish(200, 1024, 5*time.Second)
	if err != nil {
		t.Errorf("with the cache full: %v", err)
	}
	fmt.Fprintf(c, "stats\r\n")
	var bytes, evictions string
	for {
		line, err := rd.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if f := strings.Fields(line); len(f) == 3 && f[1] == "bytes" {
			bytes = f[2]
		} else if len(f) == 3 && f[1] == "evictions" {
			evictions = f[2]
		}
		if line == "END\r\n" {
			break
		}
	}
	alarm, _ := metricOK(t, s, "substrate_amqp_memory_alarm")
	t.Logf("cache -m 64 holds %s bytes after %s evictions; memory alarm %v; confirms: slowest %v while filling, %v after",
		bytes, evictions, alarm, pd.slowest, after)
	if evictions == "0" || evictions == "" {
		t.Errorf("the cache was not filled to its limit (evictions %q)", evictions)
	}
	if b := probe.blockedEvents(); len(b) > 0 {
		t.Errorf("the publisher was sent connection.blocked: %v", b)
	}
	if alarm != 0 {
		t.Errorf("substrate_amqp_memory_alarm is %v with a full cache", alarm)
	}
	// The alarm counts the broker's own bytes: the cache's 64 MB of
	// items are not among them.
	if used, _ := metricOK(t, s, "substrate_amqp_memory_used_bytes"); used > 8<<20 {
		t.Errorf("substrate_amqp_memory_used_bytes is %v with only the cache full", used)
	}
}
