package mgmtapi

import (
	"net"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"substrate/broker"
)

// TestRates: the sampler turns the broker's counters into *_details
// rates: publishing makes overview's and the queue's publish rate
// positive, and they fall back to 0 once publishing stops.
func TestRates(t *testing.T) {
	tg := startSubstrate(t, 50*time.Millisecond)
	conn, err := amqp.Dial("amqp://guest:guest@" + tg.amqp + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, _ := conn.Channel()
	if _, err := ch.QueueDeclare("rq", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	rate := func(path string, keys ...string) float64 {
		var v any = tg.get(t, path)
		for _, k := range keys {
			v = v.(map[string]any)[k]
		}
		return num(v)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		for range 20 {
			ch.Publish("", "rq", false, false, amqp.Publishing{Body: []byte("x")})
		}
		time.Sleep(20 * time.Millisecond) // pace the publisher: a rate needs time to pass
		o := rate("/overview", "message_stats", "publish_details", "rate")
		q := rate("/queues/%2F/rq", "message_stats", "publish_details", "rate")
		m := rate("/overview", "queue_totals", "messages_details", "rate")
		if o > 0 && q > 0 && m > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rates stay 0: overview %v, queue %v, messages %v", o, q, m)
		}
	}
	for rate("/overview", "message_stats", "publish_details", "rate") != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the publish rate stays above 0 after publishing stopped")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := rate("/queues/%2F/rq", "message_stats", "publish"); n <= 0 {
		t.Fatalf("queue publish counter %v", n)
	}
}

// TestNames: names are read per segment before unescaping, as RabbitMQ
// reads them: %2F inside a vhost or queue name, spaces, dots.
func TestNames(t *testing.T) {
	tg := startSubstrate(t, time.Hour)
	for _, p := range []struct{ path, vhost, queue string }{
		{"/queues/a%2Fb/q%2F1", "a/b", "q/1"},
		{"/queues/%2F/a%20b", "/", "a b"},
		{"/queues/%2F/..", "/", ".."},
		{"/queues/%2F/x%25y", "/", "x%y"},
	} {
		if p.vhost != "/" {
			if rp := tg.do(t, "PUT", "/vhosts/"+escapeSeg(p.vhost), map[string]any{}, tg.admin[:]...); rp.Status != 201 {
				t.Fatalf("PUT vhost %q: %d %s", p.vhost, rp.Status, rp.Raw)
			}
		}
		if rp := tg.do(t, "PUT", p.path, map[string]any{"durable": false}, tg.admin[:]...); rp.Status != 201 {
			t.Fatalf("PUT %s: %d %s", p.path, rp.Status, rp.Raw)
		}
		found := false
		for _, q := range tg.b.Queues(p.vhost) {
			found = found || q.Name == p.queue
		}
		if !found {
			t.Fatalf("PUT %s did not make queue %q in vhost %q", p.path, p.queue, p.vhost)
		}
		got := tg.get(t, p.path).(map[string]any)
		if got["name"] != p.queue || got["vhost"] != p.vhost {
			t.Fatalf("GET %s: name %v vhost %v", p.path, got["name"], got["vhost"])
		}
	}
}

func escapeSeg(s string) string {
	out := ""
	for _, r := range s {
		if r == '/' {
			out += "%2F"
		} else {
			out += string(r)
		}
	}
	return out
}

// TestGuestLoopbackOnly: the default user logs in to the API from
// loopback only, as over AMQP (broker.CheckLogin with the peer's
// address).
func TestGuestLoopbackOnly(t *testing.T) {
	tg := startSubstrate(t, time.Hour)
	far := &net.TCPAddr{IP: net.ParseIP("192.0.2.1"), Port: 40000}
	if _, err := tg.b.CheckLogin("guest", "guest", far); err != broker.ErrLoopbackOnly {
		t.Fatalf("guest from %v: %v, want ErrLoopbackOnly", far, err)
	}
	near := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
	if _, err := tg.b.CheckLogin("guest", "guest", near); err != nil {
		t.Fatalf("guest from loopback: %v", err)
	}
	if _, err := tg.b.CheckLogin("guest", "nope", near); err != broker.ErrLoginRefused {
		t.Fatalf("wrong password: %v", err)
	}
	if rp := tg.do(t, "GET", "/whoami", nil); rp.Status != 401 || rp.Header.Get("WWW-Authenticate") != `Basic realm="RabbitMQ Management"` {
		t.Fatalf("no credentials: %d %q", rp.Status, rp.Header.Get("WWW-Authenticate"))
	}
}
