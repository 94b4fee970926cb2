package benchkit

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"substrate/internal/rabbitmqtest"
)

// FreePorts returns n distinct currently-free loopback TCP ports.
// (They are released before the server binds them; a race is possible but rare.)
func FreePorts(n int) ([]int, error) { return rabbitmqtest.FreePorts(n) }

// Proc is a server process started by Start, plus its temp directory.
type Proc struct {
	Name  string
	Cmd   *exec.Cmd
	Root  string        // temp dir holding server.log (and whatever the server writes)
	Ports []int         // free loopback ports picked for it
	Ready time.Duration // exec to the first successful probe (set by AwaitReady)

	started     time.Time
	stopTimeout time.Duration
	exited      chan struct{} // closed when the process has exited
	waitErr     error         // valid after exited is closed
}

// Start creates a temp dir "PREFIX-NAME-*", picks nPorts free loopback
// ports and execs argv(root, ports) with stdout and stderr going to
// ROOT/server.log. The kernel kills the server (SIGKILL) if this process
// dies. Stop gives it stopTimeout after SIGTERM before SIGKILL. On error
// everything it created is already cleaned up.
func Start(prefix, name string, nPorts int, stopTimeout time.Duration, argv func(root string, ports []int) []string) (*Proc, error) {
	root, err := os.MkdirTemp("", prefix+"-"+name+"-")
	if err != nil {
		return nil, err
	}
	ports, err := FreePorts(nPorts)
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

	args := argv(root, ports)
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// If the benchmark dies, the kernel kills the server too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p := &Proc{Name: name, Cmd: cmd, Root: root, Ports: ports, stopTimeout: stopTimeout, exited: make(chan struct{})}

	p.started = time.Now()
	if err := cmd.Start(); err != nil {
		os.RemoveAll(root)
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() { p.waitErr = cmd.Wait(); close(p.exited) }()
	return p, nil
}

// AwaitReady calls probe every 5 ms until it succeeds, then sets p.Ready.
// It gives up when the process exits, ctx ends, or timeout after exec has
// passed ("no WHAT within TIMEOUT (last error: ...)"); then it stops p and
// returns NotReady's error.
func (p *Proc) AwaitReady(ctx context.Context, timeout time.Duration, what string, probe func() error) error {
	deadline := p.started.Add(timeout)
	for {
		err := probe()
		if err == nil {
			p.Ready = time.Since(p.started)
			return nil
		}
		select {
		case <-p.exited:
			return p.NotReady(fmt.Errorf("process exited: %v", p.waitErr))
		case <-ctx.Done():
			return p.NotReady(ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return p.NotReady(fmt.Errorf("no %s within %v (last error: %v)", what, timeout, err))
		}
	}
}

// NotReady stops p and returns err with the tail of the server's log.
func (p *Proc) NotReady(err error) error {
	tail := p.LogTail(15)
	p.Stop()
	return fmt.Errorf("%s not ready: %v\n--- %s log tail ---\n%s", p.Name, err, p.Name, tail)
}

// Stop sends SIGTERM to the server's PID, SIGKILL after the stop timeout,
// and removes its temp dir. It returns how long the process took to exit.
func (p *Proc) Stop() (time.Duration, error) {
	defer os.RemoveAll(p.Root)
	t0 := time.Now()
	select {
	case <-p.exited:
		return 0, errors.New("already exited")
	default:
	}
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return time.Since(t0), nil
	case <-time.After(p.stopTimeout):
		_ = p.Cmd.Process.Kill()
		<-p.exited
		return time.Since(t0), fmt.Errorf("did not exit within %v of SIGTERM; killed", p.stopTimeout)
	}
}

// LogTail returns the last n lines of the server's output.
func (p *Proc) LogTail(n int) string {
	b, _ := os.ReadFile(filepath.Join(p.Root, "server.log"))
	return rabbitmqtest.LastLines(string(b), n)
}

// RSS reads VmRSS (resident set) of pid, in bytes (0 if unavailable).
func RSS(pid int) int64 { return procStatusKB(pid, "VmRSS:") * 1024 }

// PeakRSS reads VmHWM (peak resident set) of pid, in bytes (0 if unavailable).
func PeakRSS(pid int) int64 { return procStatusKB(pid, "VmHWM:") * 1024 }

// procStatusKB returns the value of a kB field of /proc/PID/status.
func procStatusKB(pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == field {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb
		}
	}
	return 0
}
