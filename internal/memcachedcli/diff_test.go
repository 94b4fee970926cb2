package memcachedcli

import (
	"fmt"
	"math/rand"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestRandomDiffMemcached compares Parse with the real memcached on random
// command lines. It is slow and so runs only when MEMCACHEDCLI_DIFF is set
// to a number of iterations:
//
//	MEMCACHEDCLI_DIFF=500 go test -run RandomDiff ./internal/memcachedcli/
//
// The token pool leaves out options with side effects outside the process
// (-d, -P, -e, -k, -L, -r), options needing runtime setup memcached would
// fail on (-S, -Z, -Y), and listening options (a safe -l/-p comes first).
func TestRandomDiffMemcached(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("MEMCACHEDCLI_DIFF"))
	if n <= 0 {
		t.Skip("set MEMCACHEDCLI_DIFF=<iterations> to run")
	}
	path := realMemcached(t)
	pool := []string{
		"-c", "-c", "0", "1", "x", "-1", "10x", "500", "-t", "65", "2", "-R", "-f", "1.5", "1.0", "-n", "-I", "1k", "2m", "1g",
		"512k", "3k", "1000k", "-m", "-m", "1", "4096", "-o", "-o", "hashpower=11", "hashpower=20", "slab_chunk_max=3", "slab_chunk_max=1024",
		"worker_logbuf_size=64", "hot_lru_pct=50,warm_lru_pct=40", "temporary_ttl=5", "no_lru_maintainer", "no_modern",
		"slab_sizes=100-200", "slab_sizes=", "bogus", "idle_timeout", "ext_path=x", "ssl_verify_mode=4",
		"-B", "ascii", "binary", "auto", "-N", "-v", "-vv", "-C", "-M", "--bogus", "--p", "-Q", "-D", "", "-V",
		"--conn-limit", "--threads=3", "--max-item-size", "-b", "--extended", "-a", "--", "word", "-F", "-X", "-W", "-A", "-U",
	}
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	for i := 0; i < n; i++ {
		var extra []string
		for k := rng.Intn(6) + 1; k > 0; k-- {
			extra = append(extra, pool[rng.Intn(len(pool))])
		}
		args := append([]string{"-u", "nobody", "-l", fmt.Sprintf("127.0.0.1:%d", freePort(t))}, extra...)
		ours, ourCode := ourStderr(args)
		stdout, stderr, code, started := runReal(t, path, args, 400*time.Millisecond)
		_, perr := Parse(args)
		switch {
		case started:
			if perr != nil {
				t.Errorf("%q: memcached started, Parse: %v", extra, perr)
			}
		case code == 0 && stdout != "":
			if perr == nil || ours != "" {
				t.Errorf("%q: memcached printed help/version, Parse: %v", extra, perr)
			}
		case ours != stderr || ourCode != code:
			if strings.Contains(stderr, "Too many open files") || strings.Contains(stderr, "failed to set rlimit") ||
				strings.Contains(stderr, "can't find the user") {
				continue // tiny -c: a runtime limit, not a parse result
			}
			t.Errorf("%q:\n ours     %q exit %d\n memcached %q exit %d", extra, ours, ourCode, stderr, code)
		}
	}
}
