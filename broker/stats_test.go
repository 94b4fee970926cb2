package broker

import (
	"context"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"substrate/broker/amqp"
)

func queueInfo(t testing.TB, s *Server, vhost, name string) QueueInfo {
	t.Helper()
	for _, q := range s.Queues(vhost) {
		if q.Name == name {
			return q
		}
	}
	t.Fatalf("queue %q not listed", name)
	return QueueInfo{}
}

func channelInfo(s *Server, connName string, number int) (ChannelInfo, bool) {
	for _, ci := range s.Channels() {
		if ci.ClientConnectionName == connName && ci.Number == number {
			return ci, true
		}
	}
	return ChannelInfo{}, false
}

// waitStats polls got until it equals want (the broker handles acks
// after the client sent them), then fails with both.
func waitStats(t *testing.T, what string, want MessageStats, got func() MessageStats) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		g := got()
		if g == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s message stats:\n got %+v\nwant %+v", what, g, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestMessageStatsCountExactly publishes, consumes, gets, acks and
// rejects known numbers of messages and checks every counter, per
// channel, per queue and in the overview, also after the connections
// closed (the global counters never go back).
func TestMessageStatsCountExactly(t *testing.T) {
	s := startServer(t)
	pc := dialNamed(t, urlOf(s), "publisher")
	pub := channel091(t, pc)
	q, err := pub.QueueDeclare("stats.q", false, false, false, false, nil)
	must(t, err)
	must(t, pub.Confirm(false))
	confirms := pub.NotifyPublish(make(chan amqp091.Confirmation, 100))
	returns := pub.NotifyReturn(make(chan amqp091.Return, 10))
	body := []byte("0123456789")
	for i := 0; i < 10; i++ {
		must(t, pub.Publish("", q.Name, false, false, amqp091.Publishing{Body: body}))
	}
	for i := 0; i < 2; i++ { // mandatory and unroutable: returned
		must(t, pub.Publish("", "nowhere", true, false, amqp091.Publishing{Body: body}))
	}
	for i := 0; i < 3; i++ { // unroutable: dropped
		must(t, pub.Publish("", "nowhere", false, false, amqp091.Publishing{Body: body}))
	}
	for i := 0; i < 15; i++ {
		if c := recvTimeout(t, confirms, 5*time.Second); !c.Ack {
			t.Fatalf("nack %+v", c)
		}
	}
	recvTimeout(t, returns, 5*time.Second)
	recvTimeout(t, returns, 5*time.Second)

	// The queue holds 10 ready messages of 10 bytes.
	qi := queueInfo(t, s, "/", q.Name)
	if qi.MessagesReady != 10 || qi.MessageBytesReady != 100 || qi.MessageBytes != 100 || qi.MessagesUnacknowledged != 0 ||
		qi.State != "running" || qi.VHost != "/" || qi.MessageStats.Publish != 10 || qi.MemoryBytes < 100 {
		t.Fatalf("queue after publishing: %+v", qi)
	}

	cc := dialNamed(t, urlOf(s), "consumer")
	sub := channel091(t, cc)
	must(t, sub.Qos(100, 0, false))
	dl, err := sub.Consume(q.Name, "c1", false, false, false, false, nil)
	must(t, err)
	var ds []amqp091.Delivery
	for i := 0; i < 10; i++ {
		ds = append(ds, recvTimeout(t, dl, 5*time.Second))
	}
	qi = queueInfo(t, s, "/", q.Name)
	if qi.MessagesUnacknowledged != 10 || qi.MessageBytesUnacknowledged != 100 || qi.MessagesReady != 0 {
		t.Fatalf("queue with 10 unacked: %+v", qi)
	}
	// 8 acked; 2 rejected with requeue come back redelivered, then acked.
	for _, d := range ds[:8] {
		must(t, d.Ack(false))
	}
	must(t, ds[8].Nack(false, true))
	must(t, ds[9].Reject(true))
	for i := 0; i < 2; i++ {
		d := recvTimeout(t, dl, 5*time.Second)
		if !d.Redelivered {
			t.Fatal("not redelivered")
		}
		must(t, d.Ack(false))
	}
	must(t, sub.Cancel("c1", false))
	// basic.get: empty, then with ack and without.
	if _, ok, err := sub.Get(q.Name, false); err != nil || ok {
		t.Fatalf("get on an empty queue: %v %v", ok, err)
	}
	must(t, pub.Publish("", q.Name, false, false, amqp091.Publishing{Body: body}))
	must(t, pub.Publish("", q.Name, false, false, amqp091.Publishing{Body: body}))
	recvTimeout(t, confirms, 5*time.Second)
	recvTimeout(t, confirms, 5*time.Second)
	d, ok, err := sub.Get(q.Name, false)
	if err != nil || !ok {
		t.Fatalf("get: %v %v", ok, err)
	}
	must(t, d.Ack(false))
	if _, ok, err := sub.Get(q.Name, true); err != nil || !ok {
		t.Fatalf("get no-ack: %v %v", ok, err)
	}

	pubWant := MessageStats{Publish: 17, Confirm: 17, ReturnUnroutable: 2, DropUnroutable: 3, ReceivedConfirm: 17}
	subWant := MessageStats{Deliver: 12, Get: 1, GetNoAck: 1, GetEmpty: 1, Redeliver: 2, Ack: 11, DeliverGet: 14}
	queueWant := MessageStats{Publish: 12, Deliver: 12, Get: 1, GetNoAck: 1, GetEmpty: 1, Redeliver: 2, Ack: 11, DeliverGet: 14}
	global := pubWant
	global.Deliver, global.Get, global.GetNoAck, global.GetEmpty, global.Redeliver, global.Ack, global.DeliverGet =
		subWant.Deliver, subWant.Get, subWant.GetNoAck, subWant.GetEmpty, subWant.Redeliver, subWant.Ack, subWant.DeliverGet
	chStats := func(conn string) func() MessageStats {
		return func() MessageStats {
			ci, _ := channelInfo(s, conn, 1)
			return ci.MessageStats
		}
	}
	waitStats(t, "publisher channel", pubWant, chStats("publisher"))
	waitStats(t, "consumer channel", subWant, chStats("consumer"))
	waitStats(t, "queue", queueWant, func() MessageStats { return queueInfo(t, s, "/", q.Name).MessageStats })
	waitStats(t, "global", global, func() MessageStats { return s.Overview().MessageStats })
	waitStats(t, "vhost", global, func() MessageStats { return s.VHostStats()["/"].MessageStats })
	qi = queueInfo(t, s, "/", q.Name)
	if qi.Messages != 0 || qi.MessageBytes != 0 || qi.MessageBytesUnacknowledged != 0 {
		t.Fatalf("queue after settling everything: %+v", qi)
	}
	if time.Since(qi.IdleSince) > time.Minute || qi.IdleSince.After(time.Now()) {
		t.Fatalf("idle since %v", qi.IdleSince)
	}

	// Closed channels and connections keep counting in the total.
	must(t, sub.Close())
	must(t, pc.Close())
	eventually(t, 5*time.Second, func() bool { return len(s.Connections()) == 1 && len(s.Channels()) == 0 }, "publisher gone")
	if got := s.Overview().MessageStats; got != global {
		t.Fatalf("after closing:\n got %+v\nwant %+v", got, global)
	}
	if got := s.VHostStats()["/"]; got.MessageStats != global || got.Net.RecvOct == 0 {
		t.Fatalf("vhost after closing:\n got %+v\nwant %+v", got, global)
	}
}

// TestVHostStatsPerVHost: each vhost counts its own connections', the
// closed ones' included; a deleted vhost's counters go with it.
func TestVHostStatsPerVHost(t *testing.T) {
	s := startServer(t)
	ctx := context.Background()
	must(t, s.AddVHost(ctx, "v2"))
	must(t, s.SetPermissions(ctx, Permission{User: "guest", VHost: "v2", Configure: ".*", Write: ".*", Read: ".*"}))
	c := dial(t, urlOf(s)+"v2")
	ch := channel091(t, c)
	must(t, ch.Confirm(false))
	confirms := ch.NotifyPublish(make(chan amqp091.Confirmation, 10))
	for i := 0; i < 3; i++ {
		must(t, ch.Publish("", "none", false, false, amqp091.Publishing{}))
	}
	for i := 0; i < 3; i++ {
		recvTimeout(t, confirms, 5*time.Second)
	}
	must(t, c.Close())
	eventually(t, 5*time.Second, func() bool { return len(s.Connections()) == 0 }, "connection closed")
	d := dial(t, urlOf(s))
	must(t, channel091(t, d).Publish("", "none", false, false, amqp091.Publishing{}))
	eventually(t, 5*time.Second, func() bool { return s.VHostStats()["/"].MessageStats.Publish == 1 }, "a publish in /")
	st := s.VHostStats()
	if m := st["v2"].MessageStats; m.Publish != 3 || m.DropUnroutable != 3 || m.Confirm != 3 || m.ReceivedConfirm != 3 || st["v2"].Net.RecvOct == 0 {
		t.Fatalf("v2 %+v", st["v2"])
	}
	if m := st["/"].MessageStats; m != (MessageStats{Publish: 1, DropUnroutable: 1}) || len(st) != 2 {
		t.Fatalf("vhosts %+v", st)
	}
	must(t, s.DeleteVHost(ctx, "v2"))
	must(t, s.AddVHost(ctx, "v2"))
	if st := s.VHostStats(); st["v2"] != (VHostStats{}) || st["/"].MessageStats.Publish != 1 {
		t.Fatalf("after deleting and adding v2 again: %+v", st)
	}
}

// TestChannelsConsumersAndConnectionInfo checks what list_channels,
// list_consumers and list_connections show.
func TestChannelsConsumersAndConnectionInfo(t *testing.T) {
	s := startServer(t)
	c := dialNamed(t, urlOf(s), "nova-compute:1234")
	setup := channel091(t, c) // channel 1
	_, err := setup.QueueDeclare("info.q", false, false, false, false, nil)
	must(t, err)
	_, err = setup.QueueDeclare("info.sac", false, false, false, false, amqp091.Table{"x-single-active-consumer": true})
	must(t, err)

	cons := channel091(t, c) // channel 2: two consumers, per-consumer and global prefetch
	must(t, cons.Qos(7, 0, false))
	must(t, cons.Qos(50, 0, true))
	_, err = cons.Consume("info.q", "tag-a", false, true, false, false, amqp091.Table{"x-priority": int32(3)})
	must(t, err)
	_, err = cons.Consume("info.sac", "sac-1", true, false, false, false, nil)
	must(t, err)
	_, err = cons.Consume("info.sac", "sac-2", true, false, false, false, nil)
	must(t, err)

	tx := channel091(t, c) // channel 3: a transaction with 2 publishes held
	must(t, tx.Tx())
	must(t, tx.Publish("", "info.q", false, false, amqp091.Publishing{Body: []byte("a")}))
	must(t, tx.Publish("", "info.q", false, false, amqp091.Publishing{Body: []byte("b")}))

	conf := channel091(t, c) // channel 4: confirm mode
	must(t, conf.Confirm(false))

	var chans []ChannelInfo
	eventually(t, 5*time.Second, func() bool {
		chans = s.Channels()
		return len(chans) == 4 && chans[2].MessagesUncommitted == 2
	}, "four channels, two uncommitted publishes")
	ci := s.Connections()[0]
	local := c.LocalAddr().String()
	wantConn := ci.Name == local+" -> "+addrOf(s) && ci.ConnectionName == "nova-compute:1234" && ci.User == "guest" &&
		ci.VHost == "/" && ci.PeerHost == "127.0.0.1" && fmt.Sprintf("127.0.0.1:%d", ci.PeerPort) == local &&
		fmt.Sprintf("%s:%d", ci.Host, ci.Port) == addrOf(s) && !ci.SSL && ci.Protocol == "AMQP 0-9-1" &&
		ci.AuthMechanism == "PLAIN" && ci.State == "running" && ci.Channels == 4 && ci.ChannelMax == 2047 &&
		ci.FrameMax == 131072 && ci.Timeout == 10 && time.Since(ci.ConnectedAt) < time.Minute &&
		ci.ClientProperties["connection_name"] == "nova-compute:1234" &&
		ci.RecvOct > 0 && ci.SendOct > 0 && ci.RecvCnt > 0 && ci.SendCnt > 0 && ci.ID > 0
	if !wantConn {
		t.Fatalf("connection info %+v", ci)
	}
	for i, ch := range chans {
		if ch.Number != i+1 || ch.Name != fmt.Sprintf("%s (%d)", ci.Name, i+1) || ch.ConnectionName != ci.Name ||
			ch.ClientConnectionName != "nova-compute:1234" || ch.User != "guest" || ch.VHost != "/" || ch.State != "running" ||
			ch.ConnectionID != ci.ID || ch.PeerPort != ci.PeerPort {
			t.Fatalf("channel %d: %+v", i+1, ch)
		}
	}
	if ch := chans[1]; ch.ConsumerCount != 3 || ch.PrefetchCount != 7 || ch.GlobalPrefetchCount != 50 || ch.Transactional || ch.Confirm {
		t.Fatalf("consuming channel %+v", ch)
	}
	if ch := chans[2]; !ch.Transactional || ch.Confirm || ch.MessagesUncommitted != 2 || ch.MessageStats.Publish != 0 {
		t.Fatalf("transactional channel %+v", ch)
	}
	if ch := chans[3]; ch.Transactional || !ch.Confirm || ch.MessagesUnconfirmed != 0 {
		t.Fatalf("confirm channel %+v", ch)
	}

	consumers := s.Consumers()
	if len(consumers) != 3 {
		t.Fatalf("consumers %+v", consumers)
	}
	a := consumers[0]
	want := ConsumerInfo{Queue: "info.q", VHost: "/", ConsumerTag: "tag-a", ChannelName: ci.Name + " (2)", ChannelNumber: 2,
		ConnectionID: ci.ID, ConnectionName: ci.Name, ClientConnectionName: "nova-compute:1234", PeerHost: "127.0.0.1",
		PeerPort: ci.PeerPort, User: "guest", AckRequired: true, Exclusive: true, PrefetchCount: 7, Priority: 3,
		Active: true, ActivityStatus: "up", Arguments: map[string]any{"x-priority": int32(3)}}
	if !reflect.DeepEqual(a, want) {
		t.Fatalf("consumer\n got %+v\nwant %+v", a, want)
	}
	if s1, s2 := consumers[1], consumers[2]; s1.ConsumerTag != "sac-1" || !s1.Active || s1.ActivityStatus != "single_active" ||
		s2.ConsumerTag != "sac-2" || s2.Active || s2.ActivityStatus != "waiting" || s1.AckRequired {
		t.Fatalf("single active consumers %+v %+v", s1, s2)
	}
	if qi := queueInfo(t, s, "/", "info.sac"); qi.Consumers != 2 || qi.ActiveConsumers != 1 || qi.SingleActiveConsumerTag != "sac-1" || qi.ExclusiveConsumerTag != "" {
		t.Fatalf("sac queue %+v", qi)
	}
	if qi := queueInfo(t, s, "/", "info.q"); qi.Consumers != 1 || qi.ActiveConsumers != 1 || qi.SingleActiveConsumerTag != "" || qi.ExclusiveConsumerTag != "tag-a" {
		t.Fatalf("queue with an exclusive consumer %+v", qi)
	}

	// Committing counts the publishes; acks held in a transaction show.
	must(t, cons.Cancel("tag-a", false))
	must(t, tx.TxCommit())
	cc := channel091(t, dialNamed(t, urlOf(s), "getter"))
	must(t, cc.Tx())
	d, ok, err := cc.Get("info.sac", false)
	_ = d
	if err != nil || ok {
		t.Fatalf("get on info.sac: %v %v", ok, err)
	}
	must(t, setup.Publish("", "info.sac", false, false, amqp091.Publishing{Body: []byte("x")})) // goes to sac-1
	d, ok, err = cc.Get("info.q", false)
	if err != nil || !ok {
		t.Fatalf("get: %v %v", ok, err)
	}
	must(t, d.Ack(false))
	eventually(t, 5*time.Second, func() bool {
		ch, _ := channelInfo(s, "getter", 1)
		return ch.AcksUncommitted == 1 && ch.MessagesUnacknowledged == 0
	}, "one ack held by the transaction")
	must(t, cc.TxCommit())
	eventually(t, 5*time.Second, func() bool {
		ch, _ := channelInfo(s, "getter", 1)
		tch, _ := channelInfo(s, "nova-compute:1234", 3)
		return ch.AcksUncommitted == 0 && ch.MessageStats.Ack == 1 && tch.MessagesUncommitted == 0 && tch.MessageStats.Publish == 2
	}, "transactions committed")

	// Closing the connection by ID.
	closed := c.NotifyClose(make(chan *amqp091.Error, 1))
	must(t, s.CloseConnectionByID(ci.ID, "test"))
	if e := recvTimeout(t, closed, 3*time.Second); e.Code != 320 || e.Reason != "CONNECTION_FORCED - test" {
		t.Fatalf("%+v", e)
	}
	if err := s.CloseConnectionByID(ci.ID, "again"); err == nil {
		eventually(t, 3*time.Second, func() bool { return s.CloseConnectionByID(ci.ID, "again") != nil }, "connection gone")
	}
}

// TestOverviewTotalsAndChurn checks the object totals, queue totals and
// churn counters.
func TestOverviewTotalsAndChurn(t *testing.T) {
	s := startServer(t)
	o := s.Overview()
	if o.ObjectTotals.Exchanges != 6 || o.ObjectTotals.Queues != 0 || o.ObjectTotals.VHosts != 1 || o.Churn != (ChurnStats{}) {
		t.Fatalf("fresh overview %+v", o)
	}
	c := dial(t, urlOf(s))
	ch := channel091(t, c)
	for i := 0; i < 3; i++ {
		_, err := ch.QueueDeclare(fmt.Sprintf("ov.%d", i), false, false, false, false, nil)
		must(t, err)
	}
	_, err := ch.QueueDeclare("ov.0", false, false, false, false, nil) // exists: declared, not created
	must(t, err)
	_, err = ch.QueueDeclarePassive("ov.1", false, false, false, false, nil)
	must(t, err)
	_, err = ch.QueueDelete("ov.2", false, false, false)
	must(t, err)
	_, err = ch.QueueDeclare("", false, false, true, false, nil) // exclusive: deleted with the connection
	must(t, err)
	must(t, ch.Publish("", "ov.0", false, false, amqp091.Publishing{Body: []byte("x")}))
	must(t, ch.Publish("", "ov.1", false, false, amqp091.Publishing{Body: []byte("x")}))
	_, err = ch.Consume("ov.1", "", false, false, false, false, nil)
	must(t, err)
	ch2 := channel091(t, c)
	must(t, ch2.Close())
	eventually(t, 5*time.Second, func() bool {
		o = s.Overview()
		return o.QueueTotals == QueueTotals{Messages: 2, MessagesReady: 1, MessagesUnacknowledged: 1}
	}, "queue totals")
	if o.ObjectTotals != (ObjectTotals{Connections: 1, Channels: 1, Exchanges: 6, Queues: 3, Consumers: 1, VHosts: 1}) {
		t.Fatalf("object totals %+v", o.ObjectTotals)
	}
	if o.Churn != (ChurnStats{ConnectionCreated: 1, ChannelCreated: 2, ChannelClosed: 1, QueueDeclared: 6, QueueCreated: 4, QueueDeleted: 1}) {
		t.Fatalf("churn %+v", o.Churn)
	}
	if o.Net.RecvOct == 0 || o.Net.SendCnt == 0 {
		t.Fatalf("net %+v", o.Net)
	}
	must(t, c.Close())
	eventually(t, 5*time.Second, func() bool { o = s.Overview(); return o.Churn.ConnectionClosed == 1 }, "connection closed")
	if o.Churn != (ChurnStats{ConnectionCreated: 1, ConnectionClosed: 1, ChannelCreated: 2, ChannelClosed: 2, QueueDeclared: 6, QueueCreated: 4, QueueDeleted: 2}) {
		t.Fatalf("churn after close %+v", o.Churn)
	}
	if o.ObjectTotals.Connections != 0 || o.ObjectTotals.Channels != 0 || o.ObjectTotals.Queues != 2 || o.QueueTotals.MessagesReady != 2 {
		t.Fatalf("after close %+v", o)
	}
}

// TestListingsDuringChurn lists channels, consumers, connections and the
// overview while clients open and close channels, consume and publish,
// under the race detector; the global counters never go back.
func TestListingsDuringChurn(t *testing.T) {
	s := startServer(t)
	setup := channel091(t, dial(t, urlOf(s)))
	_, err := setup.QueueDeclare("churn.q", false, false, false, false, nil)
	must(t, err)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 3; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := amqp091.Dial(urlOf(s))
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				ch, err := c.Channel()
				if err != nil {
					t.Error(err)
					return
				}
				ch.Publish("", "churn.q", false, false, amqp091.Publishing{Body: []byte("m")})
				dl, err := ch.Consume("churn.q", "", i%2 == 0, false, false, false, nil)
				if err == nil {
					select {
					case d := <-dl:
						d.Ack(false)
					case <-time.After(50 * time.Millisecond):
					}
				}
				ch.Close()
				if i%5 == 0 { // connections churn too
					c.Close()
					if c, err = amqp091.Dial(urlOf(s)); err != nil {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	var last Overview
	deadline := time.Now().Add(1500 * time.Millisecond)
	for time.Now().Before(deadline) {
		s.Channels()
		s.Consumers()
		s.Connections()
		s.Queues("/")
		o := s.Overview()
		m, l := o.MessageStats, last.MessageStats
		if m.Publish < l.Publish || m.Ack < l.Ack || m.DeliverGet < l.DeliverGet || m.DeliverNoAck < l.DeliverNoAck ||
			o.Net.RecvOct < last.Net.RecvOct || o.Net.SendCnt < last.Net.SendCnt || o.Churn.ChannelClosed < last.Churn.ChannelClosed {
			t.Fatalf("a counter went back:\n%+v\n%+v", last, o)
		}
		last = o
	}
	close(stop)
	wg.Wait()
	if last.MessageStats.Publish == 0 || last.Churn.ChannelCreated < 3 {
		t.Fatalf("no traffic: %+v", last)
	}
}

// TestConnectionStateUnderAlarm: with an alarm on, connections are
// "blocking" until they publish, then "blocked", as RabbitMQ lists them;
// "running" again once it clears.
func TestConnectionStateUnderAlarm(t *testing.T) {
	var used atomic.Uint64
	s := startServer(t, func(c *Config) {
		c.MemoryHighWatermark = 1000
		c.memUsage = used.Load
	})
	pub := rawOpen(t, addrOf(s)) // channel 1 open
	idle := dial(t, urlOf(s))
	states := func() map[string]string {
		out := map[string]string{}
		for _, c := range s.Connections() {
			out[c.Peer] = c.State
		}
		return out
	}
	pubPeer, idlePeer := pub.nc.LocalAddr().String(), idle.LocalAddr().String()
	eventually(t, 2*time.Second, func() bool { st := states(); return st[pubPeer] == "running" && st[idlePeer] == "running" }, "running")
	used.Store(2000)
	eventually(t, 2*time.Second, s.MemoryAlarm, "alarm on")
	eventually(t, 2*time.Second, func() bool { st := states(); return st[pubPeer] == "blocking" && st[idlePeer] == "blocking" }, "blocking")
	pub.publish(1, &amqp.BasicPublish{RoutingKey: "nowhere"}, &amqp.Properties{}, []byte("x"), 4096)
	eventually(t, 2*time.Second, func() bool { st := states(); return st[pubPeer] == "blocked" && st[idlePeer] == "blocking" }, "publisher blocked")
	used.Store(10)
	eventually(t, 2*time.Second, func() bool { st := states(); return st[pubPeer] == "running" && st[idlePeer] == "running" }, "running again")
}

// TestQueuePersistentCounts: persistent messages of a durable queue
// (kept in the message store) count in MessagesPersistent, ready or
// unacknowledged; transient ones and those of transient queues do not.
func TestQueuePersistentCounts(t *testing.T) {
	b := newDurableBroker(t)
	c := dial(t, b.start())
	ch := channel091(t, c)
	declareDurable(t, ch, "pers.q", nil)
	_, err := ch.QueueDeclare("pers.transient", false, false, false, false, nil)
	must(t, err)
	publishConfirmed(t, c, "pers.q", 2, "p1", "p2", "p3")
	publishConfirmed(t, c, "pers.q", 1, "t1", "t2")
	publishConfirmed(t, c, "pers.transient", 2, "x1")
	qi := queueInfo(t, b.s, "/", "pers.q")
	if qi.MessagesPersistent != 3 || qi.MessageBytesPersistent != 6 || qi.Messages != 5 || qi.MessageBytes != 10 {
		t.Fatalf("durable queue %+v", qi)
	}
	if qi := queueInfo(t, b.s, "/", "pers.transient"); qi.MessagesPersistent != 0 || qi.Messages != 1 {
		t.Fatalf("transient queue %+v", qi)
	}
	d, ok, err := ch.Get("pers.q", false) // p1, unacknowledged: still persistent
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	if qi := queueInfo(t, b.s, "/", "pers.q"); qi.MessagesPersistent != 3 || qi.MessagesUnacknowledged != 1 || qi.MessageBytesUnacknowledged != 2 {
		t.Fatalf("with one unacked %+v", qi)
	}
	must(t, d.Ack(false))
	eventually(t, 5*time.Second, func() bool {
		qi := queueInfo(t, b.s, "/", "pers.q")
		return qi.MessagesPersistent == 2 && qi.MessageBytesPersistent == 4 && qi.Messages == 4
	}, "two persistent left")
	_, err = ch.QueuePurge("pers.q", false)
	must(t, err)
	if qi := queueInfo(t, b.s, "/", "pers.q"); qi.MessagesPersistent != 0 || qi.MessageBytes != 0 {
		t.Fatalf("after purge %+v", qi)
	}
}
