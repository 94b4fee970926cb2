package broker

import (
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
)

type prioMsg struct {
	body string
	prio int // -1: no priority property
}

func publishPrio(t *testing.T, ch *amqp091.Channel, q string, ms ...prioMsg) {
	t.Helper()
	for _, m := range ms {
		p := amqp091.Publishing{Body: []byte(m.body)}
		if m.prio >= 0 {
			p.Priority = uint8(m.prio)
		}
		publishTo(t, ch, "", q, p)
	}
}

// x-max-priority: higher priorities first, FIFO within one, priorities
// above the maximum count as the maximum, no property as 0; the message
// keeps its priority property.
func TestPriorityOrder(t *testing.T) { forTargets(t, testPriorityOrder) }

func testPriorityOrder(t *testing.T, url string) {
	c := dial(t, url)
	ch := channel091(t, c)
	q := uniq("prio")
	dropQueues(t, url, q)
	declare(t, ch, q, amqp091.Table{"x-max-priority": int32(5)})
	publishPrio(t, ch, q, prioMsg{"a", -1}, prioMsg{"b", 1}, prioMsg{"c", 5}, prioMsg{"d", 9}, prioMsg{"e", 3},
		prioMsg{"f", 5}, prioMsg{"g", 0}, prioMsg{"h", 1})
	d, _, _ := ch.Get(q, true)
	if string(d.Body) != "c" || d.Priority != 5 {
		t.Fatalf("got %q priority %d", d.Body, d.Priority)
	}
	d, _, _ = ch.Get(q, true)
	if string(d.Body) != "d" || d.Priority != 9 {
		t.Fatalf("got %q priority %d", d.Body, d.Priority)
	}
	wantBodies(t, bodies(t, ch, q), "f", "e", "b", "h", "a", "g")

	// A consumer gets the backlog in priority order.
	publishPrio(t, ch, q, prioMsg{"low", 1}, prioMsg{"high", 4}, prioMsg{"mid", 2})
	ds, err := ch.Consume(q, "", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"high", "mid", "low"} {
		if d := recvTimeout(t, ds, 5*time.Second); string(d.Body) != want {
			t.Fatalf("got %q, want %q", d.Body, want)
		}
	}
}

// Requeued messages go back to the head of their priority, in order,
// ahead of that priority's other messages and behind higher ones.
func TestPriorityRequeue(t *testing.T) { forTargets(t, testPriorityRequeue) }

func testPriorityRequeue(t *testing.T, url string) {
	c := dial(t, url)
	ch := channel091(t, c)
	q := uniq("prio")
	dropQueues(t, url, q)
	declare(t, ch, q, amqp091.Table{"x-max-priority": int32(10)})
	publishPrio(t, ch, q, prioMsg{"a1", 2}, prioMsg{"a2", 2}, prioMsg{"b1", 7})
	b1, _, _ := ch.Get(q, false)
	a1, _, _ := ch.Get(q, false)
	if string(b1.Body) != "b1" || string(a1.Body) != "a1" {
		t.Fatalf("got %q %q", b1.Body, a1.Body)
	}
	publishPrio(t, ch, q, prioMsg{"a3", 2}, prioMsg{"b2", 7})
	if err := a1.Nack(true, true); err != nil { // both, requeued
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	var got []string
	for {
		d, ok, _ := ch.Get(q, true)
		if !ok {
			break
		}
		got = append(got, string(d.Body))
		if (string(d.Body) == "a1" || string(d.Body) == "b1") != d.Redelivered {
			t.Fatalf("%q redelivered=%v", d.Body, d.Redelivered)
		}
	}
	wantBodies(t, got, "b1", "b2", "a1", "a2", "a3")
}

// With x-max-length drop-head, a priority queue drops the head: the
// oldest message of the highest priority (rabbit_priority_queue:drop).
func TestPriorityMaxLength(t *testing.T) { forTargets(t, testPriorityMaxLength) }

func testPriorityMaxLength(t *testing.T, url string) {
	c := dial(t, url)
	ch := channel091(t, c)
	q := uniq("prio")
	dropQueues(t, url, q)
	declare(t, ch, q, amqp091.Table{"x-max-priority": int32(5), "x-max-length": int32(2)})
	publishPrio(t, ch, q, prioMsg{"x", 1}, prioMsg{"y", 5}, prioMsg{"z", 3})
	wantBodies(t, bodies(t, ch, q), "z", "x")
}

// Expiry looks at the head only, as in RabbitMQ: an expired message
// behind a live one of a higher priority stays (and counts) until it is
// at the head, then goes (dead-lettered, reason expired).
func TestPriorityExpiry(t *testing.T) { forTargets(t, testPriorityExpiry) }

func testPriorityExpiry(t *testing.T, url string) {
	c := dial(t, url)
	ch := channel091(t, c)
	q, dst := uniq("prio"), uniq("prio.dl")
	dropQueues(t, url, q, dst)
	declare(t, ch, dst, nil)
	declare(t, ch, q, amqp091.Table{"x-max-priority": int32(5), "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dst})
	publishTo(t, ch, "", q, amqp091.Publishing{Body: []byte("old"), Priority: 1, Expiration: "20"})
	publishTo(t, ch, "", q, amqp091.Publishing{Body: []byte("new"), Priority: 4})
	time.Sleep(100 * time.Millisecond)
	if qi, err := ch.QueueDeclarePassive(q, false, true, false, false, nil); err != nil || qi.Messages != 2 {
		t.Fatalf("queue: %+v %v", qi, err)
	}
	wantEmpty(t, ch, dst)
	if d, _, _ := ch.Get(q, true); string(d.Body) != "new" {
		t.Fatalf("got %q", d.Body)
	}
	d := getWait(t, ch, dst)
	if string(d.Body) != "old" || d.Priority != 1 {
		t.Fatalf("got %q priority %d", d.Body, d.Priority)
	}
	wantEmpty(t, ch, q)
}
