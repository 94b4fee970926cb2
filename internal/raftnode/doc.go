// Package raftnode is one member of a small Raft group: the broker nodes
// of a three-controller cluster (issue 13). Consensus is
// go.etcd.io/raft/v3's RawNode; durability is etcd's WAL (Dir/wal) and
// snapshot files (Dir/snap); peers talk over etcd's rafthttp transport,
// served on the node's peer listener. Nothing here is a protocol of our own:
// this package only wires those pieces the way etcd's raftexample does and
// adds proposal completion (Propose's done) and role reporting (Roles).
//
// # Start and restart
//
// Start with no WAL in Dir bootstraps a new group of every member in
// Config.Peers (raft IDs are the map keys), or with Config.Join starts
// empty and waits for a leader to add it. Start with a WAL restores the
// state machine from the newest snapshot the WAL knows of and lets raft
// replay the committed entries after it through StateMachine.Apply
// before the node serves. Dir/member.json records the node's raft ID
// (and whether it joined), written before the WAL is created; Start
// refuses a Dir recorded for another ID.
//
// # Membership
//
// The leader changes the group one conf change at a time (ChangeMember:
// AddLearner, Promote, Remove, Update; raft's single-step ConfChange,
// proposed with RawNode.ProposeConfChange and applied by the loop with
// ApplyConfChange). Every node keeps a member table, raft ID -> {peer
// URL, name, tag (substrate: the etcd member ID)}: each conf change's
// Context carries the member's record (the bootstrap's too, from Peers
// and Names), so applying the log rebuilds the table, and every snapshot
// this package writes starts with the table (a header before the state
// machine's data; a snapshot without it is the state machine's alone,
// as written before), so a node restarted from snapshot + WAL, or one
// that catches up from the leader's snapshot, has it whole. The
// transport's peers follow the table (membersChanged). IDs are never
// reused: removed IDs are kept (in the snapshot's header too), their
// messages are dropped, and rafthttp answers their streams 410 Gone
// (IsIDRemoved) and their pipeline messages 403, on which a removed
// node's transport reports a critical error and the node stops, as
// etcd's removed members do; a node that applies its own removal stops
// too. The leader never removes itself. A change is done when it is
// applied here (its Context names the proposer and a sequence number),
// or fails with ErrChangePending (one at a time, and not before the
// leader applied its term's first entry, as raft requires),
// ErrChangeRefused (it does not apply to the table), ErrLeadershipLost
// or, if raft dropped it, ErrChangeTimeout.
//
// A joining node (Join, no WAL) has no configuration, so raft never lets
// it campaign; it is given ClusterID (rafthttp's, which every member
// must share) and its own URL only. The leader reaches it once it
// applied AddLearner: the joiner's rafthttp refuses the leader's streams
// (an unknown peer) but takes its pipeline messages and answers through
// a "remote" made from their headers, until the log or the snapshot
// gives it the table. A node that does not vote (a learner) does not run
// the leader-gone detector.
//
// On a restart the table is the snapshot's, then the log's: Peers and
// Names seed it only for what neither says (a log bootstrapped before
// the table existed); a joined node seeds nothing.
//
// # Proposals
//
// Propose wraps the data in an envelope (version byte, this node's ID and
// a sequence number that starts at a random value each process) so that
// the apply step can tell its own proposals from others' and from entries
// replayed from an earlier process. The envelope never reaches the state
// machine. Followers refuse proposals (DisableProposalForwarding): only the
// leader proposes, and a proposal is pending from raft's acceptance until
// it is applied here (done(nil)), this node stops leading in that term
// (done(ErrLeadershipLost)) or the node stops (done(ErrStopped)).
//
// Propose calls done exactly once in every case; when Propose itself
// returns an error (ErrNotLeader, ErrStopped) it has called done with it
// already, on the caller's goroutine. Every other done call is on the
// raft loop, after the entry's Apply (done(nil)) or when the node steps
// down or stops. A done callback may call Propose or Status but not Stop
// (Stop waits for the loop that runs the callback). Propose does not
// block and does not bound its queue: callers keep few proposals in
// flight (broker/replica keeps one batch).
//
// # Leader lease
//
// Lease(term) fences what a leader does outside the log (lease.go): Held
// is true only while no other node can have been elected, renewed each
// tick by a ReadIndex that a quorum answers; Wait blocks until it holds
// or the term is lost. The loop alone writes the lease state (an atomic
// pointer); Held and Wait only read it.
//
// # Snapshots
//
// Every SnapshotEntries applied entries, and right after a membership
// change (so that a learner just added is never offered a snapshot whose
// configuration lacks it, which raft refuses), the loop takes
// sm.Snapshot(), prefixed with the member table,
// writes the snapshot file then the WAL's snapshot record (etcd's order:
// a WAL record never names a missing file), releases older WAL segments,
// keeps the newest five .wal and .snap files, and compacts the in-memory
// log to min(1000, SnapshotEntries) entries behind the snapshot. A
// follower further behind gets the snapshot from the leader (a MsgSnap
// over rafthttp's pipeline, whose outcome rafthttp reports back with
// ReportSnapshot) and the loop Restores it.
//
// # Goroutines
//
//   - run (one per Node): the raft loop. It alone touches the RawNode, the
//     MemoryStorage, the WAL, the snapshotter and the StateMachine: it ticks,
//     steps received messages, proposes queued data, persists each Ready,
//     sends its messages, applies committed entries (calling done), takes
//     snapshots and publishes Roles and the cached Status. It handles one
//     Ready per turn and then any event already waiting, so a long run of
//     Readys (a restarted node applying its WAL) does not stop it ticking
//     and voting; a Ready or a tick gap longer than half the election
//     timeout is logged with its parts (slow.go). A follower that loses
//     its connections to the leader forgets it at the next tick and
//     campaigns (leaderGone), unless it still has more than 64 committed
//     entries to apply; the dead leader's late messages of that term are
//     dropped. It is the
//     "apply goroutine" of StateMachine and Propose's doc. A panic in it is
//     recovered (internal/faults, service "raft"), logged, and stops the
//     node: pending proposals fail with ErrStopped, the transport and WAL
//     close, Roles is closed.
//   - serve (one per Node): net/http serving rafthttp's handler on the peer
//     listener, whose connections get rafthttp's 5 s read and write
//     timeouts as etcd's peer listener does. Its handlers hand received messages and reports to run over
//     channels (recvc, reportc) and never touch raft state.
//   - rafthttp's own goroutines (streams, pipelines, probers) belong to the
//     library; Transport.Stop ends them.
//
// # Locks
//
// Node.mu guards the proposal and membership-change queues, the stopped
// flag, the cached Status, and the published member table and removed
// IDs (rafthttp's handlers read them through IsIDRemoved). It is a leaf: nothing is called with it held (in particular no
// done callback), so a done callback may call Propose or Status.
package raftnode
