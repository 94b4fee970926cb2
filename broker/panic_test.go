package broker

import (
	"context"
	"io"
	"log/slog"
	"runtime"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"substrate/internal/faults"
	"substrate/internal/testkit"
)

// Panic containment: each test arms one injection site (faults.Arm),
// triggers it from a client, and checks that only the offender is closed
// (541 INTERNAL_ERROR where it is a connection), that another connection
// still uses the same queue (nothing left locked or wedged), that the
// panic was counted, and that the server still shuts down with every
// goroutine gone.

// panicServer starts a broker for a panic test; when the test ends (after
// its clients closed) it shuts the broker down and checks that no broker
// goroutine is left.
func panicServer(t *testing.T, mod ...func(*Config)) (*Server, *testkit.Buffer) {
	t.Helper()
	logs := &testkit.Buffer{}
	s := startServer(t, append([]func(*Config){func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(logs, nil))
	}}, mod...)...)
	t.Cleanup(func() {
		// Registered after startServer's cleanup, so this runs first:
		// the clients of the test are closed by then (they were dialled
		// later, their cleanups ran earlier).
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown after a panic: %v", err)
		}
		noBrokerGoroutines(t)
	})
	return s, logs
}

// noBrokerGoroutines waits until no goroutine runs broker code (readers,
// writers, accept loops, timers).
func noBrokerGoroutines(t *testing.T) {
	t.Helper()
	var stacks string
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		buf := make([]byte, 1<<20)
		stacks = string(buf[:runtime.Stack(buf, true)])
		left := false
		for _, g := range strings.Split(stacks, "\n\n") {
			if strings.Contains(g, "substrate/broker.(*") && !strings.Contains(g, "_test.go") {
				left = true
			}
		}
		if !left {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("broker goroutines left after shutdown:\n%s", stacks)
}

func arm(t *testing.T, site, marker string) {
	t.Helper()
	disarm := faults.Arm(site, marker)
	t.Cleanup(disarm)
}

func dialNamed(t *testing.T, url, name string) *amqp091.Connection {
	t.Helper()
	c, err := amqp091.DialConfig(url, amqp091.Config{Properties: amqp091.Table{"connection_name": name}})
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() { closeClient(t, c) })
	return c
}

// want541 waits for the offender's connection.close 541 INTERNAL_ERROR.
func want541(t *testing.T, closed <-chan *amqp091.Error) {
	t.Helper()
	e := recvTimeout(t, closed, 10*time.Second)
	if e == nil || e.Code != 541 || e.Reason != "INTERNAL_ERROR" {
		t.Fatalf("offender closed with %v, want 541 INTERNAL_ERROR", e)
	}
}

func wantPanicCounted(t *testing.T, before uint64) {
	t.Helper()
	eventually(t, 5*time.Second, func() bool { return faults.Count(faults.AMQP) > before }, "the panic to be counted")
}

// stillServes publishes a message to queue with a confirm on connection
// c and consumes it there: the queue and the vhost are not wedged.
func stillServes(t *testing.T, c *amqp091.Connection, queue string) {
	t.Helper()
	ch := channel091(t, c)
	defer ch.Close()
	must(t, ch.Confirm(false))
	confirms := ch.NotifyPublish(make(chan amqp091.Confirmation, 1))
	tag := uniq("ctag")
	d, err := ch.Consume(queue, tag, false, false, false, false, nil)
	must(t, err)
	body := uniq("alive")
	must(t, ch.Publish("", queue, false, false, amqp091.Publishing{Body: []byte(body)}))
	if cf := recvTimeout(t, confirms, 5*time.Second); !cf.Ack {
		t.Fatalf("publish nacked after the panic: %+v", cf)
	}
	for {
		m := recvTimeout(t, d, 5*time.Second)
		must(t, m.Ack(false))
		if string(m.Body) == body {
			break
		}
	}
	must(t, ch.Cancel(tag, false))
}

func TestPanicReaderClosesOnlyItsConnection(t *testing.T) {
	faults.ResetLogBudget() // this test reads the panic's log line
	s, logs := panicServer(t)
	url := urlOf(s)
	q := uniq("work")
	other := dial(t, url)
	och := channel091(t, other)
	_, err := och.QueueDeclare(q, false, false, false, false, nil)
	must(t, err)
	must(t, och.Publish("", q, false, false, amqp091.Publishing{Body: []byte("m1")}))

	// The offender holds m1 unacked and an exclusive queue, then sends a
	// method that panics the reader.
	bad := dialNamed(t, url, "offender")
	closed := bad.NotifyClose(make(chan *amqp091.Error, 1))
	bch := channel091(t, bad)
	excl, err := bch.QueueDeclare("", false, false, true, false, nil)
	must(t, err)
	d, err := bch.Consume(q, "", false, false, false, false, nil)
	must(t, err)
	if m := recvTimeout(t, d, 5*time.Second); string(m.Body) != "m1" {
		t.Fatalf("got %q", m.Body)
	}
	arm(t, "amqp.reader", "boom-reader")
	before := faults.Count(faults.AMQP)
	go bch.QueueDeclare("boom-reader", false, false, false, false, nil)
	want541(t, closed)
	wantPanicCounted(t, before)

	// Torn down: m1 requeued, the exclusive queue gone.
	eventually(t, 5*time.Second, func() bool {
		for _, qi := range s.Queues("/") {
			if qi.Name == excl.Name {
				return false
			}
		}
		return true
	}, "the offender's exclusive queue to go")
	od, err := och.Consume(q, "requeued", false, false, false, false, nil)
	must(t, err)
	m := recvTimeout(t, od, 5*time.Second)
	if string(m.Body) != "m1" || !m.Redelivered {
		t.Fatalf("got %q redelivered=%v, want m1 requeued", m.Body, m.Redelivered)
	}
	must(t, m.Ack(false))
	must(t, och.Cancel("requeued", false))
	stillServes(t, other, q)
	stillServes(t, dial(t, url), q)

	out := logs.String()
	var line string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "panic recovered") {
			line = l
		}
	}
	if !strings.Contains(line, "level=ERROR") || !strings.Contains(line, "peer=127.0.0.1:") ||
		!strings.Contains(line, "amqp.reader") || !strings.Contains(line, "stack=") {
		t.Fatalf("want one ERROR line with peer, site and stack, got %q", line)
	}
}

func TestPanicWriterClosesOnlyItsConnection(t *testing.T) {
	s, _ := panicServer(t)
	url := urlOf(s)
	q := uniq("work")
	other := dial(t, url)
	och := channel091(t, other)
	_, err := och.QueueDeclare(q, false, false, false, false, nil)
	must(t, err)

	bad := dialNamed(t, url, "boom-writer")
	closed := bad.NotifyClose(make(chan *amqp091.Error, 1))
	bch := channel091(t, bad)
	arm(t, "amqp.writer", "boom-writer")
	before := faults.Count(faults.AMQP)
	go bch.QueueDeclare(uniq("any"), false, false, false, false, nil) // its declare-ok panics the writer
	want541(t, closed)
	wantPanicCounted(t, before)
	eventually(t, 5*time.Second, func() bool { return len(s.Connections()) == 1 }, "the offender to be torn down")
	stillServes(t, other, q)
}

func TestPanicConfirmHookClosesOnlyItsConnection(t *testing.T) {
	s, _ := panicServer(t, func(c *Config) { c.StoreDir = t.TempDir() })
	url := urlOf(s)
	q := uniq("durable")
	other := dial(t, url)
	och := channel091(t, other)
	_, err := och.QueueDeclare(q, true, false, false, false, nil)
	must(t, err)

	bad := dialNamed(t, url, "boom-confirm")
	closed := bad.NotifyClose(make(chan *amqp091.Error, 1))
	bch := channel091(t, bad)
	must(t, bch.Confirm(false))
	arm(t, "amqp.confirm", "boom-confirm")
	before := faults.Count(faults.AMQP)
	// Persistent messages to a durable queue wait for the store's fsync:
	// their confirm is sent by the commit hook, which panics.
	for i := 0; i < 20; i++ {
		if err := bch.Publish("", q, false, false, amqp091.Publishing{DeliveryMode: 2, Body: []byte("p")}); err != nil {
			break
		}
	}
	want541(t, closed)
	wantPanicCounted(t, before)
	stillServes(t, other, q)
	// The committer survived: persistent confirms of others still come.
	must(t, och.Confirm(false))
	cf := och.NotifyPublish(make(chan amqp091.Confirmation, 1))
	must(t, och.Publish("", q, false, false, amqp091.Publishing{DeliveryMode: 2, Body: []byte("after")}))
	if c := recvTimeout(t, cf, 5*time.Second); !c.Ack {
		t.Fatal("persistent publish nacked after the hook's panic")
	}
}

func TestPanicCloseTimerClosesOnlyItsConnection(t *testing.T) {
	s, _ := panicServer(t)
	url := urlOf(s)
	other := dial(t, url)
	r := rawOpen(t, addrOf(s)) // never answers connection.close
	arm(t, "amqp.close-timer", r.nc.LocalAddr().String())
	before := faults.Count(faults.AMQP)
	var name string
	eventually(t, 5*time.Second, func() bool {
		for _, ci := range s.Connections() {
			if ci.Peer == r.nc.LocalAddr().String() {
				name = ci.Name
			}
		}
		return name != ""
	}, "the raw connection")
	must(t, s.CloseConnection(name, "test"))
	wantPanicCounted(t, before)
	// The socket still closes and the connection goes.
	r.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, r.nc); err != nil {
		t.Fatalf("raw connection not closed after the timer's panic: %v", err)
	}
	eventually(t, 5*time.Second, func() bool { return len(s.Connections()) == 1 }, "the connection to go")
	q := uniq("work")
	och := channel091(t, other)
	_, err := och.QueueDeclare(q, false, false, false, false, nil)
	must(t, err)
	stillServes(t, other, q)
}

func TestPanicMessageTTLTimerKeepsQueueUsable(t *testing.T) {
	s, _ := panicServer(t)
	url := urlOf(s)
	q := "boom-ttl." + uniq("q")
	c := dial(t, url)
	ch := channel091(t, c)
	_, err := ch.QueueDeclare(q, false, false, false, false, amqp091.Table{"x-message-ttl": int32(20)})
	must(t, err)
	arm(t, "amqp.queue-ttl", "boom-ttl")
	before := faults.Count(faults.AMQP)
	must(t, ch.Publish("", q, false, false, amqp091.Publishing{Body: []byte("expires")}))
	wantPanicCounted(t, before)
	faults.Arm("amqp.queue-ttl", "boom-ttl")() // disarm
	// The queue is not locked: another connection publishes and consumes.
	stillServes(t, dial(t, url), q)
	// And expiry works again once a publish re-arms the timer.
	must(t, ch.Publish("", q, false, false, amqp091.Publishing{Body: []byte("expires too")}))
	eventually(t, 5*time.Second, func() bool {
		for _, qi := range s.Queues("/") {
			if qi.Name == q {
				return qi.Messages == 0
			}
		}
		return false
	}, "the expired messages to be dropped")
}

func TestPanicQueueExpiresTimerKeepsQueue(t *testing.T) {
	s, _ := panicServer(t)
	url := urlOf(s)
	q := "boom-exp." + uniq("q")
	c := dial(t, url)
	ch := channel091(t, c)
	arm(t, "amqp.queue-expires", "boom-exp")
	before := faults.Count(faults.AMQP)
	_, err := ch.QueueDeclare(q, false, false, false, false, amqp091.Table{"x-expires": int32(30)})
	must(t, err)
	wantPanicCounted(t, before)
	faults.Arm("amqp.queue-expires", "boom-exp")() // disarm
	// The expiry was skipped: the queue is still there and serves.
	stillServes(t, dial(t, url), q)
	// Its next idle period expires it as usual.
	eventually(t, 5*time.Second, func() bool {
		for _, qi := range s.Queues("/") {
			if qi.Name == q {
				return false
			}
		}
		return true
	}, "the queue to expire after the panic")
}

func TestPanicDeadLetterFlushKeepsLetters(t *testing.T) {
	s, _ := panicServer(t)
	url := urlOf(s)
	src, dlq := "boom-dlx."+uniq("src"), uniq("dlq")
	c := dial(t, url)
	ch := channel091(t, c)
	_, err := ch.QueueDeclare(dlq, false, false, false, false, nil)
	must(t, err)
	_, err = ch.QueueDeclare(src, false, false, false, false, amqp091.Table{
		"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq})
	must(t, err)
	must(t, ch.Publish("", src, false, false, amqp091.Publishing{Body: []byte("dead")}))
	queue := s.vhost("/").queue(src)
	eventually(t, 5*time.Second, func() bool { return queue.Info().MessagesReady == 1 }, "the message")

	arm(t, "amqp.deadletter", "boom-dlx")
	before := faults.Count(faults.AMQP)
	// What a caller holding vhost.mu does with a message it drops: collect
	// it and hand it to flushDeadLater's goroutine, which panics.
	queue.mu.Lock()
	e, _ := queue.msgs.pop()
	queue.dropLocked(e, reasonExpired)
	queue.flushDeadLater()
	queue.mu.Unlock()
	wantPanicCounted(t, before)
	faults.Arm("amqp.deadletter", "boom-dlx")() // disarm

	// Nothing was lost or left locked: the next use of the queue routes
	// the dead letter.
	stillServes(t, dial(t, url), src)
	d, err := ch.Consume(dlq, "", true, false, false, false, nil)
	must(t, err)
	if m := recvTimeout(t, d, 5*time.Second); string(m.Body) != "dead" {
		t.Fatalf("dead-lettered %q", m.Body)
	}
}

// TestPanicDeadLetterRejectKeepsConnection: a message rejected without
// requeue is dead-lettered on the rejecting client's reader; a panic while
// routing it is the queue's: the client's connection and channel go on,
// and the letter is routed at the queue's next use.
func TestPanicDeadLetterRejectKeepsConnection(t *testing.T) {
	s, _ := panicServer(t)
	url := urlOf(s)
	src, dlq := "boom-dlx."+uniq("rej"), uniq("dlq")
	c := dial(t, url)
	closed := c.NotifyClose(make(chan *amqp091.Error, 1))
	ch := channel091(t, c)
	_, err := ch.QueueDeclare(dlq, false, false, false, false, nil)
	must(t, err)
	_, err = ch.QueueDeclare(src, false, false, false, false, amqp091.Table{
		"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq})
	must(t, err)
	must(t, ch.Publish("", src, false, false, amqp091.Publishing{Body: []byte("rejected")}))
	var d amqp091.Delivery
	eventually(t, 5*time.Second, func() bool {
		var ok bool
		d, ok, err = ch.Get(src, false)
		must(t, err)
		return ok
	}, "the message")

	arm(t, "amqp.deadletter", "boom-dlx")
	before := faults.Count(faults.AMQP)
	must(t, d.Nack(false, false))
	wantPanicCounted(t, before)
	faults.Arm("amqp.deadletter", "boom-dlx")() // disarm

	// The rejecting connection and its channel go on; the queue's next
	// use (stillServes) routes the letter kept in it.
	_, err = ch.QueueDeclare(src, false, false, false, false, amqp091.Table{
		"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq})
	must(t, err)
	select {
	case e := <-closed:
		t.Fatalf("the rejecting connection was closed: %v", e)
	default:
	}
	stillServes(t, dial(t, url), src)
	dl, err := ch.Consume(dlq, "", true, false, false, false, nil)
	must(t, err)
	if m := recvTimeout(t, dl, 5*time.Second); string(m.Body) != "rejected" {
		t.Fatalf("dead-lettered %q", m.Body)
	}
}

func TestPanicAcceptKeepsAccepting(t *testing.T) {
	s, _ := panicServer(t)
	url := urlOf(s)
	q := uniq("work")
	other := dial(t, url)
	och := channel091(t, other)
	_, err := och.QueueDeclare(q, false, false, false, false, nil)
	must(t, err)

	disarm := faults.Arm("amqp.accept", "127.0.0.1:")
	before := faults.Count(faults.AMQP)
	if c, err := amqp091.Dial(url); err == nil {
		c.Close()
		disarm()
		t.Fatal("a connection was served while its accept panicked")
	}
	disarm()
	wantPanicCounted(t, before)
	stillServes(t, other, q)
	stillServes(t, dial(t, url), q) // the loop still accepts
}
