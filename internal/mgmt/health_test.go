package mgmt

import (
	"context"
	"io"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestHealthzAndPerObject: /healthz answers 200 "ok" or 503 with the
// failing services' lines, asking Config.Health each time;
// /metrics/per-object serves its own gatherer, not the default one.
func TestHealthzAndPerObject(t *testing.T) {
	var failing atomic.Pointer[[]string]
	failing.Store(&[]string{})
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "per_object_only", Help: "test"}, func() float64 { return 7 }))
	s, err := New(Config{Addrs: []string{"127.0.0.1:0"}, PerObjectMetrics: reg,
		Health: func(ctx context.Context) []string { return *failing.Load() }})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + s.Addrs()[0].String() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("healthy: %d %q", code, body)
	}
	failing.Store(&[]string{"amqp: disk alarm in effect", "memcached: not accepting"})
	if code, body := get("/healthz"); code != 503 || body != "amqp: disk alarm in effect\nmemcached: not accepting\n" {
		t.Errorf("unhealthy: %d %q", code, body)
	}
	if code, body := get("/metrics/per-object"); code != 200 || body != "# HELP per_object_only test\n# TYPE per_object_only gauge\nper_object_only 7\n" {
		t.Errorf("/metrics/per-object: %d %q", code, body)
	}
}
