package main

import (
	"slices"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"substrate/broker"
	"substrate/internal/faults"
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
				Help: "AMQP connections blocked by the memory or disk alarm."},
				stat(func(b *broker.Server) float64 { return float64(b.BlockedConnections()) })),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "substrate_amqp_memory_used_bytes",
				Help: "The AMQP broker's own memory, as its memory alarm counts it: queued and unacked bodies, bodies being assembled, open transactions, output buffers, unwritten store records."},
				stat(func(b *broker.Server) float64 { return float64(b.MemoryUsed()) })),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "substrate_amqp_disk_alarm",
				Help: "1 while the AMQP disk alarm (free space below --amqp-disk-free-limit) blocks publishers."},
				stat(func(b *broker.Server) float64 {
					if b.DiskAlarm() {
						return 1
					}
					return 0
				})),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "substrate_amqp_disk_free_bytes",
				Help: "Free bytes on the message store's filesystem at the last check (0: not checked)."},
				stat(func(b *broker.Server) float64 { return float64(b.DiskFree()) })),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "substrate_amqp_disk_free_limit_bytes",
				Help: "The AMQP disk alarm's threshold (0: off)."},
				stat(func(b *broker.Server) float64 { return float64(b.DiskFreeLimit()) })),
		)
	}
	prometheus.MustRegister(panicsCollector{})
}

// panicServices are the service labels of substrate_panics_total, all
// exported (at 0) from the start so that a rate() query has a series.
var panicServices = []string{faults.AMQP, faults.Memcached, faults.Etcd, faults.HTTP, faults.Ctl, faults.Redis}

var panicsDesc = prometheus.NewDesc("substrate_panics_total",
	"Panics recovered and contained to one peer or request, by service.", []string{"service"}, nil)

// panicsCollector exports faults.Panics().
type panicsCollector struct{}

func (panicsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- panicsDesc }

func (panicsCollector) Collect(ch chan<- prometheus.Metric) {
	counts := faults.Panics()
	for _, svc := range panicServices {
		ch <- prometheus.MustNewConstMetric(panicsDesc, prometheus.CounterValue, float64(counts[svc]), svc)
	}
	for svc, n := range counts {
		if !slices.Contains(panicServices, svc) {
			ch <- prometheus.MustNewConstMetric(panicsDesc, prometheus.CounterValue, float64(n), svc)
		}
	}
}
