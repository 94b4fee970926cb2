package raftnode

import (
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"substrate/internal/testkit"

	"go.etcd.io/etcd/client/pkg/v3/types"
	"go.etcd.io/raft/v3/raftpb"
)

// slowSM is testSM whose Apply takes d for the entry "slow" (every entry
// with slowAll).
type slowSM struct {
	testSM
	d       time.Duration
	slowAll bool
}

func (s *slowSM) Apply(index uint64, data []byte) {
	if s.slowAll || string(data) == "slow" {
		time.Sleep(s.d)
	}
	s.testSM.Apply(index, data)
}

// startLoggedLeader starts a one-member group on sm (snapshotting every
// snapEntries entries; 0: the default), logging into the returned
// buffer, stops it when the test ends, and waits until it leads.
func startLoggedLeader(t *testing.T, sm StateMachine, snapEntries uint64) (*Node, *testkit.Buffer) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.11:0")
	if err != nil {
		t.Fatal(err)
	}
	logs := &testkit.Buffer{}
	n, err := Start(Config{ID: 1, Peers: map[uint64]string{1: "http://" + ln.Addr().String()}, Dir: t.TempDir(),
		Listener: ln, TickInterval: testTick, SnapshotEntries: snapEntries, Logger: slog.New(slog.NewTextHandler(logs, nil))}, sm)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Stop() })
	waitFor(t, electionWait, "single node leads", func() bool { return n.Status().IsLeader })
	return n, logs
}

// slowSnapSM is testSM whose Snapshot takes d.
type slowSnapSM struct {
	testSM
	d time.Duration
}

func (s *slowSnapSM) Snapshot() ([]byte, error) {
	time.Sleep(s.d)
	return s.testSM.Snapshot()
}

// TestSlowSnapshotWarns: a snapshot that holds the raft loop is logged
// with the time its encoding took and its size, apart from writing it.
func TestSlowSnapshotWarns(t *testing.T) {
	n, logs := startLoggedLeader(t, &slowSnapSM{d: 600 * time.Millisecond}, 3)
	for i := range 4 {
		proposeWait(t, n, []byte(fmt.Sprint(i)))
	}
	var ready string
	waitFor(t, 5*time.Second, "the slow snapshot's warning", func() bool {
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, "handling a Ready took too long") && strings.Contains(l, "snapshot_encode=6") {
				ready = l
			}
		}
		return ready != ""
	})
	t.Log(ready)
	if strings.Contains(ready, "snapshot_bytes=0 ") || !strings.Contains(ready, "snapshot_take=6") {
		t.Errorf("the slow snapshot's line: %s", ready)
	}
}

// TestSlowReadyWarns: an apply that holds the raft loop past half the
// election timeout is logged with where the time went, and so are the
// ticks it delayed.
func TestSlowReadyWarns(t *testing.T) {
	n, logs := startLoggedLeader(t, &slowSM{d: 600 * time.Millisecond}, 0)
	for _, data := range []string{"fast", "slow", "after"} {
		proposeWait(t, n, []byte(data))
	}
	var ready, tick string
	for deadline := time.Now().Add(5 * time.Second); ready == "" || tick == ""; {
		for _, l := range strings.Split(logs.String(), "\n") {
			switch {
			case strings.Contains(l, "handling a Ready took too long"):
				ready = l
			case strings.Contains(l, "the raft loop ticked late"):
				tick = l
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("missing warnings (ready %q, tick %q):\n%s", ready, tick, logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("%s\n%s", ready, tick)
	if !strings.Contains(ready, "apply=6") || !strings.Contains(ready, "committed=1") {
		t.Errorf("the slow Ready's line does not put the 600 ms in apply: %s", ready)
	}
	if strings.Count(logs.String(), "took too long") != 1 {
		t.Errorf("want one slow Ready, got:\n%s", logs.String())
	}
}

// TestMessagesOfAGoneLeaderDropped: once a follower has campaigned
// against a leader whose connections are down, that leader's messages of
// its term (sent before it died, read late) are not stepped; its messages
// of a later term, other nodes' messages, and its messages once its
// connection is back, are.
func TestMessagesOfAGoneLeaderDropped(t *testing.T) {
	c := newCluster(t, 0)
	lead := c.waitLeader(electionWait)
	var f *tnode
	for _, tn := range c.running() {
		if tn.id != lead {
			f = tn
			break
		}
	}
	term := f.n.Status().Term
	other := uint64(6) - lead - f.id
	g := goneLeader{lead: lead, term: term}
	msg := func(from, term uint64) *raftpb.Message {
		return &raftpb.Message{Type: raftpb.MsgHeartbeat.Enum(), From: new(from), To: new(f.id), Term: new(term)}
	}
	active := f.n.transport.ActiveSince
	if isFromGone(g, msg(lead, term), active) {
		t.Fatal("a message of a leader whose connection is up was dropped")
	}
	c.stop(lead)
	waitFor(t, 10*time.Second, "the follower sees the leader's connection down", func() bool {
		return active(types.ID(lead)).IsZero()
	})
	for _, tc := range []struct {
		m    *raftpb.Message
		drop bool
	}{
		{msg(lead, term), true},
		{msg(lead, term-1), true},
		{msg(lead, term+1), false},
		{msg(other, term), false},
	} {
		if got := isFromGone(g, tc.m, active); got != tc.drop {
			t.Errorf("from %d term %d (gone leader %d term %d): dropped %v, want %v", tc.m.GetFrom(), tc.m.GetTerm(), lead, term, got, tc.drop)
		}
	}
	if isFromGone(goneLeader{}, msg(lead, term), active) {
		t.Error("dropped with no leader given up on")
	}
}

// TestRestartReplayKeepsTicking: a node restarted with a long log to
// apply (many Readys) still ticks between them, so it can notice a dead
// leader and vote while it catches up (the loop used to drain every
// Ready before its next event: no tick for the whole replay).
func TestRestartReplayKeepsTicking(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.11:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	dir := t.TempDir()
	cfg := func(ln net.Listener, logs *testkit.Buffer) Config {
		return Config{ID: 1, Peers: map[uint64]string{1: "http://" + addr}, Dir: dir, Listener: ln,
			TickInterval: testTick, SnapshotEntries: 1000, Logger: slog.New(slog.NewTextHandler(logs, nil))}
	}
	n, err := Start(cfg(ln, &testkit.Buffer{}), &testSM{})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, electionWait, "single node leads", func() bool { return n.Status().IsLeader })
	// Entries of 700 KB: one per Ready at most (maxSizePerMsg, 1 MB).
	const entries = 16
	big := strings.Repeat("x", 700<<10)
	for i := range entries {
		proposeWait(t, n, []byte(fmt.Sprintf("%02d%s", i, big)))
	}
	n.Stop()

	// Restarted, each entry takes 60 ms to apply: about a second of
	// replay, against a late-tick threshold of 300 ms.
	ln2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	logs := &testkit.Buffer{}
	sm := &slowSM{d: 60 * time.Millisecond}
	sm.slowAll = true
	n2, err := Start(cfg(ln2, logs), sm)
	if err != nil {
		t.Fatal(err)
	}
	defer n2.Stop()
	waitFor(t, 20*time.Second, "the log replayed", func() bool { return len(sm.list()) == entries })
	if strings.Contains(logs.String(), "ticked late") {
		t.Fatalf("the replay kept the loop from ticking:\n%s", logs.String())
	}
}

func TestCampaignsOnLoss(t *testing.T) {
	for _, tc := range []struct {
		applied, commit uint64
		want            bool
	}{
		{100, 100, true},
		{100, 100 + applyLagToCampaign, true},
		{100, 101 + applyLagToCampaign, false}, // replaying its log
		{0, 4785, false},
	} {
		if got := campaignsOnLoss(tc.applied, tc.commit); got != tc.want {
			t.Errorf("applied %d commit %d: campaigns %v, want %v", tc.applied, tc.commit, got, tc.want)
		}
	}
}
