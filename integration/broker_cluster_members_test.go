package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestBrokerClusterReplaceMember: a controller is replaced as etcd's
// documentation says (docs/cluster.md, "Replacing a controller"): ctl3
// is killed for good and removed from etcd (etcdctl member remove), ctl4
// on 127.0.0.14 is added (etcdctl member add) and started with the
// ETCD_INITIAL_CLUSTER member add printed and
// ETCD_INITIAL_CLUSTER_STATE=existing, while confirm-mode publishers
// publish persistent messages. The broker's Raft group follows:
// cluster_status lists ctl1, ctl2 and ctl4 (not ctl3), ctl4 a follower
// that caught up. Then the broker leader is SIGKILLed: a new leader is
// elected, which needs ctl4's vote when the killed one was ctl1 or ctl2,
// and every confirmed message is there.
func TestBrokerClusterReplaceMember(t *testing.T) {
	bc := startBrokerCluster(t)
	start := time.Now()
	l, _ := bc.leader(30*time.Second, -1)
	pubs := []*publisher{{id: 0, queue: "cq", urls: []string{bc.url(0), bc.url(1)}, confirmed: map[int]bool{}}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { pubs[0].run(stop) })
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()
	bc.diag = func() string {
		var b strings.Builder
		for _, p := range pubs {
			b.WriteString(p.describe() + "\n")
		}
		return b.String()
	}

	// ctl3 dies for good; the operator removes it from etcd.
	bc.nodes[2].p.stop(syscall.SIGKILL)
	t.Logf("ctl3 killed (ctl%d led the broker)", l+1)
	eps := []string{fmt.Sprintf("http://%s:%d", bc.nodes[0].host, bc.etcdClient), fmt.Sprintf("http://%s:%d", bc.nodes[1].host, bc.etcdClient)}
	ec := client(t, eps...)
	ctx := ctxT(t, 60*time.Second)
	list, err := ec.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var id3 uint64
	for _, m := range list.Members {
		if m.Name == "ctl3" {
			id3 = m.ID
		}
	}
	if _, err := retry(t, func() (*clientv3.MemberRemoveResponse, error) { return ec.MemberRemove(ctx, id3) }); err != nil {
		t.Fatalf("member remove ctl3: %v", err)
	}
	// One confirmed publish at a time, each its own Raft entry, until the
	// log was compacted past its start: ctl4 must catch up from a
	// snapshot.
	l, _ = bc.leader(10*time.Second, 2)
	const burst = 450
	bcConn, bch, bconf := confirmChannel(t, bc.url(l), "burst", 1)
	for i := range burst {
		if err := bch.Publish("", "burst", false, false, amqp091.Publishing{DeliveryMode: 2, Body: fmt.Appendf(nil, "b%d", i)}); err != nil {
			t.Fatal(err)
		}
		select {
		case cf := <-bconf:
			if !cf.Ack {
				t.Fatalf("burst message %d nacked", i)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("burst message %d: no confirm within 10 s", i)
		}
	}
	bcConn.Close()
	waitStatus(t, bc, l, 30*time.Second, "a leader snapshot past the log's start", func(st nodeStatus) bool {
		return st.Snapshot > 2*snapshotEntries
	})

	// etcdctl member add ctl4 --peer-urls=http://127.0.0.14:PORT
	n4 := &ctlNodeProc{name: "ctl4", host: "127.0.0.14", dir: filepath.Join(t.TempDir(), "ctl4")}
	peer4 := fmt.Sprintf("http://%s:%d", n4.host, bc.etcdPeer)
	add, err := retry(t, func() (*clientv3.MemberAddResponse, error) { return ec.MemberAdd(ctx, []string{peer4}) })
	if err != nil {
		t.Fatalf("member add ctl4: %v", err)
	}
	var ic []string // what etcdctl member add prints as ETCD_INITIAL_CLUSTER
	for _, m := range add.Members {
		name := m.Name
		if m.ID == add.Member.ID {
			name = n4.name
		}
		for _, u := range m.PeerURLs {
			ic = append(ic, name+"="+u)
		}
	}
	client4 := fmt.Sprintf("http://%s:%d", n4.host, bc.etcdClient)
	conf := fmt.Sprintf("#[Member]\nETCD_NAME=%q\nETCD_LISTEN_PEER_URLS=%q\nETCD_LISTEN_CLIENT_URLS=%q\n#[Clustering]\nETCD_INITIAL_ADVERTISE_PEER_URLS=%q\nETCD_ADVERTISE_CLIENT_URLS=%q\nETCD_INITIAL_CLUSTER=%q\nETCD_INITIAL_CLUSTER_TOKEN=\"substrate-cluster-test\"\nETCD_INITIAL_CLUSTER_STATE=\"existing\"\n",
		n4.name, peer4, client4, peer4, client4, strings.Join(ic, ","))
	n4.conf = filepath.Join(filepath.Dir(n4.dir), "ctl4.conf")
	if err := os.WriteFile(n4.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	bc.nodes = append(bc.nodes, n4)
	bc.start(3)
	bc.nodes[3].p.waitReady(60 * time.Second)
	ready := time.Now()
	t.Logf("ctl4 started %v after the cluster: ETCD_INITIAL_CLUSTER=%s", time.Since(start).Round(time.Millisecond), strings.Join(ic, ","))
	// A second publisher connects through ctl4 first (forwarded).
	pubs = append(pubs, &publisher{id: 1, queue: "cq", urls: []string{bc.url(3), bc.url(0), bc.url(1)}, confirmed: map[int]bool{}})
	wg.Go(func() { pubs[1].run(stop) })

	// cluster_status on ctl1: ctl1, ctl2, ctl4, not ctl3; ctl4 a
	// follower (a voter) whose applied index is the leader's.
	applied := regexp.MustCompile(`Node: rabbit@(ctl\d), role: (\w+), broker: \w+, term: \d+, commit index: (\d+), applied index: (\d+)`)
	var out string
	deadline := time.Now().Add(30 * time.Second)
	for {
		var code int
		out, _, code = ctlRun(t, binary, nil, "", "ctl", "--data-dir", bc.nodes[0].dir, "cluster_status")
		ok := code == 0 && strings.Contains(out, "rabbit@ctl1\nrabbit@ctl2\nrabbit@ctl4") && !strings.Contains(out, "ctl3")
		roles, idx := map[string]string{}, map[string]uint64{}
		var leadCommit uint64
		for _, m := range applied.FindAllStringSubmatch(out, -1) {
			roles[m[1]] = m[2]
			a, _ := strconv.ParseUint(m[4], 10, 64)
			idx[m[1]] = a
			if m[2] == "leader" {
				leadCommit, _ = strconv.ParseUint(m[3], 10, 64)
			}
		}
		if ok && roles["ctl4"] == "follower" && leadCommit > 0 && idx["ctl4"]+100 >= leadCommit {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster_status on ctl1 never showed ctl4 as a caught-up follower without ctl3 within 30 s:\n%s\n%s", out, bc.diag())
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("ctl4 a caught-up voter %v after it was ready; cluster_status on ctl1:\n%s", time.Since(ready).Round(time.Millisecond), out[strings.Index(out, "Leader:"):])
	if !strings.Contains(bc.nodes[3].p.output(), "restored a snapshot from the leader") {
		t.Errorf("ctl4 did not catch up from the leader's snapshot:\n%s", bc.nodes[3].p.output())
	}
	// Confirms keep coming through ctl4 too.
	waitConfirmed := func(p *publisher, n int, what string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			p.mu.Lock()
			got := len(p.confirmed)
			p.mu.Unlock()
			if got >= n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %s", what, p.describe())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitConfirmed(pubs[1], 50, "confirms for the publisher that dialled ctl4")

	// SIGKILL the broker leader: a new one is elected among the other two
	// voters (ctl4 among them unless it led).
	l, _ = bc.leader(10*time.Second, -1)
	bc.nodes[l].p.stop(syscall.SIGKILL)
	killed := time.Now()
	nl, _ := bc.leader(10*time.Second, l)
	t.Logf("ctl%d (broker leader) killed: ctl%d leads after %v%s", l+1, nl+1, time.Since(killed).Round(time.Millisecond),
		map[bool]string{true: ", elected with ctl4's vote", false: ""}[l != 3])
	for _, p := range pubs {
		p.mu.Lock()
		n := len(p.confirmed)
		p.mu.Unlock()
		waitConfirmed(p, n+20, "confirms after the kill")
	}
	close(stop)
	wg.Wait()

	// The killed node and then ctl4 restart with their data (ctl4's
	// etcd.conf still says existing): each rejoins as the member it was,
	// ctl4 with its etcd member ID as raft ID.
	id4 := func() uint64 {
		var st struct {
			ID uint64 `json:"id"`
		}
		resp, err := bc.peerClient.Get(fmt.Sprintf("%s://%s:%d/substrate/status", bc.peerScheme, n4.host, bc.peerPort))
		if err == nil {
			json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
		}
		return st.ID
	}
	before := id4()
	if before != add.Member.ID {
		t.Errorf("ctl4's raft ID %x, want its etcd member ID %x", before, add.Member.ID)
	}
	bc.start(l)
	bc.nodes[l].p.waitReady(60 * time.Second)
	lead, _ := bc.status(nl)
	waitStatus(t, bc, l, 30*time.Second, fmt.Sprintf("ctl%d rejoined and caught up", l+1), func(st nodeStatus) bool { return st.Applied >= lead.Applied })
	bc.nodes[3].p.stop(syscall.SIGKILL)
	bc.start(3)
	bc.nodes[3].p.waitReady(60 * time.Second)
	nl, lead = bc.leader(10*time.Second, -1)
	waitStatus(t, bc, 3, 30*time.Second, "ctl4 rejoined and caught up", func(st nodeStatus) bool { return st.Applied >= lead.Applied })
	if after := id4(); after != before {
		t.Errorf("ctl4's raft ID after its restart %x, before %x", after, before)
	}

	// Every confirmed message is in the queues.
	c, err := amqp091.Dial(bc.url(nl))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ch, err := c.Channel()
	if err != nil {
		t.Fatal(err)
	}
	for i := range burst {
		m, ok, err := ch.Get("burst", true)
		if err != nil || !ok || string(m.Body) != fmt.Sprintf("b%d", i) {
			t.Fatalf("burst message %d: %q %v %v", i, m.Body, ok, err)
		}
	}
	seen := map[int]map[int]bool{0: {}, 1: {}}
	for {
		m, ok, err := ch.Get("cq", true)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		var id, seq int
		if _, err := fmt.Sscanf(string(m.Body), "%d-%d", &id, &seq); err != nil || seen[id] == nil {
			t.Fatalf("body %q", m.Body)
		}
		seen[id][seq] = true
	}
	for _, p := range pubs {
		lost := 0
		for seq := range p.confirmed {
			if !seen[p.id][seq] {
				lost++
			}
		}
		if lost > 0 {
			t.Errorf("publisher %d: %d of %d confirmed messages lost", p.id, lost, len(p.confirmed))
		}
		t.Logf("publisher %d: %d confirmed, all present; %d connection errors", p.id, len(p.confirmed), p.errors)
	}
	t.Logf("whole test %v", time.Since(start).Round(time.Millisecond))
}
