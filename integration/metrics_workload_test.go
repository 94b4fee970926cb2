package integration

import (
	"context"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
)

// Queues of the workload, in vhost "/".
const (
	metricsWorkQueue  = "metrics.work"  // 5 published; ends with 1 ready, 1 unacked
	metricsIdleQueue  = "metrics.idle"  // empty, with one consumer
	metricsEmptyQueue = "metrics.empty" // basic.get finds nothing
)

// metricsWorkload is the same AMQP traffic for RabbitMQ (the recorded goldens) and
// substrate, so that the counters of both can be compared: publishes with
// confirms, one mandatory and one plain unroutable message, basic.get in
// both ack modes and on an empty queue, a consumer that rejects with
// requeue (a redelivery) and then acks. It leaves two connections open,
// holding one consumer and one unacknowledged message; the returned func
// closes them.
//
// Counters it moves (RabbitMQ's rabbitmq_global_messages_*):
// received 7 (5 + 2 unroutable), received_confirm 7, confirmed 7, routed 5,
// unroutable_returned 1, unroutable_dropped 1, delivered_get_auto_ack 1,
// delivered_get_manual_ack 2, delivered_consume_manual_ack 2,
// redelivered 1, acknowledged 2, get_empty 1; queues declared 3, created 3;
// connections opened 2, channels opened 3.
func metricsWorkload(t testing.TB, url string) (closeAll func()) {
	t.Helper()
	pub, err := amqp091.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	get, err := amqp091.Dial(url)
	if err != nil {
		pub.Close()
		t.Fatal(err)
	}
	closeAll = func() { pub.Close(); get.Close() }
	fail := func(what string, err error) {
		t.Helper()
		closeAll()
		t.Fatalf("%s: %v", what, err)
	}

	ch, err := pub.Channel()
	if err != nil {
		fail("channel", err)
	}
	for _, q := range []string{metricsWorkQueue, metricsIdleQueue, metricsEmptyQueue} {
		if _, err := ch.QueueDeclare(q, false, false, false, false, nil); err != nil {
			fail("declare "+q, err)
		}
	}
	if err := ch.Confirm(false); err != nil {
		fail("confirm.select", err)
	}
	returns := ch.NotifyReturn(make(chan amqp091.Return, 1))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	publish := func(exchange, key string, mandatory bool) {
		t.Helper()
		c, err := ch.PublishWithDeferredConfirmWithContext(ctx, exchange, key, mandatory, false, amqp091.Publishing{Body: []byte("metrics")})
		if err != nil {
			fail("publish", err)
		}
		if ok, err := c.WaitContext(ctx); !ok || err != nil {
			fail("confirm", err)
		}
	}
	for range 5 {
		publish("", metricsWorkQueue, false)
	}
	publish("amq.direct", "nowhere", true)
	select {
	case <-returns:
	case <-ctx.Done():
		fail("basic.return", ctx.Err())
	}
	publish("amq.direct", "nowhere", false)

	gc, err := get.Channel()
	if err != nil {
		fail("channel", err)
	}
	if _, ok, err := gc.Get(metricsWorkQueue, true); !ok || err != nil {
		fail("basic.get auto-ack", err)
	}
	d, ok, err := gc.Get(metricsWorkQueue, false)
	if !ok || err != nil {
		fail("basic.get", err)
	}
	if err := d.Ack(false); err != nil {
		fail("ack", err)
	}
	if _, ok, err := gc.Get(metricsEmptyQueue, false); ok || err != nil {
		fail("basic.get on an empty queue", err)
	}

	cc, err := get.Channel()
	if err != nil {
		fail("channel", err)
	}
	if err := cc.Qos(1, 0, false); err != nil {
		fail("qos", err)
	}
	deliveries, err := cc.Consume(metricsWorkQueue, "work", false, false, false, false, nil)
	if err != nil {
		fail("consume", err)
	}
	next := func() amqp091.Delivery {
		t.Helper()
		select {
		case d := <-deliveries:
			return d
		case <-ctx.Done():
			fail("delivery", ctx.Err())
		}
		return amqp091.Delivery{}
	}
	if err := next().Reject(true); err != nil {
		fail("reject", err)
	}
	d = next()
	if !d.Redelivered {
		fail("redelivery", nil)
	}
	// Cancelled while the one message prefetch allows is unacked, so that
	// no third delivery can slip in before the cancel.
	if err := cc.Cancel("work", false); err != nil {
		fail("cancel", err)
	}
	if err := d.Ack(false); err != nil {
		fail("ack", err)
	}
	// One unacked message on the work queue, one left ready.
	if _, ok, err := gc.Get(metricsWorkQueue, false); !ok || err != nil {
		fail("basic.get", err)
	}
	if _, err := cc.Consume(metricsIdleQueue, "idle", false, false, false, false, nil); err != nil {
		fail("consume", err)
	}
	return closeAll
}
