package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"substrate/bench/internal/benchkit"
	"substrate/internal/rabbitmqtest"
)

const (
	substrateReadyTimeout = 60 * time.Second
	substrateStopTimeout  = 30 * time.Second // SIGTERM grace before SIGKILL
)

// broker is a running AMQP server under test.
type broker struct {
	name  string
	addr  string        // 127.0.0.1:port
	pid   func() int    // PID whose VmRSS is the server's (beam.smp for RabbitMQ)
	ready time.Duration // exec to answering AMQP
	// problems returns the server's warning and error log lines so far.
	problems func() []string
	logTail  func() string
	stop     func() error
}

func (b *broker) url() string { return "amqp://guest:guest@" + b.addr + "/" }

// startSubstrate starts
//
//	substrate serve --services amqp,etcd --host 127.0.0.1 --data-dir ROOT/data
//	    --amqp-port P --etcd-client-port C --etcd-peer-port Q
//
// in a fresh temp dir (what an OpenStack controller runs for RabbitMQ's
// clients, minus the cache and the management HTTP server, neither of
// which RabbitMQ runs here) and waits until its AMQP port answers.
func startSubstrate(ctx context.Context, bin string) (*broker, error) {
	p, err := benchkit.Start("scalebench", "substrate", 3, substrateStopTimeout, func(root string, ports []int) []string {
		return []string{bin, "serve", "--services", "amqp,etcd", "--host", "127.0.0.1",
			"--data-dir", filepath.Join(root, "data"),
			"--amqp-port", strconv.Itoa(ports[0]),
			"--etcd-client-port", strconv.Itoa(ports[1]),
			"--etcd-peer-port", strconv.Itoa(ports[2])}
	})
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", p.Ports[0])
	if err := p.AwaitReady(ctx, substrateReadyTimeout, "AMQP on "+addr, func() error { return rabbitmqtest.ProbeAMQP(addr) }); err != nil {
		return nil, err
	}
	return &broker{
		name:  "substrate",
		addr:  addr,
		pid:   func() int { return p.Cmd.Process.Pid },
		ready: p.Ready,
		// The broker's warnings and errors: etcd, which the bench does not
		// load, logs benign ones of its own at startup ("Failed to detect
		// schema version").
		problems: func() []string {
			b, _ := os.ReadFile(filepath.Join(p.Root, "server.log"))
			var out []string
			for _, l := range strings.Split(string(b), "\n") {
				if strings.Contains(l, "service=amqp") && (strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR")) {
					out = append(out, l)
				}
			}
			return out
		},
		logTail: func() string { return p.LogTail(30) },
		stop: func() error {
			_, err := p.Stop()
			return err
		},
	}, nil
}

// clearSubstrateEnv removes the SUBSTRATE_* variables from this process's
// environment, which the substrate it starts inherits: serve reads its
// settings from them, and the bench runs it with its defaults and flags
// only. It returns the removed KEY=VALUE pairs.
func clearSubstrateEnv() []string {
	var gone []string
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "SUBSTRATE_") {
			os.Unsetenv(k)
			gone = append(gone, kv)
		}
	}
	return gone
}

// startRabbit starts Debian's rabbitmq-server 3.10.8 as rabbitmqtest does
// for the integration tests: as the rabbitmq user, with its own node name,
// epmd, cookie, data and free loopback ports, no plugins, default limits
// (its Erlang process limit, 1,048,576, and its connection limit, none, are
// far above what the bench opens). RLIMIT_NOFILE is inherited from this
// process (see setNoFile).
func startRabbit(ctx context.Context) (*broker, error) {
	t0 := time.Now()
	r, err := rabbitmqtest.Start(ctx, rabbitmqtest.Options{Name: "scalebench", LogLevel: "warning", Poll: 50 * time.Millisecond})
	if err != nil {
		return nil, err
	}
	b := &broker{
		name:     "rabbitmq",
		addr:     r.Addr,
		pid:      r.BeamPID,
		ready:    time.Since(t0),
		problems: func() []string { return nil },
		logTail:  func() string { return rabbitmqtest.LastLines(r.Logs(30), 30) },
		stop: func() error {
			_, err := r.Stop()
			return err
		},
	}
	if b.pid() == 0 {
		tail := b.logTail()
		r.Stop()
		return nil, fmt.Errorf("cannot find the beam.smp process under rabbitmq-server\n%s", tail)
	}
	return b, nil
}

// wantNoFile is the RLIMIT_NOFILE the bench asks for: what Debian's
// rabbitmq-server.service sets (LimitNOFILE=65536).
const wantNoFile = 65536

// setNoFile raises this process's RLIMIT_NOFILE soft limit to wantNoFile
// (or the hard limit if lower); both servers, started as children, inherit
// it. It returns the new soft limit, or an error when it is below need
// (the bench holds about two descriptors per AMQP connection at most: its
// own socket, plus the server's when the server is a child).
func setNoFile(need int) (uint64, error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, err
	}
	rl.Cur = min(uint64(wantNoFile), rl.Max)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, err
	}
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, err
	}
	if rl.Cur < uint64(need) {
		return rl.Cur, fmt.Errorf("RLIMIT_NOFILE is %d (hard limit %d); this shape needs about %d: raise the hard limit (ulimit -Hn) or use fewer connections", rl.Cur, rl.Max, need)
	}
	return rl.Cur, nil
}
