package store

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// entry is the in-memory index of one message: 20 bytes, no pointers.
// Its ID is the segment's firstID plus its index in segment.ents.
type entry struct {
	off, size  uint32
	queue      uint32 // index into Disk.qnames
	deliveries uint32
	flags      uint8
}

const (
	eAcked       = 1
	eRedelivered = 2
)

// segment is one segment file and its ack file. Fields up to f are
// guarded by Disk.mu; ackf and ackSize belong to the committer (and to
// Open before it starts).
type segment struct {
	num     uint64
	path    string
	firstID ID
	ents    []entry
	live    int
	size    int64 // bytes appended, pending ones included
	written int64 // bytes the committer has written to f (readable)
	sealed  bool  // no more appends: a later segment exists
	dead    bool  // all acknowledged: queued for removal, out of Disk.segs
	removed bool  // files removed; f is closed when refs drops to 0
	refs    int   // Reads in progress on f
	f       File
	// broken: a failed write may have left bytes past good; the committer
	// cuts the file back to good (removes it if good is 0) before it
	// writes anything else (repair). The segment is sealed.
	broken bool
	good   int64

	ackf      File
	ackSize   int64 // bytes of the ack file known durable
	ackBroken bool  // a failed write may have left bytes past ackSize (committer)
}

func (g *segment) ackPath() string { return g.path[:len(g.path)-len(".seg")] + ".ack" }

// chunk is bytes to write to one segment at off.
type chunk struct {
	seg  *segment
	off  int64
	buf  []byte
	nrec int
}

type idLists struct{ acked, delivered []ID }

// batch is what one commit cycle writes.
type batch struct {
	chunks []chunk
	commit *Commit
	bytes  int
	start  time.Time // clock time of the first append
	acks   map[*segment]*idLists
	dead   []*segment
}

func (b *batch) empty() bool { return len(b.chunks) == 0 && len(b.acks) == 0 && len(b.dead) == 0 }

// Disk is the segment-log Log. See the package documentation.
type Disk struct {
	cfg   Config
	clock Clock
	log   *slog.Logger
	fs    FS
	lockf io.Closer
	dirf  File

	wake    chan struct{} // an append, ack or delete is pending (cap 1)
	full    chan struct{} // MaxBatchBytes reached (cap 1)
	quit    chan struct{} // closed by Close
	stopped chan struct{} // closed when the committer returns

	mu       sync.Mutex
	space    *sync.Cond // appenders waiting for MaxPendingBytes
	segs     []*segment // live segments in order, tail last
	tail     *segment
	nextID   ID
	live     int
	queues   map[string]uint32
	qnames   []string
	pend     batch
	inflight *batch
	spare    [][]byte // written chunk buffers, for reuse
	closing  bool
	crashed  bool       // tests: stop without writing what is pending
	failed   error      // the last commit cycle's error, nil once one succeeds
	repairs  []*segment // broken segments to cut back before the next write
	failures int        // commit cycles failed in a row (retry backoff)
	// ackDirDirty: an ack file was created and the directory not synced
	// since (committer only).
	ackDirDirty bool

	syncs atomic.Uint64 // fsyncs issued (segment, ack and directory files)
	// uncleanMax: after an unclean stop, the highest ID recovered at Open
	// (all of them are reported redelivered); 0 after a clean one.
	uncleanMax ID
}

// cleanName marks a store closed cleanly: every delivery record is on disk.
const cleanName = "CLEAN"

// Stats implements Log.
func (s *Disk) Stats() Stats {
	s.mu.Lock()
	live, segs, pending := s.live, len(s.segs), s.pend.bytes
	if s.inflight != nil {
		pending += s.inflight.bytes
	}
	s.mu.Unlock()
	return Stats{Syncs: s.syncs.Load(), Live: live, Segments: segs, Pending: pending}
}

// Open opens (creating if needed) the store in cfg.Dir, recovers it and
// starts its committer. The directory is locked against a second Open.
func Open(cfg Config) (*Disk, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Disk{cfg: cfg, clock: cfg.Clock, log: cfg.Logger, queues: map[string]uint32{}, nextID: 1,
		wake: make(chan struct{}, 1), full: make(chan struct{}, 1), quit: make(chan struct{}), stopped: make(chan struct{})}
	if s.clock == nil {
		s.clock = realClock{}
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.fs = cfg.FS
	if s.fs == nil {
		s.fs = OSFS{}
	}
	s.space = sync.NewCond(&s.mu)
	if err := s.fs.MkdirAll(cfg.Dir); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	lf, err := s.fs.Lock(filepath.Join(cfg.Dir, "LOCK"))
	if err != nil {
		return nil, fmt.Errorf("store: %s is in use: %w", cfg.Dir, err)
	}
	s.lockf = lf
	if s.dirf, err = s.fs.OpenDir(cfg.Dir); err == nil {
		err = s.recover()
	}
	if err == nil {
		err = s.takeClean()
	}
	if err != nil {
		s.closeFiles()
		return nil, err
	}
	go s.run()
	return s, nil
}

func (s *Disk) sync(f File) error {
	s.syncs.Add(1)
	if s.cfg.SyncFile != nil {
		return s.cfg.SyncFile(f)
	}
	return f.Sync()
}

func (s *Disk) segPath(num uint64) string {
	return filepath.Join(s.cfg.Dir, fmt.Sprintf("%020d.seg", num))
}

func (s *Disk) queueLocked(name string) uint32 {
	q, ok := s.queues[name]
	if !ok {
		q = uint32(len(s.qnames))
		s.queues[name] = q
		s.qnames = append(s.qnames, name)
	}
	return q
}

func (s *Disk) signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// usableLocked reports whether the store takes calls. A failed write
// does not stop it: the committer repairs and retries (see run).
func (s *Disk) usableLocked() error {
	if s.closing {
		return ErrClosed
	}
	return nil
}

// Append implements Log.
func (s *Disk) Append(m *Message) (ID, *Commit, error) {
	psize := messageSize(m)
	if psize > maxPayload {
		return 0, nil, ErrTooLarge
	}
	rsize := headerSize + psize
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.pend.bytes > 0 && s.pend.bytes+rsize > s.cfg.MaxPendingBytes && s.usableLocked() == nil {
		s.space.Wait()
	}
	if err := s.usableLocked(); err != nil {
		return 0, nil, err
	}
	if s.tail.size > fileHeaderSize && s.tail.size+int64(rsize) > s.cfg.SegmentSize {
		s.rotateLocked()
	}
	t := s.tail
	c := s.chunkLocked(t)
	typ := byte(typeMessage)
	if c.nrec == 0 {
		typ |= flagBatch // first record of this write
	}
	c.nrec++
	id := s.nextID
	s.nextID++
	off := t.size
	c.buf = appendRecord(c.buf, typ, psize, func(b []byte) []byte { return appendMessage(b, id, m) })
	t.size += int64(rsize)
	var fl uint8
	if m.Redelivered {
		fl = eRedelivered
	}
	t.ents = append(t.ents, entry{off: uint32(off), size: uint32(rsize), queue: s.queueLocked(m.Queue),
		deliveries: m.Deliveries, flags: fl})
	t.live++
	s.live++
	s.pend.bytes += rsize
	if s.pend.commit == nil {
		s.pend.commit = newCommit()
		s.pend.start = s.clock.Now()
	}
	s.signal(s.wake)
	if s.pend.bytes >= s.cfg.MaxBatchBytes {
		s.signal(s.full)
	}
	return id, s.pend.commit, nil
}

// chunkLocked returns the pending chunk of t, starting one (with the file
// header if t is new).
func (s *Disk) chunkLocked(t *segment) *chunk {
	if n := len(s.pend.chunks); n > 0 && s.pend.chunks[n-1].seg == t {
		return &s.pend.chunks[n-1]
	}
	c := chunk{seg: t, off: t.size}
	if n := len(s.spare); n > 0 {
		c.buf, s.spare = s.spare[n-1], s.spare[:n-1]
	}
	if t.size == 0 {
		c.buf = append(c.buf, segMagic[:]...)
		t.size = fileHeaderSize
	}
	s.pend.chunks = append(s.pend.chunks, c)
	return &s.pend.chunks[len(s.pend.chunks)-1]
}

func (s *Disk) rotateLocked() {
	old := s.tail
	old.sealed = true
	s.tail = &segment{num: old.num + 1, path: s.segPath(old.num + 1), firstID: s.nextID}
	s.segs = append(s.segs, s.tail)
	if old.live == 0 {
		s.deadLocked(old)
	}
}

// deadLocked takes g, sealed and fully acknowledged, out of the index and
// queues its removal.
func (s *Disk) deadLocked(g *segment) {
	g.dead = true
	segs := make([]*segment, 0, len(s.segs))
	for _, x := range s.segs {
		if x != g {
			segs = append(segs, x)
		}
	}
	s.segs = segs
	delete(s.pend.acks, g)
	s.pend.dead = append(s.pend.dead, g)
	s.signal(s.wake)
}

// findLocked returns the live entry of id.
func (s *Disk) findLocked(id ID) (*segment, *entry) {
	i := sort.Search(len(s.segs), func(i int) bool { return s.segs[i].firstID > id }) - 1
	if i < 0 {
		return nil, nil
	}
	g := s.segs[i]
	k := uint64(id - g.firstID)
	if k >= uint64(len(g.ents)) || g.ents[k].flags&eAcked != 0 {
		return nil, nil
	}
	return g, &g.ents[k]
}

func (s *Disk) idsLocked(g *segment) *idLists {
	if s.pend.acks == nil {
		s.pend.acks = map[*segment]*idLists{}
	}
	l := s.pend.acks[g]
	if l == nil {
		l = &idLists{}
		s.pend.acks[g] = l
	}
	return l
}

// Ack implements Log.
func (s *Disk) Ack(id ID) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usableLocked(); err != nil {
		return err
	}
	g, e := s.findLocked(id)
	if e == nil {
		return ErrNotFound
	}
	s.ackLocked(g, e, id)
	s.signal(s.wake)
	return nil
}

// emptyTailRotate: a tail segment of at least this size whose messages
// are all acknowledged is sealed, so that it is removed and its disk
// space returns (a purge lifts the disk alarm); smaller ones go on taking
// appends, so a fast consumer does not cost a file per commit.
const emptyTailRotate = 1 << 20

func (s *Disk) ackLocked(g *segment, e *entry, id ID) {
	e.flags |= eAcked
	g.live--
	s.live--
	if g.live == 0 && !g.sealed && g == s.tail && g.size >= emptyTailRotate {
		s.rotateLocked() // seals g and, as it is empty, queues its removal
		return
	}
	if g.live == 0 && g.sealed {
		s.deadLocked(g)
		return
	}
	l := s.idsLocked(g)
	l.acked = append(l.acked, id)
}

// Delivered implements Log.
func (s *Disk) Delivered(id ID) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usableLocked(); err != nil {
		return err
	}
	g, e := s.findLocked(id)
	if e == nil {
		return ErrNotFound
	}
	e.flags |= eRedelivered
	e.deliveries++
	l := s.idsLocked(g)
	l.delivered = append(l.delivered, id)
	s.signal(s.wake)
	return nil
}

// DropQueue implements Log.
func (s *Disk) DropQueue(queue string) (int, *Commit, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usableLocked(); err != nil {
		return 0, nil, err
	}
	q, ok := s.queues[queue]
	if !ok {
		return 0, nil, nil
	}
	n := 0
	for _, g := range s.segs { // deadLocked replaces s.segs, not this array
		for i := range g.ents {
			if e := &g.ents[i]; e.queue == q && e.flags&eAcked == 0 {
				s.ackLocked(g, e, g.firstID+ID(i))
				n++
			}
		}
	}
	if n == 0 {
		return 0, nil, nil
	}
	if s.pend.commit == nil {
		s.pend.commit = newCommit()
		s.pend.start = s.clock.Now()
	}
	s.signal(s.wake)
	return n, s.pend.commit, nil
}

// Recover implements Log.
func (s *Disk) Recover(fn func(Entry) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return ErrClosed
	}
	for _, g := range s.segs {
		for i, e := range g.ents {
			if e.flags&eAcked != 0 {
				continue
			}
			err := fn(Entry{ID: g.firstID + ID(i), Queue: s.qnames[e.queue], Redelivered: g.firstID+ID(i) <= s.uncleanMax || e.flags&eRedelivered != 0,
				Deliveries: e.deliveries, Size: int(e.size)})
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// Len implements Log.
func (s *Disk) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.live
}

// Read implements Log.
func (s *Disk) Read(id ID) (*Message, error) {
	buf, path, off, err := s.readRecord(id, 0)
	if err != nil {
		return nil, err
	}
	typ, p, n, err := decodeRecord(buf)
	if err == nil && (n != len(buf) || typ&typeMask != typeMessage) {
		err = errType
	}
	var m *Message
	var got ID
	if err == nil {
		got, m, err = decodeMessage(p, true)
	}
	if err == nil && got != id {
		err = fmt.Errorf("record holds message %d", got)
	}
	if err != nil {
		return nil, &CorruptError{File: path, Offset: off, Err: err}
	}
	return m, nil
}

// headRead is how much of a record ReadHead reads: enough for the names
// and properties of nearly every message.
const headRead = 512

// ReadHead implements Log. It reads the first headRead bytes of the
// record; the checksum, which covers the whole record, was checked when
// the store was opened or the record written. A record whose names and
// properties do not fit is read whole.
func (s *Disk) ReadHead(id ID) (*Message, int, error) {
	buf, path, off, err := s.readRecord(id, headRead)
	if err != nil {
		return nil, 0, err
	}
	if len(buf) < headerSize+msgFixed {
		return nil, 0, &CorruptError{File: path, Offset: off, Err: errShort}
	}
	plen := int(binary.LittleEndian.Uint32(buf[4:]))
	if headerSize+plen < len(buf) || buf[8]&typeMask != typeMessage {
		return nil, 0, &CorruptError{File: path, Offset: off, Err: errType}
	}
	got, m, err := decodeMessage(buf[headerSize:], true)
	if err != nil || headerSize+plen == len(buf) {
		// Whole record read, or the head did not fit: full decode.
		m, err := s.Read(id)
		if err != nil {
			return nil, 0, err
		}
		n := len(m.Body)
		m.Body = nil
		return m, n, nil
	}
	if got != id {
		return nil, 0, &CorruptError{File: path, Offset: off, Err: fmt.Errorf("record holds message %d", got)}
	}
	bodyLen := plen - (len(buf) - headerSize - len(m.Body))
	m.Body = nil
	m.Props = bytes.Clone(m.Props) // not the read buffer
	return m, bodyLen, nil
}

// readRecord returns the record of id, or its first limit bytes if limit
// is positive, with the file and offset for error reports. A record still
// waiting for the committer is copied from memory; others are read from
// the segment file without holding the lock.
func (s *Disk) readRecord(id ID, limit int) ([]byte, string, int64, error) {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return nil, "", 0, ErrClosed
	}
	g, e := s.findLocked(id)
	if e == nil {
		s.mu.Unlock()
		return nil, "", 0, ErrNotFound
	}
	off, size := int64(e.off), int(e.size)
	if limit > 0 && limit < size {
		size = limit
	}
	buf := make([]byte, size)
	if off+int64(size) <= g.written {
		g.refs++
		f := g.f
		s.mu.Unlock()
		_, err := f.ReadAt(buf, off)
		s.mu.Lock()
		if g.refs--; g.refs == 0 && g.removed {
			f.Close()
		}
		s.mu.Unlock()
		if err != nil {
			return nil, "", 0, fmt.Errorf("store: read %s at %d: %w", g.path, off, err)
		}
	} else {
		found := false
		for _, b := range []*batch{s.inflight, &s.pend} {
			if b == nil {
				continue
			}
			for _, c := range b.chunks {
				if c.seg == g && off >= c.off && off+int64(size) <= c.off+int64(len(c.buf)) {
					copy(buf, c.buf[off-c.off:])
					found = true
				}
			}
		}
		failed := s.failed
		s.mu.Unlock()
		if !found { // its write failed
			return nil, "", 0, cmp.Or(failed, fmt.Errorf("store: message %d not found in pending writes", id))
		}
	}
	return buf, g.path, off, nil
}

// Close implements Log.
func (s *Disk) Close() error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		<-s.stopped
		return nil
	}
	s.closing = true
	close(s.quit)
	s.space.Broadcast()
	s.mu.Unlock()
	<-s.stopped
	s.mu.Lock()
	failed := s.failed
	s.mu.Unlock()
	if failed == nil {
		failed = s.markClean()
	}
	s.closeFiles()
	return failed
}

// takeClean notes whether the store was closed cleanly and removes the
// mark, durably, before anything can be written: a crash from now on is
// an unclean stop.
func (s *Disk) takeClean() error {
	path := filepath.Join(s.cfg.Dir, cleanName)
	err := s.fs.Remove(path)
	switch {
	case err == nil:
		return s.sync(s.dirf)
	case errors.Is(err, fs.ErrNotExist):
		s.uncleanMax = s.nextID - 1
		return nil
	default:
		return fmt.Errorf("store: %w", err)
	}
}

// markClean writes the CLEAN mark after the last commit cycle.
func (s *Disk) markClean() error {
	f, err := s.fs.OpenFile(filepath.Join(s.cfg.Dir, cleanName), os.O_WRONLY|os.O_CREATE|os.O_TRUNC)
	if err == nil {
		err = s.sync(f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err == nil {
		err = s.sync(s.dirf)
	}
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return nil
}

// crash stops the store as a crash would, for tests: what is pending is
// never written, nothing more is synced, files are just closed.
func (s *Disk) crash() {
	s.mu.Lock()
	s.closing, s.crashed = true, true
	close(s.quit)
	s.space.Broadcast()
	s.mu.Unlock()
	<-s.stopped
	s.closeFiles()
}

func (s *Disk) closeFiles() {
	s.mu.Lock()
	for _, g := range append(s.segs, s.pend.dead...) {
		s.closeSegLocked(g)
	}
	s.segs, s.pend.dead = nil, nil
	s.mu.Unlock()
	if s.dirf != nil {
		s.dirf.Close()
	}
	if s.lockf != nil {
		s.lockf.Close() // releases the flock
	}
}

// closeSegLocked closes g's files (Close, or a failed store); a Read in
// progress closes f when it is done.
func (s *Disk) closeSegLocked(g *segment) {
	if g.f != nil && !g.removed && g.refs == 0 {
		g.f.Close()
	}
	g.removed = true
	if g.ackf != nil {
		g.ackf.Close()
		g.ackf = nil
	}
}

// Retry delays after a failed commit cycle: the committer waits this
// long (doubling up to maxRetryDelay) before the next cycle, so a full or
// failing disk is not hammered; appends meanwhile wait in the next batch.
const (
	minRetryDelay = 50 * time.Millisecond
	maxRetryDelay = time.Second
)

// run is the committer: it takes the pending batch, writes and syncs it,
// then completes its Commit. Appends made meanwhile form the next batch.
//
// A failed cycle (ENOSPC, EIO, a failed fsync) is not fatal. Its Commit
// and that of the batch gathered meanwhile complete with the error (their
// publishers are nacked), their records are cut from the segments they
// were written to, which are sealed (failLocked), and writing goes on in
// a new segment once those cuts are durable (repair). Acks, deliveries and
// segment removals of the failed cycle are retried by the next one, so an
// ack is never lost to a failed write. Until the disk works again every
// cycle fails the same way, each after a growing delay.
func (s *Disk) run() {
	defer close(s.stopped)
	for {
		s.mu.Lock()
		for s.pend.empty() && !s.closing {
			s.mu.Unlock()
			select {
			case <-s.wake:
			case <-s.quit:
			}
			s.mu.Lock()
		}
		if s.crashed || (s.pend.empty() && s.closing) {
			c := s.pend.commit
			s.pend = batch{}
			s.mu.Unlock()
			if c != nil {
				c.complete(ErrClosed)
			}
			return
		}
		if n := s.failures; n > 0 && !s.closing {
			s.mu.Unlock()
			select {
			case <-s.clock.After(min(minRetryDelay<<min(n-1, 8), maxRetryDelay)):
			case <-s.quit:
			}
			s.mu.Lock()
		}
		if d := s.cfg.MaxBatchDelay; d > 0 && !s.closing {
			select {
			case <-s.full: // stale
			default:
			}
			if s.pend.bytes < s.cfg.MaxBatchBytes {
				wait := d - s.clock.Now().Sub(s.pend.start)
				if s.pend.commit == nil {
					wait = d // acks only: no appender is waiting
				}
				s.mu.Unlock()
				if wait > 0 {
					select {
					case <-s.clock.After(wait):
					case <-s.full:
					case <-s.quit:
					}
				}
				s.mu.Lock()
			}
		}
		if s.crashed {
			s.mu.Unlock()
			continue // the top of the loop completes what is pending
		}
		b := s.pend
		s.pend = batch{}
		for g := range b.acks {
			if g.dead {
				delete(b.acks, g)
			}
		}
		s.inflight = &b
		s.space.Broadcast()
		s.mu.Unlock()

		err := s.write(&b)

		s.mu.Lock()
		var also *Commit // the batch gathered meanwhile, failed with b
		if err != nil {
			also = s.failLocked(&b, err)
		} else {
			if s.failed != nil {
				s.log.Info("store: writing again after a failure", "dir", s.cfg.Dir, "failed", s.failures)
			}
			s.failed, s.failures = nil, 0
			for _, c := range b.chunks {
				c.seg.written = max(c.seg.written, c.off+int64(len(c.buf)))
			}
		}
		s.inflight = nil
		for _, c := range b.chunks { // no Read can see them any more
			if len(s.spare) < 4 && cap(c.buf) <= 2*s.cfg.MaxBatchBytes {
				s.spare = append(s.spare, c.buf[:0])
			}
		}
		giveUp := err != nil && s.closing
		var left *Commit
		if giveUp { // Close: report the failure rather than retry forever
			left = s.pend.commit
			s.pend = batch{}
		}
		s.mu.Unlock()
		if b.commit != nil {
			b.commit.complete(err)
		}
		if also != nil {
			also.complete(err)
		}
		if left != nil {
			left.complete(err)
		}
		if giveUp {
			return
		}
	}
}

// failLocked handles a failed commit cycle b: every segment b or the
// pending batch wrote to is marked broken (cut back to before their
// records by the next cycle's repair) and the tail moves to a new
// segment; the pending batch's records are dropped and its Commit
// returned, to complete with err (a Commit with no records, a DropQueue's,
// stays pending and completes when its acks are written). Their index entries stay live: the
// queues hold those messages in memory, and their acks go on naming them
// (harmless once the records are cut). b's acks, deliveries and segment
// removals not done go back to the pending batch.
func (s *Disk) failLocked(b *batch, err error) *Commit {
	if s.failures == 0 {
		s.log.Error("store: write failed; the messages it covered are refused, and the store retries", "dir", s.cfg.Dir, "err", err)
	}
	s.failed = err
	s.failures++
	s.space.Broadcast()
	brk := func(c chunk) {
		g := c.seg
		if !g.broken {
			g.broken, g.good = true, c.off
			s.repairs = append(s.repairs, g)
		} else {
			g.good = min(g.good, c.off)
		}
	}
	for _, c := range b.chunks {
		brk(c)
	}
	var also *Commit
	if len(s.pend.chunks) > 0 { // a commit of acks only (DropQueue) waits for them instead
		also = s.pend.commit
		s.pend.commit = nil
	}
	for _, c := range s.pend.chunks {
		brk(c)
		if len(s.spare) < 4 && cap(c.buf) <= 2*s.cfg.MaxBatchBytes {
			s.spare = append(s.spare, c.buf[:0])
		}
	}
	s.pend.chunks, s.pend.bytes = nil, 0
	if s.tail.broken {
		s.rotateLocked()
	}
	for _, g := range s.segs {
		if g.broken && g.sealed && g.live == 0 && !g.dead {
			s.deadLocked(g)
		}
	}
	for g, l := range b.acks {
		if g.dead {
			continue // its removal records every ack
		}
		g.ackBroken = true
		pl := s.idsLocked(g)
		pl.acked = append(pl.acked, l.acked...)
		pl.delivered = append(pl.delivered, l.delivered...)
	}
	s.pend.dead = append(s.pend.dead, b.dead...)
	if !s.pend.empty() {
		s.signal(s.wake)
	}
	return also
}

// repair cuts the broken segments and ack files back to what is known
// good, durably, before anything else is written: a later segment must
// never follow one with a torn tail (recovery would call it damage).
func (s *Disk) repair(b *batch) error {
	s.mu.Lock()
	gs := s.repairs
	s.mu.Unlock()
	for len(gs) > 0 {
		g := gs[0]
		s.mu.Lock()
		dead, f, good := g.dead, g.f, g.good
		s.mu.Unlock()
		switch {
		case dead: // its removal is queued
		case good == 0: // created by the failed write: remove it
			if err := removeIfThere(s.fs, g.path); err != nil {
				return err
			}
			if err := s.sync(s.dirf); err != nil {
				return fmt.Errorf("store: sync %s: %w", s.cfg.Dir, err)
			}
			s.mu.Lock()
			if g.f != nil && g.refs == 0 {
				g.f.Close()
			}
			g.f = nil
			s.mu.Unlock()
		case f != nil:
			if err := f.Truncate(good); err != nil {
				return fmt.Errorf("store: truncate %s: %w", g.path, err)
			}
			if err := s.sync(f); err != nil {
				return fmt.Errorf("store: sync %s: %w", g.path, err)
			}
		default:
			if err := truncate(s.fs, g.path, good); err != nil {
				return err
			}
		}
		gs = gs[1:]
		s.mu.Lock()
		s.repairs = s.repairs[1:]
		s.mu.Unlock()
	}
	for g := range b.acks {
		if !g.ackBroken || g.ackf == nil {
			continue
		}
		if err := g.ackf.Truncate(g.ackSize); err != nil {
			return fmt.Errorf("store: truncate %s: %w", g.ackPath(), err)
		}
		if err := s.sync(g.ackf); err != nil {
			return fmt.Errorf("store: sync %s: %w", g.ackPath(), err)
		}
		g.ackBroken = false
	}
	return nil
}

// write writes and syncs b: repairs first, then message chunks (each
// segment synced before the next is created), then the ack files, then
// removes the dead segments. What is done is taken out of b.acks and
// b.dead, so a failure leaves there what is to retry.
func (s *Disk) write(b *batch) error {
	if err := s.repair(b); err != nil {
		return err
	}
	for _, c := range b.chunks {
		g := c.seg
		created := false
		if g.f == nil {
			f, err := s.fs.OpenFile(g.path, os.O_RDWR|os.O_CREATE|os.O_EXCL)
			if err != nil {
				return fmt.Errorf("store: %w", err)
			}
			s.mu.Lock()
			g.f = f
			s.mu.Unlock()
			created = true
		}
		if _, err := g.f.WriteAt(c.buf, c.off); err != nil {
			return fmt.Errorf("store: write %s: %w", g.path, err)
		}
		if err := s.sync(g.f); err != nil {
			return fmt.Errorf("store: sync %s: %w", g.path, err)
		}
		if created {
			if err := s.sync(s.dirf); err != nil {
				return fmt.Errorf("store: sync %s: %w", s.cfg.Dir, err)
			}
		}
	}
	if len(b.acks) > 0 {
		var buf []byte
		for g, l := range b.acks {
			buf = buf[:0]
			typ := byte(flagBatch)
			if len(l.acked) > 0 {
				buf = appendIDs(buf, typeAck|typ, l.acked)
				typ = 0
			}
			if len(l.delivered) > 0 {
				buf = appendIDs(buf, typeDelivered|typ, l.delivered)
			}
			if g.ackf == nil {
				f, err := s.fs.OpenFile(g.ackPath(), os.O_RDWR|os.O_CREATE|os.O_TRUNC)
				if err != nil {
					return fmt.Errorf("store: %w", err)
				}
				g.ackf, g.ackSize = f, 0
				s.ackDirDirty = true
			}
			if g.ackSize == 0 {
				buf = append(ackMagic[:len(ackMagic):len(ackMagic)], buf...)
			}
			if _, err := g.ackf.WriteAt(buf, g.ackSize); err != nil {
				return fmt.Errorf("store: write %s: %w", g.ackPath(), err)
			}
			if err := s.sync(g.ackf); err != nil {
				return fmt.Errorf("store: sync %s: %w", g.ackPath(), err)
			}
			g.ackSize += int64(len(buf))
		}
	}
	// ackDirDirty outlives a failed cycle: if this directory sync fails,
	// the retry finds the ack file open and creates nothing, yet its
	// entry still has to be made durable before a Commit completes, or a
	// power loss would drop acks that a completed commit covered.
	if s.ackDirDirty {
		if err := s.sync(s.dirf); err != nil {
			return fmt.Errorf("store: sync %s: %w", s.cfg.Dir, err)
		}
		s.ackDirDirty = false
	}
	clear(b.acks) // all durable: nothing to retry
	for len(b.dead) > 0 {
		if err := s.remove(b.dead[0]); err != nil {
			return err
		}
		b.dead = b.dead[1:]
	}
	return nil
}

// remove deletes a dead segment's files: the segment first (so a crash in
// between cannot bring acknowledged messages back), then its ack file.
// After a failure it is called again.
func (s *Disk) remove(g *segment) error {
	s.mu.Lock()
	g.removed = true
	if g.f != nil && g.refs == 0 {
		g.f.Close()
	}
	g.f = nil
	s.mu.Unlock()
	if g.ackf != nil {
		g.ackf.Close()
		g.ackf = nil
	}
	if err := removeIfThere(s.fs, g.path); err != nil {
		return err
	}
	if err := s.sync(s.dirf); err != nil {
		return fmt.Errorf("store: sync %s: %w", s.cfg.Dir, err)
	}
	return removeIfThere(s.fs, g.ackPath())
}
