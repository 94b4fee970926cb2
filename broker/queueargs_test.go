package broker

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"substrate/broker/amqp"
)

// TestQueueArgsMatchRabbitMQ declares queues with valid and invalid
// x-arguments (dead-lettering, overflow, priorities, single active
// consumer, queue types and the arguments only one type takes) and
// compares every reply with testdata/queue-args.golden, recorded from
// RabbitMQ 3.10.8 with
//
//	PROBE_ADDR=127.0.0.1:5672 go test -run TestQueueArgsMatchRabbitMQ ./broker/ -update
func TestQueueArgsMatchRabbitMQ(t *testing.T) {
	addr := os.Getenv("PROBE_ADDR")
	if addr == "" {
		addr = addrOf(startServer(t))
	}
	cases := []amqp.Table{
		{"x-dead-letter-exchange": int32(5)},
		{"x-dead-letter-exchange": int32(5), "x-message-ttl": int32(-1)},
		{"x-dead-letter-routing-key": "k"},
		{"x-dead-letter-routing-key": "k", "x-max-priority": int32(300)},
		{"x-message-ttl": int32(-1), "x-dead-letter-routing-key": "k"},
		{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": int32(1)},
		{"x-dead-letter-exchange": "nosuchx"},
		{"x-overflow": "bogus"},
		{"x-overflow": int32(1)},
		{"x-overflow": "drop-head"},
		{"x-overflow": "reject-publish"},
		{"x-overflow": "reject-publish-dlx"},
		{"x-max-length-bytes": int32(-1)},
		{"x-max-length": "a"},
		{"x-max-priority": int32(255)},
		{"x-max-priority": int32(256)},
		{"x-max-priority": int32(0)},
		{"x-max-priority": int32(-1)},
		{"x-max-priority": "x"},
		{"x-max-priority": int32(300), "x-overflow": "bogus"},
		{"x-single-active-consumer": true},
		{"x-single-active-consumer": "yes"},
		{"x-single-active-consumer": int32(1)},
		{"x-queue-type": "classic"},
		{"x-queue-type": "bogus"},
		{"x-queue-type": int32(3)},
		{"x-delivery-limit": int32(3)},
		{"x-delivery-limit": "3"},
		{"x-delivery-limit": int32(3), "x-overflow": "bogus"},
		{"x-max-age": "1D"},
		{"x-quorum-initial-group-size": int32(3)},
		{"x-initial-cluster-size": int32(3)},
		{"x-queue-leader-locator": "balanced"},
		{"x-stream-max-segment-size-bytes": int32(3)},
		{"x-max-in-memory-length": int32(3)},
		{"x-dead-letter-strategy": "at-most-once"},
		{"x-queue-master-locator": "min-masters"},
		{"x-queue-version": int32(3)},
		{"x-queue-version": int32(2)},
		{"x-queue-mode": "bogus"},
		{"x-queue-mode": int32(1)},
		{"x-queue-mode": "lazy"},
		{"x-unknown-arg": "anything"},
		{"x-queue-type": "quorum", "x-max-priority": int32(5)},
		{"x-queue-type": "quorum", "x-max-priority": int32(300)},
		{"x-queue-type": "quorum", "x-overflow": "reject-publish-dlx"},
		{"x-queue-type": "quorum", "x-overflow": "drop-head"},
		{"x-queue-type": "quorum", "x-overflow": "bogus"},
		{"x-queue-type": "quorum", "x-message-ttl": int32(5)},
		{"x-queue-type": "quorum", "x-delivery-limit": int32(-1)},
		{"x-queue-type": "quorum", "x-delivery-limit": int32(3)},
		{"x-queue-type": "quorum", "x-max-length-bytes": int32(100)},
		{"x-queue-type": "quorum", "x-single-active-consumer": true},
		{"x-queue-type": "quorum", "x-expires": int32(1000)},
		{"x-queue-type": "quorum", "x-queue-mode": "lazy"},
		{"x-queue-type": "quorum", "x-queue-version": int32(2)},
		{"x-queue-type": "quorum", "x-queue-master-locator": "min-masters"},
		{"x-queue-type": "quorum", "x-max-age": "1D"},
		{"x-queue-type": "quorum", "x-quorum-initial-group-size": int32(0)},
		{"x-queue-type": "quorum", "x-quorum-initial-group-size": int32(1)},
		{"x-queue-type": "quorum", "x-dead-letter-strategy": "at-least-once"},
		{"x-queue-type": "quorum", "x-dead-letter-strategy": "bogus"},
	}
	var out strings.Builder
	r := rawOpen(t, addr)
	for i, a := range cases {
		name := fmt.Sprintf("zzargs%d", i)
		r.send(1, &amqp.QueueDeclare{Queue: name, Durable: a["x-queue-type"] == "quorum", Arguments: a})
		_, m := r.method()
		fmt.Fprintf(&out, "%-3d %v => %s %+v\n", i, a, m.Name(), m)
		if _, ok := m.(*amqp.QueueDeclareOk); ok {
			r.send(1, &amqp.QueueDelete{Queue: name})
			expect[*amqp.QueueDeleteOk](r, 1)
		} else {
			r.send(1, &amqp.ChannelCloseOk{})
			r.send(1, &amqp.ChannelOpen{})
			expect[*amqp.ChannelOpenOk](r, 1)
		}
	}
	compareGolden(t, "testdata/queue-args.golden", out.String())
}

// A new queue's dead-letter exchange needs read access to the queue and
// write access to the exchange, as in RabbitMQ (rabbit_channel:check_dlx).
func TestDeadLetterExchangePermission(t *testing.T) {
	s := startServer(t)
	ctx := context.Background()
	must(t, s.AddUser(ctx, "u", "pw"))
	must(t, s.SetPermissions(ctx, Permission{User: "u", VHost: "/", Configure: "^u\\.", Write: "^u\\.", Read: "^u\\.w"}))
	c := dial(t, "amqp://u:pw@"+addrOf(s)+"/")
	for _, tc := range []struct{ queue, dlx, text string }{
		{"u.r", "u.x", "ACCESS_REFUSED - access to queue 'u.r' in vhost '/' refused for user 'u'"},
		{"u.w", "other", "ACCESS_REFUSED - access to exchange 'other' in vhost '/' refused for user 'u'"},
		{"u.w", "", "ACCESS_REFUSED - access to exchange 'amq.default' in vhost '/' refused for user 'u'"},
	} {
		ch := channel091(t, c)
		_, err := ch.QueueDeclare(tc.queue, false, true, false, false, amqp091.Table{"x-dead-letter-exchange": tc.dlx})
		wantAMQPError(t, err, 403, tc.text)
	}
	ch := channel091(t, c)
	if _, err := ch.QueueDeclare("u.w", false, true, false, false, amqp091.Table{"x-dead-letter-exchange": "u.x"}); err != nil {
		t.Fatal(err)
	}
}
