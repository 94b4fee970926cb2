package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"substrate/bench/internal/benchkit"
	"substrate/internal/rabbitmqtest"
)

const (
	substrateReadyTimeout = 60 * time.Second
	stopTimeout           = 20 * time.Second      // substrate's SIGTERM grace period before SIGKILL
	amqpPoll              = 50 * time.Millisecond // how often a starting server's AMQP port is probed
)

// broker is a running AMQP server under test.
type broker struct {
	name  string
	addr  string        // 127.0.0.1:port
	pid   func() int    // PID whose VmRSS is the server's (beam.smp for RabbitMQ)
	ready time.Duration // exec to answering AMQP
	logs  func() string // recent output, for failure messages
	// problems returns the server's warning/error log lines seen so far.
	problems func() []string
	stop     func() (time.Duration, error)
	// fsyncs reads the server's cumulative fsync count (see persist.go).
	fsyncs fsyncReader
}

func (b *broker) url() string { return "amqp://guest:guest@" + b.addr + "/" }

// ---------------------------------------------------------------------------
// substrate

// startSubstrate starts
//
//	substrate serve --services amqp,etcd,http --host 127.0.0.1 --data-dir DIR
//	    --amqp-port P --etcd-client-port C --etcd-peer-port Q --http-port H
//
// in a fresh temp dir and waits for msg="substrate ready" and for AMQP on P.
// The management HTTP service (http) is there for /metrics (the message
// store's fsync counter); it costs no measurable RSS.
func startSubstrate(ctx context.Context, bin string) (*broker, error) {
	root, err := os.MkdirTemp("", "amqpbench-substrate-")
	if err != nil {
		return nil, err
	}
	ports, err := benchkit.FreePorts(4)
	if err != nil {
		os.RemoveAll(root)
		return nil, err
	}
	args := []string{"serve", "--services", "amqp,etcd,http", "--host", "127.0.0.1", "--data-dir", filepath.Join(root, "data"),
		"--amqp-port", strconv.Itoa(ports[0]), "--etcd-client-port", strconv.Itoa(ports[1]),
		"--etcd-peer-port", strconv.Itoa(ports[2]), "--http-port", strconv.Itoa(ports[3])}
	cmd := exec.Command(bin, args...)
	cmd.Dir = root
	// If amqpbench dies, the kernel stops the server too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw

	var out rabbitmqtest.Tail
	var probMu sync.Mutex
	var probs []string
	readyCh, exited := make(chan struct{}), make(chan struct{})
	var waitErr error
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		os.RemoveAll(root)
		return nil, fmt.Errorf("start substrate: %w", err)
	}
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64*1024), 1<<20)
		var once sync.Once
		for sc.Scan() {
			line := sc.Text()
			out.Write([]byte(line + "\n"))
			if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
				probMu.Lock()
				probs = append(probs, line)
				probMu.Unlock()
			}
			if strings.Contains(line, `msg="substrate ready"`) {
				once.Do(func() { close(readyCh) })
			}
		}
		io.Copy(io.Discard, pr)
	}()
	go func() { waitErr = cmd.Wait(); pw.Close(); close(exited) }()

	b := &broker{
		name: "substrate",
		addr: fmt.Sprintf("127.0.0.1:%d", ports[0]),
		pid:  func() int { return cmd.Process.Pid },
		logs: func() string { return rabbitmqtest.LastLines(out.String(), 40) },
		problems: func() []string {
			probMu.Lock()
			defer probMu.Unlock()
			return append([]string(nil), probs...)
		},
		fsyncs: substrateFsyncs(fmt.Sprintf("http://127.0.0.1:%d/metrics", ports[3])),
	}
	b.stop = func() (time.Duration, error) {
		defer os.RemoveAll(root)
		t0 := time.Now()
		select {
		case <-exited:
			return 0, fmt.Errorf("substrate had already exited: %v", waitErr)
		default:
		}
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
			return time.Since(t0), nil
		case <-time.After(stopTimeout):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
			return time.Since(t0), fmt.Errorf("substrate did not exit within %v of SIGTERM; killed", stopTimeout)
		}
	}
	fail := func(err error) (*broker, error) {
		b.stop()
		return nil, fmt.Errorf("substrate not ready: %v\n--- substrate output tail ---\n%s", err, rabbitmqtest.LastLines(out.String(), 30))
	}
	select {
	case <-readyCh:
	case <-exited:
		return fail(fmt.Errorf("exited: %v", waitErr))
	case <-ctx.Done():
		return fail(ctx.Err())
	case <-time.After(substrateReadyTimeout):
		return fail(fmt.Errorf("no ready line within %v", substrateReadyTimeout))
	}
	wctx, cancel := context.WithTimeout(ctx, substrateReadyTimeout)
	defer cancel()
	if err := rabbitmqtest.WaitAMQP(wctx, b.addr, exited, amqpPoll); err != nil {
		return fail(err)
	}
	b.ready = time.Since(t0)
	return b, nil
}

// ---------------------------------------------------------------------------
// rabbitmq: Debian's rabbitmq-server, started by rabbitmqtest as
// integration/amqp does

// startRabbit starts rabbitmq-server as the rabbitmq user with its node
// name, ports (AMQP, distribution, rabbitmqctl, epmd), epmd, cookie and data
// private to this run, all on 127.0.0.1, no plugins, and waits until
// `rabbitmqctl await_startup` succeeds. The file-descriptor limit
// (RLIMIT_NOFILE) is inherited from this process, which set it to nofile at
// start-up.
func startRabbit(ctx context.Context) (*broker, error) {
	t0 := time.Now()
	r, err := rabbitmqtest.Start(ctx, rabbitmqtest.Options{Name: "amqpbench", LogLevel: "warning", Poll: amqpPoll})
	if err != nil {
		return nil, err
	}
	b := &broker{
		name:     "rabbitmq",
		addr:     r.Addr,
		pid:      r.BeamPID,
		ready:    time.Since(t0),
		logs:     func() string { return rabbitmqtest.LastLines(r.Logs(40), 40) },
		problems: func() []string { return nil },
		stop:     r.Stop,
		fsyncs:   rabbitFsyncs(r),
	}
	if b.pid() == 0 {
		logs := b.logs()
		r.Stop()
		return nil, errors.New("cannot find the beam.smp process under rabbitmq-server\nrabbitmq output:\n" + logs)
	}
	return b, nil
}

// nofile is the RLIMIT_NOFILE both servers run with: what Debian's
// rabbitmq-server.service sets (LimitNOFILE=65536). Not the hard limit,
// which may be 1M and makes the Erlang VM size its poll set accordingly.
const nofile = 65536

// setNoFile sets this process's RLIMIT_NOFILE soft limit to nofile (or the
// hard limit if lower); children (both servers) inherit it. It returns the
// new soft limit.
func setNoFile() uint64 {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0
	}
	rl.Cur = min(uint64(nofile), rl.Max)
	syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl)
	return rl.Cur
}
