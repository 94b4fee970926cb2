package broker

import (
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"substrate/broker/amqp"
)

func TestTopicMatch(t *testing.T) {
	cases := []struct {
		pat, key string
		want     bool
	}{
		{"a.b", "a.b", true}, {"a.*", "a.b", true}, {"a.*", "a.b.c", false}, {"a.*", "a", false},
		{"a.#", "a", true}, {"a.#", "a.b.c", true}, {"#", "", true}, {"*", "", false}, {"", "", true},
		{"#.b", "b", true}, {"#.b", "a.x.b", true}, {"a.#.b", "a.b", true}, {"a.#.b", "a.x.y.b", true},
		{"*.*", "a.", true}, {"a.*.c", "a..c", true}, {"a*", "ab", false}, {"a#", "a", false},
		{"#.#", "a.b", true}, {"*.#", "", false}, {"cinder-volume.host@backend", "cinder-volume.host@backend", true},
		{"a.#.#.c", "a.c", true}, {"#.*", "", false}, {"#.*", "x", true},
	}
	for _, c := range cases {
		if got := topicMatch(splitWords(c.pat), splitWords(c.key)); got != c.want {
			t.Errorf("%q ~ %q = %v, want %v", c.pat, c.key, got, c.want)
		}
	}
}

func TestHeadersMatch(t *testing.T) {
	h := amqp.Table{"a": "1", "b": int32(2), "x-y": "z"}
	cases := []struct {
		args amqp.Table
		want bool
	}{
		{amqp.Table{"a": "1"}, true},
		{amqp.Table{"a": "1", "b": int64(2)}, true}, // integers compare by value
		{amqp.Table{"a": "1", "c": "3"}, false},
		{amqp.Table{"x-match": "any", "a": "1", "c": "3"}, true},
		{amqp.Table{"x-match": "any", "c": "3"}, false},
		{amqp.Table{"x-match": "any"}, false},
		{amqp.Table{}, true},
		{amqp.Table{"x-y": "other"}, true}, // x- keys ignored
		{amqp.Table{"x-match": "all-with-x", "x-y": "other"}, false},
		{amqp.Table{"a": nil}, true}, // void matches presence
	}
	for _, c := range cases {
		if got := headersMatch(c.args, h); got != c.want {
			t.Errorf("%v: %v, want %v", c.args, got, c.want)
		}
	}
}

// routes publishes one message per key and reports which queues got which.
func TestExchangeRouting(t *testing.T) { forTargets(t, testExchangeRouting) }

func testExchangeRouting(t *testing.T, url string) {
	c := dial(t, url)
	ch := channel091(t, c)
	x := uniq("rt")
	q1, q2 := uniq("rq1"), uniq("rq2")
	dropQueues(t, url, q1, q2)
	dropExchanges(t, url, x+".t", x+".d", x+".f", x+".h", x+".src")
	for _, q := range []string{q1, q2} {
		if _, err := ch.QueueDeclare(q, false, true, false, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	get := func(q string) string {
		t.Helper()
		m, ok, err := ch.Get(q, true)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			return ""
		}
		return m.RoutingKey + "|" + string(m.Body)
	}
	pub := func(ex, key string, headers amqp091.Table) {
		t.Helper()
		if err := ch.Publish(ex, key, false, false, amqp091.Publishing{Headers: headers, Body: []byte("m")}); err != nil {
			t.Fatal(err)
		}
	}
	// topic
	must(t, ch.ExchangeDeclare(x+".t", "topic", false, true, false, false, nil))
	must(t, ch.QueueBind(q1, "nova.*.compute", x+".t", false, nil))
	must(t, ch.QueueBind(q2, "nova.#", x+".t", false, nil))
	pub(x+".t", "nova.host1.compute", nil)
	pub(x+".t", "nova", nil)
	time.Sleep(50 * time.Millisecond)
	if got := get(q1); got != "nova.host1.compute|m" {
		t.Fatalf("q1 got %q", got)
	}
	if get(q1) != "" {
		t.Fatal("q1 got 'nova'")
	}
	if get(q2) != "nova.host1.compute|m" || get(q2) != "nova|m" {
		t.Fatal("q2 missed messages")
	}
	// direct and default
	must(t, ch.ExchangeDeclare(x+".d", "direct", false, true, false, false, nil))
	must(t, ch.QueueBind(q1, "k", x+".d", false, nil))
	pub(x+".d", "k", nil)
	pub(x+".d", "other", nil)
	pub("", q2, nil)
	time.Sleep(50 * time.Millisecond)
	if get(q1) != "k|m" || get(q1) != "" || get(q2) != q2+"|m" {
		t.Fatal("direct/default routing")
	}
	// fanout
	must(t, ch.ExchangeDeclare(x+".f", "fanout", false, true, false, false, nil))
	must(t, ch.QueueBind(q1, "ignored", x+".f", false, nil))
	must(t, ch.QueueBind(q2, "", x+".f", false, nil))
	pub(x+".f", "any", nil)
	time.Sleep(50 * time.Millisecond)
	if get(q1) != "any|m" || get(q2) != "any|m" {
		t.Fatal("fanout")
	}
	// headers
	must(t, ch.ExchangeDeclare(x+".h", "headers", false, true, false, false, nil))
	must(t, ch.QueueBind(q1, "", x+".h", false, amqp091.Table{"x-match": "any", "a": "1", "b": "2"}))
	must(t, ch.QueueBind(q2, "", x+".h", false, amqp091.Table{"a": "1", "b": "2"}))
	pub(x+".h", "h1", amqp091.Table{"a": "1"})
	pub(x+".h", "h2", amqp091.Table{"a": "1", "b": "2"})
	time.Sleep(50 * time.Millisecond)
	if get(q1) != "h1|m" || get(q1) != "h2|m" || get(q2) != "h2|m" || get(q2) != "" {
		t.Fatal("headers")
	}
	// exchange-to-exchange: e2e -> topic; a queue reached twice gets one copy
	must(t, ch.ExchangeDeclare(x+".src", "fanout", false, true, false, false, nil))
	must(t, ch.ExchangeBind(x+".t", "", x+".src", false, nil))
	must(t, ch.QueueBind(q2, "", x+".src", false, nil))
	pub(x+".src", "nova.a.compute", nil)
	time.Sleep(50 * time.Millisecond)
	if get(q1) != "nova.a.compute|m" || get(q2) != "nova.a.compute|m" || get(q2) != "" {
		t.Fatal("exchange-to-exchange routing")
	}
	must(t, ch.ExchangeUnbind(x+".t", "", x+".src", false, nil))
	pub(x+".src", "nova.a.compute", nil)
	time.Sleep(50 * time.Millisecond)
	if get(q1) != "" {
		t.Fatal("exchange unbind did not stop routing")
	}
	// amq.* predefined exchanges exist
	for _, n := range []string{"amq.direct", "amq.fanout", "amq.topic", "amq.headers", "amq.match"} {
		must(t, ch.ExchangeDeclarePassive(n, "", false, false, false, false, nil))
	}
	// queue.unbind of the last binding deletes the auto-delete exchange.
	must(t, ch.QueueUnbind(q1, "k", x+".d", nil))
	wantAMQPError(t, ch.ExchangeDeclarePassive(x+".d", "direct", false, true, false, false, nil),
		404, "NOT_FOUND - no exchange '"+x+".d' in vhost '/'")
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestExchangeErrors(t *testing.T) { forTargets(t, testExchangeErrors) }

func testExchangeErrors(t *testing.T, url string) {
	c := dial(t, url)
	x := uniq("xerr")
	q := uniq("xq")
	dropQueues(t, url, q)
	dropExchanges(t, url, x, x+".u", x+".bad")
	try := func(f func(ch *amqp091.Channel) error, code int, text string) {
		t.Helper()
		ch := channel091(t, c)
		wantAMQPError(t, f(ch), code, text)
	}
	ch := channel091(t, c)
	must(t, ch.ExchangeDeclare(x, "topic", false, false, false, false, nil))
	try(func(ch *amqp091.Channel) error {
		return ch.ExchangeDeclare(x, "fanout", false, false, false, false, nil)
	},
		406, "PRECONDITION_FAILED - inequivalent arg 'type' for exchange '"+x+"' in vhost '/': received 'fanout' but current is 'topic'")
	try(func(ch *amqp091.Channel) error { return ch.ExchangeDeclare(x, "topic", true, false, false, false, nil) },
		406, "PRECONDITION_FAILED - inequivalent arg 'durable' for exchange '"+x+"' in vhost '/': received 'true' but current is 'false'")
	try(func(ch *amqp091.Channel) error { return ch.ExchangeDeclare(x, "topic", false, true, false, false, nil) },
		406, "PRECONDITION_FAILED - inequivalent arg 'auto_delete' for exchange '"+x+"' in vhost '/': received 'true' but current is 'false'")
	try(func(ch *amqp091.Channel) error {
		return ch.ExchangeDeclarePassive("no"+x, "topic", false, false, false, false, nil)
	},
		404, "NOT_FOUND - no exchange 'no"+x+"' in vhost '/'")
	try(func(ch *amqp091.Channel) error {
		return ch.ExchangeDeclare("amq.mine", "topic", false, false, false, false, nil)
	},
		403, "ACCESS_REFUSED - exchange name 'amq.mine' contains reserved prefix 'amq.*'")
	try(func(ch *amqp091.Channel) error { return ch.ExchangeDelete("amq.direct", false, false) },
		403, "ACCESS_REFUSED - deletion of system exchange 'amq.direct' in vhost '/' not allowed")
	try(func(ch *amqp091.Channel) error { return ch.ExchangeDelete("", false, false) },
		403, "ACCESS_REFUSED - operation not permitted on the default exchange")
	try(func(ch *amqp091.Channel) error { return ch.QueueBind("q", "k", "", false, nil) },
		403, "ACCESS_REFUSED - operation not permitted on the default exchange")
	// Redeclaring a predefined exchange identically is fine.
	must(t, channel091(t, c).ExchangeDeclare("amq.direct", "direct", true, false, false, false, nil))
	// if-unused
	ch = channel091(t, c)
	must(t, ch.ExchangeDeclare(x+".u", "direct", false, false, false, false, nil))
	_, err := ch.QueueDeclare(q, false, true, false, false, nil)
	must(t, err)
	must(t, ch.QueueBind(q, "k", x+".u", false, nil))
	try(func(ch *amqp091.Channel) error { return ch.ExchangeDelete(x+".u", true, false) },
		406, "PRECONDITION_FAILED - exchange '"+x+".u' in vhost '/' in use")
	must(t, channel091(t, c).ExchangeDelete(x+".u", false, false))
	must(t, channel091(t, c).ExchangeDelete("never"+x, false, false)) // missing: ok
	// Publishing to the deleted exchange is a 404 channel error.
	ch = channel091(t, c)
	closed := ch.NotifyClose(make(chan *amqp091.Error, 1))
	ch.Publish(x+".u", "k", false, false, amqp091.Publishing{})
	e := recvTimeout(t, closed, 2*time.Second)
	if e.Code != 404 || e.Reason != "NOT_FOUND - no exchange '"+x+".u' in vhost '/'" {
		t.Fatalf("publish to missing exchange: %+v", e)
	}
	// Unknown exchange type: connection error 503.
	c2 := dial(t, url)
	err = channel091(t, c2).ExchangeDeclare(x+".bad", "nosuchtype", false, false, false, false, nil)
	wantAMQPError(t, err, 503, "")
}

func TestUnknownExchangeTypeText(t *testing.T) {
	s := startServer(t)
	r := rawOpen(t, addrOf(s))
	r.send(1, &amqp.ExchangeDeclare{Exchange: "x", Type: "nosuch"})
	wantClose(t, expect[*amqp.ConnectionClose](r, 0), 503, "COMMAND_INVALID - unknown exchange type 'nosuch'", 40, 10)
}

func TestAutoDeleteExchange(t *testing.T) {
	s := startServer(t)
	c := dial(t, urlOf(s))
	ch := channel091(t, c)
	must(t, ch.ExchangeDeclare("f_fanout", "fanout", false, true, false, false, nil))
	q, _ := ch.QueueDeclare("f_q1", false, false, false, false, amqp091.Table{"x-expires": int32(1800000)})
	must(t, ch.QueueBind(q.Name, "f", "f_fanout", false, nil))
	must(t, ch.QueueBind("f_q1", "g", "f_fanout", false, nil))
	must(t, ch.QueueUnbind("f_q1", "g", "f_fanout", nil))
	if !hasExchange(s, "f_fanout") {
		t.Fatal("auto-delete exchange went with a binding left")
	}
	_, err := ch.QueueDelete("f_q1", false, false, false)
	must(t, err)
	if hasExchange(s, "f_fanout") {
		t.Fatal("auto-delete exchange kept after its last binding went")
	}
	// A cached publisher now gets 404 and redeclares (oslo's cycle).
	closed := ch.NotifyClose(make(chan *amqp091.Error, 1))
	ch.Publish("f_fanout", "", false, false, amqp091.Publishing{})
	if e := recvTimeout(t, closed, 2*time.Second); e.Code != 404 {
		t.Fatalf("%+v", e)
	}
	// An auto-delete exchange that never had bindings stays.
	ch = channel091(t, c)
	must(t, ch.ExchangeDeclare("f2", "fanout", false, true, false, false, nil))
	if !hasExchange(s, "f2") {
		t.Fatal("fresh auto-delete exchange vanished")
	}
}

func hasExchange(s *Server, name string) bool {
	for _, x := range s.Exchanges("/") {
		if x.Name == name {
			return true
		}
	}
	return false
}

func TestInternalExchange(t *testing.T) { forTargets(t, testInternalExchange) }

func testInternalExchange(t *testing.T, url string) {
	c := dial(t, url)
	ch := channel091(t, c)
	x := uniq("int")
	dropExchanges(t, url, x)
	must(t, ch.ExchangeDeclare(x, "fanout", false, true, true, false, nil))
	closed := ch.NotifyClose(make(chan *amqp091.Error, 1))
	ch.Publish(x, "", false, false, amqp091.Publishing{})
	e := recvTimeout(t, closed, 2*time.Second)
	if e.Code != 403 || e.Reason != "ACCESS_REFUSED - cannot publish to internal exchange '"+x+"' in vhost '/'" {
		t.Fatalf("%+v", e)
	}
}
