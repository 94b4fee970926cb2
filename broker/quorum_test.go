package broker

import (
	"fmt"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
)

// declareQuorum declares a durable quorum queue, deleted (through url)
// when the test ends.
func declareQuorum(t *testing.T, url string, ch *amqp091.Channel, name string, args amqp091.Table) {
	t.Helper()
	dropQueues(t, url, name)
	a := amqp091.Table{"x-queue-type": "quorum"}
	for k, v := range args {
		a[k] = v
	}
	if _, err := ch.QueueDeclare(name, true, false, false, false, a); err != nil {
		t.Fatalf("declare %s: %v", name, err)
	}
}

// A quorum queue counts returns: a redelivery carries x-delivery-count
// (a long) with the number of earlier returns, whether the message came
// back by nack, reject or a closed channel; basic.get always carries it,
// 0 included; a first delivery to a consumer has none.
func TestQuorumDeliveryCount(t *testing.T) { forTargets(t, testQuorumDeliveryCount) }

func testQuorumDeliveryCount(t *testing.T, url string) {
	c := dial(t, url)
	ch := channel091(t, c)
	q := uniq("qq")
	declareQuorum(t, url, ch, q, nil)
	publishTo(t, ch, "", q, amqp091.Publishing{Body: []byte("m"), Headers: amqp091.Table{"h": "v"}})
	ds, err := ch.Consume(q, "c1", false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	d := recvTimeout(t, ds, 5*time.Second)
	if d.Redelivered || len(d.Headers) != 1 || d.Headers["h"] != "v" {
		t.Fatalf("first delivery: redelivered %v headers %#v", d.Redelivered, d.Headers)
	}
	d.Nack(false, true)
	d = recvTimeout(t, ds, 5*time.Second)
	if !d.Redelivered || d.Headers["x-delivery-count"] != int64(1) || d.Headers["h"] != "v" {
		t.Fatalf("second delivery: redelivered %v headers %#v", d.Redelivered, d.Headers)
	}
	d.Reject(true)
	d = recvTimeout(t, ds, 5*time.Second)
	if d.Headers["x-delivery-count"] != int64(2) {
		t.Fatalf("third delivery: headers %#v", d.Headers)
	}
	ch.Close() // returns it once more
	ch = channel091(t, c)
	got := getWait(t, ch, q)
	if !got.Redelivered || got.Headers["x-delivery-count"] != int64(3) {
		t.Fatalf("get: redelivered %v headers %#v", got.Redelivered, got.Headers)
	}
	publishTo(t, ch, "", q, amqp091.Publishing{Body: []byte("n")})
	got = getWait(t, ch, q)
	if got.Redelivered || len(got.Headers) != 1 || got.Headers["x-delivery-count"] != int64(0) {
		t.Fatalf("get of a new message: redelivered %v headers %#v", got.Redelivered, got.Headers)
	}
}

// x-delivery-limit N: a message returned more than N times is
// dead-lettered (reason delivery_limit, without x-delivery-count) or, with
// no dead-letter exchange, dropped.
func TestQuorumDeliveryLimit(t *testing.T) { forTargets(t, testQuorumDeliveryLimit) }

func testQuorumDeliveryLimit(t *testing.T, url string) {
	c := dial(t, url)
	ch := channel091(t, c)
	q, dst, q2 := uniq("qq"), uniq("qq.dl"), uniq("qq2")
	dropQueues(t, url, dst)
	declare(t, ch, dst, nil)
	declareQuorum(t, url, ch, q, amqp091.Table{"x-delivery-limit": int32(2), "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dst})
	t0 := time.Now()
	publishTo(t, ch, "", q, amqp091.Publishing{Body: []byte("m"), Headers: amqp091.Table{"h": "v"}})
	for i := int64(0); i <= 2; i++ {
		d := getAckWait(t, ch, q)
		if d.Headers["x-delivery-count"] != i {
			t.Fatalf("delivery %d: headers %#v", i, d.Headers)
		}
		d.Nack(false, true)
	}
	got := getWait(t, ch, dst)
	deaths, _ := got.Headers["x-death"].([]any)
	if string(got.Body) != "m" || len(got.Headers) != 5 || len(deaths) != 1 || got.Headers["h"] != "v" {
		t.Fatalf("dead letter %q %#v", got.Body, got.Headers)
	}
	wantDeath(t, deaths[0], "delivery_limit", q, "", []any{q}, 1, "", t0)
	wantFirstDeath(t, got.Headers, "delivery_limit", q, "")
	wantEmpty(t, ch, q)

	declareQuorum(t, url, ch, q2, amqp091.Table{"x-delivery-limit": int32(0)})
	publishTo(t, ch, "", q2, amqp091.Publishing{Body: []byte("once")})
	d := getAckWait(t, ch, q2)
	d.Nack(false, true)
	time.Sleep(50 * time.Millisecond)
	wantEmpty(t, ch, q2)
}

// Redeclaring a quorum queue without x-queue-type or as classic fails
// with RabbitMQ's texts; an absent x-queue-type equals "classic" only;
// global QoS is refused on consume (540, closing
// the connection).
func TestQuorumRedeclareAndGlobalQos(t *testing.T) { forTargets(t, testQuorumRedeclareAndGlobalQos) }

func testQuorumRedeclareAndGlobalQos(t *testing.T, url string) {
	c := dial(t, url)
	ch := channel091(t, c)
	q, cq := uniq("qq"), uniq("cq")
	dropQueues(t, url, cq)
	declareQuorum(t, url, ch, q, nil)
	for _, tc := range []struct {
		args      amqp091.Table
		key, text string
	}{
		{nil, "x-queue-type", "received none but current is the value 'quorum' of type 'longstr'"},
		{amqp091.Table{"x-queue-type": "classic"}, "x-queue-type", "received 'classic' but current is 'quorum'"},
		{amqp091.Table{"x-queue-type": "quorum", "x-delivery-limit": int32(3)}, "x-delivery-limit", "received the value '3' of type 'signedint' but current is none"},
	} {
		ch := channel091(t, c)
		_, err := ch.QueueDeclare(q, true, false, false, false, tc.args)
		wantAMQPError(t, err, 406, fmt.Sprintf("PRECONDITION_FAILED - inequivalent arg '%s' for queue '%s' in vhost '/': %s", tc.key, q, tc.text))
	}
	declare(t, ch, cq, nil)
	for _, args := range []amqp091.Table{{"x-queue-type": "classic"}, nil} {
		if _, err := ch.QueueDeclare(cq, false, true, false, false, args); err != nil {
			t.Fatalf("redeclare classic %v: %v", args, err)
		}
	}
	ch2 := channel091(t, c)
	_, err := ch2.QueueDeclare(cq, false, true, false, false, amqp091.Table{"x-queue-type": "quorum"})
	wantAMQPError(t, err, 406, fmt.Sprintf("PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue '%s' in vhost '/': received the value 'quorum' of type 'longstr' but current is none", cq))

	c2 := dial(t, url)
	ch3 := channel091(t, c2)
	ch3.Qos(1, 0, true)
	_, err = ch3.Consume(q, "", false, false, false, false, nil)
	wantAMQPError(t, err, 540, fmt.Sprintf("NOT_IMPLEMENTED - queue '%s' in vhost '/' does not support global qos", q))
}

// getAckWait polls basic.get (manual ack) on q until a message comes.
func getAckWait(t *testing.T, ch *amqp091.Channel, q string) amqp091.Delivery {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; {
		d, ok, err := ch.Get(q, false)
		if err != nil {
			t.Fatalf("get %s: %v", q, err)
		}
		if ok {
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("no message on %s", q)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Overflow in a quorum queue (RabbitMQ 3.10.8): reject-publish refuses
// publishes once the queue is over its limit (the publish that takes it
// over is accepted); reject-publish-dlx behaves as drop-head.
func TestQuorumOverflow(t *testing.T) { forTargets(t, testQuorumOverflow) }

func testQuorumOverflow(t *testing.T, url string) {
	c := dial(t, url)
	ch := channel091(t, c)
	q, q2, dst := uniq("qq"), uniq("qq2"), uniq("qq.dl")
	dropQueues(t, url, dst)
	declare(t, ch, dst, nil)
	declareQuorum(t, url, ch, q, amqp091.Table{"x-max-length": int32(1), "x-overflow": "reject-publish"})
	declareQuorum(t, url, ch, q2, amqp091.Table{"x-max-length": int32(1), "x-overflow": "reject-publish-dlx",
		"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dst})
	cs := confirmCh(t, ch)
	tag := uint64(1)
	for _, tc := range []struct {
		q    string
		acks []bool
	}{{q, []bool{true, true, false, false}}, {q2, []bool{true, true, true, true}}} {
		for i, ack := range tc.acks {
			publishTo(t, ch, "", tc.q, amqp091.Publishing{Body: []byte(fmt.Sprint(i))})
			wantConfirms(t, cs, tag, ack)
			tag++
			time.Sleep(50 * time.Millisecond) // RabbitMQ applies the limit asynchronously
		}
	}
	wantBodies(t, bodies(t, ch, q), "0", "1")
	wantBodies(t, bodies(t, ch, q2), "3")
	wantBodies(t, bodies(t, ch, dst), "0", "1", "2")
}
