package main

import (
	"bufio"
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"substrate/internal/faults"
	"substrate/internal/logging"
)

func TestParseDiskFreeLimit(t *testing.T) {
	var total uint64 = 8 << 30
	for _, c := range []struct {
		in   string
		want uint64
	}{
		{"50MB", 50e6}, {"0", 0}, {"1GB", 1e9}, {"1.0", total}, {"1.5", total + total/2}, {"2147483648", 2 << 30},
	} {
		got, err := parseDiskFreeLimit(c.in, total)
		if err != nil || got != c.want {
			t.Errorf("parseDiskFreeLimit(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "-1.0", "abc", "1.0GB", "12XB"} {
		if _, err := parseDiskFreeLimit(bad, total); err == nil {
			t.Errorf("parseDiskFreeLimit(%q) accepted", bad)
		}
	}
}

func TestServeFlagsLimits(t *testing.T) {
	f, _, err := parseServe([]string{"--amqp-max-connections", "100"}, map[string]string{"SUBSTRATE_AMQP_DISK_FREE_LIMIT": "1GB"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if f.amqpMaxConnections != 100 || f.amqpDiskFreeLimit != "1GB" {
		t.Errorf("got max-connections %d, disk-free-limit %q", f.amqpMaxConnections, f.amqpDiskFreeLimit)
	}
	f, _, err = parseServe(nil, nil, nil)
	if err != nil || f.amqpDiskFreeLimit != "50MB" || f.amqpMaxConnections != 0 {
		t.Errorf("defaults: %+v %v", f, err)
	}
}

func TestMemoryBudget(t *testing.T) {
	all := map[string]bool{"etcd": true, "amqp": true, "memcached": true, "http": true}
	b, ok := serveBudget(all, 1<<30, 64<<20)
	if !ok {
		t.Fatal("bounded budget reported unbounded")
	}
	if want := uint64(1<<30 + 80<<20 + etcdMemoryShare + processMemoryShare); b.total() != want {
		t.Errorf("total %d, want %d", b.total(), want)
	}
	if err := checkBudget(b, 8<<30); err != nil {
		t.Errorf("8 GiB machine: %v", err)
	}
	err := checkBudget(b, 1<<30)
	if err == nil {
		t.Fatal("budget over the machine accepted")
	}
	for _, part := range []string{"amqp 1.0GiB (--amqp-memory-high-watermark)", "memcached 80.0MiB (-m 64MiB + 25%)", "etcd 256.0MiB", "exceeds the 1.0GiB"} {
		if !strings.Contains(err.Error(), part) {
			t.Errorf("error %q lacks %q", err, part)
		}
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("error is not one line: %q", err)
	}
	if _, ok := serveBudget(all, 0, 64<<20); ok {
		t.Error("watermark 0 (alarm off) gave a bounded budget")
	}
	if b, _ := serveBudget(map[string]bool{"memcached": true}, 0, 64<<20); len(b) != 2 || b[0].name != "memcached" {
		t.Errorf("cache-only budget %v", b)
	}
}

// TestServeRefusesBudgetOverMachine: serve stops before binding when the
// shares exceed the machine.
func TestServeRefusesBudgetOverMachine(t *testing.T) {
	machine := totalMemory()
	if machine == 0 {
		t.Skip("machine memory unknown")
	}
	withoutSubstrateEnv(t) // make test's SUBSTRATE_BIN would add a warning line
	var stderr strings.Builder
	mb := machine>>20 + 1
	// A directory serve creates (0700): t.TempDir's own is 0755, which
	// serve warns about, as etcd does.
	status := run(t.Context(), []string{"substrate", "serve", "--data-dir", filepath.Join(t.TempDir(), "data"), "--services", "memcached",
		"--memcached-port", "0", "--memcached-options", "-m " + strconv.FormatUint(mb, 10)}, &stderr, &stderr)
	if status != 1 || !strings.Contains(stderr.String(), "memory budget memcached") || strings.Count(strings.TrimSpace(stderr.String()), "\n") != 0 {
		t.Fatalf("status %d, stderr %q", status, stderr.String())
	}
}

// withoutSubstrateEnv hides the SUBSTRATE_* variables of the test's own
// environment from serve for the rest of the test.
func withoutSubstrateEnv(t *testing.T) {
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "SUBSTRATE_") {
			t.Setenv(k, "") // restored after the test
			os.Unsetenv(k)
		}
	}
}

func TestPanicsMetric(t *testing.T) {
	read := func() map[string]float64 {
		mfs, err := prometheus.DefaultGatherer.Gather()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]float64{}
		for _, mf := range mfs {
			if mf.GetName() != "substrate_panics_total" {
				continue
			}
			if mf.GetType().String() != "COUNTER" {
				t.Errorf("type %v", mf.GetType())
			}
			for _, m := range mf.Metric {
				out[m.Label[0].GetValue()] = m.Counter.GetValue()
			}
		}
		return out
	}
	before := read()
	for _, svc := range panicServices {
		if _, ok := before[svc]; !ok {
			t.Errorf("no series for service %q: %v", svc, before)
		}
	}
	faults.Handle(nil, faults.Redis, "test", "boom", nil)
	if after := read(); after[faults.Redis] != before[faults.Redis]+1 {
		t.Errorf("redis: %v -> %v", before[faults.Redis], after[faults.Redis])
	}
	for _, name := range []string{"substrate_amqp_memory_used_bytes", "substrate_amqp_disk_alarm", "substrate_amqp_disk_free_bytes", "substrate_amqp_disk_free_limit_bytes"} {
		found := false
		mfs, _ := prometheus.DefaultGatherer.Gather()
		for _, mf := range mfs {
			found = found || mf.GetName() == name
		}
		if !found {
			t.Errorf("%s not registered", name)
		}
	}
}

// TestServeCapsCacheMemlimit: under serve, cache_memlimit cannot raise
// the cache past its -m (its share of the budget).
func TestServeCapsCacheMemlimit(t *testing.T) {
	f, _, err := parseServe([]string{"--memcached-options", "-m 16"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.memcachedPort = 0
	svc, limit, err := serveCache(t.Context(), f, []string{"127.0.0.1"}, logging.Discard())
	if err != nil || limit != 16<<20 {
		t.Fatalf("serveCache: %d %v", limit, err)
	}
	if err := svc.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer svc.Shutdown(context.Background())
	c, err := net.Dial("tcp", svc.Addrs()[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "cache_memlimit 17\r\ncache_memlimit 8\r\ncache_memlimit 16\r\n")
	r := bufio.NewReader(c)
	var got []string
	for range 3 {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, strings.TrimSpace(line))
	}
	if !strings.HasPrefix(got[0], "CLIENT_ERROR cannot set maxbytes to more than 16m") || got[1] != "OK" || got[2] != "OK" {
		t.Errorf("replies %q", got)
	}
}
