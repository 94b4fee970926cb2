// Package store is the broker's persistent message store: persistent
// messages (delivery mode 2) on durable queues, written to an append-only
// segment log under DATA/broker/ with group commit, so that a publisher
// confirm goes out only after the fsync that covers the message. Transient
// messages and transient queues never come here. The package is a library
// with no broker state: the broker keeps its queues and asks the store to
// append, read back, count deliveries and forget messages.
//
// # Use
//
//	cfg := store.NewConfig(filepath.Join(dataDir, "broker"))
//	s, err := store.Open(cfg)          // recovers the directory, starts the committer
//	s.Recover(func(e store.Entry) error { ... })   // rebuild queues: ID, queue, redelivered
//	id, c, err := s.Append(&store.Message{Queue: key, Exchange: ex, RoutingKey: rk, Props: p, Body: b})
//	c.AfterFunc(func(err error) { ... })          // or <-c.Done(): durable, send the confirm
//	m, err := s.Read(id)               // at delivery: body from disk
//	m, n, err := s.ReadHead(id)        // at recovery: names and properties, body length n
//	s.Delivered(id)                    // handed to a consumer
//	s.Ack(id)                          // acked, rejected, expired, dropped
//	n, c, err := s.DropQueue(key)      // queue.delete; durable when c is done
//	s.Close()                          // at shutdown: flush, sync, release
//
// Log is the seam: Disk (Open) is the segment log, Memory (NewMemory) the
// in-memory implementation for tests. The same behaviour test body runs
// against both.
//
// # Files
//
// The directory holds LOCK (flock'ed while open, so two processes cannot
// share a store), CLEAN (present only while closed after a clean Close),
// segment files NNNNNNNNNNNNNNNNNNNN.seg (20 decimal digits,
// numbered in creation order) and, for a segment with acknowledgements or
// deliveries, an ack file with the same number and .ack.
//
// A segment file is an 8-byte header "SBSEG\0\0\1" followed by records. A
// segment takes appends until the next record would pass SegmentSize (64 MiB
// by default; a single larger message gets a segment of its own), then it is
// sealed and the next number starts. An ack file is the header "SBACK\0\0\1"
// followed by records. Every record, in both kinds of file, is
//
//	crc32c  uint32 LE   Castagnoli, over len, type and payload
//	len     uint32 LE   payload length, at most 256 MiB
//	type    uint8       1 message, 2 ack, 3 delivered; bit 7 = first record of a write
//	payload [len]byte
//
// A message payload is id uint64 LE, flags uint8 (bit 0: appended as
// redelivered), deliveries uint32 LE, then queue, exchange, routing key and
// content properties, each a uvarint length and the bytes, then the body
// (the rest). IDs are assigned in append order and a segment's IDs are
// consecutive, so the index finds a message by ID without storing the ID.
// An ack or delivered payload is a list of uint64 LE IDs of messages in the
// ack file's segment; each delivered entry counts one delivery.
//
// # Why acks go to a per-segment ack file
//
// Acks could be records in the log itself, but then an ack lives in a later
// segment than its message, and a segment could be deleted only once every
// segment its acks refer to is gone: one old unacknowledged message would
// pin every segment holding acks for its neighbours. With an ack file per
// segment, a segment and its acks live and die together: when the last live
// message of a sealed segment is acknowledged, both files are removed and
// nothing else refers to them, so disk use follows the backlog (at most one
// partly acknowledged segment per stuck message, plus the tail). The tail
// itself is sealed, and so removed, when its last live message is
// acknowledged once it holds 1 MiB or more: a purge gives the space back at
// once (the broker's disk alarm can clear) without waiting for the tail to
// fill. An ack
// costs 8 bytes in its segment's ack file, appended by the same commit cycle
// as the data. An append-only list beats a bitmap here: it needs no
// read-modify-write, and it is torn-write safe with the same framing.
//
// # Group commit
//
// Appenders never write files. Append, under Disk.mu, encodes the record
// into the pending batch (a buffer per segment it touches), assigns the ID
// and the record's place (segment, offset), adds a 20-byte index entry and
// returns the batch's Commit: every append of one batch shares one Commit.
// The committer goroutine loops:
//
//  1. wait until something is pending (appends, acks, deliveries or a
//     segment to remove); if MaxBatchDelay > 0, wait until that long after
//     the batch's first append (on the injected Clock) or until
//     MaxBatchBytes are pending;
//  2. take the pending batch under Disk.mu (new appends start the next
//     batch) and release the lock;
//  3. write each segment's buffer with one WriteAt and fsync it (a segment
//     is fsynced before the next one is created, and the directory after a
//     file is created), then append the batch's acks and deliveries to the
//     ack files and fsync those, then remove the segments that became fully
//     acknowledged (segment file, directory fsync, ack file);
//  4. mark the bytes readable from the files and complete the Commit: Done
//     is closed and AfterFunc callbacks run, after the fsync.
//
// With MaxBatchDelay zero (the default) there is no added latency: the
// appends that arrive while one fsync runs share the next. Appends block
// while MaxPendingBytes are waiting for the committer (backpressure on a
// slow disk). Acks and deliveries are not waited for: losing them in a crash
// only brings a message back (at-least-once).
//
// # Failed writes (ENOSPC, EIO)
//
// A failed write or fsync is not sticky. After an fsync error the page
// cache state of the bytes it covered is unknown, so they are given up,
// not retried in place: the batch's Commit, and that of the batch gathered
// meanwhile (its records would follow a gap), complete with the error (the
// broker nacks those publishes); every segment they were written to is
// marked broken and sealed, and the tail moves to a new segment. The
// next cycle first repairs: it cuts each broken segment back to the bytes
// written before the failure (removes it if the failed write created it)
// and syncs that, so a later segment never follows a torn tail, which
// recovery would call damage. The index entries of the given-up messages
// stay live: the broker holds those messages in memory and acks them as
// usual, and those acks are harmless once the records are cut. Acks,
// deliveries and segment removals of a failed cycle go back to the pending
// batch, and an ack file with a failed write is cut back to its last
// synced size before the retry, so an ack is never lost to a failed write.
// After a failure the committer waits 50 ms, doubling up to 1 s, between
// cycles; as soon as one succeeds the store is healthy again. A failure
// during Close is returned by Close (no CLEAN mark).
//
// # File layer
//
// Every file operation goes through Config.FS (fs.go): OSFS in production,
// MemFS in tests. MemFS keeps per file the bytes written and the bytes
// synced, per directory the entries synced, fails operations on demand
// (SetFault: ENOSPC, EIO; a failed write is torn, half applied), and Crash
// forgets everything not synced, as a power loss does. The crash-loop
// test (memfs_test.go) runs on it: rounds of appends with confirms, acks
// and injected failures, ended by a crash at a random moment; after each,
// Open must succeed, no confirmed message be lost, no acked one come back,
// and each publisher's order hold.
//
// # Memory
//
// Per message of a segment still on disk (live or acknowledged) the index
// holds 20 bytes (offset, size, queue number, delivery count, flags), in a
// slice per segment: about 20 MB for a million-message backlog. Queue names
// are interned.
// Bodies are not kept: Read copies a message from the pending batch if it
// is not written yet, otherwise reads it with pread from the segment file
// (without holding Disk.mu), and checks its CRC again. Recovery reads one
// segment file at a time.
//
// # Ownership and lock order
//
// Disk.mu guards the index (segments, entries, counts, queue names), the
// pending batch, the batch being written (for Read), and each segment's
// size, written mark, file handle, read references and removal flags. The
// committer owns the ack file handles and their sizes, and is the only
// writer of files. Commit.mu guards a Commit's callbacks; it is taken
// without Disk.mu held, and callbacks run with no lock held, so they may
// call the store. Lock order: Disk.mu, then nothing; Commit.mu, then
// nothing. A Read in progress holds a reference on its segment, so a
// segment removed meanwhile closes its file only when the last Read is done.
// Recover calls its function under Disk.mu: the function must not call the
// store.
//
// # After a crash
//
// Guaranteed on Open, whether the process or the machine stopped:
//
//   - every message whose Commit completed without error is recovered,
//     with its queue and in append order, unless it was acknowledged and
//     that ack was written by a commit cycle that completed (an ack made
//     before a later Commit completed is durable);
//   - no half-written message is ever returned: every record is checked
//     against its CRC, and a message is recovered whole or not at all;
//   - a record that fails its check in the last segment, with no later
//     write after it, is a torn tail (the crash hit that write, so nothing
//     in it was confirmed): the file is truncated at the last good record
//     and a warning logged. Each write's first record is flagged: if a
//     flagged record with a valid CRC follows the bad one, the bad data had
//     been synced before that later write, so it is damage, not a tear;
//   - damage anywhere else in a segment (an earlier segment, or the last one
//     before a later write) makes Open fail with a *CorruptError naming the
//     file and offset: confirmed data is never dropped silently. Removing or
//     repairing the file is an operator's decision;
//   - ack files: a bad record ends the file (it is truncated there); lost
//     acks or delivery counts bring messages back or undercount deliveries,
//     never lose a message. After a clean Close (the CLEAN file, written
//     by Close and removed by Open) a message is recovered as redelivered
//     when a delivery of it was recorded. After any other stop every live
//     message is recovered as redelivered: delivery records are not waited
//     for, so one that was handed out may have no record, and a client
//     relies on redelivered=false meaning "never delivered before";
//   - a segment whose messages are all acknowledged is removed; an ack file
//     whose segment is gone is removed;
//   - new IDs are above every ID still named in the files, so a recovered
//     ack never names a new message. Writing resumes in a new segment;
//   - what Open recovered is durable before it returns: it fsyncs every
//     segment and ack file it loaded and the directory. After a process
//     crash the page cache can still hold a segment, or bytes of one, that
//     were never synced (its fsync failed, or the crash came first); they
//     are recovered like the rest, so a later power loss must not take
//     them back (nor cut a segment that is no longer the last).
//
// Not guaranteed: messages whose Commit had not completed (they may or may
// not be recovered), acks and deliveries recorded after the last completed
// commit cycle, and damage inside the last write that happens to look like a
// tear.
package store
