package mgmtapi

import (
	"net"
	"net/url"
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
	deadline = time.Now().Add(10 * time.Second)
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

// TestTags: what each management tag grants, as RabbitMQ 3.10: monitoring
// sees every connection, management only its own; policymaker sets
// policies, monitoring does not; only administrators read definitions.
func TestTags(t *testing.T) {
	tg := startSubstrate(t, time.Hour)
	admin := tg.admin[:]
	for _, u := range []struct{ name, tags string }{{"mon", "monitoring"}, {"mgr", "management"}, {"pm", "policymaker"}} {
		if rp := tg.do(t, "PUT", "/users/"+u.name, map[string]any{"password": "pw", "tags": u.tags}, admin...); rp.Status != 201 {
			t.Fatalf("PUT user %s: %d %s", u.name, rp.Status, rp.Raw)
		}
		if rp := tg.do(t, "PUT", "/permissions/%2F/"+u.name, map[string]any{"configure": ".*", "write": ".*", "read": ".*"}, admin...); rp.Status != 201 {
			t.Fatalf("PUT permission %s: %d %s", u.name, rp.Status, rp.Raw)
		}
	}
	conn, err := amqp.Dial("amqp://guest:guest@" + tg.amqp + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	count := func(user, path string) int {
		rp := tg.do(t, "GET", path, nil, user, "pw")
		if rp.Status != 200 {
			t.Fatalf("%s GET %s: %d %s", user, path, rp.Status, rp.Raw)
		}
		return len(rp.Body.([]any))
	}
	if n := count("mon", "/connections"); n != 1 {
		t.Errorf("monitoring user sees %d connections, want 1", n)
	}
	if n := count("mgr", "/connections"); n != 0 {
		t.Errorf("management user sees %d connections of others, want 0", n)
	}
	if n := count("mgr", "/channels"); n != 0 {
		t.Errorf("management user sees %d channels of others, want 0", n)
	}
	totals := func(user string) map[string]any {
		rp := tg.do(t, "GET", "/overview", nil, user, "pw")
		return rp.Body.(map[string]any)["object_totals"].(map[string]any)
	}
	if n := num(totals("mon")["connections"]); n != 1 {
		t.Errorf("monitoring user's overview counts %v connections, want 1", n)
	}
	if n := num(totals("mgr")["connections"]); n != 0 {
		t.Errorf("management user's overview counts %v connections of others, want 0", n)
	}
	pol := map[string]any{"pattern": "^x", "definition": map[string]any{"max-length": 5}}
	for _, c := range []struct {
		user, method, path string
		body               any
		status             int
	}{
		{"pm", "PUT", "/policies/%2F/p", pol, 201},
		{"mon", "PUT", "/policies/%2F/p2", pol, 401},
		{"mgr", "PUT", "/policies/%2F/p3", pol, 401},
		{"mgr", "GET", "/policies/%2F", nil, 200},
		{"mon", "GET", "/definitions", nil, 401},
		{"pm", "GET", "/definitions", nil, 401},
		{"mon", "GET", "/nodes", nil, 200},
		{"mgr", "GET", "/nodes", nil, 401},
		{"mgr", "GET", "/aliveness-test/%2F", nil, 200},
		{"mgr", "DELETE", "/users/pm", nil, 401},
	} {
		if rp := tg.do(t, c.method, c.path, c.body, c.user, "pw"); rp.Status != c.status {
			t.Errorf("%s %s %s: %d %s, want %d", c.user, c.method, c.path, rp.Status, rp.Raw, c.status)
		}
	}
	// DELETE /api/connections/{name} closes it with RabbitMQ's text, or
	// the X-Reason header's.
	name := tg.b.Connections()[0].Name
	req := "/connections/" + pathEscape(name)
	if rp := tg.do(t, "DELETE", req, nil, "mgr", "pw"); rp.Status != 404 {
		t.Errorf("management user closes another's connection: %d", rp.Status)
	}
	if rp := tg.do(t, "DELETE", req, nil, admin...); rp.Status != 204 {
		t.Fatalf("DELETE %s: %d %s", req, rp.Status, rp.Raw)
	}
	select {
	case e := <-closed:
		if e == nil || e.Code != 320 || e.Reason != "CONNECTION_FORCED - Closed via management plugin" {
			t.Fatalf("close: %v", e)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the connection was not closed")
	}
}

func pathEscape(s string) string { return (&url.URL{Path: s}).EscapedPath() }
