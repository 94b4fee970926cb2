package memcachedcli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"substrate/internal/testkit"
)

// These tests run Debian's memcached 1.6.18 itself, when installed, and
// check that it agrees with this package. memcached exits immediately on
// every refused command line, so they are cheap; each run is bounded by a
// timeout and killed by PID (exec.CommandContext) if it ever starts.

// realMemcached returns the path of Debian's memcached 1.6.18. Without
// it, or with another version, the test is skipped, or fails under
// SUBSTRATE_REQUIRE_CLIENTS=1 (CI), so the comparison never disappears
// silently there.
func realMemcached(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("memcached")
	if err != nil {
		unavailable(t, "memcached is not installed")
	}
	out, err := exec.Command(path, "-V").Output()
	if err != nil || strings.TrimSpace(string(out)) != Version {
		unavailable(t, fmt.Sprintf("%s -V = %q, %v; want %s", path, out, err, Version))
	}
	return path
}

func unavailable(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("SUBSTRATE_REQUIRE_CLIENTS") == "1" {
		t.Fatalf("%s (SUBSTRATE_REQUIRE_CLIENTS=1)", why)
	}
	t.Skip(why)
}

// runReal runs memcached with args (argv[0] "memcached", as getopt's
// messages need) and returns its output and exit status. started reports
// that it was still running at the deadline (it was then killed).
func runReal(t *testing.T, path string, args []string, timeout time.Duration) (stdout, stderr string, code int, started bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Args[0] = "memcached"
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		return out.String(), errb.String(), -1, true
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("running memcached: %v", err)
	}
	return out.String(), errb.String(), code, false
}

// safetyArgs go first on every real run: as root memcached refuses to
// start without -u (after all the checks under test), and should a case
// unexpectedly be accepted it listens on loopback only.
var safetyArgs = []string{"-u", "nobody", "-l", "127.0.0.1"}

func TestMustFailMatchesMemcached(t *testing.T) {
	path := realMemcached(t)
	for _, tc := range mustFail {
		if tc.noReal != "" {
			continue
		}
		args := append(append([]string{}, safetyArgs...), tc.args...)
		_, stderr, code, started := runReal(t, path, args, 3*time.Second)
		if started {
			t.Errorf("memcached %q started; it should have refused", args)
			continue
		}
		wantStderr := tc.msg + "\n"
		if tc.msg == "" {
			wantStderr = ""
		}
		if len(tc.warn) > 0 {
			wantStderr = strings.Join(tc.warn, "\n") + "\n" + wantStderr
		}
		if stderr != wantStderr || code != tc.code {
			t.Errorf("memcached %q: stderr %q exit %d; corpus says %q exit %d", tc.args, stderr, code, wantStderr, tc.code)
		}
		ours, ourCode := ourStderr(args)
		if ours != stderr || ourCode != code {
			t.Errorf("Parse(%q): stderr %q exit %d; memcached %q exit %d", args, ours, ourCode, stderr, code)
		}
	}
}

func TestSpecialMatchesMemcached(t *testing.T) {
	path := realMemcached(t)
	texts := map[error]string{ErrHelp: Usage(), ErrVersion: Version + "\n", ErrLicense: License()}
	for _, tc := range specialCases {
		stdout, stderr, code, started := runReal(t, path, tc.args, 3*time.Second)
		if started {
			t.Fatalf("memcached %q started", tc.args)
		}
		if tc.want == nil {
			ours, ourCode := ourStderr(tc.args)
			if ours != stderr || ourCode != code {
				t.Errorf("%q: ours %q exit %d; memcached %q exit %d", tc.args, ours, ourCode, stderr, code)
			}
			continue
		}
		want := texts[tc.want]
		if tc.want == ErrHelp && len(tc.args) > 1 {
			// memcached's -h shows settings given before it ("-I 1 -h"
			// prints "default: 0m"); Usage shows the defaults.
			want = Version + "\n"
			stdout = stdout[:min(len(stdout), len(want))]
		}
		if code != 0 || stderr != "" || stdout != want {
			t.Errorf("memcached %q: exit %d stderr %q stdout %.60q; want exit 0 and %.60q", tc.args, code, stderr, stdout, want)
		}
	}
}

// TestListenErrorsMatchMemcached checks ListenAddrs' errors against
// memcached's own bind-time refusals of malformed -l items (on loopback,
// on a free port; memcached fails before binding anything).
func TestListenErrorsMatchMemcached(t *testing.T) {
	path := realMemcached(t)
	port := freePort(t)
	for _, tc := range listenErrors {
		args := []string{"-u", "nobody", "-U", "0", "-p", fmt.Sprint(port), "-l", tc.item}
		o, err := Parse(args)
		if err != nil {
			t.Fatalf("Parse(%q): %v", args, err)
		}
		_, lerr := o.ListenAddrs()
		var e *Error
		if !errors.As(lerr, &e) {
			t.Errorf("ListenAddrs(%q) = %v, want *Error", tc.item, lerr)
			continue
		}
		_, stderr, code, started := runReal(t, path, args, 3*time.Second)
		if started {
			t.Errorf("memcached %q started", args)
			continue
		}
		if e.Msg+"\n" != stderr || e.Code != code {
			t.Errorf("-l %q: ours %q exit %d; memcached %q exit %d", tc.item, e.Msg+"\n", e.Code, stderr, code)
		}
	}
}

func freePort(t *testing.T) int {
	return testkit.FreePort(t)
}

// statsCases are accepted command lines whose effect TestStatsSettingsMatchMemcached
// checks in the real memcached's `stats settings`.
var statsCases = [][]string{
	nil,
	// The options substrate honours (cmd/substrate's TestCacheOptionsHonoured
	// runs the same lines against the cache).
	{"-C", "-F", "-X", "-W", "-A", "-b", "77", "-vv", "-t", "2", "-M", "-m", "32", "-c", "99", "-I", "2m",
		"-o", "modern,slab_reassign,slab_automove,lru_crawler,lru_maintainer,maxconns_fast,inline_ascii_resp,hash_algorithm=murmur3,idle_timeout=0,slab_chunk_max=524288"},
	{"-b", "-1", "-f", "1.25", "-n", "48", "-R", "20", "-o", "drop_privileges,no_inline_ascii_resp,hot_lru_pct=20,warm_lru_pct=40,lru_crawler_sleep=100,read_buf_mem_limit=0,ssl_wbuf_size=16"},
	{"-o", "ssl_chain_cert=/x.pem,ssl_key=/k.pem,ssl_ca_cert=/ca.pem,ssl_verify_mode=2,ssl_min_version=3,ssl_keyformat=2"},
	{"-m", "128", "-c", "500", "-t", "2", "-R", "5", "-b", "50", "-f", "1.5", "-n", "64", "-a", "0755", "-D", "/x", "-B", "ascii", "-C", "-M", "-I", "2m", "-v", "-F", "-X", "-A"},
	{"-c", "500x", "-t", "3x", "-n", "-1", "-b", "-1", "-f", "1.5x", "-I", "1.5m", "-m", "-5", "-vv", "-a", "999"},
	{"-o", "no_modern"},
	{"-o", "no_modern,slab_chunk_max=1024", "-I", "2m"},
	{"-o", "no_chunked_items"},
	{"-o", "slab_sizes=100-200-300,ssl_verify_mode=3,ssl_min_version=0"},
	{"-o", "ssl_verify_mode=1"},
	{"-I", "2k", "-o", "slab_chunk_max=1024,hashpower=16,temporary_ttl=30"},
	{"--extended=idle_timeout=600,hashpower=16,no_lru_crawler,slab_automove=2,hash_algorithm=xxh3,track_sizes,hot_lru_pct=30,warm_lru_pct=50",
		"-o", "lru_crawler_sleep=5,lru_crawler_tocrawl=7,watcher_logbuf_size=8,worker_logbuf_size=64,read_buf_mem_limit=2,tail_repair_time=10",
		"-o", "slab_automove_ratio=0.5,slab_automove_window=3,no_maxconns_fast,no_slab_reassign,inline_ascii_resp,ssl_verify_mode=2,ssl_keyformat=7,ssl_wbuf_size=32"},
}

// TestStatsSettingsMatchMemcached starts the real memcached on a free
// loopback port with each accepted command line and compares its
// `stats settings` with what Parse made of the same arguments.
func TestStatsSettingsMatchMemcached(t *testing.T) {
	path := realMemcached(t)
	for _, extra := range statsCases {
		port := freePort(t)
		args := append([]string{"-u", "nobody", "-U", "0", "-l", fmt.Sprintf("127.0.0.1:%d", port)}, extra...)
		o, err := Parse(args)
		if err != nil {
			t.Fatalf("Parse(%q): %v", args, err)
		}
		got := realStatsSettings(t, path, args, port)
		for k, want := range o.StatsSettings() {
			if got[k] != want {
				t.Errorf("%q: stats settings %s: memcached %q, Parse %q", extra, k, got[k], want)
			}
		}
	}
}

// realStatsSettings runs memcached with args until it answers `stats
// settings` on 127.0.0.1:port, then kills it.
func realStatsSettings(t *testing.T, path string, args []string, port int) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Kill() // the memcached we started, by PID
		_ = cmd.Wait()
	}()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	var conn net.Conn
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn = c
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("memcached %q never listened: %v; stderr %q", args, err, errb.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := conn.Write([]byte("stats settings\r\n")); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tmp := make([]byte, 4096)
	for !bytes.HasSuffix(buf.Bytes(), []byte("END\r\n")) {
		n, err := conn.Read(tmp)
		if err != nil {
			t.Fatalf("reading stats: %v (got %q)", err, buf.String())
		}
		buf.Write(tmp[:n])
	}
	m := map[string]string{}
	for _, line := range strings.Split(buf.String(), "\r\n") {
		if f := strings.SplitN(line, " ", 3); len(f) == 3 && f[0] == "STAT" {
			m[f[1]] = f[2]
		}
	}
	return m
}
