package raftnode

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/types"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"
)

// handlerWait bounds how long Stop waits for peer HTTP handlers to return
// once their connections are closed.
const handlerWait = 5 * time.Second

// run is the raft loop (see doc.go): the only goroutine that touches the
// RawNode, the storage and the StateMachine.
func (n *Node) run() {
	defer close(n.donec)
	defer n.shutdown()
	defer recoverRaft(n.log, n.cfg.Peers[n.cfg.ID], func(any) {
		n.log.Error("raftnode: the raft loop panicked; this node stops")
	})
	ticker := time.NewTicker(n.cfg.TickInterval)
	defer ticker.Stop()
	n.lastTick = time.Now()
	for {
		// One Ready per turn, then what has arrived: a long run of
		// Readys (a restarted node applying thousands of entries from
		// its WAL) must not stop the node from ticking, noticing a dead
		// leader and voting. Draining every Ready before the next event
		// kept a node restarted 1.6 s before a leader's death deaf for
		// 2.5 s, and the election waited for its vote.
		more := n.rn.HasReady()
		if more {
			n.handleReady(n.rn.Ready())
		}
		n.publishStatus()
		if n.removed[n.cfg.ID] {
			return // removed from the group (members.go): stop, as etcd's removed members do
		}
		if !n.event(ticker.C, more) {
			return
		}
	}
}

// event handles one event of the loop: the next to arrive, or, with
// poll, one already waiting (none is fine: select's default is taken
// only when no event waits). False: the loop ends.
func (n *Node) event(tick <-chan time.Time, poll bool) bool {
	if poll {
		select {
		case <-n.stopc:
			return false
		case <-tick:
			n.onTick()
		case m := <-n.recvc:
			n.onMessages(m)
		case r := <-n.reportc:
			n.onReport(r)
		case <-n.wakec:
			n.onWake()
		case err := <-n.transport.ErrorC:
			return n.transportFailed(err)
		default:
		}
		return true
	}
	select {
	case <-n.stopc:
		return false
	case <-tick:
		n.onTick()
	case m := <-n.recvc:
		n.onMessages(m)
	case r := <-n.reportc:
		n.onReport(r)
	case <-n.wakec:
		n.onWake()
	case err := <-n.transport.ErrorC:
		return n.transportFailed(err)
	}
	return true
}

func (n *Node) onTick() {
	n.tickGap(time.Now())
	n.rn.Tick()
	n.leaderGone()
	n.renewLease()
	n.confTick()
}

// onMessages steps m and every message already waiting.
func (n *Node) onMessages(m *raftpb.Message) {
	n.step(m)
	for more := len(n.recvc); more > 0; more-- {
		n.step(<-n.recvc)
	}
}

func (n *Node) onReport(r report) {
	if r.unreachable {
		n.rn.ReportUnreachable(r.id)
	} else {
		n.rn.ReportSnapshot(r.id, r.snap)
	}
}

func (n *Node) onWake() {
	n.proposeQueued()
	n.proposeConfQueued()
}

func (n *Node) transportFailed(err error) bool {
	n.log.Error("raftnode: peer transport failed; this node stops", "err", err)
	return false
}

// leaderGone is a failure detector beside the election timeout: a
// follower whose transport has lost its connections to the leader (a
// killed leader's sockets close at once) forgets the leader and
// campaigns, once per leader and term. With PreVote and CheckQuorum the
// other voters grant the pre-vote only if they have lost the leader too
// (or forgotten it), so a leader that is alive keeps leading; when it is
// dead, the group elects another without waiting out the election
// timeout (raft's RawNode.ForgetLeader describes this use).
func (n *Node) leaderGone() {
	bs := n.rn.BasicStatus()
	lead := bs.Lead
	if bs.RaftState != raft.StateFollower || lead == raft.None || lead == n.cfg.ID || !n.isVoter() {
		return
	}
	if n.transport.ActiveSince(types.ID(lead)).IsZero() && (n.gone.lead != lead || n.gone.term != bs.GetTerm()) {
		n.gone.lead, n.gone.term = lead, bs.GetTerm()
		n.rn.ForgetLeader()
		if !campaignsOnLoss(n.applied, bs.GetCommit()) {
			// Still applying its log (restarted moments ago): as leader
			// it would serve only once it has caught up (a second and
			// more after clusterbench's loads). It forgets the leader,
			// so it grants another candidate's (pre-)vote, and leaves
			// the campaign to a node that has caught up; raft's election
			// timeout still has it campaign if none does.
			n.log.Info("raftnode: lost the connection to the leader; not campaigning while applying its log", "leader", lead, "term", bs.GetTerm(), "applied", n.applied, "commit", bs.GetCommit())
			return
		}
		n.log.Info("raftnode: lost the connection to the leader; campaigning", "leader", lead, "term", bs.GetTerm())
		n.rn.Campaign()
	}
}

// applyLagToCampaign is how many committed entries a node may have left to
// apply and still campaign when it loses its leader (leaderGone).
const applyLagToCampaign = 64

// campaignsOnLoss: a node campaigns on losing its leader unless it has
// more than applyLagToCampaign committed entries left to apply.
func campaignsOnLoss(applied, commit uint64) bool {
	return commit <= applied+applyLagToCampaign
}

func (n *Node) step(m *raftpb.Message) {
	if n.removed[m.GetFrom()] {
		return // a removed member's message: ignored
	}
	if n.fromGoneLeader(m) {
		return
	}
	if err := n.rn.Step(m); err != nil && !errors.Is(err, raft.ErrStepPeerNotFound) {
		n.log.Debug("raftnode: message not stepped", "from", m.GetFrom(), "type", m.GetType().String(), "err", err)
	}
}

// fromGoneLeader reports a message of the leader leaderGone gave up on,
// from the term it led, while its connections are still down: sent
// before it died and read only now (a follower that lags behind its
// input reads them after it has campaigned). Stepped, such a message
// makes the dead leader this node's leader again, which undoes the
// campaign and has the node refuse every other candidate's (pre-)vote
// for an election timeout. Dropping it is safe: raft tolerates lost
// messages, and once the leader's connection is back (it lives), its
// messages are stepped again.
func (n *Node) fromGoneLeader(m *raftpb.Message) bool {
	return isFromGone(n.gone, m, n.transport.ActiveSince)
}

// goneLeader is the leader leaderGone last campaigned against, and its
// term.
type goneLeader struct{ lead, term uint64 }

// isFromGone is fromGoneLeader's test, with the transport's ActiveSince.
func isFromGone(g goneLeader, m *raftpb.Message, activeSince func(types.ID) time.Time) bool {
	return g.lead != raft.None && m.GetFrom() == g.lead && m.GetTerm() <= g.term &&
		activeSince(types.ID(g.lead)).IsZero()
}

// proposeQueued hands the queued proposals to raft, if this node still
// leads in the term each was accepted in.
func (n *Node) proposeQueued() {
	n.mu.Lock()
	q := n.queue
	n.queue = nil
	n.mu.Unlock()
	bs := n.rn.BasicStatus()
	for _, p := range q {
		if bs.RaftState != raft.StateLeader || bs.GetTerm() != p.term {
			n.finish(p.done, ErrLeadershipLost)
			continue
		}
		n.seq++
		if err := n.rn.Propose(encodeEnvelope(n.cfg.ID, n.seq, p.data)); err != nil {
			// ErrProposalDropped: a leadership transfer is under way.
			n.finish(p.done, ErrLeadershipLost)
			continue
		}
		n.pending[n.seq] = p.done
		n.pendingTerm = bs.GetTerm()
	}
}

// handleReady persists, sends and applies one Ready, in raftexample's
// order (snapshot and WAL before anything else, messages after the WAL
// has them, entries applied after that) except that a leader sends its
// messages first, as etcd's server does.
func (n *Node) handleReady(rd raft.Ready) {
	t := newReadyTimes()
	defer n.slowReady(&t, &rd)
	hasSnap := !raft.IsEmptySnap(rd.Snapshot)
	if hasSnap {
		if err := n.saveSnap(rd.Snapshot); err != nil {
			panic(fmt.Errorf("raftnode: save received snapshot: %w", err))
		}
	}
	// A leader sends before it persists, as etcd's server does (Raft
	// thesis 10.2.1): its followers write the entries while it does,
	// so a commit costs one disk write's time instead of two in a row.
	// Its own acknowledgement still waits for its write (raft counts it
	// at Advance), and everything else a node sends (votes, a follower's
	// acknowledgements) waits for the write that must precede it.
	lead := n.rn.BasicStatus().RaftState == raft.StateLeader
	if lead {
		n.transport.Send(rd.Messages)
	}
	t.mark(&t.beforeWAL)
	if err := n.wal.Save(rd.HardState, rd.Entries); err != nil {
		panic(fmt.Errorf("raftnode: WAL save: %w", err))
	}
	t.mark(&t.wal)
	if hasSnap {
		n.restoreSnapshot(rd.Snapshot)
	}
	if err := n.storage.Append(rd.Entries); err != nil {
		panic(fmt.Errorf("raftnode: append: %w", err))
	}
	if !lead {
		n.transport.Send(rd.Messages)
	}
	t.mark(&t.append)
	n.leaseReadStates(rd.ReadStates)
	n.apply(rd.CommittedEntries)
	t.mark(&t.apply)
	// Status shows the entries applied before their proposers hear of it.
	n.publishStatus()
	n.complete()
	n.updateRole()
	n.maybeSnapshot(&t)
	t.mark(&t.snap)
	n.rn.Advance(rd)
}

// restoreSnapshot installs a snapshot the leader sent.
func (n *Node) restoreSnapshot(s *raftpb.Snapshot) {
	md := s.GetMetadata()
	if err := n.storage.ApplySnapshot(s); err != nil {
		panic(fmt.Errorf("raftnode: apply snapshot %d: %w", md.GetIndex(), err))
	}
	if md.GetIndex() <= n.applied {
		panic(fmt.Errorf("raftnode: snapshot index %d not above applied %d", md.GetIndex(), n.applied))
	}
	table, data, err := decodeSnap(s.GetData())
	if err == nil {
		err = n.sm.Restore(data)
	}
	if err != nil {
		panic(fmt.Errorf("raftnode: restore snapshot %d: %w", md.GetIndex(), err))
	}
	n.applied, n.appliedTerm, n.snapIndex = md.GetIndex(), md.GetTerm(), md.GetIndex()
	n.confState = md.GetConfState()
	n.restoreTable(table)
	n.membersChanged()
	n.mu.Lock()
	n.restores++
	n.mu.Unlock()
	n.log.Info("raftnode: restored a snapshot from the leader", "index", md.GetIndex(), "term", md.GetTerm(), "bytes", len(s.GetData()))
}

// apply applies committed entries not applied yet and collects the done
// callbacks of this node's proposals among them in n.completed.
func (n *Node) apply(ents []*raftpb.Entry) {
	for _, e := range ents {
		idx := e.GetIndex()
		if idx <= n.applied {
			continue
		}
		switch e.GetType() {
		case raftpb.EntryNormal:
			if len(e.GetData()) == 0 {
				break // a new leader's empty entry
			}
			node, seq, data, ok := decodeEnvelope(e.GetData())
			if !ok {
				n.log.Error("raftnode: entry without an envelope skipped", "index", idx)
				break
			}
			n.sm.Apply(idx, data)
			if node == n.cfg.ID {
				if done, ok := n.pending[seq]; ok {
					delete(n.pending, seq)
					n.completed = append(n.completed, done)
				}
			}
		case raftpb.EntryConfChange, raftpb.EntryConfChangeV2:
			n.applyConfEntry(e) // members.go
		}
		n.applied, n.appliedTerm = idx, e.GetTerm()
	}
}

// updateRole fails this term's pending proposals once the node no longer
// leads in that term, and publishes the role when it changed.
func (n *Node) updateRole() {
	bs := n.rn.BasicStatus()
	isLeader := bs.RaftState == raft.StateLeader
	if len(n.pending) > 0 && (!isLeader || bs.GetTerm() != n.pendingTerm) {
		n.failPending(ErrLeadershipLost)
	}
	if n.conf != nil && (!isLeader || bs.GetTerm() != n.pendingTerm) {
		n.failConf(ErrLeadershipLost)
	}
	r := Role{Term: bs.GetTerm(), Leader: bs.Lead, IsLeader: isLeader, Ready: isLeader && n.appliedTerm == bs.GetTerm()}
	if r == n.role {
		return
	}
	n.role = r
	n.leaseRole(r)
	n.mu.Lock()
	n.status.IsLeader, n.status.Term, n.status.Leader = r.IsLeader, r.Term, r.Leader
	n.mu.Unlock()
	n.log.Info("raftnode: role", "term", r.Term, "leader", r.Leader, "is_leader", r.IsLeader, "ready", r.Ready)
	n.emitRole(r)
}

// emitRole never blocks: when the reader is behind, the oldest queued
// role makes room, so the latest is always delivered.
func (n *Node) emitRole(r Role) {
	for {
		select {
		case n.roles <- r:
			return
		default:
		}
		select {
		case <-n.roles:
		default:
		}
	}
}

// complete calls the done callbacks of applied proposals.
func (n *Node) complete() {
	for i, done := range n.completed {
		n.completed[i] = nil
		n.finish(done, nil)
	}
	n.completed = n.completed[:0]
}

func (n *Node) failPending(err error) {
	for seq, done := range n.pending {
		delete(n.pending, seq)
		n.finish(done, err)
	}
}

// finish calls a done callback; a panic in it is the caller's bug and
// does not stop the node.
func (n *Node) finish(done func(error), err error) {
	defer recoverRaft(n.log, n.cfg.Peers[n.cfg.ID], nil)
	done(err)
}

// maybeSnapshot takes a snapshot every SnapshotEntries applied entries,
// and after a membership change (members.go), and compacts the in-memory
// log, keeping catchUpEntries behind it. t gets the encoding's time and
// the snapshot's size (slow.go).
func (n *Node) maybeSnapshot(t *readyTimes) {
	if n.applied-n.snapIndex < n.cfg.SnapshotEntries && (!n.snapNow || n.applied == n.snapIndex) {
		return
	}
	n.snapNow = false
	t0 := time.Now()
	data, err := n.sm.Snapshot()
	if err == nil {
		data, err = n.encodeSnap(data) // the member table first (members.go)
	}
	t.snapEncode, t.snapBytes = time.Since(t0), len(data)
	if err != nil {
		n.log.Error("raftnode: state machine snapshot failed; retrying after more entries", "err", err)
		n.snapIndex = n.applied
		return
	}
	s, err := n.storage.CreateSnapshot(n.applied, n.confState, data)
	if err != nil {
		if errors.Is(err, raft.ErrSnapOutOfDate) {
			return
		}
		panic(fmt.Errorf("raftnode: create snapshot: %w", err))
	}
	if err := n.saveSnap(s); err != nil {
		panic(fmt.Errorf("raftnode: save snapshot: %w", err))
	}
	keep := min(uint64(catchUpEntries), n.cfg.SnapshotEntries)
	if n.applied > keep {
		if err := n.storage.Compact(n.applied - keep); err != nil && !errors.Is(err, raft.ErrCompacted) {
			panic(fmt.Errorf("raftnode: compact: %w", err))
		}
	}
	n.snapIndex = n.applied
}

// publishStatus refreshes the Status cache; a leader's Progress too.
func (n *Node) publishStatus() {
	bs := n.rn.BasicStatus()
	n.mu.Lock()
	defer n.mu.Unlock()
	s := &n.status
	s.ID, s.Term, s.Leader, s.Commit = n.cfg.ID, bs.GetTerm(), bs.Lead, bs.GetCommit()
	s.Applied, s.SnapshotIndex = n.applied, n.snapIndex
	s.IsLeader = bs.RaftState == raft.StateLeader
	if !s.IsLeader {
		s.Progress = nil
		return
	}
	if s.Progress == nil {
		s.Progress = make(map[uint64]Progress, len(n.cfg.Peers))
	}
	clear(s.Progress) // a removed member's goes
	n.rn.WithProgress(func(id uint64, _ raft.ProgressType, pr tracker.Progress) {
		s.Progress[id] = Progress{Match: pr.Match, Next: pr.Next, State: pr.State.String(), PendingSnapshot: pr.PendingSnapshot, Active: pr.RecentActive, Paused: pr.MsgAppFlowPaused}
	})
}

// shutdown runs on the loop goroutine as it exits, normally or after a
// panic: every pending proposal fails with ErrStopped, then the peer
// server, the transport and the WAL close. Each step is protected, so that
// a failure in one does not skip the others.
func (n *Node) shutdown() {
	close(n.exiting)
	n.quiet.Closing()
	n.mu.Lock()
	n.stopped = true
	q := n.queue
	n.queue = nil
	cq := n.cqueue
	n.cqueue = nil
	n.status.IsLeader = false
	n.status.Progress = nil
	n.mu.Unlock()
	n.complete() // applied before a panic in a later Apply
	for _, p := range q {
		n.finish(p.done, ErrStopped)
	}
	for _, r := range cq {
		n.finish(r.done, ErrStopped)
	}
	n.failPending(ErrStopped)
	n.failConf(ErrStopped)
	n.safely("peer server", func() {
		n.srv.Close()
		<-n.serveDone
	})
	n.safely("transport", n.transport.Stop)
	for deadline := time.Now().Add(handlerWait); n.handlers.Load() > 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			n.log.Warn("raftnode: peer handlers still running after stop", "handlers", n.handlers.Load())
			break
		}
	}
	n.safely("WAL", func() {
		if err := n.wal.Close(); err != nil {
			n.log.Warn("raftnode: WAL close", "err", err)
		}
	})
	n.stopLease()
	if n.role.IsLeader || n.role.Leader != 0 {
		n.role = Role{Term: n.role.Term}
		n.emitRole(n.role)
	}
	close(n.roles)
	n.log.Info("raftnode: stopped", "applied", n.applied)
}

func (n *Node) safely(what string, f func()) {
	defer recoverRaft(n.log, n.cfg.Peers[n.cfg.ID], func(any) {
		n.log.Error("raftnode: panic while stopping " + what)
	})
	f()
}

// countHandlers wraps rafthttp's handler so shutdown can wait for the
// handlers of closed connections to return.
func (n *Node) countHandlers(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.handlers.Add(1)
		defer n.handlers.Add(-1)
		h.ServeHTTP(w, r)
	})
}
