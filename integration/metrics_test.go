package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	amqp091 "github.com/rabbitmq/amqp091-go"
)

// The metrics tests compare substrate's /metrics and /metrics/per-object
// with RabbitMQ 3.10.8's after the same workload (the goldens recorded by
// TestRecordRabbitMQ), check that every metric RabbitMQ's Grafana
// "RabbitMQ-Overview" dashboard queries has data, and that the broker's
// and the cache's counters move with traffic.

// overviewDashboard is RabbitMQ's Grafana dashboard "RabbitMQ-Overview"
// (grafana.com id 10991) as RabbitMQ v3.10.8 ships it:
// deps/rabbitmq_prometheus/docker/grafana/dashboards/RabbitMQ-Overview.json
// in github.com/rabbitmq/rabbitmq-server at tag v3.10.8.
const overviewDashboard = "testdata/rabbitmq-prometheus/RabbitMQ-Overview.json"

// rabbitmqLeftOut are the families of RabbitMQ's two endpoints that
// substrate does not export, and why. Families of the Erlang VM
// (erlang_vm_*, erlang_mnesia_*) and of the plugin's own scrapes
// (telemetry_*) are left out as a whole: none of them has a meaning for a
// Go process, and no RabbitMQ dashboard but the Erlang ones reads them.
var rabbitmqLeftOut = map[string]string{
	"rabbitmq_erlang_processes_limit":                             "Erlang VM: Go has no goroutine limit",
	"rabbitmq_erlang_scheduler_run_queue":                         "Erlang VM scheduler",
	"rabbitmq_erlang_scheduler_context_switches_total":            "Erlang VM scheduler",
	"rabbitmq_erlang_net_ticktime_seconds":                        "Erlang distribution",
	"rabbitmq_io_read_ops_total":                                  "Erlang file_handle_cache I/O",
	"rabbitmq_io_read_bytes_total":                                "Erlang file_handle_cache I/O",
	"rabbitmq_io_write_ops_total":                                 "Erlang file_handle_cache I/O",
	"rabbitmq_io_write_bytes_total":                               "Erlang file_handle_cache I/O",
	"rabbitmq_io_sync_ops_total":                                  "Erlang file_handle_cache I/O (substrate_amqp_store_fsyncs_total counts the store's)",
	"rabbitmq_io_seek_ops_total":                                  "Erlang file_handle_cache I/O",
	"rabbitmq_io_reopen_ops_total":                                "Erlang file_handle_cache I/O",
	"rabbitmq_io_read_time_seconds_total":                         "Erlang file_handle_cache I/O",
	"rabbitmq_io_write_time_seconds_total":                        "Erlang file_handle_cache I/O",
	"rabbitmq_io_sync_time_seconds_total":                         "Erlang file_handle_cache I/O",
	"rabbitmq_io_seek_time_seconds_total":                         "Erlang file_handle_cache I/O",
	"rabbitmq_schema_db_ram_tx_total":                             "Mnesia (definitions live in etcd)",
	"rabbitmq_schema_db_disk_tx_total":                            "Mnesia (definitions live in etcd)",
	"rabbitmq_msg_store_read_total":                               "RabbitMQ's message store",
	"rabbitmq_msg_store_write_total":                              "RabbitMQ's message store",
	"rabbitmq_queue_index_read_ops_total":                         "RabbitMQ's queue index",
	"rabbitmq_queue_index_write_ops_total":                        "RabbitMQ's queue index",
	"rabbitmq_raft_term_total":                                    "Raft of quorum queues (substrate's quorum queues have no Raft log)",
	"rabbitmq_raft_log_snapshot_index":                            "Raft of quorum queues",
	"rabbitmq_raft_log_last_applied_index":                        "Raft of quorum queues",
	"rabbitmq_raft_log_commit_index":                              "Raft of quorum queues",
	"rabbitmq_raft_log_last_written_index":                        "Raft of quorum queues",
	"rabbitmq_raft_entry_commit_latency_seconds":                  "Raft of quorum queues",
	"rabbitmq_queue_process_reductions_total":                     "Erlang reductions",
	"rabbitmq_channel_process_reductions_total":                   "Erlang reductions",
	"rabbitmq_connection_process_reductions_total":                "Erlang reductions",
	"rabbitmq_auth_attempts_total":                                "not counted by the broker",
	"rabbitmq_auth_attempts_succeeded_total":                      "not counted by the broker",
	"rabbitmq_auth_attempts_failed_total":                         "not counted by the broker",
	"rabbitmq_queue_consumer_utilisation":                         "not computed",
	"rabbitmq_queue_consumer_capacity":                            "not computed",
	"rabbitmq_queue_messages_ram":                                 "the broker keeps bytes in memory per queue, not message counts",
	"rabbitmq_queue_messages_ready_ram":                           "the broker keeps bytes in memory per queue, not message counts",
	"rabbitmq_queue_messages_unacked_ram":                         "the broker keeps bytes in memory per queue, not message counts",
	"rabbitmq_queue_messages_paged_out":                           "the broker keeps bytes in memory per queue, not message counts",
	"rabbitmq_queue_head_message_timestamp":                       "not kept",
	"rabbitmq_queue_disk_reads_total":                             "not counted per queue",
	"rabbitmq_queue_disk_writes_total":                            "not counted per queue",
	"rabbitmq_connection_pending_packets":                         "no equivalent of an Erlang port's send queue",
	"rabbitmq_global_messages_dead_lettered_confirmed_total":      "dead-lettering is not counted",
	"rabbitmq_global_messages_dead_lettered_delivery_limit_total": "dead-lettering is not counted",
	"rabbitmq_global_messages_dead_lettered_expired_total":        "dead-lettering is not counted",
	"rabbitmq_global_messages_dead_lettered_maxlen_total":         "dead-lettering is not counted",
	"rabbitmq_global_messages_dead_lettered_rejected_total":       "dead-lettering is not counted",
}

// perObjectLabels are the per-object families whose labels differ from
// RabbitMQ's: it counts a channel's messages per exchange or queue, and
// queue publishes per channel and exchange; substrate per channel, and per
// queue.
var perObjectLabels = map[string][]string{
	"rabbitmq_channel_messages_published_total":           {"channel"},
	"rabbitmq_channel_messages_confirmed_total":           {"channel"},
	"rabbitmq_channel_messages_unroutable_returned_total": {"channel"},
	"rabbitmq_channel_messages_unroutable_dropped_total":  {"channel"},
	"rabbitmq_channel_get_ack_total":                      {"channel"},
	"rabbitmq_channel_get_total":                          {"channel"},
	"rabbitmq_channel_messages_delivered_ack_total":       {"channel"},
	"rabbitmq_channel_messages_delivered_total":           {"channel"},
	"rabbitmq_channel_messages_redelivered_total":         {"channel"},
	"rabbitmq_channel_messages_acked_total":               {"channel"},
	"rabbitmq_channel_get_empty_total":                    {"channel"},
	"rabbitmq_queue_messages_published_total":             {"queue_vhost", "queue"},
}

// sameValues are the families whose value after the workload is
// RabbitMQ's, summed over their samples. Left out: what depends on the
// implementation (bytes, memory, descriptors, packets) and
// rabbitmq_connections_closed_total (RabbitMQ counts the test harness's
// readiness probe).
var sameValues = []string{
	"rabbitmq_connections_opened_total", "rabbitmq_channels_opened_total", "rabbitmq_channels_closed_total",
	"rabbitmq_queues_declared_total", "rabbitmq_queues_created_total", "rabbitmq_queues_deleted_total",
	"rabbitmq_queue_messages_ready", "rabbitmq_queue_messages_unacked", "rabbitmq_queue_messages",
	"rabbitmq_queue_consumers", "rabbitmq_queue_messages_persistent", "rabbitmq_queue_messages_ready_bytes",
	"rabbitmq_queue_messages_unacked_bytes", "rabbitmq_queue_messages_bytes",
	"rabbitmq_channel_consumers", "rabbitmq_channel_messages_unacked", "rabbitmq_channel_messages_unconfirmed",
	"rabbitmq_channel_messages_uncommitted", "rabbitmq_channel_acks_uncommitted", "rabbitmq_consumer_prefetch",
	"rabbitmq_channel_prefetch", "rabbitmq_channel_messages_published_total", "rabbitmq_channel_messages_confirmed_total",
	"rabbitmq_channel_messages_unroutable_returned_total", "rabbitmq_channel_messages_unroutable_dropped_total",
	"rabbitmq_channel_get_ack_total", "rabbitmq_channel_get_total", "rabbitmq_channel_messages_delivered_ack_total",
	"rabbitmq_channel_messages_delivered_total", "rabbitmq_channel_messages_redelivered_total",
	"rabbitmq_channel_messages_acked_total", "rabbitmq_channel_get_empty_total", "rabbitmq_connection_channels",
	"rabbitmq_queue_messages_published_total",
	"rabbitmq_connections", "rabbitmq_channels", "rabbitmq_consumers", "rabbitmq_queues",
	"rabbitmq_alarms_file_descriptor_limit", "rabbitmq_alarms_free_disk_space_watermark", "rabbitmq_alarms_memory_used_watermark",
	"rabbitmq_global_consumers", "rabbitmq_global_publishers",
	"rabbitmq_global_messages_acknowledged_total", "rabbitmq_global_messages_confirmed_total",
	"rabbitmq_global_messages_delivered_consume_auto_ack_total", "rabbitmq_global_messages_delivered_consume_manual_ack_total",
	"rabbitmq_global_messages_delivered_get_auto_ack_total", "rabbitmq_global_messages_delivered_get_manual_ack_total",
	"rabbitmq_global_messages_delivered_total", "rabbitmq_global_messages_get_empty_total",
	"rabbitmq_global_messages_received_confirm_total", "rabbitmq_global_messages_received_total",
	"rabbitmq_global_messages_redelivered_total", "rabbitmq_global_messages_routed_total",
	"rabbitmq_global_messages_unroutable_dropped_total", "rabbitmq_global_messages_unroutable_returned_total",
}

func readGolden(t *testing.T, path string) map[string]*dto.MetricFamily {
	t.Helper()
	b, err := os.ReadFile(goldens[path])
	if err != nil {
		t.Fatal(err)
	}
	return parseProm(t, string(b))
}

func leftOut(name string) bool {
	if _, ok := rabbitmqLeftOut[name]; ok {
		return true
	}
	for _, p := range []string{"erlang_vm_", "erlang_mnesia_", "telemetry_"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// dashboardMetrics are the metric names in the dashboard's queries (not
// the label names rabbitmq_cluster and rabbitmq_node they join on).
func dashboardMetrics(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(overviewDashboard)
	if err != nil {
		t.Fatal(err)
	}
	var d any
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	var exprs []string
	var walk func(any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok && (k == "expr" || k == "query" || k == "definition") {
					exprs = append(exprs, s)
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(d)
	seen := map[string]bool{}
	for _, e := range exprs {
		for _, m := range regexp.MustCompile(`\b(?:rabbitmq|erlang)_[a-z0-9_]+`).FindAllString(e, -1) {
			if m != "rabbitmq_cluster" && m != "rabbitmq_node" {
				seen[m] = true
			}
		}
	}
	var out []string
	for m := range seen {
		out = append(out, m)
	}
	slices.Sort(out)
	if len(out) < 30 {
		t.Fatalf("only %d metrics found in the dashboard: %v", len(out), out)
	}
	return out
}

func httpText(t *testing.T, s *server, path string) (int, string) {
	t.Helper()
	c := http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d%s", s.httpPort, path))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		b.WriteString(sc.Text() + "\n")
	}
	return resp.StatusCode, b.String()
}

func promScrape(t *testing.T, s *server, path string) map[string]*dto.MetricFamily {
	t.Helper()
	code, body := httpText(t, s, path)
	if code != 200 {
		t.Fatalf("%s: %d %s", path, code, body)
	}
	return parseProm(t, body)
}

// TestMetricsAsRabbitMQAndMemcachedExporter runs the workload against
// substrate, then checks /metrics and /metrics/per-object against
// RabbitMQ's after the same workload: the same families (but those left
// out, with their reasons above), types, help texts and labels, the same
// values where the workload decides them; every metric the Overview
// dashboard queries; the identity join; counters that move with traffic,
// the cache's under memcached_exporter's names too; and systemd's
// watchdog pinged while all is healthy.
func TestMetricsAsRabbitMQAndMemcachedExporter(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify.sock")
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()
	s := newServer(t)
	s.proc = start(t, []string{"NOTIFY_SOCKET=" + sock, "WATCHDOG_USEC=1000000"}, s.args()...)
	s.waitReady(30 * time.Second)
	url := fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", s.amqpPort)
	closeAll := metricsWorkload(t, url)
	defer closeAll()

	t.Run("watchdog", func(t *testing.T) {
		buf := make([]byte, 64)
		pings := 0
		for pings < 2 {
			notify.SetReadDeadline(time.Now().Add(10 * time.Second))
			n, err := notify.Read(buf)
			if err != nil {
				t.Fatalf("after %d pings: %v", pings, err)
			}
			if string(buf[:n]) == "WATCHDOG=1" {
				pings++
			}
		}
	})

	for _, path := range []string{"/metrics", "/metrics/per-object"} {
		t.Run(path, func(t *testing.T) {
			golden := readGolden(t, path)
			ours := promScrape(t, s, path)
			perObject := path == "/metrics/per-object"
			for name, g := range golden {
				if len(g.Metric) == 0 || leftOut(name) {
					continue
				}
				o := ours[name]
				if o == nil {
					t.Errorf("%s: missing", name)
					continue
				}
				if o.GetType() != g.GetType() || o.GetHelp() != g.GetHelp() {
					t.Errorf("%s: type %v help %q, RabbitMQ: %v %q", name, o.GetType(), o.GetHelp(), g.GetType(), g.GetHelp())
				}
				want := promLabelNames(g)
				if l, ok := perObjectLabels[name]; ok && perObject {
					want = l
				}
				got := promLabelNames(o)
				slices.Sort(got)
				slices.Sort(want)
				if len(o.Metric) > 0 && !slices.Equal(got, want) {
					t.Errorf("%s: labels %v, RabbitMQ: %v", name, got, want)
				}
			}
			// Nothing under RabbitMQ's prefix that RabbitMQ does not have.
			for name := range ours {
				if strings.HasPrefix(name, "rabbitmq_") && golden[name] == nil {
					t.Errorf("%s: not one of RabbitMQ's", name)
				}
			}
			for _, name := range sameValues {
				if golden[name] == nil {
					continue
				}
				if got, want := promSum(ours, name), promSum(golden, name); got != want {
					t.Errorf("%s = %v after the workload, RabbitMQ: %v", name, got, want)
				}
			}
			if perObject {
				for _, q := range []string{metricsWorkQueue, metricsIdleQueue, metricsEmptyQueue} {
					for _, name := range []string{"rabbitmq_queue_messages_ready", "rabbitmq_queue_messages_unacked", "rabbitmq_queue_consumers"} {
						if got, want := promSum(ours, name, "vhost", "/", "queue", q), promSum(golden, name, "vhost", "/", "queue", q); got != want {
							t.Errorf("%s{queue=%q} = %v, RabbitMQ: %v", name, q, got, want)
						}
					}
				}
			}
			// The dashboards' join: one identity series per target.
			id := ours["rabbitmq_identity_info"]
			if id == nil || len(id.Metric) != 1 {
				t.Fatalf("rabbitmq_identity_info: %v", id)
			}
			for _, l := range []string{"rabbitmq_node", "rabbitmq_cluster", "rabbitmq_cluster_permanent_id"} {
				if !slices.ContainsFunc(id.Metric[0].Label, func(p *dto.LabelPair) bool { return p.GetName() == l && p.GetValue() != "" }) {
					t.Errorf("rabbitmq_identity_info has no %s", l)
				}
			}
		})
	}

	t.Run("Overview dashboard", func(t *testing.T) {
		ours := promScrape(t, s, "/metrics")
		for _, name := range dashboardMetrics(t) {
			if f := ours[name]; f == nil || len(f.Metric) == 0 {
				t.Errorf("%s: the Overview dashboard queries it; /metrics has no sample", name)
			}
		}
	})

	t.Run("counters move with traffic", func(t *testing.T) {
		const n = 10
		before, beforeQ := promScrape(t, s, "/metrics"), promScrape(t, s, "/metrics/per-object")
		c, err := amqp091.Dial(url)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		ch, err := c.Channel()
		if err != nil {
			t.Fatal(err)
		}
		if err := ch.Confirm(false); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		for range n {
			dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", metricsWorkQueue, false, false, amqp091.Publishing{Body: []byte("more")})
			if err != nil {
				t.Fatal(err)
			}
			if ok, err := dc.WaitContext(ctx); !ok || err != nil {
				t.Fatal("confirm", err)
			}
		}
		mc, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", s.memcachedPort), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer mc.Close()
		mc.SetDeadline(time.Now().Add(10 * time.Second))
		r := bufio.NewReader(mc)
		for i := range n {
			fmt.Fprintf(mc, "set metrics-%d 0 0 2\r\nhi\r\n", i)
			if l, err := r.ReadString('\n'); err != nil || l != "STORED\r\n" {
				t.Fatalf("set: %q %v", l, err)
			}
		}
		for i := range n {
			fmt.Fprintf(mc, "get metrics-%d\r\n", i)
			for range 3 {
				if _, err := r.ReadString('\n'); err != nil {
					t.Fatal(err)
				}
			}
		}
		after, afterQ := promScrape(t, s, "/metrics"), promScrape(t, s, "/metrics/per-object")
		for _, m := range []struct {
			name   string
			labels []string
			fams   [2]map[string]*dto.MetricFamily
		}{
			{"rabbitmq_global_messages_received_total", nil, [2]map[string]*dto.MetricFamily{before, after}},
			{"rabbitmq_global_messages_received_confirm_total", nil, [2]map[string]*dto.MetricFamily{before, after}},
			{"rabbitmq_global_messages_confirmed_total", nil, [2]map[string]*dto.MetricFamily{before, after}},
			{"rabbitmq_global_messages_routed_total", nil, [2]map[string]*dto.MetricFamily{before, after}},
			{"rabbitmq_queue_messages_ready", nil, [2]map[string]*dto.MetricFamily{before, after}},
			{"rabbitmq_queue_messages_ready", []string{"queue", metricsWorkQueue}, [2]map[string]*dto.MetricFamily{beforeQ, afterQ}},
			{"rabbitmq_queue_messages_published_total", []string{"queue", metricsWorkQueue}, [2]map[string]*dto.MetricFamily{beforeQ, afterQ}},
			{"memcached_commands_total", []string{"command", "set", "status", "hit"}, [2]map[string]*dto.MetricFamily{before, after}},
			{"memcached_commands_total", []string{"command", "get", "status", "hit"}, [2]map[string]*dto.MetricFamily{before, after}},
			{"memcached_current_items", nil, [2]map[string]*dto.MetricFamily{before, after}},
			{"memcached_items_total", nil, [2]map[string]*dto.MetricFamily{before, after}},
		} {
			if d := promSum(m.fams[1], m.name, m.labels...) - promSum(m.fams[0], m.name, m.labels...); d != n {
				t.Errorf("%s%v moved by %v, want %d", m.name, m.labels, d, n)
			}
		}
		for _, name := range []string{"memcached_read_bytes_total", "memcached_written_bytes_total", "rabbitmq_connections_opened_total", "rabbitmq_channels_opened_total"} {
			if promSum(after, name) <= promSum(before, name) {
				t.Errorf("%s did not move", name)
			}
		}
		if promSum(after, "memcached_up") != 1 {
			t.Error("memcached_up is not 1")
		}
	})
}

// TestHealthzNamesFailingService: /healthz is 200 "ok" on a healthy
// server; with the disk alarm on (a free-space limit no disk meets) it
// is 503 naming amqp and the alarm, and the systemd watchdog keeps
// pinging: an alarm is the broker working as designed (publishers wait),
// not a hang a restart would cure.
func TestHealthzNamesFailingService(t *testing.T) {
	healthy := serve(t, "--services", "amqp,memcached,http")
	if code, body := httpText(t, healthy, "/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("healthy: %d %q", code, body)
	}
	// Without etcd the broker has no message store and watches no disk;
	// the dashboards still get the data directory's free space.
	if free := promSum(promScrape(t, healthy, "/metrics"), "rabbitmq_disk_space_available_bytes"); free <= 0 {
		t.Errorf("rabbitmq_disk_space_available_bytes = %v without etcd", free)
	}

	sock := filepath.Join(t.TempDir(), "notify.sock")
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()
	s := newServer(t)
	s.proc = start(t, []string{"NOTIFY_SOCKET=" + sock, "WATCHDOG_USEC=400000"}, s.args("--amqp-disk-free-limit", "1000000GB")...)
	s.waitReady(30 * time.Second)
	deadline := time.Now().Add(15 * time.Second)
	for {
		code, body := httpText(t, s, "/healthz")
		if code == 503 {
			if lines := strings.Split(strings.TrimSpace(body), "\n"); len(lines) != 1 || !strings.HasPrefix(lines[0], "amqp: disk alarm in effect") {
				t.Errorf("503 body %q, want one line naming amqp's disk alarm", body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/healthz still %d %q with the disk alarm", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Degraded, not hung: pings keep arriving (every 200 ms).
	buf := make([]byte, 64)
	got := 0
	deadline = time.Now().Add(10 * time.Second)
	for got < 3 {
		notify.SetReadDeadline(deadline)
		n, err := notify.Read(buf)
		if err != nil {
			t.Fatalf("%d watchdog pings during the disk alarm, want 3: %v", got, err)
		}
		if string(buf[:n]) == "WATCHDOG=1" {
			got++
		}
	}
}
