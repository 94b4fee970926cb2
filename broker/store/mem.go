package store

import "sync"

// Memory is the in-memory Log for tests: the same behaviour as Disk, every
// append durable at once, nothing kept after the process.
type Memory struct {
	mu     sync.Mutex
	st     *memState
	closed bool
}

// memState is what a Memory "persists"; reopen shares it, as a restart
// shares the directory.
type memState struct {
	nextID ID
	msgs   []memMsg // append order; acked ones are removed lazily
	index  map[ID]int
	live   int
}

type memMsg struct {
	id    ID
	m     Message
	acked bool
}

// NewMemory returns an empty in-memory Log.
func NewMemory() *Memory {
	return &Memory{st: &memState{nextID: 1, index: map[ID]int{}}}
}

// reopen returns a new Memory over the same messages, as Open after Close.
func (s *Memory) reopen() *Memory { return &Memory{st: s.st} }

func cloneMessage(m *Message) Message {
	c := *m
	c.Props = append([]byte(nil), m.Props...)
	c.Body = append([]byte{}, m.Body...)
	return c
}

// Append implements Log.
func (s *Memory) Append(m *Message) (ID, *Commit, error) {
	if messageSize(m) > maxPayload {
		return 0, nil, ErrTooLarge
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, nil, ErrClosed
	}
	st := s.st
	id := st.nextID
	st.nextID++
	st.index[id] = len(st.msgs)
	st.msgs = append(st.msgs, memMsg{id: id, m: cloneMessage(m)})
	st.live++
	return id, doneCommit, nil
}

func (s *Memory) find(id ID) (*memMsg, error) {
	if s.closed {
		return nil, ErrClosed
	}
	i, ok := s.st.index[id]
	if !ok {
		return nil, ErrNotFound
	}
	return &s.st.msgs[i], nil
}

// Read implements Log.
func (s *Memory) Read(id ID) (*Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	mm, err := s.find(id)
	if err != nil {
		return nil, err
	}
	m := cloneMessage(&mm.m)
	return &m, nil
}

// ReadHead implements Log.
func (s *Memory) ReadHead(id ID) (*Message, int, error) {
	m, err := s.Read(id)
	if err != nil {
		return nil, 0, err
	}
	n := len(m.Body)
	m.Body = nil
	return m, n, nil
}

// Delivered implements Log.
func (s *Memory) Delivered(id ID) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	mm, err := s.find(id)
	if err != nil {
		return err
	}
	mm.m.Deliveries++
	mm.m.Redelivered = true
	return nil
}

// Ack implements Log.
func (s *Memory) Ack(id ID) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	mm, err := s.find(id)
	if err != nil {
		return err
	}
	s.ackLocked(mm)
	return nil
}

func (s *Memory) ackLocked(mm *memMsg) {
	st := s.st
	mm.acked = true
	mm.m = Message{}
	delete(st.index, mm.id)
	st.live--
	if len(st.msgs) > 64 && st.live < len(st.msgs)/4 { // compact
		var keep []memMsg
		for _, x := range st.msgs {
			if !x.acked {
				st.index[x.id] = len(keep)
				keep = append(keep, x)
			}
		}
		st.msgs = keep
	}
}

// DropQueue implements Log.
func (s *Memory) DropQueue(queue string) (int, *Commit, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, nil, ErrClosed
	}
	var ids []ID
	for _, x := range s.st.msgs {
		if !x.acked && x.m.Queue == queue {
			ids = append(ids, x.id)
		}
	}
	for _, id := range ids { // ackLocked may compact msgs
		s.ackLocked(&s.st.msgs[s.st.index[id]])
	}
	if len(ids) == 0 {
		return 0, nil, nil
	}
	return len(ids), doneCommit, nil
}

// Recover implements Log.
func (s *Memory) Recover(fn func(Entry) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	for _, x := range s.st.msgs {
		if x.acked {
			continue
		}
		e := Entry{ID: x.id, Queue: x.m.Queue, Redelivered: x.m.Redelivered, Deliveries: x.m.Deliveries,
			Size: headerSize + messageSize(&x.m)}
		if err := fn(e); err != nil {
			return err
		}
	}
	return nil
}

// Len implements Log.
func (s *Memory) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st.live
}

// Stats implements Log: no syncs, no segments.
func (s *Memory) Stats() Stats { return Stats{Live: s.Len()} }

// Close implements Log.
func (s *Memory) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

var (
	_ Log = (*Disk)(nil)
	_ Log = (*Memory)(nil)
)
