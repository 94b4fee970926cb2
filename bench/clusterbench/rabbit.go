package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"substrate/internal/rabbitmqtest"
)

// A three-node RabbitMQ cluster of Debian's rabbitmq-server 3.10.8, one node
// on each of 127.0.0.11-13, all private to the run:
//
//   - long node names NAME<pid>nI@127.0.0.1I (RABBITMQ_USE_LONGNAME), so
//     that no host name has to resolve to those addresses;
//   - one epmd of our own on a free port (ERL_EPMD_PORT), listening on the
//     four loopback addresses the nodes and the CLI use;
//   - the same AMQP port on every address (as substrate's nodes), a
//     distribution port of its own per node on its address, one port for
//     rabbitmqctl (its calls are serialized);
//   - one HOME, so one Erlang cookie, shared by the nodes and rabbitmqctl.
//
// Node 1 starts alone; nodes 2 and 3 then start with classic config peer
// discovery naming node 1 and join it on their first boot. A node killed
// later restarts from its own data and rejoins.

// queuesScript is RabbitMQ's rabbitmq-queues CLI.
const queuesScript = "/usr/lib/rabbitmq/bin/rabbitmq-queues"

const (
	rabbitReadyTimeout = 180 * time.Second // one node: exec to await_startup
	rabbitCtlTimeout   = 60 * time.Second  // one rabbitmqctl call
	rabbitTermTimeout  = 15 * time.Second  // SIGTERM to a node's group before SIGKILL
)

type rabbitNode struct {
	idx    int
	host   string // 127.0.0.1I
	node   string // Erlang node name
	dir    string
	env    []string
	cmd    *exec.Cmd
	out    *rabbitmqtest.Tail
	exited chan struct{}
}

type rabbitCluster struct {
	dir      string
	cred     *syscall.Credential
	port     int // AMQP, on every node's address
	epmdPort int
	ctlPort  int
	epmd     *exec.Cmd
	nodes    []*rabbitNode
	ctlMu    sync.Mutex // rabbitmqctl calls share ctlPort
}

// rabbitCredential returns the credential to run RabbitMQ with (nil: as
// this process, which is the rabbitmq user). rabbitmqtest.Available has
// checked that one of the two applies.
func rabbitCredential() (*syscall.Credential, error) {
	if os.Getuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("rabbitmq")
	if err != nil {
		return nil, err
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// startRabbitCluster starts the three nodes and returns once the cluster
// runs all three. On error everything started is stopped and removed.
func startRabbitCluster(ctx context.Context, hosts []string) (*rabbitCluster, error) {
	if why := rabbitmqtest.Available(); why != "" {
		return nil, errors.New(why)
	}
	cred, err := rabbitCredential()
	if err != nil {
		return nil, err
	}
	rc := &rabbitCluster{cred: cred}
	if err := rc.start(ctx, hosts); err != nil {
		msg := err.Error()
		for _, n := range rc.nodes {
			if n.out != nil {
				msg += fmt.Sprintf("\n--- %s output and log tail ---\n%s", n.node, rabbitmqtest.LastLines(n.logs(), 20))
			}
		}
		rc.stop()
		return nil, errors.New(msg)
	}
	return rc, nil
}

func (rc *rabbitCluster) start(ctx context.Context, hosts []string) error {
	var err error
	if rc.dir, err = os.MkdirTemp("", "clusterbench-rabbitmq-"); err != nil {
		return err
	}
	if err := os.Chmod(rc.dir, 0o755); err != nil { // the rabbitmq user traverses it
		return err
	}
	ports, err := rabbitmqtest.FreePorts(3 + len(hosts))
	if err != nil {
		return err
	}
	rc.port, rc.epmdPort, rc.ctlPort = ports[0], ports[1], ports[2]
	files := map[string]string{"home/.erlang.cookie": strings.ToUpper(rabbitmqtest.RandomHex(10))}
	prefix := fmt.Sprintf("cbench%d", os.Getpid())
	for i, h := range hosts {
		n := &rabbitNode{idx: i, host: h, node: fmt.Sprintf("%sn%d@%s", prefix, i+1, h),
			dir: filepath.Join(rc.dir, fmt.Sprintf("n%d", i+1))}
		rc.nodes = append(rc.nodes, n)
		conf := "log.console = false\nlog.file.level = warning\n"
		if i > 0 {
			conf += "cluster_formation.peer_discovery_backend = classic_config\n" +
				"cluster_formation.classic_config.nodes.1 = " + rc.nodes[0].node + "\n"
		}
		rel, _ := filepath.Rel(rc.dir, n.dir)
		files[rel+"/rabbitmq.conf"] = conf
		files[rel+"/enabled_plugins"] = "[].\n"
		for _, d := range []string{"mnesia", "log"} {
			if err := os.MkdirAll(filepath.Join(n.dir, d), 0o755); err != nil {
				return err
			}
		}
		n.env = append(rc.baseEnv(),
			"RABBITMQ_NODENAME="+n.node,
			"RABBITMQ_NODE_IP_ADDRESS="+h,
			"RABBITMQ_NODE_PORT="+strconv.Itoa(rc.port),
			"RABBITMQ_DIST_PORT="+strconv.Itoa(ports[3+i]),
			"RABBITMQ_MNESIA_BASE="+filepath.Join(n.dir, "mnesia"),
			"RABBITMQ_LOG_BASE="+filepath.Join(n.dir, "log"),
			"RABBITMQ_CONFIG_FILE="+filepath.Join(n.dir, "rabbitmq.conf"),
			"RABBITMQ_ADVANCED_CONFIG_FILE="+filepath.Join(n.dir, "advanced.config"),
			"RABBITMQ_ENABLED_PLUGINS_FILE="+filepath.Join(n.dir, "enabled_plugins"),
			"RABBITMQ_PID_FILE="+filepath.Join(n.dir, "rabbitmq.pid"),
			"RABBITMQ_CONF_ENV_FILE="+filepath.Join(n.dir, "rabbitmq-env.conf"), // absent: not /etc's
			"RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=-kernel inet_dist_use_interface "+erlIP(h),
		)
	}
	if err := os.Mkdir(filepath.Join(rc.dir, "home"), 0o755); err != nil {
		return err
	}
	for name, content := range files {
		mode := os.FileMode(0o644)
		if strings.HasSuffix(name, "cookie") {
			mode = 0o400
		}
		if err := os.WriteFile(filepath.Join(rc.dir, name), []byte(content), mode); err != nil {
			return err
		}
	}
	if rc.cred != nil {
		err := filepath.Walk(rc.dir, func(p string, _ os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			return os.Lchown(p, int(rc.cred.Uid), int(rc.cred.Gid))
		})
		if err != nil {
			return err
		}
	}

	// Our epmd, in the foreground, on every address a node name holds.
	rc.epmd = exec.Command(rabbitmqtest.EpmdBinary, "-port", strconv.Itoa(rc.epmdPort), "-address", "127.0.0.1,"+strings.Join(hosts, ","))
	rc.epmd.Env = rc.baseEnv()
	rc.epmd.SysProcAttr = &syscall.SysProcAttr{Credential: rc.cred, Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := rc.epmd.Start(); err != nil {
		rc.epmd = nil
		return fmt.Errorf("starting epmd: %w", err)
	}
	for _, h := range append([]string{"127.0.0.1"}, hosts...) {
		if err := rabbitmqtest.WaitTCP(fmt.Sprintf("%s:%d", h, rc.epmdPort), 10*time.Second); err != nil {
			return fmt.Errorf("epmd on %s: %w", h, err)
		}
	}

	// Node 1 alone, then the others join it.
	if err := rc.boot(ctx, rc.nodes[0]); err != nil {
		return err
	}
	errs := make([]error, len(rc.nodes))
	var wg sync.WaitGroup
	for _, n := range rc.nodes[1:] {
		wg.Go(func() { errs[n.idx] = rc.boot(ctx, n) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	out, err := rc.ctl(ctx, 0, "cluster_status", "--formatter", "json")
	if err != nil {
		return fmt.Errorf("rabbitmqctl cluster_status: %v: %s", err, out)
	}
	var st struct {
		Running []string `json:"running_nodes"`
	}
	if err := json.Unmarshal([]byte(jsonPart(out)), &st); err != nil {
		return fmt.Errorf("rabbitmqctl cluster_status: %v: %s", err, out)
	}
	for _, n := range rc.nodes {
		if !slices.Contains(st.Running, n.node) {
			return fmt.Errorf("the cluster did not form: running nodes %v, want all of %v", st.Running, rc.nodeNames())
		}
	}
	return nil
}

// erlIP writes a dotted IPv4 address as an Erlang tuple.
func erlIP(h string) string { return "{" + strings.ReplaceAll(h, ".", ",") + "}" }

// jsonPart drops whatever the CLI printed before its JSON.
func jsonPart(s string) string {
	if i := strings.IndexAny(s, "[{"); i >= 0 {
		return s[i:]
	}
	return s
}

func (rc *rabbitCluster) nodeNames() []string {
	var s []string
	for _, n := range rc.nodes {
		s = append(s, n.node)
	}
	return s
}

// baseEnv is the environment every node, epmd and rabbitmqctl share.
func (rc *rabbitCluster) baseEnv() []string {
	return []string{
		"PATH=/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=" + filepath.Join(rc.dir, "home"),
		"LANG=C.UTF-8",
		"LC_ALL=C.UTF-8",
		"RABBITMQ_USE_LONGNAME=true",
		"ERL_EPMD_PORT=" + strconv.Itoa(rc.epmdPort),
		"RABBITMQ_CTL_DIST_PORT_MIN=" + strconv.Itoa(rc.ctlPort),
		"RABBITMQ_CTL_DIST_PORT_MAX=" + strconv.Itoa(rc.ctlPort),
		"RABBITMQ_CTL_ERL_ARGS=-kernel inet_dist_use_interface {127,0,0,1}",
	}
}

// boot starts node n (first boot or restart) and waits until it answers
// AMQP and `rabbitmqctl await_startup` succeeds.
func (rc *rabbitCluster) boot(ctx context.Context, n *rabbitNode) error {
	n.out = &rabbitmqtest.Tail{}
	n.exited = make(chan struct{})
	n.cmd = exec.Command(rabbitmqtest.ServerScript)
	n.cmd.Dir = n.dir
	n.cmd.Env = n.env
	n.cmd.Stdout, n.cmd.Stderr = n.out, n.out
	// Its own process group (the script, beam.smp and its helpers), so
	// that a kill takes the whole node; Pdeathsig: if this process dies,
	// the script gets SIGTERM and stops the VM.
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: rc.cred, Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := n.cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", n.node, err)
	}
	exited := n.exited
	go func() { n.cmd.Wait(); close(exited) }()
	ctx, cancel := context.WithTimeout(ctx, rabbitReadyTimeout)
	defer cancel()
	if err := rabbitmqtest.WaitAMQP(ctx, rc.addr(n.idx), n.exited, 100*time.Millisecond); err != nil {
		return fmt.Errorf("%s: %w", n.node, err)
	}
	if out, err := rc.ctl(ctx, n.idx, "await_startup", "--timeout", "120"); err != nil {
		return fmt.Errorf("%s: rabbitmqctl await_startup: %v: %s", n.node, err, out)
	}
	return nil
}

func (rc *rabbitCluster) addr(i int) string {
	return fmt.Sprintf("%s:%d", rc.nodes[i].host, rc.port)
}

// ctl runs rabbitmqctl against node i as the rabbitmq user.
func (rc *rabbitCluster) ctl(ctx context.Context, i int, args ...string) (string, error) {
	return rc.cli(ctx, i, rabbitmqtest.CtlScript, args...)
}

// cli runs one of RabbitMQ's CLI scripts against node i as the rabbitmq
// user.
func (rc *rabbitCluster) cli(ctx context.Context, i int, script string, args ...string) (string, error) {
	rc.ctlMu.Lock()
	defer rc.ctlMu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, rabbitCtlTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, script, append([]string{"-n", rc.nodes[i].node}, args...)...)
	cmd.Dir = rc.dir
	cmd.Env = rc.baseEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: rc.cred}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// queueStatus is a quorum queue's leader and the members that run
// (leader or follower), from `rabbitmq-queues quorum_status`.
type queueStatus struct {
	Leader string
	Online []string
}

// queue asks node i for quorum queue q's status. (Not `rabbitmqctl
// list_queues name leader online`: it gathers from every node, and the
// other nodes cannot reach the CLI's own node, whose long name ends in this
// host's short name; quorum_status answers from node i alone.)
func (rc *rabbitCluster) queue(ctx context.Context, i int, q string) (queueStatus, error) {
	out, err := rc.cli(ctx, i, queuesScript, "quorum_status", q, "--formatter", "json")
	if err != nil {
		return queueStatus{}, fmt.Errorf("rabbitmq-queues quorum_status %s: %v: %s", q, err, out)
	}
	st, err := parseQuorumStatus(out)
	if err != nil {
		return st, fmt.Errorf("rabbitmq-queues quorum_status %s: %v: %s", q, err, out)
	}
	return st, nil
}

// parseQuorumStatus reads `rabbitmq-queues quorum_status Q --formatter
// json`: one object per member, "Raft State" "leader" or "follower" for a
// running one (an error term, a JSON array, for one that is down).
func parseQuorumStatus(out string) (queueStatus, error) {
	var members []struct {
		Node  string          `json:"Node Name"`
		State json.RawMessage `json:"Raft State"`
	}
	if err := json.Unmarshal([]byte(jsonPart(out)), &members); err != nil {
		return queueStatus{}, err
	}
	var st queueStatus
	for _, m := range members {
		var state string
		json.Unmarshal(m.State, &state)
		switch state {
		case "leader":
			st.Leader = m.Node
			st.Online = append(st.Online, m.Node)
		case "follower":
			st.Online = append(st.Online, m.Node)
		}
	}
	return st, nil
}

// nodeIndex returns the index of the node named name, or -1.
func (rc *rabbitCluster) nodeIndex(name string) int {
	for i, n := range rc.nodes {
		if n.node == name {
			return i
		}
	}
	return -1
}

// kill SIGKILLs node i: its process group (the script, beam.smp and its
// helpers, all started here), and waits for the script to be reaped.
func (rc *rabbitCluster) kill(i int) {
	n := rc.nodes[i]
	syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-n.exited:
	case <-time.After(10 * time.Second):
	}
}

// beamPID returns node i's beam.smp PID (0 if not found).
func (rc *rabbitCluster) beamPID(i int) int {
	return rabbitmqtest.BeamUnder(rc.nodes[i].cmd.Process.Pid)
}

// stop stops every node (SIGTERM to its process group; SIGKILL after
// rabbitTermTimeout), then our epmd, and removes the directory.
func (rc *rabbitCluster) stop() {
	var wg sync.WaitGroup
	for _, n := range rc.nodes {
		if n.cmd == nil || n.cmd.Process == nil {
			continue
		}
		wg.Go(func() {
			select {
			case <-n.exited:
				return
			default:
			}
			syscall.Kill(-n.cmd.Process.Pid, syscall.SIGTERM)
			select {
			case <-n.exited:
			case <-time.After(rabbitTermTimeout):
				syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
				<-n.exited
			}
		})
	}
	wg.Wait()
	if rc.epmd != nil {
		rc.epmd.Process.Kill()
		rc.epmd.Wait()
	}
	if rc.dir != "" {
		os.RemoveAll(rc.dir)
	}
}

// logs returns the node's output and the tail of its log files.
func (n *rabbitNode) logs() string {
	s := n.out.String()
	matches, _ := filepath.Glob(filepath.Join(n.dir, "log", "*.log"))
	for _, m := range matches {
		b, _ := os.ReadFile(m)
		s += "\n== " + filepath.Base(m) + "\n" + rabbitmqtest.LastLines(string(b), 15)
	}
	return s
}
