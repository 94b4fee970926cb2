package main

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"substrate/broker"
)

// brokerMetrics is the broker the process's metrics describe. The
// collectors are registered once per process (tests run serve many
// times) and read whichever broker is current.
var brokerMetrics atomic.Pointer[broker.Server]

func init() {
	{
		stat := func(f func(b *broker.Server) float64) func() float64 {
			return func() float64 {
				if b := brokerMetrics.Load(); b != nil {
					return f(b)
				}
				return 0
			}
		}
		prometheus.MustRegister(
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "substrate_amqp_store_fsyncs_total",
				Help: "fsyncs issued by the AMQP message store (segments, ack files, directory)."},
				stat(func(b *broker.Server) float64 { return float64(b.StoreStats().Syncs) })),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "substrate_amqp_store_messages",
				Help: "Live messages in the AMQP message store."},
				stat(func(b *broker.Server) float64 { return float64(b.StoreStats().Live) })),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "substrate_amqp_store_segments",
				Help: "Segment files of the AMQP message store."},
				stat(func(b *broker.Server) float64 { return float64(b.StoreStats().Segments) })),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "substrate_amqp_memory_alarm",
				Help: "1 while the AMQP memory alarm blocks publishers."},
				stat(func(b *broker.Server) float64 {
					if b.MemoryAlarm() {
						return 1
					}
					return 0
				})),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "substrate_amqp_memory_high_watermark_bytes",
				Help: "The AMQP memory alarm's threshold (0: off)."},
				stat(func(b *broker.Server) float64 { return float64(b.MemoryHighWatermark()) })),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "substrate_amqp_blocked_connections",
				Help: "AMQP connections blocked by the memory alarm."},
				stat(func(b *broker.Server) float64 { return float64(b.BlockedConnections()) })),
		)
	}
}
