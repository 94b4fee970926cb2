// Package replica is the broker's message store replicated through Raft
// (issue 13): a second implementation of broker/store.Log, for a cluster
// of broker nodes that form one Raft group (internal/raftnode).
//
// # What is replicated
//
// Exactly what the disk store keeps: the persistent messages of durable
// queues and every message of a quorum queue (the broker decides; see
// broker/persist.go), and the records that change them: an append per
// stored message, a delivery record per hand-out, an ack when a message
// leaves its queue for good (acked, rejected, expired, dead-lettered,
// purged), a drop when the queue is deleted. Definitions are not here
// (they live in etcd); transient messages never come here.
//
// # The pieces
//
//	sm := replica.NewStateMachine()         // every node; raftnode applies entries to it
//	node, _ := raftnode.Start(cfg, sm)
//	// on becoming a Ready leader:
//	l := replica.NewLog(sm, node)           // a store.Log for broker.Config.Log
//	// on losing leadership, after the broker stopped:
//	l.Close()
//
// StateMachine is every node's copy of the live messages: Apply decodes
// one committed entry and applies its records in order; Snapshot and
// Restore carry the whole state for Raft's log compaction and for a
// follower that fell behind. Log is the active broker's view for one
// term: it answers every store.Log call at once from its own index of the
// live messages (built from sm at NewLog, then kept by its own calls, as
// the disk store keeps its index), queues the records, and proposes them.
//
// # Group commit is Raft batching
//
// One proposal is in flight at a time. Records queued while it is in
// flight go out together as the next entry when it is answered, up to
// about 1 MiB per entry (one larger record goes alone). Every append and
// drop queued between two proposals shares one store.Commit, completed
// when the proposal's done fires: nil once the entry is committed by a
// majority and applied on this node, so a publisher confirm (or tx.commit-ok)
// follows the Raft commit; an error (not the leader, leadership lost, the
// node stopped) fails those Commits and the broker nacks. Acks and
// deliveries are not waited for, as with the disk store: losing them
// brings a message back, never loses one. The records of one Log go out in
// exactly the order of the calls. Append blocks while 64 MiB of records
// wait for Raft (the disk store's MaxPendingBytes).
//
// A message appended through the Log and not yet applied is kept in the
// Log (pending) so Read finds it; once applied it is read from sm. A
// message whose entry failed stays pending until it is acked: the broker
// still holds it. Close fails every Commit not complete with
// store.ErrClosed; an entry already proposed may still commit (its
// messages then come back in the next term, marked redelivered).
//
// # IDs
//
// IDs are assigned by the Log in append order, above the highest ID sm
// has ever applied (kept even when every message was acked, and carried
// by snapshots). NewLog must be called only on a leader whose raftnode
// Role is Ready: every entry of earlier terms is applied, so no entry of
// an earlier leader can still apply with an ID this Log hands out (an
// earlier leader's entry that did not reach a majority is never applied
// anywhere). Recover walks the live messages in ID order, which is append
// order. An append whose ID does not raise the highest ID is refused by
// Apply (counted, see below).
//
// # Redelivered
//
// Within a term Delivered makes a message redelivered with one more
// delivery, as on disk. A new term reports every message that was live
// when its Log was made as redelivered: delivery records are not waited
// for, so the previous leader may have handed one out whose record never
// committed. This is the disk store's rule after an unclean stop; there is
// no clean hand-over yet (a clean stop could carry a mark, as the disk
// store's CLEAN file does). Deliveries counts only recorded deliveries.
//
// # Record format
//
// An entry is a batch: a version byte (1) and then records until the end,
// each a kind byte and its fields. Integers are unsigned varints; a
// string or byte field is a varint length and the bytes.
//
//	1 append     id, flags (byte: bit 0 appended as redelivered), deliveries,
//	             queue, exchange, routing key, properties, body
//	2 delivered  id
//	3 ack        id
//	4 dropQueue  queue
//
// IDs are never 0 and deliveries fit in 32 bits. The decoder checks every
// length against the bytes left, so nothing is allocated by a length read
// from the data, and a malformed entry is an error, never a panic
// (FuzzDecode). Raft's WAL checksums entries; the batch has no checksum
// of its own.
//
// A snapshot is "SRSN", a version byte (1), the applied index, the
// highest ID and the message count (each uint64 little-endian), the live
// messages in ID order (an append record's fields, without the kind byte),
// and a CRC-32C (little-endian) of all that precedes it. Restore checks
// the checksum, the version, that IDs increase and none is above the
// highest ID, the count and that nothing trails, and changes nothing if
// any check fails.
//
// # Bad entries
//
// Apply has no error to return. An entry that does not decode is skipped
// whole, and an append that does not raise the highest ID is skipped;
// both are counted in StateStats.Bad and logged (the first, then at
// powers of two). Every node decodes the same bytes, so every node skips
// the same and the replicas stay equal. An entry whose index is not above
// the applied index (already in a restored snapshot) is ignored. Acks and
// deliveries of unknown IDs and drops of unknown queues are no-ops.
//
// # Memory: a known limit
//
// Every node holds every live message, bodies included, in memory (in sm;
// the leader's Log adds some 80 bytes of index per message). The disk
// store pages bodies out to its segment files; this one does not yet, so
// a backlog costs its size in RAM on each of the three nodes, and a
// snapshot copies it whole (Raft snapshots every SnapshotEntries entries).
//
// # Goroutines and locks
//
// Log.run, one per Log, proposes batches and, when an entry is answered,
// completes its Commits (their AfterFunc callbacks run there; they must
// be quick and must not wait for a Commit). The proposer's done callback,
// on the Raft apply goroutine, only hands the answer to run. Log.mu guards
// the Log's index, pending messages, queued records and the in-flight
// batch; StateMachine.mu (a RWMutex) guards sm. They never nest: a Read
// releases Log.mu before it takes sm's lock. Neither is held while
// calling Propose or completing a Commit. Recover
// calls its function under Log.mu: it must not call the Log. Close waits
// for a Propose call in progress to return.
package replica
