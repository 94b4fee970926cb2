// Package integration starts the built substrate binary on free loopback
// ports with a temporary data directory and drives it with real clients:
// Debian's etcdctl, python3-etcd3gw, python3-tooz, and Go's clientv3.
//
// A client that is not installed skips its test, unless
// SUBSTRATE_REQUIRE_CLIENTS=1 (set by .ci/run), which turns the skip into a
// failure so that CI cannot pass by skipping.
package integration

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"substrate/internal/testkit"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// binary is the substrate binary under test.
var binary string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	binary = os.Getenv("SUBSTRATE_BIN")
	if binary == "" {
		dir, err := os.MkdirTemp("", "substrate-it-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		binary = filepath.Join(dir, "substrate")
		cmd := exec.Command("go", "build", "-o", binary, "../cmd/substrate")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "building substrate:", err)
			return 1
		}
	} else if !filepath.IsAbs(binary) {
		// relative to the repository root, where make runs
		binary, _ = filepath.Abs(filepath.Join("..", binary))
	}
	return m.Run()
}

// need skips the test when an external client is missing, or fails it when
// SUBSTRATE_REQUIRE_CLIENTS=1.
func need(t *testing.T, what string, ok bool) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv("SUBSTRATE_REQUIRE_CLIENTS") == "1" {
		t.Fatalf("%s is not installed (SUBSTRATE_REQUIRE_CLIENTS=1)", what)
	}
	t.Skipf("%s is not installed", what)
}

func needCommand(t *testing.T, path string) {
	t.Helper()
	_, err := os.Stat(path)
	need(t, path, err == nil)
}

// python is Debian's interpreter, which has the python3-* packages.
const python = "/usr/bin/python3"

func needPython(t *testing.T, modules ...string) {
	t.Helper()
	needCommand(t, python)
	for _, m := range modules {
		err := exec.Command(python, "-c", "import "+m).Run()
		need(t, "python module "+m, err == nil)
	}
}

// childEnv is the test's environment without the variables that steer the
// tests themselves: they share serve's SUBSTRATE_ prefix, and serve warns
// about variables it does not know.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		// The tests' own SUBSTRATE_* knobs (BIN, REQUIRE_CLIENTS, CRASH_*)
		// are not serve settings; a test that wants one passes it itself.
		if !strings.HasPrefix(kv, "SUBSTRATE_") {
			env = append(env, kv)
		}
	}
	return env
}

// freePort returns a loopback TCP port for a server the test starts.
func freePort(t *testing.T) int { return testkit.FreePort(t) }

// proc is a running substrate process.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	mu     sync.Mutex
	stderr bytes.Buffer
	ready  chan struct{}
	exited chan struct{}
	err    error // of Wait, after exited
}

// start runs the binary with args and env (added to the environment) and
// does not wait for it to be ready. The process is killed at cleanup.
func start(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, cmd: exec.Command(binary, args...), ready: make(chan struct{}), exited: make(chan struct{})}
	p.cmd.Env = append(childEnv(), env...)
	pr, pw := io.Pipe()
	p.cmd.Stderr = pw
	p.cmd.Stdout = pw
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		sc := bufio.NewScanner(pr)
		once := sync.Once{}
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.stderr.WriteString(line + "\n")
			p.mu.Unlock()
			if strings.Contains(line, `msg="substrate ready"`) {
				once.Do(func() { close(p.ready) })
			}
		}
		io.Copy(io.Discard, pr)
	}()
	go func() {
		p.err = p.cmd.Wait()
		pw.Close()
		<-readerDone // every line is in p.stderr before exited says so
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.stop(syscall.SIGKILL)
		if t.Failed() {
			t.Logf("substrate %s output:\n%s", strings.Join(args, " "), p.output())
		}
	})
	return p
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

// waitReady waits for the ready line.
func (p *proc) waitReady(timeout time.Duration) {
	p.t.Helper()
	select {
	case <-p.ready:
	case <-p.exited:
		p.t.Fatalf("substrate exited before it was ready (%v):\n%s", p.err, p.output())
	case <-time.After(timeout):
		p.t.Fatalf("substrate not ready after %v:\n%s", timeout, p.output())
	}
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.exited:
	case <-time.After(timeout):
		p.t.Fatalf("substrate still running after %v:\n%s", timeout, p.output())
	}
	return p.cmd.ProcessState.ExitCode()
}

// stop signals the process (by PID) and waits for it to exit.
func (p *proc) stop(sig syscall.Signal) {
	select {
	case <-p.exited:
		return
	default:
	}
	p.cmd.Process.Signal(sig)
	select {
	case <-p.exited:
	case <-time.After(15 * time.Second):
		p.cmd.Process.Kill()
		<-p.exited
	}
}

// server is a `substrate serve` on free loopback ports.
type server struct {
	*proc
	dataDir       string
	clientPort    int
	peerPort      int
	httpPort      int
	memcachedPort int
	amqpPort      int
}

func (s *server) endpoint() string { return "127.0.0.1:" + strconv.Itoa(s.clientPort) }

// args are the flags that put a server on free ports in dataDir.
func (s *server) args(extra ...string) []string {
	return append([]string{"serve", "--host", "127.0.0.1", "--data-dir", s.dataDir,
		"--etcd-client-port", strconv.Itoa(s.clientPort), "--etcd-peer-port", strconv.Itoa(s.peerPort),
		"--http-port", strconv.Itoa(s.httpPort), "--memcached-port", strconv.Itoa(s.memcachedPort),
		"--amqp-port", strconv.Itoa(s.amqpPort)}, extra...)
}

// newServer picks ports and a data dir without starting anything.
func newServer(t *testing.T) *server {
	return &server{dataDir: filepath.Join(t.TempDir(), "data"), clientPort: freePort(t), peerPort: freePort(t),
		httpPort: freePort(t), memcachedPort: freePort(t), amqpPort: freePort(t)}
}

// serve starts `substrate serve` with defaults on free ports and waits for it.
func serve(t *testing.T, extra ...string) *server {
	t.Helper()
	s := newServer(t)
	s.proc = start(t, nil, s.args(extra...)...)
	s.waitReady(30 * time.Second)
	return s
}

// restart starts the server again on the same ports and data dir.
func (s *server) restart(t *testing.T) {
	t.Helper()
	s.proc = start(t, nil, s.args()...)
	s.waitReady(30 * time.Second)
}

func client(t *testing.T, endpoints ...string) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// run runs an external command with a deadline and returns its output.
func run(t *testing.T, timeout time.Duration, env []string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}
