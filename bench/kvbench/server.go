package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	"substrate/bench/internal/benchkit"
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
	*benchkit.Proc
	endpoint string // 127.0.0.1:clientPort
}

// startServer execs a fresh server of target t and waits until a Get succeeds.
// On error everything it created is already cleaned up.
func startServer(ctx context.Context, t target) (*server, error) {
	p, err := benchkit.Start("kvbench", t.name, 2, stopTimeout, func(root string, ports []int) []string {
		return t.args(t.bin, filepath.Join(root, "data"), ports[0], ports[1])
	})
	if err != nil {
		return nil, err
	}
	s := &server{Proc: p, endpoint: fmt.Sprintf("127.0.0.1:%d", p.Ports[0])}
	if err := s.waitReady(ctx); err != nil {
		return nil, err
	}
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

// waitReady polls with a linearizable Get until one succeeds. On error the
// server is already stopped.
func (s *server) waitReady(ctx context.Context) error {
	cli, err := dial(s.endpoint)
	if err != nil {
		return s.NotReady(err)
	}
	defer cli.Close()
	return s.AwaitReady(ctx, readyTimeout, "successful Get", func() error {
		actx, cancel := context.WithTimeout(ctx, 250*time.Millisecond)
		defer cancel()
		_, err := cli.Get(actx, "kvbench-ready")
		return err
	})
}

// peakRSSMB reads VmHWM (peak resident set) of the server process, in MiB.
func (s *server) peakRSSMB() float64 { return benchkit.MiB(benchkit.PeakRSS(s.Cmd.Process.Pid)) }
