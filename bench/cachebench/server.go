package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"substrate/bench/internal/benchkit"
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
	*benchkit.Proc
	addr    string // 127.0.0.1:port
	baseRSS int64  // VmRSS in bytes right after ready
}

// startServer execs a fresh server of target t with an item memory limit of
// memMB and waits until it answers "version". On error everything it
// created is already cleaned up.
func startServer(ctx context.Context, t target, memMB int) (*server, error) {
	p, err := benchkit.Start("cachebench", t.name, 1, stopTimeout, func(_ string, ports []int) []string {
		return append(append([]string{}, t.argv...),
			"-p", strconv.Itoa(ports[0]), "-l", "127.0.0.1", "-U", "0", "-u", "root",
			"-m", strconv.Itoa(memMB), "-c", "4096")
	})
	if err != nil {
		return nil, err
	}
	s := &server{Proc: p, addr: fmt.Sprintf("127.0.0.1:%d", p.Ports[0])}
	// Poll with TCP connect + "version" until it is answered.
	if err := s.AwaitReady(ctx, readyTimeout, `answer to "version"`, s.version); err != nil {
		return nil, err
	}
	s.baseRSS = s.rss()
	return s, nil
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
func (s *server) rss() int64 { return benchkit.RSS(s.Cmd.Process.Pid) }
