package mgmtapi

import (
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"substrate/broker"
)

// ErlangVersion stands in for erlang_version: substrate runs on Go; the
// field keeps its type (a string) and says what runs.
func erlangVersion() string { return runtime.Version() }

var exchangeTypes = []obj{
	{"name": "direct", "description": "AMQP direct exchange, as per the AMQP specification", "enabled": true},
	{"name": "fanout", "description": "AMQP fanout exchange, as per the AMQP specification", "enabled": true},
	{"name": "headers", "description": "AMQP headers exchange, as per the AMQP specification", "enabled": true},
	{"name": "topic", "description": "AMQP topic exchange, as per the AMQP specification", "enabled": true},
}

func (a *API) listeners() []Listener {
	if a.cfg.Listeners == nil {
		return nil
	}
	return a.cfg.Listeners()
}

func splitHostPort(addr net.Addr) (string, int) {
	if ta, ok := addr.(*net.TCPAddr); ok {
		return ta.IP.String(), ta.Port
	}
	h, p, _ := net.SplitHostPort(addr.String())
	n, _ := strconv.Atoi(p)
	return h, n
}

func (a *API) listenerObjs() []obj {
	out := []obj{}
	for _, l := range a.listeners() {
		ip, port := splitHostPort(l.Addr)
		out = append(out, obj{"node": a.cfg.Node, "protocol": l.Protocol, "ip_address": ip, "port": port, "socket_opts": obj{}})
	}
	return out
}

func (a *API) contextObjs() []obj {
	out := []obj{}
	for _, l := range a.listeners() {
		if l.Protocol != "http" && l.Protocol != "https" {
			continue
		}
		ip, port := splitHostPort(l.Addr)
		o := obj{"node": a.cfg.Node, "description": "RabbitMQ Management", "path": "/",
			"cowboy_opts": "[{sendfile,false}]", "ip": ip, "port": strconv.Itoa(port), "ssl_opts": []any{}}
		if l.Protocol == "https" {
			o["ssl"] = "true"
		}
		out = append(out, o)
	}
	return out
}

func (a *API) overview(w http.ResponseWriter, r *http.Request, rq *request) {
	ov := a.b.Overview()
	const k = "overview"
	churn := obj{}
	for f, v := range churnFields(ov.Churn) {
		churn[f] = v
		churn[f+"_details"] = a.sampler.details(k, f)
	}
	ms := a.messageStats(k, ov.MessageStats, overviewStatKeys)
	ms["disk_reads"], ms["disk_reads_details"] = 0, obj{"rate": 0.0}
	ms["disk_writes"], ms["disk_writes_details"] = 0, obj{"rate": 0.0}
	queueTotals := obj{
		"messages": ov.QueueTotals.Messages, "messages_details": a.sampler.details(k, "messages"),
		"messages_ready": ov.QueueTotals.MessagesReady, "messages_ready_details": a.sampler.details(k, "messages_ready"),
		"messages_unacknowledged":         ov.QueueTotals.MessagesUnacknowledged,
		"messages_unacknowledged_details": a.sampler.details(k, "messages_unacknowledged"),
	}
	objectTotals := obj{
		"connections": ov.ObjectTotals.Connections, "channels": ov.ObjectTotals.Channels,
		"exchanges": ov.ObjectTotals.Exchanges, "queues": ov.ObjectTotals.Queues, "consumers": ov.ObjectTotals.Consumers,
	}
	if !isMonitor(rq.user) {
		// Users without monitoring see the totals of their vhosts and
		// their own connections, as in RabbitMQ.
		ms, queueTotals, objectTotals = a.userTotals(rq)
	}
	o := obj{
		"management_version": Version, "rabbitmq_version": Version,
		"product_name": "substrate", "product_version": a.cfg.ProductVersion,
		"rates_mode": "basic",
		"sample_retention_policies": obj{
			"global": []int{600, 3600, 28800, 86400}, "basic": []int{600, 3600}, "detailed": []int{600},
		},
		"exchange_types":                exchangeTypes,
		"cluster_name":                  a.cfg.ClusterName,
		"erlang_version":                erlangVersion(),
		"erlang_full_version":           erlangVersion() + " (substrate: no Erlang VM)",
		"release_series_support_status": "supported",
		"disable_stats":                 false, "enable_queue_totals": false,
		"message_stats":             ms,
		"churn_rates":               churn,
		"queue_totals":              queueTotals,
		"object_totals":             objectTotals,
		"statistics_db_event_queue": 0,
		"node":                      a.cfg.Node,
		"listeners":                 a.listenerObjs(),
		"contexts":                  a.contextObjs(),
	}
	a.one(w, rq, o)
}

// userTotals are overview's message_stats, queue_totals and
// object_totals over the vhosts rq's user sees, and its connections.
func (a *API) userTotals(rq *request) (ms, queueTotals, objectTotals obj) {
	vhosts := a.visibleVHosts(rq.user)
	stats := a.b.VHostStats()
	sum := func(keys []string, field string) float64 {
		var r float64
		for _, k := range keys {
			r += a.sampler.rate(k, field)
		}
		return r
	}
	var keys []string
	var m broker.MessageStats
	var msgs, ready, unacked, queues, consumers, exchanges int
	for _, vh := range vhosts {
		keys = append(keys, "vhost\x00"+vh)
		v := stats[vh].MessageStats
		m.Publish += v.Publish
		m.Confirm += v.Confirm
		m.ReturnUnroutable += v.ReturnUnroutable
		m.DropUnroutable += v.DropUnroutable
		m.Deliver += v.Deliver
		m.DeliverNoAck += v.DeliverNoAck
		m.Get += v.Get
		m.GetNoAck += v.GetNoAck
		m.GetEmpty += v.GetEmpty
		m.Redeliver += v.Redeliver
		m.Ack += v.Ack
		m.DeliverGet += v.DeliverGet
		for _, q := range a.b.Queues(vh) {
			msgs, ready, unacked = msgs+q.Messages, ready+q.MessagesReady, unacked+q.MessagesUnacknowledged
			queues++
			consumers += q.Consumers
		}
		exchanges += len(a.b.Exchanges(vh))
	}
	ms = obj{}
	for _, f := range overviewStatKeys {
		ms[f.name] = f.get(m)
		ms[f.name+"_details"] = obj{"rate": sum(keys, f.name)}
	}
	ms["disk_reads"], ms["disk_reads_details"] = 0, obj{"rate": 0.0}
	ms["disk_writes"], ms["disk_writes_details"] = 0, obj{"rate": 0.0}
	queueTotals = obj{
		"messages": msgs, "messages_details": obj{"rate": sum(keys, "messages")},
		"messages_ready": ready, "messages_ready_details": obj{"rate": sum(keys, "messages_ready")},
		"messages_unacknowledged": unacked, "messages_unacknowledged_details": obj{"rate": sum(keys, "messages_unacknowledged")},
	}
	conns, chans := 0, 0
	for _, c := range a.b.Connections() {
		if c.User == rq.user.Name {
			conns++
			chans += c.Channels
		}
	}
	objectTotals = obj{"connections": conns, "channels": chans, "exchanges": exchanges, "queues": queues, "consumers": consumers}
	return ms, queueTotals, objectTotals
}

// ---- nodes ----

func fdCounts() (used, total int) {
	if ents, err := os.ReadDir("/proc/self/fd"); err == nil {
		used = len(ents)
	}
	var rl syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) == nil {
		total = int(rl.Cur)
	}
	return used, total
}

// nodeGauges are the node's figures that have a rate in /api/nodes.
func nodeGauges(b *broker.Server) map[string]float64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fdUsed, _ := fdCounts()
	return map[string]float64{
		"mem_used": float64(b.MemoryUsed()), "disk_free": float64(b.DiskFree()), "fd_used": float64(fdUsed),
		"proc_used": float64(runtime.NumGoroutine()), "gc_num": float64(ms.NumGC),
		"gc_bytes_reclaimed": float64(ms.TotalAlloc - ms.HeapAlloc), "sockets_used": float64(len(b.Connections())),
	}
}

// nodeObj is the one node. Erlang VM figures have Go runtime stand-ins:
// proc_used is goroutines, gc_num Go's GC cycles, gc_bytes_reclaimed
// bytes freed; I/O, Mnesia and message-store counters are 0.
func (a *API) nodeObj() obj {
	const k = "node"
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fdUsed, fdTotal := fdCounts()
	ov := a.b.Overview()
	o := obj{
		"name": a.cfg.Node, "type": "disc", "running": true, "os_pid": strconv.Itoa(os.Getpid()),
		"being_drained": false,
		"mem_used":      a.b.MemoryUsed(), "mem_limit": a.b.MemoryHighWatermark(), "mem_alarm": a.b.MemoryAlarm(),
		"mem_calculation_strategy": "rss",
		"disk_free":                a.b.DiskFree(), "disk_free_limit": a.b.DiskFreeLimit(), "disk_free_alarm": a.b.DiskAlarm(),
		"fd_used": fdUsed, "fd_total": fdTotal,
		"sockets_used": ov.ObjectTotals.Connections, "sockets_total": fdTotal,
		"proc_used": runtime.NumGoroutine(), "proc_total": 1048576,
		"processors": runtime.NumCPU(), "run_queue": 0,
		"uptime":             time.Since(a.started).Milliseconds(),
		"rates_mode":         "basic",
		"net_ticktime":       60,
		"gc_num":             ms.NumGC,
		"gc_bytes_reclaimed": ms.TotalAlloc - ms.HeapAlloc,
		"context_switches":   0,
		"exchange_types":     exchangeTypes,
		"auth_mechanisms": []obj{
			{"name": "PLAIN", "description": "SASL PLAIN authentication mechanism", "enabled": true},
			{"name": "AMQPLAIN", "description": "QPid AMQPLAIN mechanism", "enabled": true},
			{"name": "EXTERNAL", "description": "SASL EXTERNAL authentication mechanism (TLS client certificate)", "enabled": false},
		},
		"applications":    []obj{{"name": "substrate", "description": "substrate: AMQP 0-9-1 broker, memcached, etcd", "version": a.cfg.ProductVersion}},
		"contexts":        a.contextObjs(),
		"log_files":       []string{"<stdout>"},
		"config_files":    []string{},
		"db_dir":          a.cfg.DataDir,
		"enabled_plugins": []string{"rabbitmq_management"},
		"partitions":      []any{},
		"cluster_links":   []any{},
		"metrics_gc_queue_length": obj{"channel_closed": 0, "channel_consumer_deleted": 0, "connection_closed": 0,
			"consumer_deleted": 0, "exchange_deleted": 0, "node_node_deleted": 0, "queue_deleted": 0, "vhost_deleted": 0},
		"ra_open_file_metrics": obj{"ra_log_segment_writer": 0, "ra_log_wal": 0},
	}
	for _, f := range []string{"io_read_avg_time", "io_read_bytes", "io_read_count", "io_reopen_count", "io_seek_avg_time",
		"io_seek_count", "io_sync_avg_time", "io_sync_count", "io_write_avg_time", "io_write_bytes", "io_write_count",
		"mnesia_disk_tx_count", "mnesia_ram_tx_count", "msg_store_read_count", "msg_store_write_count",
		"queue_index_read_count", "queue_index_write_count"} {
		o[f] = 0
	}
	for f, v := range churnFields(ov.Churn) {
		o[f] = v
	}
	for _, f := range []string{"channel_closed", "channel_created", "connection_closed", "connection_created",
		"context_switches", "disk_free", "fd_used", "gc_bytes_reclaimed", "gc_num", "io_read_avg_time", "io_read_bytes",
		"io_read_count", "io_reopen_count", "io_seek_avg_time", "io_seek_count", "io_sync_avg_time", "io_sync_count",
		"io_write_avg_time", "io_write_bytes", "io_write_count", "mem_used", "mnesia_disk_tx_count", "mnesia_ram_tx_count",
		"msg_store_read_count", "msg_store_write_count", "proc_used", "queue_created", "queue_declared", "queue_deleted",
		"queue_index_read_count", "queue_index_write_count", "sockets_used"} {
		o[f+"_details"] = a.sampler.details(k, f)
	}
	return o
}

func (a *API) nodes(w http.ResponseWriter, r *http.Request, rq *request) {
	a.list(w, rq, []obj{a.nodeObj()})
}

func (a *API) node(w http.ResponseWriter, r *http.Request, rq *request) {
	if rq.v("node") != a.cfg.Node {
		notFound(w)
		return
	}
	a.one(w, rq, a.nodeObj())
}

// ---- health checks ----

func healthOK(w http.ResponseWriter, extra obj) {
	o := obj{"status": "ok"}
	for k, v := range extra {
		o[k] = v
	}
	writeJSON(w, http.StatusOK, o)
}

func healthFailed(w http.ResponseWriter, reason string, extra obj) {
	o := obj{"status": "failed", "reason": reason}
	for k, v := range extra {
		o[k] = v
	}
	writeJSON(w, http.StatusServiceUnavailable, o)
}

func (a *API) checkOK(w http.ResponseWriter, r *http.Request, rq *request) { healthOK(w, nil) }

// checkAlarms is health/checks/alarms and local-alarms: 503 naming the
// memory or disk alarm in effect.
func (a *API) checkAlarms(w http.ResponseWriter, r *http.Request, rq *request) {
	var alarms []obj
	if a.b.MemoryAlarm() {
		alarms = append(alarms, obj{"node": a.cfg.Node, "resource": "memory"})
	}
	if a.b.DiskAlarm() {
		alarms = append(alarms, obj{"node": a.cfg.Node, "resource": "disk space"})
	}
	if len(alarms) == 0 {
		healthOK(w, nil)
		return
	}
	reason := "There are alarms in effect in the cluster"
	if strings.HasSuffix(r.URL.Path, "/local-alarms") {
		reason = "There are alarms in effect on the node"
	}
	healthFailed(w, reason, obj{"alarms": alarms})
}

func (a *API) checkPortListener(w http.ResponseWriter, r *http.Request, rq *request) {
	port, err := strconv.Atoi(rq.v("port"))
	if err != nil {
		badRequest(w, rq.v("port")+" is not a valid port number")
		return
	}
	var ports []int
	for _, l := range a.listeners() {
		_, p := splitHostPort(l.Addr)
		if p == port {
			healthOK(w, obj{"port": port})
			return
		}
		ports = append(ports, p)
	}
	healthFailed(w, "No active listener", obj{"missing": port, "ports": ports})
}

func (a *API) checkProtocolListener(w http.ResponseWriter, r *http.Request, rq *request) {
	proto := rq.v("protocol")
	var protos []string
	for _, l := range a.listeners() {
		if l.Protocol == proto {
			healthOK(w, obj{"protocol": proto})
			return
		}
		protos = append(protos, l.Protocol)
	}
	healthFailed(w, "No active listener", obj{"missing": proto, "protocols": protos})
}

// checkVirtualHosts: every vhost of substrate runs while the broker does.
func (a *API) checkVirtualHosts(w http.ResponseWriter, r *http.Request, rq *request) {
	healthOK(w, nil)
}

// aliveness is aliveness-test/{vhost}: declare the queue
// "aliveness-test", publish "test_message" to it and get it back, as
// RabbitMQ does; the queue stays.
func (a *API) aliveness(w http.ResponseWriter, r *http.Request, rq *request) {
	vh := rq.v("vhost")
	if !a.vhostExists(vh) {
		notFound(w)
		return
	}
	d, err := a.openDirect(r, rq, vh)
	if err != nil {
		healthFailed(w, err.Error(), nil)
		return
	}
	defer d.close()
	const q, body = "aliveness-test", "test_message"
	if _, err := d.ch.QueueDeclare(q, false, false, false, false, nil); err != nil {
		healthFailed(w, err.Error(), nil)
		return
	}
	if err := d.ch.PublishWithContext(r.Context(), "", q, false, false, amqp.Publishing{Body: []byte(body)}); err != nil {
		healthFailed(w, err.Error(), nil)
		return
	}
	// The channel runs its methods in order: the message is in the
	// queue when the get arrives.
	m, ok, err := d.ch.Get(q, true)
	switch {
	case err != nil:
		healthFailed(w, err.Error(), nil)
	case !ok || string(m.Body) != body:
		healthFailed(w, "aliveness-test: the message did not come back", nil)
	default:
		healthOK(w, nil)
	}
}
