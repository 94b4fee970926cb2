//go:build linux

package broker

import (
	"context"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"substrate/broker/amqp"
	"substrate/internal/faults"
	"substrate/internal/testkit"
)

// TestIdleConnectionsPark: idle reply-queue connections give up their
// reader goroutines (no goroutine, no stack per connection), and each is
// served again as soon as something arrives for it: a delivery to its
// consumer goes out, its own publish is routed, and a client that leaves
// has its exclusive queue deleted.
func TestIdleConnectionsPark(t *testing.T) {
	const n = 200
	raiseNoFile(t, 2*n+256)
	s := startServer(t, func(c *Config) { c.parkAfter = 50 * time.Millisecond })
	g0 := runtime.NumGoroutine()
	hello := idleHello(t)
	for range n {
		c, err := net.Dial("tcp", addrOf(s))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write(hello); err != nil {
			t.Fatal(err)
		}
	}
	waitParked(t, s, n)
	eventually(t, 10*time.Second, func() bool { return runtime.NumGoroutine() <= g0+n/20 }, "readers ended")
	t.Logf("%d idle connections parked: %d goroutines (%d before them)", n, runtime.NumGoroutine(), g0)

	// A client on amqp091-go: its consumer parks, then gets a message.
	c := dial(t, urlOf(s))
	ch := channel091(t, c)
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := ch.Consume(q.Name, "", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	sendAndGet := func(from *amqp091.Channel, body, what string) {
		t.Helper()
		if err := from.PublishWithContext(context.Background(), "", q.Name, false, false, amqp091.Publishing{Body: []byte(body)}); err != nil {
			t.Fatal(err)
		}
		select {
		case d := <-msgs:
			if string(d.Body) != body {
				t.Fatalf("%s: got %q, want %q", what, d.Body, body)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: no delivery", what)
		}
	}
	waitParked(t, s, n+1)
	// Its own publish wakes it (the reader is resumed by the socket).
	sendAndGet(ch, "to myself", "the parked connection published")
	waitParked(t, s, n+1)
	// A delivery caused by another connection goes out while it is parked.
	sendAndGet(channel091(t, dial(t, urlOf(s))), "from another", "delivery to a parked connection")

	// A parked client that leaves: its queue goes.
	waitParked(t, s, n+2)
	c.Close()
	eventually(t, 10*time.Second, func() bool {
		for _, qi := range s.Queues("/") {
			if qi.Name == q.Name {
				return false
			}
		}
		return true
	}, "the exclusive queue of a parked connection that closed deleted")
	if got := s.parker.count(); got != n+1 {
		t.Errorf("%d parked, want %d", got, n+1)
	}
}

// TestParkedConnectionHeartbeats: a parked connection whose client falls
// silent is closed for missed heartbeats, as a reading one is; one whose
// client sends heartbeats stays.
func TestParkedConnectionHeartbeats(t *testing.T) {
	logs := &testkit.Buffer{}
	s := startServer(t, func(c *Config) {
		c.parkAfter = 50 * time.Millisecond
		c.Heartbeat = time.Second
		c.Logger = slog.New(slog.NewTextHandler(logs, nil))
	})
	live := rawDial(t, addrOf(s))
	live.handshake(rawOpts{heartbeat: 1})
	silent := rawDial(t, addrOf(s))
	silent.handshake(rawOpts{heartbeat: 1})
	start := time.Now()
	waitParked(t, s, 2)
	// The live client answers every heartbeat with one; the silent one
	// reads and sends nothing, and must be closed after 2-3 intervals.
	done := make(chan time.Duration, 1)
	go func() {
		silent.nc.SetReadDeadline(time.Now().Add(6 * time.Second))
		for {
			if _, err := silent.fr.ReadFrame(); err != nil {
				done <- time.Since(start)
				return
			}
		}
	}()
	live.nc.SetReadDeadline(time.Now().Add(6 * time.Second))
	var closedAfter time.Duration
	for closedAfter == 0 {
		f, err := live.fr.ReadFrame()
		if err != nil {
			t.Fatalf("the live client's connection: %v", err)
		}
		if f.Type == amqp.FrameHeartbeat {
			live.write(amqp.AppendHeartbeat(nil))
		}
		select {
		case closedAfter = <-done:
		default:
		}
	}
	if closedAfter < 1500*time.Millisecond || closedAfter > 3500*time.Millisecond {
		t.Fatalf("silent parked client closed after %v, want 2-3 heartbeats (1s)", closedAfter)
	}
	if !strings.Contains(logs.String(), "missed heartbeats from client") {
		t.Fatalf("no missed-heartbeats line in the log:\n%s", logs.String())
	}
	// The live one is still served: it opens a channel.
	live.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	live.send(2, &amqp.ChannelOpen{})
	for {
		f, err := live.fr.ReadFrame()
		if err != nil {
			t.Fatalf("live client after %v: %v", time.Since(start), err)
		}
		if f.Type == amqp.FrameMethod && f.Channel == 2 {
			break
		}
	}
}

// TestShutdownWithParkedConnections: Shutdown closes parked connections
// (connection.close, then the socket after the grace) and returns.
func TestShutdownWithParkedConnections(t *testing.T) {
	cfg := NewConfig()
	cfg.Addrs = []string{"127.0.0.1:0"}
	cfg.parkAfter = 50 * time.Millisecond
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	var socks []net.Conn
	hello := idleHello(t)
	for range 20 {
		c, err := net.Dial("tcp", addrOf(s))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		socks = append(socks, c)
		c.Write(hello)
	}
	waitParked(t, s, 20)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	t0 := time.Now()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if d := time.Since(t0); d > 5*time.Second {
		t.Errorf("shutdown took %v", d)
	}
	for i, c := range socks {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		b, err := readAllConn(c)
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		if !strings.Contains(string(b), "CONNECTION_FORCED") {
			t.Errorf("client %d got no connection.close 320 before the socket closed", i)
		}
	}
}

// readAllConn reads c until EOF.
func readAllConn(c net.Conn) ([]byte, error) {
	var out []byte
	b := make([]byte, 4096)
	for {
		n, err := c.Read(b)
		out = append(out, b[:n]...)
		if err != nil {
			if isEOF(err) {
				return out, nil
			}
			return out, err
		}
	}
}

// TestParkedConnectionErrorWaitsForCloseOk: a connection error on a
// connection that parked (no heartbeats) waits the whole close grace for
// close-ok, as on one that never parked: the deadline parking set is
// gone once the reader waits for the end.
func TestParkedConnectionErrorWaitsForCloseOk(t *testing.T) {
	s := startServer(t, func(c *Config) { c.parkAfter = 50 * time.Millisecond })
	r := rawOpen(t, addrOf(s))
	waitParked(t, s, 1)
	r.send(7, &amqp.BasicQos{PrefetchCount: 1}) // channel 7 is not open: 504
	if _, m := r.method(); m.Name() != "connection.close" {
		t.Fatalf("got %s, want connection.close", m.Name())
	}
	t0 := time.Now()
	r.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := readAllConn(r.nc); err != nil {
		t.Fatalf("after connection.close: %v", err)
	}
	if d := time.Since(t0); d < closeGrace-200*time.Millisecond {
		t.Fatalf("socket closed %v after connection.close, want the close grace (%v) for close-ok", d, closeGrace)
	}
}

// TestPanicParkWakeClosesOnlyItsConnection: a panic while the parker
// wakes a connection (site amqp.park-wake, on the goroutine that serves
// every parked connection) closes that connection with 541 and nothing
// else: another parked connection wakes and works, and the parker serves
// on.
func TestPanicParkWakeClosesOnlyItsConnection(t *testing.T) {
	s, _ := panicServer(t, func(c *Config) { c.parkAfter = 50 * time.Millisecond })
	url := urlOf(s)
	other := dial(t, url)
	bad := dialNamed(t, url, "boom-park")
	closed := bad.NotifyClose(make(chan *amqp091.Error, 1))
	waitParked(t, s, 2)
	arm(t, "amqp.park-wake", "boom-park")
	before := faults.Count(faults.AMQP)
	if _, err := bad.Channel(); err == nil { // its channel.open wakes it
		t.Fatal("channel.open on the connection whose wake panicked succeeded")
	}
	want541(t, closed)
	wantPanicCounted(t, before)
	q := uniq("work")
	och := channel091(t, other)
	if _, err := och.QueueDeclare(q, false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	stillServes(t, other, q)
	waitParked(t, s, 1) // the parker still parks and wakes
	stillServes(t, other, q)
}
