// Package amqpit drives AMQP 0-9-1 brokers with the real OpenStack clients
// (oslo.messaging 14.0.3 over kombu 5.2.4 and py-amqp 5.1.1, plus pika 1.2)
// from Debian's packages, through the Python scripts in py/.
//
// Every test runs the same body against each target (STYLE.md §5):
//
//   - rabbitmq: Debian's rabbitmq-server 3.10.8, started once per `go test`
//     run on free loopback ports in a temporary directory. It proves the
//     tests themselves.
//   - substrate: `substrate serve --services amqp,etcd`. A binary that logs
//     that its amqp service is not available fails the target.
//
// A target that is not installed is skipped, unless
// SUBSTRATE_REQUIRE_CLIENTS=1, which turns the skip into a failure so that
// CI cannot pass by skipping. SUBSTRATE_BIN selects a prebuilt binary
// (absolute, or relative to the repository root); otherwise ../../cmd/substrate
// is built into a temporary directory.
//
// Run: go test -count=1 ./integration/amqp/ (about 40-60 s on 2 cores, as
// root or as the rabbitmq user, which rabbitmq-server needs).
//
// What the substrate target expects of the binary:
//
//	substrate serve --services amqp,etcd --host 127.0.0.1 --data-dir DIR \
//	    --amqp-port P --etcd-client-port C --etcd-peer-port Q --http-port H
//
// logs (stdout or stderr) a line containing msg="substrate ready" once AMQP
// accepts on 127.0.0.1:P, and stops on SIGTERM. Then, with SUBSTRATE_HOST, SUBSTRATE_DATA_DIR,
// SUBSTRATE_AMQP_PORT, SUBSTRATE_ETCD_CLIENT_PORT and SUBSTRATE_HTTP_PORT in
// the environment (the serve flags' names, DESIGN.md) and the working
// directory the parent of DIR, these must exit 0:
//
//	substrate ctl add_user openstack PASSWORD
//	substrate ctl set_permissions openstack .* .* .*     (vhost /)
//	substrate ctl close_all_connections test
//
// The last must close every client connection with connection.close 320
// "CONNECTION_FORCED - test" and print rabbitmqctl's
// "Closed N connections" line.
package amqpit

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// python is Debian's interpreter, which has the python3-* client packages.
const python = "/usr/bin/python3"

// The user every target gets, with configure/write/read ".*" on vhost "/".
const amqpUser = "openstack"

// target is one broker under test.
type target struct {
	name     string
	host     string
	port     int
	user     string
	password string

	// skip, when set, skips every test on this target; fail fails them.
	skip string
	fail string

	// forceClose makes the broker close every client connection with
	// connection.close 320 CONNECTION_FORCED. It returns the tool's output.
	forceClose func(ctx context.Context) (string, error)
	// logs returns the broker's recent log output for failure messages.
	logs func() string
	// stop shuts the target down and removes its files.
	stop func()

	// mu is held shared by tests and exclusively by forEachTargetAlone.
	mu sync.RWMutex
}

// url is the oslo.messaging transport URL; the py/ scripts take it and
// derive kombu and pika parameters from it.
func (tg *target) url() string {
	return fmt.Sprintf("rabbit://%s:%s@%s/", tg.user, tg.password, tg.addr())
}

func (tg *target) addr() string { return net.JoinHostPort(tg.host, strconv.Itoa(tg.port)) }

var targets []*target

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	var wg sync.WaitGroup
	var rmq, sub *target
	wg.Add(2)
	go func() { defer wg.Done(); rmq = setupRabbitMQ() }()
	go func() { defer wg.Done(); sub = setupSubstrate() }()
	wg.Wait()
	targets = []*target{rmq, sub}
	defer func() {
		for _, tg := range targets {
			if tg.stop != nil {
				tg.stop()
			}
		}
	}()
	for _, tg := range targets {
		switch {
		case tg.fail != "":
			fmt.Fprintf(os.Stderr, "amqpit: target %s: setup failed: %s\n", tg.name, tg.fail)
		case tg.skip != "":
			fmt.Fprintf(os.Stderr, "amqpit: target %s: skipped: %s\n", tg.name, tg.skip)
		}
	}
	return m.Run()
}

// forEachTarget runs body as a subtest per target; it skips or fails the
// subtest when the target is unavailable. Bodies of different tests share
// a target concurrently.
func forEachTarget(t *testing.T, body func(t *testing.T, tg *target)) {
	t.Helper()
	eachTarget(t, false, body)
}

// forEachTargetAlone is forEachTarget for bodies that disturb every client
// of the broker (force-closing all connections): each runs while no other
// test uses that target.
func forEachTargetAlone(t *testing.T, body func(t *testing.T, tg *target)) {
	t.Helper()
	eachTarget(t, true, body)
}

func eachTarget(t *testing.T, alone bool, body func(t *testing.T, tg *target)) {
	t.Helper()
	for _, tg := range targets {
		t.Run(tg.name, func(t *testing.T) {
			if tg.fail != "" {
				t.Fatalf("target %s: %s", tg.name, tg.fail)
			}
			if tg.skip != "" {
				t.Skip(tg.skip)
			}
			if alone {
				tg.mu.Lock()
				defer tg.mu.Unlock()
			} else {
				tg.mu.RLock()
				defer tg.mu.RUnlock()
			}
			body(t, tg)
			if t.Failed() && tg.logs != nil {
				t.Logf("%s log tail:\n%s", tg.name, tg.logs())
			}
		})
	}
}

// requireClients reports whether missing clients or daemons must fail.
func requireClients() bool { return os.Getenv("SUBSTRATE_REQUIRE_CLIENTS") == "1" }

// unavailable marks tg skipped, or failed under SUBSTRATE_REQUIRE_CLIENTS=1.
func (tg *target) unavailable(why string) *target {
	if requireClients() {
		tg.fail = why + " (SUBSTRATE_REQUIRE_CLIENTS=1)"
	} else {
		tg.skip = why
	}
	return tg
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func freePorts(n int) ([]int, error) {
	// Hold all listeners until every port is picked so they differ.
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// waitAMQP waits until addr answers the AMQP 0-9-1 protocol header with a
// frame of type 1 (method: connection.start), or until ctx ends or exited
// is closed.
func waitAMQP(ctx context.Context, addr string, exited <-chan struct{}) error {
	var last error
	for {
		if last = probeAMQP(addr); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s does not speak AMQP: %v", addr, last)
		case <-exited:
			return fmt.Errorf("broker exited before it accepted AMQP on %s", addr)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func waitTCP(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func probeAMQP(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write([]byte("AMQP\x00\x00\x09\x01")); err != nil {
		return err
	}
	var hdr [7]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return err
	}
	if hdr[0] != 1 || hdr[1] != 0 || hdr[2] != 0 {
		return fmt.Errorf("first frame type %d channel %d, want connection.start on channel 0", hdr[0], int(hdr[1])<<8|int(hdr[2]))
	}
	return nil
}

// tail is a bounded, concurrency-safe buffer for a child's output.
type tail struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *tail) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	if b.buf.Len() > 1<<20 {
		keep := b.buf.Bytes()[b.buf.Len()-1<<19:]
		b.buf = *bytes.NewBuffer(append([]byte(nil), keep...))
	}
	return len(p), nil
}

func (b *tail) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// ---------------------------------------------------------------------------
// rabbitmq: Debian's rabbitmq-server

const (
	rabbitServerScript = "/usr/lib/rabbitmq/bin/rabbitmq-server"
	rabbitCtlScript    = "/usr/lib/rabbitmq/bin/rabbitmqctl"
	epmdBinary         = "/usr/bin/epmd"
)

type rabbit struct {
	dir      string
	node     string
	env      []string
	cred     *syscall.Credential
	cmd      *exec.Cmd
	out      tail
	exited   chan struct{}
	epmdPort int
	epmd     *exec.Cmd  // our own epmd, so that it goes when we do
	ctlMu    sync.Mutex // one rabbitmqctl at a time: they share one dist port
}

// setupRabbitMQ starts rabbitmq-server as the rabbitmq user (Debian's
// /usr/sbin wrapper would `su` to it; switching here instead keeps the
// server a direct child whose PID we hold) with its node name, ports, epmd
// and data private to this run, so that it can run next to a system
// RabbitMQ or another test run:
//
//   - AMQP, Erlang distribution, epmd and rabbitmqctl's distribution ports
//     are all free loopback ports picked now; everything listens on
//     127.0.0.1 only.
//   - No plugins (so no management listener on 15672).
//   - HOME is the temp dir, so the Erlang cookie is private too.
func setupRabbitMQ() *target {
	tg := &target{name: "rabbitmq", host: "127.0.0.1", user: amqpUser, password: "pw" + randomHex(8)}
	for _, f := range []string{"/usr/sbin/rabbitmq-server", rabbitServerScript, rabbitCtlScript, epmdBinary} {
		if _, err := os.Stat(f); err != nil {
			return tg.unavailable("rabbitmq-server is not installed (" + f + ")")
		}
	}
	u, err := user.Lookup("rabbitmq")
	if err != nil {
		return tg.unavailable("no rabbitmq user: " + err.Error())
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	r := &rabbit{exited: make(chan struct{})}
	if os.Getuid() == 0 {
		r.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	} else if os.Getuid() != uid {
		return tg.unavailable("rabbitmq-server must be started as root or as the rabbitmq user")
	}
	if err := r.start(tg); err != nil {
		tg.fail = err.Error()
		if r.dir != "" {
			tg.fail += "\nrabbitmq output:\n" + lastLines(r.logs(), 40)
		}
		r.stop()
		return tg
	}
	tg.forceClose = func(ctx context.Context) (string, error) {
		// RabbitMQ sends connection.close 320 "CONNECTION_FORCED - test".
		return r.ctl(ctx, "close_all_connections", "test")
	}
	tg.logs = func() string { return lastLines(r.logs(), 60) }
	tg.stop = r.stop
	return tg
}

func (r *rabbit) start(tg *target) error {
	var err error
	if r.dir, err = os.MkdirTemp("", "amqpit-rabbitmq-"); err != nil {
		return err
	}
	// MkdirTemp makes 0700 directories; the rabbitmq user must traverse
	// and own them. Its parent (TMPDIR, usually /tmp) must be traversable.
	if err := os.Chmod(r.dir, 0o755); err != nil {
		return err
	}
	home := filepath.Join(r.dir, "home")
	for _, d := range []string{"home", "mnesia", "log"} {
		if err := os.Mkdir(filepath.Join(r.dir, d), 0o755); err != nil {
			return err
		}
	}
	ports, err := freePorts(4)
	if err != nil {
		return err
	}
	tg.port = ports[0]
	distPort, ctlPort := ports[1], ports[2]
	r.epmdPort = ports[3]
	files := map[string]string{
		"enabled_plugins":     "[].\n", // no management plugin, so no 15672/15692 listeners
		"rabbitmq.conf":       "log.console = false\nlog.file.level = info\n",
		"home/.erlang.cookie": strings.ToUpper(randomHex(10)),
	}
	for name, content := range files {
		mode := os.FileMode(0o644)
		if strings.HasSuffix(name, "cookie") {
			mode = 0o400
		}
		if err := os.WriteFile(filepath.Join(r.dir, name), []byte(content), mode); err != nil {
			return err
		}
	}
	if r.cred != nil {
		err := filepath.Walk(r.dir, func(p string, _ os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			return os.Lchown(p, int(r.cred.Uid), int(r.cred.Gid))
		})
		if err != nil {
			return err
		}
	}
	r.node = "amqpit" + strconv.Itoa(os.Getpid()) + "@localhost"
	loopbackDist := "-kernel inet_dist_use_interface {127,0,0,1}"
	r.env = []string{
		"PATH=/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=" + home,
		"LANG=C.UTF-8",
		"LC_ALL=C.UTF-8",
		"RABBITMQ_NODENAME=" + r.node,
		"RABBITMQ_NODE_IP_ADDRESS=127.0.0.1",
		"RABBITMQ_NODE_PORT=" + strconv.Itoa(tg.port),
		"RABBITMQ_DIST_PORT=" + strconv.Itoa(distPort),
		"RABBITMQ_CTL_DIST_PORT_MIN=" + strconv.Itoa(ctlPort),
		"RABBITMQ_CTL_DIST_PORT_MAX=" + strconv.Itoa(ctlPort),
		"ERL_EPMD_PORT=" + strconv.Itoa(r.epmdPort),
		"ERL_EPMD_ADDRESS=127.0.0.1",
		"RABBITMQ_MNESIA_BASE=" + filepath.Join(r.dir, "mnesia"),
		"RABBITMQ_LOG_BASE=" + filepath.Join(r.dir, "log"),
		"RABBITMQ_CONFIG_FILE=" + filepath.Join(r.dir, "rabbitmq.conf"),
		"RABBITMQ_ADVANCED_CONFIG_FILE=" + filepath.Join(r.dir, "advanced.config"),
		"RABBITMQ_ENABLED_PLUGINS_FILE=" + filepath.Join(r.dir, "enabled_plugins"),
		"RABBITMQ_PID_FILE=" + filepath.Join(r.dir, "rabbitmq.pid"),
		"RABBITMQ_CONF_ENV_FILE=" + filepath.Join(r.dir, "rabbitmq-env.conf"), // absent: ignore /etc's
		"RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=" + loopbackDist,
		"RABBITMQ_CTL_ERL_ARGS=" + loopbackDist,
	}
	// Run epmd ourselves, in the foreground on the private port: erl would
	// otherwise start a daemon one that outlives this run.
	r.epmd = exec.Command(epmdBinary, "-port", strconv.Itoa(r.epmdPort), "-address", "127.0.0.1")
	r.epmd.Env = r.env
	r.epmd.Stdout, r.epmd.Stderr = &r.out, &r.out
	r.epmd.SysProcAttr = &syscall.SysProcAttr{Credential: r.cred, Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := r.epmd.Start(); err != nil {
		r.epmd = nil
		return fmt.Errorf("starting epmd: %w", err)
	}
	if err := waitTCP(net.JoinHostPort("127.0.0.1", strconv.Itoa(r.epmdPort)), 10*time.Second); err != nil {
		return fmt.Errorf("epmd: %w", err)
	}

	r.cmd = exec.Command(rabbitServerScript)
	r.cmd.Dir = r.dir
	r.cmd.Env = r.env
	r.cmd.Stdout, r.cmd.Stderr = &r.out, &r.out
	// Pdeathsig: if this test binary dies (say, -timeout), the wrapper
	// script gets SIGTERM and stops the Erlang VM.
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: r.cred, Setpgid: true, Pdeathsig: syscall.SIGTERM}
	t0 := time.Now()
	if err := r.cmd.Start(); err != nil {
		return fmt.Errorf("starting rabbitmq-server: %w", err)
	}
	go func() { r.cmd.Wait(); close(r.exited) }()

	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	if err := waitAMQP(ctx, tg.addr(), r.exited); err != nil {
		return err
	}
	// The listener opens before boot is complete; await_startup makes the
	// CLI commands below reliable.
	for _, args := range [][]string{
		{"await_startup", "--timeout", "60"},
		{"add_user", amqpUser, tg.password},
		{"set_permissions", "-p", "/", amqpUser, ".*", ".*", ".*"},
	} {
		if out, err := r.ctl(ctx, args...); err != nil {
			return fmt.Errorf("rabbitmqctl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	fmt.Fprintf(os.Stderr, "amqpit: rabbitmq %s ready on %s after %v\n", r.node, tg.addr(), time.Since(t0).Round(100*time.Millisecond))
	return nil
}

// ctl runs rabbitmqctl against the node, as the rabbitmq user with the
// node's private HOME (cookie) and ports.
func (r *rabbit) ctl(ctx context.Context, args ...string) (string, error) {
	r.ctlMu.Lock()
	defer r.ctlMu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, rabbitCtlScript, append([]string{"-n", r.node}, args...)...)
	cmd.Dir = r.dir
	cmd.Env = r.env
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: r.cred}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (r *rabbit) logs() string {
	s := r.out.String()
	matches, _ := filepath.Glob(filepath.Join(r.dir, "log", "*.log"))
	for _, m := range matches {
		b, _ := os.ReadFile(m)
		s += "\n== " + filepath.Base(m) + "\n" + lastLines(string(b), 60)
	}
	return s
}

// stop shuts the node down (rabbitmqctl stop, then SIGTERM and SIGKILL to
// the process group started here), stops our epmd and removes the
// directory.
func (r *rabbit) stop() {
	if r.cmd != nil && r.cmd.Process != nil {
		select {
		case <-r.exited:
		default:
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			r.ctl(ctx, "stop")
			cancel()
			select {
			case <-r.exited:
			case <-time.After(20 * time.Second):
				syscall.Kill(-r.cmd.Process.Pid, syscall.SIGTERM)
				select {
				case <-r.exited:
				case <-time.After(10 * time.Second):
					syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
					<-r.exited
				}
			}
		}
	}
	if r.epmd != nil {
		r.epmd.Process.Kill()
		r.epmd.Wait()
	}
	if r.dir != "" {
		os.RemoveAll(r.dir)
	}
}

// ---------------------------------------------------------------------------
// substrate

// substrateNoAMQP is the warning today's binary logs instead of serving AMQP.
const substrateNoAMQP = "service not available in this build yet"

type substrate struct {
	bin      string
	tmp      string
	dataDir  string
	ports    map[string]int
	cmd      *exec.Cmd
	out      tail
	ready    chan struct{}
	exited   chan struct{}
	waitErr  error
	lineMu   sync.Mutex
	noAMQP   bool
	readyMsg string
}

// setupSubstrate starts
//
//	substrate serve --services amqp,etcd --host 127.0.0.1 --data-dir DIR
//	    --amqp-port P --etcd-client-port C --etcd-peer-port Q --http-port H
//
// waits for the log line containing msg="substrate ready", then for AMQP on
// P, and creates the user with `substrate ctl add_user` and
// `substrate ctl set_permissions` (rabbitmqctl's commands, DESIGN.md).
func setupSubstrate() *target {
	tg := &target{name: "substrate", host: "127.0.0.1", user: amqpUser, password: "pw" + randomHex(8)}
	s := &substrate{ready: make(chan struct{}), exited: make(chan struct{})}
	var err error
	if s.tmp, err = os.MkdirTemp("", "amqpit-substrate-"); err != nil {
		tg.fail = err.Error()
		return tg
	}
	tg.stop = s.stop
	if s.bin, err = substrateBinary(s.tmp); err != nil {
		tg.fail = err.Error()
		return tg
	}
	ports, err := freePorts(4)
	if err != nil {
		tg.fail = err.Error()
		return tg
	}
	tg.port = ports[0]
	s.ports = map[string]int{"amqp": ports[0], "etcd-client": ports[1], "etcd-peer": ports[2], "http": ports[3]}
	s.dataDir = filepath.Join(s.tmp, "data")
	args := []string{"serve", "--services", "amqp,etcd", "--host", "127.0.0.1", "--data-dir", s.dataDir,
		"--amqp-port", strconv.Itoa(ports[0]), "--etcd-client-port", strconv.Itoa(ports[1]),
		"--etcd-peer-port", strconv.Itoa(ports[2]), "--http-port", strconv.Itoa(ports[3])}
	s.cmd = exec.Command(s.bin, args...)
	s.cmd.Dir = s.tmp
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	pr, pw := io.Pipe()
	s.cmd.Stdout, s.cmd.Stderr = pw, pw
	t0 := time.Now()
	if err := s.cmd.Start(); err != nil {
		tg.fail = "starting substrate: " + err.Error()
		return tg
	}
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64*1024), 1<<20)
		var once sync.Once
		for sc.Scan() {
			line := sc.Text()
			s.out.Write([]byte(line + "\n"))
			if strings.Contains(line, substrateNoAMQP) && strings.Contains(line, "service=amqp") {
				s.lineMu.Lock()
				s.noAMQP = true
				s.lineMu.Unlock()
			}
			if strings.Contains(line, `msg="substrate ready"`) {
				once.Do(func() { close(s.ready) })
			}
		}
		io.Copy(io.Discard, pr)
	}()
	go func() { s.waitErr = s.cmd.Wait(); pw.Close(); close(s.exited) }()

	select {
	case <-s.ready:
	case <-s.exited:
		tg.fail = fmt.Sprintf("substrate exited before it was ready (%v):\n%s", s.waitErr, lastLines(s.out.String(), 40))
		return tg
	case <-time.After(60 * time.Second):
		tg.fail = "substrate not ready after 60s:\n" + lastLines(s.out.String(), 40)
		return tg
	}
	s.lineMu.Lock()
	noAMQP := s.noAMQP
	s.lineMu.Unlock()
	if noAMQP {
		// The broker is part of the build: a binary without it is broken.
		s.stop()
		tg.stop = nil
		tg.fail = "substrate says its amqp service is not available in this build"
		return tg
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := waitAMQP(ctx, tg.addr(), s.exited); err != nil {
		tg.fail = err.Error() + "\n" + lastLines(s.out.String(), 40)
		return tg
	}
	for _, args := range [][]string{
		{"add_user", amqpUser, tg.password},
		{"set_permissions", amqpUser, ".*", ".*", ".*"},
	} {
		if out, err := s.ctl(ctx, args...); err != nil {
			tg.fail = fmt.Sprintf("substrate ctl %s: %v\n%s", strings.Join(args, " "), err, out)
			return tg
		}
	}
	tg.forceClose = func(ctx context.Context) (string, error) {
		return s.ctl(ctx, "close_all_connections", "test")
	}
	tg.logs = func() string { return lastLines(s.out.String(), 60) }
	fmt.Fprintf(os.Stderr, "amqpit: substrate ready on %s after %v\n", tg.addr(), time.Since(t0).Round(100*time.Millisecond))
	return tg
}

// substrateBinary returns SUBSTRATE_BIN (absolute, or relative to the
// repository root) or builds ../../cmd/substrate into dir.
func substrateBinary(dir string) (string, error) {
	if bin := os.Getenv("SUBSTRATE_BIN"); bin != "" {
		if !filepath.IsAbs(bin) {
			bin, _ = filepath.Abs(filepath.Join("..", "..", bin))
		}
		if _, err := os.Stat(bin); err != nil {
			return "", fmt.Errorf("SUBSTRATE_BIN: %w", err)
		}
		return bin, nil
	}
	bin := filepath.Join(dir, "substrate")
	cmd := exec.Command("go", "build", "-o", bin, "../../cmd/substrate")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building substrate: %v\n%s", err, out)
	}
	return bin, nil
}

// ctl runs `substrate ctl ARGS...`. It tells ctl where the server is the
// same way `serve` is configured: SUBSTRATE_<FLAG> environment variables
// (DESIGN.md: every serve flag is also SUBSTRATE_<FLAG>).
func (s *substrate) ctl(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.bin, append([]string{"ctl"}, args...)...)
	cmd.Dir = s.tmp
	cmd.Env = append(os.Environ(),
		"SUBSTRATE_HOST=127.0.0.1",
		"SUBSTRATE_DATA_DIR="+s.dataDir,
		"SUBSTRATE_AMQP_PORT="+strconv.Itoa(s.ports["amqp"]),
		"SUBSTRATE_ETCD_CLIENT_PORT="+strconv.Itoa(s.ports["etcd-client"]),
		"SUBSTRATE_HTTP_PORT="+strconv.Itoa(s.ports["http"]),
	)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (s *substrate) stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		select {
		case <-s.exited:
		default:
			s.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-s.exited:
			case <-time.After(20 * time.Second):
				syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
				<-s.exited
			}
		}
	}
	if s.tmp != "" {
		os.RemoveAll(s.tmp)
	}
}

// ---------------------------------------------------------------------------
// running the py/ scripts

// pyResult is a finished script: its stdout lines and the "result KEY VALUE"
// lines it printed, by key.
type pyResult struct {
	lines   []string
	results map[string]string
	stderr  string
	elapsed time.Duration
}

func (r *pyResult) float(t *testing.T, key string) float64 {
	t.Helper()
	v, ok := r.results[key]
	if !ok {
		t.Fatalf("script printed no %q result; stdout:\n%s", key, strings.Join(r.lines, "\n"))
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		t.Fatalf("result %s=%q: %v", key, v, err)
	}
	return f
}

func (r *pyResult) str(t *testing.T, key string) string {
	t.Helper()
	v, ok := r.results[key]
	if !ok {
		t.Fatalf("script printed no %q result; stdout:\n%s", key, strings.Join(r.lines, "\n"))
	}
	return v
}

var pyModulesOK sync.Map // module name -> error (nil if importable)

// needPython skips (or fails under SUBSTRATE_REQUIRE_CLIENTS=1) when
// Debian's python3 or one of modules is missing.
func needPython(t *testing.T, modules ...string) {
	t.Helper()
	if _, err := os.Stat(python); err != nil {
		missing(t, python+" is not installed")
	}
	for _, m := range modules {
		v, ok := pyModulesOK.Load(m)
		if !ok {
			err := exec.Command(python, "-c", "import "+m).Run()
			v, _ = pyModulesOK.LoadOrStore(m, err)
		}
		if v != nil && v.(error) != nil {
			missing(t, "python module "+m+" is not installed")
		}
	}
}

func missing(t *testing.T, what string) {
	t.Helper()
	if requireClients() {
		t.Fatalf("%s (SUBSTRATE_REQUIRE_CLIENTS=1)", what)
	}
	t.Skip(what)
}

// onLine is called for each stdout line of a running script; it may write
// to the script's stdin.
type onLine func(line string, stdin io.Writer) error

// runPy runs py/SCRIPT URL ARGS... with a deadline and requires exit status
// 0 with "ok" as the last stdout line.
func runPy(t *testing.T, tg *target, timeout time.Duration, script string, args ...string) *pyResult {
	t.Helper()
	return runPyInteractive(t, tg, timeout, nil, script, args...)
}

func runPyInteractive(t *testing.T, tg *target, timeout time.Duration, hook onLine, script string, args ...string) *pyResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, python, append([]string{filepath.Join("py", script), tg.url()}, args...)...)
	cmd.Env = append(os.Environ(), "PYTHONUNBUFFERED=1", "PYTHONDONTWRITEBYTECODE=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var stderr tail
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	res := &pyResult{results: map[string]string{}}
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var hookErr error
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64*1024), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		res.lines = append(res.lines, line)
		if f := strings.Fields(line); len(f) >= 3 && f[0] == "result" {
			res.results[f[1]] = strings.Join(f[2:], " ")
		}
		if hook != nil && hookErr == nil {
			if hookErr = hook(line, stdin); hookErr != nil {
				cancel()
			}
		}
	}
	stdin.Close()
	err = cmd.Wait()
	res.elapsed = time.Since(t0)
	res.stderr = stderr.String()
	dump := func() string {
		return fmt.Sprintf("stdout:\n%s\nstderr (tail):\n%s", strings.Join(res.lines, "\n"), lastLines(res.stderr, 60))
	}
	if hookErr != nil {
		t.Fatalf("%s: %v\n%s", script, hookErr, dump())
	}
	if ctx.Err() != nil {
		t.Fatalf("%s did not finish within %v\n%s", script, timeout, dump())
	}
	if err != nil {
		t.Fatalf("%s failed: %v\n%s", script, err, dump())
	}
	if len(res.lines) == 0 || res.lines[len(res.lines)-1] != "ok" {
		t.Fatalf("%s exited 0 but did not print a final \"ok\"\n%s", script, dump())
	}
	var kv []string
	for _, line := range res.lines {
		if f := strings.Fields(line); len(f) >= 3 && f[0] == "result" {
			kv = append(kv, f[1]+"="+strings.Join(f[2:], " "))
		}
	}
	t.Logf("%s %s: ok in %v %s", tg.name, strings.TrimSpace(script+" "+strings.Join(args, " ")),
		res.elapsed.Round(10*time.Millisecond), strings.Join(kv, " "))
	return res
}
