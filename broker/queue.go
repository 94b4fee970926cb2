package broker

import (
	"sync"
	"sync/atomic"
	"time"

	"substrate/broker/amqp"
	"substrate/broker/store"
	"substrate/internal/faults"
)

// message is a published message. It is immutable once routed, so several
// queues (a fanout) share one.
type message struct {
	exchange   string
	routingKey string
	props      []byte // raw content properties, forwarded byte for byte
	body       []byte
	ttl        int64 // per-message expiration in ms, -1 if none
	priority   uint8 // priority property, 0 if none
	persistent bool  // delivery_mode 2
	// refs counts the queue entries and deliveries holding the body in
	// memory, so the broker's memory counts a fanout's message once
	// (Server.hold, release).
	refs atomic.Int32
}

// Queue limits and x-overflow modes, as RabbitMQ 3.10.
const (
	maxPriority              = 255 // highest x-max-priority
	overflowDropHead         = "drop-head"
	overflowRejectPublish    = "reject-publish"
	overflowRejectPublishDLX = "reject-publish-dlx"
)

// entry is a message in one queue. A message kept in the message store
// may be paged out: m is nil and the message is read back from the store
// when it is delivered (see pageLocked).
type entry struct {
	m           *message
	expiresAt   int64    // unix nanoseconds, 0 if never
	sid         store.ID // the message in the server's message store, 0 if not stored
	returns     int32    // quorum queues: times returned (the x-delivery-count)
	size        uint32   // body bytes
	prio        uint8    // priority property
	redelivered bool
}

func newEntry(m *message) entry {
	return entry{m: m, size: uint32(len(m.body)), prio: m.priority}
}

// readyList holds a queue's ready messages in order: memStore in publish
// order, priorityStore by priority, then publish order.
type readyList interface {
	push(e entry)
	pushFront(es []entry) // es[0] becomes the head (of its priority)
	peek() (entry, bool)
	pop() (entry, bool)
	len() int
	bytes() int64             // body bytes of the messages held
	resident() int64          // body bytes of those not paged out
	persistent() (int, int64) // messages kept in the message store, and their body bytes
	purge(fn func(entry)) int // fn, if not nil, sees each message dropped
}

// memStore is a ring buffer of entries.
type memStore struct {
	buf      []entry
	head     int
	n        int
	size     int64       // body bytes
	res      int64       // body bytes in memory
	pers     int         // messages kept in the message store (sid set)
	persSize int64       // their body bytes
	acct     *memAccount // the broker's memory: messages in memory are held (nil: not counted)
}

func (s *memStore) len() int { return s.n }

func (s *memStore) bytes() int64 { return s.size }

func (s *memStore) resident() int64 { return s.res }

func (s *memStore) persistent() (int, int64) { return s.pers, s.persSize }

// account adds (sign 1) or removes (sign -1) e's bytes.
func (s *memStore) account(e *entry, sign int64) {
	s.size += sign * int64(e.size)
	if e.sid != 0 {
		s.pers += int(sign)
		s.persSize += sign * int64(e.size)
	}
	if e.m != nil {
		s.res += sign * int64(e.size)
		if s.acct != nil {
			if sign > 0 {
				s.acct.hold(e.m)
			} else {
				s.acct.release(e.m)
			}
		}
	}
}

func (s *memStore) grow(need int) {
	if s.n+need <= len(s.buf) {
		return
	}
	nb := make([]entry, max(2*len(s.buf), s.n+need, 4))
	for i := 0; i < s.n; i++ {
		nb[i] = s.buf[(s.head+i)%len(s.buf)]
	}
	s.buf, s.head = nb, 0
}

func (s *memStore) push(e entry) {
	s.grow(1)
	s.buf[(s.head+s.n)%len(s.buf)] = e
	s.n++
	s.account(&e, 1)
}

func (s *memStore) pushFront(es []entry) {
	s.grow(len(es))
	for i := len(es) - 1; i >= 0; i-- {
		s.head = (s.head - 1 + len(s.buf)) % len(s.buf)
		s.buf[s.head] = es[i]
		s.n++
		s.account(&es[i], 1)
	}
}

func (s *memStore) peek() (entry, bool) {
	if s.n == 0 {
		return entry{}, false
	}
	return s.buf[s.head], true
}

func (s *memStore) pop() (entry, bool) {
	if s.n == 0 {
		return entry{}, false
	}
	e := s.buf[s.head]
	s.buf[s.head] = entry{}
	s.head = (s.head + 1) % len(s.buf)
	s.n--
	s.account(&e, -1)
	if s.n == 0 && len(s.buf) > 64 {
		s.buf, s.head = nil, 0 // give memory back after a burst
	}
	return e, true
}

func (s *memStore) purge(fn func(entry)) int {
	n := s.n
	if fn != nil || s.acct != nil && s.res > 0 {
		for i := 0; i < s.n; i++ {
			e := s.buf[(s.head+i)%len(s.buf)]
			if e.m != nil && s.acct != nil {
				s.acct.release(e.m)
			}
			if fn != nil {
				fn(e)
			}
		}
	}
	s.buf, s.head, s.n, s.size, s.res = nil, 0, 0, 0, 0
	s.pers, s.persSize = 0, 0
	return n
}

// priorityStore is the readyList of a queue with x-max-priority: one FIFO per
// priority 0..max; a message's priority is its priority property capped
// at max. Higher priorities leave first, as in RabbitMQ's
// rabbit_priority_queue (drop-head, too, takes the highest priority's
// oldest message). Expiry, too, looks at the head only: an expired
// message behind one of a higher priority stays until it is at the head
// (rabbit_priority_queue:dropwhile stops at the first live head).
type priorityStore struct {
	levels []memStore
	n      int
}

func newPriorityStore(maxPrio int, acct *memAccount) *priorityStore {
	s := &priorityStore{levels: make([]memStore, maxPrio+1)}
	for i := range s.levels {
		s.levels[i].acct = acct
	}
	return s
}

func (s *priorityStore) level(e entry) *memStore {
	return &s.levels[min(int(e.prio), len(s.levels)-1)]
}

func (s *priorityStore) push(e entry) {
	s.level(e).push(e)
	s.n++
}

func (s *priorityStore) pushFront(es []entry) {
	// Each message goes back to the head of its priority, in order.
	for i := len(es) - 1; i >= 0; i-- {
		s.level(es[i]).pushFront(es[i : i+1])
		s.n++
	}
}

func (s *priorityStore) top() *memStore {
	for i := len(s.levels) - 1; i >= 0; i-- {
		if s.levels[i].n > 0 {
			return &s.levels[i]
		}
	}
	return nil
}

func (s *priorityStore) peek() (entry, bool) {
	if l := s.top(); l != nil {
		return l.peek()
	}
	return entry{}, false
}

func (s *priorityStore) pop() (entry, bool) {
	l := s.top()
	if l == nil {
		return entry{}, false
	}
	e, _ := l.pop()
	s.n--
	return e, true
}

func (s *priorityStore) len() int { return s.n }

func (s *priorityStore) bytes() int64 {
	var n int64
	for i := range s.levels {
		n += s.levels[i].size
	}
	return n
}

func (s *priorityStore) resident() int64 {
	var n int64
	for i := range s.levels {
		n += s.levels[i].res
	}
	return n
}

func (s *priorityStore) persistent() (n int, size int64) {
	for i := range s.levels {
		n += s.levels[i].pers
		size += s.levels[i].persSize
	}
	return n, size
}

func (s *priorityStore) purge(fn func(entry)) int {
	n := s.n
	for i := range s.levels {
		s.levels[i].purge(fn)
	}
	s.n = 0
	return n
}

// consumer is a basic.consume subscription of a channel on a queue.
type consumer struct {
	tag       string
	q         *Queue
	ch        *channel
	noAck     bool
	exclusive bool
	prefetch  int   // per-consumer prefetch_count, 0 unlimited
	priority  int64 // x-priority consumer argument, 0 by default
	args      amqp.Table
	unacked   int // guarded by q.mu
}

// Queue is a message queue. Its state is behind mu; other code uses its
// methods only, so that a queue can later live on another node.
type Queue struct {
	vh         *vhost
	name       string
	durable    bool
	exclusive  bool
	autoDelete bool
	args       amqp.Table
	owner      *conn // exclusive owner, nil otherwise (immutable)
	// log is the server's message store when the queue keeps messages
	// there (durable, not exclusive); nil otherwise. key is the queue's
	// name in it.
	log store.Log
	key string

	sac    bool // x-single-active-consumer
	quorum bool // x-queue-type quorum: delivery counts

	// bindings to this queue; guarded by vh.mu.
	bindings map[*binding]struct{}

	created     atomic.Bool // counted in ChurnStats.QueueCreated
	unackedPers int32       // stored messages among the unacknowledged (under mu; here to pack the struct)

	mu                sync.Mutex
	msgs              readyList
	consumers         []*consumer // in registration order
	rr                int
	mixedPrio         bool      // consumers have different x-priority values
	active            *consumer // single active consumer (sac)
	unacked           int
	deleted           bool
	hadConsumer       bool
	exclusiveConsumer bool
	expTimer          *time.Timer
	expGen            uint64
	ttlTimer          *time.Timer
	ttlAt             int64
	dead              []deadLetter // to publish once mu is released (unlock)
	// fl is the flusher of the reader publishing or acking under mu (nil
	// otherwise): deliveries made meanwhile are written by that reader
	// when it has no more input (outbound.kickFor).
	fl *flusher

	// Settings from the arguments and the policies in effect
	// (applyPolicyLocked, policy.go), which may change them.
	pol           queuePolicy
	expires       time.Duration // x-expires, 0 none
	messageTTL    int64         // x-message-ttl in ms, -1 none
	maxLength     int           // x-max-length, -1 none
	maxBytes      int64         // x-max-length-bytes, -1 none
	overflow      string        // x-overflow: overflowDropHead (default), overflowRejectPublish(DLX)
	dlx           *string       // x-dead-letter-exchange, nil none
	dlrk          *string       // x-dead-letter-routing-key, nil: the message's own
	deliveryLimit int64         // quorum x-delivery-limit, -1 none

	// Statistics (stats.go, QueueInfo): message counters, the bytes and
	// stored messages among the unacknowledged, and the last use.
	stats          queueStatValues
	unackedBytes   int64
	unackedPersLen int64
	lastUsed       int64 // unix ns
}

func newQueue(vh *vhost, name string, durable, exclusive, autoDelete bool, args amqp.Table, owner *conn) *Queue {
	q := &Queue{vh: vh, name: name, durable: durable, exclusive: exclusive, autoDelete: autoDelete, args: args, owner: owner,
		quorum: args["x-queue-type"] == "quorum", bindings: map[*binding]struct{}{}}
	q.applyPolicyLocked(queuePolicyFor(vh.policies.Load(), name)) // not shared yet
	var acct *memAccount
	if vh.srv != nil {
		acct = &vh.srv.mem
	}
	q.msgs = &memStore{acct: acct}
	q.lastUsed = time.Now().UnixNano()
	if durable && owner == nil && vh.srv.store != nil {
		q.log, q.key = vh.srv.store, storeKey(vh.name, name)
	}
	if v, ok := toInt(args["x-max-priority"]); ok && v >= 0 && v <= maxPriority {
		q.msgs = newPriorityStore(int(v), acct)
	}
	q.sac = args["x-single-active-consumer"] == true
	return q
}

// Name returns the queue's name.
func (q *Queue) Name() string { return q.name }

// Counts returns the ready messages and the consumers, as queue.declare-ok
// reports them.
func (q *Queue) Counts() (messages, consumers int) {
	q.mu.Lock()
	defer q.unlock()
	q.dropExpiredLocked(time.Now().UnixNano())
	return q.msgs.len(), len(q.consumers)
}

// pubResult is what a queue did with a published message.
type pubResult int

const (
	pubDeleted     pubResult = iota // the queue was deleted meanwhile
	pubQueued                       // enqueued or delivered
	pubRejected                     // refused by x-overflow reject-publish(-dlx)
	pubStoreFailed                  // the message store refused it
)

// Publish enqueues m (already routed here) and delivers what it can.
//
// With x-max-length or x-max-length-bytes, overflow is RabbitMQ's: with
// drop-head the oldest ready messages go (dead-lettered, reason maxlen)
// until the queue is within its limits again; with reject-publish a
// message that would take the queue over a limit is refused (the
// publisher gets basic.nack), and with reject-publish-dlx it is also
// dead-lettered.
//
// A message the queue keeps in the message store (see storeLocked) is
// appended there first; the returned Commit, if not nil, is done when it
// is durable, and the publisher's confirm waits for it. A message the
// store refuses is not enqueued (pubStoreFailed).
//
// fl is the publishing reader's flusher, nil on other goroutines.
func (q *Queue) Publish(m *message, now int64, fl *flusher) (pubResult, *store.Commit) {
	q.mu.Lock()
	defer q.unlock()
	e, res, commit := q.stageLocked(m)
	if res != pubQueued {
		return res, nil
	}
	q.fl = fl
	q.enqueueLocked(e, now)
	q.fl = nil
	return pubQueued, commit
}

// stageLocked checks m against the queue's limits and appends it to the
// message store if the queue keeps it there: the first half of Publish.
func (q *Queue) stageLocked(m *message) (entry, pubResult, *store.Commit) {
	if q.deleted {
		return entry{}, pubDeleted, nil
	}
	if q.overflow != overflowDropHead && q.refuseLocked(m) {
		if q.overflow == overflowRejectPublishDLX {
			q.dropLocked(newEntry(m), reasonMaxlen)
		}
		return entry{}, pubRejected, nil
	}
	e := newEntry(m)
	commit, err := q.storeLocked(&e)
	if err != nil {
		return entry{}, pubStoreFailed, nil
	}
	return e, pubQueued, commit
}

// enqueueLocked makes a staged message ready (or delivers it): the second
// half of Publish.
func (q *Queue) enqueueLocked(e entry, now int64) {
	q.stats[statPublish]++
	q.lastUsed = now
	ttl := q.setExpiry(&e, now)
	// A message that can go straight to a consumer does, even with TTL 0,
	// as in RabbitMQ.
	if q.msgs.len() == 0 {
		if c := q.nextConsumerLocked(); c != nil && q.deliverLocked(c, e) {
			return
		}
		if ttl == 0 {
			q.dropLocked(e, reasonExpired) // expired at once
			return
		}
	}
	q.pageLocked(&e)
	q.msgs.push(e)
	for q.overflow == overflowDropHead && q.overLimitLocked() {
		h, _ := q.msgs.pop() // overflow drop-head
		q.dropLocked(h, reasonMaxlen)
	}
	q.dispatchLocked()
	q.armTTLLocked()
}

// Stage is the first half of a publish held back until its storage is
// durable (tx.commit): the message is checked and stored, not yet
// visible. Enqueue or Unstage must follow.
func (q *Queue) Stage(m *message) (entry, pubResult, *store.Commit) {
	q.mu.Lock()
	defer q.unlock()
	return q.stageLocked(m)
}

// Enqueue makes a staged message visible; a queue deleted meanwhile
// forgets it.
func (q *Queue) Enqueue(e entry, now int64) {
	q.mu.Lock()
	defer q.unlock()
	if q.deleted {
		q.forgetLocked(e)
		return
	}
	q.enqueueLocked(e, now)
}

// Unstage withdraws a staged message whose storage failed: it is never
// delivered, and its store record, if any, is acknowledged away.
func (q *Queue) Unstage(e entry) {
	q.mu.Lock()
	defer q.unlock()
	q.forgetLocked(e)
}

// setExpiry sets e.expiresAt from the TTL that applies to its message in
// this queue, the lower of its expiration property and x-message-ttl, and
// returns that TTL in ms (-1 if none).
func (q *Queue) setExpiry(e *entry, now int64) int64 {
	ttl := e.m.ttl
	if q.messageTTL >= 0 && (ttl < 0 || q.messageTTL < ttl) {
		ttl = q.messageTTL
	}
	if ttl >= 0 {
		e.expiresAt = now + ttl*int64(time.Millisecond)
	}
	return ttl
}

// overLimitLocked reports whether the ready messages exceed x-max-length
// or x-max-length-bytes.
func (q *Queue) overLimitLocked() bool {
	return q.maxLength >= 0 && q.msgs.len() > q.maxLength || q.maxBytes >= 0 && q.msgs.bytes() > q.maxBytes
}

// refuseLocked reports whether reject-publish refuses m: for a classic
// queue when enqueueing it would exceed a limit
// (rabbit_amqqueue_process:will_overflow; a consumer waiting makes no
// difference); for a quorum queue when the queue is already over a limit
// (rabbit_fifo accepts the message that takes it over).
func (q *Queue) refuseLocked(m *message) bool {
	if q.quorum {
		return q.overLimitLocked()
	}
	return q.maxLength >= 0 && q.msgs.len()+1 > q.maxLength ||
		q.maxBytes >= 0 && q.msgs.bytes()+int64(len(m.body)) > q.maxBytes
}

// dropExpiredLocked drops (dead-letters) expired messages at the head, as
// RabbitMQ does.
func (q *Queue) dropExpiredLocked(now int64) {
	for {
		e, ok := q.msgs.peek()
		if !ok || e.expiresAt == 0 || e.expiresAt > now {
			return
		}
		q.msgs.pop()
		q.dropLocked(e, reasonExpired)
	}
}

// armTTLLocked makes sure expired head messages are dropped even when no
// one looks at the queue, so counts stay right.
func (q *Queue) armTTLLocked() {
	e, _ := q.msgs.peek()
	at := e.expiresAt
	if at == 0 || q.deleted {
		return
	}
	if q.ttlTimer != nil && q.ttlAt <= at && q.ttlAt > 0 {
		return
	}
	if q.ttlTimer != nil {
		q.ttlTimer.Stop()
	}
	q.ttlAt = at
	d := time.Duration(at-time.Now().UnixNano()) + time.Millisecond
	q.ttlTimer = time.AfterFunc(max(d, 0), q.expireMessages)
}

// expireMessages is the message-TTL timer's action. A panic here belongs
// to the queue: it is logged and counted, q.mu is released by the
// deferred unlock, and the timer is left disarmed, so the next publish,
// ack or consume re-arms it (no retry loop on a message that panics).
func (q *Queue) expireMessages() {
	defer faults.Recover(q.vh.srv.log, faults.AMQP, q.vh.rs("queue", q.name), nil)
	q.mu.Lock()
	defer q.unlock()
	q.ttlTimer, q.ttlAt = nil, 0
	faults.Point("amqp.queue-ttl", q.name)
	q.dropExpiredLocked(time.Now().UnixNano())
	q.armTTLLocked()
}

// nextConsumerLocked picks the consumer for the next message: with
// x-single-active-consumer the active one, if it has credit; otherwise,
// among the consumers with credit, one of the highest x-priority,
// round-robin between equals (a lower priority gets messages only while
// every higher one is blocked), as RabbitMQ's rabbit_queue_consumers.
func (q *Queue) nextConsumerLocked() *consumer {
	if q.sac {
		if q.active != nil && q.active.canTake() {
			return q.active
		}
		return nil
	}
	n := len(q.consumers)
	if q.mixedPrio {
		var best *consumer
		bestIdx := 0
		for i := 0; i < n; i++ {
			idx := (q.rr + i) % n
			c := q.consumers[idx]
			if best != nil && c.priority <= best.priority {
				continue
			}
			if c.canTake() {
				best, bestIdx = c, idx
			}
		}
		if best != nil {
			q.rr = (bestIdx + 1) % n
		}
		return best
	}
	for i := 0; i < n; i++ {
		c := q.consumers[(q.rr+i)%n]
		if c.canTake() {
			q.rr = (q.rr + i + 1) % n
			return c
		}
	}
	return nil
}

func (c *consumer) canTake() bool {
	if !c.noAck && c.prefetch > 0 && c.unacked >= c.prefetch {
		return false
	}
	return c.ch.canDeliver(c)
}

// deliverLocked hands e to c; false if c's channel closed meanwhile.
func (q *Queue) deliverLocked(c *consumer, e entry) bool {
	out, ok := q.messageLocked(e)
	if !ok {
		return true // unreadable: dropped
	}
	if q.quorum && e.returns > 0 {
		out = out.withHeader("x-delivery-count", int64(e.returns))
	}
	if !c.ch.deliver(c, e, out, q.fl) {
		return false
	}
	q.deliveredLocked(e, c.noAck)
	q.countDeliveryLocked(e, statDeliver, statDeliverNoAck, c.noAck)
	if !c.noAck {
		c.unacked++
	}
	return true
}

// countDeliveryLocked counts a delivery or a get of e (ack, noAck: which
// counter) and, when an ack is due, its unacknowledged message.
func (q *Queue) countDeliveryLocked(e entry, ack, noAckStat stat, noAck bool) {
	if e.redelivered {
		q.stats[statRedeliver]++
	}
	if noAck {
		q.stats[noAckStat]++
		return
	}
	q.stats[ack]++
	q.unacked++
	q.unackedBytes += int64(e.size)
	if e.sid != 0 {
		q.unackedPers++
		q.unackedPersLen += int64(e.size)
	}
}

// dispatchLocked delivers ready messages to consumers with credit.
func (q *Queue) dispatchLocked() {
	if len(q.consumers) == 0 || q.msgs.len() == 0 {
		return
	}
	now := time.Now().UnixNano()
	for q.msgs.len() > 0 {
		q.dropExpiredLocked(now)
		if q.msgs.len() == 0 {
			return
		}
		c := q.nextConsumerLocked()
		if c == nil {
			break
		}
		e, _ := q.msgs.pop()
		if !q.deliverLocked(c, e) {
			q.msgs.pushFront([]entry{e})
		}
	}
	q.armTTLLocked() // for the new head
}

// Dispatch delivers what it can; called when consumers gain credit.
func (q *Queue) Dispatch() {
	q.mu.Lock()
	q.dispatchLocked()
	q.unlock()
}

// consumeError says why Consume refused.
type consumeError int

const (
	consumeOK consumeError = iota
	consumeGone
	consumeExclusiveInUse
)

// Consume adds c. onAdded runs under the queue's lock before any delivery
// to c, so the channel can send basic.consume-ok ahead of them.
func (q *Queue) Consume(c *consumer, onAdded func()) consumeError {
	q.mu.Lock()
	defer q.unlock()
	if q.deleted {
		return consumeGone
	}
	if q.exclusiveConsumer || (c.exclusive && len(q.consumers) > 0) {
		return consumeExclusiveInUse
	}
	q.consumers = append(q.consumers, c)
	q.consumersChangedLocked()
	if q.sac && q.active == nil {
		q.active = c
	}
	q.hadConsumer = true
	q.exclusiveConsumer = c.exclusive
	q.stopExpiryLocked()
	if onAdded != nil {
		onAdded()
	}
	q.dispatchLocked()
	return consumeOK
}

// consumersChangedLocked notes whether consumer priorities differ.
func (q *Queue) consumersChangedLocked() {
	q.mixedPrio = false
	for _, c := range q.consumers {
		if c.priority != q.consumers[0].priority {
			q.mixedPrio = true
		}
	}
	if q.rr >= len(q.consumers) {
		q.rr = 0
	}
}

// Cancel removes c. It reports whether the queue should now be
// auto-deleted (it had consumers and has none left). When the single
// active consumer goes, the next is the one of the highest x-priority
// registered first (RabbitMQ 3.10); it gets the ready messages.
func (q *Queue) Cancel(c *consumer) (autoDelete bool) {
	q.mu.Lock()
	defer q.unlock()
	for i, x := range q.consumers {
		if x == c {
			q.consumers = append(q.consumers[:i:i], q.consumers[i+1:]...)
			if c.exclusive {
				q.exclusiveConsumer = false
			}
			break
		}
	}
	q.consumersChangedLocked()
	if q.active == c {
		q.active = nil
		for _, x := range q.consumers {
			if q.active == nil || x.priority > q.active.priority {
				q.active = x
			}
		}
		if !q.deleted {
			q.dispatchLocked()
		}
	}
	if q.deleted || len(q.consumers) > 0 {
		return false
	}
	q.rr = 0
	q.armExpiryLocked()
	return q.autoDelete && q.hadConsumer
}

// Get takes one message for basic.get; send writes the get-ok under the
// queue's lock with the number of messages left.
func (q *Queue) Get(ch *channel, noAck bool) (bool, consumeError) {
	q.mu.Lock()
	defer q.unlock()
	if q.deleted {
		return false, consumeGone
	}
	q.touchLocked()
	now := time.Now().UnixNano()
	q.lastUsed = now
	q.dropExpiredLocked(now)
	e, ok := q.msgs.pop()
	if !ok {
		q.stats[statGetEmpty]++
		return false, consumeOK
	}
	out, ok := q.messageLocked(e)
	if !ok { // unreadable: dropped
		ch.c.out.method(ch.id, &amqp.BasicGetEmpty{})
		return true, consumeOK
	}
	if q.quorum { // basic.get always has the header, 0 included
		out = out.withHeader("x-delivery-count", int64(e.returns))
	}
	ch.deliverGet(q, e, out, noAck, q.msgs.len())
	q.deliveredLocked(e, noAck)
	q.countDeliveryLocked(e, statGet, statGetNoAck, noAck)
	// The new head may have expired behind the one taken (a priority
	// queue), as after RabbitMQ's fetch.
	q.dropExpiredLocked(time.Now().UnixNano())
	q.armTTLLocked()
	return true, consumeOK
}

// Ack settles deliveries of this queue (acked, or rejected without
// requeue): it frees consumer credit and delivers more. fl is the acking
// reader's flusher (nil on other goroutines).
func (q *Queue) Ack(ds []*delivery, fl *flusher) {
	q.mu.Lock()
	defer q.unlock()
	q.stats[statAck] += uint64(len(ds))
	q.lastUsed = time.Now().UnixNano()
	q.settleLocked(ds)
	for _, d := range ds {
		q.forgetLocked(d.e)
	}
	q.fl = fl
	q.dispatchLocked()
	q.fl = nil
}

// Reject settles deliveries rejected without requeue (basic.reject or
// basic.nack with requeue=false): they are dead-lettered if the queue has
// a dead-letter exchange, dropped otherwise.
func (q *Queue) Reject(ds []*delivery) {
	q.mu.Lock()
	defer q.unlock()
	q.settleLocked(ds)
	for _, d := range ds {
		if q.deleted {
			q.forgetLocked(d.e)
		} else {
			q.dropLocked(d.e, reasonRejected)
		}
	}
	q.dispatchLocked()
}

func (q *Queue) settleLocked(ds []*delivery) {
	for _, d := range ds {
		if d.c != nil {
			d.c.unacked--
		}
		q.unacked--
		q.unackedBytes -= int64(d.e.size)
		if d.e.sid != 0 {
			q.unackedPers--
			q.unackedPersLen -= int64(d.e.size)
		}
	}
}

// Requeue puts deliveries back at the head of the queue, in their order,
// marked redelivered. A quorum queue counts the return (any: nack or
// reject with requeue, channel close, recover); with x-delivery-limit, a
// message returned more than the limit is dropped or dead-lettered
// (reason delivery_limit) instead, as RabbitMQ 3.10's rabbit_fifo.
func (q *Queue) Requeue(ds []*delivery) {
	q.mu.Lock()
	defer q.unlock()
	q.settleLocked(ds)
	if q.deleted {
		return
	}
	es := make([]entry, 0, len(ds))
	for _, d := range ds {
		e := d.e
		e.redelivered = true
		if q.quorum {
			e.returns++
			if q.deliveryLimit >= 0 && int64(e.returns) > q.deliveryLimit {
				q.dropLocked(e, reasonDeliveryLimit)
				continue
			}
		}
		es = append(es, e)
	}
	q.msgs.pushFront(es)
	q.dispatchLocked()
	q.armTTLLocked()
}

// Purge drops the ready messages and returns how many there were.
func (q *Queue) Purge() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.log == nil {
		return q.msgs.purge(nil)
	}
	return q.msgs.purge(q.forgetLocked)
}

// markDeleted ends the queue: it returns the consumers to notify and the
// message store's commit that makes the removal of its stored messages
// durable (nil if none). The caller (the vhost, holding its lock) has
// checked if-unused/if-empty.
func (q *Queue) markDeleted() (count int, cs []*consumer, dropped *store.Commit) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.deleted = true
	if q.vh.srv != nil {
		q.vh.srv.churn.qDeleted.Add(1)
	}
	cs = q.consumers
	q.consumers, q.active = nil, nil
	count = q.msgs.purge(nil)
	dropped = q.dropStoredLocked()
	q.flushDeadLater()
	q.stopExpiryLocked()
	if q.ttlTimer != nil {
		q.ttlTimer.Stop()
		q.ttlTimer = nil
	}
	return count, cs, dropped
}

// inUse reports the numbers if-unused and if-empty look at.
func (q *Queue) usage() (messages, consumers int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.dropExpiredLocked(time.Now().UnixNano())
	q.flushDeadLater() // the caller holds vhost.mu
	return q.msgs.len(), len(q.consumers)
}

// Touch counts as use for x-expires (a redeclare, a basic.get).
func (q *Queue) Touch() {
	q.mu.Lock()
	q.touchLocked()
	q.mu.Unlock()
}

func (q *Queue) touchLocked() {
	if len(q.consumers) == 0 {
		q.armExpiryLocked()
	}
}

func (q *Queue) stopExpiryLocked() {
	q.expGen++
	if q.expTimer != nil {
		q.expTimer.Stop()
		q.expTimer = nil
	}
}

// armExpiryLocked (re)starts the x-expires timer.
func (q *Queue) armExpiryLocked() {
	if q.expires <= 0 || q.deleted {
		return
	}
	q.stopExpiryLocked()
	gen := q.expGen
	q.expTimer = time.AfterFunc(q.expires, func() { q.vh.expireQueue(q, gen) })
}

// expiredGen reports whether the expiry timer of generation gen is still
// current and the queue unused.
func (q *Queue) expiredGen(gen uint64) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return !q.deleted && q.expGen == gen && len(q.consumers) == 0
}

func (q *Queue) stopTimers() {
	q.mu.Lock()
	q.stopExpiryLocked()
	if q.ttlTimer != nil {
		q.ttlTimer.Stop()
		q.ttlTimer = nil
	}
	q.mu.Unlock()
}

func (q *Queue) isDeleted() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.deleted
}
