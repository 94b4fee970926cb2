package metrics_test

import (
	"strings"
	"testing"

	"substrate/broker"
	"substrate/internal/metrics"
)

// TestRabbitMQAggregatedAndPerObject: /metrics sums the queues into one
// unlabelled sample per family, /metrics/per-object has one sample per
// queue; a queue name that is not UTF-8 (AMQP names are bytes) is
// exported with U+FFFD instead of failing the scrape.
func TestRabbitMQAggregatedAndPerObject(t *testing.T) {
	st := metrics.BrokerStats{Node: "rabbit@h", Cluster: "substrate@h", ClusterID: "id",
		Queues: []broker.QueueInfo{
			{VHost: "/", Name: "a", MessagesReady: 2, Messages: 3, MessagesUnacknowledged: 1},
			{VHost: "/", Name: "b\xff", MessagesReady: 5, Messages: 5},
		},
		Overview: broker.Overview{ObjectTotals: broker.ObjectTotals{Queues: 2}},
	}
	src := func() (metrics.BrokerStats, bool) { return st, true }
	agg := parse(t, gather(t, metrics.RabbitMQ{Source: src}))
	if got := agg["rabbitmq_queue_messages_ready"]; got == nil || len(got.Metric) != 1 || len(got.Metric[0].Label) != 0 || sum(agg, "rabbitmq_queue_messages_ready") != 7 {
		t.Errorf("aggregated ready: %v", got)
	}
	if sum(agg, "rabbitmq_queues") != 2 || sum(agg, "rabbitmq_identity_info", "rabbitmq_node", "rabbit@h", "rabbitmq_cluster", "substrate@h") != 1 {
		t.Error("totals or identity wrong")
	}
	text := gather(t, metrics.RabbitMQ{PerObject: true, Source: src})
	per := parse(t, text)
	if sum(per, "rabbitmq_queue_messages_ready", "vhost", "/", "queue", "a") != 2 || sum(per, "rabbitmq_queue_messages_ready", "queue", "b\uFFFD") != 5 {
		t.Errorf("per object:\n%s", text)
	}
	if !strings.Contains(text, `queue="b`+"\uFFFD"+`"`) {
		t.Error("invalid UTF-8 not replaced")
	}
	if fams := parse(t, gather(t, metrics.RabbitMQ{Source: func() (metrics.BrokerStats, bool) { return metrics.BrokerStats{}, false }})); len(fams) != 0 {
		t.Errorf("no broker: %d families", len(fams))
	}
}
