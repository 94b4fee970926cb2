package metrics_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"substrate/cache"
	"substrate/internal/metrics"
	"substrate/internal/testkit"
)

const memcachedBin = "/usr/bin/memcached"

// wireStats reads the stats groups over the text protocol, as
// memcached_exporter does: the source for Debian's memcached.
type wireStats struct{ addr string }

func (w wireStats) StatsGroup(group string) (map[string]string, error) {
	c, err := net.DialTimeout("tcp", w.addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "%s\r\n", strings.TrimSpace("stats "+group))
	out := map[string]string{}
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return nil, err
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "END" {
			return out, nil
		}
		f := strings.SplitN(line, " ", 3)
		if len(f) != 3 || f[0] != "STAT" {
			return nil, fmt.Errorf("stats %s: unexpected line %q", group, line)
		}
		out[f[1]] = f[2]
	}
}

// cacheTraffic sends a fixed mix of commands whose counts the test knows.
func cacheTraffic(t *testing.T, addr string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	cmd := func(req string, lines int) []string {
		t.Helper()
		if _, err := c.Write([]byte(req)); err != nil {
			t.Fatal(err)
		}
		var out []string
		for range lines {
			l, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("%q: %v", req, err)
			}
			out = append(out, strings.TrimRight(l, "\r\n"))
		}
		return out
	}
	cmd("flush_all\r\n", 1)
	for _, k := range []string{"a", "b", "c"} {
		cmd("set "+k+" 0 0 1\r\nx\r\n", 1)
	}
	cmd("set n 0 0 1\r\n5\r\n", 1)
	cmd("get a\r\n", 3)
	cmd("get a\r\n", 3)
	cmd("get nope\r\n", 1)
	cmd("delete a\r\n", 1)
	cmd("delete nope\r\n", 1)
	cmd("incr n 1\r\n", 1)
	cmd("incr nope 1\r\n", 1)
	cmd("decr n 1\r\n", 1)
	cmd("touch b 100\r\n", 1)
	cmd("touch nope 100\r\n", 1)
	gets := cmd("gets b\r\n", 3)
	f := strings.Fields(gets[0])
	cas := f[len(f)-1]
	if got := cmd("cas b 0 0 1 "+cas+"\r\ny\r\n", 1); got[0] != "STORED" {
		t.Fatalf("cas: %v", got)
	}
	cmd("cas b 0 0 1 "+cas+"\r\nz\r\n", 1) // EXISTS: badval
	cmd("cas nope 0 0 1 1\r\nz\r\n", 1)    // NOT_FOUND: miss
}

func startOurCache(t *testing.T) (*cache.Server, string) {
	cfg := cache.NewConfig()
	cfg.Addrs = []string{"127.0.0.1:0"}
	srv, err := cache.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	return srv, srv.Addrs()[0].String()
}

func startDebianMemcached(t *testing.T) string {
	if _, err := os.Stat(memcachedBin); err != nil {
		if os.Getenv("SUBSTRATE_REQUIRE_CLIENTS") == "1" {
			t.Fatalf("%s is not installed (SUBSTRATE_REQUIRE_CLIENTS=1)", memcachedBin)
		}
		t.Skipf("%s is not installed", memcachedBin)
	}
	port := testkit.FreePort(t)
	cmd := exec.Command(memcachedBin, "-u", "nobody", "-l", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "0", "-t", "1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr := "127.0.0.1:" + strconv.Itoa(port)
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return addr
		}
		if time.Now().After(deadline) {
			t.Fatalf("memcached did not start: %v; %s", err, stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// gather collects c through a registry and the text format, as a scrape
// would, and parses it back with Prometheus's parser.
func gather(t *testing.T, c prometheus.Collector) string {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	fams, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	var buf bytes.Buffer
	for _, f := range fams {
		if _, err := expfmt.MetricFamilyToText(&buf, f); err != nil {
			t.Fatal(err)
		}
	}
	return buf.String()
}

// TestMemcachedExporterNames: the same commands against substrate's cache
// (read in process) and Debian's memcached (read over the wire, as
// memcached_exporter reads it) give the same metric families, labels and
// command counts under memcached_exporter's names.
func TestMemcachedExporterNames(t *testing.T) {
	srv, ours := startOurCache(t)
	cacheTraffic(t, ours)
	oursText := gather(t, metrics.Memcached{Source: func() metrics.StatsSource { return srv }})
	oursFams := parse(t, oursText)

	want := map[[2]string]float64{
		{"get", "hit"}:  3, // gets counts as a get {"get", "miss"}: 1, {"delete", "hit"}: 1, {"delete", "miss"}: 1,
		{"incr", "hit"}: 1, {"incr", "miss"}: 1, {"decr", "hit"}: 1, {"decr", "miss"}: 0,
		{"touch", "hit"}: 1, {"touch", "miss"}: 1, {"cas", "hit"}: 1, {"cas", "miss"}: 1,
		{"cas", "badval"}: 1, {"set", "hit"}: 4, {"flush", "hit"}: 1,
	}
	check := func(t *testing.T, fams map[string]*dtoFamily) {
		t.Helper()
		for k, v := range want {
			if got := sum(fams, "memcached_commands_total", "command", k[0], "status", k[1]); got != v {
				t.Errorf("memcached_commands_total{command=%q,status=%q} = %v, want %v", k[0], k[1], got, v)
			}
		}
		for name, v := range map[string]float64{"memcached_current_items": 3, "memcached_slab_current_items": 3, "memcached_up": 1, "memcached_items_total": 5, "memcached_version": 1, "memcached_accepting_connections": 1} {
			if got := sum(fams, name); got != v {
				t.Errorf("%s = %v, want %v", name, got, v)
			}
		}
		if sum(fams, "memcached_limit_bytes") != 64<<20 || sum(fams, "memcached_max_connections") != 1024 {
			t.Errorf("limits: %v bytes, %v connections", sum(fams, "memcached_limit_bytes"), sum(fams, "memcached_max_connections"))
		}
		if sum(fams, "memcached_read_bytes_total") == 0 || sum(fams, "memcached_written_bytes_total") == 0 || sum(fams, "memcached_connections_total") == 0 {
			t.Error("traffic counters did not move")
		}
	}
	t.Run("substrate", func(t *testing.T) { check(t, oursFams) })
	t.Run("memcached", func(t *testing.T) {
		addr := startDebianMemcached(t)
		cacheTraffic(t, addr)
		theirs := parse(t, gather(t, metrics.Memcached{Source: func() metrics.StatsSource { return wireStats{addr} }}))
		check(t, theirs)
		// The same families with the same labels, the per-slab ones too.
		names := func(fams map[string]*dtoFamily) []string {
			var out []string
			for n, f := range fams {
				out = append(out, n+"{"+strings.Join(labelNames(f), ",")+"} "+f.GetType().String())
			}
			slices.Sort(out)
			return out
		}
		if a, b := names(oursFams), names(theirs); !slices.Equal(a, b) {
			t.Errorf("families differ:\nsubstrate: %v\nmemcached: %v", a, b)
		}
	})
}

// TestMemcachedDown: without a cache, memcached_up is 0 and alone, as the
// exporter reports an unreachable server.
func TestMemcachedDown(t *testing.T) {
	fams := parse(t, gather(t, metrics.Memcached{Source: func() metrics.StatsSource { return nil }}))
	if len(fams) != 1 || sum(fams, "memcached_up") != 0 || fams["memcached_up"] == nil {
		t.Fatalf("got %v", fams)
	}
}
