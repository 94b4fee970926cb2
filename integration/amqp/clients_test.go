package amqpit

import (
	"strconv"
	"testing"
	"time"
)

func TestKombuDirectExchange(t *testing.T) {
	t.Parallel()
	needPython(t, "kombu")
	forEachTarget(t, func(t *testing.T, tg *target) {
		runPy(t, tg, 60*time.Second, "kombu_basic.py")
	})
}

// TestPikaBlocking: publisher confirms, returns, get, consume, qos, nack,
// reject and a 1 MiB body through pika 1.2's BlockingConnection.
// RabbitMQ sends basic.return (312 NO_ROUTE) and then basic.ack for a
// mandatory unroutable publish; pika raises UnroutableError from the
// confirm wait (and logs a WARNING "Published message was returned").
func TestPikaBlocking(t *testing.T) {
	t.Parallel()
	needPython(t, "pika")
	forEachTarget(t, func(t *testing.T, tg *target) {
		runPy(t, tg, 60*time.Second, "pika_basic.py")
	})
}

const heartbeat = 2 // seconds; the brokers propose 60

// TestHeartbeatKombu: heartbeat=2 is negotiated (min of client and broker),
// and an idle connection that only exchanges heartbeats stays up for 4
// intervals, then still works. RabbitMQ sent a heartbeat every second.
func TestHeartbeatKombu(t *testing.T) {
	t.Parallel()
	needPython(t, "kombu")
	forEachTarget(t, func(t *testing.T, tg *target) {
		r := runPy(t, tg, 60*time.Second, "heartbeat.py", "kombu", strconv.Itoa(heartbeat), "8")
		if n := r.float(t, "negotiated"); n != heartbeat {
			t.Errorf("negotiated heartbeat %v, want %d", n, heartbeat)
		}
		if f := r.float(t, "frames_while_idle"); f < 3 {
			t.Errorf("%v frames from the broker in 8s idle with heartbeat %d", f, heartbeat)
		}
	})
}

func TestHeartbeatPika(t *testing.T) {
	t.Parallel()
	needPython(t, "pika")
	forEachTarget(t, func(t *testing.T, tg *target) {
		r := runPy(t, tg, 60*time.Second, "heartbeat.py", "pika", strconv.Itoa(heartbeat), "8")
		if n := r.float(t, "negotiated"); n != heartbeat {
			t.Errorf("negotiated heartbeat %v, want %d", n, heartbeat)
		}
		if f := r.float(t, "heartbeats_received"); f < 3 {
			t.Errorf("%v heartbeats from the broker in 8s idle with heartbeat %d", f, heartbeat)
		}
	})
}

// TestHeartbeatSilentClient: a client that negotiates heartbeat=2 and then
// sends nothing is disconnected after a few intervals, never after one.
// RabbitMQ 3.10.8 closed the socket after 6.0s (3 intervals) with no
// connection.close frame, having sent a heartbeat frame every second until
// then (amqp-openstack.md §1.4: check every interval, give up after two
// empty checks).
func TestHeartbeatSilentClient(t *testing.T) {
	t.Parallel()
	needPython(t, "amqp")
	forEachTarget(t, func(t *testing.T, tg *target) {
		r := runPy(t, tg, 60*time.Second, "heartbeat.py", "silent", strconv.Itoa(heartbeat))
		if s := r.float(t, "closed_after_s"); s < 1.5*heartbeat || s > 4.5*heartbeat {
			t.Errorf("broker closed a silent connection after %.2fs, want 2-3 intervals of %ds", s, heartbeat)
		}
		if b := r.float(t, "bytes_before_close"); b < 8 {
			t.Errorf("broker sent %v bytes (no heartbeat frame) before closing", b)
		}
	})
}
