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
// Run: go test -count=1 ./integration/amqp/ (about 1.5-2 min on 2 cores,
// as root or as the rabbitmq user, which rabbitmq-server needs).
// TestOsloDurableRestart restarts each target in place (target.restart;
// restart_test.go for RabbitMQ), alone on it.
//
// What the substrate target expects of the binary:
//
//	substrate serve --services amqp,etcd --host 127.0.0.1 --data-dir DIR \
//	    --amqp-port P --etcd-client-port C --etcd-peer-port Q --http-port H
//
// logs (stdout or stderr) a line containing msg="substrate ready" once AMQP
// accepts on 127.0.0.1:P, and stops on SIGTERM (within 20 s; it is then
// started again with the same arguments by TestOsloDurableRestart). Then, with SUBSTRATE_HOST, SUBSTRATE_DATA_DIR,
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
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"substrate/internal/rabbitmqtest"
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
	// ctl runs the broker's rabbitmqctl (`rabbitmqctl -n NODE` or
	// `substrate ctl`) and returns its combined output.
	ctl func(ctx context.Context, args ...string) (string, error)
	// restart stops the broker as an operator would (rabbitmqctl stop;
	// SIGTERM to substrate) and starts it again on the same data directory
	// and ports, returning once it accepts AMQP again. Only bodies run by
	// forEachTargetAlone may call it. It returns a one-line summary.
	restart func(ctx context.Context) (string, error)

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

// ---------------------------------------------------------------------------
// rabbitmq: Debian's rabbitmq-server

// setupRabbitMQ starts a private rabbitmq-server (rabbitmqtest.Start: its
// node name, ports, epmd, cookie and data private to this run, all on
// 127.0.0.1, no plugins) and creates the user.
func setupRabbitMQ() *target {
	tg := &target{name: "rabbitmq", host: "127.0.0.1", user: amqpUser, password: "pw" + rabbitmqtest.RandomHex(8)}
	if why := rabbitmqtest.Available(); why != "" {
		return tg.unavailable(why)
	}
	r, err := rabbitmqtest.Start(context.Background(), rabbitmqtest.Options{
		Name:     "amqpit",
		LogLevel: "info",
		Poll:     250 * time.Millisecond,
		Ctl: [][]string{
			{"add_user", amqpUser, tg.password},
			{"set_permissions", "-p", "/", amqpUser, ".*", ".*", ".*"},
		},
	})
	if err != nil {
		tg.fail = err.Error()
		return tg
	}
	tg.port = r.Port
	fmt.Fprintf(os.Stderr, "amqpit: rabbitmq %s ready on %s after %v\n", r.Node, tg.addr(), time.Since(r.StartedAt).Round(100*time.Millisecond))
	tg.forceClose = func(ctx context.Context) (string, error) {
		// RabbitMQ sends connection.close 320 "CONNECTION_FORCED - test".
		return r.Ctl(ctx, "close_all_connections", "test")
	}
	rr := newRabbitRestarter(r)
	tg.ctl = r.Ctl
	tg.restart = rr.restart
	tg.logs = func() string { return rabbitmqtest.LastLines(rr.logs(), 60) }
	tg.stop = rr.stop
	return tg
}

// ---------------------------------------------------------------------------
// substrate

// substrateNoAMQP is the warning today's binary logs instead of serving AMQP.
const substrateNoAMQP = "service not available in this build yet"

type substrate struct {
	bin     string
	tmp     string
	dataDir string
	ports   map[string]int
	args    []string // serve's arguments, the same for every launch
	out     rabbitmqtest.Tail

	mu  sync.Mutex
	cur *substrateProc // the running (or last) server process
}

// substrateProc is one `substrate serve` process.
type substrateProc struct {
	cmd     *exec.Cmd
	ready   chan struct{}
	exited  chan struct{}
	waitErr error // set before exited is closed
	lineMu  sync.Mutex
	noAMQP  bool
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
	tg := &target{name: "substrate", host: "127.0.0.1", user: amqpUser, password: "pw" + rabbitmqtest.RandomHex(8)}
	s := &substrate{}
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
	ports, err := rabbitmqtest.FreePorts(4)
	if err != nil {
		tg.fail = err.Error()
		return tg
	}
	tg.port = ports[0]
	s.ports = map[string]int{"amqp": ports[0], "etcd-client": ports[1], "etcd-peer": ports[2], "http": ports[3]}
	s.dataDir = filepath.Join(s.tmp, "data")
	s.args = []string{"serve", "--services", "amqp,etcd", "--host", "127.0.0.1", "--data-dir", s.dataDir,
		"--amqp-port", strconv.Itoa(ports[0]), "--etcd-client-port", strconv.Itoa(ports[1]),
		"--etcd-peer-port", strconv.Itoa(ports[2]), "--http-port", strconv.Itoa(ports[3])}
	t0 := time.Now()
	if err := s.launch(tg.addr()); err != nil {
		tg.fail = err.Error()
		return tg
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
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
	tg.ctl = s.ctl
	tg.restart = func(ctx context.Context) (string, error) { return s.restart(tg.addr()) }
	tg.logs = func() string { return rabbitmqtest.LastLines(s.out.String(), 60) }
	fmt.Fprintf(os.Stderr, "amqpit: substrate ready on %s after %v\n", tg.addr(), time.Since(t0).Round(100*time.Millisecond))
	return tg
}

// launch starts `substrate serve` with s.args and waits for its ready line
// and then for AMQP on addr. On error the process may still be running;
// stop ends it.
func (s *substrate) launch(addr string) error {
	p := &substrateProc{ready: make(chan struct{}), exited: make(chan struct{})}
	p.cmd = exec.Command(s.bin, s.args...)
	p.cmd.Dir = s.tmp
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	pr, pw := io.Pipe()
	p.cmd.Stdout, p.cmd.Stderr = pw, pw
	if err := p.cmd.Start(); err != nil {
		return fmt.Errorf("starting substrate: %w", err)
	}
	s.mu.Lock()
	s.cur = p
	s.mu.Unlock()
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64*1024), 1<<20)
		var once sync.Once
		for sc.Scan() {
			line := sc.Text()
			s.out.Write([]byte(line + "\n"))
			if strings.Contains(line, substrateNoAMQP) && strings.Contains(line, "service=amqp") {
				p.lineMu.Lock()
				p.noAMQP = true
				p.lineMu.Unlock()
			}
			if strings.Contains(line, `msg="substrate ready"`) {
				once.Do(func() { close(p.ready) })
			}
		}
		io.Copy(io.Discard, pr)
	}()
	go func() { p.waitErr = p.cmd.Wait(); pw.Close(); close(p.exited) }()

	select {
	case <-p.ready:
	case <-p.exited:
		return fmt.Errorf("substrate exited before it was ready (%v):\n%s", p.waitErr, rabbitmqtest.LastLines(s.out.String(), 40))
	case <-time.After(60 * time.Second):
		return fmt.Errorf("substrate not ready after 60s:\n%s", rabbitmqtest.LastLines(s.out.String(), 40))
	}
	p.lineMu.Lock()
	noAMQP := p.noAMQP
	p.lineMu.Unlock()
	if noAMQP {
		// The broker is part of the build: a binary without it is broken.
		s.terminate()
		return errors.New("substrate says its amqp service is not available in this build")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := rabbitmqtest.WaitAMQP(ctx, addr, p.exited, 250*time.Millisecond); err != nil {
		return fmt.Errorf("%v\n%s", err, rabbitmqtest.LastLines(s.out.String(), 40))
	}
	return nil
}

// restart sends SIGTERM, waits for the process to exit and launches it
// again with the same data directory and ports.
func (s *substrate) restart(addr string) (string, error) {
	t0 := time.Now()
	exit, err := s.terminate()
	if err != nil {
		return "", err
	}
	stopped := time.Since(t0)
	s.out.Write([]byte("==== amqpit: restarting substrate on the same --data-dir and ports ====\n"))
	if err := s.launch(addr); err != nil {
		return "", fmt.Errorf("substrate did not come back after the restart: %w", err)
	}
	return fmt.Sprintf("substrate exited (%s) %v after SIGTERM, accepted AMQP again %v later",
		exit, stopped.Round(10*time.Millisecond), (time.Since(t0) - stopped).Round(10*time.Millisecond)), nil
}

// terminate stops the current process with SIGTERM (SIGKILL to its group
// after 20 s, which is an error) and reports its exit status.
func (s *substrate) terminate() (string, error) {
	s.mu.Lock()
	p := s.cur
	s.mu.Unlock()
	if p == nil || p.cmd.Process == nil {
		return "", errors.New("substrate is not running")
	}
	select {
	case <-p.exited:
		return "", fmt.Errorf("substrate had already exited (%v)", p.waitErr)
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(20 * time.Second):
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.exited
		return "", errors.New("substrate did not exit within 20s of SIGTERM; killed it")
	}
	if p.waitErr != nil {
		return p.waitErr.Error(), nil
	}
	return "status 0", nil
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
	s.mu.Lock()
	p := s.cur
	s.mu.Unlock()
	if p != nil && p.cmd.Process != nil {
		select {
		case <-p.exited:
		default:
			s.terminate()
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
	var stderr rabbitmqtest.Tail
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
		return fmt.Sprintf("stdout:\n%s\nstderr (tail):\n%s", strings.Join(res.lines, "\n"), rabbitmqtest.LastLines(res.stderr, 60))
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
