// Package metrics exports substrate's services under the metric names
// that existing dashboards query: rabbitmq_prometheus's (RabbitMQ 3.10.8)
// for the broker, prometheus/memcached_exporter's (v0.16.0) for the
// cache. etcd exports its own (etcd_*, grpc_*) through the default
// registry; substrate_* are substrate's own.
//
// Where each lives:
//
//   - rabbitmq.go: RabbitMQ, a collector over BrokerStats (filled per
//     scrape by cmd/substrate from broker.Server's Overview, Queues,
//     Channels and Connections). Aggregated (one unlabelled sample per
//     family, RabbitMQ's default return_per_object_metrics = false) on
//     /metrics, per queue, channel and connection on /metrics/per-object.
//   - memcached.go: Memcached, memcached_exporter's mapping of the four
//     stats groups (cache.Server.StatsGroup, read in process: no
//     connection, so SASL, TLS or a unix socket do not stand in the way).
//
// Both are unchecked collectors (Describe sends nothing): their series
// follow the queues, channels, connections and slab classes of the
// moment. Neither starts a goroutine or holds a lock of its own.
//
// Approximations (the name is RabbitMQ's, the figure substrate's nearest):
//
//   - rabbitmq_process_resident_memory_bytes is what the memory alarm
//     counts (broker.Server.MemoryUsed), so that the Overview's "memory
//     available before publishers blocked" (the limit minus it) is the
//     alarm's margin; the process's RSS is process_resident_memory_bytes.
//   - rabbitmq_process_open_tcp_sockets is the open AMQP connections;
//     rabbitmq_process_max_tcp_sockets is --amqp-max-connections, or the
//     descriptor limit when unlimited.
//   - rabbitmq_erlang_processes_used is goroutines; erlang_gc_runs_total
//     and erlang_gc_reclaimed_bytes_total are Go's GC cycles and bytes
//     freed; erlang_uptime_seconds the process's uptime.
//   - rabbitmq_global_messages_received_confirm_total is the confirmed
//     publishes plus those open channels still wait on (nacks and a closed
//     channel's waiting publishes are not counted).
//   - rabbitmq_global_messages_routed_total is the publishes minus the
//     unroutable ones; rabbitmq_global_publishers counts channels that
//     have published.
//   - the per-queue-type global counters count everything as
//     rabbit_classic_queue (substrate's quorum queues are classic ones
//     underneath); the quorum and stream series stay 0.
//   - per object, the channel's message counters are labelled by channel
//     only (RabbitMQ: per channel and exchange or queue), and
//     rabbitmq_queue_messages_published_total by queue only (RabbitMQ: per
//     channel, queue and exchange); connection metrics are labelled
//     "channel" with the connection's name, as RabbitMQ 3.10 labels them
//     "channel" with its process id.
//   - rabbitmq_queue_messages_paged_out_bytes are the bodies of persistent
//     messages not held in memory; rabbitmq_build_info's erlang_version is
//     Go's version and prometheus_plugin_version substrate's.
//
// Left out (integration/metrics_test.go lists each with its reason): the
// Erlang VM's own (erlang_vm_*, erlang_mnesia_*, the scheduler, reductions,
// net_ticktime, the process limit), the plugin's telemetry_*, RabbitMQ's
// file handle cache I/O, Mnesia, message store and queue index counters,
// Raft, auth attempts, consumer utilisation and capacity, in-memory message
// counts, head message timestamps, per-queue disk reads and writes,
// pending packets and the dead-lettering counters. None of them is queried
// by RabbitMQ's Overview dashboard, which finds every metric it needs.
package metrics
