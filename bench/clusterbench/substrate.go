package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"substrate/internal/rabbitmqtest"
)

// A three-node substrate cluster as docs/cluster.md (and
// integration/broker_cluster_test.go) runs one: three
//
//	substrate serve --services etcd,amqp --host 127.0.0.1I --data-dir DIR
//	    --etcd-config ctlI.conf --etcd-client-port C --etcd-peer-port P
//	    --amqp-port A --broker-peer-port B
//
// processes with the same ports on 127.0.0.11-13, each etcd.conf naming the
// three members. The broker is active on the Raft leader; the others
// forward their clients to it. Each node's /substrate/status on the broker
// peer port says whether its broker is active.

const (
	substrateReadyTimeout = 90 * time.Second
	substrateStopTimeout  = 20 * time.Second // SIGTERM grace before SIGKILL
)

type substrateNode struct {
	idx    int
	name   string // ctlI
	host   string
	dir    string // data dir
	conf   string // etcd.conf
	cmd    *exec.Cmd
	out    *rabbitmqtest.Tail
	probs  *[]string // warning and error lines
	ready  chan struct{}
	exited chan struct{}
}

type substrateCluster struct {
	bin                                string
	dir                                string
	etcdClient, etcdPeer, amqp, peerPt int
	nodes                              []*substrateNode
	probMu                             sync.Mutex
	problems                           []string
}

func startSubstrateCluster(ctx context.Context, bin string, hosts []string) (*substrateCluster, error) {
	sc := &substrateCluster{bin: bin}
	if err := sc.start(ctx, hosts); err != nil {
		msg := err.Error()
		for _, n := range sc.nodes {
			if n.out != nil {
				msg += fmt.Sprintf("\n--- %s output tail ---\n%s", n.name, rabbitmqtest.LastLines(n.out.String(), 15))
			}
		}
		sc.stop()
		return nil, errors.New(msg)
	}
	return sc, nil
}

func (sc *substrateCluster) start(ctx context.Context, hosts []string) error {
	var err error
	if sc.dir, err = os.MkdirTemp("", "clusterbench-substrate-"); err != nil {
		return err
	}
	ports, err := rabbitmqtest.FreePorts(4)
	if err != nil {
		return err
	}
	sc.etcdClient, sc.etcdPeer, sc.amqp, sc.peerPt = ports[0], ports[1], ports[2], ports[3]
	var ic []string
	for i, h := range hosts {
		n := &substrateNode{idx: i, name: fmt.Sprintf("ctl%d", i+1), host: h}
		n.dir = filepath.Join(sc.dir, n.name)
		n.conf = filepath.Join(sc.dir, n.name+".conf")
		sc.nodes = append(sc.nodes, n)
		ic = append(ic, fmt.Sprintf("%s=http://%s:%d", n.name, h, sc.etcdPeer))
	}
	for _, n := range sc.nodes {
		client := fmt.Sprintf("http://%s:%d", n.host, sc.etcdClient)
		peer := fmt.Sprintf("http://%s:%d", n.host, sc.etcdPeer)
		conf := fmt.Sprintf("#[Member]\nETCD_NAME=%q\nETCD_LISTEN_PEER_URLS=%q\nETCD_LISTEN_CLIENT_URLS=%q\n"+
			"#[Clustering]\nETCD_INITIAL_ADVERTISE_PEER_URLS=%q\nETCD_ADVERTISE_CLIENT_URLS=%q\nETCD_INITIAL_CLUSTER=%q\n"+
			"ETCD_INITIAL_CLUSTER_TOKEN=\"clusterbench\"\nETCD_INITIAL_CLUSTER_STATE=\"new\"\n",
			n.name, peer, client, peer, client, strings.Join(ic, ","))
		if err := os.WriteFile(n.conf, []byte(conf), 0o600); err != nil {
			return err
		}
	}
	for _, n := range sc.nodes {
		if err := sc.boot(n); err != nil {
			return err
		}
	}
	for _, n := range sc.nodes {
		if err := sc.waitReady(ctx, n); err != nil {
			return err
		}
	}
	_, err = sc.leader(ctx, 60*time.Second, -1)
	return err
}

// serverEnv is this process's environment without SUBSTRATE_* settings,
// which would change the servers' configuration.
func serverEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SUBSTRATE_") {
			env = append(env, kv)
		}
	}
	return env
}

// boot starts node n (first boot or restart); waitReady waits for it.
func (sc *substrateCluster) boot(n *substrateNode) error {
	n.cmd = exec.Command(sc.bin, "serve", "--services", "etcd,amqp", "--host", n.host, "--data-dir", n.dir,
		"--etcd-config", n.conf, "--etcd-client-port", strconv.Itoa(sc.etcdClient), "--etcd-peer-port", strconv.Itoa(sc.etcdPeer),
		"--amqp-port", strconv.Itoa(sc.amqp), "--broker-peer-port", strconv.Itoa(sc.peerPt))
	n.cmd.Dir = sc.dir
	n.cmd.Env = serverEnv()
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	pr, pw := io.Pipe()
	n.cmd.Stdout, n.cmd.Stderr = pw, pw
	n.out = &rabbitmqtest.Tail{}
	n.ready, n.exited = make(chan struct{}), make(chan struct{})
	if err := n.cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", n.name, err)
	}
	out, ready, exited, cmd := n.out, n.ready, n.exited, n.cmd
	go func() {
		s := bufio.NewScanner(pr)
		s.Buffer(make([]byte, 64*1024), 1<<20)
		var once sync.Once
		for s.Scan() {
			line := s.Text()
			out.Write([]byte(line + "\n"))
			if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
				sc.probMu.Lock()
				sc.problems = append(sc.problems, n.name+": "+line)
				sc.probMu.Unlock()
			}
			if strings.Contains(line, `msg="substrate ready"`) {
				once.Do(func() { close(ready) })
			}
		}
		io.Copy(io.Discard, pr)
	}()
	go func() { cmd.Wait(); pw.Close(); close(exited) }()
	return nil
}

func (sc *substrateCluster) waitReady(ctx context.Context, n *substrateNode) error {
	select {
	case <-n.ready:
		return nil
	case <-n.exited:
		return fmt.Errorf("%s exited before it was ready", n.name)
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(substrateReadyTimeout):
		return fmt.Errorf("%s: no ready line within %v", n.name, substrateReadyTimeout)
	}
}

func (sc *substrateCluster) addr(i int) string {
	return fmt.Sprintf("%s:%d", sc.nodes[i].host, sc.amqp)
}

// nodeStatus is a node's view of the broker's Raft group.
type nodeStatus struct {
	IsLeader bool `json:"is_leader"`
	Active   bool `json:"active"`
}

var statusClient = &http.Client{Timeout: 500 * time.Millisecond}

func (sc *substrateCluster) status(i int) (nodeStatus, error) {
	var st nodeStatus
	resp, err := statusClient.Get(fmt.Sprintf("http://%s:%d/substrate/status", sc.nodes[i].host, sc.peerPt))
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	err = json.NewDecoder(resp.Body).Decode(&st)
	return st, err
}

// etcdLeads reports whether node i's etcd member is the etcd leader
// (etcd's /v3/maintenance/status on its client port).
func (sc *substrateCluster) etcdLeads(i int) (bool, error) {
	resp, err := statusClient.Post(fmt.Sprintf("http://%s:%d/v3/maintenance/status", sc.nodes[i].host, sc.etcdClient), "application/json", strings.NewReader("{}"))
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	var st struct {
		Header struct {
			MemberID string `json:"member_id"`
		} `json:"header"`
		Leader string `json:"leader"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return false, err
	}
	if st.Leader == "" || st.Header.MemberID == "" {
		return false, fmt.Errorf("etcd status without leader or member id")
	}
	return st.Leader == st.Header.MemberID, nil
}

// leader polls until a node other than skip says its broker is active.
func (sc *substrateCluster) leader(ctx context.Context, d time.Duration, skip int) (int, error) {
	deadline := time.Now().Add(d)
	for {
		for i := range sc.nodes {
			if i == skip {
				continue
			}
			if st, err := sc.status(i); err == nil && st.Active {
				return i, nil
			}
		}
		if time.Now().After(deadline) {
			return -1, fmt.Errorf("no active substrate broker within %v", d)
		}
		select {
		case <-ctx.Done():
			return -1, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// kill SIGKILLs node i (its PID) and waits until it is reaped.
func (sc *substrateCluster) kill(i int) {
	n := sc.nodes[i]
	n.cmd.Process.Signal(syscall.SIGKILL)
	<-n.exited
}

// restart boots node i again from its data dir and waits until it is ready.
func (sc *substrateCluster) restart(ctx context.Context, i int) error {
	if err := sc.boot(sc.nodes[i]); err != nil {
		return err
	}
	if err := sc.waitReady(ctx, sc.nodes[i]); err != nil {
		return fmt.Errorf("%v\n--- output tail ---\n%s", err, rabbitmqtest.LastLines(sc.nodes[i].out.String(), 15))
	}
	return nil
}

// stop stops every node (SIGTERM, SIGKILL after substrateStopTimeout) and
// removes the directory.
func (sc *substrateCluster) stop() {
	var wg sync.WaitGroup
	for _, n := range sc.nodes {
		if n.cmd == nil || n.cmd.Process == nil {
			continue
		}
		wg.Go(func() {
			select {
			case <-n.exited:
				return
			default:
			}
			n.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-n.exited:
			case <-time.After(substrateStopTimeout):
				n.cmd.Process.Signal(syscall.SIGKILL)
				<-n.exited
			}
		})
	}
	wg.Wait()
	if sc.dir != "" {
		os.RemoveAll(sc.dir)
	}
}

func (sc *substrateCluster) logProblems() []string {
	sc.probMu.Lock()
	defer sc.probMu.Unlock()
	return append([]string(nil), sc.problems...)
}

// logsSince returns the log lines (at most traceLines per node) that the
// nodes other than skip wrote from t on, each prefixed with its node.
func (sc *substrateCluster) logsSince(t time.Time, skip int) []string {
	var out []string
	for i, n := range sc.nodes {
		if i == skip || n.out == nil {
			continue
		}
		k := 0
		for _, line := range strings.Split(n.out.String(), "\n") {
			ts, ok := strings.CutPrefix(line, "time=")
			if !ok {
				continue
			}
			ts, _, _ = strings.Cut(ts, " ")
			at, err := time.Parse(time.RFC3339Nano, ts)
			if err != nil || at.Before(t) {
				continue
			}
			if k++; k > traceLines {
				out = append(out, n.name+": ...")
				break
			}
			out = append(out, n.name+": "+line)
		}
	}
	return out
}

// traceLines bounds a slow failover's trace per node.
const traceLines = 60
