package replica

import (
	"bytes"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"substrate/broker/store"
	"substrate/internal/logging"
	"substrate/internal/raftnode"
)

var _ Proposer = (*raftnode.Node)(nil)

// rnode is one member of a three-node raftnode group over StateMachines.
type rnode struct {
	id   uint64
	dir  string
	sm   *StateMachine
	n    *raftnode.Node
	mu   sync.Mutex
	role raftnode.Role
	done chan struct{}
}

type rcluster struct {
	t     *testing.T
	peers map[uint64]string
	nodes map[uint64]*rnode
}

// newRaftCluster starts three nodes on 127.0.0.11-13, port 0, with short
// ticks and a snapshot every 50 entries (so followers catch up from
// snapshots).
func newRaftCluster(t *testing.T) *rcluster {
	c := &rcluster{t: t, peers: map[uint64]string{}, nodes: map[uint64]*rnode{}}
	lns := map[uint64]net.Listener{}
	for id := uint64(1); id <= 3; id++ {
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.%d:0", 10+id))
		if err != nil {
			t.Fatal(err)
		}
		lns[id] = ln
		c.peers[id] = "http://" + ln.Addr().String()
		c.nodes[id] = &rnode{id: id, dir: t.TempDir()}
	}
	t.Cleanup(func() {
		for _, rn := range c.nodes {
			if rn.n != nil {
				rn.n.Stop()
				<-rn.done
			}
		}
	})
	for id := uint64(1); id <= 3; id++ {
		c.start(id, lns[id])
	}
	return c
}

// start (re)starts node id from its directory with a new StateMachine,
// as a new process would.
func (c *rcluster) start(id uint64, ln net.Listener) {
	c.t.Helper()
	rn := c.nodes[id]
	rn.sm = NewStateMachine()
	n, err := raftnode.Start(raftnode.Config{ID: id, Peers: c.peers, Dir: rn.dir, Listener: ln,
		TickInterval: 20 * time.Millisecond, ElectionTicks: 10, SnapshotEntries: 50, Logger: logging.Discard()}, rn.sm)
	if err != nil {
		c.t.Fatalf("start node %d: %v", id, err)
	}
	rn.mu.Lock()
	rn.n, rn.role = n, raftnode.Role{}
	rn.mu.Unlock()
	rn.done = make(chan struct{})
	go func() {
		defer close(rn.done)
		for r := range n.Roles() {
			rn.mu.Lock()
			rn.role = r
			rn.mu.Unlock()
		}
	}()
}

func (c *rcluster) stop(id uint64) {
	rn := c.nodes[id]
	rn.n.Stop()
	<-rn.done
	rn.n = nil
}

// waitLeader waits for a node whose latest role is a Ready leader.
func (c *rcluster) waitLeader() *rnode {
	c.t.Helper()
	var lead *rnode
	waitFor(c.t, "a Ready leader", func() bool {
		for _, rn := range c.nodes {
			rn.mu.Lock()
			ok := rn.n != nil && rn.role.IsLeader && rn.role.Ready
			rn.mu.Unlock()
			if ok {
				lead = rn
				return true
			}
		}
		return false
	})
	return lead
}

// waitEqual waits until every running node's state equals the leader's.
func (c *rcluster) waitEqual(lead *rnode) {
	c.t.Helper()
	waitFor(c.t, "equal replicas", func() bool {
		want, _ := lead.sm.Snapshot()
		for _, rn := range c.nodes {
			if rn.n == nil {
				continue
			}
			got, _ := rn.sm.Snapshot()
			// The applied index may differ (an empty entry of a new
			// term); the state after it may not.
			if !bytes.Equal(got[13:len(got)-4], want[13:len(want)-4]) {
				return false
			}
		}
		return true
	})
}

// TestOverRaft runs the Log over a real three-node raftnode group:
// publishers confirm through Raft, the leader stops, the next leader's
// Log recovers exactly the confirmed, unacked messages (redelivered, in
// order), and a node restarted after missing many entries catches up.
func TestOverRaft(t *testing.T) {
	if testing.Short() {
		t.Skip("three Raft nodes")
	}
	c := newRaftCluster(t)
	lead := c.waitLeader()
	l := NewLog(lead.sm, lead.n)

	type key struct {
		q string
		i int
	}
	var mu sync.Mutex
	kept := map[store.ID]key{}
	var wg sync.WaitGroup
	for p := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			q := fmt.Sprintf("q%d", p)
			for i := range 150 {
				id, cm, err := l.Append(&store.Message{Queue: q, Body: fmt.Appendf(nil, "%s-%d", q, i)})
				if err != nil {
					t.Error(err)
					return
				}
				if i%10 == 9 { // confirm-mode publisher: wait now and then
					if err := cm.Wait(); err != nil {
						t.Error(err)
						return
					}
				}
				mu.Lock()
				switch i % 3 {
				case 0:
					l.Ack(id)
				case 1:
					l.Delivered(id)
					kept[id] = key{q, i}
				default:
					kept[id] = key{q, i}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	settle(t, l)
	c.waitEqual(lead)
	if s := l.Stats(); s.Syncs == 0 || s.Syncs >= 600 {
		t.Fatalf("Stats = %+v: want several records per entry", s)
	}

	// The leader stops: its Log fails what it still gets, the next leader
	// recovers the rest.
	stoppedAt := lead.n.Status().Applied
	c.stop(lead.id)
	_, cm, err := l.Append(&store.Message{Queue: "q0", Body: []byte("late")})
	if err == nil {
		if err := cm.Wait(); err == nil {
			t.Fatal("an append confirmed after the node stopped")
		}
	}
	l.Close()
	old := lead
	lead = c.waitLeader()
	l = NewLog(lead.sm, lead.n)
	defer func() { l.Close() }()
	es := recovered(t, l)
	if len(es) != len(kept) {
		t.Fatalf("recovered %d, want %d", len(es), len(kept))
	}
	last := map[string]int{}
	for _, e := range es {
		k, ok := kept[e.ID]
		if !ok || e.Queue != k.q || !e.Redelivered {
			t.Fatalf("recovered %+v, want %+v redelivered", e, k)
		}
		if prev, ok := last[k.q]; ok && k.i <= prev {
			t.Fatalf("queue %s: %d after %d", k.q, k.i, prev)
		}
		last[k.q] = k.i
		m, err := l.Read(e.ID)
		if err != nil || string(m.Body) != fmt.Sprintf("%s-%d", k.q, k.i) {
			t.Fatalf("Read(%d) = %v, %v", e.ID, m, err)
		}
		want := uint32(0)
		if k.i%3 == 1 {
			want = 1
		}
		if e.Deliveries != want {
			t.Fatalf("entry %+v: deliveries %d, want %d", e, e.Deliveries, want)
		}
	}

	// Many entries while the old leader is down, then it restarts with an
	// empty state machine and catches up (from a snapshot: the leader
	// keeps only 50 entries behind its last one).
	for i := range 120 {
		_, cm, err := l.Append(&store.Message{Queue: "q9", Body: []byte{byte(i)}})
		if err != nil {
			t.Fatal(err)
		}
		if err := cm.Wait(); err != nil {
			t.Fatal(err)
		}
	}
	_, cm, _ = l.DropQueue("q1")
	if err := cm.Wait(); err != nil {
		t.Fatal(err)
	}
	settle(t, l)
	c.start(old.id, nil)
	c.waitEqual(lead)
	if si := c.nodes[old.id].n.Status().SnapshotIndex; si <= stoppedAt {
		t.Fatalf("restarted node's snapshot index %d, stopped at %d: it did not catch up from the leader's snapshot", si, stoppedAt)
	}
	if st := c.nodes[old.id].sm.Stats(); st.Live != l.Len() || st.Bad != 0 {
		t.Fatalf("restarted node: %+v, leader's log has %d", st, l.Len())
	}
}
