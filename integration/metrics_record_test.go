package integration

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"substrate/internal/rabbitmqtest"
)

var recordRabbitMQMetrics = flag.Bool("record-rabbitmq-metrics", false, "record testdata/rabbitmq-prometheus/rabbitmq-3.10.8-*.prom from Debian's RabbitMQ with rabbitmq_prometheus after the workload")

// goldens are RabbitMQ 3.10.8's /metrics and /metrics/per-object after the
// workload, recorded from the real daemon by TestRecordRabbitMQ.
var goldens = map[string]string{
	"/metrics":            "testdata/rabbitmq-prometheus/rabbitmq-3.10.8-metrics.prom",
	"/metrics/per-object": "testdata/rabbitmq-prometheus/rabbitmq-3.10.8-per-object.prom",
}

// TestRecordRabbitMQ runs the workload against a private RabbitMQ 3.10.8
// with its Prometheus plugin and writes what its two endpoints answer. It
// only ever talks to RabbitMQ: goldens never come from substrate.
func TestRecordRabbitMQ(t *testing.T) {
	if !*recordRabbitMQMetrics {
		t.Skip("-record-rabbitmq-metrics not given")
	}
	if why := rabbitmqtest.Available(); why != "" {
		t.Fatal(why)
	}
	ports, err := rabbitmqtest.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	r, err := rabbitmqtest.Start(context.Background(), rabbitmqtest.Options{Name: "metrics", LogLevel: "warning",
		Plugins: []string{"rabbitmq_prometheus"},
		Conf:    fmt.Sprintf("prometheus.tcp.port = %d\nprometheus.tcp.ip = 127.0.0.1\ncollect_statistics_interval = 500\n", ports[0])})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Stop()
	closeAll := metricsWorkload(t, "amqp://guest:guest@"+r.Addr+"/")
	defer closeAll()
	base := "http://127.0.0.1:" + strconv.Itoa(ports[0])
	// The queue and channel gauges are emitted every statistics interval:
	// wait for the workload's end state.
	deadline := time.Now().Add(30 * time.Second)
	for {
		fams := parseProm(t, getText(t, base+"/metrics/per-object"))
		if promSum(fams, "rabbitmq_queue_messages_ready") == 1 && promSum(fams, "rabbitmq_queue_messages_unacked") == 1 &&
			promSum(fams, "rabbitmq_channel_consumers") == 1 && promSum(fams, "rabbitmq_connections") == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("RabbitMQ's metrics did not settle")
		}
		time.Sleep(200 * time.Millisecond)
	}
	for path, file := range goldens {
		if err := os.WriteFile(filepath.FromSlash(file), []byte(getText(t, base+path)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func getText(t testing.TB, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s %v", url, resp.Status, err)
	}
	return string(b)
}
