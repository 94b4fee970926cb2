package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

const (
	readyTimeout = 30 * time.Second // give up if a server is not serving after this
	stopTimeout  = 10 * time.Second // SIGTERM grace period before SIGKILL
)

// target is one of the two systems under test.
type target struct {
	name string
	// args builds the command line for a fresh server.
	args func(bin, dataDir string, clientPort, peerPort int) []string
	bin  string
}

func substrateTarget(bin string) target {
	return target{name: "substrate", bin: bin, args: func(bin, dir string, cp, pp int) []string {
		return []string{bin, "serve", "--services", "etcd", "--data-dir", dir, "--host", "127.0.0.1",
			"--etcd-client-port", strconv.Itoa(cp), "--etcd-peer-port", strconv.Itoa(pp)}
	}}
}

func etcdTarget(bin string) target {
	return target{name: "etcd", bin: bin, args: func(bin, dir string, cp, pp int) []string {
		c := fmt.Sprintf("http://127.0.0.1:%d", cp)
		p := fmt.Sprintf("http://127.0.0.1:%d", pp)
		return []string{bin, "--name", "bench", "--data-dir", dir,
			"--listen-client-urls", c, "--advertise-client-urls", c,
			"--listen-peer-urls", p, "--initial-advertise-peer-urls", p,
			"--initial-cluster", "bench=" + p, "--log-level", "warn"}
	}}
}

// server is a running server process plus its temp directory.
type server struct {
	cmd      *exec.Cmd
	root     string        // temp dir holding data/ and server.log
	endpoint string        // 127.0.0.1:clientPort
	exited   chan struct{} // closed when the process has exited
	waitErr  error         // valid after exited is closed
	ready    time.Duration // exec to first successful Get
}

// freePorts returns n distinct currently-free loopback TCP ports.
// (They are released before the server binds them; a race is possible but rare.)
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// startServer execs a fresh server of target t and waits until a Get succeeds.
// On error everything it created is already cleaned up.
func startServer(ctx context.Context, t target) (*server, error) {
	root, err := os.MkdirTemp("", "kvbench-"+t.name+"-")
	if err != nil {
		return nil, err
	}
	ports, err := freePorts(2)
	if err != nil {
		os.RemoveAll(root)
		return nil, err
	}
	logf, err := os.Create(filepath.Join(root, "server.log"))
	if err != nil {
		os.RemoveAll(root)
		return nil, err
	}
	defer logf.Close() // the child keeps its own descriptor

	argv := t.args(t.bin, filepath.Join(root, "data"), ports[0], ports[1])
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// If kvbench dies, the kernel kills the server too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	s := &server{cmd: cmd, root: root, endpoint: fmt.Sprintf("127.0.0.1:%d", ports[0]), exited: make(chan struct{})}

	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		os.RemoveAll(root)
		return nil, fmt.Errorf("start %s: %w", t.name, err)
	}
	go func() { s.waitErr = cmd.Wait(); close(s.exited) }()

	if err := s.waitReady(ctx, t0); err != nil {
		tail := s.logTail(15)
		s.stop()
		return nil, fmt.Errorf("%s not ready: %v\n--- %s log tail ---\n%s", t.name, err, t.name, tail)
	}
	s.ready = time.Since(t0)
	return s, nil
}

// dial opens a clientv3 client to the server. Reconnect backoff is kept short
// so that start-to-ready is not inflated by gRPC's default 1 s backoff.
func dial(endpoint string) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{
		Endpoints:   []string{endpoint},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 5 * time.Millisecond, Multiplier: 1.5, MaxDelay: 50 * time.Millisecond},
			MinConnectTimeout: time.Second,
		})},
	})
}

// waitReady polls with a linearizable Get until one succeeds.
func (s *server) waitReady(ctx context.Context, t0 time.Time) error {
	cli, err := dial(s.endpoint)
	if err != nil {
		return err
	}
	defer cli.Close()
	deadline := t0.Add(readyTimeout)
	for {
		actx, cancel := context.WithTimeout(ctx, 250*time.Millisecond)
		_, err := cli.Get(actx, "kvbench-ready")
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-s.exited:
			return fmt.Errorf("process exited: %v", s.waitErr)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no successful Get within %v (last error: %v)", readyTimeout, err)
		}
	}
}

// peakRSSMB reads VmHWM (peak resident set) of the server process, in MiB.
func (s *server) peakRSSMB() float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}

// stop sends SIGTERM to the server's PID, SIGKILL after stopTimeout, and removes
// its temp dir. It returns how long the process took to exit.
func (s *server) stop() (time.Duration, error) {
	defer os.RemoveAll(s.root)
	t0 := time.Now()
	select {
	case <-s.exited:
		return 0, errors.New("already exited")
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
		return time.Since(t0), nil
	case <-time.After(stopTimeout):
		_ = s.cmd.Process.Kill()
		<-s.exited
		return time.Since(t0), fmt.Errorf("did not exit within %v of SIGTERM; killed", stopTimeout)
	}
}

// logTail returns the last n lines of the server's output.
func (s *server) logTail(n int) string {
	b, _ := os.ReadFile(filepath.Join(s.root, "server.log"))
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
