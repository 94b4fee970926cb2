package raftnode

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"
)

// changeMember runs one membership change on the leader and returns
// done's error.
func (c *tcluster) changeMember(lead uint64, op MemberChange, m Member) error {
	c.t.Helper()
	res := make(chan error, 1)
	c.nodes[lead].n.ChangeMember(op, m, func(err error) { res <- err })
	select {
	case err := <-res:
		return err
	case <-time.After(20 * time.Second):
		c.t.Fatalf("%s %d: done not called within 20 s", op, m.ID)
		return nil
	}
}

// memberIDs is a table's IDs, with learners marked "L".
func memberIDs(ms []Member) string {
	var b bytes.Buffer
	for _, m := range ms {
		fmt.Fprintf(&b, "%d", m.ID)
		if m.Learner {
			b.WriteString("L")
		}
		fmt.Fprintf(&b, "=%s@%s ", m.Name, m.URL)
	}
	return b.String()
}

// proposer keeps one proposal at a time in flight on the node that
// leads, counting those applied; any failure is recorded.
type proposer struct {
	c      *tcluster
	ok     atomic.Int64
	mu     sync.Mutex
	failed []error
	stop   chan struct{}
	done   chan struct{}
	names  []string // applied, in order
}

func startProposer(c *tcluster, lead uint64) *proposer {
	p := &proposer{c: c, stop: make(chan struct{}), done: make(chan struct{})}
	n := c.nodes[lead].n
	go func() {
		defer close(p.done)
		for i := 0; ; i++ {
			select {
			case <-p.stop:
				return
			default:
			}
			d := fmt.Sprintf("bg-%05d", i)
			res := make(chan error, 1)
			n.Propose([]byte(d), func(err error) { res <- err })
			if err := <-res; err != nil {
				p.mu.Lock()
				p.failed = append(p.failed, err)
				p.mu.Unlock()
				return
			}
			p.mu.Lock()
			p.names = append(p.names, d)
			p.mu.Unlock()
			p.ok.Add(1)
		}
	}()
	return p
}

func (p *proposer) end(t *testing.T) []string {
	t.Helper()
	close(p.stop)
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.failed) > 0 {
		t.Fatalf("background proposals failed: %v", p.failed)
	}
	return slices.Clone(p.names)
}

// waitMore waits until the proposer committed more entries than now.
func (p *proposer) waitMore(t *testing.T, what string) {
	t.Helper()
	from := p.ok.Load()
	waitFor(t, 10*time.Second, "proposals to keep committing "+what, func() bool { return p.ok.Load() >= from+10 })
}

// TestMembershipChanges: a fourth node started with Join (no bootstrap)
// is added to a running three-node group as a learner and catches up
// from the leader's snapshot (the log was compacted past it); it is
// promoted to voter; then a voter is removed. Proposals keep committing
// throughout. The removed node stops, its messages are refused, and
// restarted it stops again without disturbing the group. The new voter
// counts for quorum (with one old voter stopped, the leader and it
// commit). Every node restarted from its Dir (snapshot + WAL) has the
// same member table.
func TestMembershipChanges(t *testing.T) {
	c := newCluster(t, 50, func(c *tcluster) { c.clusterID = 0x5eed })
	lead := c.waitLeader(electionWait)
	c.proposeAll(c.nodes[lead], names("a", 300))
	c.waitSame(c.nodes[lead].sm.list())
	waitFor(t, 5*time.Second, "a leader snapshot", func() bool { return c.nodes[lead].n.Status().SnapshotIndex >= 250 })

	// The new node: a large ID (an etcd member ID), its own listener.
	const id4 = uint64(0x8e9e05c52164694d)
	ln, err := net.Listen("tcp", "127.0.0.14:0")
	if err != nil {
		t.Skipf("cannot listen on 127.0.0.14: %v", err)
	}
	c.nodes[id4] = &tnode{id: id4, dir: t.TempDir(), join: true, url: "http://" + ln.Addr().String()}
	c.start(id4, ln)
	if ms := c.nodes[id4].n.Members(); len(ms) != 0 {
		t.Fatalf("a joining node's table before it is added: %s", memberIDs(ms))
	}

	bg := startProposer(c, lead)
	bg.waitMore(t, "before the add")
	if err := c.changeMember(lead, AddLearner, Member{ID: id4, URL: c.nodes[id4].url, Name: "n4", Tag: 4}); err != nil {
		t.Fatalf("add learner: %v", err)
	}
	// A second add of the same ID is refused.
	if err := c.changeMember(lead, AddLearner, Member{ID: id4, URL: c.nodes[id4].url}); !errors.Is(err, ErrChangeRefused) {
		t.Fatalf("adding the learner again: %v, want ErrChangeRefused", err)
	}
	waitFor(t, 10*time.Second, "the learner to catch up", func() bool {
		return c.nodes[id4].n.Status().Applied >= c.nodes[lead].n.Status().Commit
	})
	if got := c.leaderRestores(id4); got < 1 {
		t.Fatalf("the learner restored %d snapshots from the leader, want one (the log was compacted)", got)
	}
	bg.waitMore(t, "with a learner")
	ls := c.nodes[lead].n.Status()
	if got := memberIDs(ls.Members); !ls.Members[3].Learner || len(ls.Members) != 4 {
		t.Fatalf("leader's table after the add: %s", got)
	}
	if pr, ok := ls.Progress[id4]; !ok || pr.Match == 0 {
		t.Fatalf("leader's progress of the learner: %+v %v", pr, ok)
	}
	// The learner knows every member (from the snapshot's table), names
	// included, and who leads.
	waitFor(t, 5*time.Second, "the learner's table", func() bool {
		return memberIDs(c.nodes[id4].n.Members()) == memberIDs(c.nodes[lead].n.Members())
	})
	if s := c.nodes[id4].n.Status(); s.Leader != lead || s.Members[0].Name != "n1" {
		t.Fatalf("learner status: leader %d, members %s", s.Leader, memberIDs(s.Members))
	}

	if err := c.changeMember(lead, Promote, Member{ID: id4}); err != nil {
		t.Fatalf("promote: %v", err)
	}
	if err := c.changeMember(lead, Promote, Member{ID: id4}); !errors.Is(err, ErrChangeRefused) {
		t.Fatalf("promoting a voter: %v, want ErrChangeRefused", err)
	}
	if err := c.changeMember(lead, Remove, Member{ID: lead}); !errors.Is(err, ErrChangeRefused) {
		t.Fatalf("the leader removing itself: %v, want ErrChangeRefused", err)
	}
	bg.waitMore(t, "after the promotion")

	var gone, other uint64 // two old followers: one is removed
	for id := uint64(1); id <= 3; id++ {
		if id != lead {
			if gone == 0 {
				gone = id
			} else {
				other = id
			}
		}
	}
	if err := c.changeMember(lead, Remove, Member{ID: gone}); err != nil {
		t.Fatalf("remove %d: %v", gone, err)
	}
	bg.waitMore(t, "after the removal")
	select {
	case <-c.nodes[gone].done: // Roles closed: the removed node stopped itself
	case <-time.After(10 * time.Second):
		t.Fatalf("removed node %d still running", gone)
	}
	c.stop(gone)
	if err := c.changeMember(lead, AddLearner, Member{ID: gone, URL: c.peers[gone]}); !errors.Is(err, ErrChangeRefused) {
		t.Fatalf("re-adding a removed ID: %v, want ErrChangeRefused", err)
	}
	// Its messages are refused.
	tr := transportRaft{c.nodes[lead].n}
	if !tr.IsIDRemoved(gone) || tr.IsIDRemoved(other) {
		t.Fatalf("IsIDRemoved(%d) = %v, IsIDRemoved(%d) = %v", gone, tr.IsIDRemoved(gone), other, tr.IsIDRemoved(other))
	}
	hb := &raftpb.Message{Type: raftpb.MsgHeartbeat.Enum(), From: new(gone), To: new(lead), Term: new(ls.Term + 5)}
	if err := tr.Process(t.Context(), hb); !errors.As(err, new(removedError)) {
		t.Fatalf("a removed member's message: %v", err)
	}
	term := c.nodes[lead].n.Status().Term
	// Restarted, it stops again (it replays its removal, or the others
	// refuse it), and the group's term does not move.
	c.start(gone, nil)
	select {
	case <-c.nodes[gone].done:
	case <-time.After(15 * time.Second):
		t.Fatalf("restarted removed node %d still running", gone)
	}
	c.stop(gone)
	if s := c.nodes[lead].n.Status(); s.Term != term || !s.IsLeader {
		t.Fatalf("the removed node disturbed the group: term %d -> %d, leader %v", term, s.Term, s.IsLeader)
	}
	want := memberIDs(c.nodes[lead].n.Members())
	for _, id := range []uint64{lead, other, id4} {
		if !bytes.Contains([]byte(want), fmt.Appendf(nil, "%d=", id)) {
			t.Fatalf("table after the changes lacks %d: %s", id, want)
		}
	}
	if bytes.Contains([]byte(want), fmt.Appendf(nil, "%d=", gone)) || bytes.Contains([]byte(want), []byte("L=")) {
		t.Fatalf("table after the changes: %s", want)
	}

	// The new voter counts: with the other old follower stopped, the
	// leader commits with the new node's acknowledgements alone.
	c.stop(other)
	bg.waitMore(t, "with the new voter as the quorum's second")
	applied := bg.end(t)
	c.start(other, nil)
	all := c.nodes[lead].sm.list()
	for _, d := range applied {
		if !slices.Contains(all, d) {
			t.Fatalf("%s: done(nil) but not applied", d)
		}
	}
	c.waitSame(all)
	t.Logf("%d background proposals committed during the changes", len(applied))

	// Every node restarted from its Dir: the same table, the removed ID
	// still refused, and the group works.
	for _, tn := range c.running() {
		c.stop(tn.id)
	}
	for _, id := range []uint64{lead, other, id4} {
		c.start(id, nil)
	}
	c.waitSame(all)
	newLead := c.waitLeader(electionWait)
	for _, tn := range c.running() {
		if got := memberIDs(tn.n.Members()); got != want {
			t.Errorf("node %d's table after the restart: %s, want %s", tn.id, got, want)
		}
		if !(transportRaft{tn.n}).IsIDRemoved(gone) {
			t.Errorf("node %d forgot that %d was removed", tn.id, gone)
		}
	}
	more := names("z", 20)
	c.proposeAll(c.nodes[newLead], more)
	c.waitSame(append(all, more...))
}

func TestSnapTable(t *testing.T) {
	n := &Node{members: map[uint64]Member{
		2: {ID: 2, URL: "http://127.0.0.12:1", Name: "b", Tag: 7},
		1: {ID: 1, URL: "http://127.0.0.11:1", Name: "a"},
	}, removed: map[uint64]bool{3: true}}
	b, err := n.encodeSnap([]byte("SRSN-data"))
	if err != nil {
		t.Fatal(err)
	}
	tab, data, err := decodeSnap(b)
	if err != nil || string(data) != "SRSN-data" || tab == nil || len(tab.Members) != 2 || tab.Members[0].ID != 1 ||
		tab.Members[1].Tag != 7 || !slices.Equal(tab.Removed, []uint64{3}) {
		t.Fatalf("round trip: %+v %q %v", tab, data, err)
	}
	// A snapshot written before the table: the state machine's alone.
	if tab, data, err := decodeSnap([]byte("SRSN-old")); tab != nil || string(data) != "SRSN-old" || err != nil {
		t.Fatalf("legacy snapshot: %+v %q %v", tab, data, err)
	}
	for _, bad := range [][]byte{snapMagic, append(slices.Clone(snapMagic), 0, 0, 0, 9, '{'), append(slices.Clone(snapMagic), 0, 0, 0, 1, '{')} {
		if _, _, err := decodeSnap(bad); err == nil {
			t.Errorf("decodeSnap(%q) accepted", bad)
		}
	}
}

func TestLocalID(t *testing.T) {
	dir := t.TempDir()
	if id, joined, err := LocalID(dir); id != 0 || joined || err != nil || HasLog(dir) {
		t.Fatalf("empty dir: %d %v %v %v", id, joined, err, HasLog(dir))
	}
	if err := writeIdentity(dir, identity{ID: 1 << 60, Joined: true}); err != nil {
		t.Fatal(err)
	}
	if id, joined, err := LocalID(dir); id != 1<<60 || !joined || err != nil {
		t.Fatalf("recorded: %d %v %v", id, joined, err)
	}
	// Start refuses a Dir that belongs to another ID.
	ln, err := net.Listen("tcp", "127.0.0.11:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peers := map[uint64]string{1: "http://" + ln.Addr().String()}
	n, err := Start(Config{ID: 1, Peers: peers, Dir: dir, Listener: ln, TickInterval: testTick}, &testSM{})
	if err != nil {
		t.Fatal(err) // no WAL yet: a new member (its record is rewritten)
	}
	n.Stop()
	if id, _, _ := LocalID(dir); id != 1 {
		t.Fatalf("record after a bootstrap: %d", id)
	}
	ln2, err := net.Listen("tcp", "127.0.0.11:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln2.Close()
	if n, err := Start(Config{ID: 2, Peers: map[uint64]string{2: "http://" + ln2.Addr().String()}, Dir: dir, Listener: ln2, TickInterval: testTick}, &testSM{}); err == nil {
		n.Stop()
		t.Fatal("Start with another ID on a member's Dir succeeded")
	}
}

// TestRestartWithoutIdentity: a Dir from before member.json existed (a
// log, no record) restarts with the configured ID, and the record is
// written then.
func TestRestartWithoutIdentity(t *testing.T) {
	c := newCluster(t, 50)
	lead := c.waitLeader(electionWait)
	c.proposeAll(c.nodes[lead], names("w", 80))
	want := c.nodes[lead].sm.list()
	c.waitSame(want)
	for id := uint64(1); id <= 3; id++ {
		c.stop(id)
		if err := os.Remove(filepath.Join(c.nodes[id].dir, idFile)); err != nil {
			t.Fatal(err)
		}
	}
	for id := uint64(1); id <= 3; id++ {
		c.start(id, nil)
	}
	c.waitSame(want)
	for id := uint64(1); id <= 3; id++ {
		if got, joined, err := LocalID(c.nodes[id].dir); got != id || joined || err != nil {
			t.Errorf("node %d's record after the restart: %d %v %v", id, got, joined, err)
		}
		if ms := c.nodes[id].n.Members(); len(ms) != 3 || ms[2].Name != "n3" {
			t.Errorf("node %d's table: %s", id, memberIDs(ms))
		}
	}
	lead = c.waitLeader(electionWait)
	c.proposeAll(c.nodes[lead], []string{"after"})
}

// FuzzDecodeSnap: a snapshot's data comes from the leader over the
// network: decodeSnap never panics, and what it accepts with a table
// encodes back to the same table.
func FuzzDecodeSnap(f *testing.F) {
	n := &Node{members: map[uint64]Member{1: {ID: 1, URL: "http://127.0.0.11:1", Name: "a", Tag: 9}}, removed: map[uint64]bool{2: true}}
	good, _ := n.encodeSnap([]byte("data"))
	f.Add(good)
	f.Add([]byte("SRSN"))
	f.Add(append(slices.Clone(snapMagic), 0xff, 0xff, 0xff, 0xff))
	f.Fuzz(func(t *testing.T, b []byte) {
		tab, data, err := decodeSnap(b)
		if err != nil || tab == nil {
			return
		}
		m := &Node{members: map[uint64]Member{}, removed: map[uint64]bool{}}
		m.restoreTable(tab)
		again, err := m.encodeSnap(data)
		if err != nil {
			t.Fatal(err)
		}
		tab2, data2, err := decodeSnap(again)
		if err != nil || !bytes.Equal(data, data2) || len(tab2.Members) != len(m.members) || len(tab2.Removed) != len(m.removed) {
			t.Fatalf("round trip: %v %+v", err, tab2)
		}
	})
}
