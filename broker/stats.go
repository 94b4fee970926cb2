package broker

import (
	"sync/atomic"
)

// Message statistics, as RabbitMQ's management and prometheus plugins
// count them. Every counter is monotonic; rates are for the caller to
// derive by sampling (the management API and /metrics do).
//
// Where they are counted:
//
//   - per channel (channel.stats, atomics): the reader adds publishes,
//     returns, drops, acks and empty gets; a queue delivering to the
//     channel adds deliveries (under channel.mu); the confirm flush adds
//     confirms (under confirms.mu, on the reader or the store's
//     committer). No lock is added to the hot path for them.
//   - per queue (Queue.stats, plain counters under Queue.mu, which the
//     publish, deliver and ack paths hold anyway).
//   - globally: the live channels' counters plus those of closed
//     channels, which are folded into their connection (conn.retired,
//     under conn.mu) when a channel ends and into the server
//     (Server.retired, and its vhost's in Server.retiredVH, under
//     Server.connMu) when a connection ends, so a sum taken under those
//     locks never goes back.

// stat names one message counter.
type stat int

const (
	// Counted per channel and per queue (a queue's publish: messages
	// routed to it).
	statPublish      stat = iota // basic.publish accepted (routed or not)
	statDeliver                  // basic.deliver, ack required
	statDeliverNoAck             // basic.deliver, no ack
	statGet                      // basic.get-ok, ack required
	statGetNoAck                 // basic.get-ok, no ack
	statGetEmpty                 // basic.get-empty
	statRedeliver                // deliveries and gets with redelivered set
	statAck                      // messages acknowledged by basic.ack
	nQueueStats
)

// Counted per channel only.
const (
	statConfirm          = nQueueStats + iota // publishes confirmed with basic.ack
	statReturnUnroutable                      // mandatory and unroutable: basic.return
	statDropUnroutable                        // unroutable, not mandatory: dropped
	statReceivedConfirm                       // publishes on a channel in confirm mode (confirms.published)
	nStats
)

// MessageStats are message counters since the start (or since the object
// was created), as RabbitMQ's message_stats: the names in the comments
// are the management API's keys.
type MessageStats struct {
	Publish          uint64 // publish
	Confirm          uint64 // confirm
	ReturnUnroutable uint64 // return_unroutable
	DropUnroutable   uint64 // drop_unroutable
	Deliver          uint64 // deliver (ack required)
	DeliverNoAck     uint64 // deliver_no_ack
	Get              uint64 // get (ack required)
	GetNoAck         uint64 // get_no_ack
	GetEmpty         uint64 // get_empty
	Redeliver        uint64 // redeliver
	Ack              uint64 // ack
	DeliverGet       uint64 // deliver_get: Deliver + DeliverNoAck + Get + GetNoAck
	// Not in message_stats; rabbitmq_prometheus's
	// rabbitmq_global_messages_received_confirm_total.
	ReceivedConfirm uint64 // publishes on channels in confirm mode (confirmed, nacked or waiting)
}

// statCounters is a channel's set of counters, updated with atomics.
// ReceivedConfirm is not among them: the channel's confirms count it
// (confirms.published).
type statCounters [statReceivedConfirm]atomic.Uint64

func (c *statCounters) add(s stat, n uint64) { c[s].Add(n) }

// counters returns the channel's counter values.
func (ch *channel) counters() (v statValues) {
	for i := range ch.stats {
		v[i] = ch.stats[i].Load()
	}
	v[statReceivedConfirm] = ch.conf.published.Load()
	return v
}

// statValues is a set of counter values: a queue's (under Queue.mu), a
// snapshot of a channel's, or a sum.
type statValues [nStats]uint64

// queueStatValues are a queue's counters (under Queue.mu): the first
// nQueueStats of a channel's.
type queueStatValues [nQueueStats]uint64

func (v *queueStatValues) public() MessageStats {
	var all statValues
	copy(all[:], v[:])
	return all.public()
}

func (v *statValues) addAll(o *statValues) {
	for i := range v {
		v[i] += o[i]
	}
}

// public converts the values to MessageStats.
func (v *statValues) public() MessageStats {
	return MessageStats{
		Publish:          v[statPublish],
		Confirm:          v[statConfirm],
		ReturnUnroutable: v[statReturnUnroutable],
		DropUnroutable:   v[statDropUnroutable],
		Deliver:          v[statDeliver],
		DeliverNoAck:     v[statDeliverNoAck],
		Get:              v[statGet],
		GetNoAck:         v[statGetNoAck],
		GetEmpty:         v[statGetEmpty],
		Redeliver:        v[statRedeliver],
		Ack:              v[statAck],
		DeliverGet:       v[statDeliver] + v[statDeliverNoAck] + v[statGet] + v[statGetNoAck],
		ReceivedConfirm:  v[statReceivedConfirm],
	}
}

// vhostTotals is what the connections of a vhost that ended counted.
type vhostTotals struct {
	stats statValues
	net   NetStats
}

// ChurnStats count objects created and closed since the start, as
// rabbitmq_prometheus exports them (rabbitmq_connections_opened_total,
// rabbitmq_connections_closed_total, rabbitmq_channels_opened_total,
// rabbitmq_channels_closed_total, rabbitmq_queues_declared_total,
// rabbitmq_queues_created_total, rabbitmq_queues_deleted_total) and
// the management API's churn_rates.
type ChurnStats struct {
	ConnectionCreated uint64 // connections opened (connection.open-ok sent)
	ConnectionClosed  uint64 // opened connections that ended
	ChannelCreated    uint64
	ChannelClosed     uint64
	QueueDeclared     uint64 // queue.declare that succeeded, new queue or not (passive too)
	QueueCreated      uint64 // queues created by queue.declare
	QueueDeleted      uint64 // queues deleted, for any reason (delete, auto-delete, expiry, exclusive owner gone)
}

// churn is the server's ChurnStats as atomics.
type churn struct {
	connCreated, connClosed atomic.Uint64
	chCreated, chClosed     atomic.Uint64
	qDeclared, qCreated     atomic.Uint64
	qDeleted                atomic.Uint64
}

func (c *churn) public() ChurnStats {
	return ChurnStats{
		ConnectionCreated: c.connCreated.Load(), ConnectionClosed: c.connClosed.Load(),
		ChannelCreated: c.chCreated.Load(), ChannelClosed: c.chClosed.Load(),
		QueueDeclared: c.qDeclared.Load(), QueueCreated: c.qCreated.Load(), QueueDeleted: c.qDeleted.Load(),
	}
}

// NetStats are a connection's (or all connections') traffic counters:
// bytes received and sent, and the socket reads and writes that moved
// them (RabbitMQ's recv_oct, send_oct, recv_cnt, send_cnt: the socket's
// receive and send counts).
type NetStats struct {
	RecvOct, SendOct uint64
	RecvCnt, SendCnt uint64
}

// netCounters is a connection's traffic as atomics: recv* are added by
// the reader (conn.Read), send* by the writer.
type netCounters struct {
	recvOct, sendOct atomic.Uint64
	recvCnt, sendCnt atomic.Uint64
}

func (n *netCounters) load() NetStats {
	return NetStats{RecvOct: n.recvOct.Load(), SendOct: n.sendOct.Load(), RecvCnt: n.recvCnt.Load(), SendCnt: n.sendCnt.Load()}
}

func (n *NetStats) add(o NetStats) {
	n.RecvOct += o.RecvOct
	n.SendOct += o.SendOct
	n.RecvCnt += o.RecvCnt
	n.SendCnt += o.SendCnt
}
