package raftnode

import (
	"time"

	"go.etcd.io/raft/v3"
)

// Slow loop warnings. The raft loop is the only goroutine that ticks,
// votes and acknowledges: while one Ready takes long (a slow disk, a large
// snapshot, a busy host) the node answers nobody, so a follower that is
// needed for a quorum delays the election after its leader dies. (In a
// 4.6 s failover in clusterbench, one surviving follower noticed the dead
// leader 4 s after the other did, and then answered a backlog of the
// dead leader's heartbeats, as a loop that had not run for seconds
// would.) These warnings say when, and where the time went, as etcd's
// "slow fdatasync" and "leader failed to send out heartbeat on time" do.

// slowReadyFraction of the election timeout: a Ready that takes longer is
// logged with its parts.
const slowReadyFraction = 2

// readyTimes times the parts of one handleReady.
type readyTimes struct {
	start, last time.Time
	// the parts: a received snapshot's save and (a leader) the send;
	// the WAL write; a received snapshot's restore, the append to the
	// log and (a follower) the send; applying; taking a snapshot
	beforeWAL, wal, append, apply, snap time.Duration
	// of snap: encoding the snapshot (the rest is writing it, with its
	// fsyncs, and compacting), and its size
	snapEncode time.Duration
	snapBytes  int
}

func newReadyTimes() readyTimes {
	now := time.Now()
	return readyTimes{start: now, last: now}
}

// mark sets *part to the time since the previous mark (or the start).
func (t *readyTimes) mark(part *time.Duration) {
	now := time.Now()
	*part, t.last = now.Sub(t.last), now
}

// slowThreshold is half the election timeout.
func (n *Node) slowThreshold() time.Duration {
	return time.Duration(n.cfg.ElectionTicks) * n.cfg.TickInterval / slowReadyFraction
}

// slowReady logs a Ready that took longer than slowThreshold.
func (n *Node) slowReady(t *readyTimes, rd *raft.Ready) {
	d := time.Since(t.start)
	if d < n.slowThreshold() {
		return
	}
	var bytes int
	for _, e := range rd.Entries {
		bytes += len(e.GetData())
	}
	n.log.Warn("raftnode: handling a Ready took too long; this node answered no peer meanwhile",
		"took", d.Round(time.Millisecond), "wal_save", t.wal.Round(time.Millisecond),
		"before_wal", t.beforeWAL.Round(time.Millisecond), "restore_append", t.append.Round(time.Millisecond),
		"apply", t.apply.Round(time.Millisecond), "snapshot_take", t.snap.Round(time.Millisecond),
		"snapshot_encode", t.snapEncode.Round(time.Millisecond), "snapshot_bytes", t.snapBytes,
		"entries", len(rd.Entries), "entry_bytes", bytes, "committed", len(rd.CommittedEntries),
		"received_snapshot", !raft.IsEmptySnap(rd.Snapshot))
}

// tickGap logs when the loop ticks later than slowThreshold after its
// previous tick: it was busy or blocked, and raft's timers ran late.
func (n *Node) tickGap(now time.Time) {
	prev := n.lastTick
	n.lastTick = now
	if prev.IsZero() {
		return
	}
	if gap := now.Sub(prev); gap > n.cfg.TickInterval+n.slowThreshold() {
		n.log.Warn("raftnode: the raft loop ticked late (busy or blocked); elections and heartbeats ran late",
			"gap", gap.Round(time.Millisecond), "tick", n.cfg.TickInterval)
	}
}
