package memcachedcli

import (
	"errors"
	"strings"
	"testing"
)

// supportCases decide, for every option memcached 1.6.18 accepts, whether
// substrate honours it (refused == "") or refuses it (refused is part of
// the one-line message), standalone and under serve. TestCheckCoversEveryOption
// makes sure no option is missing; the cache's tests and
// cmd/substrate's TestCacheOptionsHonoured check the honoured ones' effect.
var supportCases = []struct {
	args       []string
	refused    string // standalone
	serve      string // under serve; "=" means the same as standalone
	notApplied int    // lines under serve
}{
	{args: []string{"-p", "11311"}, serve: "="},
	{args: []string{"-U", "11311"}, serve: "="},
	{args: []string{"-l", "127.0.0.1"}, serve: "="},
	{args: []string{"-s", "/tmp/sock"}, serve: "="},
	{args: []string{"-a", "0755"}, serve: "="},
	{args: []string{"-m", "128"}, serve: "="},
	{args: []string{"-M"}, serve: "="},
	{args: []string{"-c", "10"}, serve: "="},
	{args: []string{"-I", "2m"}, serve: "="},
	{args: []string{"-B", "ascii"}, serve: "="},
	{args: []string{"-S"}, serve: "="},
	{args: []string{"-Z"}, serve: "="},
	{args: []string{"-v"}, serve: "="},
	{args: []string{"-C"}, serve: "="},
	{args: []string{"-F"}, serve: "="},
	{args: []string{"-X"}, serve: "="},
	{args: []string{"-W"}, serve: "="},
	{args: []string{"-b", "77"}, serve: "="},
	{args: []string{"-u", "memcached"}, notApplied: 1},
	{args: []string{"-t", "4"}, notApplied: 1},
	{args: []string{"-A"}, serve: "-A (--enable-shutdown) under substrate serve"},
	{args: []string{"-P", "/run/m.pid"}, serve: "-P (--pidfile) under substrate serve"},
	{args: []string{"-k"}, serve: "-k (--lock-memory) under substrate serve"},
	{args: []string{"-r"}, serve: "-r (--enable-coredumps) under substrate serve"},
	{args: []string{"-d"}, refused: "-d (--daemon)", serve: "="},
	{args: []string{"-L"}, refused: "-L (--enable-largepages)", serve: "="},
	{args: []string{"-D", ":"}, refused: "-D", serve: "="},
	{args: []string{"-f", "1.5"}, refused: "-f 1.5", serve: "="},
	{args: []string{"-f", "1.25"}, serve: "="},
	{args: []string{"-n", "64"}, refused: "-n 64", serve: "="},
	{args: []string{"-n", "48"}, serve: "="},
	{args: []string{"-R", "5"}, refused: "-R 5", serve: "="},
	{args: []string{"-R", "20"}, serve: "="},
	{args: []string{"-Y", "/etc/auth"}, refused: "-Y (--auth-file)", serve: "="},
	{args: []string{"-e", "/dev/shm/m"}, refused: "-e (--memory-file)", serve: "="},
	{args: []string{"-N", "1"}, refused: "-N (--napi-ids)", serve: "="},

	// -o suboptions.
	{args: []string{"-o", "maxconns_fast"}, serve: "="},
	{args: []string{"-o", "no_maxconns_fast"}, refused: "-o no_maxconns_fast", serve: "="},
	{args: []string{"-o", "hashpower=20"}, refused: "-o hashpower=20", serve: "="},
	{args: []string{"-o", "no_hashexpand"}, refused: "-o no_hashexpand", serve: "="},
	{args: []string{"-o", "slab_reassign"}, serve: "="},
	{args: []string{"-o", "no_slab_reassign"}, refused: "-o no_slab_reassign", serve: "="},
	{args: []string{"-o", "slab_reassign,slab_automove"}, serve: "="},
	{args: []string{"-o", "slab_automove=1"}, serve: "="},
	{args: []string{"-o", "slab_automove=2"}, refused: "-o slab_automove=2", serve: "="},
	{args: []string{"-o", "no_slab_automove"}, refused: "-o no_slab_automove", serve: "="},
	{args: []string{"-o", "slab_automove_ratio=0.80"}, serve: "="},
	{args: []string{"-o", "slab_automove_ratio=0.5"}, refused: "-o slab_automove_ratio=0.5", serve: "="},
	{args: []string{"-o", "slab_automove_window=30"}, serve: "="},
	{args: []string{"-o", "slab_automove_window=10"}, refused: "-o slab_automove_window=10", serve: "="},
	{args: []string{"-o", "tail_repair_time=60"}, refused: "-o tail_repair_time=60", serve: "="},
	{args: []string{"-o", "hash_algorithm=murmur3"}, serve: "="},
	{args: []string{"-o", "hash_algorithm=jenkins"}, refused: "-o hash_algorithm=jenkins", serve: "="},
	{args: []string{"-o", "lru_crawler"}, serve: "="},
	{args: []string{"-o", "no_lru_crawler"}, refused: "-o no_lru_crawler", serve: "="},
	{args: []string{"-o", "lru_crawler_sleep=100"}, serve: "="},
	{args: []string{"-o", "lru_crawler_sleep=5"}, refused: "-o lru_crawler_sleep=5", serve: "="},
	{args: []string{"-o", "lru_crawler_tocrawl=0"}, serve: "="},
	{args: []string{"-o", "lru_crawler_tocrawl=7"}, refused: "-o lru_crawler_tocrawl=7", serve: "="},
	{args: []string{"-o", "lru_maintainer"}, serve: "="},
	{args: []string{"-o", "no_lru_maintainer"}, refused: "-o no_lru_maintainer", serve: "="},
	{args: []string{"-o", "hot_lru_pct=20,warm_lru_pct=40"}, serve: "="},
	{args: []string{"-o", "hot_lru_pct=30"}, refused: "-o hot_lru_pct=30", serve: "="},
	{args: []string{"-o", "warm_lru_pct=30"}, refused: "-o warm_lru_pct=30", serve: "="},
	{args: []string{"-o", "hot_max_factor=0.2,warm_max_factor=2.0"}, serve: "="},
	{args: []string{"-o", "hot_max_factor=0.5"}, refused: "-o hot_max_factor=0.5", serve: "="},
	{args: []string{"-o", "warm_max_factor=3"}, refused: "-o warm_max_factor=3", serve: "="},
	{args: []string{"-o", "temporary_ttl=30"}, refused: "-o temporary_ttl=30", serve: "="},
	{args: []string{"-o", "idle_timeout=0"}, serve: "="},
	{args: []string{"-o", "idle_timeout=600"}, refused: "-o idle_timeout=600", serve: "="},
	{args: []string{"-o", "watcher_logbuf_size=256"}, serve: "="},
	{args: []string{"-o", "watcher_logbuf_size=8"}, refused: "-o watcher_logbuf_size=8", serve: "="},
	{args: []string{"-o", "worker_logbuf_size=64"}, refused: "-o worker_logbuf_size=64", serve: "="},
	{args: []string{"-o", "slab_sizes=100-200-300"}, refused: "-o slab_sizes=100-200-300", serve: "="},
	{args: []string{"-o", "slab_chunk_max=524288"}, serve: "="},
	{args: []string{"-I", "2k", "-o", "slab_chunk_max=1024"}, refused: "-o slab_chunk_max=1024", serve: "="},
	{args: []string{"-o", "track_sizes"}, refused: "-o track_sizes", serve: "="},
	{args: []string{"-o", "inline_ascii_resp"}, serve: "="},
	{args: []string{"-o", "no_inline_ascii_resp"}, serve: "="},
	{args: []string{"-o", "no_chunked_items"}, refused: "-o no_chunked_items", serve: "="},
	{args: []string{"-o", "modern"}, serve: "="},
	{args: []string{"-o", "no_modern"}, refused: "-o no_modern", serve: "="},
	{args: []string{"-o", "drop_privileges"}, serve: "="},
	{args: []string{"-o", "no_drop_privileges"}, serve: "="},
	{args: []string{"-o", "relaxed_privileges"}, serve: "="},
	{args: []string{"-o", "resp_obj_mem_limit"}, serve: "="},
	{args: []string{"-o", "read_buf_mem_limit=0"}, serve: "="},
	{args: []string{"-o", "read_buf_mem_limit=2"}, refused: "-o read_buf_mem_limit=2", serve: "="},
	{args: []string{"-o", "sock_cookie_id=3"}, refused: "-o sock_cookie_id=3", serve: "="},
	{args: []string{"-o", "ssl_chain_cert=/c.pem,ssl_key=/k.pem,ssl_keyformat=1,ssl_ca_cert=/ca.pem"}, serve: "="},
	{args: []string{"-o", "ssl_verify_mode=2,ssl_min_version=3"}, serve: "="},
	{args: []string{"-o", "ssl_ciphers=HIGH"}, refused: "-o ssl_ciphers=HIGH", serve: "="},
	{args: []string{"-o", "ssl_wbuf_size=16"}, serve: "="},
	{args: []string{"-o", "ssl_wbuf_size=32"}, refused: "-o ssl_wbuf_size=32", serve: "="},
	{args: []string{"-o", "ssl_session_cache"}, refused: "-o ssl_session_cache", serve: "="},
	{args: []string{"-o", "ssl_kernel_tls"}, refused: "-o ssl_kernel_tls", serve: "="},
	{args: []string{"-o", "ext_path=/var/cache/m:64m"}, refused: "-o ext_path=/var/cache/m:64m: it has no extstore", serve: "="},
	{args: []string{"-o", "ext_drop_unread"}, refused: "-o ext_drop_unread: it has no extstore", serve: "="},
	{args: []string{"-o", "ext_page_size=8"}, refused: "-o ext_page_size=8", serve: "="},
	{args: []string{"-o", "ext_wbuf_size=8"}, refused: "-o ext_wbuf_size=8", serve: "="},
	{args: []string{"-o", "ext_threads=2"}, refused: "-o ext_threads=2", serve: "="},
	{args: []string{"-o", "ext_io_depth=2"}, refused: "-o ext_io_depth=2", serve: "="},
	{args: []string{"-o", "ext_item_size=512"}, refused: "-o ext_item_size=512", serve: "="},
	{args: []string{"-o", "ext_item_age=10"}, refused: "-o ext_item_age=10", serve: "="},
	{args: []string{"-o", "ext_low_ttl=10"}, refused: "-o ext_low_ttl=10", serve: "="},
	{args: []string{"-o", "ext_recache_rate=10"}, refused: "-o ext_recache_rate=10", serve: "="},
	{args: []string{"-o", "ext_compact_under=10"}, refused: "-o ext_compact_under=10", serve: "="},
	{args: []string{"-o", "ext_drop_under=10"}, refused: "-o ext_drop_under=10", serve: "="},
	{args: []string{"-o", "ext_max_sleep=10"}, refused: "-o ext_max_sleep=10", serve: "="},
	{args: []string{"-o", "ext_max_frag=0.5"}, refused: "-o ext_max_frag=0.5", serve: "="},
	{args: []string{"-o", "slab_automove_freeratio=0.1"}, refused: "-o slab_automove_freeratio=0.1", serve: "="},
	// A refused suboption is found after accepted ones.
	{args: []string{"-o", "modern,slab_reassign", "-o", "lru_crawler,ext_path=/x:1g"}, refused: "-o ext_path=/x:1g", serve: "="},
	// Debian's /etc/memcached.conf as its wrapper passes it, and RDO's unit.
	{args: []string{"-m", "64", "-p", "11211", "-u", "memcache", "-l", "127.0.0.1", "-P", "/var/run/memcached/memcached.pid"},
		serve: "-P (--pidfile) under substrate serve"},
	{args: []string{"-p", "11211", "-u", "memcached", "-m", "64", "-c", "1024", "-l", "127.0.0.1,::1,controller"}, notApplied: 1},
}

func TestCheck(t *testing.T) {
	for _, tc := range supportCases {
		o, err := Parse(tc.args)
		if err != nil {
			t.Fatalf("Parse(%q): %v", tc.args, err)
		}
		check := func(m Mode, want string, wantLines int) {
			t.Helper()
			lines, err := o.Check(m)
			var ue *UnsupportedError
			switch {
			case want == "" && err != nil:
				t.Errorf("%q (mode %d): refused: %v", tc.args, m, err)
			case want != "" && !errors.As(err, &ue):
				t.Errorf("%q (mode %d): %v, want a refusal naming %q", tc.args, m, err, want)
			case want != "" && (!strings.Contains(err.Error(), want) || !strings.HasPrefix(err.Error(), "substrate does not support memcached's ") || strings.Contains(err.Error(), "\n")):
				t.Errorf("%q (mode %d): %q, want one line naming %q", tc.args, m, err, want)
			case err == nil && len(lines) != wantLines:
				t.Errorf("%q (mode %d): not-applied lines %q, want %d", tc.args, m, lines, wantLines)
			}
		}
		check(Standalone, tc.refused, 0)
		serve := tc.serve
		if serve == "=" {
			serve = tc.refused
		}
		check(Serve, serve, tc.notApplied)
	}
}

// TestCheckCoversEveryOption fails when an option memcached 1.6.18
// accepts has no case in supportCases.
func TestCheckCoversEveryOption(t *testing.T) {
	given := map[string]bool{}
	for _, tc := range supportCases {
		for i, a := range tc.args {
			if strings.HasPrefix(a, "-") {
				given[a] = true
			}
			if a == "-o" {
				for item := range strings.SplitSeq(tc.args[i+1], ",") {
					name, _, _ := strings.Cut(item, "=")
					given["-o "+name] = true
				}
			}
		}
	}
	for _, lo := range longOpts {
		switch lo.short {
		case 'h', 'i', 'V', 'o': // -h, -i, -V print and exit; -o is below
			continue
		}
		if !given["-"+string(lo.short)] {
			t.Errorf("no supportCases entry for -%c (--%s)", lo.short, lo.name)
		}
	}
	subopts := []string{"maxconns_fast", "no_maxconns_fast", "hashpower", "no_hashexpand", "slab_reassign",
		"no_slab_reassign", "slab_automove", "no_slab_automove", "slab_automove_ratio", "slab_automove_window",
		"tail_repair_time", "hash_algorithm", "lru_crawler", "no_lru_crawler", "lru_crawler_sleep",
		"lru_crawler_tocrawl", "lru_maintainer", "no_lru_maintainer", "hot_lru_pct", "warm_lru_pct",
		"hot_max_factor", "warm_max_factor", "temporary_ttl", "idle_timeout", "watcher_logbuf_size",
		"worker_logbuf_size", "slab_sizes", "slab_chunk_max", "track_sizes", "no_inline_ascii_resp",
		"inline_ascii_resp", "no_chunked_items", "modern", "no_modern", "no_drop_privileges", "drop_privileges",
		"relaxed_privileges", "resp_obj_mem_limit", "read_buf_mem_limit", "sock_cookie_id", "ssl_chain_cert",
		"ssl_key", "ssl_ciphers", "ssl_ca_cert", "ssl_keyformat", "ssl_verify_mode", "ssl_min_version",
		"ssl_wbuf_size", "ssl_session_cache", "ssl_kernel_tls", "ext_path", "ext_drop_unread"}
	for name := range extstoreUint {
		subopts = append(subopts, name)
	}
	for name := range extstoreFloat {
		subopts = append(subopts, name)
	}
	for _, name := range subopts {
		if _, err := Parse([]string{"-o", name + "=1"}); err != nil && strings.Contains(err.Error(), "Illegal suboption") {
			t.Errorf("-o %s: not a suboption Parse knows: %v", name, err)
		}
		if !given["-o "+name] {
			t.Errorf("no supportCases entry for -o %s", name)
		}
	}
}
