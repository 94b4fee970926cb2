package broker

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"substrate/broker/amqp"
)

func TestQueueDeclare(t *testing.T) { forTargets(t, testQueueDeclare) }

func testQueueDeclare(t *testing.T, url string) {
	c := dial(t, url)
	ch := channel091(t, c)
	// Server-named.
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	must(t, err)
	if !strings.HasPrefix(q.Name, "amq.gen-") || len(q.Name) != len("amq.gen-")+22 {
		t.Fatalf("server-named queue %q", q.Name)
	}
	// Names with @ and dots, over 127 bytes, any UTF-8.
	long := uniq("cinder-volume.host@backend") + strings.Repeat("é", 100)
	dropQueues(t, url, long)
	_, err = ch.QueueDeclare(long, false, true, false, false, nil)
	must(t, err)
	// Counts.
	name := uniq("qd")
	dropQueues(t, url, name)
	_, err = ch.QueueDeclare(name, false, false, false, false, amqp091.Table{"x-expires": int32(600000), "x-ha-policy": "all"})
	must(t, err)
	must(t, ch.Publish("", name, false, false, amqp091.Publishing{Body: []byte("a")}))
	must(t, ch.Publish("", name, false, false, amqp091.Publishing{Body: []byte("b")}))
	eventually(t, 2*time.Second, func() bool {
		q, err := ch.QueueDeclarePassive(name, false, false, false, false, nil)
		return err == nil && q.Messages == 2 && q.Consumers == 0
	}, "2 messages")
	// Unknown x- args are not compared; x-queue-type classic equals absent.
	_, err = ch.QueueDeclare(name, false, false, false, false, amqp091.Table{"x-expires": int32(600000), "x-foo": "bar", "x-queue-type": "classic"})
	must(t, err)
	// Integers compare by value whatever their width.
	_, err = ch.QueueDeclare(name, false, false, false, false, amqp091.Table{"x-expires": int64(600000)})
	must(t, err)
	try := func(f func(ch *amqp091.Channel) error, code int, text string) {
		t.Helper()
		wantAMQPError(t, f(channel091(t, c)), code, text)
	}
	pre := "PRECONDITION_FAILED - inequivalent arg "
	rs := "for queue '" + name + "' in vhost '/': "
	try(func(ch *amqp091.Channel) error {
		_, err := ch.QueueDeclare(name, true, false, false, false, amqp091.Table{"x-expires": int32(600000)})
		return err
	}, 406, pre+"'durable' "+rs+"received 'true' but current is 'false'")
	try(func(ch *amqp091.Channel) error {
		_, err := ch.QueueDeclare(name, false, true, false, false, amqp091.Table{"x-expires": int32(600000)})
		return err
	}, 406, pre+"'auto_delete' "+rs+"received 'true' but current is 'false'")
	try(func(ch *amqp091.Channel) error {
		_, err := ch.QueueDeclare(name, false, false, false, false, nil)
		return err
	}, 406, pre+"'x-expires' "+rs+"received none but current is the value '600000' of type 'signedint'")
	try(func(ch *amqp091.Channel) error {
		_, err := ch.QueueDeclare(name, false, false, false, false, amqp091.Table{"x-expires": int32(600000), "x-message-ttl": int32(1000)})
		return err
	}, 406, pre+"'x-message-ttl' "+rs+"received the value '1000' of type 'signedint' but current is none")
	try(func(ch *amqp091.Channel) error {
		_, err := ch.QueueDeclare(name, false, false, false, false, amqp091.Table{"x-expires": int32(1000)})
		return err
	}, 406, pre+"'x-expires' "+rs+"received '1000' but current is '600000'")
	// Passive ignores flags and args.
	_, err = channel091(t, c).QueueDeclarePassive(name, true, true, false, false, amqp091.Table{"x-message-ttl": int32(5)})
	must(t, err)
	try(func(ch *amqp091.Channel) error {
		_, err := ch.QueueDeclarePassive("no"+name, false, false, false, false, nil)
		return err
	}, 404, "NOT_FOUND - no queue 'no"+name+"' in vhost '/'")
	try(func(ch *amqp091.Channel) error {
		_, err := ch.QueueDeclare("amq.x"+name, false, false, false, false, nil)
		return err
	}, 403, "ACCESS_REFUSED - queue name 'amq.x"+name+"' contains reserved prefix 'amq.*'")
	try(func(ch *amqp091.Channel) error { return ch.QueueBind(name, "k", "no"+name, false, nil) },
		404, "NOT_FOUND - no exchange 'no"+name+"' in vhost '/'")
	try(func(ch *amqp091.Channel) error { return ch.QueueBind("no"+name, "k", "amq.direct", false, nil) },
		404, "NOT_FOUND - no queue 'no"+name+"' in vhost '/'")
	// Quorum constraints.
	try(func(ch *amqp091.Channel) error {
		_, err := ch.QueueDeclare(uniq("qq"), false, false, false, false, amqp091.Table{"x-queue-type": "quorum"})
		return err
	}, 406, "")
}

func TestQueueExclusive(t *testing.T) { forTargets(t, testQueueExclusive) }

func testQueueExclusive(t *testing.T, url string) {
	c1, c2 := dial(t, url), dial(t, url)
	ch1 := channel091(t, c1)
	name := uniq("excl")
	dropQueues(t, url, name)
	_, err := ch1.QueueDeclare(name, false, false, true, false, nil)
	must(t, err)
	locked := "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '" + name + "' in vhost '/'. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration."
	_, err = channel091(t, c2).QueueDeclare(name, false, false, true, false, nil)
	wantAMQPError(t, err, 405, locked)
	_, err = channel091(t, c2).Consume(name, "", false, false, false, false, nil)
	wantAMQPError(t, err, 405, locked)
	_, err = channel091(t, c2).QueueDeclarePassive(name, false, false, true, false, nil)
	wantAMQPError(t, err, 405, locked)
	// The owner may use it from another channel.
	_, err = channel091(t, c1).Consume(name, "", false, false, false, false, nil)
	must(t, err)
	// Deleted when the owner connection closes.
	c1.Close()
	eventually(t, 2*time.Second, func() bool {
		_, err := channel091(t, c2).QueueDeclarePassive(name, false, false, false, false, nil)
		return err != nil && err.(*amqp091.Error).Code == 404
	}, "exclusive queue deleted")
}

func TestQueueDeleteAndPurge(t *testing.T) { forTargets(t, testQueueDeleteAndPurge) }

func testQueueDeleteAndPurge(t *testing.T, url string) {
	c := dial(t, url)
	ch := channel091(t, c)
	name := uniq("qdel")
	dropQueues(t, url, name, name+"2")
	_, err := ch.QueueDeclare(name, false, false, false, false, nil)
	must(t, err)
	for i := 0; i < 3; i++ {
		must(t, ch.Publish("", name, false, false, amqp091.Publishing{Body: []byte("x")}))
	}
	_, err = channel091(t, c).QueueDelete(name, false, true, false)
	wantAMQPError(t, err, 406, "PRECONDITION_FAILED - queue '"+name+"' in vhost '/' not empty")
	ch = channel091(t, c)
	n, err := ch.QueuePurge(name, false)
	must(t, err)
	if n != 3 {
		t.Fatalf("purged %d, want 3", n)
	}
	ch2 := channel091(t, c)
	_, err = ch2.Consume(name, "c", false, false, false, false, nil)
	must(t, err)
	_, err = ch.QueueDelete(name, true, false, false)
	wantAMQPError(t, err, 406, "PRECONDITION_FAILED - queue '"+name+"' in vhost '/' in use")
	ch = channel091(t, c)
	must(t, ch.Publish("", name, false, false, amqp091.Publishing{Body: []byte("x")}))
	ch3 := channel091(t, c)
	_, err = ch3.QueueDeclare(name+"2", false, false, false, false, nil)
	must(t, err)
	must(t, ch3.Publish("", name+"2", false, false, amqp091.Publishing{Body: []byte("x")}))
	must(t, ch3.Publish("", name+"2", false, false, amqp091.Publishing{Body: []byte("x")}))
	time.Sleep(50 * time.Millisecond)
	n, err = ch3.QueueDelete(name+"2", false, false, false)
	must(t, err)
	if n != 2 {
		t.Fatalf("delete-ok count %d, want 2", n)
	}
	// Deleting a missing queue is fine.
	_, err = ch3.QueueDelete(name+"2", false, false, false)
	must(t, err)
	_, err = ch.QueueDelete(name, false, false, false)
	must(t, err)
}

func TestQueueAutoDelete(t *testing.T) { forTargets(t, testQueueAutoDelete) }

func testQueueAutoDelete(t *testing.T, url string) {
	c := dial(t, url)
	ch := channel091(t, c)
	name := uniq("ad")
	dropQueues(t, url, name)
	_, err := ch.QueueDeclare(name, false, true, false, false, nil)
	must(t, err)
	// Not deleted before it had a consumer.
	time.Sleep(50 * time.Millisecond)
	_, err = ch.QueueDeclarePassive(name, false, true, false, false, nil)
	must(t, err)
	_, err = ch.Consume(name, "c1", false, false, false, false, nil)
	must(t, err)
	_, err = ch.Consume(name, "c2", false, false, false, false, nil)
	must(t, err)
	must(t, ch.Cancel("c1", false))
	_, err = ch.QueueDeclarePassive(name, false, true, false, false, nil)
	must(t, err)
	must(t, ch.Cancel("c2", false))
	eventually(t, 2*time.Second, func() bool {
		_, err := channel091(t, c).QueueDeclarePassive(name, false, true, false, false, nil)
		return err != nil
	}, "auto-delete queue deleted after its last consumer")
}

func TestQueueExpires(t *testing.T) { forTargets(t, testQueueExpires) }

func testQueueExpires(t *testing.T, url string) {
	c := dial(t, url)
	ch := channel091(t, c)
	name := uniq("exp")
	dropQueues(t, url, name)
	args := amqp091.Table{"x-expires": int32(300)}
	_, err := ch.QueueDeclare(name, false, false, false, false, args)
	must(t, err)
	// A consumer keeps it alive.
	_, err = ch.Consume(name, "c", false, false, false, false, nil)
	must(t, err)
	time.Sleep(500 * time.Millisecond)
	_, err = ch.QueueDeclarePassive(name, false, false, false, false, nil)
	must(t, err)
	must(t, ch.Cancel("c", false))
	// Redeclares and gets count as use.
	for i := 0; i < 3; i++ {
		time.Sleep(200 * time.Millisecond)
		_, err = ch.QueueDeclare(name, false, false, false, false, args)
		must(t, err)
	}
	for i := 0; i < 2; i++ {
		time.Sleep(200 * time.Millisecond)
		_, _, err = ch.Get(name, true)
		must(t, err)
	}
	time.Sleep(700 * time.Millisecond)
	_, err = ch.QueueDeclarePassive(name, false, false, false, false, nil)
	wantAMQPError(t, err, 404, "NOT_FOUND - no queue '"+name+"' in vhost '/'")
}

func TestMessageTTL(t *testing.T) { forTargets(t, testMessageTTL) }

func testMessageTTL(t *testing.T, url string) {
	c := dial(t, url)
	ch := channel091(t, c)
	name, name2 := uniq("ttl"), uniq("ttl2")
	dropQueues(t, url, name, name2)
	_, err := ch.QueueDeclare(name, false, true, false, false, amqp091.Table{"x-message-ttl": int32(200)})
	must(t, err)
	must(t, ch.Publish("", name, false, false, amqp091.Publishing{Body: []byte("queue-ttl")}))
	must(t, ch.Publish("", name, false, false, amqp091.Publishing{Body: []byte("msg-ttl"), Expiration: "100"}))
	_, err = ch.QueueDeclare(name2, false, true, false, false, nil)
	must(t, err)
	must(t, ch.Publish("", name2, false, false, amqp091.Publishing{Body: []byte("short"), Expiration: "100"}))
	must(t, ch.Publish("", name2, false, false, amqp091.Publishing{Body: []byte("long"), Expiration: "60000"}))
	must(t, ch.Publish("", name2, false, false, amqp091.Publishing{Body: []byte("zero"), Expiration: "0"}))
	time.Sleep(400 * time.Millisecond)
	q, err := ch.QueueDeclarePassive(name, false, true, false, false, nil)
	must(t, err)
	if q.Messages != 0 {
		t.Fatalf("%d messages left after their TTL", q.Messages)
	}
	m, ok, err := ch.Get(name2, true)
	must(t, err)
	if !ok || string(m.Body) != "long" || m.Expiration != "60000" {
		t.Fatalf("got %q %v (expiration %q), want only 'long'", m.Body, ok, m.Expiration)
	}
	if _, ok, _ := ch.Get(name2, true); ok {
		t.Fatal("an expired message was delivered")
	}
	// TTL 0 is delivered when a consumer can take it at once.
	dl, err := ch.Consume(name2, "", true, false, false, false, nil)
	must(t, err)
	must(t, ch.Publish("", name2, false, false, amqp091.Publishing{Body: []byte("now"), Expiration: "0"}))
	if d := recvTimeout(t, dl, 2*time.Second); string(d.Body) != "now" {
		t.Fatalf("got %q", d.Body)
	}
}

func TestQueueAdminInfo(t *testing.T) {
	s := startServer(t)
	c := dial(t, urlOf(s))
	ch := channel091(t, c)
	_, err := ch.QueueDeclare("info", true, false, false, false, amqp091.Table{"x-expires": int32(100000)})
	must(t, err)
	must(t, ch.Publish("", "info", false, false, amqp091.Publishing{Body: []byte("1")}))
	must(t, ch.Publish("", "info", false, false, amqp091.Publishing{Body: []byte("2")}))
	_, ok, err := ch.Get("info", false)
	must(t, err)
	if !ok {
		t.Fatal("empty")
	}
	ch2 := channel091(t, c)
	_, err = ch2.Consume("info", "", false, false, false, false, nil)
	must(t, err)
	var qi QueueInfo
	eventually(t, 2*time.Second, func() bool {
		for _, q := range s.Queues("/") {
			if q.Name == "info" {
				qi = q
			}
		}
		return qi.MessagesUnacknowledged == 2
	}, "2 unacked")
	if !qi.Durable || qi.Messages != 2 || qi.MessagesReady != 0 || qi.Consumers != 1 || qi.Arguments["x-expires"] != int32(100000) {
		t.Fatalf("info %+v", qi)
	}
	must(t, ch.QueueBind("info", "k", "amq.topic", false, nil))
	found := false
	for _, b := range s.Bindings("/") {
		if b.Source == "amq.topic" && b.Destination == "info" && b.DestinationType == "queue" && b.RoutingKey == "k" {
			found = true
		}
	}
	if !found {
		t.Fatalf("bindings %+v", s.Bindings("/"))
	}
}

func TestDurableDefinitionsPersist(t *testing.T) {
	defs := NewMemDefinitions()
	s := startServer(t, func(c *Config) { c.Definitions = defs })
	c := dial(t, urlOf(s))
	ch := channel091(t, c)
	must(t, ch.ExchangeDeclare("nova", "topic", true, false, false, false, nil))
	must(t, ch.ExchangeDeclare("transient", "topic", false, false, false, false, nil))
	_, err := ch.QueueDeclare("notifications.info", true, false, false, false, amqp091.Table{"x-max-length": int32(10)})
	must(t, err)
	_, err = ch.QueueDeclare("reply_x", false, false, false, false, nil)
	must(t, err)
	_, err = ch.QueueDeclare("durable-excl", true, false, true, false, nil)
	must(t, err)
	must(t, ch.QueueBind("notifications.info", "notifications.info", "nova", false, nil))
	must(t, ch.QueueBind("reply_x", "r", "nova", false, nil))
	must(t, ch.QueueBind("notifications.info", "t", "transient", false, nil))
	set, _ := defs.Load(context.Background())
	if len(set.Exchanges) != 1 || set.Exchanges[0].Name != "nova" || len(set.Queues) != 1 || set.Queues[0].Name != "notifications.info" ||
		len(set.Bindings) != 1 || set.Bindings[0].RoutingKey != "notifications.info" {
		t.Fatalf("stored %+v", set)
	}
	c.Close()
	s.Shutdown(context.Background())

	// A new server on the same definitions has them back.
	s2 := startServer(t, func(c *Config) { c.Definitions = defs })
	c2 := dial(t, urlOf(s2))
	ch = channel091(t, c2)
	must(t, ch.ExchangeDeclarePassive("nova", "topic", true, false, false, false, nil))
	_, err = ch.QueueDeclare("notifications.info", true, false, false, false, amqp091.Table{"x-max-length": int32(10)})
	must(t, err)
	must(t, ch.Publish("nova", "notifications.info", false, false, amqp091.Publishing{Body: []byte("x")}))
	time.Sleep(50 * time.Millisecond)
	if _, ok, _ := ch.Get("notifications.info", true); !ok {
		t.Fatal("binding not restored")
	}
	// Deleting removes them from the store.
	_, err = ch.QueueDelete("notifications.info", false, false, false)
	must(t, err)
	must(t, ch.ExchangeDelete("nova", false, false))
	set, _ = defs.Load(context.Background())
	if len(set.Exchanges)+len(set.Queues)+len(set.Bindings) != 0 {
		t.Fatalf("left in the store: %+v", set)
	}
}

func TestMaxLength(t *testing.T) {
	s := startServer(t)
	r := rawOpen(t, addrOf(s))
	r.send(1, &amqp.QueueDeclare{Queue: "ml", Arguments: amqp.Table{"x-max-length": int32(2)}})
	expect[*amqp.QueueDeclareOk](r, 1)
	for _, b := range []string{"1", "2", "3"} {
		r.publish(1, &amqp.BasicPublish{RoutingKey: "ml"}, nil, []byte(b), 131072)
	}
	r.send(1, &amqp.BasicGet{Queue: "ml", NoAck: true})
	if ok := expect[*amqp.BasicGetOk](r, 1); ok.MessageCount != 1 {
		t.Fatalf("message count %d", ok.MessageCount)
	}
	if _, body := r.content(); string(body) != "2" {
		t.Fatalf("head %q, want 2 (drop-head)", body)
	}
}

// jsonDefinitions stores definitions as JSON, as the etcd store does, so
// argument types go through a JSON round trip.
type jsonDefinitions struct{ *MemDefinitions }

func (j jsonDefinitions) PutQueue(ctx context.Context, q QueueDef) error {
	b, _ := json.Marshal(q)
	var back QueueDef
	json.Unmarshal(b, &back)
	return j.MemDefinitions.PutQueue(ctx, back)
}

func TestDurableArgsSurviveJSON(t *testing.T) {
	defs := jsonDefinitions{NewMemDefinitions()}
	s := startServer(t, func(c *Config) { c.Definitions = defs })
	ch := channel091(t, dial(t, urlOf(s)))
	args := amqp091.Table{"x-expires": int32(1800000), "x-message-ttl": int32(60000)}
	_, err := ch.QueueDeclare("dq", true, false, false, false, args)
	must(t, err)
	s.Shutdown(context.Background())
	s2 := startServer(t, func(c *Config) { c.Definitions = defs })
	ch = channel091(t, dial(t, urlOf(s2)))
	_, err = ch.QueueDeclare("dq", true, false, false, false, args)
	must(t, err) // still equivalent after the JSON round trip
}
