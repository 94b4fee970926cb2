package broker

import (
	"fmt"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
)

// consumeOn opens a channel with the given prefetch (0: none) and
// consumes q with tag and x-priority (nil: none), manual ack.
func consumeOn(t *testing.T, c *amqp091.Connection, q, tag string, prefetch int, prio any) (*amqp091.Channel, <-chan amqp091.Delivery) {
	t.Helper()
	ch := channel091(t, c)
	if prefetch > 0 {
		if err := ch.Qos(prefetch, 0, false); err != nil {
			t.Fatal(err)
		}
	}
	var args amqp091.Table
	if prio != nil {
		args = amqp091.Table{"x-priority": prio}
	}
	ds, err := ch.Consume(q, tag, false, false, false, false, args)
	if err != nil {
		t.Fatal(err)
	}
	return ch, ds
}

// take reads n deliveries and returns their bodies (with "*" for
// redelivered ones).
func take(t *testing.T, ds <-chan amqp091.Delivery, n int) ([]string, []amqp091.Delivery) {
	t.Helper()
	var got []string
	var all []amqp091.Delivery
	for i := 0; i < n; i++ {
		d := recvTimeout(t, ds, 5*time.Second)
		b := string(d.Body)
		if d.Redelivered {
			b += "*"
		}
		got = append(got, b)
		all = append(all, d)
	}
	return got, all
}

func publishRange(t *testing.T, ch *amqp091.Channel, q string, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		publishTo(t, ch, "", q, amqp091.Publishing{Body: []byte(fmt.Sprint(i))})
	}
}

// Consumer priorities (x-priority): the highest-priority consumers with
// credit get the messages, round-robin between equals; a lower one gets
// messages only while every higher one is blocked by its prefetch.
func TestConsumerPriorities(t *testing.T) { forTargets(t, testConsumerPriorities) }

func testConsumerPriorities(t *testing.T, url string) {
	c := dial(t, url)
	ch := channel091(t, c)
	q := uniq("cprio")
	dropQueues(t, url, q)
	declare(t, ch, q, nil)
	_, low := consumeOn(t, c, q, "low", 0, nil)
	_, hiA := consumeOn(t, c, q, "hiA", 2, int32(10))
	_, hiB := consumeOn(t, c, q, "hiB", 2, int16(10))
	publishRange(t, ch, q, 0, 7)
	a, das := take(t, hiA, 2)
	b, dbs := take(t, hiB, 2)
	l, _ := take(t, low, 3)
	wantBodies(t, a, "0", "2")
	wantBodies(t, b, "1", "3")
	wantBodies(t, l, "4", "5", "6")
	noRecv(t, low, 50*time.Millisecond)
	// Credit back: the high ones get the next messages again.
	das[1].Ack(true)
	dbs[1].Ack(true)
	publishRange(t, ch, q, 7, 9)
	a, _ = take(t, hiA, 1)
	b, _ = take(t, hiB, 1)
	if got := a[0] + b[0]; got != "78" && got != "87" {
		t.Fatalf("high consumers got %q and %q", a, b)
	}
	noRecv(t, low, 50*time.Millisecond)

	ch2 := channel091(t, c)
	_, err := ch2.Consume(q, "bad", false, false, false, false, amqp091.Table{"x-priority": "high"})
	wantAMQPError(t, err, 406, fmt.Sprintf("PRECONDITION_FAILED - invalid arg 'x-priority' for queue '%s' in vhost '/': \"expected integer, got longstr\"", q))
}

// x-single-active-consumer: only one consumer gets messages, the first
// registered, whatever the priorities of later ones; when it goes, the
// consumer of the highest priority (then the earliest) takes over, with
// the requeued messages.
func TestSingleActiveConsumer(t *testing.T) { forTargets(t, testSingleActiveConsumer) }

func testSingleActiveConsumer(t *testing.T, url string) {
	c := dial(t, url)
	ch := channel091(t, c)
	q := uniq("sac")
	dropQueues(t, url, q)
	declare(t, ch, q, amqp091.Table{"x-single-active-consumer": true})
	chA, a := consumeOn(t, c, q, "A", 0, nil)
	_, b := consumeOn(t, c, q, "B", 0, nil)
	chC, cc := consumeOn(t, c, q, "C", 0, int32(5))
	_, d := consumeOn(t, c, q, "D", 0, int32(5))
	if qi, err := ch.QueueDeclarePassive(q, false, true, false, false, nil); err != nil || qi.Consumers != 4 {
		t.Fatalf("queue %+v %v", qi, err)
	}
	publishRange(t, ch, q, 0, 3)
	got, _ := take(t, a, 3)
	wantBodies(t, got, "0", "1", "2")
	noRecv(t, cc, 50*time.Millisecond)

	chA.Close() // requeues 0-2 to C: highest priority, registered before D
	got, _ = take(t, cc, 3)
	wantBodies(t, got, "0*", "1*", "2*")
	publishRange(t, ch, q, 3, 4)
	got, _ = take(t, cc, 1)
	wantBodies(t, got, "3")

	if err := chC.Cancel("C", false); err != nil { // D takes over; C's unacked stay on its channel
		t.Fatal(err)
	}
	publishRange(t, ch, q, 4, 5)
	got, _ = take(t, d, 1)
	wantBodies(t, got, "4")
	chC.Nack(0, true, true) // C's channel requeues 0-3: to D
	got, _ = take(t, d, 4)
	wantBodies(t, got, "0*", "1*", "2*", "3*")
	noRecv(t, b, 50*time.Millisecond)

	ch2 := channel091(t, c)
	_, err := ch2.Consume(q, "X", false, true, false, false, nil)
	wantAMQPError(t, err, 403, fmt.Sprintf("ACCESS_REFUSED - queue '%s' in vhost '/' in exclusive use", q))
}
