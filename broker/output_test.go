package broker

import (
	"encoding/binary"
	"testing"
	"time"

	"substrate/broker/amqp"
)

// TestOutputInOrderThroughStalls: deliveries a publisher's reader writes
// inline (conn.writeNow), that a full socket sends on to a writer, that
// pass a chunk (outbound.reserve) and that wait in the queue while the
// consumer's output is over its soft limit all arrive complete and in
// order, once, when the consumer reads at last.
func TestOutputInOrderThroughStalls(t *testing.T) {
	s := startServer(t)
	cons := rawOpen(t, addrOf(s))
	cons.fr.SetFrameMax(131072) // the broker's frame_max
	cons.send(1, &amqp.QueueDeclare{Queue: "ord"})
	expect[*amqp.QueueDeclareOk](cons, 1)
	cons.send(1, &amqp.BasicConsume{Queue: "ord", ConsumerTag: "c", NoAck: true})
	expect[*amqp.BasicConsumeOk](cons, 1)

	pub := rawOpen(t, addrOf(s))
	pub.send(1, &amqp.ConfirmSelect{})
	expect[*amqp.ConfirmSelectOk](pub, 1)
	const n = 1200
	size := func(i int) int { return 8 + (i*7919)%20000 } // 8 B to 20 KB, about 12 MB in all
	for i := 0; i < n; i++ {
		body := make([]byte, size(i))
		binary.BigEndian.PutUint64(body, uint64(i))
		pub.publish(1, &amqp.BasicPublish{RoutingKey: "ord"}, &amqp.Properties{}, body, 131072)
	}
	// Every publish is routed once its confirm comes; the consumer has
	// read nothing yet, so its output is full and the rest waits.
	pub.ackedTo(n)
	eventually(t, 5*time.Second, func() bool {
		for _, q := range s.Queues("/") {
			if q.Name == "ord" {
				return q.MessagesReady > 0
			}
		}
		return false
	}, "messages waiting in the queue behind the stalled consumer")
	for i := 0; i < n; i++ {
		d := expect[*amqp.BasicDeliver](cons, 1)
		if d.DeliveryTag != uint64(i+1) {
			t.Fatalf("delivery %d has tag %d", i, d.DeliveryTag)
		}
		_, body := cons.content()
		if len(body) != size(i) || binary.BigEndian.Uint64(body) != uint64(i) {
			t.Fatalf("delivery %d: %d bytes, sequence %d; want %d bytes, sequence %d",
				i, len(body), binary.BigEndian.Uint64(body), size(i), i)
		}
	}
}
