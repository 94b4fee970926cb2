package integration

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"substrate/internal/tlsutil"
)

// Three controllers (issue 13): three `substrate serve` processes on
// 127.0.0.11-13, the same ports on each, their etcd.conf files naming the
// three members as the seed's does. The broker runs on the Raft leader;
// the other two forward their clients to it.

type ctlNodeProc struct {
	name, host, dir, conf string
	p                     *proc
}

type brokerCluster struct {
	t                                          *testing.T
	nodes                                      []*ctlNodeProc
	etcdClient, etcdPeer, amqp, http, peerPort int
	// With peer TLS (startBrokerClusterTLS): the peer URLs' scheme and a
	// client with the lab's client certificate for the status endpoint.
	peerScheme string
	peerClient *http.Client
	// diag, when set, describes the clients for a failed wait's message
	// (what each publisher was doing, and the RPC loop's last calls).
	diag func() string
}

func startBrokerCluster(t *testing.T) *brokerCluster {
	return startBrokerClusterConf(t, "", "http", nil)
}

// startBrokerClusterConf starts the three nodes with extra lines in each
// etcd.conf and peer URLs of scheme (https with etcd's peer TLS).
func startBrokerClusterConf(t *testing.T, extra, scheme string, peerClient *http.Client) *brokerCluster {
	t.Helper()
	if peerClient == nil {
		peerClient = &http.Client{}
	}
	peerClient.Timeout = 500 * time.Millisecond
	bc := &brokerCluster{t: t, etcdClient: freePort(t), etcdPeer: freePort(t), amqp: freePort(t), http: freePort(t), peerPort: freePort(t),
		peerScheme: scheme, peerClient: peerClient}
	base := t.TempDir()
	var ic []string
	for i := 1; i <= 3; i++ {
		n := &ctlNodeProc{name: fmt.Sprintf("ctl%d", i), host: fmt.Sprintf("127.0.0.%d", 10+i), dir: filepath.Join(base, fmt.Sprintf("ctl%d", i))}
		bc.nodes = append(bc.nodes, n)
		ic = append(ic, fmt.Sprintf("%s=%s://%s:%d", n.name, scheme, n.host, bc.etcdPeer))
	}
	for _, n := range bc.nodes {
		client := fmt.Sprintf("http://%s:%d", n.host, bc.etcdClient)
		peer := fmt.Sprintf("%s://%s:%d", scheme, n.host, bc.etcdPeer)
		conf := fmt.Sprintf("#[Member]\nETCD_NAME=%q\nETCD_LISTEN_PEER_URLS=%q\nETCD_LISTEN_CLIENT_URLS=%q\n#[Clustering]\nETCD_INITIAL_ADVERTISE_PEER_URLS=%q\nETCD_ADVERTISE_CLIENT_URLS=%q\nETCD_INITIAL_CLUSTER=%q\nETCD_INITIAL_CLUSTER_TOKEN=\"substrate-cluster-test\"\nETCD_INITIAL_CLUSTER_STATE=\"new\"\n%s",
			n.name, peer, client, peer, client, strings.Join(ic, ","), extra)
		n.conf = filepath.Join(base, n.name+".conf")
		if err := os.WriteFile(n.conf, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for i := range bc.nodes {
		bc.start(i)
	}
	for _, n := range bc.nodes {
		n.p.waitReady(90 * time.Second)
	}
	return bc
}

func (bc *brokerCluster) start(i int) {
	n := bc.nodes[i]
	n.p = start(bc.t, nil, "serve", "--services", "etcd,amqp,http", "--host", n.host, "--data-dir", n.dir, "--http-port", strconv.Itoa(bc.http),
		"--etcd-config", n.conf, "--etcd-client-port", strconv.Itoa(bc.etcdClient), "--etcd-peer-port", strconv.Itoa(bc.etcdPeer),
		"--amqp-port", strconv.Itoa(bc.amqp), "--broker-peer-port", strconv.Itoa(bc.peerPort), "--amqp-disk-free-limit", "0",
		"--broker-snapshot-entries", strconv.Itoa(snapshotEntries))
}

func (bc *brokerCluster) amqpAddr(i int) string {
	return fmt.Sprintf("%s:%d", bc.nodes[i].host, bc.amqp)
}

func (bc *brokerCluster) url(i int) string { return "amqp://guest:guest@" + bc.amqpAddr(i) + "/" }

// nodeStatus is a node's view of the Raft group, from its peer port.
type nodeStatus struct {
	Name     string `json:"name"`
	IsLeader bool   `json:"is_leader"`
	Active   bool   `json:"active"`
	Term     uint64 `json:"term"`
	Commit   uint64 `json:"commit_index"`
	Applied  uint64 `json:"applied_index"`
	Snapshot uint64 `json:"snapshot_index"`
	Messages int    `json:"messages"`
	// The leader's view of each follower's replication, for a failed
	// wait's message.
	Progress map[string]string `json:"progress"`
}

func (bc *brokerCluster) status(i int) (nodeStatus, error) {
	var st nodeStatus
	resp, err := bc.peerClient.Get(fmt.Sprintf("%s://%s:%d/substrate/status", bc.peerScheme, bc.nodes[i].host, bc.peerPort))
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	err = json.NewDecoder(resp.Body).Decode(&st)
	return st, err
}

// leader waits until one node's broker is active, other than the node
// skip (a stopped leader that may still believe it leads), and returns it.
func (bc *brokerCluster) leader(d time.Duration, skip int) (int, nodeStatus) {
	bc.t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		for i := range bc.nodes {
			if i == skip {
				continue
			}
			if st, err := bc.status(i); err == nil && st.Active {
				return i, st
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	bc.t.Fatalf("no active broker within %v", d)
	return -1, nodeStatus{}
}

// checkClusterOperations: on a follower, rabbitmqctl cluster_status lists
// the three nodes and the leader, a broker command names the leader, and
// the management API answers through it as the leader's.
func checkClusterOperations(t *testing.T, bc *brokerCluster, l int) {
	t.Helper()
	f := (l + 1) % 3
	out, errOut, code := ctlRun(t, binary, nil, "", "ctl", "--data-dir", bc.nodes[f].dir, "cluster_status")
	if code != 0 {
		t.Fatalf("cluster_status on ctl%d: %d %s %s", f+1, code, out, errOut)
	}
	for _, want := range []string{"rabbit@ctl1\nrabbit@ctl2\nrabbit@ctl3", "Leader: rabbit@" + bc.nodes[l].name,
		"Node: rabbit@" + bc.nodes[l].name + ", role: leader, broker: active", "Node: rabbit@" + bc.nodes[f].name + ", role: follower, broker: standby"} {
		if !strings.Contains(out, want) {
			t.Errorf("cluster_status on ctl%d lacks %q:\n%s", f+1, want, out)
		}
	}
	_, errOut, code = ctlRun(t, binary, nil, "", "ctl", "--data-dir", bc.nodes[f].dir, "list_queues")
	if code != 69 || !strings.Contains(errOut, "rabbit@"+bc.nodes[l].name) {
		t.Errorf("list_queues on a follower: %d %s", code, errOut)
	}
	if out, _, code := ctlRun(t, binary, nil, "", "ctl", "--data-dir", bc.nodes[l].dir, "list_queues"); code != 0 {
		t.Errorf("list_queues on the leader: %d %s", code, out)
	}
	req, _ := http.NewRequest("GET", fmt.Sprintf("http://%s:%d/api/overview", bc.nodes[f].host, bc.http), nil)
	req.SetBasicAuth("guest", "guest")
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ov struct {
		Node string `json:"node"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&ov); err != nil || resp.StatusCode != 200 {
		t.Fatalf("/api/overview through ctl%d: %d %v", f+1, resp.StatusCode, err)
	}
	// The UI's status on a follower: the login checked by the leader, the
	// Broker cluster panel's data with the leader named.
	req, _ = http.NewRequest("GET", fmt.Sprintf("http://%s:%d/substrate/status", bc.nodes[f].host, bc.http), nil)
	req.SetBasicAuth("guest", "guest")
	resp2, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp2.Body.Close()
	var ui struct {
		Cluster *struct {
			Leader string `json:"leader"`
			Nodes  []struct {
				Name string `json:"name"`
			} `json:"nodes"`
		} `json:"cluster"`
	}
	if err := json.NewDecoder(resp2.Body).Decode(&ui); err != nil || resp2.StatusCode != 200 || ui.Cluster == nil ||
		ui.Cluster.Leader != "rabbit@"+bc.nodes[l].name || len(ui.Cluster.Nodes) != 3 {
		t.Fatalf("UI status on ctl%d: %d %v %+v", f+1, resp2.StatusCode, err, ui.Cluster)
	}
	req.SetBasicAuth("guest", "wrong")
	if resp3, err := (&http.Client{Timeout: 10 * time.Second}).Do(req); err != nil || resp3.StatusCode != 401 {
		t.Fatalf("UI status on ctl%d with a wrong password: %v %v", f+1, resp3, err)
	} else {
		resp3.Body.Close()
	}
}

// snapshotEntries is the nodes' --broker-snapshot-entries: small, so a
// follower stopped for a few seconds falls behind the leader's log. The
// publishers make about 8 entries a second (each sends 50 messages every
// half second; a burst rides in one entry), so a follower falls 2-3
// snapshots behind in 15-30 s.
const snapshotEntries = 100

// waitStatus polls node i's status until cond holds.
func waitStatus(t *testing.T, bc *brokerCluster, i int, d time.Duration, what string, cond func(nodeStatus) bool) {
	t.Helper()
	waitStatusMoving(t, bc, i, d, 0, what, cond)
}

// waitStatusMoving is waitStatus for a condition that needs the log to
// move (so many entries applied): it waits up to d, and fails earlier
// when still > 0 and node i's applied index stood still that long. The
// log moves at the publishers' pace (snapshotEntries), slower when
// commits are slow, which a wait for N entries must tell from a stall.
func waitStatusMoving(t *testing.T, bc *brokerCluster, i int, d, still time.Duration, what string, cond func(nodeStatus) bool) {
	t.Helper()
	start := time.Now()
	deadline := start.Add(d)
	var first, last nodeStatus
	var firstAt, lastAt, movedAt time.Time
	var err error
	for now := start; now.Before(deadline); now = time.Now() {
		prev := last.Applied
		if last, err = bc.status(i); err == nil {
			if firstAt.IsZero() || last.Applied != prev {
				movedAt = now
			}
			if firstAt.IsZero() {
				first, firstAt = last, now
			}
			lastAt = now
			if cond(last) {
				return
			}
		}
		if still > 0 && !movedAt.IsZero() && now.Sub(movedAt) > still {
			what += fmt.Sprintf(" (the applied index stood still for %v)", still)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	// How fast the log moved while it waited.
	clients := fmt.Sprintf("ctl%d's applied index went from %d to %d in %v (commit %d)\n", i+1, first.Applied, last.Applied, lastAt.Sub(firstAt).Round(time.Millisecond), last.Commit)
	// Every node's view and the clients', before the dumps end them.
	for j := range bc.nodes {
		st, err := bc.status(j)
		clients += fmt.Sprintf("ctl%d: %+v %v\n", j+1, st, err)
	}
	if bc.diag != nil {
		clients += bc.diag()
	}
	// Every node's goroutines, in the output, for the post-mortem: all
	// signalled at once, so that each dump shows the connections the
	// others still hold.
	for _, n := range bc.nodes {
		n.p.cmd.Process.Signal(syscall.SIGQUIT)
	}
	for _, n := range bc.nodes {
		select {
		case <-n.p.exited: // the runtime wrote its dump and exited
		case <-time.After(15 * time.Second):
			n.p.stop(syscall.SIGKILL)
		}
	}
	t.Fatalf("ctl%d: no %s within %v: last status %+v, err %v\n%s", i+1, what, d, last, err, clients)
}

// kills is how many leader kills the loops do: a few in `make test`,
// SUBSTRATE_CLUSTER_KILLS (e.g. 20) for the full run.
func kills(t *testing.T, short int) int { return envCount(t, "SUBSTRATE_CLUSTER_KILLS", short) }

// envCount is the positive count in the environment variable name, or
// def when it is unset.
func envCount(t *testing.T, name string, def int) int {
	if s := os.Getenv(name); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("%s=%q", name, s)
		}
		return n
	}
	return def
}

// freezeAndCatchUp freezes the leader l (SIGSTOP, a partition's
// stand-in) past the election timeout: another node takes over; thawed,
// the old one steps down and its broker stops (the final check finds
// every message it confirmed). Then a follower is killed while the log
// moves past its snapshots and restarted: it catches up from a snapshot.
// It returns the leader.
func freezeAndCatchUp(t *testing.T, bc *brokerCluster, rpc *rpcLoop, l int) int {
	t.Helper()
	frozen := l
	bc.nodes[frozen].p.cmd.Process.Signal(syscall.SIGSTOP)
	nl, _ := bc.leader(10*time.Second, frozen)
	time.Sleep(2 * time.Second) // frozen well past the election
	bc.nodes[frozen].p.cmd.Process.Signal(syscall.SIGCONT)
	waitStatus(t, bc, frozen, 10*time.Second, "the thawed leader stepped down", func(st nodeStatus) bool {
		return !st.IsLeader && !st.Active && st.Term > 0
	})
	t.Logf("ctl%d frozen: ctl%d took over; thawed, ctl%d stepped down", frozen+1, nl+1, frozen+1)
	l = nl
	rpc.waitOKAfter(t, time.Now(), 30*time.Second)

	// A follower down while the log moves past its snapshots catches up
	// from a snapshot when it returns.
	f := (l + 1) % 3
	before, err := bc.status(f)
	if err != nil {
		t.Fatal(err)
	}
	bc.nodes[f].p.stop(syscall.SIGKILL)
	// The publishers move the log about 8 entries a second (fewer when
	// commits are slow: what arrives meanwhile rides in the next entry),
	// so the 100-200 entries this takes need 15-30 s, more on a loaded
	// host; a stall fails in 20 s.
	waitStatusMoving(t, bc, l, 3*time.Minute, 20*time.Second, "the leader's snapshot passes the stopped follower's log", func(st nodeStatus) bool {
		return st.Snapshot > before.Applied+snapshotEntries
	})
	bc.start(f)
	bc.nodes[f].p.waitReady(60 * time.Second)
	lead, _ := bc.status(l)
	waitStatus(t, bc, f, 30*time.Second, "the restarted follower caught up", func(st nodeStatus) bool {
		return st.Applied >= lead.Applied && st.Snapshot > before.Applied
	})
	t.Logf("ctl%d stopped at applied index %d, caught up from a snapshot past %d", f+1, before.Applied, lead.Snapshot)
	return l
}

// publisher publishes seq-numbered persistent messages with confirms to
// queue, reconnecting through every node; after a reconnect it publishes
// the unconfirmed ones again, in order.
type publisher struct {
	id        int
	queue     string
	urls      []string
	mu        sync.Mutex
	confirmed map[int]bool
	errors    int
	// What it is doing, for a failed wait's message: the step, since
	// when, the publishes awaiting a confirm and the last confirm's time.
	step                string
	stepAt, lastConfirm time.Time
	waiting             int
}

func (p *publisher) at(step string, waiting int) {
	p.mu.Lock()
	p.step, p.stepAt, p.waiting = step, time.Now(), waiting
	p.mu.Unlock()
}

func (p *publisher) describe() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return fmt.Sprintf("publisher %d (%s): %s for %v, %d awaiting a confirm, last confirm %v ago, %d confirmed, %d connection errors",
		p.id, p.queue, p.step, time.Since(p.stepAt).Round(time.Millisecond), p.waiting, time.Since(p.lastConfirm).Round(time.Millisecond), len(p.confirmed), p.errors)
}

func (p *publisher) run(stop <-chan struct{}) {
	next, pending := 0, []int{}
	node := p.id
	for {
		select {
		case <-stop:
			return
		default:
		}
		url := p.urls[node%len(p.urls)]
		p.at("dialing "+url, 0)
		c, err := amqp091.DialConfig(url, amqp091.Config{Dial: amqp091.DefaultDial(2 * time.Second)})
		node++
		if err != nil {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		ch, err := c.Channel()
		if err == nil {
			err = ch.Confirm(false)
		}
		if err == nil {
			args := amqp091.Table{}
			if strings.HasPrefix(p.queue, "qq") {
				args["x-queue-type"] = "quorum"
			}
			_, err = ch.QueueDeclare(p.queue, true, false, false, false, args)
		}
		if err != nil {
			c.Close()
			p.mu.Lock()
			p.errors++
			p.mu.Unlock()
			time.Sleep(50 * time.Millisecond)
			continue
		}
		confs := ch.NotifyPublish(make(chan amqp091.Confirmation, 256))
		closed := c.NotifyClose(make(chan *amqp091.Error, 1))
		var tag uint64
		inflight := map[uint64]int{}
		send := func(seq int) bool {
			if err := ch.Publish("", p.queue, false, false, amqp091.Publishing{DeliveryMode: 2, Body: fmt.Appendf(nil, "%d-%d", p.id, seq)}); err != nil {
				return false
			}
			tag++
			inflight[tag] = seq
			return true
		}
		record := func(cf amqp091.Confirmation) {
			seq := inflight[cf.DeliveryTag]
			delete(inflight, cf.DeliveryTag)
			if cf.Ack {
				p.mu.Lock()
				p.confirmed[seq] = true
				p.lastConfirm = time.Now()
				p.mu.Unlock()
			}
		}
		ok := true
		paced := time.Now()
		for _, seq := range pending { // again, in order
			if ok = send(seq); !ok {
				break
			}
		}
		for ok {
			for ok && len(inflight) < 64 {
				if ok = send(next); ok {
					next++
					if next%50 == 0 { // at most publishRate a second
						if d := 50*time.Second/publishRate - time.Since(paced); d > 0 {
							time.Sleep(d)
						}
						paced = time.Now()
					}
				}
			}
			p.at("waiting for a confirm or a close from "+url, len(inflight))
			select {
			case <-stop:
				c.Close()
				return
			case <-closed:
				ok = false
			case cf, alive := <-confs:
				if ok = alive; ok {
					record(cf)
				}
			}
		}
		pending = pending[:0]
		for _, seq := range inflight {
			pending = append(pending, seq)
		}
		sortInts(pending)
		c.Close()
	}
}

// publishRate bounds each publisher (messages a second), so that the
// queues' backlog, which nothing consumes, stays what a real cloud
// would hold over the run.
const publishRate = 100

func sortInts(s []int) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

// TestBrokerClusterLeaderKills: an oslo.messaging RPC loop and four
// confirm-mode publishers into a durable classic queue and a quorum queue
// run while the leader is SIGKILLed at seeded random moments, again and
// again (each killed node restarts and rejoins; RPC must answer within
// 5 s of each kill); then the leader is frozen (SIGSTOP) past the
// election and thawed (it steps down); a follower is killed until the
// log passes its snapshot and restarted (it catches up from one); and all
// three are killed and restarted. Every confirmed message is then
// present, in each publisher's order, and a message present twice is
// marked redelivered.
func TestBrokerClusterLeaderKills(t *testing.T) {
	bc := startBrokerCluster(t)
	l, _ := bc.leader(30*time.Second, -1)
	checkClusterOperations(t, bc, l)
	urls := []string{bc.url(0), bc.url(1), bc.url(2)}
	var pubs []*publisher
	for i := range 4 {
		q := "cq"
		if i >= 2 {
			q = "qq"
		}
		pubs = append(pubs, &publisher{id: i, queue: q, urls: urls, confirmed: map[int]bool{}})
	}
	needPython(t, "oslo_messaging")
	hosts := func(first int) string {
		var hs []string
		for k := range 3 {
			i := (first + k) % 3
			hs = append(hs, "guest:guest@"+bc.amqpAddr(i))
		}
		return "rabbit://" + strings.Join(hs, ",") + "/"
	}
	rpc := startRPCLoop(t, hosts((l+1)%3), hosts((l+2)%3))
	bc.diag = func() string {
		var b strings.Builder
		for _, p := range pubs {
			b.WriteString(p.describe() + "\n")
		}
		rpc.mu.Lock()
		calls := rpc.calls[max(len(rpc.calls)-5, 0):]
		for _, c := range calls {
			fmt.Fprintf(&b, "RPC call %v %s..%s %s\n", c.ok, c.start.Format("15:04:05.000"), c.end.Format("15:04:05.000"), c.reason)
		}
		rpc.mu.Unlock()
		return b.String()
	}
	rpc.waitCalls(t, 3, 60*time.Second)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, p := range pubs {
		wg.Go(func() { p.run(stop) })
	}
	seed := time.Now().UnixNano()
	if s := os.Getenv("SUBSTRATE_CLUSTER_SEED"); s != "" {
		seed, _ = strconv.ParseInt(s, 10, 64)
	}
	t.Logf("kill seed %d (SUBSTRATE_CLUSTER_SEED to replay)", seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	n := kills(t, 3)
	var failovers []time.Duration
	var killTimes []time.Time
	for k := range n {
		time.Sleep(time.Duration(300+rng.IntN(1200)) * time.Millisecond)
		bc.nodes[l].p.stop(syscall.SIGKILL)
		killed := time.Now()
		killTimes = append(killTimes, killed)
		nl, _ := bc.leader(10*time.Second, l)
		failovers = append(failovers, time.Since(killed))
		bc.start(l)
		bc.nodes[l].p.waitReady(60 * time.Second)
		t.Logf("kill %d: ctl%d killed, ctl%d leads after %v", k+1, l+1, nl+1, failovers[k].Round(time.Millisecond))
		l = nl
		// The next kill waits for RPC to work again.
		rpc.waitOKAfter(t, killed, 30*time.Second)
	}

	// SUBSTRATE_CLUSTER_FREEZES repeats the freeze and the follower
	// phase (1 by default).
	for range envCount(t, "SUBSTRATE_CLUSTER_FREEZES", 1) {
		l = freezeAndCatchUp(t, bc, rpc, l)
	}

	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()
	calls := rpc.stop(t)

	// All three killed and restarted: everything confirmed comes back.
	for i := range bc.nodes {
		bc.nodes[i].p.stop(syscall.SIGKILL)
	}
	for i := range bc.nodes {
		bc.start(i)
	}
	for i := range bc.nodes {
		bc.nodes[i].p.waitReady(90 * time.Second)
	}
	for k, kt := range killTimes {
		first := time.Duration(-1)
		for _, c := range calls {
			if c.ok && c.end.After(kt) {
				first = c.end.Sub(kt)
				break
			}
		}
		t.Logf("kill %d: leader active after %v, first RPC call answered after %v", k+1, failovers[k].Round(time.Millisecond), first.Round(time.Millisecond))
		if first < 0 || first > 5*time.Second {
			var around []string
			for _, c := range calls {
				if c.end.After(kt.Add(-time.Second)) && c.start.Before(kt.Add(15*time.Second)) {
					around = append(around, fmt.Sprintf("%v %+.3f..%+.3f %s", c.ok, c.start.Sub(kt).Seconds(), c.end.Sub(kt).Seconds(), c.reason))
				}
			}
			t.Errorf("kill %d: RPC resumed after %v (limit 5 s); calls around it (seconds from the kill):\n%s\noslo.messaging's log around it:\n%s",
				k+1, first, strings.Join(around, "\n"), rpc.logAround(kt.Add(-time.Second), kt.Add(15*time.Second)))
		}
	}
	// Drain both queues through the leader.
	l, _ = bc.leader(10*time.Second, -1)
	c, err := amqp091.Dial(bc.url(l))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ch, err := c.Channel()
	if err != nil {
		t.Fatal(err)
	}
	type copyOf struct {
		seq         int
		redelivered bool
	}
	got := map[int][]copyOf{}
	for _, q := range []string{"cq", "qq"} {
		for {
			m, ok, err := ch.Get(q, true)
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				break
			}
			var id, seq int
			if _, err := fmt.Sscanf(string(m.Body), "%d-%d", &id, &seq); err != nil {
				t.Fatalf("body %q", m.Body)
			}
			got[id] = append(got[id], copyOf{seq, m.Redelivered})
		}
	}
	for _, p := range pubs {
		seen := map[int][]bool{}
		last := -1
		for _, cp := range got[p.id] {
			if len(seen[cp.seq]) == 0 {
				if cp.seq < last {
					t.Errorf("publisher %d: %d after %d", p.id, cp.seq, last)
				}
				last = cp.seq
			}
			seen[cp.seq] = append(seen[cp.seq], cp.redelivered)
		}
		lost := 0
		for seq := range p.confirmed {
			if len(seen[seq]) == 0 {
				lost++
			}
		}
		dups := 0
		for seq, rs := range seen {
			if len(rs) > 1 {
				dups++
				marked := false
				for _, r := range rs {
					marked = marked || r
				}
				if !marked {
					t.Errorf("publisher %d: message %d present %d times, none marked redelivered", p.id, seq, len(rs))
				}
			}
		}
		if lost > 0 {
			t.Errorf("publisher %d: %d of %d confirmed messages lost", p.id, lost, len(p.confirmed))
		}
		if len(p.confirmed) == 0 {
			t.Errorf("publisher %d: nothing confirmed", p.id)
		}
		t.Logf("publisher %d (%s): %d confirmed, %d received, %d duplicates, %d connection errors", p.id, p.queue, len(p.confirmed), len(got[p.id]), dups, p.errors)
	}
}

// rpcLoop is py/cluster_rpc.py: an oslo.messaging server and a client
// calling it in a loop.
type rpcLoop struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	mu    sync.Mutex
	calls []rpcCall
	done  chan struct{}
	out   strings.Builder
	lines []string // the script's log lines (rpcStderr)
}

type rpcCall struct {
	ok         bool
	start, end time.Time
	reason     string
}

func startRPCLoop(t *testing.T, serverURL, clientURL string) *rpcLoop {
	t.Helper()
	r := &rpcLoop{done: make(chan struct{})}
	r.cmd = exec.Command(python, filepath.Join("py", "cluster_rpc.py"), serverURL, clientURL)
	var err error
	if r.stdin, err = r.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := r.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	r.cmd.Stderr = &rpcStderr{r: r}
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(r.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) < 4 {
				continue
			}
			t0, _ := strconv.ParseFloat(f[2], 64)
			t1, _ := strconv.ParseFloat(f[3], 64)
			c := rpcCall{ok: f[0] == "ok", start: unixFloat(t0), end: unixFloat(t1)}
			if len(f) > 4 {
				c.reason = strings.Join(f[4:], " ")
			}
			r.mu.Lock()
			r.calls = append(r.calls, c)
			r.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		r.cmd.Process.Kill()
		<-r.done
		r.cmd.Wait()
	})
	return r
}

func unixFloat(f float64) time.Time {
	return time.Unix(0, int64(f*1e9))
}

// rpcStderr keeps the script's stderr: its first 64 KiB (a failed start
// says why there) and its last 2,000 lines (oslo.messaging's reconnects,
// each line starting with its time).
type rpcStderr struct {
	r    *rpcLoop
	part []byte
}

func (w *rpcStderr) Write(p []byte) (int, error) {
	w.r.mu.Lock()
	defer w.r.mu.Unlock()
	if w.r.out.Len() < 1<<16 {
		w.r.out.Write(p)
	}
	w.part = append(w.part, p...)
	for {
		i := bytes.IndexByte(w.part, '\n')
		if i < 0 {
			break
		}
		w.r.lines = append(w.r.lines, string(w.part[:i]))
		w.part = w.part[i+1:]
		if len(w.r.lines) > 2000 {
			w.r.lines = w.r.lines[len(w.r.lines)-1000:]
		}
	}
	if len(w.part) > 1<<16 { // no newline: keep memory bounded
		w.part = w.part[:0]
	}
	return len(p), nil
}

// logAround returns the script's log lines stamped between from and to,
// their times shown in seconds from from+1s (the kill).
func (r *rpcLoop) logAround(from, to time.Time) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	for _, l := range r.lines {
		f, rest, _ := strings.Cut(l, " ")
		ts, err := strconv.ParseFloat(f, 64)
		if err != nil {
			continue
		}
		at := unixFloat(ts)
		if at.Before(from) || at.After(to) {
			continue
		}
		fmt.Fprintf(&b, "%+.3f %s\n", at.Sub(from.Add(time.Second)).Seconds(), rest)
	}
	return b.String()
}

// waitCalls waits for n successful calls.
func (r *rpcLoop) waitCalls(t *testing.T, n int, d time.Duration) {
	t.Helper()
	r.waitFor(t, d, "successful RPC calls", func(calls []rpcCall) bool {
		ok := 0
		for _, c := range calls {
			if c.ok {
				ok++
			}
		}
		return ok >= n
	})
}

// waitOKAfter waits for a call answered after at.
func (r *rpcLoop) waitOKAfter(t *testing.T, at time.Time, d time.Duration) {
	t.Helper()
	r.waitFor(t, d, "an RPC call answered after the kill", func(calls []rpcCall) bool {
		for i := len(calls) - 1; i >= 0; i-- {
			if calls[i].ok && calls[i].end.After(at) {
				return true
			}
		}
		return false
	})
}

func (r *rpcLoop) waitFor(t *testing.T, d time.Duration, what string, cond func([]rpcCall) bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		r.mu.Lock()
		ok := cond(r.calls)
		n, out := len(r.calls), r.out.String()
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-r.done:
			t.Fatalf("cluster_rpc.py ended while waiting for %s:\n%s", what, out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %v (%d calls so far):\n%s", what, d, n, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop ends the loop and returns its calls.
func (r *rpcLoop) stop(t *testing.T) []rpcCall {
	t.Helper()
	r.stdin.Close()
	select {
	case <-r.done:
	case <-time.After(30 * time.Second):
		t.Errorf("cluster_rpc.py did not end within 30 s of its stdin closing")
		r.cmd.Process.Kill()
		<-r.done
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]rpcCall(nil), r.calls...)
}

// TestBrokerClusterPeerTLS: with etcd's peer TLS in etcd.conf (lab
// certificates, client certificate auth) the broker's peer port speaks
// it too: the nodes elect and replicate, a follower forwards its client
// and rabbitmqctl cluster_status reads every node over it; a leader kill
// still loses no confirmed message.
func TestBrokerClusterPeerTLS(t *testing.T) {
	lab, err := tlsutil.WriteLab(t.TempDir(), []string{"127.0.0.11", "127.0.0.12", "127.0.0.13"}, "client")
	if err != nil {
		t.Fatal(err)
	}
	extra := fmt.Sprintf("#[Security]\nETCD_PEER_CERT_FILE=%q\nETCD_PEER_KEY_FILE=%q\nETCD_PEER_TRUSTED_CA_FILE=%q\nETCD_PEER_CLIENT_CERT_AUTH=\"true\"\n",
		lab.Server, lab.ServerKey, lab.CA)
	cert, err := tls.LoadX509KeyPair(lab.Client, lab.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	ca, err := os.ReadFile(lab.CA)
	if err != nil || !pool.AppendCertsFromPEM(ca) {
		t.Fatalf("lab CA: %v", err)
	}
	bc := startBrokerClusterConf(t, extra, "https", &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}}})
	l, _ := bc.leader(30*time.Second, -1)
	checkClusterOperations(t, bc, l)
	f := (l + 1) % 3
	const n = 100
	c, ch, confs := confirmChannel(t, bc.url(f), "tls", n)
	for i := range n {
		if err := ch.Publish("", "tls", false, false, amqp091.Publishing{DeliveryMode: 2, Body: fmt.Appendf(nil, "%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	for range n {
		select {
		case cf := <-confs:
			if !cf.Ack {
				t.Fatal("nack")
			}
		case <-time.After(20 * time.Second):
			t.Fatal("confirms did not come within 20 s")
		}
	}
	c.Close()
	bc.nodes[l].p.stop(syscall.SIGKILL)
	nl, _ := bc.leader(10*time.Second, l)
	c, err = amqp091.Dial(bc.url(nl))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ch, err = c.Channel()
	if err != nil {
		t.Fatal(err)
	}
	q, err := ch.QueueDeclarePassive("tls", true, false, false, false, nil)
	if err != nil || q.Messages != n {
		t.Fatalf("after the leader's kill: %+v %v, want %d messages", q, err, n)
	}
}

// confirmChannel dials url and returns a confirm-mode channel on which
// the durable queue is declared, and its confirmations (window buffered).
func confirmChannel(t *testing.T, url, queue string, window int) (*amqp091.Connection, *amqp091.Channel, chan amqp091.Confirmation) {
	t.Helper()
	c, err := amqp091.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := c.Channel()
	if err == nil {
		err = ch.Confirm(false)
	}
	if err == nil {
		_, err = ch.QueueDeclare(queue, true, false, false, false, nil)
	}
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	return c, ch, ch.NotifyPublish(make(chan amqp091.Confirmation, window))
}

// TestBrokerClusterPeerAutoTLS: with ETCD_PEER_AUTO_TLS (etcd's
// self-signed peer certificates, generated when etcd starts) the broker's
// peer port uses them too, as etcd's peers do: the nodes elect, and a
// follower forwards its client.
func TestBrokerClusterPeerAutoTLS(t *testing.T) {
	bc := startBrokerClusterConf(t, "#[Security]\nETCD_PEER_AUTO_TLS=\"true\"\n", "https",
		&http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}})
	l, _ := bc.leader(30*time.Second, -1)
	c, err := amqp091.Dial(bc.url((l + 1) % 3))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ch, err := c.Channel()
	if err == nil {
		_, err = ch.QueueDeclare("auto-tls", true, false, false, false, nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get(fmt.Sprintf("http://%s:%d/substrate/status", bc.nodes[l].host, bc.peerPort)); err == nil {
		t.Fatal("the peer port answered plain HTTP")
	}
}
