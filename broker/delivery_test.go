package broker

import (
	"fmt"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"substrate/broker/amqp"
)

// declareQ declares a queue with a unique name, deleted (through url) when
// the test ends.
func declareQ(t *testing.T, url string, ch *amqp091.Channel, prefix string) string {
	t.Helper()
	name := uniq(prefix)
	dropQueues(t, url, name)
	q, err := ch.QueueDeclare(name, false, false, false, false, amqp091.Table{"x-expires": int32(60000)})
	must(t, err)
	return q.Name
}

func publishN(t *testing.T, ch *amqp091.Channel, q string, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		must(t, ch.Publish("", q, false, false, amqp091.Publishing{Body: []byte(fmt.Sprint(i))}))
	}
}

func TestConsumeAckAndProperties(t *testing.T) { forTargets(t, testConsumeAckAndProperties) }

func testConsumeAckAndProperties(t *testing.T, url string) {
	c := dial(t, url)
	ch := channel091(t, c)
	q := declareQ(t, url, ch, "cons")
	dl, err := ch.Consume(q, "", false, false, false, false, nil)
	must(t, err)
	props := amqp091.Publishing{ContentType: "application/json", ContentEncoding: "utf-8", Headers: amqp091.Table{},
		DeliveryMode: 2, Priority: 0, Expiration: "60000", CorrelationId: "cid", Body: []byte(`{"a":1}`)}
	must(t, ch.Publish("", q, false, false, props))
	d := recvTimeout(t, dl, 2*time.Second)
	if d.ContentType != "application/json" || d.ContentEncoding != "utf-8" || d.DeliveryMode != 2 || d.Expiration != "60000" ||
		d.CorrelationId != "cid" || string(d.Body) != `{"a":1}` || d.Exchange != "" || d.RoutingKey != q || d.Redelivered || d.DeliveryTag != 1 {
		t.Fatalf("delivery %+v", d)
	}
	must(t, d.Ack(false))
	// The same tag again: 406 unknown delivery tag.
	closed := ch.NotifyClose(make(chan *amqp091.Error, 1))
	must(t, ch.Ack(1, false))
	e := recvTimeout(t, closed, 2*time.Second)
	if e.Code != 406 || e.Reason != "PRECONDITION_FAILED - unknown delivery tag 1" {
		t.Fatalf("%+v", e)
	}
}

func TestUnknownDeliveryTagClassMethod(t *testing.T) {
	s := startServer(t)
	for _, m := range []amqp.Method{&amqp.BasicAck{DeliveryTag: 5}, &amqp.BasicReject{DeliveryTag: 5}, &amqp.BasicNack{DeliveryTag: 5, Multiple: true}} {
		r := rawOpen(t, addrOf(s))
		r.send(1, m)
		wantClose(t, expect[*amqp.ChannelClose](r, 1), 406, "PRECONDITION_FAILED - unknown delivery tag 5", 60, m.MethodID())
		// The channel id is usable again right after close-ok.
		r.send(1, &amqp.ChannelCloseOk{})
		r.send(1, &amqp.ChannelOpen{})
		expect[*amqp.ChannelOpenOk](r, 1)
	}
}

func TestConsumeOkBeforeDeliver(t *testing.T) {
	s := startServer(t)
	r := rawOpen(t, addrOf(s))
	r.send(1, &amqp.QueueDeclare{Queue: "cob"})
	expect[*amqp.QueueDeclareOk](r, 1)
	for i := 0; i < 5; i++ {
		r.publish(1, &amqp.BasicPublish{RoutingKey: "cob"}, nil, []byte("x"), 131072)
	}
	r.send(1, &amqp.BasicConsume{Queue: "cob"})
	ok := expect[*amqp.BasicConsumeOk](r, 1)
	if !strings.HasPrefix(ok.ConsumerTag, "amq.ctag-") || len(ok.ConsumerTag) != len("amq.ctag-")+22 {
		t.Fatalf("server-generated tag %q", ok.ConsumerTag)
	}
	for i := 1; i <= 5; i++ {
		d := expect[*amqp.BasicDeliver](r, 1)
		if d.DeliveryTag != uint64(i) || d.ConsumerTag != ok.ConsumerTag {
			t.Fatalf("%+v", d)
		}
		r.content()
	}
}

func TestRoundRobinAndPrefetch(t *testing.T) { forTargets(t, testRoundRobinAndPrefetch) }

func testRoundRobinAndPrefetch(t *testing.T, url string) {
	c := dial(t, url)
	ch := channel091(t, c)
	q := declareQ(t, url, ch, "rr")
	must(t, ch.Qos(2, 0, false))
	d1, err := ch.Consume(q, "a", false, false, false, false, nil)
	must(t, err)
	d2, err := ch.Consume(q, "b", false, false, false, false, nil)
	must(t, err)
	publishN(t, ch, q, 6)
	// Each consumer gets 2 (per-consumer prefetch), alternating.
	a1, b1 := recvTimeout(t, d1, 2*time.Second), recvTimeout(t, d2, 2*time.Second)
	a2, b2 := recvTimeout(t, d1, 2*time.Second), recvTimeout(t, d2, 2*time.Second)
	if string(a1.Body) != "0" || string(b1.Body) != "1" || string(a2.Body) != "2" || string(b2.Body) != "3" {
		t.Fatalf("order %s %s %s %s", a1.Body, b1.Body, a2.Body, b2.Body)
	}
	noRecv(t, d1, 100*time.Millisecond)
	noRecv(t, d2, 10*time.Millisecond)
	must(t, a1.Ack(false))
	if d := recvTimeout(t, d1, 2*time.Second); string(d.Body) != "4" {
		t.Fatalf("after ack got %s", d.Body)
	}
	// A multiple ack (tags 1-4) frees credit; "5" goes to either.
	must(t, b2.Ack(true))
	select {
	case d := <-d1:
		if string(d.Body) != "5" {
			t.Fatalf("after multiple ack got %s", d.Body)
		}
	case d := <-d2:
		if string(d.Body) != "5" {
			t.Fatalf("after multiple ack got %s", d.Body)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("no delivery after multiple ack")
	}
}

func TestGlobalPrefetch(t *testing.T) { forTargets(t, testGlobalPrefetch) }

func testGlobalPrefetch(t *testing.T, url string) {
	c := dial(t, url)
	ch := channel091(t, c)
	q1, q2 := declareQ(t, url, ch, "g1"), declareQ(t, url, ch, "g2")
	must(t, ch.Qos(3, 0, true))
	d1, _ := ch.Consume(q1, "a", false, false, false, false, nil)
	d2, _ := ch.Consume(q2, "b", false, false, false, false, nil)
	publishN(t, ch, q1, 2)
	publishN(t, ch, q2, 2)
	got := 0
	var last amqp091.Delivery
	timeout := time.After(500 * time.Millisecond)
loop:
	for {
		select {
		case last = <-d1:
			got++
		case last = <-d2:
			got++
		case <-timeout:
			break loop
		}
	}
	if got != 3 {
		t.Fatalf("got %d deliveries with a channel prefetch of 3", got)
	}
	must(t, last.Ack(true))
	select {
	case <-d1:
	case <-d2:
	case <-time.After(2 * time.Second):
		t.Fatal("no delivery after ack")
	}
}

func TestRejectNackRequeueAndRecover(t *testing.T) { forTargets(t, testRejectNackRequeueAndRecover) }

func testRejectNackRequeueAndRecover(t *testing.T, url string) {
	c := dial(t, url)
	ch := channel091(t, c)
	q := declareQ(t, url, ch, "rej")
	publishN(t, ch, q, 3)
	time.Sleep(50 * time.Millisecond)
	get := func() amqp091.Delivery {
		t.Helper()
		m, ok, err := ch.Get(q, false)
		must(t, err)
		if !ok {
			t.Fatal("get-empty")
		}
		return m
	}
	m0 := get()
	if m0.MessageCount != 2 {
		t.Fatalf("get-ok message count %d, want 2", m0.MessageCount)
	}
	must(t, m0.Reject(true))
	m0 = get()
	if string(m0.Body) != "0" || !m0.Redelivered {
		t.Fatalf("requeued message %q redelivered=%v", m0.Body, m0.Redelivered)
	}
	m1 := get()
	must(t, m1.Nack(true, true)) // both back, in order
	a, b := get(), get()
	if string(a.Body) != "0" || string(b.Body) != "1" {
		t.Fatalf("order after nack multiple: %s %s", a.Body, b.Body)
	}
	must(t, a.Reject(false)) // dropped
	must(t, b.Nack(false, false))
	m2 := get()
	if string(m2.Body) != "2" {
		t.Fatalf("got %s", m2.Body)
	}
	if _, ok, _ := ch.Get(q, false); ok {
		t.Fatal("queue not empty")
	}
	must(t, ch.Recover(true))
	m2 = get()
	if string(m2.Body) != "2" || !m2.Redelivered {
		t.Fatalf("after recover %q %v", m2.Body, m2.Redelivered)
	}
	must(t, m2.Ack(false))
}

func TestRequeueOnChannelClose(t *testing.T) { forTargets(t, testRequeueOnChannelClose) }

func testRequeueOnChannelClose(t *testing.T, url string) {
	c := dial(t, url)
	ch := channel091(t, c)
	q := declareQ(t, url, ch, "rq")
	publishN(t, ch, q, 4)
	cch := channel091(t, c)
	dl, _ := cch.Consume(q, "", false, false, false, false, nil)
	var ds []amqp091.Delivery
	for i := 0; i < 4; i++ {
		ds = append(ds, recvTimeout(t, dl, 2*time.Second))
	}
	must(t, ds[1].Ack(false))
	must(t, cch.Close())
	var got []string
	for i := 0; i < 3; i++ {
		m, ok, err := ch.Get(q, true)
		must(t, err)
		if !ok || !m.Redelivered {
			t.Fatalf("message %d: ok=%v redelivered=%v", i, ok, m.Redelivered)
		}
		got = append(got, string(m.Body))
	}
	if strings.Join(got, ",") != "0,2,3" {
		t.Fatalf("requeued order %v", got)
	}
	// Connection close too.
	publishN(t, ch, q, 2)
	c2 := dial(t, url)
	ch2 := channel091(t, c2)
	dl, _ = ch2.Consume(q, "", false, false, false, false, nil)
	recvTimeout(t, dl, 2*time.Second)
	recvTimeout(t, dl, 2*time.Second)
	c2.Close()
	eventually(t, 2*time.Second, func() bool {
		q, err := ch.QueueDeclarePassive(q, false, false, false, false, nil)
		return err == nil && q.Messages == 2
	}, "requeue on connection close")
}

func TestNoAckAndCancel(t *testing.T) { forTargets(t, testNoAckAndCancel) }

func testNoAckAndCancel(t *testing.T, url string) {
	c := dial(t, url)
	ch := channel091(t, c)
	q := declareQ(t, url, ch, "noack")
	dl, err := ch.Consume(q, "tag1", true, false, false, false, nil)
	must(t, err)
	publishN(t, ch, q, 3)
	for i := 0; i < 3; i++ {
		recvTimeout(t, dl, 2*time.Second)
	}
	must(t, ch.Cancel("tag1", false))
	publishN(t, ch, q, 1)
	time.Sleep(50 * time.Millisecond)
	qq, err := ch.QueueDeclarePassive(q, false, false, false, false, nil)
	must(t, err)
	if qq.Messages != 1 || qq.Consumers != 0 {
		t.Fatalf("after cancel %+v", qq)
	}
	// nowait cancel of an unknown tag is fine.
	must(t, ch.Cancel("unknown", true))
	must(t, ch.Cancel("unknown", false))
}

func TestExclusiveConsumer(t *testing.T) { forTargets(t, testExclusiveConsumer) }

func testExclusiveConsumer(t *testing.T, url string) {
	c := dial(t, url)
	ch := channel091(t, c)
	q := declareQ(t, url, ch, "exc")
	_, err := ch.Consume(q, "", false, true, false, false, nil)
	must(t, err)
	_, err = channel091(t, c).Consume(q, "", false, false, false, false, nil)
	wantAMQPError(t, err, 403, "ACCESS_REFUSED - queue '"+q+"' in vhost '/' in exclusive use")
	q2 := declareQ(t, url, ch, "exc2")
	_, err = ch.Consume(q2, "", false, false, false, false, nil)
	must(t, err)
	_, err = channel091(t, c).Consume(q2, "", false, true, false, false, nil)
	wantAMQPError(t, err, 403, "ACCESS_REFUSED - queue '"+q2+"' in vhost '/' in exclusive use")
}

func TestGetEmptyAndMissing(t *testing.T) { forTargets(t, testGetEmptyAndMissing) }

func testGetEmptyAndMissing(t *testing.T, url string) {
	c := dial(t, url)
	ch := channel091(t, c)
	q := declareQ(t, url, ch, "get")
	if _, ok, err := ch.Get(q, false); ok || err != nil {
		t.Fatalf("get on empty: %v %v", ok, err)
	}
	_, _, err := ch.Get("no"+q, false)
	wantAMQPError(t, err, 404, "NOT_FOUND - no queue 'no"+q+"' in vhost '/'")
	_, err = channel091(t, c).Consume("no"+q, "", false, false, false, false, nil)
	wantAMQPError(t, err, 404, "NOT_FOUND - no queue 'no"+q+"' in vhost '/'")
}

func TestCancelNotifyAfterDeleteOk(t *testing.T) {
	s := startServer(t)
	r := rawOpen(t, addrOf(s))
	r.send(1, &amqp.QueueDeclare{Queue: "cn"})
	expect[*amqp.QueueDeclareOk](r, 1)
	r.send(1, &amqp.BasicConsume{Queue: "cn", ConsumerTag: "7"})
	expect[*amqp.BasicConsumeOk](r, 1)
	r.send(1, &amqp.QueueDelete{Queue: "cn"})
	expect[*amqp.QueueDeleteOk](r, 1)
	if c := expect[*amqp.BasicCancel](r, 1); c.ConsumerTag != "7" || !c.NoWait {
		t.Fatalf("%+v", c)
	}
	// Deleted from another connection: notified too.
	r.send(1, &amqp.QueueDeclare{Queue: "cn2"})
	expect[*amqp.QueueDeclareOk](r, 1)
	r.send(1, &amqp.BasicConsume{Queue: "cn2", ConsumerTag: "8"})
	expect[*amqp.BasicConsumeOk](r, 1)
	c := dial(t, urlOf(s))
	_, err := channel091(t, c).QueueDelete("cn2", false, false, false)
	must(t, err)
	if c := expect[*amqp.BasicCancel](r, 1); c.ConsumerTag != "8" {
		t.Fatalf("%+v", c)
	}
	// amqp091-go's NotifyCancel sees it.
	ch := channel091(t, c)
	_, err = ch.QueueDeclare("cn3", false, false, false, false, nil)
	must(t, err)
	cancels := ch.NotifyCancel(make(chan string, 1))
	_, err = ch.Consume("cn3", "ctag", false, false, false, false, nil)
	must(t, err)
	_, err = channel091(t, c).QueueDelete("cn3", false, false, false)
	must(t, err)
	if tag := recvTimeout(t, cancels, 2*time.Second); tag != "ctag" {
		t.Fatalf("cancel %q", tag)
	}
}

func TestMandatoryReturnBeforeConfirm(t *testing.T) {
	s := startServer(t)
	r := rawOpen(t, addrOf(s))
	r.send(1, &amqp.ConfirmSelect{})
	expect[*amqp.ConfirmSelectOk](r, 1)
	p := &amqp.Properties{ContentType: "application/json", Headers: amqp.Table{}, DeliveryMode: 2, Flags: amqp.FlagPriority}
	r.publish(1, &amqp.BasicPublish{RoutingKey: "reply_nobody", Mandatory: true}, p, []byte("r"), 131072)
	ret := expect[*amqp.BasicReturn](r, 1)
	if ret.ReplyCode != 312 || ret.ReplyText != "NO_ROUTE" || ret.Exchange != "" || ret.RoutingKey != "reply_nobody" {
		t.Fatalf("%+v", ret)
	}
	h, body := r.content()
	if string(body) != "r" || h.Properties.ContentType != "application/json" || !h.Properties.Has(amqp.FlagPriority) {
		t.Fatalf("returned content %+v %q", h.Properties, body)
	}
	if a := expect[*amqp.BasicAck](r, 1); a.DeliveryTag != 1 {
		t.Fatalf("%+v", a)
	}
	// Non-mandatory unroutable: no return, just the ack.
	r.publish(1, &amqp.BasicPublish{RoutingKey: "nobody"}, nil, []byte("r"), 131072)
	if a := expect[*amqp.BasicAck](r, 1); a.DeliveryTag != 2 {
		t.Fatalf("%+v", a)
	}
}

func TestImmediateIs540(t *testing.T) {
	s := startServer(t)
	r := rawOpen(t, addrOf(s))
	r.publish(1, &amqp.BasicPublish{RoutingKey: "x", Immediate: true}, nil, []byte("r"), 131072)
	wantClose(t, expect[*amqp.ConnectionClose](r, 0), 540, "NOT_IMPLEMENTED - immediate=true", 60, 40)
}

func TestPublisherConfirms(t *testing.T) { forTargets(t, testPublisherConfirms) }

func testPublisherConfirms(t *testing.T, url string) {
	c := dial(t, url)
	ch := channel091(t, c)
	q := declareQ(t, url, ch, "conf")
	nowhere := uniq("nowhere") // no queue has this name
	must(t, ch.Confirm(false))
	confirms := ch.NotifyPublish(make(chan amqp091.Confirmation, 1000))
	returns := ch.NotifyReturn(make(chan amqp091.Return, 10))
	for i := 0; i < 500; i++ {
		key := q
		if i%100 == 0 {
			key = nowhere
		}
		must(t, ch.Publish("", key, i%100 == 0, false, amqp091.Publishing{Body: []byte("x")}))
	}
	for i := 1; i <= 500; i++ {
		cf := recvTimeout(t, confirms, 5*time.Second)
		if !cf.Ack || cf.DeliveryTag != uint64(i) {
			t.Fatalf("confirm %d: %+v", i, cf)
		}
	}
	for i := 0; i < 5; i++ {
		if r := recvTimeout(t, returns, 2*time.Second); r.ReplyCode != 312 || r.RoutingKey != nowhere {
			t.Fatalf("%+v", r)
		}
	}
	// Confirm and tx don't mix.
	err := ch.Tx()
	wantAMQPError(t, err, 406, "PRECONDITION_FAILED - cannot switch from confirm to tx mode")
	ch = channel091(t, c)
	must(t, ch.Tx())
	wantAMQPError(t, ch.Confirm(false), 406, "PRECONDITION_FAILED - cannot switch from tx to confirm mode")
}

func TestTransactions(t *testing.T) { forTargets(t, testTransactions) }

func testTransactions(t *testing.T, url string) {
	c := dial(t, url)
	ch := channel091(t, c)
	q := declareQ(t, url, ch, "tx")
	other := channel091(t, c)
	count := func() int {
		t.Helper()
		qq, err := other.QueueDeclarePassive(q, false, false, false, false, nil)
		must(t, err)
		return qq.Messages
	}
	must(t, ch.Tx())
	publishN(t, ch, q, 2)
	time.Sleep(50 * time.Millisecond)
	if n := count(); n != 0 {
		t.Fatalf("%d messages visible before commit", n)
	}
	must(t, ch.TxCommit())
	if n := count(); n != 2 {
		t.Fatalf("%d messages after commit", n)
	}
	publishN(t, ch, q, 1)
	must(t, ch.TxRollback())
	if n := count(); n != 2 {
		t.Fatalf("%d messages after rollback", n)
	}
	// Acks wait for commit; rolled-back acks leave messages unacked.
	m, ok, err := ch.Get(q, false)
	must(t, err)
	if !ok {
		t.Fatal("empty")
	}
	must(t, m.Ack(false))
	must(t, ch.TxRollback())
	must(t, m.Ack(false)) // still outstanding after rollback
	must(t, ch.TxCommit())
	if n := count(); n != 1 {
		t.Fatalf("%d messages after committed ack", n)
	}
	wantAMQPError(t, channel091(t, c).TxCommit(), 406, "PRECONDITION_FAILED - channel is not transactional")
}

func TestBigMessage(t *testing.T) { forTargets(t, testBigMessage) }

func testBigMessage(t *testing.T, url string) {
	c := dial(t, url)
	ch := channel091(t, c)
	q := declareQ(t, url, ch, "big")
	body := []byte(strings.Repeat("0123456789", 300000)) // 3 MB, many frames
	must(t, ch.Publish("", q, false, false, amqp091.Publishing{Body: body}))
	dl, _ := ch.Consume(q, "", true, false, false, false, nil)
	d := recvTimeout(t, dl, 5*time.Second)
	if string(d.Body) != string(body) {
		t.Fatal("body changed")
	}
}

// TestCancelKeepsUnacked: as in RabbitMQ, basic.cancel does not requeue
// what the consumer has not acked yet; the channel still holds it (it can
// be acked) until the channel closes.
func TestCancelKeepsUnacked(t *testing.T) { forTargets(t, testCancelKeepsUnacked) }

func testCancelKeepsUnacked(t *testing.T, url string) {
	c := dial(t, url)
	ch := channel091(t, c)
	q := declareQ(t, url, ch, "cku")
	publishN(t, ch, q, 2)
	cch := channel091(t, c)
	dl, err := cch.Consume(q, "k", false, false, false, false, nil)
	must(t, err)
	d0 := recvTimeout(t, dl, 2*time.Second)
	recvTimeout(t, dl, 2*time.Second)
	must(t, cch.Cancel("k", false))
	time.Sleep(50 * time.Millisecond)
	qq, err := ch.QueueDeclarePassive(q, false, false, false, false, nil)
	must(t, err)
	if qq.Messages != 0 {
		t.Fatalf("%d messages ready after cancel, want 0 (still unacked)", qq.Messages)
	}
	must(t, d0.Ack(false))
	must(t, cch.Close())
	eventually(t, 2*time.Second, func() bool {
		qq, err := ch.QueueDeclarePassive(q, false, false, false, false, nil)
		return err == nil && qq.Messages == 1
	}, "the unacked one requeued at channel close")
}

// TestConfirmsFlowWhilePublishing: a publisher that streams ahead of the
// broker gets its confirms as the broker reads on, as from RabbitMQ, not
// only once its input runs dry. The publisher writes 3,000 messages and
// the start of one more, and then nothing: the broker's reader waits in
// mid-frame, and all but the last confirmBatch messages at most must be
// confirmed by then; the rest once the last message is complete.
func TestConfirmsFlowWhilePublishing(t *testing.T) {
	s := startServer(t)
	r := rawOpen(t, addrOf(s))
	r.send(1, &amqp.QueueDeclare{Queue: "stream"})
	expect[*amqp.QueueDeclareOk](r, 1)
	r.send(1, &amqp.ConfirmSelect{})
	expect[*amqp.ConfirmSelectOk](r, 1)
	const n = 3000
	var b []byte
	for range n + 1 {
		b, _ = amqp.AppendMethodFrame(b, 1, &amqp.BasicPublish{RoutingKey: "stream"})
		b, _ = amqp.AppendHeaderFrame(b, 1, amqp.ClassBasic, 5, &amqp.Properties{})
		b = amqp.AppendBodyFrames(b, 1, []byte("hello"), 131072)
	}
	split := len(b) - 30 // inside the last message
	r.write(b[:split])
	r.ackedTo(n - confirmBatch + 1)
	r.write(b[split:])
	r.ackedTo(n + 1)
}
