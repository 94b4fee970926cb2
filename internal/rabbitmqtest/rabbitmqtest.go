// Package rabbitmqtest starts and stops a private instance of Debian's
// rabbitmq-server (3.10.8) for tests and benchmarks, and holds the small
// helpers that drive it and other AMQP brokers started as child processes
// (free loopback ports, AMQP readiness probe, bounded output buffer).
//
// The server runs as the rabbitmq user (Debian's /usr/sbin wrapper would
// `su` to it; switching here instead keeps the server a direct child whose
// PID we hold) with its node name, ports, epmd and data private to the run,
// so that it can run next to a system RabbitMQ or another run:
//
//   - AMQP, Erlang distribution, epmd and rabbitmqctl's distribution ports
//     are all free loopback ports picked at start; everything listens on
//     127.0.0.1 only.
//   - No plugins (so no management listener on 15672).
//   - HOME is the temp dir, so the Erlang cookie is private too.
//
// It must run as root or as the rabbitmq user; see Available.
package rabbitmqtest

import (
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

	"substrate/internal/freeport"
)

// Debian's rabbitmq-server and Erlang files.
const (
	Wrapper      = "/usr/sbin/rabbitmq-server" // Debian's wrapper; checked for, never run
	ServerScript = "/usr/lib/rabbitmq/bin/rabbitmq-server"
	CtlScript    = "/usr/lib/rabbitmq/bin/rabbitmqctl"
	DiagScript   = "/usr/lib/rabbitmq/bin/rabbitmq-diagnostics"
	EpmdBinary   = "/usr/bin/epmd"
)

const (
	readyTimeout = 120 * time.Second // exec to AMQP plus await_startup and Options.Ctl
	stopTimeout  = 20 * time.Second  // after `rabbitmqctl stop`, before SIGTERM to the group
	termTimeout  = 10 * time.Second  // after SIGTERM to the group, before SIGKILL
	ctlTimeout   = 60 * time.Second  // per rabbitmqctl command
)

// Options configure Start.
type Options struct {
	// Name prefixes the temp dir ("NAME-rabbitmq-*") and the node name
	// ("NAME<pid>@localhost").
	Name string
	// LogLevel is rabbitmq.conf's log.file.level ("info", "warning", ...).
	LogLevel string
	// Poll is how often the AMQP port is probed while the server boots.
	Poll time.Duration
	// Ctl are rabbitmqctl commands (without "-n NODE") run after
	// `rabbitmqctl await_startup` succeeded, within the start timeout.
	Ctl [][]string
	// Files are written into the node's directory before it starts
	// (mode 0600 for names ending in "key.pem", else 0644), owned by the
	// user it runs as: certificates for Conf, say.
	Files map[string][]byte
	// Conf is appended to rabbitmq.conf; "{dir}" in it stands for the
	// node's directory, where Files are.
	Conf string
	// Plugins are the plugins to enable (none by default), such as
	// rabbitmq_auth_mechanism_ssl.
	Plugins []string
}

// Server is a running rabbitmq-server started by Start.
type Server struct {
	Addr      string    // 127.0.0.1:Port, AMQP
	Port      int       // AMQP port
	Node      string    // Erlang node name
	StartedAt time.Time // when rabbitmq-server was exec'd

	dir      string
	env      []string
	cred     *syscall.Credential
	cmd      *exec.Cmd
	out      Tail
	exited   chan struct{}
	epmdPort int
	epmd     *exec.Cmd  // our own epmd, so that it goes when we do
	ctlMu    sync.Mutex // one rabbitmqctl at a time: they share one dist port
	stopOnce sync.Once
	stopDur  time.Duration
	stopErr  error
}

// Available returns "" if rabbitmq-server can be started here, else why not
// (not installed, no rabbitmq user, or running as neither root nor that user).
func Available() string {
	_, why := credential()
	return why
}

// credential returns the credential to run the server with (nil: as this
// process) or why it cannot be run.
func credential() (*syscall.Credential, string) {
	for _, f := range []string{Wrapper, ServerScript, CtlScript, EpmdBinary} {
		if _, err := os.Stat(f); err != nil {
			return nil, "rabbitmq-server is not installed (" + f + ")"
		}
	}
	u, err := user.Lookup("rabbitmq")
	if err != nil {
		return nil, "no rabbitmq user: " + err.Error()
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if os.Getuid() == 0 {
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, ""
	} else if os.Getuid() != uid {
		return nil, "rabbitmq-server must be started as root or as the rabbitmq user"
	}
	return nil, ""
}

// Start starts rabbitmq-server with its own epmd, cookie, ports and data in
// a fresh temp dir, waits until it answers AMQP and `rabbitmqctl
// await_startup` succeeds (at most 120 s, or until ctx ends), then runs
// opts.Ctl. On error everything is already stopped and removed, and the
// error includes the tail of the server's output and logs. Cancelling ctx
// during the start kills the node (SIGTERM to its process group) instead
// of stopping it gracefully, so that an unneeded node goes at once.
func Start(ctx context.Context, opts Options) (*Server, error) {
	cred, why := credential()
	if why != "" {
		return nil, errors.New(why)
	}
	r := &Server{cred: cred, exited: make(chan struct{})}
	if err := r.start(ctx, opts); err != nil {
		msg := err.Error()
		if r.dir != "" {
			msg += "\nrabbitmq output:\n" + LastLines(r.Logs(40), 40)
		}
		if errors.Is(ctx.Err(), context.Canceled) {
			// Nobody wants this node any more: no graceful stop (which
			// waits 20 s for a node still booting).
			r.terminate()
		}
		r.Stop()
		return nil, errors.New(msg)
	}
	return r, nil
}

func (r *Server) start(ctx context.Context, opts Options) error {
	var err error
	if r.dir, err = os.MkdirTemp("", opts.Name+"-rabbitmq-"); err != nil {
		return err
	}
	// MkdirTemp makes 0700 directories; the rabbitmq user must traverse
	// and own them. Its parent (TMPDIR, usually /tmp) must be traversable.
	if err := os.Chmod(r.dir, 0o755); err != nil {
		return err
	}
	home := filepath.Join(r.dir, "home")
	for _, d := range []string{"home", "mnesia", "log"} {
		if err := os.Mkdir(filepath.Join(r.dir, d), 0o755); err != nil {
			return err
		}
	}
	ports, err := FreePorts(4)
	if err != nil {
		return err
	}
	r.Port = ports[0]
	r.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(r.Port))
	distPort, ctlPort := ports[1], ports[2]
	r.epmdPort = ports[3]
	files := map[string]string{
		// no management plugin, so no 15672/15692 listeners
		"enabled_plugins":     "[" + strings.Join(opts.Plugins, ",") + "].\n",
		"rabbitmq.conf":       "log.console = false\nlog.file.level = " + opts.LogLevel + "\n" + strings.ReplaceAll(opts.Conf, "{dir}", r.dir) + "\n",
		"home/.erlang.cookie": strings.ToUpper(RandomHex(10)),
	}
	for name, content := range opts.Files {
		files[name] = string(content)
	}
	for name, content := range files {
		mode := os.FileMode(0o644)
		switch {
		case strings.HasSuffix(name, "cookie"):
			mode = 0o400
		case strings.HasSuffix(name, "key.pem"):
			mode = 0o600
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
	r.Node = opts.Name + strconv.Itoa(os.Getpid()) + "@localhost"
	loopbackDist := "-kernel inet_dist_use_interface {127,0,0,1}"
	r.env = []string{
		"PATH=/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=" + home,
		"LANG=C.UTF-8",
		"LC_ALL=C.UTF-8",
		"RABBITMQ_NODENAME=" + r.Node,
		"RABBITMQ_NODE_IP_ADDRESS=127.0.0.1",
		"RABBITMQ_NODE_PORT=" + strconv.Itoa(r.Port),
		"RABBITMQ_DIST_PORT=" + strconv.Itoa(distPort),
		"RABBITMQ_CTL_DIST_PORT_MIN=" + strconv.Itoa(ctlPort),
		"RABBITMQ_CTL_DIST_PORT_MAX=" + strconv.Itoa(ctlPort),
		"ERL_EPMD_PORT=" + strconv.Itoa(r.epmdPort),
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
	// Run epmd ourselves, in the foreground on the private port: erl would
	// otherwise start a daemon one that outlives this run.
	r.epmd = exec.Command(EpmdBinary, "-port", strconv.Itoa(r.epmdPort), "-address", "127.0.0.1")
	r.epmd.Env = r.env
	r.epmd.Stdout, r.epmd.Stderr = &r.out, &r.out
	r.epmd.SysProcAttr = &syscall.SysProcAttr{Credential: r.cred, Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := r.epmd.Start(); err != nil {
		r.epmd = nil
		return fmt.Errorf("starting epmd: %w", err)
	}
	if err := WaitTCP(net.JoinHostPort("127.0.0.1", strconv.Itoa(r.epmdPort)), 10*time.Second); err != nil {
		return fmt.Errorf("epmd: %w", err)
	}

	// The file-descriptor limit (RLIMIT_NOFILE) is inherited from this
	// process.
	r.cmd = exec.Command(ServerScript)
	r.cmd.Dir = r.dir
	r.cmd.Env = r.env
	r.cmd.Stdout, r.cmd.Stderr = &r.out, &r.out
	// Pdeathsig: if this process dies (say, go test -timeout), the wrapper
	// script gets SIGTERM and stops the Erlang VM.
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: r.cred, Setpgid: true, Pdeathsig: syscall.SIGTERM}
	r.StartedAt = time.Now()
	if err := r.cmd.Start(); err != nil {
		return fmt.Errorf("starting rabbitmq-server: %w", err)
	}
	go func() { r.cmd.Wait(); close(r.exited) }()

	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	if err := WaitAMQP(ctx, r.Addr, r.exited, opts.Poll); err != nil {
		return err
	}
	// The listener opens before boot is complete; await_startup makes the
	// CLI commands below reliable.
	for _, args := range append([][]string{{"await_startup", "--timeout", "60"}}, opts.Ctl...) {
		if out, err := r.Ctl(ctx, args...); err != nil {
			return fmt.Errorf("rabbitmqctl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	return nil
}

// Ctl runs rabbitmqctl against the node, as the rabbitmq user with the
// node's private HOME (cookie) and ports, for at most 60 s. It returns the
// combined output.
func (r *Server) Ctl(ctx context.Context, args ...string) (string, error) {
	r.ctlMu.Lock()
	defer r.ctlMu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, ctlTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, CtlScript, append([]string{"-n", r.Node}, args...)...)
	cmd.Dir = r.dir
	cmd.Env = r.env
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: r.cred}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// CLI runs one of RabbitMQ's CLI scripts (CtlScript, DiagScript) against
// the node as Ctl does, with stdin as its input, and returns its stdout,
// stderr and exit code apart; err is set only if it could not run.
func (r *Server) CLI(ctx context.Context, script string, stdin io.Reader, args ...string) (stdout, stderr string, code int, err error) {
	r.ctlMu.Lock()
	defer r.ctlMu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, ctlTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, script, append([]string{"-n", r.Node}, args...)...)
	cmd.Dir = r.dir
	cmd.Env = r.env
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: r.cred}
	cmd.Stdin = stdin
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	if err == nil {
		return o.String(), e.String(), 0, nil
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.Exited() {
		return o.String(), e.String(), ee.ExitCode(), nil
	}
	return o.String(), e.String(), -1, err
}

// Logs returns the server's (and epmd's) output followed by the last n
// lines of each of its log files.
func (r *Server) Logs(n int) string {
	s := r.out.String()
	matches, _ := filepath.Glob(filepath.Join(r.dir, "log", "*.log"))
	for _, m := range matches {
		b, _ := os.ReadFile(m)
		s += "\n== " + filepath.Base(m) + "\n" + LastLines(string(b), n)
	}
	return s
}

// Stop shuts the node down (rabbitmqctl stop; 20 s later SIGTERM, and 10 s
// after that SIGKILL, to the process group started here), stops our epmd
// and removes the directory. It returns how long that took, and an error if
// the node did not stop by itself. Later calls return the first result.
func (r *Server) Stop() (time.Duration, error) {
	r.stopOnce.Do(func() { r.stopDur, r.stopErr = r.stop() })
	return r.stopDur, r.stopErr
}

func (r *Server) stop() (time.Duration, error) {
	t0 := time.Now()
	var err error
	if r.cmd != nil && r.cmd.Process != nil {
		select {
		case <-r.exited:
		default:
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			r.Ctl(ctx, "stop")
			cancel()
			select {
			case <-r.exited:
			case <-time.After(stopTimeout):
				err = errors.New("rabbitmq did not stop; sent SIGTERM to its process group")
				syscall.Kill(-r.cmd.Process.Pid, syscall.SIGTERM)
				select {
				case <-r.exited:
				case <-time.After(termTimeout):
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

// terminate sends SIGTERM to the server's process group and waits for it
// to exit, sending SIGKILL after termTimeout.
func (r *Server) terminate() {
	if r.cmd == nil || r.cmd.Process == nil {
		return
	}
	syscall.Kill(-r.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-r.exited:
	case <-time.After(termTimeout):
		syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
		<-r.exited
	}
}

// BeamPID finds the beam.smp process (the Erlang VM, whose memory is the
// server's) in the process tree under rabbitmq-server; 0 if none.
func (r *Server) BeamPID() int { return BeamUnder(r.cmd.Process.Pid) }

// BeamUnder finds a beam process (the Erlang VM) in the process tree
// under root, the rabbitmq-server script a caller started; 0 if none.
func BeamUnder(root int) int {
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

// ---------------------------------------------------------------------------
// helpers for brokers run as child processes

// FreePorts returns n distinct loopback TCP ports that were free when
// checked (package freeport: from below the kernel's ephemeral range).
func FreePorts(n int) ([]int, error) { return freeport.Ports(n) }

// RandomHex returns 2n random hex digits.
func RandomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// WaitAMQP waits until addr answers the AMQP 0-9-1 protocol header with a
// frame of type 1 (method: connection.start), or until ctx ends or exited
// is closed, probing every poll.
func WaitAMQP(ctx context.Context, addr string, exited <-chan struct{}, poll time.Duration) error {
	var last error
	for {
		if last = ProbeAMQP(addr); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s does not speak AMQP: %v", addr, last)
		case <-exited:
			return fmt.Errorf("broker exited before it accepted AMQP on %s", addr)
		case <-time.After(poll):
		}
	}
}

// ProbeAMQP sends the AMQP 0-9-1 protocol header to addr and checks that
// the reply starts with a method frame on channel 0.
func ProbeAMQP(addr string) error {
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

// WaitTCP waits until addr accepts a TCP connection, for at most timeout.
func WaitTCP(addr string, timeout time.Duration) error {
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

// Tail is a bounded, concurrency-safe buffer for a child's output: past
// 1 MiB it keeps the last 512 KiB. The zero value is ready to use.
type Tail struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Tail) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	if b.buf.Len() > 1<<20 {
		keep := b.buf.Bytes()[b.buf.Len()-1<<19:]
		b.buf = *bytes.NewBuffer(append([]byte(nil), keep...))
	}
	return len(p), nil
}

func (b *Tail) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// LastLines returns the last n lines of s.
func LastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
