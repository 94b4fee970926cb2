package broker

import (
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
)

// bodies drains q with basic.get and returns the bodies in order.
func bodies(t *testing.T, ch *amqp091.Channel, q string) []string {
	t.Helper()
	var out []string
	for {
		d, ok, err := ch.Get(q, true)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			return out
		}
		out = append(out, string(d.Body))
	}
}

func wantBodies(t *testing.T, got []string, want ...string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
}

// confirmCh puts ch in confirm mode and returns its confirmations.
func confirmCh(t *testing.T, ch *amqp091.Channel) chan amqp091.Confirmation {
	t.Helper()
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	return ch.NotifyPublish(make(chan amqp091.Confirmation, 100))
}

// wantConfirms reads len(acks) confirmations and checks ack or nack for
// each delivery tag, in order.
func wantConfirms(t *testing.T, cs chan amqp091.Confirmation, first uint64, acks ...bool) {
	t.Helper()
	for i, ack := range acks {
		c := recvTimeout(t, cs, 5*time.Second)
		if c.DeliveryTag != first+uint64(i) || c.Ack != ack {
			t.Fatalf("confirm %d: got tag %d ack %v, want tag %d ack %v", i, c.DeliveryTag, c.Ack, first+uint64(i), ack)
		}
	}
}

// x-max-length-bytes with drop-head counts body bytes of ready messages
// and drops (dead-letters, reason maxlen) from the head.
func TestMaxLengthBytesDropHead(t *testing.T) { forTargets(t, testMaxLengthBytesDropHead) }

func testMaxLengthBytesDropHead(t *testing.T, url string) {
	c := dial(t, url)
	ch := channel091(t, c)
	src, dst := uniq("ov.src"), uniq("ov.dst")
	dropQueues(t, url, src, dst)
	declare(t, ch, dst, nil)
	declare(t, ch, src, amqp091.Table{"x-max-length-bytes": int32(10), "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dst})
	for _, b := range []string{"aaaa", "bbbb", "cccc", "dd", "this-is-too-big"} {
		publishTo(t, ch, "", src, amqp091.Publishing{Body: []byte(b)})
	}
	// 4+4+4 > 10 drops aaaa; bbbb+cccc+dd = 10 fits; the big one pushes
	// everything out, itself included.
	time.Sleep(50 * time.Millisecond)
	wantBodies(t, bodies(t, ch, src))
	got := bodies(t, ch, dst)
	wantBodies(t, got, "aaaa", "bbbb", "cccc", "dd", "this-is-too-big")
	d := func() amqp091.Delivery {
		publishTo(t, ch, "", src, amqp091.Publishing{Body: []byte("01234567890")})
		return getWait(t, ch, dst)
	}()
	deaths, _ := d.Headers["x-death"].([]any)
	if len(deaths) != 1 || deaths[0].(amqp091.Table)["reason"] != "maxlen" {
		t.Fatalf("headers %#v", d.Headers)
	}
}

// x-overflow reject-publish: a publish that would exceed the limit is
// refused with basic.nack (earlier ones acked, in order) and dropped;
// the queue keeps its messages; without confirms it is dropped silently;
// a refused mandatory message is not returned.
func TestOverflowRejectPublish(t *testing.T) { forTargets(t, testOverflowRejectPublish) }

func testOverflowRejectPublish(t *testing.T, url string) {
	c := dial(t, url)
	ch := channel091(t, c)
	q := uniq("ov.rp")
	dropQueues(t, url, q)
	declare(t, ch, q, amqp091.Table{"x-max-length": int32(2), "x-overflow": "reject-publish"})
	returns := ch.NotifyReturn(make(chan amqp091.Return, 10))
	cs := confirmCh(t, ch)
	for _, b := range []string{"1", "2", "3", "4"} {
		if err := ch.Publish("", q, true, false, amqp091.Publishing{Body: []byte(b)}); err != nil {
			t.Fatal(err)
		}
	}
	wantConfirms(t, cs, 1, true, true, false, false)
	noRecv(t, returns, 50*time.Millisecond)
	if d, ok, _ := ch.Get(q, false); !ok || string(d.Body) != "1" {
		t.Fatalf("got %q", d.Body)
	} else {
		publishTo(t, ch, "", q, amqp091.Publishing{Body: []byte("5")}) // unacked messages do not count
		wantConfirms(t, cs, 5, true)
		publishTo(t, ch, "", q, amqp091.Publishing{Body: []byte("6")})
		wantConfirms(t, cs, 6, false)
		d.Ack(false)
	}
	wantBodies(t, bodies(t, ch, q), "2", "5")

	ch2 := channel091(t, c) // no confirms
	for _, b := range []string{"a", "b", "c"} {
		publishTo(t, ch2, "", q, amqp091.Publishing{Body: []byte(b)})
	}
	wantBodies(t, bodies(t, ch2, q), "a", "b")
}

// reject-publish with x-max-length-bytes, and a fanout where one queue
// refuses: the publish is nacked, the other queue has the message.
func TestOverflowRejectPublishBytesFanout(t *testing.T) {
	forTargets(t, testOverflowRejectPublishBytesFanout)
}

func testOverflowRejectPublishBytesFanout(t *testing.T, url string) {
	c := dial(t, url)
	ch := channel091(t, c)
	x, full, free := uniq("ov.x"), uniq("ov.full"), uniq("ov.free")
	dropQueues(t, url, full, free)
	dropExchanges(t, url, x)
	if err := ch.ExchangeDeclare(x, "fanout", false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	declare(t, ch, full, amqp091.Table{"x-max-length-bytes": int32(5), "x-overflow": "reject-publish"})
	declare(t, ch, free, nil)
	ch.QueueBind(full, "", x, false, nil)
	ch.QueueBind(free, "", x, false, nil)
	cs := confirmCh(t, ch)
	for _, b := range []string{"abc", "de", "f"} {
		publishTo(t, ch, x, "", amqp091.Publishing{Body: []byte(b)})
	}
	wantConfirms(t, cs, 1, true, true, false)
	wantBodies(t, bodies(t, ch, full), "abc", "de")
	wantBodies(t, bodies(t, ch, free), "abc", "de", "f")
}

// reject-publish-dlx refuses like reject-publish and dead-letters the
// refused message (reason maxlen).
func TestOverflowRejectPublishDLX(t *testing.T) { forTargets(t, testOverflowRejectPublishDLX) }

func testOverflowRejectPublishDLX(t *testing.T, url string) {
	c := dial(t, url)
	ch := channel091(t, c)
	src, dst := uniq("ov.src"), uniq("ov.dst")
	dropQueues(t, url, src, dst)
	declare(t, ch, dst, nil)
	declare(t, ch, src, amqp091.Table{"x-max-length": int32(1), "x-overflow": "reject-publish-dlx",
		"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dst})
	cs := confirmCh(t, ch)
	t0 := time.Now()
	publishTo(t, ch, "", src, amqp091.Publishing{Body: []byte("kept")})
	publishTo(t, ch, "", src, amqp091.Publishing{Body: []byte("refused"), Expiration: "60000"})
	wantConfirms(t, cs, 1, true, false)
	got := getWait(t, ch, dst)
	deaths, _ := got.Headers["x-death"].([]any)
	if string(got.Body) != "refused" || len(deaths) != 1 || got.Expiration != "" {
		t.Fatalf("got %q %#v", got.Body, got.Headers)
	}
	wantDeath(t, deaths[0], "maxlen", src, "", []any{src}, 1, "60000", t0)
	wantBodies(t, bodies(t, ch, src), "kept")
}
