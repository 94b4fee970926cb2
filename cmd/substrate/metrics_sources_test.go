package main

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestMemcachedUpFollowsTheListener: memcached_up on /metrics is 1 while
// the cache listens and 0 once it has stopped, with no other memcached_*
// series then, as memcached_exporter reports a server it cannot reach.
func TestMemcachedUpFollowsTheListener(t *testing.T) {
	prev := cacheMetrics.Load()
	t.Cleanup(func() { cacheMetrics.Store(prev) })
	srv := startTestCache(t, "auto")
	cacheMetrics.Store(srv)
	up := func() (float64, int) {
		t.Helper()
		fams, err := prometheus.DefaultGatherer.Gather()
		if err != nil {
			t.Fatal(err)
		}
		v, n := -1.0, 0
		for _, f := range fams {
			if len(f.GetName()) > 10 && f.GetName()[:10] == "memcached_" {
				n++
			}
			if f.GetName() == "memcached_up" {
				v = f.Metric[0].GetGauge().GetValue()
			}
		}
		return v, n
	}
	if v, n := up(); v != 1 || n < 20 {
		t.Fatalf("listening: memcached_up %v, %d memcached_* families", v, n)
	}
	srv.Shutdown(context.Background())
	if v, n := up(); v != 0 || n != 1 {
		t.Fatalf("stopped: memcached_up %v, %d memcached_* families", v, n)
	}
}
