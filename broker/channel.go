package broker

import (
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"substrate/broker/amqp"
	"substrate/broker/store"
)

// delivery is a message delivered on a channel and not yet settled.
type delivery struct {
	tag uint64
	q   *Queue
	c   *consumer // nil for basic.get
	e   entry
}

// txPub is a publish held until tx.commit.
type txPub struct {
	x         *exchange
	m         *message
	mandatory bool
	headers   amqp.Table
}

// txAck is an ack, nack or reject held until tx.commit.
type txAck struct {
	ds      []*delivery
	requeue bool
	ack     bool
}

// channel is an AMQP channel of a connection. The fields before mu are
// owned by the connection's reader goroutine; those after it are shared
// with the queues delivering to the channel.
type channel struct {
	c       *conn
	id      uint16
	seq     amqp.Sequence
	closing bool // we sent channel.close; waiting for close-ok

	confirm   bool
	tx        bool
	dirty     bool // in c.dirty
	permValid bool // next to the other flags: channels are many
	txPubs    []txPub
	txAcks    []txAck
	prefetch  int         // basic.qos global=false: for consumers created next
	lastQueue string      // for the "" queue name shortcut
	settling  []*delivery // settle's scratch: the deliveries an ack takes (small, cleared)
	permGen   uint64
	permOK    string // exchange last allowed for write (when permValid)

	*content // the publish being assembled; nil until the channel's first publish

	conf confirms // publisher confirms, shared with the store's committer

	// For the admin listings (Channels), which run on other goroutines:
	// message counters (stats.go) and copies of reader-owned state,
	// written by the reader when that state changes.
	stats      statCounters
	modes      atomic.Uint32 // modeConfirm, modeTx
	qos        atomic.Int32  // prefetch
	txMsgs     atomic.Int32  // len(txPubs)
	txAckCount atomic.Int32  // deliveries in txAcks

	mu             sync.Mutex
	closed         bool
	nextTag        uint64
	unacked        []*delivery // by increasing tag
	globalPrefetch int
	globalUnacked  int
	consumers      map[string]*consumer
}

// channel.modes: confirm.select or tx.select seen.
const (
	modeConfirm = 1 << iota
	modeTx
)

// content is the basic.publish a channel is assembling. Most channels
// never publish (a consumer's, an RPC reply queue's), so they do without.
type content struct {
	pub      amqp.BasicPublish
	props    amqp.Properties
	rawProps []byte
	bodySize uint64
	bodyBuf  []byte
}

func newChannel(c *conn, id uint16) *channel {
	return &channel{c: c, id: id}
}

// ---- delivery side (called by queues, under the queue's lock) ----

func (ch *channel) canDeliver(cs *consumer) bool {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	noAck := cs.noAck
	if ch.closed || ch.consumers[cs.tag] != cs {
		return false
	}
	if !noAck && ch.globalPrefetch > 0 && ch.globalUnacked >= ch.globalPrefetch {
		return false
	}
	if !ch.c.out.writable() {
		// Set the flag, then look again: either we see the writer's
		// drain, or the writer sees the flag and wakes the queues.
		ch.c.throttled.Store(true)
		return ch.c.out.writable()
	}
	return true
}

// deliver sends out, the message of e, to consumer cs; false if the
// channel closed meanwhile. out may differ from e.m: a paged-out message
// read back from the store, or one with an x-delivery-count header; the
// delivery keeps e for a requeue.
//
// fl is the flusher of the reader on whose behalf the queue delivers
// (outbound.kickFor), nil on other goroutines.
func (ch *channel) deliver(cs *consumer, e entry, out *message, fl *flusher) bool {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.closed || ch.consumers[cs.tag] != cs {
		return false
	}
	ch.nextTag++
	if !cs.noAck {
		ch.unacked = append(ch.unacked, &delivery{tag: ch.nextTag, q: cs.q, c: cs, e: e})
		ch.globalUnacked++
		ch.holdLocked(e)
	}
	m := &amqp.BasicDeliver{ConsumerTag: cs.tag, DeliveryTag: ch.nextTag, Redelivered: e.redelivered,
		Exchange: out.exchange, RoutingKey: out.routingKey}
	ch.c.out.contentFor(ch.id, m, out, ch.c.frameMax, fl)
	ch.countDelivery(statDeliver, statDeliverNoAck, cs.noAck, e.redelivered)
	return true
}

// deliverGet sends basic.get-ok for e (out as for deliver).
func (ch *channel) deliverGet(q *Queue, e entry, out *message, noAck bool, left int) bool {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	ch.nextTag++
	if !noAck {
		ch.unacked = append(ch.unacked, &delivery{tag: ch.nextTag, q: q, e: e})
		ch.holdLocked(e)
	}
	m := &amqp.BasicGetOk{DeliveryTag: ch.nextTag, Redelivered: e.redelivered, Exchange: out.exchange,
		RoutingKey: out.routingKey, MessageCount: uint32(left)}
	ch.c.out.content(ch.id, m, out, ch.c.frameMax)
	ch.countDelivery(statGet, statGetNoAck, noAck, e.redelivered)
	return true
}

// countDelivery counts a delivery (ack, noAck: which counter) and a
// redelivery.
func (ch *channel) countDelivery(ack, noAckStat stat, noAck, redelivered bool) {
	if noAck {
		ack = noAckStat
	}
	ch.stats.add(ack, 1)
	if redelivered {
		ch.stats.add(statRedeliver, 1)
	}
}

// holdLocked counts an unacknowledged delivery's body, if it keeps one in
// memory, in the broker's memory until the delivery is settled (take,
// teardown).
func (ch *channel) holdLocked(e entry) {
	if e.m != nil {
		ch.c.srv.mem.hold(e.m)
	}
}

func (ch *channel) releaseDeliveries(ds []*delivery) {
	for _, d := range ds {
		if d.e.m != nil {
			ch.c.srv.mem.release(d.e.m)
		}
	}
}

// serverCancel ends a consumer whose queue was deleted, telling the client
// (basic.cancel) if it has consumer_cancel_notify.
func (ch *channel) serverCancel(cs *consumer) {
	ch.c.removeConsumer(cs)
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.consumers[cs.tag] != cs {
		return
	}
	delete(ch.consumers, cs.tag)
	if !ch.closed && ch.c.cancelNotify {
		ch.c.out.method(ch.id, &amqp.BasicCancel{ConsumerTag: cs.tag, NoWait: true})
	}
}

// teardown closes the channel's state: consumers are cancelled and
// unacked messages requeued, in order, at the head of their queues.
func (ch *channel) teardown() {
	ch.mu.Lock()
	if ch.closed {
		ch.mu.Unlock()
		return
	}
	ch.closed = true
	ch.conf.close()
	cs := ch.consumers
	ch.consumers = nil
	ds := ch.unacked
	ch.unacked = nil
	ch.mu.Unlock()
	ch.releaseDeliveries(ds) // requeue holds them again
	ch.dropBody()
	for _, ta := range ch.txAcks { // held acks of an open transaction are void
		ds = append(ds, ta.ds...)
	}
	ch.dropTxPubs()
	ch.txAcks = nil
	ch.txAckCount.Store(0)
	sort.Slice(ds, func(i, j int) bool { return ds[i].tag < ds[j].tag })
	var autoDel []*Queue
	for _, c := range cs {
		ch.c.removeConsumer(c)
		if c.q.Cancel(c) {
			autoDel = append(autoDel, c.q)
		}
	}
	requeue(ds)
	for _, q := range autoDel {
		q.vh.autoDeleteQueue(q)
	}
}

// requeue returns deliveries to their queues, grouped by queue, in order.
func requeue(ds []*delivery) {
	for q, l := range byQueue(ds) {
		q.Requeue(l)
	}
}

func byQueue(ds []*delivery) map[*Queue][]*delivery {
	m := map[*Queue][]*delivery{}
	for _, d := range ds {
		m[d.q] = append(m[d.q], d)
	}
	return m
}

// ---- reader side ----

func (ch *channel) vh() *vhost { return ch.c.vh }

// method handles a method frame; complete is false for a content method,
// whose header and body follow.
func (ch *channel) method(payload []byte, complete bool) *amqp.Error {
	cls, mth, _ := amqp.MethodIDs(payload)
	if cls == amqp.ClassBasic && mth == amqp.MethodBasicPublish {
		if ch.content == nil {
			ch.content = new(content)
		}
		if err := ch.pub.DecodeArgs(payload[4:]); err != nil {
			return asAMQP(err)
		}
		return nil
	}
	if len(ch.c.dirty) > 0 {
		ch.c.flushConfirms()
	}
	if cls != amqp.ClassBasic || mth != amqp.MethodBasicAck && mth != amqp.MethodBasicNack && mth != amqp.MethodBasicReject {
		// Anything else may wait (a Definitions write, tx.commit's
		// fsync): what this reader queued goes out first.
		ch.c.flushOut()
	}
	m, err := amqp.DecodeMethod(payload)
	if err != nil {
		return asAMQP(err)
	}
	return ch.handle(m)
}

func asAMQP(err error) *amqp.Error {
	if e, ok := err.(*amqp.Error); ok {
		return e
	}
	return amqp.NewError(amqp.InternalError, 0, 0, "%v", err)
}

func (ch *channel) header(payload []byte, complete bool) *amqp.Error {
	h, err := amqp.ParseContentHeader(payload)
	if err != nil {
		return asAMQP(err)
	}
	if h.BodySize > maxBodySize {
		return amqp.NewError(amqp.PreconditionFailed, amqp.ClassBasic, amqp.MethodBasicPublish,
			"message size %d is larger than configured max size %d", h.BodySize, maxBodySize)
	}
	if ch.content == nil { // a content method other than basic.publish
		ch.content = new(content)
	}
	ch.props = h.Properties
	ch.rawProps = append([]byte(nil), h.RawProperties...)
	ch.bodySize = h.BodySize
	ch.dropBody()
	if complete {
		return ch.publish()
	}
	// The body buffer grows with the frames that arrive (growBody), never
	// to the declared size up front: a header declaring 128 MiB costs
	// nothing until the bytes come. A header read while an alarm is on
	// blocks the connection before its body is read (conn.throttle).
	ch.c.published = true
	return nil
}

func (ch *channel) body(payload []byte, complete bool) *amqp.Error {
	ch.growBody(len(payload))
	ch.bodyBuf = append(ch.bodyBuf, payload...)
	if complete {
		return ch.publish()
	}
	ch.c.published = true // an alarm stops a publisher between body frames too
	return nil
}

// growBody makes room for n more body bytes: the capacity doubles (so a
// body costs amortized O(size) copying) but never passes the declared
// size, and at most doubles what has arrived; the bytes count toward the
// broker's memory while the body is assembled.
func (ch *channel) growBody(n int) {
	need := len(ch.bodyBuf) + n
	if need <= cap(ch.bodyBuf) {
		return
	}
	c := min(max(need, 2*cap(ch.bodyBuf)), int(ch.bodySize))
	if c < need { // cannot happen: Sequence checks the declared size
		c = need
	}
	nb := make([]byte, len(ch.bodyBuf), c)
	copy(nb, ch.bodyBuf)
	ch.c.srv.mem.assembling.Add(int64(c - cap(ch.bodyBuf)))
	ch.bodyBuf = nb
}

// dropBody forgets a body being assembled (a new header, the channel's
// end).
func (ch *channel) dropBody() {
	if ch.content != nil && ch.bodyBuf != nil {
		ch.c.srv.mem.assembling.Add(-int64(cap(ch.bodyBuf)))
		ch.bodyBuf = nil
	}
}

func (ch *channel) handle(m amqp.Method) *amqp.Error {
	switch m := m.(type) {
	case *amqp.ChannelOpen:
		return amqp.NewError(amqp.ChannelError, m.ClassID(), m.MethodID(), "second 'channel.open' seen")
	case *amqp.ChannelClose:
		ch.flushConfirms(&ch.c.fl) // what is owed so far goes before close-ok
		ch.teardown()
		ch.c.out.method(ch.id, &amqp.ChannelCloseOk{})
		ch.c.dropChannel(ch)
		return nil
	case *amqp.ChannelCloseOk:
		return nil
	case *amqp.ChannelFlow:
		if !m.Active {
			return amqp.NewError(amqp.NotImplemented, m.ClassID(), m.MethodID(), "active=false")
		}
		ch.c.out.method(ch.id, &amqp.ChannelFlowOk{Active: true})
		return nil
	case *amqp.ChannelFlowOk:
		return nil
	case *amqp.AccessRequest:
		ch.c.out.method(ch.id, &amqp.AccessRequestOk{Ticket: 1})
		return nil
	case *amqp.ExchangeDeclare:
		return ch.exchangeDeclare(m)
	case *amqp.ExchangeDelete:
		return ch.exchangeDelete(m)
	case *amqp.ExchangeBind:
		return ch.exchangeBind(m.Source, m.Destination, m.RoutingKey, m.Arguments, m.NoWait, true, m.ClassID(), m.MethodID())
	case *amqp.ExchangeUnbind:
		return ch.exchangeBind(m.Source, m.Destination, m.RoutingKey, m.Arguments, m.NoWait, false, m.ClassID(), m.MethodID())
	case *amqp.QueueDeclare:
		return ch.queueDeclare(m)
	case *amqp.QueueBind:
		return ch.queueBind(m.Queue, m.Exchange, m.RoutingKey, m.Arguments, m.NoWait, true, m.ClassID(), m.MethodID())
	case *amqp.QueueUnbind:
		return ch.queueBind(m.Queue, m.Exchange, m.RoutingKey, m.Arguments, false, false, m.ClassID(), m.MethodID())
	case *amqp.QueuePurge:
		return ch.queuePurge(m)
	case *amqp.QueueDelete:
		return ch.queueDelete(m)
	case *amqp.BasicQos:
		return ch.basicQos(m)
	case *amqp.BasicConsume:
		return ch.basicConsume(m)
	case *amqp.BasicCancel:
		return ch.basicCancel(m)
	case *amqp.BasicGet:
		return ch.basicGet(m)
	case *amqp.BasicAck:
		return ch.settle(m.DeliveryTag, m.Multiple, true, false, m.ClassID(), m.MethodID())
	case *amqp.BasicReject:
		return ch.settle(m.DeliveryTag, false, false, m.Requeue, m.ClassID(), m.MethodID())
	case *amqp.BasicNack:
		return ch.settle(m.DeliveryTag, m.Multiple, false, m.Requeue, m.ClassID(), m.MethodID())
	case *amqp.BasicRecover:
		return ch.recover(m.Requeue, false, m.ClassID(), m.MethodID())
	case *amqp.BasicRecoverAsync:
		return ch.recover(m.Requeue, true, m.ClassID(), m.MethodID())
	case *amqp.ConfirmSelect:
		if ch.tx {
			return amqp.NewError(amqp.PreconditionFailed, m.ClassID(), m.MethodID(), "cannot switch from tx to confirm mode")
		}
		ch.confirm = true
		ch.modes.Or(modeConfirm)
		if !m.NoWait {
			ch.c.out.method(ch.id, &amqp.ConfirmSelectOk{})
		}
		return nil
	case *amqp.TxSelect:
		if ch.confirm {
			return amqp.NewError(amqp.PreconditionFailed, m.ClassID(), m.MethodID(), "cannot switch from confirm to tx mode")
		}
		ch.tx = true
		ch.modes.Or(modeTx)
		ch.c.out.method(ch.id, &amqp.TxSelectOk{})
		return nil
	case *amqp.TxCommit:
		if !ch.tx {
			return amqp.NewError(amqp.PreconditionFailed, m.ClassID(), m.MethodID(), "channel is not transactional")
		}
		if err := ch.commit(m.ClassID(), m.MethodID()); err != nil {
			return err
		}
		ch.c.out.method(ch.id, &amqp.TxCommitOk{})
		return nil
	case *amqp.TxRollback:
		if !ch.tx {
			return amqp.NewError(amqp.PreconditionFailed, m.ClassID(), m.MethodID(), "channel is not transactional")
		}
		ch.rollback()
		ch.c.out.method(ch.id, &amqp.TxRollbackOk{})
		return nil
	}
	// connection.* on a channel, or a server-only method.
	return amqp.NewError(amqp.CommandInvalid, m.ClassID(), m.MethodID(), "unimplemented method")
}

// ---- permissions ----

// ---- exchanges ----

func (ch *channel) exchangeDeclare(m *amqp.ExchangeDeclare) *amqp.Error {
	cls, mth := m.ClassID(), m.MethodID()
	vh := ch.vh()
	if m.Passive {
		if m.Exchange == "" {
			return defaultExchangeRefused(cls, mth)
		}
		if vh.exchange(m.Exchange) == nil {
			return vh.noExchange(m.Exchange, cls, mth)
		}
	} else {
		if !validKind(m.Type) {
			return amqp.NewError(amqp.CommandInvalid, cls, mth, "unknown exchange type '%s'", m.Type)
		}
		if m.Exchange == "" {
			return defaultExchangeRefused(cls, mth)
		}
		if err := ch.check("exchange", m.Exchange, permConfigure, cls, mth); err != nil {
			return err
		}
		if err := vh.declareExchange(m); err != nil {
			return err
		}
	}
	if !m.NoWait {
		ch.c.out.method(ch.id, &amqp.ExchangeDeclareOk{})
	}
	return nil
}

func (ch *channel) exchangeDelete(m *amqp.ExchangeDelete) *amqp.Error {
	cls, mth := m.ClassID(), m.MethodID()
	vh := ch.vh()
	if m.Exchange == "" {
		return defaultExchangeRefused(cls, mth)
	}
	if strings.HasPrefix(m.Exchange, "amq.") {
		return amqp.NewError(amqp.AccessRefused, cls, mth, "deletion of system %s not allowed", vh.rs("exchange", m.Exchange))
	}
	if err := ch.check("exchange", m.Exchange, permConfigure, cls, mth); err != nil {
		return err
	}
	if err := vh.deleteExchange(m.Exchange, m.IfUnused); err != nil {
		return err
	}
	if !m.NoWait {
		ch.c.out.method(ch.id, &amqp.ExchangeDeleteOk{})
	}
	return nil
}

func (ch *channel) exchangeBind(src, dst, key string, args amqp.Table, noWait, bind bool, cls, mth uint16) *amqp.Error {
	if err := ch.check("exchange", dst, permWrite, cls, mth); err != nil {
		return err
	}
	if src == "" || dst == "" {
		return defaultExchangeRefused(cls, mth)
	}
	if err := ch.check("exchange", src, permRead, cls, mth); err != nil {
		return err
	}
	vh := ch.vh()
	var err *amqp.Error
	if bind {
		err = vh.bind(src, "exchange", dst, key, args, ch.c, cls, mth)
	} else {
		err = vh.unbind(src, "exchange", dst, key, args, ch.c, cls, mth)
	}
	if err != nil {
		return err
	}
	if !noWait {
		if bind {
			ch.c.out.method(ch.id, &amqp.ExchangeBindOk{})
		} else {
			ch.c.out.method(ch.id, &amqp.ExchangeUnbindOk{})
		}
	}
	return nil
}

// ---- queues ----

// queueName applies RabbitMQ's shortcut: "" is the channel's last declared
// queue.
func (ch *channel) queueName(name string, cls, mth uint16) (string, *amqp.Error) {
	if name != "" {
		return name, nil
	}
	if ch.lastQueue == "" {
		return "", amqp.NewError(amqp.NotFound, cls, mth, "no previously declared queue")
	}
	return ch.lastQueue, nil
}

// readableQueue resolves a queue argument ("" is the channel's last
// declared queue), checks the read permission on it and looks it up, as
// queue.purge, basic.consume and basic.get all do first.
func (ch *channel) readableQueue(arg string, cls, mth uint16) (*Queue, string, *amqp.Error) {
	name, err := ch.queueName(arg, cls, mth)
	if err != nil {
		return nil, "", err
	}
	if err := ch.check("queue", name, permRead, cls, mth); err != nil {
		return nil, "", err
	}
	q, err := ch.lookupQueue(name, cls, mth)
	if err != nil {
		return nil, "", err
	}
	return q, name, nil
}

// lookupQueue finds a queue this connection may use: 404 if missing, 405
// if another connection's exclusive queue.
func (ch *channel) lookupQueue(name string, cls, mth uint16) (*Queue, *amqp.Error) {
	vh := ch.vh()
	q := vh.queue(name)
	if q == nil {
		return nil, vh.noQueue(name, cls, mth)
	}
	if err := vh.checkExclusive(q, ch.c, cls, mth); err != nil {
		return nil, err
	}
	return q, nil
}

func (ch *channel) queueDeclare(m *amqp.QueueDeclare) *amqp.Error {
	cls, mth := m.ClassID(), m.MethodID()
	vh := ch.vh()
	var q *Queue
	if m.Passive {
		name, err := ch.queueName(m.Queue, cls, mth)
		if err != nil {
			return err
		}
		if q, err = ch.lookupQueue(name, cls, mth); err != nil {
			return err
		}
		q.Touch()
	} else {
		if m.Queue == "" {
			m.Queue = randomName("amq.gen")
		} else if strings.HasPrefix(m.Queue, "amq.") {
			return amqp.NewError(amqp.AccessRefused, cls, mth, "queue name '%s' contains reserved prefix 'amq.*'", m.Queue)
		}
		if err := ch.check("queue", m.Queue, permConfigure, cls, mth); err != nil {
			return err
		}
		isNew := vh.queue(m.Queue) == nil
		if isNew {
			if err := ch.checkDLX(m.Queue, m.Arguments, cls, mth); err != nil {
				return err
			}
		}
		var err *amqp.Error
		if q, err = vh.declareQueue(m, ch.c); err != nil {
			return err
		}
		if isNew && q.created.CompareAndSwap(false, true) { // once, if declares race
			ch.c.srv.churn.qCreated.Add(1)
		}
	}
	ch.c.srv.churn.qDeclared.Add(1)
	ch.lastQueue = q.name
	if !m.NoWait {
		n, c := q.Counts()
		ch.c.out.method(ch.id, &amqp.QueueDeclareOk{Queue: q.name, MessageCount: uint32(n), ConsumerCount: uint32(c)})
	}
	return nil
}

// checkDLX is RabbitMQ's check of a new queue's dead-letter exchange
// (rabbit_channel, before the queue is declared): the argument must be a
// string, and the user needs read access to the queue and write access to
// the exchange.
func (ch *channel) checkDLX(queue string, args amqp.Table, cls, mth uint16) *amqp.Error {
	v, ok := args["x-dead-letter-exchange"]
	if !ok {
		return nil
	}
	dlx, ok := v.(string)
	if !ok {
		return amqp.NewError(amqp.PreconditionFailed, cls, mth, "invalid type '%s' for arg 'x-dead-letter-exchange' in %s",
			fieldType(v), ch.vh().rs("queue", queue))
	}
	if err := ch.check("queue", queue, permRead, cls, mth); err != nil {
		return err
	}
	return ch.check("exchange", dlx, permWrite, cls, mth)
}

func (ch *channel) queueBind(queue, exchange, key string, args amqp.Table, noWait, bind bool, cls, mth uint16) *amqp.Error {
	name, err := ch.queueName(queue, cls, mth)
	if err != nil {
		return err
	}
	if err := ch.check("queue", name, permWrite, cls, mth); err != nil {
		return err
	}
	if exchange == "" {
		return defaultExchangeRefused(cls, mth)
	}
	if err := ch.check("exchange", exchange, permRead, cls, mth); err != nil {
		return err
	}
	vh := ch.vh()
	if bind {
		err = vh.bind(exchange, "queue", name, key, args, ch.c, cls, mth)
	} else {
		err = vh.unbind(exchange, "queue", name, key, args, ch.c, cls, mth)
	}
	if err != nil {
		return err
	}
	if bind && !noWait {
		ch.c.out.method(ch.id, &amqp.QueueBindOk{})
	} else if !bind {
		ch.c.out.method(ch.id, &amqp.QueueUnbindOk{})
	}
	return nil
}

func (ch *channel) queuePurge(m *amqp.QueuePurge) *amqp.Error {
	cls, mth := m.ClassID(), m.MethodID()
	q, _, err := ch.readableQueue(m.Queue, cls, mth)
	if err != nil {
		return err
	}
	n := q.Purge()
	if !m.NoWait {
		ch.c.out.method(ch.id, &amqp.QueuePurgeOk{MessageCount: uint32(n)})
	}
	return nil
}

func (ch *channel) queueDelete(m *amqp.QueueDelete) *amqp.Error {
	cls, mth := m.ClassID(), m.MethodID()
	name, err := ch.queueName(m.Queue, cls, mth)
	if err != nil {
		return err
	}
	if err := ch.check("queue", name, permConfigure, cls, mth); err != nil {
		return err
	}
	vh := ch.vh()
	q := vh.queue(name)
	n := 0
	var cs []*consumer
	if q != nil {
		if err := vh.checkExclusive(q, ch.c, cls, mth); err != nil {
			return err
		}
		n, cs, err = vh.deleteQueue(q, func() *amqp.Error {
			msgs, cons := q.usage()
			if m.IfUnused && cons > 0 {
				return amqp.NewError(amqp.PreconditionFailed, cls, mth, "%s in use", vh.rs("queue", name))
			}
			if m.IfEmpty && msgs > 0 {
				return amqp.NewError(amqp.PreconditionFailed, cls, mth, "%s not empty", vh.rs("queue", name))
			}
			return nil
		}, cls, mth)
		if err != nil {
			return err
		}
	}
	if !m.NoWait {
		ch.c.out.method(ch.id, &amqp.QueueDeleteOk{MessageCount: uint32(n)})
	}
	// Consumers are told after delete-ok, as RabbitMQ does.
	notifyCancelled(cs)
	return nil
}

// ---- basic ----

func (ch *channel) basicQos(m *amqp.BasicQos) *amqp.Error {
	if m.PrefetchSize != 0 {
		return amqp.NewError(amqp.NotImplemented, m.ClassID(), m.MethodID(), "prefetch_size!=0 (%d)", m.PrefetchSize)
	}
	if m.Global {
		ch.mu.Lock()
		ch.globalPrefetch = int(m.PrefetchCount)
		ch.mu.Unlock()
		ch.wakeQueues()
	} else {
		ch.prefetch = int(m.PrefetchCount)
		ch.qos.Store(int32(m.PrefetchCount))
	}
	ch.c.out.method(ch.id, &amqp.BasicQosOk{})
	return nil
}

// wakeQueues lets the queues this channel consumes from deliver again.
func (ch *channel) wakeQueues() {
	ch.mu.Lock()
	qs := make(map[*Queue]struct{}, len(ch.consumers))
	for _, c := range ch.consumers {
		qs[c.q] = struct{}{}
	}
	ch.mu.Unlock()
	for q := range qs {
		q.Dispatch()
	}
}

func (ch *channel) basicConsume(m *amqp.BasicConsume) *amqp.Error {
	cls, mth := m.ClassID(), m.MethodID()
	ch.mu.Lock()
	_, dup := ch.consumers[m.ConsumerTag]
	ch.mu.Unlock()
	if dup && m.ConsumerTag != "" {
		return amqp.NewError(amqp.NotAllowed, cls, mth, "attempt to reuse consumer tag '%s'", m.ConsumerTag)
	}
	q, name, err := ch.readableQueue(m.Queue, cls, mth)
	if err != nil {
		return err
	}
	ch.mu.Lock()
	global := ch.globalPrefetch > 0
	ch.mu.Unlock()
	if global && q.quorum {
		return amqp.NewError(amqp.NotImplemented, cls, mth, "%s does not support global qos", ch.vh().rs("queue", name))
	}
	var prio int64
	if v, ok := m.Arguments["x-priority"]; ok {
		if prio, ok = toInt(v); !ok {
			return amqp.NewError(amqp.PreconditionFailed, cls, mth, "invalid arg 'x-priority' for %s: \"expected integer, got %s\"",
				ch.vh().rs("queue", name), fieldType(v))
		}
	}
	tag := m.ConsumerTag
	if tag == "" {
		tag = randomName("amq.ctag")
	}
	cs := &consumer{tag: tag, q: q, ch: ch, noAck: m.NoAck, exclusive: m.Exclusive, prefetch: ch.prefetch, priority: prio,
		args: copyArgs(m.Arguments)}
	ch.mu.Lock()
	if ch.consumers == nil {
		ch.consumers = map[string]*consumer{}
	}
	ch.consumers[tag] = cs
	ch.mu.Unlock()
	ch.c.addConsumer(cs)
	res := q.Consume(cs, func() {
		if !m.NoWait {
			ch.c.out.method(ch.id, &amqp.BasicConsumeOk{ConsumerTag: tag})
		}
	})
	if res == consumeOK {
		return nil
	}
	ch.mu.Lock()
	delete(ch.consumers, tag)
	ch.mu.Unlock()
	ch.c.removeConsumer(cs)
	if res == consumeGone {
		return ch.vh().noQueue(name, cls, mth)
	}
	return amqp.NewError(amqp.AccessRefused, cls, mth, "%s in exclusive use", ch.vh().rs("queue", name))
}

func (ch *channel) basicCancel(m *amqp.BasicCancel) *amqp.Error {
	ch.mu.Lock()
	cs := ch.consumers[m.ConsumerTag]
	if cs != nil {
		delete(ch.consumers, m.ConsumerTag)
	}
	ch.mu.Unlock()
	autoDel := false
	if cs != nil {
		ch.c.removeConsumer(cs)
		autoDel = cs.q.Cancel(cs)
	}
	if !m.NoWait {
		ch.c.out.method(ch.id, &amqp.BasicCancelOk{ConsumerTag: m.ConsumerTag})
	}
	if autoDel {
		cs.q.vh.autoDeleteQueue(cs.q)
	}
	return nil
}

func (ch *channel) basicGet(m *amqp.BasicGet) *amqp.Error {
	cls, mth := m.ClassID(), m.MethodID()
	q, name, err := ch.readableQueue(m.Queue, cls, mth)
	if err != nil {
		return err
	}
	got, res := q.Get(ch, m.NoAck)
	if res == consumeGone {
		return ch.vh().noQueue(name, cls, mth)
	}
	if !got {
		ch.stats.add(statGetEmpty, 1)
		ch.c.out.method(ch.id, &amqp.BasicGetEmpty{})
	}
	return nil
}

// take removes the deliveries an ack/nack/reject names, as RabbitMQ's
// collect_acks: tag 0 with multiple means all; otherwise the tag must be
// outstanding, and multiple takes every earlier one too.
//
// The slice returned is dst's array when it fits (dst may be nil).
func (ch *channel) take(tag uint64, multiple bool, dst []*delivery) ([]*delivery, bool) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	ds := dst[:0]
	if multiple && tag == 0 {
		ds = ch.unacked
		ch.unacked = nil
	} else {
		i := sort.Search(len(ch.unacked), func(i int) bool { return ch.unacked[i].tag >= tag })
		if i == len(ch.unacked) || ch.unacked[i].tag != tag {
			return nil, false
		}
		switch {
		case multiple:
			ds = append(ds, ch.unacked[:i+1]...)
			clear(ch.unacked[:i+1])
			ch.unacked = ch.unacked[i+1:] // acks come in order: O(1)
		case i == 0:
			ds = append(ds, ch.unacked[0])
			ch.unacked[0] = nil
			ch.unacked = ch.unacked[1:]
		default:
			ds = append(ds, ch.unacked[i])
			ch.unacked = slices.Delete(ch.unacked, i, i+1)
		}
	}
	for _, d := range ds {
		if d.c != nil {
			ch.globalUnacked--
		}
	}
	ch.releaseDeliveries(ds)
	return ds, true
}

func (ch *channel) settle(tag uint64, multiple, ack, requeueIt bool, cls, mth uint16) *amqp.Error {
	var dst []*delivery
	if !ch.tx { // a transaction keeps the slice; apply does not
		dst = ch.settling[:0]
	}
	ds, ok := ch.take(tag, multiple, dst)
	if !ok {
		return amqp.NewError(amqp.PreconditionFailed, cls, mth, "unknown delivery tag %d", tag)
	}
	if ch.tx {
		ch.txAcks = append(ch.txAcks, txAck{ds: ds, requeue: requeueIt, ack: ack})
		ch.txAckCount.Add(int32(len(ds)))
		return nil
	}
	ch.apply(ds, ack, requeueIt)
	if cap(ds) <= 64 { // nothing keeps ds: it serves the next ack
		clear(ds)
		ch.settling = ds[:0]
	}
	return nil
}

func (ch *channel) apply(ds []*delivery, ack, requeueIt bool) {
	if len(ds) == 0 {
		return
	}
	switch {
	case !ack && requeueIt:
		requeue(ds)
	case !ack:
		for q, l := range byQueue(ds) {
			q.Reject(l)
		}
	default:
		ch.stats.add(statAck, uint64(len(ds)))
		fl := &ch.c.fl
		if len(ds) == 1 {
			ds[0].q.Ack(ds, fl)
			break
		}
		for q, l := range byQueue(ds) {
			q.Ack(l, fl)
		}
	}
	ch.mu.Lock()
	global := ch.globalPrefetch > 0
	ch.mu.Unlock()
	if global {
		ch.wakeQueues()
	}
}

func (ch *channel) recover(requeueIt, async bool, cls, mth uint16) *amqp.Error {
	if !requeueIt {
		return amqp.NewError(amqp.NotImplemented, cls, mth, "requeue=false")
	}
	ds, _ := ch.take(0, true, nil)
	requeue(ds)
	if !async {
		ch.c.out.method(ch.id, &amqp.BasicRecoverOk{})
	}
	return nil
}

// ---- publish ----

// publish handles a complete basic.publish with its content.
func (ch *channel) publish() *amqp.Error {
	const cls, mth = amqp.ClassBasic, amqp.MethodBasicPublish
	ch.c.published = true // the memory alarm blocks publishers
	p := &ch.pub
	if p.Immediate {
		return amqp.NewError(amqp.NotImplemented, cls, mth, "immediate=true")
	}
	vh := ch.vh()
	if gen := ch.c.srv.permGen.Load(); !ch.permValid || ch.permGen != gen || ch.permOK != p.Exchange {
		if err := ch.check("exchange", p.Exchange, permWrite, cls, mth); err != nil {
			return err
		}
		ch.permGen, ch.permOK, ch.permValid = gen, p.Exchange, true
	}
	x := vh.exchange(p.Exchange)
	if x == nil {
		return vh.noExchange(p.Exchange, cls, mth)
	}
	if x.internal {
		return amqp.NewError(amqp.AccessRefused, cls, mth, "cannot publish to internal %s", vh.rs("exchange", x.name))
	}
	props := &ch.props
	if props.Has(amqp.FlagUserID) && props.UserID != ch.c.user {
		return amqp.NewError(amqp.PreconditionFailed, cls, mth, "user_id property set to '%s' but authenticated user was '%s'", props.UserID, ch.c.user)
	}
	ttl := int64(-1)
	if props.Has(amqp.FlagExpiration) {
		var err *amqp.Error
		if ttl, err = parseExpiration(props.Expiration); err != nil {
			return err
		}
	}
	msg := &message{exchange: p.Exchange, routingKey: p.RoutingKey, props: ch.rawProps, body: ch.bodyBuf, ttl: ttl, priority: props.Priority,
		persistent: props.DeliveryMode == 2}
	if msg.body == nil {
		msg.body = []byte{}
	}
	ch.c.srv.mem.assembling.Add(-int64(cap(ch.bodyBuf))) // the message owns it now
	ch.rawProps, ch.bodyBuf = nil, nil
	var headers amqp.Table
	if props.Has(amqp.FlagHeaders) {
		headers = props.Headers
	}
	if ch.tx {
		ch.txPubs = append(ch.txPubs, txPub{x: x, m: msg, mandatory: p.Mandatory, headers: headers})
		ch.txMsgs.Store(int32(len(ch.txPubs)))
		ch.c.srv.mem.assembling.Add(msg.memSize()) // held by the transaction
		return nil
	}
	ch.stats.add(statPublish, 1)
	rejected, commit := ch.route(x, msg, p.Mandatory, headers)
	if ch.confirm {
		ch.confirmPublish(rejected, commit)
	}
	return nil
}

// route delivers msg to the queues x routes it to; an unroutable mandatory
// message goes back to the publisher (basic.return 312 NO_ROUTE) before
// its confirm. It reports whether a queue refused the message
// (x-overflow reject-publish, or the message store failed): the confirm
// is then a basic.nack. A refused message counts as routed, as in
// RabbitMQ. commit, if not nil, is the message store's commit the
// confirm waits for (the latest of the queues'; commits complete in
// order).
func (ch *channel) route(x *exchange, msg *message, mandatory bool, headers amqp.Table) (rejected bool, commit *store.Commit) {
	var buf [4]*Queue
	qs := ch.vh().route(x, msg.routingKey, headers, buf[:0])
	now := time.Now().UnixNano()
	routed := false
	for _, q := range qs {
		res, c := q.Publish(msg, now, &ch.c.fl)
		switch res {
		case pubQueued:
			routed = true
		case pubRejected, pubStoreFailed:
			routed, rejected = true, true
		}
		if c != nil {
			commit = c
		}
	}
	if !routed {
		ch.unroutable(mandatory)
	}
	if !routed && mandatory {
		ch.c.out.content(ch.id, &amqp.BasicReturn{ReplyCode: amqp.NoRoute, ReplyText: "NO_ROUTE",
			Exchange: msg.exchange, RoutingKey: msg.routingKey}, msg, ch.c.frameMax)
	}
	return rejected, commit
}

// unroutable counts a message no queue took: returned or dropped.
func (ch *channel) unroutable(mandatory bool) {
	if mandatory {
		ch.stats.add(statReturnUnroutable, 1)
	} else {
		ch.stats.add(statDropUnroutable, 1)
	}
}

// commit carries out a transaction. Its messages are staged first
// (checked, and appended to the message store where a queue keeps them)
// and made visible only once every stored one is durable, so tx.commit-ok
// always means stored, as with RabbitMQ. If the store fails, or a queue
// refuses a message (x-overflow reject-publish), none of them is
// delivered, the held acks are void (the channel's teardown requeues
// them), and the channel is closed with RabbitMQ's error for a
// transaction a queue could not take (rabbit_channel:complete_tx):
// 406 PRECONDITION_FAILED "partial tx completion". (RabbitMQ delivers the
// messages the other queues took; here the transaction is all or nothing.)
func (ch *channel) commit(cls, mth uint16) *amqp.Error {
	pubs, acks := ch.txPubs, ch.txAcks
	ch.dropTxPubs()
	ch.txAcks = nil
	ch.txAckCount.Store(0)
	type staged struct {
		q *Queue
		e entry
	}
	var st []staged
	var last *store.Commit
	failed := false
	var returns []*message
	var dropped uint64
	for _, p := range pubs {
		var buf [4]*Queue
		qs := ch.vh().route(p.x, p.m.routingKey, p.headers, buf[:0])
		routed := false
		for _, q := range qs {
			e, res, c := q.Stage(p.m)
			switch res {
			case pubQueued:
				routed = true
				st = append(st, staged{q, e})
			case pubRejected, pubStoreFailed: // x-overflow reject-publish, or the store failed
				routed, failed = true, true
			}
			if c != nil {
				last = c
			}
		}
		if !routed && p.mandatory {
			returns = append(returns, p.m)
		}
		if !routed && !p.mandatory {
			dropped++
		}
	}
	if last != nil && last.Wait() != nil {
		failed = true
	}
	if failed {
		for _, s := range st {
			s.q.Unstage(s.e)
		}
		ch.c.srv.lim.Log(slog.LevelError, "amqp: transaction not committed: the message store failed", "conn", ch.c.name, "channel", ch.id)
		return amqp.NewError(amqp.PreconditionFailed, cls, mth, "partial tx completion")
	}
	ch.stats.add(statPublish, uint64(len(pubs)))
	ch.stats.add(statDropUnroutable, dropped)
	now := time.Now().UnixNano()
	for _, m := range returns {
		ch.unroutable(true)
		ch.c.out.content(ch.id, &amqp.BasicReturn{ReplyCode: amqp.NoRoute, ReplyText: "NO_ROUTE",
			Exchange: m.exchange, RoutingKey: m.routingKey}, m, ch.c.frameMax)
	}
	for _, s := range st {
		s.q.Enqueue(s.e, now)
	}
	for _, a := range acks {
		ch.apply(a.ds, a.ack, a.requeue)
	}
	return nil
}

// dropTxPubs forgets the publishes an open transaction holds.
func (ch *channel) dropTxPubs() {
	for _, p := range ch.txPubs {
		ch.c.srv.mem.assembling.Add(-p.m.memSize())
	}
	ch.txPubs = nil
	ch.txMsgs.Store(0)
}

func (ch *channel) rollback() {
	acks := ch.txAcks
	ch.dropTxPubs()
	ch.txAcks = nil
	ch.txAckCount.Store(0)
	if len(acks) == 0 {
		return
	}
	ch.mu.Lock()
	for _, a := range acks {
		for _, d := range a.ds {
			ch.unacked = append(ch.unacked, d)
			if d.c != nil {
				ch.globalUnacked++
			}
			ch.holdLocked(d.e)
		}
	}
	sort.Slice(ch.unacked, func(i, j int) bool { return ch.unacked[i].tag < ch.unacked[j].tag })
	ch.mu.Unlock()
}

// parseExpiration parses the expiration property as RabbitMQ's
// rabbit_basic:parse_expiration (Erlang string:to_integer).
func parseExpiration(s string) (int64, *amqp.Error) {
	bad := func(reason string) *amqp.Error {
		return amqp.NewError(amqp.PreconditionFailed, amqp.ClassBasic, amqp.MethodBasicPublish, "invalid expiration '%s': %s", s, reason)
	}
	i := 0
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		i++
	}
	j := i
	for j < len(s) && s[j] >= '0' && s[j] <= '9' {
		j++
	}
	if j == i {
		return 0, bad("no_integer")
	}
	n, err := strconv.ParseInt(s[:j], 10, 64)
	if err != nil {
		return 0, bad("{value_too_large," + s[:j] + "}")
	}
	if j < len(s) {
		return 0, bad(fmt.Sprintf("{leftover_string,%q}", s[j:]))
	}
	if n < 0 {
		return 0, bad(fmt.Sprintf("{value_negative,%d}", n))
	}
	return n, nil
}
