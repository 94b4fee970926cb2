package integration

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math"
	"math/big"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
)

// memcachedRoundTrip stores and reads one item over the text protocol.
func memcachedRoundTrip(t *testing.T, addr string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "set k 7 0 2\r\nhi\r\nget k\r\nversion\r\n")
	r := bufio.NewReader(c)
	var got []string
	for len(got) < 5 {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("%s: %v after %q", addr, err, got)
		}
		got = append(got, line)
	}
	if want := "STORED\r\nVALUE k 7 2\r\nhi\r\nEND\r\nVERSION 1.6.18\r\n"; strings.Join(got, "") != want {
		t.Fatalf("%s: got %q", addr, strings.Join(got, ""))
	}
}

func TestMemcachedClients(t *testing.T) {
	needPython(t, "pymemcache", "memcache", "oslo_cache")
	s := serve(t)
	out := run(t, 60*time.Second, nil, python, "py/memcached_clients.py", itoa(s.memcachedPort))
	if !strings.Contains(out, "memcached clients ok") {
		t.Fatalf("output: %s", out)
	}
}

// TestServeMemcachedSysconfig: the manual install's /etc/sysconfig/memcached,
// with `controller` pointed at loopback, configures the cache under serve.
func TestServeMemcachedSysconfig(t *testing.T) {
	seed, err := os.ReadFile("../internal/memcachedcli/testdata/memcached.sysconfig")
	if err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	conf := strings.ReplaceAll(string(seed), ",controller", ",localhost")
	conf = strings.ReplaceAll(conf, `PORT="11211"`, fmt.Sprintf("PORT=%q", itoa(port)))
	if conf == string(seed) {
		t.Fatal("seed file changed shape; update the test")
	}
	path := filepath.Join(t.TempDir(), "memcached")
	os.WriteFile(path, []byte(conf), 0o600)
	s := serve(t, "--memcached-config", path)
	if !strings.Contains(s.output(), "127.0.0.1:"+itoa(port)) || !strings.Contains(s.output(), "[::1]:"+itoa(port)) {
		t.Fatalf("not listening where the file says:\n%s", s.output())
	}
	memcachedRoundTrip(t, "127.0.0.1:"+itoa(port))
	memcachedRoundTrip(t, "[::1]:"+itoa(port))
	// USER="memcached" is not applied under serve, and says so once.
	if n := strings.Count(s.output(), "memcached's -u memcached is not applied under substrate serve"); n != 1 {
		t.Errorf("%d warnings about USER, want 1:\n%s", n, s.output())
	}
}

// TestMemcachedSubcommand: `substrate memcached` takes memcached's flags,
// writes and removes its pid file, and stops on SIGTERM.
func TestMemcachedSubcommand(t *testing.T) {
	port := freePort(t)
	pidfile := filepath.Join(t.TempDir(), "memcached.pid")
	p := start(t, nil, "memcached", "-p", itoa(port), "-l", "127.0.0.1", "-u", "root", "-m", "8", "-c", "16", "-P", pidfile, "-U", "0")
	p.waitReady(30 * time.Second)
	pid, _ := os.ReadFile(pidfile)
	if strings.TrimSpace(string(pid)) != strconv.Itoa(p.cmd.Process.Pid) {
		t.Fatalf("pid file %q, process %d", pid, p.cmd.Process.Pid)
	}
	memcachedRoundTrip(t, "127.0.0.1:"+itoa(port))
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(10 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if _, err := os.Stat(pidfile); !os.IsNotExist(err) {
		t.Fatal("pid file left behind")
	}
}

// TestMemcachedSubcommandRefusesLikeMemcached: bad flags produce memcached's
// own message and exit status (checked against the real binary when it is
// installed).
func TestMemcachedSubcommandRefusesLikeMemcached(t *testing.T) {
	cases := [][]string{{"-c", "0"}, {"-I", "2k", "-m", "1"}, {"-B", "bogus"}, {"-o", "no_such_option"}, {"--no-such-flag"}}
	if os.Geteuid() == 0 {
		cases = append(cases, []string{"-p", "0"}) // root without -u
	}
	_, err := os.Stat("/usr/bin/memcached")
	haveReal := err == nil
	if !haveReal && os.Getenv("SUBSTRATE_REQUIRE_CLIENTS") == "1" {
		t.Errorf("/usr/bin/memcached is not installed: cannot compare (SUBSTRATE_REQUIRE_CLIENTS=1)")
	}
	for _, args := range cases {
		p := start(t, nil, append([]string{"memcached"}, args...)...)
		code := p.wait(10 * time.Second)
		out := p.output()
		if code == 0 || out == "" {
			t.Errorf("%v: status %d, output %q", args, code, out)
			continue
		}
		if !haveReal {
			continue // only ours checked: skipped comparison (failed above under REQUIRE_CLIENTS)
		}
		real := exec.Command("memcached", args...) // argv[0] "memcached", as a unit file runs it
		real.Path = "/usr/bin/memcached"
		realOut, _ := real.CombinedOutput()
		if real.ProcessState.ExitCode() != code || string(realOut) != out {
			t.Errorf("%v: ours %d %q, memcached %d %q", args, code, out, real.ProcessState.ExitCode(), realOut)
		}
	}
}

// procStatus returns the lines of /proc/PID/status as name -> value.
func procStatus(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			m[k] = strings.Join(strings.Fields(v), " ")
		}
	}
	return m
}

// TestMemcachedDropsPrivileges runs `substrate memcached -u nobody` as
// root, as Debian's unit runs memcached (-u memcache): the process ends
// up with nobody's uid and gid and no supplementary groups, its unix
// socket and pid file belong to nobody (memcached creates them after
// dropping root), it serves, and at SIGTERM it removes both from a
// directory nobody may write, as /run/memcached is memcache's. Needs root
// (a condition of the machine, not a missing client, so it skips even
// under SUBSTRATE_REQUIRE_CLIENTS=1).
func TestMemcachedDropsPrivileges(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to drop privileges")
	}
	u, err := user.Lookup("nobody")
	need(t, "user nobody", err == nil)
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	dir := t.TempDir()
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	// The test's temporary root is 0700: let nobody reach its directory.
	if err := os.Chmod(filepath.Dir(dir), 0o711); err != nil {
		t.Fatal(err)
	}
	sock, pidfile := filepath.Join(dir, "memcached.sock"), filepath.Join(dir, "memcached.pid")
	p := start(t, nil, "memcached", "-u", "nobody", "-s", sock, "-a", "0766", "-P", pidfile, "-m", "8")
	p.waitReady(30 * time.Second)
	pid := p.cmd.Process.Pid
	st := procStatus(t, pid)
	for k, want := range map[string]string{
		"Uid":    strings.Repeat(u.Uid+" ", 3) + u.Uid,
		"Gid":    strings.Repeat(u.Gid+" ", 3) + u.Gid,
		"Groups": "",
	} {
		if st[k] != want {
			t.Errorf("/proc/%d/status %s: %q, want %q", pid, k, st[k], want)
		}
	}
	for _, f := range []string{sock, pidfile} {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if s := fi.Sys().(*syscall.Stat_t); int(s.Uid) != uid || int(s.Gid) != gid {
			t.Errorf("%s owned by %d:%d, want %d:%d", f, s.Uid, s.Gid, uid, gid)
		}
	}
	c, err := net.DialTimeout("unix", sock, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "set k 0 0 2\r\nhi\r\nget k\r\n")
	r := bufio.NewReader(c)
	var got string
	for !strings.HasSuffix(got, "END\r\n") {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("unix socket: %v after %q", err, got)
		}
		got += line
	}
	c.Close()
	if got != "STORED\r\nVALUE k 0 2\r\nhi\r\nEND\r\n" {
		t.Errorf("unix socket: %q", got)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(10 * time.Second); code != 0 {
		t.Fatalf("exit %d:\n%s", code, p.output())
	}
	for _, f := range []string{sock, pidfile} {
		if _, err := os.Stat(f); !os.IsNotExist(err) {
			t.Errorf("%s left behind (%v)", f, err)
		}
	}
}

// TestMemcachedProcessOptions checks the options that act on the process
// `substrate memcached` is: -t (GOMAXPROCS, stats settings num_threads),
// -r (core limit raised), -k (memory locked), -A (shutdown ends the
// process with status 0), and the refusal of -d and extstore in one line.
func TestMemcachedProcessOptions(t *testing.T) {
	// -r must raise a soft core limit of 0: start the child with one.
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_CORE, &old); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_CORE, &syscall.Rlimit{Cur: 0, Max: old.Max}); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	p := start(t, nil, "memcached", "-u", "root", "-l", "127.0.0.1", "-p", itoa(port), "-U", "0", "-m", "8", "-t", "3", "-r", "-k", "-A")
	syscall.Setrlimit(syscall.RLIMIT_CORE, &old)
	p.waitReady(30 * time.Second)
	pid := p.cmd.Process.Pid
	limits, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		t.Fatal(err)
	}
	wantCore := "unlimited"
	if old.Max != math.MaxUint64 { // RLIM_INFINITY
		wantCore = strconv.FormatUint(old.Max, 10)
	}
	for _, line := range strings.Split(string(limits), "\n") {
		if strings.HasPrefix(line, "Max core file size") {
			if f := strings.Fields(line); len(f) < 5 || f[4] != wantCore {
				t.Errorf("-r: %q, want a soft limit of %s", line, wantCore)
			}
		}
	}
	// -k: memory locked, or (without CAP_IPC_LOCK and a large enough
	// RLIMIT_MEMLOCK, as in a default container) memcached's warning.
	lck := procStatus(t, pid)["VmLck"]
	warned := strings.Contains(p.output(), "warning: -k invalid, mlockall() failed: ")
	if (lck == "" || lck == "0 kB") != warned {
		t.Errorf("-k: VmLck %q, warning printed %v; want memory locked or the warning", lck, warned)
	}
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+itoa(port), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "stats settings\r\n")
	r := bufio.NewReader(c)
	settings := map[string]string{}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if line == "END\r\n" {
			break
		}
		if f := strings.Fields(line); len(f) == 3 {
			settings[f[1]] = f[2]
		}
	}
	if settings["num_threads"] != "3" || settings["shutdown_command"] != "yes" {
		t.Errorf("stats settings num_threads %q shutdown_command %q, want 3 and yes", settings["num_threads"], settings["shutdown_command"])
	}
	fmt.Fprintf(c, "shutdown\r\n")
	if b, _ := io.ReadAll(r); len(b) != 0 {
		t.Errorf("shutdown answered %q", b)
	}
	c.Close()
	if code := p.wait(10 * time.Second); code != 0 {
		t.Fatalf("after shutdown: exit %d:\n%s", code, p.output())
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"memcached", "-u", "root", "-d"}, "substrate memcached: substrate does not support memcached's -d (--daemon): "},
		{[]string{"memcached", "-u", "root", "-o", "ext_path=/tmp/x:64m"}, "substrate memcached: substrate does not support memcached's -o ext_path=/tmp/x:64m: it has no extstore"},
		{newServer(t).args("--services", "memcached", "--memcached-options", "-A -m 16"), "substrate does not support memcached's -A (--enable-shutdown) under substrate serve: "},
	} {
		p := start(t, nil, tc.args...)
		code := p.wait(30 * time.Second)
		out := p.output()
		if code != 1 || !strings.Contains(out, tc.want) || strings.Count(strings.TrimSpace(out), "\n") != 0 && !strings.HasPrefix(tc.args[0], "serve") {
			t.Errorf("%q: exit %d, output %q; want exit 1 and one line with %q", tc.args, code, out, tc.want)
		}
	}
}

// TestRedisForLabs: --redis-port serves RESP that tooz's redis:// driver
// and dogpile.cache's redis backend use unchanged.
func TestRedisForLabs(t *testing.T) {
	needPython(t, "tooz", "redis", "dogpile.cache")
	port := freePort(t)
	s := newServer(t)
	s.proc = start(t, nil, s.args("--host", "127.0.0.1", "--redis-port", itoa(port))...)
	s.waitReady(30 * time.Second)
	if !strings.Contains(s.output(), ",redis,") {
		t.Fatalf("redis not started:\n%s", s.output())
	}
	out := run(t, 60*time.Second, nil, python, "py/redis_clients.py", itoa(port))
	if !strings.Contains(out, "redis clients ok") {
		t.Fatalf("output: %s", out)
	}
}

// TestGomemcache: Go's most used memcached client through its real code
// paths, including its cas, touch and multi-get parsing.
func TestGomemcache(t *testing.T) {
	s := serve(t)
	mc := memcache.New("127.0.0.1:" + itoa(s.memcachedPort))
	mc.Timeout = 5 * time.Second
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(mc.Set(&memcache.Item{Key: "a", Value: []byte("1"), Flags: 42}))
	must(mc.Add(&memcache.Item{Key: "b", Value: []byte("2")}))
	if err := mc.Add(&memcache.Item{Key: "a", Value: []byte("x")}); err != memcache.ErrNotStored {
		t.Fatalf("add over existing: %v", err)
	}
	it, err := mc.Get("a")
	if err != nil || string(it.Value) != "1" || it.Flags != 42 {
		t.Fatalf("get: %+v %v", it, err)
	}
	it.Value = []byte("10")
	must(mc.CompareAndSwap(it))
	if err := mc.CompareAndSwap(it); err != memcache.ErrCASConflict {
		t.Fatalf("stale cas: %v", err)
	}
	if n, err := mc.Increment("a", 5); err != nil || n != 15 {
		t.Fatalf("incr: %d %v", n, err)
	}
	must(mc.Touch("b", 100))
	got, err := mc.GetMulti([]string{"a", "b", "missing"})
	if err != nil || len(got) != 2 || string(got["a"].Value) != "15" || string(got["b"].Value) != "2" {
		t.Fatalf("get multi: %v %v", got, err)
	}
	must(mc.Delete("a"))
	if _, err := mc.Get("a"); err != memcache.ErrCacheMiss {
		t.Fatalf("after delete: %v", err)
	}
	if err := mc.Set(&memcache.Item{Key: strings.Repeat("k", 251), Value: []byte("x")}); err != memcache.ErrMalformedKey {
		t.Fatalf("long key: %v", err)
	}
	must(mc.Ping())
}

// TestMemcachedSASLWithBmemcached: keystonemiddleware's SASL path
// (python3-binary-memcached) against `substrate memcached -S`, with
// credentials from a MEMCACHED_SASL_PWDB file; a wrong password is refused.
func TestMemcachedSASLWithBmemcached(t *testing.T) {
	needPython(t, "bmemcached")
	pwdb := filepath.Join(t.TempDir(), "memcached-sasl-pwdb")
	os.WriteFile(pwdb, []byte("keystone:s3cret\n"), 0o600)
	port := freePort(t)
	p := start(t, []string{"MEMCACHED_SASL_PWDB=" + pwdb}, "memcached", "-S", "-p", itoa(port), "-l", "127.0.0.1", "-u", "root", "-U", "0")
	p.waitReady(30 * time.Second)
	script := `
import sys, bmemcached
server = "127.0.0.1:" + sys.argv[1]
c = bmemcached.Client((server,), "keystone", "s3cret")
assert c.set("token", "abc") is True
assert c.get("token") == "abc", c.get("token")
assert c.set_multi({"a": "1", "b": "2"}) == []  # the keys that failed
assert c.get_multi(["a", "b"]) == {"a": "1", "b": "2"}
assert c.delete("token") is True
assert c.get("token") is None
bad = bmemcached.Client((server,), "keystone", "wrong")
try:
    bad.get("a")
except Exception as e:
    print("refused:", type(e).__name__)
else:
    sys.exit("wrong password accepted")
print("bmemcached ok")
`
	out := run(t, 60*time.Second, nil, python, "-c", script, itoa(port))
	if !strings.Contains(out, "bmemcached ok") || !strings.Contains(out, "refused:") {
		t.Fatalf("output: %s", out)
	}
}

// rssKB reads a process's resident set size.
func rssKB(t *testing.T, pid int) int {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// TestMemcachedEvictionBoundsRSS: writing five times -m's worth of data
// evicts the oldest items, keeps the newest, and the process's RSS stays
// bounded by the limit (plus the runtime's headroom), not by what was
// written.
func TestMemcachedEvictionBoundsRSS(t *testing.T) {
	port := freePort(t)
	p := start(t, nil, "memcached", "-m", "16", "-p", itoa(port), "-l", "127.0.0.1", "-u", "root", "-U", "0")
	p.waitReady(30 * time.Second)
	base := rssKB(t, p.cmd.Process.Pid)

	c, err := net.Dial("tcp", "127.0.0.1:"+itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	w := bufio.NewWriterSize(c, 1<<16)
	r := bufio.NewReader(c)
	value := strings.Repeat("v", 4000)
	const n = 20000 // 80 MB of values into a 16 MB cache
	done := make(chan error, 1)
	go func() {
		for i := 0; i < n; i++ {
			line, err := r.ReadString('\n')
			if err != nil {
				done <- err
				return
			}
			if line != "STORED\r\n" {
				done <- fmt.Errorf("set %d: %q", i, line)
				return
			}
		}
		done <- nil
	}()
	for i := 0; i < n; i++ {
		fmt.Fprintf(w, "set key%05d 0 0 %d\r\n%s\r\n", i, len(value), value)
	}
	w.Flush()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	grown := rssKB(t, p.cmd.Process.Pid) - base
	t.Logf("RSS grew by %d KB writing %d MB into -m 16", grown, n*len(value)>>20)
	if grown > 3*16*1024 {
		t.Errorf("RSS grew by %d KB for a 16 MB cache", grown)
	}
	fmt.Fprintf(c, "get key00000\r\nget key%05d\r\nstats\r\n", n-1)
	var lines []string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, line)
		if strings.HasPrefix(line, "END") && len(lines) > 3 && strings.Contains(strings.Join(lines, ""), "STAT ") {
			break
		}
	}
	out := strings.Join(lines, "")
	if strings.Contains(out, "VALUE key00000 ") {
		t.Error("the oldest key survived writing five times the memory limit")
	}
	if !strings.Contains(out, fmt.Sprintf("VALUE key%05d ", n-1)) {
		t.Error("the newest key was evicted")
	}
	if !strings.Contains(out, "STAT evictions ") || strings.Contains(out, "STAT evictions 0\r\n") {
		t.Errorf("no evictions counted:\n%s", out)
	}
}

// writeTestPKI writes a throwaway CA and a server certificate for
// 127.0.0.1 signed by it, as PEM files in dir.
func writeTestPKI(t *testing.T, dir string) (caFile, certFile, keyFile string) {
	t.Helper()
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	caFile, certFile, keyFile = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for path, b := range map[string]*pem.Block{
		caFile:   {Type: "CERTIFICATE", Bytes: caDER},
		certFile: {Type: "CERTIFICATE", Bytes: der},
		keyFile:  {Type: "PRIVATE KEY", Bytes: kder},
	} {
		if err := os.WriteFile(path, pem.EncodeToMemory(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return caFile, certFile, keyFile
}

// TestMemcachedTLSClients: `substrate memcached -Z` serves pymemcache
// (text protocol, tls_context) and python3-binary-memcached (binary
// protocol, keystonemiddleware's memcache_tls_enabled path) over TLS, and
// plain text on a notls listener; a missing certificate stops start-up
// with memcached's last stderr line and exit status 64.
func TestMemcachedTLSClients(t *testing.T) {
	needPython(t, "pymemcache", "bmemcached")
	caFile, certFile, keyFile := writeTestPKI(t, t.TempDir())
	port, plain := freePort(t), freePort(t)
	p := start(t, nil, "memcached", "-u", "root", "-U", "0", "-l", "127.0.0.1:"+itoa(port), "-l", "notls:127.0.0.1:"+itoa(plain),
		"-Z", "-o", "ssl_chain_cert="+certFile+",ssl_key="+keyFile)
	p.waitReady(30 * time.Second)
	script := `
import ssl, sys
from pymemcache.client.base import Client
import bmemcached
ctx = ssl.create_default_context(cafile=sys.argv[2])
c = Client(("127.0.0.1", int(sys.argv[1])), tls_context=ctx, default_noreply=False)
assert c.set("k", b"v1") is True
assert c.get("k") == b"v1"
assert c.get_many(["k", "nope"]) == {"k": b"v1"}
assert c.delete("k") is True
assert c.get("k") is None
b = bmemcached.Client(("127.0.0.1:" + sys.argv[1],), tls_context=ctx)
assert b.set("token", "abc") is True
assert b.get("token") == "abc"
assert b.get_multi(["token", "nope"]) == {"token": "abc"}
plain = Client(("127.0.0.1", int(sys.argv[3])), default_noreply=False)
assert plain.get("token") == b"abc", plain.get("token")
print("tls clients ok")
`
	out := run(t, 60*time.Second, nil, python, "-c", script, itoa(port), caFile, itoa(plain))
	if !strings.Contains(out, "tls clients ok") {
		t.Fatalf("output: %s", out)
	}

	missing := filepath.Join(t.TempDir(), "missing.pem")
	bad := start(t, nil, "memcached", "-u", "root", "-U", "0", "-l", "127.0.0.1", "-p", itoa(freePort(t)),
		"-Z", "-o", "ssl_chain_cert="+missing+",ssl_key="+keyFile)
	// memcached ends the line with "\r\n"; the harness reads lines with a
	// bufio.Scanner, which drops the "\r".
	want := "Error loading the certificate chain: " + missing + " : error:80000002:system library::No such file or directory\n"
	if code := bad.wait(10 * time.Second); code != 64 || bad.output() != want {
		t.Errorf("missing certificate: exit %d, output %q; want 64, %q", code, bad.output(), want)
	}
}
