// Package metrics exports substrate's services under the metric names
// that existing dashboards query: rabbitmq_prometheus's (RabbitMQ 3.10)
// for the broker, prometheus/memcached_exporter's for the cache.
package metrics
