package broker

import (
	"context"
	"flag"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"substrate/broker/amqp"
)

// TestErrorRepliesMatchRabbitMQ sends a series of failing (and a few
// succeeding) methods and compares every reply (method, code, text,
// class/method ids) with testdata/error-replies.golden, which was
// recorded from RabbitMQ 3.10.8 with
//
//	PROBE_ADDR=127.0.0.1:5672 go test -run TestErrorRepliesMatchRabbitMQ ./broker/ -update
//
// (on a fresh RabbitMQ, where queue zzq starts empty).
func TestErrorRepliesMatchRabbitMQ(t *testing.T) {
	addr := os.Getenv("PROBE_ADDR")
	if addr == "" {
		addr = addrOf(startServer(t))
	}
	var out strings.Builder
	printf := func(format string, args ...any) { fmt.Fprintf(&out, format, args...) }
	try := func(name string, ms ...amqp.Method) {
		r := rawOpen(t, addr)
		for _, m := range ms {
			r.send(1, m)
		}
		// One reply per synchronous method sent without nowait.
		want := 0
		for _, m := range ms {
			if m.Synchronous() && !noWait(m) {
				want++
			}
		}
		for got := 0; got < max(want, 1); {
			ch, m := r.method()
			printf("%-28s ch=%d %s %+v\n", name, ch, m.Name(), m)
			switch m.(type) {
			case *amqp.ChannelClose, *amqp.ConnectionClose:
				return
			case *amqp.BasicDeliver, *amqp.BasicCancel, *amqp.BasicAck, *amqp.BasicReturn:
				continue
			}
			got++
		}
	}
	try("badtype", &amqp.ExchangeDeclare{Exchange: "zz", Type: "nosuch"})
	try("badtype2", &amqp.ExchangeDeclare{Exchange: "zz", Type: "x-consistent-hash"})
	try("passive default", &amqp.ExchangeDeclare{Exchange: "", Passive: true})
	try("declare default", &amqp.ExchangeDeclare{Exchange: "", Type: "direct"})
	try("qdelete missing", &amqp.QueueDelete{Queue: "zz-missing"})
	try("unbind missing", &amqp.QueueDeclare{Queue: "zzq"}, &amqp.QueuePurge{Queue: "zzq"}, &amqp.QueueUnbind{Queue: "zzq", Exchange: "amq.direct", RoutingKey: "nope"})
	try("unbind missing q", &amqp.QueueUnbind{Queue: "zzq-missing", Exchange: "amq.direct", RoutingKey: "nope"})
	try("unbind missing x", &amqp.QueueDeclare{Queue: "zzq"}, &amqp.QueueUnbind{Queue: "zzq", Exchange: "zzx-missing", RoutingKey: "nope"})
	try("exbind missing", &amqp.ExchangeBind{Source: "amq.direct", Destination: "zzx-missing"})
	try("exunbind missing", &amqp.ExchangeUnbind{Source: "amq.direct", Destination: "zzx-missing"})
	try("bind both missing", &amqp.QueueBind{Queue: "zzq-missing", Exchange: "zzx-missing", RoutingKey: "nope"})
	try("cancel unknown", &amqp.BasicCancel{ConsumerTag: "nope"})
	try("x-expires 0", &amqp.QueueDeclare{Queue: "zzq2", Arguments: amqp.Table{"x-expires": int32(0)}})
	try("x-expires -1", &amqp.QueueDeclare{Queue: "zzq2", Arguments: amqp.Table{"x-expires": int32(-1)}})
	try("x-expires str", &amqp.QueueDeclare{Queue: "zzq2", Arguments: amqp.Table{"x-expires": "10"}})
	try("x-mttl -1", &amqp.QueueDeclare{Queue: "zzq2", Arguments: amqp.Table{"x-message-ttl": int32(-1)}})
	try("recover false", &amqp.BasicRecover{Requeue: false})
	try("qos size", &amqp.BasicQos{PrefetchSize: 10})
	try("flow false", &amqp.ChannelFlow{Active: false})
	try("amq queue", &amqp.QueueDeclare{Queue: "amq.zz"})
	try("queue shortcut none", &amqp.QueueBind{Queue: "", Exchange: "amq.direct"})
	try("purge shortcut none", &amqp.QueuePurge{Queue: ""})
	try("tx commit", &amqp.TxCommit{})
	try("quorum nondurable", &amqp.QueueDeclare{Queue: "zzq3", Arguments: amqp.Table{"x-queue-type": "quorum"}})
	try("qtype foo", &amqp.QueueDeclare{Queue: "zzq3", Arguments: amqp.Table{"x-queue-type": "foo"}})
	try("dup tag", &amqp.QueueDeclare{Queue: "zzq"}, &amqp.BasicConsume{Queue: "zzq", ConsumerTag: "t", NoWait: true}, &amqp.BasicConsume{Queue: "zzq", ConsumerTag: "t"})
	try("ack 0 nonmult", &amqp.BasicAck{DeliveryTag: 0})
	try("ack 0 mult", &amqp.BasicAck{DeliveryTag: 0, Multiple: true}, &amqp.BasicQos{})
	try("get missing", &amqp.BasicGet{Queue: "zz-missing"})
	try("x internal redeclare", &amqp.ExchangeDeclare{Exchange: "zzx", Type: "direct", AutoDelete: true, Arguments: amqp.Table{"alternate-exchange": "a"}},
		&amqp.ExchangeDeclare{Exchange: "zzx", Type: "direct", AutoDelete: true, Internal: true, Arguments: amqp.Table{"alternate-exchange": "a"}})
	try("x ae redeclare", &amqp.ExchangeDeclare{Exchange: "zzx", Type: "direct", AutoDelete: true, Arguments: amqp.Table{"alternate-exchange": "b"}})
	try("x unknown arg", &amqp.ExchangeDeclare{Exchange: "zzx", Type: "direct", AutoDelete: true, Arguments: amqp.Table{"alternate-exchange": "a", "x-foo": int32(1)}})
	try("q arg type class", &amqp.QueueDeclare{Queue: "zzq4", AutoDelete: true, Arguments: amqp.Table{"x-expires": int32(5000)}},
		&amqp.QueueDeclare{Queue: "zzq4", AutoDelete: true, Arguments: amqp.Table{"x-expires": "5000"}})
	try("q arg long vs int", &amqp.QueueDeclare{Queue: "zzq5", AutoDelete: true, Arguments: amqp.Table{"x-max-length": int32(5)}},
		&amqp.QueueDeclare{Queue: "zzq5", AutoDelete: true, Arguments: amqp.Table{"x-max-length": int64(5)}}, &amqp.QueueDelete{Queue: "zzq5"})
	try("q dlx mismatch", &amqp.QueueDeclare{Queue: "zzq6", AutoDelete: true, Arguments: amqp.Table{"x-dead-letter-exchange": "a"}},
		&amqp.QueueDeclare{Queue: "zzq6", AutoDelete: true, Arguments: amqp.Table{"x-dead-letter-exchange": "b"}})
	try("q excl redeclare", &amqp.QueueDeclare{Queue: "zzq7", Exclusive: true}, &amqp.QueueDeclare{Queue: "zzq7"})
	try("q excl durable", &amqp.QueueDeclare{Queue: "zzq8", Exclusive: true}, &amqp.QueueDeclare{Queue: "zzq8", Exclusive: true, Durable: true})
	try("nack multi unknown", &amqp.BasicNack{DeliveryTag: 3, Multiple: true})
	try("delete x missing", &amqp.ExchangeDelete{Exchange: "zz-missing"})
	try("delete amq.x missing", &amqp.ExchangeDelete{Exchange: "amq.zz-missing"})
	try("declare amq.direct wrong", &amqp.ExchangeDeclare{Exchange: "amq.direct", Type: "fanout", Durable: true})
	try("declare amq.direct passive", &amqp.ExchangeDeclare{Exchange: "amq.direct", Passive: true})
	try("bind amq.default", &amqp.QueueDeclare{Queue: "zzq"}, &amqp.QueueBind{Queue: "zzq", Exchange: "amq.default"})
	for _, exp := range []string{"abc", "10x", "-5", "99999999999", " 10", "+7"} {
		r := rawOpen(t, addr)
		r.publish(1, &amqp.BasicPublish{RoutingKey: "zzq"}, &amqp.Properties{Expiration: exp}, []byte("x"), 131072)
		r.send(1, &amqp.BasicQos{})
		_, m := r.method()
		printf("expiration %-12q %s %+v\n", exp, m.Name(), m)
	}
	r := rawOpen(t, addr)
	r.publish(1, &amqp.BasicPublish{RoutingKey: "zzq"}, &amqp.Properties{UserID: "bob"}, []byte("x"), 131072)
	r.send(1, &amqp.BasicQos{})
	_, m := r.method()
	printf("userid %s %+v\n", m.Name(), m)
	r = rawOpen(t, addr)
	r.send(1, &amqp.QueueDelete{Queue: "zzq"})
	expect[*amqp.QueueDeleteOk](r, 1)
	compareGolden(t, "testdata/error-replies.golden", out.String())
}

// compareGolden compares got with a golden file, or rewrites it with
// -update, which records from RabbitMQ only: PROBE_ADDR must be set and
// answer as RabbitMQ (connection.start's product), else the test fails
// rather than write substrate's own replies into RabbitMQ's goldens.
func compareGolden(t *testing.T, golden, got string) {
	t.Helper()
	if *update {
		addr := os.Getenv("PROBE_ADDR")
		if addr == "" {
			t.Fatalf("-update records %s from RabbitMQ only: set PROBE_ADDR to a RabbitMQ 3.10.8 (the tests otherwise run against substrate)", golden)
		}
		if product, err := serverProduct(addr); err != nil || product != "RabbitMQ" {
			t.Fatalf("-update records %s from RabbitMQ only: PROBE_ADDR %s answers as product %q (%v)", golden, addr, product, err)
		}
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("replies differ from RabbitMQ's:\n%s", lineDiff(string(want), got))
	}
}

func noWait(m amqp.Method) bool {
	switch m := m.(type) {
	case *amqp.BasicConsume:
		return m.NoWait
	case *amqp.QueueDeclare:
		return m.NoWait
	case *amqp.ExchangeDeclare:
		return m.NoWait
	}
	return false
}

var update = flag.Bool("update", false, "rewrite golden files from PROBE_ADDR, which must be a RabbitMQ")

// serverProduct returns the product server property addr announces in
// connection.start.
func serverProduct(addr string) (string, error) {
	c, err := amqp091.Dial("amqp://guest:guest@" + addr + "/")
	if err != nil {
		return "", err
	}
	defer c.Close()
	p, _ := c.Properties["product"].(string)
	return p, nil
}

// TestGoldensMatchRabbitMQ runs the golden tests (recorded from RabbitMQ
// 3.10.8) against the private RabbitMQ that TestMain starts, so that the
// goldens themselves are checked against RabbitMQ in every run, not only
// when they are recorded.
func TestGoldensMatchRabbitMQ(t *testing.T) {
	if *update {
		t.Skip("-update records; this checks")
	}
	rabbit.waited.Store(true)
	<-rabbit.ready
	if rabbit.fail != "" {
		t.Fatal(rabbit.fail)
	}
	if rabbit.skip != "" {
		t.Skip(rabbit.skip)
	}
	u, err := url.Parse(rabbit.url)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("PROBE_ADDR", u.Host)
	for _, tc := range []struct {
		name string
		test func(*testing.T)
	}{
		{"error-replies", TestErrorRepliesMatchRabbitMQ},
		{"connection-errors", TestConnectionErrorsMatchRabbitMQ},
		{"queue-args", TestQueueArgsMatchRabbitMQ},
		{"dead-letter-headers", TestDeadLetterHeadersMatchRabbitMQ},
		{"permission-errors", func(t *testing.T) {
			// The user and queue the golden was recorded with.
			if rabbit.node == nil {
				t.Skip("SUBSTRATE_TEST_RABBITMQ: no rabbitmqctl to add the user zzu with")
			}
			ctx := context.Background()
			for _, args := range [][]string{{"add_user", "zzu", "pw"}, {"set_permissions", "-p", "/", "zzu", "^zz", "^zz", "^zz"}} {
				if out, err := rabbit.node.Ctl(ctx, args...); err != nil && !strings.Contains(out, "already exists") {
					t.Fatalf("rabbitmqctl %v: %v\n%s", args, err, out)
				}
			}
			ch := channel091(t, dial(t, rabbit.url))
			if _, err := ch.QueueDeclare("other", false, false, false, false, nil); err != nil {
				t.Fatal(err)
			}
			dropQueues(t, rabbit.url, "other")
			TestPermissionRepliesMatchRabbitMQ(t)
		}},
	} {
		t.Run(tc.name, tc.test)
	}
}

func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	for i := 0; i < max(len(w), len(g)); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			fmt.Fprintf(&b, "- %s\n+ %s\n", wl, gl)
		}
	}
	return b.String()
}

// TestConnectionErrorsMatchRabbitMQ is TestErrorRepliesMatchRabbitMQ for
// frames on channels that are not open and methods on the wrong channel;
// testdata/connection-errors.golden was recorded from RabbitMQ 3.10.8.
func TestConnectionErrorsMatchRabbitMQ(t *testing.T) {
	addr := os.Getenv("PROBE_ADDR")
	if addr == "" {
		addr = addrOf(startServer(t))
	}
	var out strings.Builder
	printf := func(format string, args ...any) { fmt.Fprintf(&out, format, args...) }
	show := func(name string, r *rawClient) {
		r.nc.SetReadDeadline(time.Now().Add(6 * time.Second)) // RabbitMQ closes silently after 3 s
		f, err := r.fr.ReadFrame()
		if err != nil {
			if isEOF(err) {
				printf("%-20s socket closed without connection.close\n", name)
			} else {
				printf("%-20s err %v\n", name, err)
			}
			return
		}
		m, _ := amqp.DecodeMethod(f.Payload)
		printf("%-20s ch=%d %s %+v\n", name, f.Channel, m.Name(), m)
	}
	r := rawOpen(t, addr)
	r.send(5, &amqp.ChannelClose{})
	show("close unopened", r)
	r = rawOpen(t, addr)
	r.send(5, &amqp.ChannelCloseOk{}) // never opened: RabbitMQ's channel process refuses it
	show("closeok unopened", r)
	r = rawOpen(t, addr)
	r.send(5, &amqp.BasicQos{})
	show("qos unopened", r)
	r = rawOpen(t, addr)
	r.write(amqp.AppendFrame(nil, amqp.FrameHeader, 1, make([]byte, 14)))
	show("header no method", r)
	r = rawOpen(t, addr)
	r.send(0, &amqp.ChannelOpen{})
	show("chopen on 0", r)
	r = rawOpen(t, addr)
	r.send(0, &amqp.BasicQos{})
	show("qos on 0", r)
	r = rawOpen(t, addr)
	r.send(1, &amqp.ConnectionOpen{})
	show("conn.open on 1", r)
	hs := func(name string, startOk *amqp.ConnectionStartOk, tuneOk *amqp.ConnectionTuneOk) {
		r := rawDial(t, addr)
		r.write([]byte(amqp.ProtocolHeader))
		expect[*amqp.ConnectionStart](r, 0)
		r.send(0, startOk)
		if tuneOk == nil {
			show(name, r)
			return
		}
		expect[*amqp.ConnectionTune](r, 0)
		r.send(0, tuneOk)
		r.send(0, &amqp.ConnectionOpen{VirtualHost: "/"})
		show(name, r)
	}
	caps := amqp.Table{"capabilities": amqp.Table{"authentication_failure_close": true}}
	hs("unknown mechanism", &amqp.ConnectionStartOk{ClientProperties: caps, Mechanism: "EXTERNAL", Response: ""}, nil)
	hs("bad plain", &amqp.ConnectionStartOk{ClientProperties: caps, Mechanism: "PLAIN", Response: "guest"}, nil)
	good := &amqp.ConnectionStartOk{ClientProperties: caps, Mechanism: "PLAIN", Response: "\x00guest\x00guest"}
	hs("frame_max small", good, &amqp.ConnectionTuneOk{ChannelMax: 10, FrameMax: 1000})
	hs("frame_max big", good, &amqp.ConnectionTuneOk{ChannelMax: 10, FrameMax: 1 << 20})
	hs("channel_max big", good, &amqp.ConnectionTuneOk{ChannelMax: 4000, FrameMax: 4096})
	hs("zeros", good, &amqp.ConnectionTuneOk{})
	compareGolden(t, "testdata/connection-errors.golden", out.String())
}

// TestPermissionRepliesMatchRabbitMQ checks the 403s of RabbitMQ's
// configure/write/read checks for a user with permissions "^zz" on all
// three; testdata/permission-errors.golden was recorded from RabbitMQ
// 3.10.8 after `rabbitmqctl add_user zzu pw; set_permissions -p / zzu '^zz' '^zz' '^zz'`.
func TestPermissionRepliesMatchRabbitMQ(t *testing.T) {
	addr := os.Getenv("PROBE_ADDR")
	if addr == "" {
		s := startServer(t)
		ctx := context.Background()
		must(t, s.AddUser(ctx, "zzu", "pw"))
		must(t, s.SetPermissions(ctx, Permission{User: "zzu", VHost: "/", Configure: "^zz", Write: "^zz", Read: "^zz"}))
		addr = addrOf(s)
		// Resources the user may not create but the probes refer to.
		r := rawOpen(t, addr)
		r.send(1, &amqp.QueueDeclare{Queue: "other"})
		expect[*amqp.QueueDeclareOk](r, 1)
	}
	var out strings.Builder
	gen := regexp.MustCompile(`amq\.gen-[A-Za-z0-9_-]{22}`)
	try := func(name string, ms ...amqp.Method) {
		r := rawDial(t, addr)
		if m, _ := r.handshake(rawOpts{user: "zzu", pass: "pw"}); m.Name() != "connection.open-ok" {
			t.Fatalf("login: %+v", m)
		}
		r.send(1, &amqp.ChannelOpen{})
		expect[*amqp.ChannelOpenOk](r, 1)
		for _, m := range ms {
			if p, ok := m.(*amqp.BasicPublish); ok {
				r.publish(1, p, nil, []byte("x"), 131072)
				r.send(1, &amqp.BasicQos{})
				continue
			}
			r.send(1, m)
		}
		for {
			ch, m := r.method()
			line := fmt.Sprintf("%-22s ch=%d %s %+v\n", name, ch, m.Name(), m)
			out.WriteString(gen.ReplaceAllString(line, "amq.gen-X"))
			switch m.(type) {
			case *amqp.ChannelClose, *amqp.ConnectionClose, *amqp.BasicQosOk, *amqp.QueueDeleteOk:
				return
			}
		}
	}
	try("queue.declare", &amqp.QueueDeclare{Queue: "other"})
	try("queue.declare gen", &amqp.QueueDeclare{Queue: ""})
	try("queue.declare ok", &amqp.QueueDeclare{Queue: "zzq"}, &amqp.QueueDelete{Queue: "zzq"})
	try("queue.declare passive", &amqp.QueueDeclare{Queue: "other", Passive: true}, &amqp.BasicQos{})
	try("exchange.declare", &amqp.ExchangeDeclare{Exchange: "other", Type: "direct"})
	try("exchange.delete", &amqp.ExchangeDelete{Exchange: "other"})
	try("queue.delete", &amqp.QueueDelete{Queue: "other"})
	try("queue.purge", &amqp.QueuePurge{Queue: "other"})
	try("bind read x", &amqp.QueueBind{Queue: "zzq", Exchange: "amq.direct"})
	try("bind write q", &amqp.QueueBind{Queue: "other", Exchange: "zzx"})
	try("unbind write q", &amqp.QueueUnbind{Queue: "other", Exchange: "zzx"})
	try("exchange.bind", &amqp.ExchangeBind{Destination: "other", Source: "zzx"})
	try("exchange.bind src", &amqp.ExchangeBind{Destination: "zzx", Source: "amq.direct"})
	try("publish default", &amqp.BasicPublish{RoutingKey: "zzq"})
	try("publish amq.direct", &amqp.BasicPublish{Exchange: "amq.direct", RoutingKey: "zzq"})
	try("consume", &amqp.BasicConsume{Queue: "other"})
	try("get", &amqp.BasicGet{Queue: "other"})
	compareGolden(t, "testdata/permission-errors.golden", out.String())
}
