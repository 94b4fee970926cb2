package broker

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"substrate/broker/store"
)

// durableBroker starts brokers that share definitions and a message store
// directory, as substrate serve does across restarts.
type durableBroker struct {
	t     *testing.T
	defs  *MemDefinitions
	dir   string
	tweak func(*store.Config)
	s     *Server
}

func newDurableBroker(t *testing.T) *durableBroker {
	return &durableBroker{t: t, defs: NewMemDefinitions(), dir: filepath.Join(t.TempDir(), "broker")}
}

func (b *durableBroker) start() string {
	b.t.Helper()
	b.s = startServer(b.t, func(c *Config) {
		c.Definitions = b.defs
		c.StoreDir = b.dir
		c.storeTweak = b.tweak
	})
	return urlOf(b.s)
}

func (b *durableBroker) restart() string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.s.Shutdown(ctx); err != nil {
		b.t.Fatal(err)
	}
	return b.start()
}

func declareDurable(t *testing.T, ch *amqp091.Channel, name string, args amqp091.Table) {
	t.Helper()
	if _, err := ch.QueueDeclare(name, true, false, false, false, args); err != nil {
		t.Fatal(err)
	}
}

// publishConfirmed publishes bodies to the default exchange with confirms,
// on a channel of its own, and waits for every ack.
func publishConfirmed(t *testing.T, c *amqp091.Connection, queue string, mode uint8, bodies ...string) {
	t.Helper()
	ch := channel091(t, c)
	defer ch.Close()
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	acks := ch.NotifyPublish(make(chan amqp091.Confirmation, len(bodies)))
	for _, b := range bodies {
		if err := ch.Publish("", queue, false, false, amqp091.Publishing{DeliveryMode: mode, Body: []byte(b)}); err != nil {
			t.Fatal(err)
		}
	}
	for range bodies {
		if c := recvTimeout(t, acks, 5*time.Second); !c.Ack {
			t.Fatalf("publish %d nacked", c.DeliveryTag)
		}
	}
}

// drain takes every ready message with basic.get (no-ack unless ack) and
// returns bodies and redelivered flags.
func drain(t *testing.T, ch *amqp091.Channel, queue string) (bodies []string, redelivered []bool) {
	t.Helper()
	for {
		d, ok, err := ch.Get(queue, true)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			return bodies, redelivered
		}
		bodies = append(bodies, string(d.Body))
		redelivered = append(redelivered, d.Redelivered)
	}
}

func TestPersistentMessagesSurviveRestart(t *testing.T) {
	b := newDurableBroker(t)
	c := dial(t, b.start())
	ch := channel091(t, c)
	declareDurable(t, ch, "dq", nil)
	if _, err := ch.QueueDeclare("tq", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	publishConfirmed(t, c, "dq", amqp091.Persistent, "p1", "p2", "p3")
	publishConfirmed(t, c, "dq", amqp091.Transient, "t1")
	publishConfirmed(t, c, "tq", amqp091.Persistent, "lost with its queue")
	// p1 delivered and left unacked: redelivered after the restart.
	d, ok, err := ch.Get("dq", false)
	if err != nil || !ok || string(d.Body) != "p1" {
		t.Fatalf("get: %v %v %q", ok, err, d.Body)
	}
	c.Close()

	c = dial(t, b.restart())
	ch = channel091(t, c)
	bodies, redelivered := drain(t, ch, "dq")
	if got := bodies; len(got) != 3 || got[0] != "p1" || got[1] != "p2" || got[2] != "p3" {
		t.Fatalf("after restart: %q, want p1 p2 p3 (transient t1 gone)", got)
	}
	if !redelivered[0] || redelivered[1] || redelivered[2] {
		t.Fatalf("redelivered flags %v, want [true false false]", redelivered)
	}
	if _, err := ch.QueueDeclarePassive("tq", false, false, false, false, nil); err == nil {
		t.Fatal("non-durable queue survived the restart")
	}
	// drain acked everything (no-ack): nothing comes back.
	c.Close()
	c = dial(t, b.restart())
	ch = channel091(t, c)
	if bodies, _ := drain(t, ch, "dq"); len(bodies) != 0 {
		t.Fatalf("acked messages came back: %q", bodies)
	}
}

func TestPersistenceAcksPurgeDeleteRequeue(t *testing.T) {
	b := newDurableBroker(t)
	c := dial(t, b.start())
	ch := channel091(t, c)
	for _, q := range []string{"acked", "purged", "deleted", "requeued", "rejected"} {
		declareDurable(t, ch, q, nil)
		publishConfirmed(t, c, q, amqp091.Persistent, q+"1", q+"2")
	}
	ackOne := func(q string, f func(d amqp091.Delivery) error) {
		t.Helper()
		d, ok, err := ch.Get(q, false)
		if err != nil || !ok {
			t.Fatalf("get %s: %v %v", q, ok, err)
		}
		if err := f(d); err != nil {
			t.Fatal(err)
		}
	}
	ackOne("acked", func(d amqp091.Delivery) error { return d.Ack(false) })
	ackOne("requeued", func(d amqp091.Delivery) error { return d.Nack(false, true) })
	ackOne("rejected", func(d amqp091.Delivery) error { return d.Reject(false) })
	if n, err := ch.QueuePurge("purged", false); err != nil || n != 2 {
		t.Fatalf("purge: %d %v", n, err)
	}
	if _, err := ch.QueueDelete("deleted", false, false, false); err != nil {
		t.Fatal(err)
	}
	declareDurable(t, ch, "deleted", nil) // same name, new queue
	c.Close()

	c = dial(t, b.restart())
	ch = channel091(t, c)
	want := map[string][]string{"acked": {"acked2"}, "purged": nil, "deleted": nil,
		"requeued": {"requeued1", "requeued2"}, "rejected": {"rejected2"}}
	for q, w := range want {
		got, red := drain(t, ch, q)
		if len(got) != len(w) {
			t.Fatalf("%s after restart: %q, want %q", q, got, w)
		}
		for i := range w {
			if got[i] != w[i] {
				t.Fatalf("%s after restart: %q, want %q", q, got, w)
			}
		}
		if q == "requeued" && !red[0] {
			t.Fatalf("requeued message not redelivered after restart")
		}
	}
}

func TestPersistenceFanoutAndQuorum(t *testing.T) {
	b := newDurableBroker(t)
	c := dial(t, b.start())
	ch := channel091(t, c)
	if err := ch.ExchangeDeclare("fan", "fanout", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	declareDurable(t, ch, "f1", nil)
	declareDurable(t, ch, "f2", nil)
	declareDurable(t, ch, "qq", amqp091.Table{"x-queue-type": "quorum"})
	for _, q := range []string{"f1", "f2", "qq"} {
		if err := ch.QueueBind(q, "", "fan", false, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	acks := ch.NotifyPublish(make(chan amqp091.Confirmation, 2))
	for i, mode := range []uint8{amqp091.Persistent, amqp091.Transient} {
		if err := ch.Publish("fan", "", false, false, amqp091.Publishing{DeliveryMode: mode, Body: []byte{'a' + byte(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		if c := recvTimeout(t, acks, 5*time.Second); !c.Ack {
			t.Fatal("nack")
		}
	}
	// Take "a" from f1 only; quorum: return "a" once (x-delivery-count).
	if got, _ := drain(t, ch, "f1"); len(got) != 2 {
		t.Fatalf("f1: %q", got)
	}
	d, ok, err := ch.Get("qq", false)
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	d.Nack(false, true)
	c.Close()

	c = dial(t, b.restart())
	ch = channel091(t, c)
	if got, _ := drain(t, ch, "f1"); len(got) != 0 {
		t.Fatalf("f1 after restart: %q", got)
	}
	if got, _ := drain(t, ch, "f2"); len(got) != 1 || got[0] != "a" {
		t.Fatalf("f2 after restart: %q, want [a] (b is transient)", got)
	}
	// A quorum queue keeps transient messages too.
	var got []string
	var counts []any
	for {
		d, ok, err := ch.Get("qq", true)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		got = append(got, string(d.Body))
		counts = append(counts, d.Headers["x-delivery-count"])
	}
	if len(got) != 2 || got[0] != "a" || got[1] != "b" {
		t.Fatalf("qq after restart: %q, want [a b]", got)
	}
	// "a": one requeue, plus the delivery its requeue followed counts
	// once: RabbitMQ counts returns, and the requeue was one.
	if counts[0] != int64(1) || counts[1] != int64(0) {
		t.Fatalf("x-delivery-count after restart: %v, want [1 0]", counts)
	}
}

// TestConfirmWaitsForSync holds the store's fsync and checks that no
// basic.ack covers a persistent message before it, while a transient
// publish on another channel is confirmed at once.
func TestConfirmWaitsForSync(t *testing.T) {
	b := newDurableBroker(t)
	var mu sync.Mutex
	hold := make(chan struct{})
	held := false
	b.tweak = func(c *store.Config) {
		c.SyncFile = func(f store.File) error {
			mu.Lock()
			h := held
			mu.Unlock()
			if h {
				<-hold
			}
			return f.Sync()
		}
	}
	c := dial(t, b.start())
	ch := channel091(t, c)
	declareDurable(t, ch, "dq", nil)
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	acks := ch.NotifyPublish(make(chan amqp091.Confirmation, 4))
	mu.Lock()
	held = true
	mu.Unlock()
	if err := ch.Publish("", "dq", false, false, amqp091.Publishing{DeliveryMode: amqp091.Persistent, Body: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	ch2 := channel091(t, c)
	declareDurable(t, ch2, "other", nil)
	if err := ch2.Confirm(false); err != nil {
		t.Fatal(err)
	}
	acks2 := ch2.NotifyPublish(make(chan amqp091.Confirmation, 1))
	if err := ch2.Publish("", "other", false, false, amqp091.Publishing{Body: []byte("transient")}); err != nil {
		t.Fatal(err)
	}
	if c := recvTimeout(t, acks2, 5*time.Second); !c.Ack {
		t.Fatal("transient publish nacked")
	}
	noRecv(t, acks, 200*time.Millisecond)
	mu.Lock()
	held = false
	mu.Unlock()
	close(hold)
	if c := recvTimeout(t, acks, 5*time.Second); !c.Ack || c.DeliveryTag != 1 {
		t.Fatalf("got %+v, want ack 1", c)
	}
}

// TestConfirmNackOnStoreFailure: a failed fsync nacks the publishes it
// covered.
func TestConfirmNackOnStoreFailure(t *testing.T) {
	b := newDurableBroker(t)
	var mu sync.Mutex
	fail := false
	b.tweak = func(c *store.Config) {
		c.SyncFile = func(f store.File) error {
			mu.Lock()
			defer mu.Unlock()
			if fail {
				return errors.New("injected fsync failure")
			}
			return f.Sync()
		}
	}
	c := dial(t, b.start())
	ch := channel091(t, c)
	declareDurable(t, ch, "dq", nil)
	publishConfirmed(t, c, "dq", amqp091.Persistent, "ok")
	mu.Lock()
	fail = true
	mu.Unlock()
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	acks := ch.NotifyPublish(make(chan amqp091.Confirmation, 2))
	if err := ch.Publish("", "dq", false, false, amqp091.Publishing{DeliveryMode: amqp091.Persistent, Body: []byte("bad")}); err != nil {
		t.Fatal(err)
	}
	if c := recvTimeout(t, acks, 5*time.Second); c.Ack || c.DeliveryTag != 1 {
		t.Fatalf("got %+v, want nack 1", c)
	}
	if err := b.s.Shutdown(context.Background()); err == nil {
		t.Fatal("shutdown after a failed fsync reported no error")
	}
}

func TestPersistenceDropsOrphans(t *testing.T) {
	b := newDurableBroker(t)
	c := dial(t, b.start())
	ch := channel091(t, c)
	declareDurable(t, ch, "gone", nil)
	publishConfirmed(t, c, "gone", amqp091.Persistent, "m")
	c.Close()
	ctx := context.Background()
	if err := b.s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	// The queue disappears from the definitions while the broker is down.
	if err := b.defs.DeleteQueue(ctx, "/", "gone"); err != nil {
		t.Fatal(err)
	}
	b.start()
	if n := b.s.store.Len(); n != 0 {
		t.Fatalf("store holds %d messages of a queue that no longer exists", n)
	}
}

// TestDeepBacklogIsPagedOut: bodies beyond pageBytes stay on disk, in the
// queue and after a restart, and come back intact and in order, also
// through dead-lettering.
func TestDeepBacklogIsPagedOut(t *testing.T) {
	b := newDurableBroker(t)
	c := dial(t, b.start())
	ch := channel091(t, c)
	declareDurable(t, ch, "dlq", nil)
	declareDurable(t, ch, "deep", amqp091.Table{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dlq"})
	const n, size = 300, 10 << 10
	body := func(i int) string {
		p := make([]byte, size)
		for j := range p {
			p[j] = byte('a' + (i+j)%26)
		}
		return string(p)
	}
	bodies := make([]string, n)
	for i := range bodies {
		bodies[i] = body(i)
	}
	publishConfirmed(t, c, "deep", amqp091.Persistent, bodies...)
	check := func(when string) {
		t.Helper()
		q := b.s.vhost("/").queue("deep")
		q.mu.Lock()
		res, all := q.msgs.resident(), q.msgs.bytes()
		q.mu.Unlock()
		if all != n*size || res > pageBytes+size {
			t.Fatalf("%s: %d bytes in memory of %d; want at most %d", when, res, all, pageBytes+size)
		}
	}
	check("after publishing")
	c.Close()
	c = dial(t, b.restart())
	ch = channel091(t, c)
	check("after a restart")
	// Reject the first (paged-in) and the last (paged-out) message: the
	// dead letters carry their bodies.
	var got []string
	for i := 0; i < n; i++ {
		d, ok, err := ch.Get("deep", false)
		if err != nil || !ok {
			t.Fatalf("get %d: %v %v", i, ok, err)
		}
		got = append(got, string(d.Body))
		if i == 0 || i == n-1 {
			d.Reject(false)
		} else {
			d.Ack(false)
		}
	}
	for i := range got {
		if got[i] != bodies[i] {
			t.Fatalf("message %d differs after paging", i)
		}
	}
	dead, _ := drain(t, ch, "dlq")
	if len(dead) != 2 || dead[0] != bodies[0] || dead[1] != bodies[n-1] {
		t.Fatalf("dead letters: %d, want the first and last bodies", len(dead))
	}
	if live := b.s.store.Len(); live != 0 {
		t.Fatalf("store holds %d messages after everything was consumed", live)
	}
}
