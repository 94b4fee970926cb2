package broker

import (
	"bytes"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"substrate/broker/amqp"
)

// getWait polls basic.get (no-ack) on q until a message comes.
func getWait(t *testing.T, ch *amqp091.Channel, q string) amqp091.Delivery {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		d, ok, err := ch.Get(q, true)
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

// wantEmpty checks that q holds no ready message.
func wantEmpty(t *testing.T, ch *amqp091.Channel, q string) {
	t.Helper()
	if d, ok, err := ch.Get(q, true); err != nil || ok {
		t.Fatalf("%s: got %v %q, want empty", q, err, d.Body)
	}
}

func declare(t *testing.T, ch *amqp091.Channel, name string, args amqp091.Table) {
	t.Helper()
	if _, err := ch.QueueDeclare(name, false, true, false, false, args); err != nil {
		t.Fatalf("declare %s: %v", name, err)
	}
}

func publishTo(t *testing.T, ch *amqp091.Channel, exchange, key string, p amqp091.Publishing) {
	t.Helper()
	if err := ch.Publish(exchange, key, false, false, p); err != nil {
		t.Fatal(err)
	}
}

// wantDeath checks one x-death record exactly: its fields, their AMQP
// types (count a long, time a timestamp) and nothing else.
func wantDeath(t *testing.T, got any, reason, queue, exchange string, keys []any, count int64, origExp string, t0 time.Time) {
	t.Helper()
	d, ok := got.(amqp091.Table)
	if !ok {
		t.Fatalf("x-death record is %T %v", got, got)
	}
	tm, ok := d["time"].(time.Time)
	if !ok || tm.Before(t0.Truncate(time.Second)) || tm.After(time.Now().Add(time.Second)) {
		t.Errorf("time = %#v, want a timestamp near %v", d["time"], t0)
	}
	want := amqp091.Table{"count": count, "reason": reason, "queue": queue, "exchange": exchange, "routing-keys": keys, "time": d["time"]}
	if origExp != "" {
		want["original-expiration"] = origExp
	}
	if !reflect.DeepEqual(d, want) {
		t.Fatalf("x-death record\n got %#v\nwant %#v", d, want)
	}
}

func wantFirstDeath(t *testing.T, h amqp091.Table, reason, queue, exchange string) {
	t.Helper()
	if h["x-first-death-reason"] != reason || h["x-first-death-queue"] != queue || h["x-first-death-exchange"] != exchange {
		t.Fatalf("x-first-death-* = %q %q %q, want %q %q %q", h["x-first-death-reason"], h["x-first-death-queue"],
			h["x-first-death-exchange"], reason, queue, exchange)
	}
}

// A rejected message (basic.reject and basic.nack, requeue=false) goes to
// the dead-letter exchange with x-dead-letter-routing-key; its headers
// keep the publisher's and gain x-death and x-first-death-*, and its
// expiration moves into the record as original-expiration.
func TestDeadLetterRejected(t *testing.T) { forTargets(t, testDeadLetterRejected) }

func testDeadLetterRejected(t *testing.T, url string) {
	c := dial(t, url)
	ch := channel091(t, c)
	src, dst := uniq("dl.src"), uniq("dl.dst")
	dropQueues(t, url, src, dst)
	declare(t, ch, dst, nil)
	declare(t, ch, src, amqp091.Table{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dst})
	t0 := time.Now()
	publishTo(t, ch, "", src, amqp091.Publishing{Body: []byte("one"), Expiration: "60000", MessageId: "m1",
		Headers: amqp091.Table{"app": "x", "n": int64(7)}})
	publishTo(t, ch, "", src, amqp091.Publishing{Body: []byte("two")})
	publishTo(t, ch, "", src, amqp091.Publishing{Body: []byte("three")})

	d1, _, _ := ch.Get(src, false)
	if err := d1.Reject(false); err != nil {
		t.Fatal(err)
	}
	got := getWait(t, ch, dst)
	if string(got.Body) != "one" || got.Exchange != "" || got.RoutingKey != dst || got.Expiration != "" || got.MessageId != "m1" || got.Redelivered {
		t.Fatalf("dead letter: body %q exchange %q key %q expiration %q id %q redelivered %v", got.Body, got.Exchange, got.RoutingKey, got.Expiration, got.MessageId, got.Redelivered)
	}
	if got.Headers["app"] != "x" || got.Headers["n"] != int64(7) || len(got.Headers) != 6 {
		t.Fatalf("headers %#v", got.Headers)
	}
	deaths, _ := got.Headers["x-death"].([]any)
	if len(deaths) != 1 {
		t.Fatalf("x-death %#v", got.Headers["x-death"])
	}
	wantDeath(t, deaths[0], "rejected", src, "", []any{src}, 1, "60000", t0)
	wantFirstDeath(t, got.Headers, "rejected", src, "")

	// basic.nack multiple, requeue=false: both, in order.
	ch.Get(src, false)
	d3, _, _ := ch.Get(src, false)
	if err := d3.Nack(true, false); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"two", "three"} {
		got := getWait(t, ch, dst)
		if string(got.Body) != want {
			t.Fatalf("got %q, want %q", got.Body, want)
		}
		deaths, _ := got.Headers["x-death"].([]any)
		if len(deaths) != 1 || len(got.Headers) != 4 {
			t.Fatalf("headers %#v", got.Headers)
		}
		wantDeath(t, deaths[0], "rejected", src, "", []any{src}, 1, "", t0)
	}
	wantEmpty(t, ch, src)
	// An ack or a requeue does not dead-letter.
	publishTo(t, ch, "", src, amqp091.Publishing{Body: []byte("four")})
	d4, _, _ := ch.Get(src, false)
	d4.Reject(true)
	d4 = getWait(t, ch, src)
	if !d4.Redelivered {
		t.Fatal("requeued message not redelivered")
	}
	wantEmpty(t, ch, dst)
}

// Expired messages (per-message expiration, then x-message-ttl) are
// dead-lettered with reason expired through a fanout exchange, keeping
// their routing key, with the exchange they were published to.
func TestDeadLetterExpired(t *testing.T) { forTargets(t, testDeadLetterExpired) }

func testDeadLetterExpired(t *testing.T, url string) {
	c := dial(t, url)
	ch := channel091(t, c)
	dlx, src, dst, in := uniq("dl.x"), uniq("dl.src"), uniq("dl.dst"), uniq("dl.in")
	dropQueues(t, url, src, dst)
	dropExchanges(t, url, dlx, in)
	if err := ch.ExchangeDeclare(dlx, "fanout", false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.ExchangeDeclare(in, "direct", false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	declare(t, ch, dst, nil)
	ch.QueueBind(dst, "", dlx, false, nil)
	declare(t, ch, src, amqp091.Table{"x-dead-letter-exchange": dlx, "x-message-ttl": int32(100)})
	ch.QueueBind(src, "k1", in, false, nil)
	t0 := time.Now()
	publishTo(t, ch, in, "k1", amqp091.Publishing{Body: []byte("a"), Expiration: "10"})
	got := getWait(t, ch, dst)
	if string(got.Body) != "a" || got.Exchange != dlx || got.RoutingKey != "k1" || got.Expiration != "" {
		t.Fatalf("dead letter: %q via %q %q exp %q", got.Body, got.Exchange, got.RoutingKey, got.Expiration)
	}
	deaths, _ := got.Headers["x-death"].([]any)
	if len(deaths) != 1 || len(got.Headers) != 4 {
		t.Fatalf("headers %#v", got.Headers)
	}
	wantDeath(t, deaths[0], "expired", src, in, []any{"k1"}, 1, "10", t0)
	wantFirstDeath(t, got.Headers, "expired", src, in)

	publishTo(t, ch, "", src, amqp091.Publishing{Body: []byte("b")}) // queue TTL
	got = getWait(t, ch, dst)
	deaths, _ = got.Headers["x-death"].([]any)
	if string(got.Body) != "b" || got.RoutingKey != src || len(deaths) != 1 {
		t.Fatalf("dead letter %q key %q headers %#v", got.Body, got.RoutingKey, got.Headers)
	}
	wantDeath(t, deaths[0], "expired", src, "", []any{src}, 1, "", t0)
	wantEmpty(t, ch, src)
}

// x-max-length drop-head dead-letters the oldest messages, reason maxlen.
func TestDeadLetterMaxLength(t *testing.T) { forTargets(t, testDeadLetterMaxLength) }

func testDeadLetterMaxLength(t *testing.T, url string) {
	c := dial(t, url)
	ch := channel091(t, c)
	src, dst := uniq("dl.src"), uniq("dl.dst")
	dropQueues(t, url, src, dst)
	declare(t, ch, dst, nil)
	declare(t, ch, src, amqp091.Table{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dst, "x-max-length": int32(2)})
	t0 := time.Now()
	for _, b := range []string{"1", "2", "3", "4"} {
		publishTo(t, ch, "", src, amqp091.Publishing{Body: []byte(b)})
	}
	for _, want := range []string{"1", "2"} {
		got := getWait(t, ch, dst)
		deaths, _ := got.Headers["x-death"].([]any)
		if string(got.Body) != want || len(deaths) != 1 {
			t.Fatalf("got %q %#v, want %q", got.Body, got.Headers, want)
		}
		wantDeath(t, deaths[0], "maxlen", src, "", []any{src}, 1, "", t0)
		wantFirstDeath(t, got.Headers, "maxlen", src, "")
	}
	for _, want := range []string{"3", "4"} {
		if got := getWait(t, ch, src); string(got.Body) != want {
			t.Fatalf("got %q, want %q", got.Body, want)
		}
	}
	wantEmpty(t, ch, dst)
}

// Dying again in the same queue for the same reason increments the
// record's count and keeps its time; x-first-death-* stay; a different
// queue or reason adds a record at the front.
func TestDeadLetterDeathCount(t *testing.T) { forTargets(t, testDeadLetterDeathCount) }

func testDeadLetterDeathCount(t *testing.T, url string) {
	c := dial(t, url)
	ch := channel091(t, c)
	q1, q2 := uniq("dl.q1"), uniq("dl.q2")
	dropQueues(t, url, q1, q2)
	declare(t, ch, q1, amqp091.Table{"x-dead-letter-exchange": ""})                                                              // rejects go back to q1
	declare(t, ch, q2, amqp091.Table{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": q1, "x-message-ttl": int32(20)}) // expire into q1
	t0 := time.Now()
	publishTo(t, ch, "", q1, amqp091.Publishing{Body: []byte("m")})
	var first time.Time
	for i := int64(1); i <= 3; i++ {
		d, ok, _ := ch.Get(q1, false)
		for !ok {
			time.Sleep(5 * time.Millisecond)
			d, ok, _ = ch.Get(q1, false)
		}
		if i > 1 {
			deaths, _ := d.Headers["x-death"].([]any)
			if len(deaths) != 1 {
				t.Fatalf("x-death %#v", d.Headers["x-death"])
			}
			wantDeath(t, deaths[0], "rejected", q1, "", []any{q1}, i-1, "", t0)
			if i == 2 {
				first = deaths[0].(amqp091.Table)["time"].(time.Time)
			} else if tm := deaths[0].(amqp091.Table)["time"]; tm != first {
				t.Fatalf("time changed from %v to %v", first, tm)
			}
		}
		d.Reject(false)
	}
	// Now via q2 (expired) back into q1: a second record, newest first.
	d := getWait(t, ch, q1)
	publishTo(t, ch, "", q2, amqp091.Publishing{Body: d.Body, Headers: d.Headers})
	got := getWait(t, ch, q1)
	deaths, _ := got.Headers["x-death"].([]any)
	if len(deaths) != 2 {
		t.Fatalf("x-death %#v", got.Headers["x-death"])
	}
	wantDeath(t, deaths[0], "expired", q2, "", []any{q2}, 1, "", t0)
	wantDeath(t, deaths[1], "rejected", q1, "", []any{q1}, 3, "", t0)
	wantFirstDeath(t, got.Headers, "rejected", q1, "")
}

// Dead-letter cycles without a rejection are broken: a queue whose
// messages expire into itself, or two queues expiring into each other,
// drop the message when it would come back; a cycle with a rejection in
// it goes on.
func TestDeadLetterCycles(t *testing.T) { forTargets(t, testDeadLetterCycles) }

func testDeadLetterCycles(t *testing.T, url string) {
	c := dial(t, url)
	ch := channel091(t, c)
	t0 := time.Now()
	self := uniq("dl.self")
	a2, b2 := uniq("dl.a2"), uniq("dl.b2")
	a, b := uniq("dl.a"), uniq("dl.b")
	dropQueues(t, url, self, a2, b2, a, b)
	declare(t, ch, self, amqp091.Table{"x-dead-letter-exchange": "", "x-message-ttl": int32(10)})
	publishTo(t, ch, "", self, amqp091.Publishing{Body: []byte("x")})

	declare(t, ch, a2, amqp091.Table{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": b2, "x-message-ttl": int32(10)})
	declare(t, ch, b2, amqp091.Table{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": a2, "x-message-ttl": int32(10)})
	publishTo(t, ch, "", a2, amqp091.Publishing{Body: []byte("y")})

	// a rejects into b, b expires into a: the rejection keeps it going.
	declare(t, ch, a, amqp091.Table{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": b})
	declare(t, ch, b, amqp091.Table{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": a, "x-message-ttl": int32(10)})
	publishTo(t, ch, "", a, amqp091.Publishing{Body: []byte("z")})
	d, _, _ := ch.Get(a, false)
	d.Reject(false)
	got := getWait(t, ch, a)
	deaths, _ := got.Headers["x-death"].([]any)
	if string(got.Body) != "z" || len(deaths) != 2 || got.RoutingKey != a {
		t.Fatalf("got %q key %q %#v", got.Body, got.RoutingKey, got.Headers)
	}
	wantDeath(t, deaths[0], "expired", b, "", []any{b}, 1, "", t0)
	wantDeath(t, deaths[1], "rejected", a, "", []any{a}, 1, "", t0)
	wantFirstDeath(t, got.Headers, "rejected", a, "")

	time.Sleep(150 * time.Millisecond)
	for _, q := range []string{self, a2, b2, b} {
		wantEmpty(t, ch, q)
	}
}

// A dead-letter exchange that does not exist drops the message.
func TestDeadLetterMissingExchange(t *testing.T) { forTargets(t, testDeadLetterMissingExchange) }

func testDeadLetterMissingExchange(t *testing.T, url string) {
	c := dial(t, url)
	ch := channel091(t, c)
	src := uniq("dl.src")
	dropQueues(t, url, src)
	declare(t, ch, src, amqp091.Table{"x-dead-letter-exchange": uniq("dl.none")})
	publishTo(t, ch, "", src, amqp091.Publishing{Body: []byte("b")})
	d, _, _ := ch.Get(src, false)
	if err := d.Reject(false); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	wantEmpty(t, ch, src)
	if _, err := ch.QueueDeclarePassive(src, false, true, false, false, nil); err != nil {
		t.Fatal(err) // the channel is still open
	}
}

// TestDeadLetterHeadersMatchRabbitMQ compares the content properties of
// dead letters byte for byte (queue names and times normalized) with
// testdata/dead-letter-headers.golden, recorded from RabbitMQ 3.10.8 with
//
//	PROBE_ADDR=127.0.0.1:5672 go test -run TestDeadLetterHeadersMatchRabbitMQ ./broker/ -update
//
// Two queues reject into each other: the first death's record is in
// RabbitMQ's own order (count, reason, queue, time, exchange,
// routing-keys, original-expiration) and adds x-first-death-*; a later
// record is sorted by key and goes in front; a repeated death bumps the
// count (a long) of the sorted record; untouched headers and records keep
// their bytes; the expiration property is gone.
func TestDeadLetterHeadersMatchRabbitMQ(t *testing.T) {
	addr := os.Getenv("PROBE_ADDR")
	if addr == "" {
		addr = addrOf(startServer(t))
	}
	r := rawOpen(t, addr)
	n := time.Now().UnixNano()
	q1, q2 := fmt.Sprintf("dlraw1.%09d", n%1e9), fmt.Sprintf("dlraw2.%09d", n%1e9)
	r.send(1, &amqp.QueueDeclare{Queue: q2, AutoDelete: true, Arguments: amqp.Table{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": q1}})
	expect[*amqp.QueueDeclareOk](r, 1)
	r.send(1, &amqp.QueueDeclare{Queue: q1, AutoDelete: true, Arguments: amqp.Table{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": q2}})
	expect[*amqp.QueueDeclareOk](r, 1)
	r.publish(1, &amqp.BasicPublish{RoutingKey: q1}, &amqp.Properties{ContentType: "text/plain", Expiration: "60000",
		Headers: amqp.Table{"zz": "a", "aa": int32(1)}, MessageID: "id"}, []byte("b"), 131072)
	var out strings.Builder
	for _, q := range []string{q1, q2, q1, q2} {
		var g *amqp.BasicGetOk
		for deadline := time.Now().Add(5 * time.Second); ; {
			r.send(1, &amqp.BasicGet{Queue: q})
			_, m := r.method()
			if ok, is := m.(*amqp.BasicGetOk); is {
				g = ok
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no message on %s", q)
			}
			time.Sleep(5 * time.Millisecond)
		}
		h, _ := r.content()
		b := bytes.ReplaceAll(h.RawProperties, []byte(q1), []byte("QUEUE-ONE-000001"))
		b = bytes.ReplaceAll(b, []byte(q2), []byte("QUEUE-TWO-000002"))
		for i := 0; ; i += 6 {
			j := bytes.Index(b[i:], []byte("\x04timeT"))
			if j < 0 || i+j+14 > len(b) {
				break
			}
			i += j
			copy(b[i+6:i+14], make([]byte, 8))
		}
		fmt.Fprintf(&out, "%q\n", b)
		r.send(1, &amqp.BasicReject{DeliveryTag: g.DeliveryTag})
	}
	compareGolden(t, "testdata/dead-letter-headers.golden", out.String())
}
