package metrics

import (
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"substrate/broker"
)

// BrokerStats is what the broker's metrics export, read once per scrape
// (cmd/substrate fills it from broker.Server).
type BrokerStats struct {
	Node, Cluster string // rabbitmq_identity_info's rabbitmq_node and rabbitmq_cluster
	ClusterID     string // rabbitmq_cluster_permanent_id
	Version       string // rabbitmq_build_info's rabbitmq_version: the RabbitMQ version followed
	PluginVersion string // its prometheus_plugin_version: substrate's own
	GoVersion     string // its erlang_version: the Go runtime's

	Overview    broker.Overview
	Queues      []broker.QueueInfo // every vhost's
	Channels    []broker.ChannelInfo
	Connections []broker.ConnectionInfo

	MemoryUsed, MemoryLimit uint64 // what the memory alarm compares (MemoryUsed, MemoryHighWatermark)
	DiskFree, DiskFreeLimit uint64
	MemoryAlarm, DiskAlarm  bool
	OpenFDs, MaxFDs         uint64 // the process's
	MaxSockets              uint64 // connections the broker accepts (RabbitMQ's sockets_limit)
	Uptime                  float64
	Goroutines              uint64 // in place of Erlang processes
	GCRuns, GCFreedBytes    uint64 // the Go runtime's, in place of the Erlang VM's
}

// queueTypes are RabbitMQ 3.10's queue type labels, each exported (0
// when unused) so that rate() has a series, as RabbitMQ does.
var queueTypes = []string{"rabbit_classic_queue", "rabbit_quorum_queue", "rabbit_stream_queue"}

// RabbitMQ exports a broker under rabbitmq_prometheus's names, help texts,
// types and labels (RabbitMQ 3.10.8): aggregated as on /metrics with
// return_per_object_metrics = false, or per queue, channel and connection
// as on /metrics/per-object. Source returns the figures, or false while
// no broker runs (then nothing is exported).
type RabbitMQ struct {
	PerObject bool
	Source    func() (BrokerStats, bool)
}

// Describe sends nothing: the collector is unchecked (its series follow
// the broker's queues, channels and connections).
func (RabbitMQ) Describe(chan<- *prometheus.Desc) {}

type emitter struct{ ch chan<- prometheus.Metric }

func (e emitter) gauge(name, help string, v float64) {
	e.ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(name, help, nil, nil), prometheus.GaugeValue, v)
}

func (e emitter) counter(name, help string, v float64) {
	e.ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(name, help, nil, nil), prometheus.CounterValue, v)
}

func (e emitter) untyped(name, help string, v float64) {
	e.ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(name, help, nil, nil), prometheus.UntypedValue, v)
}

// labelled sends one family with label names and one sample per row.
// Label values must be UTF-8 in the exposition format, AMQP names need
// not be: invalid bytes become U+FFFD rather than fail the scrape.
func (e emitter) labelled(name, help string, typ prometheus.ValueType, labels []string, rows []row) {
	d := prometheus.NewDesc(name, help, labels, nil)
	for _, r := range rows {
		vals := r.labels
		for i, v := range vals {
			if !utf8.ValidString(v) {
				vals = slices.Clone(vals)
				vals[i] = strings.ToValidUTF8(v, "\uFFFD")
			}
		}
		e.ch <- prometheus.MustNewConstMetric(d, typ, r.v, vals...)
	}
}

type row struct {
	labels []string
	v      float64
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Collect sends the families in the order RabbitMQ's collectors do.
func (r RabbitMQ) Collect(ch chan<- prometheus.Metric) {
	if r.Source == nil {
		return
	}
	st, ok := r.Source()
	if !ok {
		return
	}
	e := emitter{ch}
	const p = "rabbitmq_"
	if !r.PerObject {
		// prometheus_rabbitmq_alarm_metrics_collector: /metrics only.
		// substrate has no file descriptor alarm: 0 is the truth.
		e.untyped(p+"alarms_file_descriptor_limit", "is 1 if file descriptor limit alarm is in effect", 0)
		e.untyped(p+"alarms_free_disk_space_watermark", "is 1 if free disk space watermark alarm is in effect", b2f(st.DiskAlarm))
		e.untyped(p+"alarms_memory_used_watermark", "is 1 if VM memory watermark alarm is in effect", b2f(st.MemoryAlarm))
	}

	// connection_churn_metrics
	c := st.Overview.Churn
	e.counter(p+"connections_opened_total", "Total number of connections opened", float64(c.ConnectionCreated))
	e.counter(p+"connections_closed_total", "Total number of connections closed or terminated", float64(c.ConnectionClosed))
	e.counter(p+"channels_opened_total", "Total number of channels opened", float64(c.ChannelCreated))
	e.counter(p+"channels_closed_total", "Total number of channels closed", float64(c.ChannelClosed))
	e.counter(p+"queues_declared_total", "Total number of queues declared", float64(c.QueueDeclared))
	e.counter(p+"queues_created_total", "Total number of queues created", float64(c.QueueCreated))
	e.counter(p+"queues_deleted_total", "Total number of queues deleted", float64(c.QueueDeleted))

	// node_coarse_metrics and node_metrics, with the Go runtime's figures
	// where the Erlang VM's have a meaning here.
	e.gauge(p+"process_open_fds", "Open file descriptors", float64(st.OpenFDs))
	e.gauge(p+"process_open_tcp_sockets", "Open TCP sockets", float64(len(st.Connections)))
	e.gauge(p+"process_resident_memory_bytes", "Memory used in bytes", float64(st.MemoryUsed))
	e.gauge(p+"disk_space_available_bytes", "Disk space available in bytes", float64(st.DiskFree))
	e.gauge(p+"erlang_processes_used", "Erlang processes used", float64(st.Goroutines))
	e.counter(p+"erlang_gc_runs_total", "Total number of Erlang garbage collector runs", float64(st.GCRuns))
	e.counter(p+"erlang_gc_reclaimed_bytes_total", "Total number of bytes of memory reclaimed by Erlang garbage collector", float64(st.GCFreedBytes))
	e.gauge(p+"process_max_fds", "Open file descriptors limit", float64(st.MaxFDs))
	e.gauge(p+"process_max_tcp_sockets", "Open TCP sockets limit", float64(st.MaxSockets))
	e.gauge(p+"resident_memory_limit_bytes", "Memory high watermark in bytes", float64(st.MemoryLimit))
	e.gauge(p+"disk_space_available_limit_bytes", "Free disk space low watermark in bytes", float64(st.DiskFreeLimit))
	e.gauge(p+"erlang_uptime_seconds", "Node uptime", st.Uptime)

	r.queues(e, st.Queues)
	r.channels(e, st.Channels, st.Queues)
	r.connections(e, st.Connections)

	// totals
	t := st.Overview.ObjectTotals
	e.gauge(p+"connections", "Connections currently open", float64(t.Connections))
	e.gauge(p+"channels", "Channels currently open", float64(t.Channels))
	e.gauge(p+"consumers", "Consumers currently connected", float64(t.Consumers))
	e.gauge(p+"queues", "Queues available", float64(t.Queues))

	// identity
	e.labelled(p+"build_info", "RabbitMQ & Erlang/OTP version info", prometheus.UntypedValue,
		[]string{"rabbitmq_version", "prometheus_plugin_version", "prometheus_client_version", "erlang_version"},
		[]row{{[]string{st.Version, st.PluginVersion, prometheusClientVersion, st.GoVersion}, 1}})
	e.labelled(p+"identity_info", "RabbitMQ node & cluster identity info", prometheus.UntypedValue,
		[]string{"rabbitmq_node", "rabbitmq_cluster", "rabbitmq_cluster_permanent_id"},
		[]row{{[]string{st.Node, st.Cluster, st.ClusterID}, 1}})

	r.global(e, st)
}

// prometheusClientVersion is build_info's prometheus_client_version: the
// Go client library's module version.
const prometheusClientVersion = "client_golang 1.23.2"

// family is one per-object metric family over objects of type T.
type family[T any] struct {
	name, help string
	typ        prometheus.ValueType
	v          func(T) float64
}

// perObjectOnly are families that RabbitMQ's aggregated /metrics declares
// without a sample, which is no family in the text format.
var perObjectOnly = map[string]bool{"queue_messages_persistent_bytes": true}

// emitFamilies sends each family per object (labels from key) or, when
// aggregated, as one unlabelled sample summing the objects: RabbitMQ's
// /metrics with return_per_object_metrics = false. The sum is exported
// (0) also without objects, as RabbitMQ does.
func emitFamilies[T any](e emitter, perObject bool, fams []family[T], objs []T, labels []string, key func(T) []string) {
	const p = "rabbitmq_"
	for _, f := range fams {
		if perObjectOnly[f.name] && !perObject {
			continue
		}
		if perObject {
			rows := make([]row, 0, len(objs))
			for _, o := range objs {
				rows = append(rows, row{key(o), f.v(o)})
			}
			e.labelled(p+f.name, f.help, f.typ, labels, rows)
			continue
		}
		var total float64
		for _, o := range objs {
			total += f.v(o)
		}
		e.ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(p+f.name, f.help, nil, nil), f.typ, total)
	}
}

type queueFam = family[broker.QueueInfo]

// queueFams are queue_coarse_metrics and queue_metrics. Bodies not in
// memory (persistent messages read back from the store when needed) are
// RabbitMQ's "paged out"; counts of messages in memory are not kept, only
// their bytes.
var queueFams = []queueFam{
	{"queue_messages_ready", "Messages ready to be delivered to consumers", prometheus.GaugeValue, func(q broker.QueueInfo) float64 { return float64(q.MessagesReady) }},
	{"queue_messages_unacked", "Messages delivered to consumers but not yet acknowledged", prometheus.GaugeValue, func(q broker.QueueInfo) float64 { return float64(q.MessagesUnacknowledged) }},
	{"queue_messages", "Sum of ready and unacknowledged messages - total queue depth", prometheus.GaugeValue, func(q broker.QueueInfo) float64 { return float64(q.Messages) }},
	{"queue_consumers", "Consumers on a queue", prometheus.GaugeValue, func(q broker.QueueInfo) float64 { return float64(q.Consumers) }},
	{"queue_process_memory_bytes", "Memory in bytes used by the Erlang queue process", prometheus.GaugeValue, func(q broker.QueueInfo) float64 { return float64(q.MemoryBytes) }},
	{"queue_messages_ram_bytes", "Size of ready and unacknowledged messages stored in memory", prometheus.GaugeValue, func(q broker.QueueInfo) float64 { return float64(q.MessageBytesRAM) }},
	{"queue_messages_persistent", "Persistent messages", prometheus.GaugeValue, func(q broker.QueueInfo) float64 { return float64(q.MessagesPersistent) }},
	{"queue_messages_persistent_bytes", "Size in bytes of persistent messages", prometheus.GaugeValue, func(q broker.QueueInfo) float64 { return float64(q.MessageBytesPersistent) }},
	{"queue_messages_bytes", "Size in bytes of ready and unacknowledged messages", prometheus.GaugeValue, func(q broker.QueueInfo) float64 { return float64(q.MessageBytes) }},
	{"queue_messages_ready_bytes", "Size in bytes of ready messages", prometheus.GaugeValue, func(q broker.QueueInfo) float64 { return float64(q.MessageBytesReady) }},
	{"queue_messages_unacked_bytes", "Size in bytes of all unacknowledged messages", prometheus.GaugeValue, func(q broker.QueueInfo) float64 { return float64(q.MessageBytesUnacknowledged) }},
	{"queue_messages_paged_out_bytes", "Size in bytes of messages paged out to disk", prometheus.GaugeValue, func(q broker.QueueInfo) float64 { return float64(max(q.MessageBytes-q.MessageBytesRAM, 0)) }},
}

func (r RabbitMQ) queues(e emitter, qs []broker.QueueInfo) {
	emitFamilies(e, r.PerObject, queueFams, qs, []string{"vhost", "queue"}, func(q broker.QueueInfo) []string { return []string{q.VHost, q.Name} })
}

type channelFam = family[broker.ChannelInfo]

// channelFams are channel_metrics and the channel's message counters.
// RabbitMQ keeps the counters per channel and exchange or queue; substrate
// per channel, so per object they are labelled by channel alone.
var channelFams = []channelFam{
	{"channel_consumers", "Consumers on a channel", prometheus.GaugeValue, func(c broker.ChannelInfo) float64 { return float64(c.ConsumerCount) }},
	{"channel_messages_unacked", "Delivered but not yet acknowledged messages", prometheus.GaugeValue, func(c broker.ChannelInfo) float64 { return float64(c.MessagesUnacknowledged) }},
	{"channel_messages_unconfirmed", "Published but not yet confirmed messages", prometheus.GaugeValue, func(c broker.ChannelInfo) float64 { return float64(c.MessagesUnconfirmed) }},
	{"channel_messages_uncommitted", "Messages received in a transaction but not yet committed", prometheus.GaugeValue, func(c broker.ChannelInfo) float64 { return float64(c.MessagesUncommitted) }},
	{"channel_acks_uncommitted", "Message acknowledgements in a transaction not yet committed", prometheus.GaugeValue, func(c broker.ChannelInfo) float64 { return float64(c.AcksUncommitted) }},
	{"consumer_prefetch", "Limit of unacknowledged messages for each consumer", prometheus.GaugeValue, func(c broker.ChannelInfo) float64 { return float64(c.PrefetchCount) }},
	{"channel_prefetch", "Total limit of unacknowledged messages for all consumers on a channel", prometheus.GaugeValue, func(c broker.ChannelInfo) float64 { return float64(c.GlobalPrefetchCount) }},
	{"channel_messages_published_total", "Total number of messages published into an exchange on a channel", prometheus.CounterValue, func(c broker.ChannelInfo) float64 { return float64(c.MessageStats.Publish) }},
	{"channel_messages_confirmed_total", "Total number of messages published into an exchange and confirmed on the channel", prometheus.CounterValue, func(c broker.ChannelInfo) float64 { return float64(c.MessageStats.Confirm) }},
	{"channel_messages_unroutable_returned_total", "Total number of messages published as mandatory into an exchange and returned to the publisher as unroutable", prometheus.CounterValue, func(c broker.ChannelInfo) float64 { return float64(c.MessageStats.ReturnUnroutable) }},
	{"channel_messages_unroutable_dropped_total", "Total number of messages published as non-mandatory into an exchange and dropped as unroutable", prometheus.CounterValue, func(c broker.ChannelInfo) float64 { return float64(c.MessageStats.DropUnroutable) }},
	{"channel_get_ack_total", "Total number of messages fetched with basic.get in manual acknowledgement mode", prometheus.CounterValue, func(c broker.ChannelInfo) float64 { return float64(c.MessageStats.Get) }},
	{"channel_get_total", "Total number of messages fetched with basic.get in automatic acknowledgement mode", prometheus.CounterValue, func(c broker.ChannelInfo) float64 { return float64(c.MessageStats.GetNoAck) }},
	{"channel_messages_delivered_ack_total", "Total number of messages delivered to consumers in manual acknowledgement mode", prometheus.CounterValue, func(c broker.ChannelInfo) float64 { return float64(c.MessageStats.Deliver) }},
	{"channel_messages_delivered_total", "Total number of messages delivered to consumers in automatic acknowledgement mode", prometheus.CounterValue, func(c broker.ChannelInfo) float64 { return float64(c.MessageStats.DeliverNoAck) }},
	{"channel_messages_redelivered_total", "Total number of messages redelivered to consumers", prometheus.CounterValue, func(c broker.ChannelInfo) float64 { return float64(c.MessageStats.Redeliver) }},
	{"channel_messages_acked_total", "Total number of messages acknowledged by consumers", prometheus.CounterValue, func(c broker.ChannelInfo) float64 { return float64(c.MessageStats.Ack) }},
	{"channel_get_empty_total", "Total number of times basic.get operations fetched no message", prometheus.CounterValue, func(c broker.ChannelInfo) float64 { return float64(c.MessageStats.GetEmpty) }},
}

var queuePublishedFam = []queueFam{
	{"queue_messages_published_total", "Total number of messages published to queues", prometheus.CounterValue, func(q broker.QueueInfo) float64 { return float64(q.MessageStats.Publish) }},
}

func (r RabbitMQ) channels(e emitter, chs []broker.ChannelInfo, qs []broker.QueueInfo) {
	emitFamilies(e, r.PerObject, channelFams, chs, []string{"channel"}, func(c broker.ChannelInfo) []string { return []string{c.Name} })
	// channel_queue_exchange_metrics: substrate counts what was routed to
	// each queue, not per channel and exchange.
	emitFamilies(e, r.PerObject, queuePublishedFam, qs, []string{"queue_vhost", "queue"}, func(q broker.QueueInfo) []string { return []string{q.VHost, q.Name} })
}

type connFam = family[broker.ConnectionInfo]

var connFams = []connFam{
	{"connection_incoming_bytes_total", "Total number of bytes received on a connection", prometheus.CounterValue, func(c broker.ConnectionInfo) float64 { return float64(c.RecvOct) }},
	{"connection_outgoing_bytes_total", "Total number of bytes sent on a connection", prometheus.CounterValue, func(c broker.ConnectionInfo) float64 { return float64(c.SendOct) }},
	{"connection_incoming_packets_total", "Total number of packets received on a connection", prometheus.CounterValue, func(c broker.ConnectionInfo) float64 { return float64(c.RecvCnt) }},
	{"connection_outgoing_packets_total", "Total number of packets sent on a connection", prometheus.CounterValue, func(c broker.ConnectionInfo) float64 { return float64(c.SendCnt) }},
	{"connection_channels", "Channels on a connection", prometheus.GaugeValue, func(c broker.ConnectionInfo) float64 { return float64(c.Channels) }},
}

func (r RabbitMQ) connections(e emitter, cs []broker.ConnectionInfo) {
	// RabbitMQ 3.10 labels the connection metrics "channel" too (with the
	// connection's process id); here the connection's name.
	emitFamilies(e, r.PerObject, connFams, cs, []string{"channel"}, func(c broker.ConnectionInfo) []string { return []string{c.Name} })
}

// global is prometheus_rabbitmq_global_metrics_collector, from the
// broker-wide counters (closed channels' included). substrate's quorum
// queues are classic queues underneath and its counters are not kept per
// queue type: all count as rabbit_classic_queue, the other types' series
// stay at 0.
func (r RabbitMQ) global(e emitter, st BrokerStats) {
	const p = "rabbitmq_global_"
	m := st.Overview.MessageStats
	proto := []string{"protocol"}
	one := func(name, help string, typ prometheus.ValueType, v uint64) {
		e.labelled(p+name, help, typ, proto, []row{{[]string{"amqp091"}, float64(v)}})
	}
	perType := func(name, help string, v uint64) {
		rows := make([]row, 0, len(queueTypes))
		for i, qt := range queueTypes {
			x := uint64(0)
			if i == 0 {
				x = v
			}
			rows = append(rows, row{[]string{"amqp091", qt}, float64(x)})
		}
		e.labelled(p+name, help, prometheus.CounterValue, []string{"protocol", "queue_type"}, rows)
	}
	// Publishes on confirm channels: the confirmed ones plus those still
	// waiting on open channels (a nack or a closed channel's waiting
	// publishes are not counted).
	var unconfirmed uint64
	publishers := 0
	for _, c := range st.Channels {
		unconfirmed += uint64(max(c.MessagesUnconfirmed, 0))
		if c.MessageStats.Publish > 0 {
			publishers++
		}
	}
	one("consumers", "Current number of consumers", prometheus.GaugeValue, uint64(st.Overview.ObjectTotals.Consumers))
	perType("messages_acknowledged_total", "Total number of messages acknowledged by consumers", m.Ack)
	one("messages_confirmed_total", "Total number of messages confirmed to publishers", prometheus.CounterValue, m.Confirm)
	perType("messages_delivered_consume_auto_ack_total", "Total number of messages delivered to consumers using basic.consume with automatic acknowledgment", m.DeliverNoAck)
	perType("messages_delivered_consume_manual_ack_total", "Total number of messages delivered to consumers using basic.consume with manual acknowledgment", m.Deliver)
	perType("messages_delivered_get_auto_ack_total", "Total number of messages delivered to consumers using basic.get with automatic acknowledgment", m.GetNoAck)
	perType("messages_delivered_get_manual_ack_total", "Total number of messages delivered to consumers using basic.get with manual acknowledgment", m.Get)
	perType("messages_delivered_total", "Total number of messages delivered to consumers", m.DeliverGet)
	perType("messages_get_empty_total", "Total number of times basic.get operations fetched no message", m.GetEmpty)
	one("messages_received_confirm_total", "Total number of messages received from publishers expecting confirmations", prometheus.CounterValue, m.Confirm+unconfirmed)
	one("messages_received_total", "Total number of messages received from publishers", prometheus.CounterValue, m.Publish)
	perType("messages_redelivered_total", "Total number of messages redelivered to consumers", m.Redeliver)
	one("messages_routed_total", "Total number of messages routed to queues or streams", prometheus.CounterValue, m.Publish-min(m.Publish, m.ReturnUnroutable+m.DropUnroutable))
	one("messages_unroutable_dropped_total", "Total number of messages published as non-mandatory into an exchange and dropped as unroutable", prometheus.CounterValue, m.DropUnroutable)
	one("messages_unroutable_returned_total", "Total number of messages published as mandatory into an exchange and returned to the publisher as unroutable", prometheus.CounterValue, m.ReturnUnroutable)
	one("publishers", "Current number of publishers", prometheus.GaugeValue, uint64(publishers))
}
