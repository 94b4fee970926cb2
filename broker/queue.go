package broker

import (
	"sync"
	"time"

	"substrate/broker/amqp"
)

// message is a published message. It is immutable once routed, so several
// queues (a fanout) share one.
type message struct {
	exchange   string
	routingKey string
	props      []byte // raw content properties, forwarded byte for byte
	body       []byte
	ttl        int64 // per-message expiration in ms, -1 if none
}

// entry is a message in one queue.
type entry struct {
	m           *message
	expiresAt   int64 // unix nanoseconds, 0 if never
	redelivered bool
}

// store holds a queue's ready messages in order. memStore is the only
// implementation in this step; a disk-backed one for persistent messages
// will sit behind the same methods.
type store interface {
	push(e entry)
	pushFront(es []entry) // es[0] becomes the head
	peek() (entry, bool)
	pop() (entry, bool)
	len() int
	purge() int
}

// memStore is a ring buffer of entries.
type memStore struct {
	buf  []entry
	head int
	n    int
}

func (s *memStore) len() int { return s.n }

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
}

func (s *memStore) pushFront(es []entry) {
	s.grow(len(es))
	for i := len(es) - 1; i >= 0; i-- {
		s.head = (s.head - 1 + len(s.buf)) % len(s.buf)
		s.buf[s.head] = es[i]
		s.n++
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
	if s.n == 0 && len(s.buf) > 64 {
		s.buf, s.head = nil, 0 // give memory back after a burst
	}
	return e, true
}

func (s *memStore) purge() int {
	n := s.n
	s.buf, s.head, s.n = nil, 0, 0
	return n
}

// consumer is a basic.consume subscription of a channel on a queue.
type consumer struct {
	tag       string
	q         *Queue
	ch        *channel
	noAck     bool
	exclusive bool
	prefetch  int // per-consumer prefetch_count, 0 unlimited
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

	expires    time.Duration // x-expires, 0 none
	messageTTL int64         // x-message-ttl in ms, -1 none
	maxLength  int           // x-max-length, -1 none

	// bindings to this queue; guarded by vh.mu.
	bindings map[*binding]struct{}

	mu                sync.Mutex
	msgs              store
	consumers         []*consumer
	rr                int
	unacked           int
	deleted           bool
	hadConsumer       bool
	exclusiveConsumer bool
	expTimer          *time.Timer
	expGen            uint64
	ttlTimer          *time.Timer
	ttlAt             int64
}

func newQueue(vh *vhost, name string, durable, exclusive, autoDelete bool, args amqp.Table, owner *conn) *Queue {
	q := &Queue{vh: vh, name: name, durable: durable, exclusive: exclusive, autoDelete: autoDelete, args: args, owner: owner,
		messageTTL: -1, maxLength: -1, bindings: map[*binding]struct{}{}, msgs: &memStore{}}
	if v, ok := toInt(args["x-expires"]); ok && v > 0 {
		q.expires = time.Duration(v) * time.Millisecond
	}
	if v, ok := toInt(args["x-message-ttl"]); ok && v >= 0 {
		q.messageTTL = v
	}
	if v, ok := toInt(args["x-max-length"]); ok && v >= 0 {
		q.maxLength = int(v)
	}
	return q
}

// Name returns the queue's name.
func (q *Queue) Name() string { return q.name }

// Info returns the queue's description and counters.
func (q *Queue) Info() QueueInfo {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.dropExpiredLocked(time.Now().UnixNano())
	return QueueInfo{Name: q.name, Durable: q.durable, AutoDelete: q.autoDelete, Exclusive: q.exclusive,
		Arguments: copyArgs(q.args), Messages: q.msgs.len() + q.unacked, MessagesReady: q.msgs.len(),
		MessagesUnacknowledged: q.unacked, Consumers: len(q.consumers)}
}

// Counts returns the ready messages and the consumers, as queue.declare-ok
// reports them.
func (q *Queue) Counts() (messages, consumers int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.dropExpiredLocked(time.Now().UnixNano())
	return q.msgs.len(), len(q.consumers)
}

// Publish enqueues m (already routed here) and delivers what it can. It
// returns false if the queue was deleted meanwhile.
func (q *Queue) Publish(m *message, now int64) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.deleted {
		return false
	}
	e := entry{m: m}
	ttl := m.ttl
	if q.messageTTL >= 0 && (ttl < 0 || q.messageTTL < ttl) {
		ttl = q.messageTTL
	}
	if ttl >= 0 {
		e.expiresAt = now + ttl*int64(time.Millisecond)
	}
	// A message that can go straight to a consumer does, even with TTL 0,
	// as in RabbitMQ.
	if q.msgs.len() == 0 {
		if c := q.nextConsumerLocked(); c != nil && q.deliverLocked(c, e) {
			return true
		}
		if ttl == 0 {
			return true // expired at once
		}
	}
	q.msgs.push(e)
	if q.maxLength >= 0 {
		for q.msgs.len() > q.maxLength {
			q.msgs.pop() // overflow drop-head
		}
	}
	q.dispatchLocked()
	q.armTTLLocked()
	return true
}

// dropExpiredLocked drops expired messages at the head, as RabbitMQ does.
func (q *Queue) dropExpiredLocked(now int64) {
	for {
		e, ok := q.msgs.peek()
		if !ok || e.expiresAt == 0 || e.expiresAt > now {
			return
		}
		q.msgs.pop()
	}
}

// armTTLLocked makes sure expired head messages are dropped even when no
// one looks at the queue, so counts stay right.
func (q *Queue) armTTLLocked() {
	e, ok := q.msgs.peek()
	if !ok || e.expiresAt == 0 || q.deleted {
		return
	}
	if q.ttlTimer != nil && q.ttlAt <= e.expiresAt && q.ttlAt > 0 {
		return
	}
	if q.ttlTimer != nil {
		q.ttlTimer.Stop()
	}
	q.ttlAt = e.expiresAt
	d := time.Duration(e.expiresAt-time.Now().UnixNano()) + time.Millisecond
	q.ttlTimer = time.AfterFunc(max(d, 0), func() {
		q.mu.Lock()
		defer q.mu.Unlock()
		q.ttlTimer, q.ttlAt = nil, 0
		q.dropExpiredLocked(time.Now().UnixNano())
		q.armTTLLocked()
	})
}

// nextConsumerLocked picks the next consumer, round-robin, that has credit.
func (q *Queue) nextConsumerLocked() *consumer {
	n := len(q.consumers)
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
	if !c.ch.deliver(c, e) {
		return false
	}
	if !c.noAck {
		c.unacked++
		q.unacked++
	}
	return true
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
			return
		}
		e, _ := q.msgs.pop()
		if !q.deliverLocked(c, e) {
			q.msgs.pushFront([]entry{e})
		}
	}
}

// Dispatch delivers what it can; called when consumers gain credit.
func (q *Queue) Dispatch() {
	q.mu.Lock()
	q.dispatchLocked()
	q.mu.Unlock()
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
	defer q.mu.Unlock()
	if q.deleted {
		return consumeGone
	}
	if q.exclusiveConsumer || (c.exclusive && len(q.consumers) > 0) {
		return consumeExclusiveInUse
	}
	q.consumers = append(q.consumers, c)
	q.hadConsumer = true
	q.exclusiveConsumer = c.exclusive
	q.stopExpiryLocked()
	if onAdded != nil {
		onAdded()
	}
	q.dispatchLocked()
	return consumeOK
}

// Cancel removes c. It reports whether the queue should now be
// auto-deleted (it had consumers and has none left).
func (q *Queue) Cancel(c *consumer) (autoDelete bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for i, x := range q.consumers {
		if x == c {
			q.consumers = append(q.consumers[:i:i], q.consumers[i+1:]...)
			if c.exclusive {
				q.exclusiveConsumer = false
			}
			break
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
	defer q.mu.Unlock()
	if q.deleted {
		return false, consumeGone
	}
	q.touchLocked()
	q.dropExpiredLocked(time.Now().UnixNano())
	e, ok := q.msgs.pop()
	if !ok {
		return false, consumeOK
	}
	if ch.deliverGet(q, e, noAck, q.msgs.len()) && !noAck {
		q.unacked++
	}
	return true, consumeOK
}

// Ack settles deliveries of this queue (acked, or rejected without
// requeue): it frees consumer credit and delivers more.
func (q *Queue) Ack(ds []*delivery) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.settleLocked(ds)
	q.dispatchLocked()
}

func (q *Queue) settleLocked(ds []*delivery) {
	for _, d := range ds {
		if d.c != nil {
			d.c.unacked--
		}
		q.unacked--
	}
}

// Requeue puts deliveries back at the head of the queue, in their order,
// marked redelivered.
func (q *Queue) Requeue(ds []*delivery) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.settleLocked(ds)
	if q.deleted {
		return
	}
	es := make([]entry, len(ds))
	for i, d := range ds {
		es[i] = d.e
		es[i].redelivered = true
	}
	q.msgs.pushFront(es)
	q.dispatchLocked()
	q.armTTLLocked()
}

// Purge drops the ready messages and returns how many there were.
func (q *Queue) Purge() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.msgs.purge()
}

// markDeleted ends the queue: it returns the consumers to notify. The
// caller (the vhost, holding its lock) has checked if-unused/if-empty.
func (q *Queue) markDeleted() (count int, cs []*consumer) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.deleted = true
	cs = q.consumers
	q.consumers = nil
	count = q.msgs.purge()
	q.stopExpiryLocked()
	if q.ttlTimer != nil {
		q.ttlTimer.Stop()
		q.ttlTimer = nil
	}
	return count, cs
}

// inUse reports the numbers if-unused and if-empty look at.
func (q *Queue) usage() (messages, consumers int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.dropExpiredLocked(time.Now().UnixNano())
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
