package replica

import (
	"encoding/binary"
	"hash/crc32"
	"log/slog"
	"sync"

	"substrate/broker/store"
)

// StateMachine is every node's copy of the live persistent messages, built
// by applying the committed batches in log order. It implements
// raftnode.StateMachine (Apply, Snapshot, Restore). All methods are safe
// for concurrent use: Apply runs on the Raft apply goroutine while the
// active broker reads through a Log.
type StateMachine struct {
	mu      sync.RWMutex
	msgs    map[store.ID]*store.Message
	order   []store.ID // append order (= id order); acked ids are removed lazily
	queues  map[string]*queueCount
	maxID   store.ID // highest id ever appended
	applied uint64   // index of the last applied entry (or of the restored snapshot)
	bytes   int64    // encoded size of the live messages
	entries uint64   // entries applied
	bad     uint64   // malformed entries and invalid records skipped
	log     *slog.Logger
}

// queueCount interns a queue's name and counts its live messages.
type queueCount struct {
	name string
	n    int
}

// StateStats are a StateMachine's counters.
type StateStats struct {
	Live    int      // live messages
	Bytes   int64    // their encoded size
	MaxID   store.ID // highest id ever appended
	Applied uint64   // index of the last applied entry
	Entries uint64   // entries applied since NewStateMachine or Restore
	// Bad counts entries that did not decode and records that could not
	// apply (a duplicate or out-of-order id): skipped, on every node
	// alike. Non-zero means a bug or damage; the first of each is logged.
	Bad uint64
}

// NewStateMachine returns an empty state machine.
func NewStateMachine() *StateMachine {
	return &StateMachine{msgs: map[store.ID]*store.Message{}, queues: map[string]*queueCount{},
		log: slog.New(slog.DiscardHandler)}
}

// SetLogger sets where skipped entries are reported (nil discards).
func (sm *StateMachine) SetLogger(l *slog.Logger) {
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	sm.mu.Lock()
	sm.log = l
	sm.mu.Unlock()
}

// Len returns the number of live messages.
func (sm *StateMachine) Len() int {
	sm.mu.RLock()
	defer sm.mu.RUnlock()
	return len(sm.msgs)
}

// Stats returns the state machine's counters.
func (sm *StateMachine) Stats() StateStats {
	sm.mu.RLock()
	defer sm.mu.RUnlock()
	return StateStats{Live: len(sm.msgs), Bytes: sm.bytes, MaxID: sm.maxID, Applied: sm.applied,
		Entries: sm.entries, Bad: sm.bad}
}

// Apply applies one committed entry's batch of records, in order. An
// entry at or below the applied index (already covered by a restored
// snapshot) is ignored; a malformed entry is skipped whole and counted in
// Stats.Bad, and so is a record that cannot apply: every node decodes the
// same bytes, so every node skips the same. Acks and deliveries of
// unknown ids, and drops of queues with no messages, are no-ops.
func (sm *StateMachine) Apply(index uint64, data []byte) {
	recs, err := decodeBatch(data)
	sm.mu.Lock()
	defer sm.mu.Unlock()
	if index != 0 && index <= sm.applied {
		return
	}
	if index != 0 {
		sm.applied = index
	}
	sm.entries++
	if err != nil {
		sm.badLocked(index, err)
		return
	}
	for i := range recs {
		r := &recs[i]
		switch r.kind {
		case kindAppend:
			if r.id <= sm.maxID {
				sm.badLocked(index, &DecodeError{What: "batch", Err: errOrder})
				continue
			}
			sm.addLocked(r.id, &r.msg)
		case kindDelivered:
			if m := sm.msgs[r.id]; m != nil {
				m.Deliveries++
				m.Redelivered = true
			}
		case kindAck:
			if m := sm.msgs[r.id]; m != nil {
				sm.removeLocked(r.id, m)
			}
		case kindDropQueue:
			if q := sm.queues[r.queue]; q != nil {
				for _, id := range sm.order {
					if m := sm.msgs[id]; m != nil && m.Queue == r.queue {
						sm.removeLocked(id, m)
					}
				}
			}
		}
	}
	sm.compactLocked()
}

func (sm *StateMachine) badLocked(index uint64, err error) {
	sm.bad++
	if sm.bad == 1 || sm.bad&(sm.bad-1) == 0 { // the first, then at powers of two
		sm.log.Error("replica: skipped a log record that cannot apply", "index", index, "skipped", sm.bad, "err", err)
	}
}

// addLocked stores a copy of m (which may alias a Raft buffer): properties
// and body in one allocation, the queue name interned.
func (sm *StateMachine) addLocked(id store.ID, m *store.Message) {
	q := sm.queues[m.Queue]
	if q == nil {
		q = &queueCount{name: m.Queue}
		sm.queues[m.Queue] = q
	}
	q.n++
	buf := make([]byte, len(m.Props)+len(m.Body))
	copy(buf, m.Props)
	copy(buf[len(m.Props):], m.Body)
	c := &store.Message{Queue: q.name, Exchange: m.Exchange, RoutingKey: m.RoutingKey,
		Body: buf[len(m.Props):len(buf):len(buf)], Redelivered: m.Redelivered, Deliveries: m.Deliveries}
	if len(m.Props) > 0 {
		c.Props = buf[:len(m.Props):len(m.Props)]
	}
	sm.msgs[id] = c
	sm.order = append(sm.order, id)
	sm.maxID = id
	sm.bytes += int64(appendSize(id, c))
}

func (sm *StateMachine) removeLocked(id store.ID, m *store.Message) {
	delete(sm.msgs, id)
	sm.bytes -= int64(appendSize(id, m))
	if q := sm.queues[m.Queue]; q != nil {
		if q.n--; q.n == 0 {
			delete(sm.queues, m.Queue)
		}
	}
}

// compactLocked drops acknowledged ids from order once they are most of it.
func (sm *StateMachine) compactLocked() {
	if len(sm.order) <= 64 || len(sm.msgs) >= len(sm.order)/4 {
		return
	}
	keep := make([]store.ID, 0, 2*len(sm.msgs))
	for _, id := range sm.order {
		if sm.msgs[id] != nil {
			keep = append(keep, id)
		}
	}
	sm.order = keep
}

// Snapshot returns the whole state: the applied index, the highest id and
// every live message in id order (see doc.go for the layout).
func (sm *StateMachine) Snapshot() ([]byte, error) {
	sm.mu.RLock()
	defer sm.mu.RUnlock()
	size := snapHeader + 4 + int(sm.bytes)
	buf := make([]byte, 0, size)
	buf = append(buf, snapMagic[:]...)
	buf = append(buf, snapVersion)
	buf = binary.LittleEndian.AppendUint64(buf, sm.applied)
	buf = binary.LittleEndian.AppendUint64(buf, uint64(sm.maxID))
	buf = binary.LittleEndian.AppendUint64(buf, uint64(len(sm.msgs)))
	for _, id := range sm.order {
		if m := sm.msgs[id]; m != nil {
			buf = encodeMessage(buf, id, m)
		}
	}
	return binary.LittleEndian.AppendUint32(buf, crc32.Checksum(buf, castagnoli)), nil
}

// Restore replaces the state with a snapshot's. A snapshot that does not
// validate (checksum, version, ids in order and not above its max id, the
// exact count, no trailing bytes) is refused and the state is unchanged.
func (sm *StateMachine) Restore(data []byte) error {
	s, err := decodeSnapshot(data)
	if err != nil {
		return err
	}
	fresh := NewStateMachine()
	for i, id := range s.ids {
		fresh.addLocked(id, &s.msgs[i])
	}
	sm.mu.Lock()
	defer sm.mu.Unlock()
	sm.msgs, sm.order, sm.queues, sm.bytes = fresh.msgs, fresh.order, fresh.queues, fresh.bytes
	sm.maxID, sm.applied, sm.entries = s.maxID, s.applied, 0
	return nil
}

// read returns a copy of message id; with head, without its body, and the
// body's length.
func (sm *StateMachine) read(id store.ID, head bool) (*store.Message, int, error) {
	sm.mu.RLock()
	defer sm.mu.RUnlock()
	m := sm.msgs[id]
	if m == nil {
		return nil, 0, store.ErrNotFound
	}
	return copyMessage(m, head), len(m.Body), nil
}

// copyMessage returns a copy the caller owns (without the body if head).
func copyMessage(m *store.Message, head bool) *store.Message {
	c := *m
	c.Props = append([]byte(nil), m.Props...)
	if head {
		c.Body = nil
	} else {
		c.Body = append([]byte{}, m.Body...)
	}
	return &c
}

// each calls fn for every live message in id order, under the read lock.
func (sm *StateMachine) each(fn func(id store.ID, m *store.Message)) store.ID {
	sm.mu.RLock()
	defer sm.mu.RUnlock()
	for _, id := range sm.order {
		if m := sm.msgs[id]; m != nil {
			fn(id, m)
		}
	}
	return sm.maxID
}
