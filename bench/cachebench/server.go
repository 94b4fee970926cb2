package main

import (
	"bufio"
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
)

const (
	readyTimeout = 30 * time.Second // give up if a server is not serving after this
	stopTimeout  = 10 * time.Second // SIGTERM grace period before SIGKILL
)

// target is one of the two systems under test. Both take memcached 1.6.18's
// command-line flags; they differ only in the program and its first args.
type target struct {
	name string
	argv []string // program and leading args, before the memcached flags
}

func substrateTarget(bin string) target {
	return target{name: "substrate", argv: []string{bin, "memcached"}}
}

func memcachedTarget(bin string) target {
	return target{name: "memcached", argv: []string{bin}}
}

// server is a running server process plus its temp directory (for its log).
type server struct {
	cmd     *exec.Cmd
	root    string        // temp dir holding server.log
	addr    string        // 127.0.0.1:port
	exited  chan struct{} // closed when the process has exited
	waitErr error         // valid after exited is closed
	ready   time.Duration // exec to first answered "version"
	baseRSS int64         // VmRSS in bytes right after ready
}

// freePort returns a currently-free loopback TCP port.
// (It is released before the server binds it; a race is possible but rare.)
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startServer execs a fresh server of target t with an item memory limit of
// memMB and waits until it answers "version". On error everything it
// created is already cleaned up.
func startServer(ctx context.Context, t target, memMB int) (*server, error) {
	root, err := os.MkdirTemp("", "cachebench-"+t.name+"-")
	if err != nil {
		return nil, err
	}
	port, err := freePort()
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

	argv := append(append([]string{}, t.argv...),
		"-p", strconv.Itoa(port), "-l", "127.0.0.1", "-U", "0", "-u", "root",
		"-m", strconv.Itoa(memMB), "-c", "4096")
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// If cachebench dies, the kernel kills the server too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	s := &server{cmd: cmd, root: root, addr: fmt.Sprintf("127.0.0.1:%d", port), exited: make(chan struct{})}

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
	s.baseRSS = s.rss()
	return s, nil
}

// waitReady polls with TCP connect + "version" until it is answered.
func (s *server) waitReady(ctx context.Context, t0 time.Time) error {
	deadline := t0.Add(readyTimeout)
	for {
		err := s.version()
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
			return fmt.Errorf("no answer to \"version\" within %v (last error: %v)", readyTimeout, err)
		}
	}
}

func (s *server) version() error {
	nc, err := net.DialTimeout("tcp", s.addr, 250*time.Millisecond)
	if err != nil {
		return err
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(time.Second))
	if _, err := nc.Write([]byte("version\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(nc).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "VERSION ") {
		return fmt.Errorf("unexpected reply %q", line)
	}
	return nil
}

// rss reads VmRSS of the server process, in bytes (0 if unavailable).
func (s *server) rss() int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb * 1024
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
