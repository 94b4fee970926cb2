package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
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
	"time"
)

const (
	substrateReadyTimeout = 60 * time.Second
	rabbitReadyTimeout    = 120 * time.Second
	stopTimeout           = 20 * time.Second // SIGTERM grace period before SIGKILL
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
}

func (b *broker) url() string { return "amqp://guest:guest@" + b.addr + "/" }

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

// waitAMQP waits until addr answers the AMQP 0-9-1 protocol header with
// connection.start, or until ctx ends or exited is closed.
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
		case <-time.After(50 * time.Millisecond):
		}
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

// ---------------------------------------------------------------------------
// substrate

// startSubstrate starts
//
//	substrate serve --services amqp,etcd --host 127.0.0.1 --data-dir DIR
//	    --amqp-port P --etcd-client-port C --etcd-peer-port Q --http-port H
//
// in a fresh temp dir and waits for msg="substrate ready" and for AMQP on P.
func startSubstrate(ctx context.Context, bin string) (*broker, error) {
	root, err := os.MkdirTemp("", "amqpbench-substrate-")
	if err != nil {
		return nil, err
	}
	ports, err := freePorts(4)
	if err != nil {
		os.RemoveAll(root)
		return nil, err
	}
	args := []string{"serve", "--services", "amqp,etcd", "--host", "127.0.0.1", "--data-dir", filepath.Join(root, "data"),
		"--amqp-port", strconv.Itoa(ports[0]), "--etcd-client-port", strconv.Itoa(ports[1]),
		"--etcd-peer-port", strconv.Itoa(ports[2]), "--http-port", strconv.Itoa(ports[3])}
	cmd := exec.Command(bin, args...)
	cmd.Dir = root
	// If amqpbench dies, the kernel stops the server too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw

	var out tail
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
		logs: func() string { return lastLines(out.String(), 40) },
		problems: func() []string {
			probMu.Lock()
			defer probMu.Unlock()
			return append([]string(nil), probs...)
		},
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
		return nil, fmt.Errorf("substrate not ready: %v\n--- substrate output tail ---\n%s", err, lastLines(out.String(), 30))
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
	if err := waitAMQP(wctx, b.addr, exited); err != nil {
		return fail(err)
	}
	b.ready = time.Since(t0)
	return b, nil
}

// ---------------------------------------------------------------------------
// rabbitmq: Debian's rabbitmq-server (as in integration/amqp/harness_test.go)

const (
	rabbitWrapper      = "/usr/sbin/rabbitmq-server"
	rabbitServerScript = "/usr/lib/rabbitmq/bin/rabbitmq-server"
	rabbitCtlScript    = "/usr/lib/rabbitmq/bin/rabbitmqctl"
	epmdBinary         = "/usr/bin/epmd"
)

type rabbit struct {
	dir    string
	node   string
	env    []string
	cred   *syscall.Credential
	cmd    *exec.Cmd
	out    tail
	exited chan struct{}
	epmd   *exec.Cmd // our own epmd, so that it goes when we do
	ctlMu  sync.Mutex
}

// rabbitAvailable returns "" if rabbitmq-server can be run here, else why not.
func rabbitAvailable() string {
	for _, f := range []string{rabbitWrapper, rabbitServerScript, rabbitCtlScript, epmdBinary} {
		if _, err := os.Stat(f); err != nil {
			return "rabbitmq-server is not installed (" + f + ")"
		}
	}
	u, err := user.Lookup("rabbitmq")
	if err != nil {
		return "no rabbitmq user: " + err.Error()
	}
	if uid, _ := strconv.Atoi(u.Uid); os.Getuid() != 0 && os.Getuid() != uid {
		return "rabbitmq-server must be started as root or as the rabbitmq user"
	}
	return ""
}

// startRabbit starts rabbitmq-server as the rabbitmq user with its node
// name, ports (AMQP, distribution, rabbitmqctl, epmd), epmd, cookie and data
// private to this run, all on 127.0.0.1, no plugins, and waits until
// `rabbitmqctl await_startup` succeeds.
func startRabbit(ctx context.Context) (*broker, error) {
	r := &rabbit{exited: make(chan struct{})}
	u, _ := user.Lookup("rabbitmq")
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if os.Getuid() == 0 {
		r.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	b := &broker{name: "rabbitmq", logs: func() string { return lastLines(r.logs(), 40) }}
	b.stop = r.stop
	b.problems = func() []string { return nil }
	t0 := time.Now()
	if err := r.start(ctx, b); err != nil {
		msg := err.Error()
		if r.dir != "" {
			msg += "\n--- rabbitmq output tail ---\n" + lastLines(r.logs(), 40)
		}
		r.stop()
		return nil, errors.New(msg)
	}
	b.ready = time.Since(t0)
	b.pid = r.beamPID
	return b, nil
}

func (r *rabbit) start(ctx context.Context, b *broker) error {
	var err error
	if r.dir, err = os.MkdirTemp("", "amqpbench-rabbitmq-"); err != nil {
		return err
	}
	// MkdirTemp makes 0700 directories; the rabbitmq user must traverse them.
	if err := os.Chmod(r.dir, 0o755); err != nil {
		return err
	}
	for _, d := range []string{"home", "mnesia", "log"} {
		if err := os.Mkdir(filepath.Join(r.dir, d), 0o755); err != nil {
			return err
		}
	}
	ports, err := freePorts(4)
	if err != nil {
		return err
	}
	b.addr = fmt.Sprintf("127.0.0.1:%d", ports[0])
	files := map[string]string{
		"enabled_plugins":     "[].\n", // no management plugin
		"rabbitmq.conf":       "log.console = false\nlog.file.level = warning\n",
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
	r.node = "amqpbench" + strconv.Itoa(os.Getpid()) + "@localhost"
	loopbackDist := "-kernel inet_dist_use_interface {127,0,0,1}"
	r.env = []string{
		"PATH=/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=" + filepath.Join(r.dir, "home"),
		"LANG=C.UTF-8",
		"LC_ALL=C.UTF-8",
		"RABBITMQ_NODENAME=" + r.node,
		"RABBITMQ_NODE_IP_ADDRESS=127.0.0.1",
		"RABBITMQ_NODE_PORT=" + strconv.Itoa(ports[0]),
		"RABBITMQ_DIST_PORT=" + strconv.Itoa(ports[1]),
		"RABBITMQ_CTL_DIST_PORT_MIN=" + strconv.Itoa(ports[2]),
		"RABBITMQ_CTL_DIST_PORT_MAX=" + strconv.Itoa(ports[2]),
		"ERL_EPMD_PORT=" + strconv.Itoa(ports[3]),
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
	// Our own epmd in the foreground on a private port: erl would otherwise
	// start a daemon one that outlives this run.
	r.epmd = exec.Command(epmdBinary, "-port", strconv.Itoa(ports[3]), "-address", "127.0.0.1")
	r.epmd.Env = r.env
	r.epmd.Stdout, r.epmd.Stderr = &r.out, &r.out
	r.epmd.SysProcAttr = &syscall.SysProcAttr{Credential: r.cred, Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := r.epmd.Start(); err != nil {
		r.epmd = nil
		return fmt.Errorf("starting epmd: %w", err)
	}
	if err := waitTCP(fmt.Sprintf("127.0.0.1:%d", ports[3]), 10*time.Second); err != nil {
		return fmt.Errorf("epmd: %w", err)
	}

	// The file-descriptor limit (RLIMIT_NOFILE) is inherited from this
	// process, which set it to nofile at start-up.
	r.cmd = exec.Command(rabbitServerScript)
	r.cmd.Dir = r.dir
	r.cmd.Env = r.env
	r.cmd.Stdout, r.cmd.Stderr = &r.out, &r.out
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: r.cred, Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := r.cmd.Start(); err != nil {
		return fmt.Errorf("starting rabbitmq-server: %w", err)
	}
	go func() { r.cmd.Wait(); close(r.exited) }()

	wctx, cancel := context.WithTimeout(ctx, rabbitReadyTimeout)
	defer cancel()
	if err := waitAMQP(wctx, b.addr, r.exited); err != nil {
		return err
	}
	// The listener opens before boot is complete.
	if out, err := r.ctl(wctx, "await_startup", "--timeout", "60"); err != nil {
		return fmt.Errorf("rabbitmqctl await_startup: %v\n%s", err, out)
	}
	if r.beamPID() == 0 {
		return errors.New("cannot find the beam.smp process under rabbitmq-server")
	}
	return nil
}

// beamPID finds the beam.smp process in the tree under rabbitmq-server
// (0 if none).
func (r *rabbit) beamPID() int {
	root := r.cmd.Process.Pid
	children := map[int][]int{}
	comm := map[int]string{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		s := string(b)
		i, j := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if i < 0 || j < i {
			continue
		}
		f := strings.Fields(s[j+1:])
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		children[ppid] = append(children[ppid], pid)
		comm[pid] = s[i+1 : j]
	}
	queue := []int{root}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if strings.HasPrefix(comm[p], "beam") {
			return p
		}
		queue = append(queue, children[p]...)
	}
	return 0
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
		s += "\n== " + filepath.Base(m) + "\n" + lastLines(string(b), 40)
	}
	return s
}

// stop shuts the node down (rabbitmqctl stop, then SIGTERM and SIGKILL to
// the process group started here), stops our epmd and removes the directory.
func (r *rabbit) stop() (time.Duration, error) {
	t0 := time.Now()
	var err error
	if r.cmd != nil && r.cmd.Process != nil {
		select {
		case <-r.exited:
		default:
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			r.ctl(ctx, "stop")
			cancel()
			select {
			case <-r.exited:
			case <-time.After(stopTimeout):
				err = errors.New("rabbitmq did not stop; sent SIGTERM to its process group")
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
	return time.Since(t0), err
}

// rssOf reads VmRSS of pid, in bytes (0 if unavailable).
func rssOf(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
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
