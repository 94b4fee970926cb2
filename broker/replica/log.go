package replica

import (
	"slices"
	"sync"

	"substrate/broker/store"
)

// Proposer is what Log needs of the Raft node (*raftnode.Node satisfies
// it). Propose appends data to the replicated log if this node leads; done
// is called once: nil after the entry is committed and applied here (after
// StateMachine.Apply returned), an error when it may not be. An error
// returned at once fails the proposal too (done may then be called or
// not; Log ignores a second answer).
type Proposer interface {
	Propose(data []byte, done func(error)) error
}

// Limits.
const (
	// maxBatchBytes ends a batch: what is queued beyond goes in the next
	// entry (a single larger record gets an entry of its own).
	maxBatchBytes = 1 << 20
	// defaultMaxPending bounds the bytes queued ahead of Raft (and in
	// flight); Append blocks beyond it, as the disk store's does.
	defaultMaxPending = store.DefaultMaxPendingBytes
	// defaultInflight is how many proposals may be in flight at once: one,
	// so that everything arriving while it is answered goes in the next
	// entry (the disk store's one fsync at a time).
	defaultInflight = 1
)

// Log is the store.Log of the active broker for one leadership term. See
// the package documentation.
type Log struct {
	sm *StateMachine
	p  Proposer

	wake    chan struct{} // ops queued (cap 1)
	results chan result   // answers of proposals in flight (cap maxInflight)
	quit    chan struct{} // closed by Close
	stopped chan struct{} // closed when run returns

	mu          sync.Mutex
	space       *sync.Cond // appenders waiting for maxPending
	maxPending  int
	waiters     int // Appends blocked on space
	closed      bool
	nextID      store.ID
	baseMax     store.ID // sm's max id at NewLog: those messages recover as redelivered
	live        map[store.ID]meta
	order       []store.ID                  // append order; dead ids removed lazily
	pending     map[store.ID]*store.Message // appended through this Log, not yet known applied
	ops         []op                        // queued, not yet proposed
	open        *group                      // the group new appends join; nil once its ops start going out
	flying      []*batch                    // proposed, not answered, in proposal order
	maxInflight int                         // proposals in flight at once
	pendBytes   int                         // encoded bytes of ops queued and in flight
	syncs       uint64
}

// meta is the Log's index entry of a live message.
type meta struct {
	queue       string
	size        uint32
	deliveries  uint32
	redelivered bool
}

// op is one queued record.
type op struct {
	kind  byte
	id    store.ID
	msg   *store.Message // kindAppend: owned copy, shared with pending
	queue string         // kindDropQueue
	size  int
	g     *group // appends and drops: the Commit they complete
}

// group is the Commit shared by the appends (and drops) queued while no
// batch took them: it completes when the entries carrying all of its ops
// are done, with the first error among them.
type group struct {
	c         *store.Commit
	ops       int
	err       error
	completed bool
}

// batch is one proposed entry.
type batch struct {
	ops   []op
	bytes int
	once  sync.Once
}

type result struct {
	b   *batch
	err error
}

var _ store.Log = (*Log)(nil)

// NewLog returns the store.Log the active broker uses for one term:
// appends, acks, deliveries and queue drops become records proposed
// through p (batched: what accumulates while a proposal is in flight goes
// out as one entry); Read and Recover answer from sm and from what this
// Log has appended and not yet seen applied. Call it only on a leader
// whose Role.Ready is true (sm has applied everything before this term).
// IDs continue above the highest ID sm has ever seen. Close fails pending
// commits with store.ErrClosed and does not touch sm.
func NewLog(sm *StateMachine, p Proposer) *Log { return newLog(sm, p, defaultInflight) }

// newLog is NewLog with up to inflight proposals in flight at once.
func newLog(sm *StateMachine, p Proposer, inflight int) *Log {
	l := &Log{sm: sm, p: p, wake: make(chan struct{}, 1), results: make(chan result, inflight),
		quit: make(chan struct{}), stopped: make(chan struct{}), maxPending: defaultMaxPending, maxInflight: inflight,
		live: map[store.ID]meta{}, pending: map[store.ID]*store.Message{}}
	l.space = sync.NewCond(&l.mu)
	l.baseMax = sm.each(func(id store.ID, m *store.Message) {
		l.live[id] = meta{queue: m.Queue, size: uint32(appendSize(id, m)), deliveries: m.Deliveries, redelivered: m.Redelivered}
		l.order = append(l.order, id)
	})
	l.nextID = l.baseMax + 1
	go l.run()
	return l
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// queueLocked queues o, joining the open group if o completes a Commit.
func (l *Log) queueLocked(o op, commit bool) *store.Commit {
	if commit {
		if l.open == nil {
			l.open = &group{c: store.NewCommit()}
		}
		o.g = l.open
		o.g.ops++
	}
	l.ops = append(l.ops, o)
	l.pendBytes += o.size
	signal(l.wake)
	if o.g != nil {
		return o.g.c
	}
	return nil
}

// Append implements store.Log: it assigns the next id, queues the record
// and returns the Commit of the batch that will carry it. It blocks while
// more than 64 MiB wait for Raft.
func (l *Log) Append(m *store.Message) (store.ID, *store.Commit, error) {
	if appendSize(1<<62, m) > maxRecord {
		return 0, nil, store.ErrTooLarge
	}
	c := copyMessage(m, false)
	if len(c.Props) == 0 {
		c.Props = nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	size := 0
	for !l.closed {
		size = appendSize(l.nextID, c)
		if l.pendBytes == 0 || l.pendBytes+size <= l.maxPending {
			break
		}
		l.waiters++
		l.space.Wait()
		l.waiters--
	}
	if l.closed {
		return 0, nil, store.ErrClosed
	}
	id := l.nextID
	l.nextID++
	l.live[id] = meta{queue: c.Queue, size: uint32(size), deliveries: c.Deliveries, redelivered: c.Redelivered}
	l.order = append(l.order, id)
	l.pending[id] = c
	return id, l.queueLocked(op{kind: kindAppend, id: id, msg: c, size: size}, true), nil
}

// Read implements store.Log.
func (l *Log) Read(id store.ID) (*store.Message, error) {
	m, _, err := l.read(id, false)
	return m, err
}

// ReadHead implements store.Log.
func (l *Log) ReadHead(id store.ID) (*store.Message, int, error) {
	return l.read(id, true)
}

func (l *Log) read(id store.ID, head bool) (*store.Message, int, error) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, 0, store.ErrClosed
	}
	if _, ok := l.live[id]; !ok {
		l.mu.Unlock()
		return nil, 0, store.ErrNotFound
	}
	if m := l.pending[id]; m != nil {
		l.mu.Unlock()
		return copyMessage(m, head), len(m.Body), nil // pending messages are never modified
	}
	l.mu.Unlock()
	return l.sm.read(id, head)
}

// Delivered implements store.Log: the record is queued after everything
// before it; it is not waited for.
func (l *Log) Delivered(id store.ID) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return store.ErrClosed
	}
	e, ok := l.live[id]
	if !ok {
		return store.ErrNotFound
	}
	e.deliveries++
	e.redelivered = true
	l.live[id] = e
	l.queueLocked(op{kind: kindDelivered, id: id, size: idSize(id)}, false)
	return nil
}

// Ack implements store.Log: the record is queued after everything before
// it; it is not waited for.
func (l *Log) Ack(id store.ID) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return store.ErrClosed
	}
	if _, ok := l.live[id]; !ok {
		return store.ErrNotFound
	}
	l.forgetLocked(id)
	l.queueLocked(op{kind: kindAck, id: id, size: idSize(id)}, false)
	return nil
}

func (l *Log) forgetLocked(id store.ID) {
	delete(l.live, id)
	delete(l.pending, id)
	if len(l.order) > 64 && len(l.live) < len(l.order)/4 {
		keep := make([]store.ID, 0, 2*len(l.live))
		for _, id := range l.order {
			if _, ok := l.live[id]; ok {
				keep = append(keep, id)
			}
		}
		l.order = keep
	}
}

// DropQueue implements store.Log: the queue's live messages, those still
// waiting for Raft included, are gone at once for this Log; the drop is
// durable when the returned Commit is done.
func (l *Log) DropQueue(queue string) (int, *store.Commit, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return 0, nil, store.ErrClosed
	}
	var ids []store.ID
	for _, id := range l.order {
		if e, ok := l.live[id]; ok && e.queue == queue {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return 0, nil, nil
	}
	for _, id := range ids {
		l.forgetLocked(id)
	}
	return len(ids), l.queueLocked(op{kind: kindDropQueue, queue: queue, size: dropSize(queue)}, true), nil
}

// Recover implements store.Log: every live message in id (= append)
// order. Messages that were live when this Log was made are reported
// redelivered: the previous leader's delivery records are not waited
// for, so one it handed out may have none (the disk store's rule after an
// unclean stop).
func (l *Log) Recover(fn func(store.Entry) error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return store.ErrClosed
	}
	for _, id := range l.order {
		e, ok := l.live[id]
		if !ok {
			continue
		}
		err := fn(store.Entry{ID: id, Queue: e.queue, Redelivered: e.redelivered || id <= l.baseMax,
			Deliveries: e.deliveries, Size: int(e.size)})
		if err != nil {
			return err
		}
	}
	return nil
}

// Len implements store.Log.
func (l *Log) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.live)
}

// Stats implements store.Log: Syncs counts entries committed, Pending the
// bytes queued for or in a proposal.
func (l *Log) Stats() store.Stats {
	resident := l.sm.Stats().Bytes // every live message, bodies included, on every node
	l.mu.Lock()
	defer l.mu.Unlock()
	return store.Stats{Syncs: l.syncs, Live: len(l.live), Pending: l.pendBytes, Resident: resident}
}

// Close implements store.Log: every Commit not yet complete fails with
// store.ErrClosed (nothing queued is proposed any more; an entry already
// proposed may still commit) and further calls return store.ErrClosed. sm
// is not touched. It waits for a Propose call in progress to return.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		<-l.stopped
		return nil
	}
	l.closed = true
	close(l.quit)
	l.space.Broadcast()
	l.mu.Unlock()
	<-l.stopped

	var gs []*group
	for drained := false; !drained; { // answered before run saw them
		select {
		case r := <-l.results:
			gs = append(gs, l.finish(r.b, r.err)...)
		default:
			drained = true
		}
	}
	l.mu.Lock()
	collect := func(ops []op) {
		for _, o := range ops {
			if g := o.g; g != nil && !g.completed {
				g.completed = true
				gs = append(gs, g)
			}
		}
	}
	for _, b := range l.flying {
		collect(b.ops)
	}
	l.flying = nil
	collect(l.ops)
	l.ops, l.open, l.pendBytes = nil, nil, 0
	l.live, l.order, l.pending = nil, nil, nil
	l.mu.Unlock()
	for _, g := range gs {
		g.c.Complete(store.ErrClosed)
	}
	return nil
}

// run is the proposer: whenever records are queued and fewer than
// maxInflight proposals are in flight (none, with NewLog), it proposes
// them as one entry; when an entry's answer comes it completes the
// Commits it finished.
func (l *Log) run() {
	defer close(l.stopped)
	for {
		select {
		case <-l.quit:
			return
		case r := <-l.results:
			gs := l.finish(r.b, r.err)
			l.propose() // the next entry goes out before the callbacks run
			complete(gs)
			continue
		case <-l.wake:
		}
		l.propose()
	}
}

// propose sends the queued records, while fewer than maxInflight
// proposals are in flight, as entries of at most maxBatchBytes (or one
// larger record). A proposal refused at once fails and the next is tried.
func (l *Log) propose() {
	for {
		l.mu.Lock()
		if l.closed || len(l.flying) >= l.maxInflight || len(l.ops) == 0 {
			l.mu.Unlock()
			return
		}
		n, size := 0, 1
		for n < len(l.ops) && (n == 0 || size+l.ops[n].size <= maxBatchBytes) {
			size += l.ops[n].size
			n++
		}
		b := &batch{ops: l.ops[:n:n], bytes: size - 1}
		l.ops = l.ops[n:]
		if len(l.ops) == 0 {
			l.ops = nil
		}
		l.open = nil // later appends wait for the next entry
		l.flying = append(l.flying, b)
		l.mu.Unlock()

		data := make([]byte, 0, size)
		data = append(data, batchVersion)
		for i := range b.ops {
			o := &b.ops[i]
			switch o.kind {
			case kindAppend:
				data = encodeAppend(data, o.id, o.msg)
			case kindDelivered, kindAck:
				data = encodeID(data, o.kind, o.id)
			case kindDropQueue:
				data = encodeDrop(data, o.queue)
			}
		}
		err := l.p.Propose(data, func(err error) {
			b.once.Do(func() { l.results <- result{b, err} })
		})
		refused := false
		if err != nil {
			b.once.Do(func() { refused = true })
		}
		if !refused {
			return // run receives the answer
		}
		complete(l.finish(b, err))
	}
}

// finish ends the in-flight batch b with err: on success its messages
// are in sm and leave the pending map. It returns the groups whose every
// op is now answered, to complete outside the lock (their callbacks may
// call the Log).
func (l *Log) finish(b *batch, err error) []*group {
	l.mu.Lock()
	defer l.mu.Unlock()
	i := slices.Index(l.flying, b)
	if i < 0 { // Close already failed it
		return nil
	}
	l.flying = slices.Delete(l.flying, i, i+1)
	l.pendBytes -= b.bytes
	if err == nil {
		l.syncs++
	}
	var gs []*group
	for _, o := range b.ops {
		if err == nil && o.kind == kindAppend {
			// A message whose entry failed stays pending, so the broker,
			// which still holds it, can read it until it is acked.
			delete(l.pending, o.id)
		}
		g := o.g
		if g == nil {
			continue
		}
		g.ops--
		if err != nil && g.err == nil {
			g.err = err
		}
		if g.ops == 0 && !g.completed {
			g.completed = true
			gs = append(gs, g)
		}
	}
	l.space.Broadcast()
	return gs
}

func complete(gs []*group) {
	for _, g := range gs {
		g.c.Complete(g.err)
	}
}
