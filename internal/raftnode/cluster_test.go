package raftnode

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/types"
)

// Short ticks: elections in 500-1000 ms (shorter ones flap under -race
// on a loaded two-core machine).
const (
	testTick     = 50 * time.Millisecond
	testElection = 10
	// electionWait bounds elections other than the failover the issue
	// times (5 s from the stop): at start-up every vote waits for an
	// fsync, which takes seconds when the disk is busy with other tests.
	electionWait = 15 * time.Second
)

// testSM is the ordered list of applied data; its snapshot is that list.
type testSM struct {
	mu       sync.Mutex
	data     []string
	lastIdx  uint64
	restores int
	badOrder string
	panicOn  string // Apply panics on this data
}

func (s *testSM) Apply(index uint64, data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.panicOn != "" && string(data) == s.panicOn {
		panic("testSM: told to panic on " + s.panicOn)
	}
	if index <= s.lastIdx && s.badOrder == "" {
		s.badOrder = fmt.Sprintf("Apply(%d) after %d", index, s.lastIdx)
	}
	s.lastIdx = index
	s.data = append(s.data, string(data))
}

type testSnap struct {
	Data    []string
	LastIdx uint64
}

func (s *testSM) Snapshot() ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return json.Marshal(testSnap{s.data, s.lastIdx})
}

func (s *testSM) Restore(b []byte) error {
	var ts testSnap
	if err := json.Unmarshal(b, &ts); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.data, s.lastIdx = ts.Data, ts.LastIdx
	s.restores++
	return nil
}

func (s *testSM) list() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.data)
}

func (s *testSM) has(d string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Contains(s.data, d)
}

// tnode is one member of a test cluster and what the test saw of it.
type tnode struct {
	id   uint64
	dir  string
	sm   *testSM
	n    *Node
	mu   sync.Mutex
	role Role
	done chan struct{} // closed when Roles was closed
	// A member that joined (membership_test.go): its own URL, started
	// with Join.
	join bool
	url  string
}

func (tn *tnode) latestRole() Role {
	tn.mu.Lock()
	defer tn.mu.Unlock()
	return tn.role
}

type tcluster struct {
	t           *testing.T
	peers       map[uint64]string
	nodes       map[uint64]*tnode
	snapEntries uint64
	clusterID   uint64 // Config.ClusterID of every node (0: derived from peers)
}

// newCluster starts three nodes on 127.0.0.11-13 (port 0, so the real
// addresses make up Peers).
func newCluster(t *testing.T, snapEntries uint64, opts ...func(*tcluster)) *tcluster {
	t.Helper()
	base := runtime.NumGoroutine()
	c := &tcluster{t: t, peers: map[uint64]string{}, nodes: map[uint64]*tnode{}, snapEntries: snapEntries}
	for _, o := range opts {
		o(c)
	}
	lns := map[uint64]net.Listener{}
	for id := uint64(1); id <= 3; id++ {
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.%d:0", 10+id))
		if err != nil {
			t.Fatal(err)
		}
		lns[id] = ln
		c.peers[id] = "http://" + ln.Addr().String()
	}
	for id := uint64(1); id <= 3; id++ {
		c.nodes[id] = &tnode{id: id, dir: t.TempDir()}
	}
	t.Cleanup(func() {
		for _, tn := range c.nodes {
			if tn.n != nil {
				tn.n.Stop()
				<-tn.done
			}
		}
		noLeak(t, base) // every test ends with no goroutine of its nodes left
	})
	for id := uint64(1); id <= 3; id++ {
		c.start(id, lns[id])
	}
	return c
}

// start (re)starts node id from its Dir with a fresh state machine, as a
// new process would. ln nil: the node listens on its Peers address.
func (c *tcluster) start(id uint64, ln net.Listener) {
	c.t.Helper()
	tn := c.nodes[id]
	tn.sm = &testSM{}
	cfg := Config{
		ID: id, Peers: c.peers, Dir: tn.dir, Listener: ln,
		TickInterval: testTick, ElectionTicks: testElection,
		SnapshotEntries: c.snapEntries,
		Logger:          testLogger(),
		Names:           map[uint64]string{1: "n1", 2: "n2", 3: "n3"},
		ClusterID:       c.clusterID,
	}
	if tn.join {
		cfg.Peers, cfg.Join = map[uint64]string{id: tn.url}, true
	}
	n, err := Start(cfg, tn.sm)
	if err != nil {
		c.t.Fatalf("start node %d: %v", id, err)
	}
	tn.mu.Lock()
	tn.n, tn.role = n, Role{}
	tn.mu.Unlock()
	tn.done = make(chan struct{})
	go func(done chan struct{}) {
		defer close(done)
		for r := range n.Roles() {
			tn.mu.Lock()
			tn.role = r
			tn.mu.Unlock()
		}
	}(tn.done)
}

// stop stops node id and waits for its role reader.
func (c *tcluster) stop(id uint64) {
	tn := c.nodes[id]
	if err := tn.n.Stop(); err != nil {
		c.t.Fatal(err)
	}
	<-tn.done
	tn.n = nil
}

func (c *tcluster) running() []*tnode {
	var out []*tnode
	for _, id := range slices.Sorted(maps.Keys(c.nodes)) {
		if tn := c.nodes[id]; tn.n != nil {
			out = append(out, tn)
		}
	}
	return out
}

// readyLeader returns the one running node whose latest role is a Ready
// leader, when every running node agrees it leads; 0 otherwise.
func (c *tcluster) readyLeader() uint64 {
	var lead uint64
	for _, tn := range c.running() {
		r := tn.latestRole()
		if r.IsLeader && r.Ready {
			if lead != 0 {
				return 0
			}
			lead = tn.id
		}
	}
	if lead == 0 {
		return 0
	}
	for _, tn := range c.running() {
		if s := tn.n.Status(); s.Leader != lead {
			return 0
		}
	}
	return lead
}

func (c *tcluster) waitLeader(timeout time.Duration) uint64 {
	c.t.Helper()
	var lead uint64
	waitFor(c.t, timeout, "one Ready leader", func() bool { lead = c.readyLeader(); return lead != 0 })
	return lead
}

// waitSame waits until every running node applied want.
func (c *tcluster) waitSame(want []string) {
	c.t.Helper()
	waitFor(c.t, 10*time.Second, fmt.Sprintf("%d entries on every running node", len(want)), func() bool {
		for _, tn := range c.running() {
			if !slices.Equal(tn.sm.list(), want) {
				return false
			}
		}
		return true
	})
	for _, tn := range c.running() {
		tn.sm.mu.Lock()
		bad := tn.sm.badOrder
		tn.sm.mu.Unlock()
		if bad != "" {
			c.t.Errorf("node %d: %s", tn.id, bad)
		}
	}
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// outcomes records every done call of a set of proposals.
type outcomes struct {
	mu      sync.Mutex
	calls   map[string][]error
	applied map[string]bool // whether sm had the data when done(nil) ran
}

func newOutcomes() *outcomes {
	return &outcomes{calls: map[string][]error{}, applied: map[string]bool{}}
}

// propose proposes data on tn, recording done's calls.
func (o *outcomes) propose(tn *tnode, data string) error {
	return tn.n.Propose([]byte(data), func(err error) {
		had := err == nil && tn.sm.has(data)
		o.mu.Lock()
		defer o.mu.Unlock()
		o.calls[data] = append(o.calls[data], err)
		if err == nil {
			o.applied[data] = had
		}
	})
}

func (o *outcomes) called(d string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.calls[d]) > 0
}

func (o *outcomes) count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.calls)
}

// check: every proposal's done was called exactly once, only with nil
// or one of allowed, and nil only after its data was applied here.
func (o *outcomes) check(t *testing.T, names []string, allowed ...error) (ok, failed []string) {
	t.Helper()
	waitFor(t, 10*time.Second, "every done called", func() bool { return o.count() >= len(names) })
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, d := range names {
		errs := o.calls[d]
		if len(errs) != 1 {
			t.Errorf("%s: done called %d times: %v", d, len(errs), errs)
			continue
		}
		switch err := errs[0]; {
		case err == nil:
			if !o.applied[d] {
				t.Errorf("%s: done(nil) before Apply", d)
			}
			ok = append(ok, d)
		case slices.ContainsFunc(allowed, func(a error) bool { return errors.Is(err, a) }):
			failed = append(failed, d)
		default:
			t.Errorf("%s: done(%v), want nil or one of %v", d, err, allowed)
		}
	}
	return ok, failed
}

func names(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%03d", prefix, i)
	}
	return out
}

// proposeAll proposes every name on tn and waits for every done(nil).
func (c *tcluster) proposeAll(tn *tnode, list []string) {
	c.t.Helper()
	o := newOutcomes()
	for _, d := range list {
		if err := o.propose(tn, d); err != nil {
			c.t.Fatalf("Propose(%s) on leader %d: %v", d, tn.id, err)
		}
	}
	ok, _ := o.check(c.t, list)
	if len(ok) != len(list) {
		c.t.Fatalf("%d of %d proposals applied", len(ok), len(list))
	}
}

// noLeak polls until the goroutine count is back to base.
func noLeak(t *testing.T, base int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines left, %d before:\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestElectProposeApply: one Ready leader; a follower refuses proposals
// at once; the leader's proposals apply on all three in one order, each
// done(nil) after its Apply; Status agrees; nothing is left running.
func TestElectProposeApply(t *testing.T) {
	base := runtime.NumGoroutine()
	func() {
		c := newCluster(t, 0)
		lead := c.waitLeader(electionWait)
		var follower *tnode
		for _, tn := range c.running() {
			if tn.id != lead {
				follower = tn
			}
		}
		var got []error
		err := follower.n.Propose([]byte("x"), func(err error) { got = append(got, err) })
		if !errors.Is(err, ErrNotLeader) || len(got) != 1 || !errors.Is(got[0], ErrNotLeader) {
			t.Fatalf("follower Propose = %v, done got %v; want ErrNotLeader both", err, got)
		}

		want := names("a", 200)
		c.proposeAll(c.nodes[lead], want)
		c.waitSame(want)

		s := c.nodes[lead].n.Status()
		if !s.IsLeader || s.Leader != lead || s.ID != lead || s.Applied < uint64(len(want)) || len(s.Members) != 3 {
			t.Errorf("leader status %+v", s)
		}
		waitFor(t, 5*time.Second, "leader's Progress to show every match", func() bool {
			s := c.nodes[lead].n.Status()
			for id := uint64(1); id <= 3; id++ {
				if pr := s.Progress[id]; pr.Match < s.Applied || pr.State != "StateReplicate" || !pr.Active || pr.Next <= pr.Match || !strings.HasPrefix(pr.String(), "Replicate match=") {
					return false
				}
			}
			return true
		})
		if fs := follower.n.Status(); fs.IsLeader || fs.Progress != nil || fs.Leader != lead {
			t.Errorf("follower status %+v", fs)
		}
		for _, tn := range c.running() {
			c.stop(tn.id)
		}
	}()
	noLeak(t, base)
}

// TestLeaderStopFailover: the leader stops with proposals in flight: they
// end with nil (applied) or ErrStopped; a new Ready leader appears within
// 5 s; its proposals apply on the survivors; the old leader restarted
// from its Dir catches up to the same sequence.
func TestLeaderStopFailover(t *testing.T) {
	c := newCluster(t, 0)
	lead := c.waitLeader(electionWait)
	first := names("b", 50)
	c.proposeAll(c.nodes[lead], first)

	// A proposer keeps up to 64 proposals in flight until Propose fails,
	// so that the stop finds proposals queued, in raft, and being applied.
	o := newOutcomes()
	proposed := make(chan []string)
	leader := &tnode{id: lead, sm: c.nodes[lead].sm, n: c.nodes[lead].n}
	go func() {
		var list []string
		slots := make(chan struct{}, 64)
		for i := 0; ; i++ {
			slots <- struct{}{}
			d := fmt.Sprintf("c-%05d", i)
			list = append(list, d)
			if o.propose(leader, d) != nil {
				break
			}
			go func() {
				// Release the slot when done is called (polled: done runs
				// on the loop and must not block).
				for !o.called(d) {
					time.Sleep(time.Millisecond)
				}
				<-slots
			}()
		}
		proposed <- list
	}()
	waitFor(t, 5*time.Second, "200 in-flight proposals applied", func() bool {
		o.mu.Lock()
		defer o.mu.Unlock()
		return len(o.applied) >= 200
	})
	stopped := time.Now()
	c.stop(lead)
	inflight := <-proposed
	ok, failed := o.check(t, inflight, ErrStopped)
	t.Logf("in flight at stop: %d applied, %d ErrStopped", len(ok), len(failed))

	newLead := c.waitLeader(time.Until(stopped.Add(5 * time.Second))) // the bound
	if took := time.Since(stopped); took > 5*time.Second || newLead == lead {
		t.Fatalf("new leader %d after %v", newLead, took)
	} else {
		t.Logf("new Ready leader %d %v after the stop", newLead, took)
	}
	second := names("d", 50)
	c.proposeAll(c.nodes[newLead], second)
	// The survivors agree on everything; what was in flight is there when
	// its done said nil (and perhaps when it said ErrStopped).
	want := c.nodes[newLead].sm.list()
	for _, d := range append(slices.Clone(first), ok...) {
		if !slices.Contains(want, d) {
			t.Errorf("%s: done(nil) but not applied by the new leader", d)
		}
	}
	c.waitSame(want)

	c.start(lead, nil)
	c.waitSame(want)
	if c.readyLeader() == 0 {
		c.waitLeader(electionWait)
	}
}

// TestFollowerCatchUpBySnapshot: a follower stopped while the leader
// applies many more entries than it keeps in its log is sent a snapshot
// on restart (Restore with the leader's data, not only WAL replay) and
// ends with the same state.
func TestFollowerCatchUpBySnapshot(t *testing.T) {
	c := newCluster(t, 50)
	lead := c.waitLeader(electionWait)
	c.proposeAll(c.nodes[lead], names("e", 60))
	var f uint64
	for _, tn := range c.running() {
		if tn.id != lead {
			f = tn.id
			break
		}
	}
	c.waitSame(c.nodes[lead].sm.list())
	c.stop(f)
	c.proposeAll(c.nodes[lead], names("f", 400))
	want := c.nodes[lead].sm.list()
	waitFor(t, 5*time.Second, "a leader snapshot past 400", func() bool { return c.nodes[lead].n.Status().SnapshotIndex >= 400 })

	c.start(f, nil)
	localRestores := c.nodes[f].sm.restores // from its own snapshot at start
	c.waitSame(want)
	tn := c.nodes[f]
	tn.sm.mu.Lock()
	smRestores := tn.sm.restores
	tn.sm.mu.Unlock()
	fromLeader := c.leaderRestores(f)
	if fromLeader < 1 || smRestores <= localRestores {
		t.Fatalf("follower restores: %d from the leader, sm.Restore %d times (%d at start); want a snapshot from the leader",
			fromLeader, smRestores, localRestores)
	}
	// Old snapshot files are purged.
	snaps, _ := filepath.Glob(filepath.Join(c.nodes[lead].dir, "snap", "*.snap"))
	if len(snaps) == 0 || len(snaps) > keepFiles {
		t.Errorf("leader keeps %d snapshot files, want 1..%d", len(snaps), keepFiles)
	}
	// It keeps up afterwards too.
	more := names("g", 20)
	c.proposeAll(c.nodes[lead], more)
	c.waitSame(append(want, more...))
}

// leaderRestores is node id's count of snapshots received from the
// leader.
func (c *tcluster) leaderRestores(id uint64) int {
	n := c.nodes[id].n
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.restores
}

// TestRestartAll: all three stopped and restarted from their Dirs come
// back with the same state (from snapshot plus WAL) and keep working.
func TestRestartAll(t *testing.T) {
	c := newCluster(t, 50)
	lead := c.waitLeader(electionWait)
	c.proposeAll(c.nodes[lead], names("h", 130))
	want := c.nodes[lead].sm.list()
	c.waitSame(want)
	for id := uint64(1); id <= 3; id++ {
		c.stop(id)
	}
	for id := uint64(1); id <= 3; id++ {
		c.start(id, nil)
	}
	c.waitSame(want)
	lead = c.waitLeader(electionWait)
	more := names("i", 10)
	c.proposeAll(c.nodes[lead], more)
	c.waitSame(append(want, more...))
}

// TestLeadershipLostPending: the leader is cut off from both followers
// (rafthttp's CutPeer, both ways) with proposals pending. CheckQuorum
// makes it step down: every pending done is called once with
// ErrLeadershipLost (never nil: nothing it proposed alone can commit);
// the others elect a leader; healed, all three agree and none of the
// failed entries was applied.
func TestLeadershipLostPending(t *testing.T) {
	c := newCluster(t, 0)
	lead := c.waitLeader(electionWait)
	c.proposeAll(c.nodes[lead], names("j", 20))
	c.waitSame(c.nodes[lead].sm.list())

	cut := func(heal bool) { c.cut(lead, heal) }
	cut(false)
	isolated := names("k", 30)
	o := newOutcomes()
	for _, d := range isolated {
		if err := o.propose(c.nodes[lead], d); err != nil {
			t.Fatal(err)
		}
	}
	ok, failed := o.check(t, isolated, ErrLeadershipLost)
	if len(ok) != 0 || len(failed) != len(isolated) {
		t.Fatalf("isolated leader: %d done(nil), %d ErrLeadershipLost; want 0 and %d", len(ok), len(failed), len(isolated))
	}
	// Its role is published just after the proposals failed.
	waitFor(t, 5*time.Second, "the isolated leader to step down", func() bool { return !c.nodes[lead].latestRole().IsLeader })
	if err := c.nodes[lead].n.Propose([]byte("late"), nil); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("Propose on the deposed leader = %v, want ErrNotLeader", err)
	}
	cut(true)
	newLead := c.waitLeader(electionWait)
	more := names("l", 10)
	c.proposeAll(c.nodes[newLead], more)
	want := c.nodes[newLead].sm.list()
	c.waitSame(want)
	for _, d := range isolated {
		if slices.Contains(want, d) {
			t.Errorf("%s: applied although its leader was isolated", d)
		}
	}
}

// cut cuts node id off from the others (rafthttp drops every message
// between them, their connections stay open: a partition, or a frozen
// process), or heals it.
func (c *tcluster) cut(id uint64, heal bool) {
	for _, tn := range c.running() {
		for _, other := range c.running() {
			if tn.id == other.id || (tn.id != id && other.id != id) {
				continue
			}
			if heal {
				tn.n.transport.MendPeer(types.ID(other.id))
			} else {
				tn.n.transport.CutPeer(types.ID(other.id))
			}
		}
	}
}

// TestFollowersStoppedPending: both followers stop while the leader has
// proposals pending; the leader steps down (CheckQuorum) and fails them
// with ErrLeadershipLost; restarted, the three elect a leader and agree.
func TestFollowersStoppedPending(t *testing.T) {
	c := newCluster(t, 0)
	lead := c.waitLeader(electionWait)
	c.proposeAll(c.nodes[lead], names("m", 10))
	c.waitSame(c.nodes[lead].sm.list())
	var fs []uint64
	for _, tn := range c.running() {
		if tn.id != lead {
			fs = append(fs, tn.id)
		}
	}
	for _, id := range fs {
		c.stop(id)
	}
	pend := names("n", 20)
	o := newOutcomes()
	for _, d := range pend {
		if err := o.propose(c.nodes[lead], d); err != nil {
			t.Fatal(err)
		}
	}
	ok, failed := o.check(t, pend, ErrLeadershipLost)
	if len(ok) != 0 || len(failed) != len(pend) {
		t.Fatalf("%d done(nil), %d ErrLeadershipLost; want 0 and %d", len(ok), len(failed), len(pend))
	}
	for _, id := range fs {
		c.start(id, nil)
	}
	newLead := c.waitLeader(electionWait)
	more := names("o", 10)
	c.proposeAll(c.nodes[newLead], more)
	c.waitSame(c.nodes[newLead].sm.list())
}

// TestApplyPanicStopsNode: a panic in the state machine stops that node
// (pending proposals fail with ErrStopped, Roles closes) and not the
// process; Stop stays idempotent.
func TestApplyPanicStopsNode(t *testing.T) {
	base := runtime.NumGoroutine()
	func() {
		c := newCluster(t, 0)
		lead := c.waitLeader(electionWait)
		tn := c.nodes[lead]
		tn.sm.mu.Lock()
		tn.sm.panicOn = "boom"
		tn.sm.mu.Unlock()
		o := newOutcomes()
		list := []string{"boom", "after-1", "after-2"}
		for _, d := range list {
			if err := o.propose(tn, d); err != nil {
				t.Fatal(err)
			}
		}
		_, failed := o.check(t, list, ErrStopped)
		if len(failed) != len(list) {
			t.Fatalf("%d of %d failed with ErrStopped", len(failed), len(list))
		}
		<-tn.done // Roles closed
		if err := tn.n.Propose([]byte("x"), nil); !errors.Is(err, ErrStopped) {
			t.Fatalf("Propose after the panic = %v", err)
		}
		tn.n.Stop()
		tn.n.Stop()
		tn.n = nil
		// The others carry on (and applied "boom" without panicking).
		newLead := c.waitLeader(electionWait)
		c.proposeAll(c.nodes[newLead], []string{"p"})
		for _, x := range c.running() {
			c.stop(x.id)
		}
	}()
	noLeak(t, base)
}

// testLogger discards, or with RAFTNODE_LOG=1 writes info and above to
// stderr (to read an election or a catch-up when debugging a test).
func testLogger() *slog.Logger {
	if os.Getenv("RAFTNODE_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.DiscardHandler)
}

// TestLeaseFencesIsolatedLeader: the leader holds its lease while a
// quorum hears it, followers never do; cut off with its connections open
// (a frozen process, a partition), its lease lapses within the lease
// duration and before the others have a new leader; once it stepped down
// its lease's Wait says never, and the new leader's Wait says yes.
func TestLeaseFencesIsolatedLeader(t *testing.T) {
	c := newCluster(t, 0)
	lead := c.waitLeader(electionWait)
	ln := c.nodes[lead].n
	term := ln.Status().Term
	lease := ln.Lease(term)
	waitFor(t, 5*time.Second, "the leader's lease", lease.Held)
	for _, tn := range c.running() {
		if tn.id != lead && (tn.n.Lease(term).Held() || tn.n.Lease(term).Wait()) {
			t.Errorf("follower %d holds term %d's lease", tn.id, term)
		}
	}

	c.cut(lead, false)
	cut := time.Now()
	var lastHeld time.Time
	var newLead uint64
	for newLead == 0 {
		// The new leader first, then the old lease: a lease held once
		// another leader was seen is the failure.
		for _, tn := range c.running() {
			if r := tn.latestRole(); tn.id != lead && r.IsLeader && r.Term > term {
				newLead = tn.id
			}
		}
		if lease.Held() {
			lastHeld = time.Now()
			if newLead != 0 {
				t.Fatalf("node %d leads a later term while the cut-off leader %d still holds its lease", newLead, lead)
			}
		}
		if time.Since(cut) > 10*time.Second {
			t.Fatal("no new leader within 10 s of cutting the leader off")
		}
		time.Sleep(time.Millisecond)
	}
	elected := time.Since(cut)
	if held := lastHeld.Sub(cut); held > ln.cfg.leaseDuration() {
		t.Errorf("lease held %v after the cut, more than its duration %v", held, ln.cfg.leaseDuration())
	}
	t.Logf("lease held %v after the cut (duration %v); node %d elected after %v",
		max(lastHeld.Sub(cut), 0), ln.cfg.leaseDuration(), newLead, elected)

	// The cut-off leader steps down (CheckQuorum): Wait says never.
	res := make(chan bool, 1)
	go func() { res <- lease.Wait() }()
	select {
	case ok := <-res:
		if ok {
			t.Fatal("the deposed leader's lease Wait returned true")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the deposed leader's lease Wait did not return within 10 s")
	}
	nt := c.nodes[newLead].n.Status().Term
	if !c.nodes[newLead].n.Lease(nt).Wait() {
		t.Fatal("the new leader's lease Wait returned false")
	}
	c.cut(lead, true)
	c.waitLeader(electionWait)
}
