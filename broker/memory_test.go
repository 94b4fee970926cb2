package broker

import (
	"sync/atomic"
	"testing"
	"time"

	"substrate/broker/amqp"
)

// TestMemoryAlarmBlocksPublishers drives the alarm with a fake memory
// reading: a publisher gets connection.blocked after the content header
// of its next publish and is not read until the alarm clears; a consumer
// on another connection goes on meanwhile.
func TestMemoryAlarmBlocksPublishers(t *testing.T) {
	var used atomic.Uint64
	s := startServer(t, func(c *Config) {
		c.MemoryHighWatermark = 1000
		c.memUsage = used.Load
	})
	r := rawDial(t, addrOf(s))
	r.handshake(rawOpts{caps: amqp.Table{"connection.blocked": true}})
	r.send(1, &amqp.ChannelOpen{})
	expect[*amqp.ChannelOpenOk](r, 1)
	r.send(1, &amqp.QueueDeclare{Queue: "q"})
	expect[*amqp.QueueDeclareOk](r, 1)

	other := channel091(t, dial(t, urlOf(s)))
	ready := func() int {
		q, err := other.QueueDeclarePassive("q", false, false, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		return q.Messages
	}

	pub := &amqp.BasicPublish{RoutingKey: "q"}
	r.publish(1, pub, &amqp.Properties{}, []byte("first"), 4096)
	eventually(t, 2*time.Second, func() bool { return ready() == 1 }, "first publish")
	used.Store(2000)
	eventually(t, 2*time.Second, s.MemoryAlarm, "alarm on")
	r.publish(1, pub, &amqp.Properties{}, []byte("second"), 4096)
	blocked := expect[*amqp.ConnectionBlocked](r, 0)
	if blocked.Reason != "low on memory" {
		t.Fatalf("blocked reason %q", blocked.Reason)
	}
	time.Sleep(300 * time.Millisecond) // a negative check: nothing may arrive
	if n := ready(); n != 1 {
		t.Fatalf("%d messages while blocked, want 1: the second publish must wait", n)
	}
	// Consumers are not blocked.
	if d, ok, err := other.Get("q", true); err != nil || !ok || string(d.Body) != "first" {
		t.Fatalf("get while blocked: %v %v %q", ok, err, d.Body)
	}

	used.Store(10)
	expect[*amqp.ConnectionUnblocked](r, 0)
	eventually(t, 2*time.Second, func() bool { return ready() == 1 }, "second publish after unblock")
	if s.MemoryAlarm() {
		t.Fatal("alarm still on")
	}
}

// TestMemoryAlarmWithoutCapability: a client without the
// connection.blocked capability is blocked silently.
func TestMemoryAlarmWithoutCapability(t *testing.T) {
	var used atomic.Uint64
	s := startServer(t, func(c *Config) {
		c.MemoryHighWatermark = 1000
		c.memUsage = used.Load
	})
	r := rawOpen(t, addrOf(s))
	used.Store(2000)
	eventually(t, 2*time.Second, s.MemoryAlarm, "alarm on")
	r.publish(1, &amqp.BasicPublish{RoutingKey: "nowhere"}, &amqp.Properties{}, []byte("x"), 4096)
	r.send(1, &amqp.QueueDeclare{Queue: "after"})
	r.nc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if f, err := r.fr.ReadFrame(); err == nil {
		t.Fatalf("got a frame (type %d) while blocked", f.Type)
	}
	used.Store(10)
	r.fr = amqp.NewFrameReader(r.nc)
	expect[*amqp.QueueDeclareOk](r, 1)
}
