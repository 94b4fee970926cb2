package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"substrate/cache"
	"substrate/internal/memcachedcli"
	"substrate/internal/testkit"
)

// honouredLines are memcached command lines made only of options substrate
// honours; memcachedcli's TestStatsSettingsMatchMemcached checks the same
// lines' `stats settings` in Debian's memcached.
var honouredLines = [][]string{
	nil,
	{"-C", "-F", "-X", "-W", "-A", "-b", "77", "-vv", "-t", "2", "-M", "-m", "32", "-c", "99", "-I", "2m",
		"-o", "modern,slab_reassign,slab_automove,lru_crawler,lru_maintainer,maxconns_fast,inline_ascii_resp,hash_algorithm=murmur3,idle_timeout=0,slab_chunk_max=524288"},
	{"-b", "-1", "-f", "1.25", "-n", "48", "-R", "20", "-o", "drop_privileges,no_inline_ascii_resp,hot_lru_pct=20,warm_lru_pct=40,lru_crawler_sleep=100,read_buf_mem_limit=0,ssl_wbuf_size=16"},
	{"-o", "ssl_chain_cert=/x.pem,ssl_key=/k.pem,ssl_ca_cert=/ca.pem,ssl_verify_mode=2,ssl_min_version=3,ssl_keyformat=2"},
	{"-B", "ascii", "-a", "0755", "-v"},
}

// TestCacheOptionsHonoured starts the cache as `substrate memcached` would
// configure it for each line and checks that every `stats settings` line
// the options determine is what memcached 1.6.18 prints for them.
func TestCacheOptionsHonoured(t *testing.T) {
	for _, extra := range honouredLines {
		port := testkit.FreePort(t)
		args := append([]string{"-u", "nobody", "-U", "0", "-l", "127.0.0.1", "-p", strconv.Itoa(port)}, extra...)
		o, err := memcachedcli.Parse(args)
		if err != nil {
			t.Fatalf("Parse(%q): %v", args, err)
		}
		if _, err := o.Check(memcachedcli.Standalone); err != nil {
			t.Fatalf("%q refused: %v", extra, err)
		}
		cfg, err := cacheConfig(context.Background(), o, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Threads = o.Threads // as memcached() does, with GOMAXPROCS
		if o.Shutdown {
			cfg.OnShutdown = func(bool) {}
		}
		srv, err := cache.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		got := statsSettings(t, fmt.Sprintf("127.0.0.1:%d", port))
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		srv.Shutdown(ctx)
		cancel()
		for k, want := range o.StatsSettings() {
			if got[k] != want {
				t.Errorf("%q: stats settings %s: ours %q, memcached %q", extra, k, got[k], want)
			}
		}
	}
}

// TestCacheListenPrefixes: -l's "tag[...]:" prefix is accepted (only
// memcached's proxy reads it; Debian's build has none), "proto[...]:" is
// refused in one line.
func TestCacheListenPrefixes(t *testing.T) {
	for _, tc := range []struct{ item, refused string }{
		{"tag[web]:127.0.0.1:11311", ""},
		{"proto[ascii]:127.0.0.1:11311", "substrate does not support memcached's -l proto[ascii]:127.0.0.1:11311: a listener's own protocol"},
	} {
		o, err := memcachedcli.Parse([]string{"-u", "nobody", "-l", tc.item})
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := cacheConfig(context.Background(), o, nil, 0)
		switch {
		case tc.refused == "" && (err != nil || len(cfg.Addrs) != 1 || cfg.Addrs[0] != "127.0.0.1:11311"):
			t.Errorf("-l %s: %v, addrs %v", tc.item, err, cfg.Addrs)
		case tc.refused != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.refused)):
			t.Errorf("-l %s: %v, want %q", tc.item, err, tc.refused)
		}
	}
}

func statsSettings(t *testing.T, addr string) map[string]string {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := nc.Write([]byte("stats settings\r\n")); err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	r := bufio.NewReader(nc)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading stats settings: %v", err)
		}
		line = strings.TrimSuffix(line, "\r\n")
		if line == "END" {
			return m
		}
		if f := strings.SplitN(line, " ", 3); len(f) == 3 && f[0] == "STAT" {
			m[f[1]] = f[2]
		}
	}
}
