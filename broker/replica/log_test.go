package replica

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"substrate/broker/store"
)

// Appends made while one proposal is in flight go out as one entry and
// share one Commit; the three replicas end equal.
func TestBatching(t *testing.T) {
	p := newAsyncProposer(t, 3)
	l := NewLog(p.sms[0], p)
	defer l.Close()
	p.hold()
	id0, c0, err := l.Append(msg("q", 0, 10))
	if err != nil {
		t.Fatal(err)
	}
	// The first entry is proposed (held): everything after waits for it.
	waitFor(t, "the first proposal", func() bool { return proposed(l) })
	const n = 50
	var first *store.Commit
	for i := range n {
		_, c, err := l.Append(msg("q", i+1, 100))
		if err != nil {
			t.Fatal(err)
		}
		if first == nil {
			first = c
		} else if c != first {
			t.Fatalf("append %d got its own commit", i)
		}
	}
	if first == c0 {
		t.Fatal("appends after the in-flight entry share its commit")
	}
	if l.Len() != n+1 {
		t.Fatalf("Len = %d", l.Len())
	}
	if got, err := l.Read(id0 + n); err != nil || len(got.Body) != 100 { // pending, still readable
		t.Fatalf("Read of a pending message: %v, %v", got, err)
	}
	if p.sms[0].Len() != 0 {
		t.Fatal("applied before the gate opened")
	}
	p.release()
	waitAll(t, c0, first)
	if got := p.numEntries(); got != 2 {
		t.Fatalf("%d entries, want 2", got)
	}
	if recs := decoded(t, p.entry(1)); len(recs) != n {
		t.Fatalf("second entry has %d records, want %d", len(recs), n)
	}
	if s := l.Stats(); s.Syncs != 2 || s.Pending != 0 || s.Live != n+1 {
		t.Fatalf("Stats = %+v", s)
	}
	if got, err := l.Read(id0 + n); err != nil || len(got.Body) != 100 { // now from the state machine
		t.Fatalf("Read of an applied message: %v, %v", got, err)
	}
	p.checkEqual(t)
}

// A batch ends at about maxBatchBytes; a larger record goes alone.
func TestBatchBound(t *testing.T) {
	p := newAsyncProposer(t, 1)
	l := NewLog(p.sms[0], p)
	defer l.Close()
	p.hold()
	_, c, _ := l.Append(msg("q", 0, 1))
	waitFor(t, "the first proposal", func() bool { return proposed(l) })
	var cs []*store.Commit
	for i := range 10 { // 10 x 300 KiB: entries of 3, 3, 3, 1
		_, c, err := l.Append(msg("q", i, 300<<10))
		if err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
	}
	_, big, err := l.Append(msg("q", 11, 3<<20))
	if err != nil {
		t.Fatal(err)
	}
	p.release()
	waitAll(t, append(cs, c, big)...)
	var sizes []int
	for i := range p.numEntries() {
		sizes = append(sizes, len(decoded(t, p.entry(i))))
		if i > 0 && i < p.numEntries()-1 && len(p.entry(i)) > maxBatchBytes {
			t.Fatalf("entry %d is %d bytes", i, len(p.entry(i)))
		}
	}
	if want := []int{1, 3, 3, 3, 1, 1}; !slices.Equal(sizes, want) {
		t.Fatalf("records per entry %v, want %v", sizes, want)
	}
}

// The records go out in exactly the call order.
func TestOrder(t *testing.T) {
	p := &syncProposer{sms: []*StateMachine{NewStateMachine()}}
	l := NewLog(p.sms[0], p)
	defer l.Close()
	var want []string
	var wg sync.WaitGroup
	// Calls from several goroutines, serialized by mu as a queue's lock
	// serializes them in the broker: the log must keep that order.
	var mu sync.Mutex
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			q := fmt.Sprintf("q%d", g)
			for i := range 50 {
				mu.Lock()
				id, _, err := l.Append(msg(q, i, 8))
				if err != nil {
					t.Error(err)
				}
				want = append(want, fmt.Sprintf("append %d %s", id, q))
				switch i % 4 {
				case 1:
					l.Delivered(id)
					want = append(want, fmt.Sprintf("delivered %d", id))
				case 2:
					l.Ack(id)
					want = append(want, fmt.Sprintf("ack %d", id))
				}
				if i == 40 && g == 0 {
					l.DropQueue(q)
					want = append(want, "drop "+q)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	settle(t, l)
	var got []string
	for i := range p.numEntries() {
		got = append(got, decoded(t, p.entry(i))...)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("records out of order:\n got %v\nwant %v", got, want)
	}
	if es := recovered(t, l); len(es) != p.sms[0].Len() {
		t.Fatalf("log has %d live, state machine %d", len(es), p.sms[0].Len())
	}
}

// A proposal refused at once (not the leader) or answered with an error
// fails its appends' commits with that error; later ones succeed again.
func TestCommitErrors(t *testing.T) {
	for _, how := range []string{"refused", "failed"} {
		t.Run(how, func(t *testing.T) {
			p := &syncProposer{sms: []*StateMachine{NewStateMachine()}}
			l := NewLog(p.sms[0], p)
			defer l.Close()
			if how == "refused" {
				p.set(errNotLeader, nil)
			} else {
				p.set(nil, errNotLeader)
			}
			id, c, err := l.Append(msg("q", 1, 10))
			if err != nil {
				t.Fatal(err)
			}
			n, dc, err := l.DropQueue("q")
			if err != nil || n != 1 {
				t.Fatal(n, err)
			}
			for _, c := range []*store.Commit{c, dc} {
				<-c.Done()
				if !errors.Is(c.Err(), errNotLeader) {
					t.Fatalf("commit error %v, want %v", c.Err(), errNotLeader)
				}
			}
			if p.sms[0].Len() != 0 {
				t.Fatal("a failed entry applied")
			}
			p.set(nil, nil)
			id2, c, err := l.Append(msg("q", 2, 10))
			if err != nil {
				t.Fatal(err)
			}
			waitAll(t, c)
			if id2 <= id {
				t.Fatalf("id %d after %d", id2, id)
			}
			if s := l.Stats(); s.Syncs != 1 || s.Live != 1 {
				t.Fatalf("Stats = %+v", s)
			}
		})
	}
}

// A failed entry's message stays readable until acked: the broker still
// holds it and acks it as usual.
func TestFailedStaysReadable(t *testing.T) {
	p := &syncProposer{sms: []*StateMachine{NewStateMachine()}}
	p.set(nil, errNotLeader)
	l := NewLog(p.sms[0], p)
	defer l.Close()
	id, c, err := l.Append(msg("q", 1, 10))
	if err != nil {
		t.Fatal(err)
	}
	<-c.Done()
	if m, err := l.Read(id); err != nil || len(m.Body) != 10 {
		t.Fatalf("Read = %v, %v", m, err)
	}
	if err := l.Ack(id); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Read(id); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Read after ack: %v", err)
	}
}

// Close fails every pending commit with store.ErrClosed, leaves the state
// machine alone, and a late answer from Raft is harmless.
func TestClose(t *testing.T) {
	p := newAsyncProposer(t, 1)
	l := NewLog(p.sms[0], p)
	_, c, err := l.Append(msg("q", 0, 10))
	if err != nil {
		t.Fatal(err)
	}
	waitAll(t, c)
	p.hold()
	_, c1, _ := l.Append(msg("q", 1, 10))
	waitFor(t, "the proposal", func() bool { return proposed(l) })
	_, c2, _ := l.Append(msg("q", 2, 10))
	if err := l.Ack(1); err != nil {
		t.Fatal(err)
	}
	var cb error
	var cbDone sync.WaitGroup
	cbDone.Add(1)
	c2.AfterFunc(func(err error) { cb = err; cbDone.Done() })
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	cbDone.Wait()
	for _, c := range []*store.Commit{c1, c2} {
		select {
		case <-c.Done():
		default:
			t.Fatal("commit pending after Close")
		}
		if !errors.Is(c.Err(), store.ErrClosed) {
			t.Fatalf("commit error %v", c.Err())
		}
	}
	if !errors.Is(cb, store.ErrClosed) {
		t.Fatalf("AfterFunc got %v", cb)
	}
	if p.sms[0].Len() != 1 {
		t.Fatalf("state machine holds %d, want 1", p.sms[0].Len())
	}
	p.release() // the held entry still applies: it was proposed
	waitFor(t, "the held entry", func() bool { return p.numEntries() == 2 })
	if _, _, err := l.Append(msg("q", 3, 1)); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("Append after Close: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

// Append blocks while more than maxPending bytes wait for Raft, and
// Close releases a blocked Append with store.ErrClosed.
func TestBackpressure(t *testing.T) {
	p := newAsyncProposer(t, 1)
	l := NewLog(p.sms[0], p)
	l.maxPending = 4096
	defer l.Close()
	p.hold()
	_, c, _ := l.Append(msg("q", 0, 3000))
	type res struct {
		c   *store.Commit
		err error
	}
	out := make(chan res, 1)
	go func() {
		_, c, err := l.Append(msg("q", 1, 3000))
		out <- res{c, err}
	}()
	waitFor(t, "a blocked Append", func() bool { return blocked(l) })
	p.release()
	r := <-out
	if r.err != nil {
		t.Fatal(r.err)
	}
	waitAll(t, c, r.c)

	p.hold()
	l.Append(msg("q", 2, 3000))
	go func() {
		_, c, err := l.Append(msg("q", 3, 3000))
		out <- res{c, err}
	}()
	waitFor(t, "a blocked Append", func() bool { return blocked(l) })
	l.Close()
	if r := <-out; !errors.Is(r.err, store.ErrClosed) {
		t.Fatalf("blocked Append after Close: %v", r.err)
	}
	p.release()
}

// A message too large for one record is refused, as the disk store does.
func TestTooLarge(t *testing.T) {
	p := &syncProposer{sms: []*StateMachine{NewStateMachine()}}
	l := NewLog(p.sms[0], p)
	defer l.Close()
	m := &store.Message{Queue: "q", Body: make([]byte, maxRecord)}
	if _, _, err := l.Append(m); !errors.Is(err, store.ErrTooLarge) {
		t.Fatalf("Append = %v", err)
	}
}

// A Log made after a Restore continues above the highest id ever
// appended, even when every message was acked.
func TestIDsAfterRestore(t *testing.T) {
	p := &syncProposer{sms: []*StateMachine{NewStateMachine()}}
	l := NewLog(p.sms[0], p)
	var last store.ID
	for i := range 10 {
		id, c, err := l.Append(msg("q", i, 4))
		if err != nil {
			t.Fatal(err)
		}
		waitAll(t, c)
		l.Ack(id)
		last = id
	}
	settle(t, l)
	l.Close()
	snap, err := p.sms[0].Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sm := NewStateMachine()
	if err := sm.Restore(snap); err != nil {
		t.Fatal(err)
	}
	if sm.Len() != 0 || sm.Stats().MaxID != last {
		t.Fatalf("restored %+v", sm.Stats())
	}
	p.sms[0] = sm
	l = NewLog(sm, p)
	defer l.Close()
	id, _, err := l.Append(msg("q", 0, 1))
	if err != nil || id != last+1 {
		t.Fatalf("Append = %d, %v; want id %d", id, err, last+1)
	}
}

// Under concurrent use (appends from several goroutines, acks,
// deliveries, reads) with an asynchronous three-replica proposer, everything confirmed
// and not acked is in every replica, and the replicas are equal; also
// with several proposals in flight.
func TestConcurrentThreeReplicas(t *testing.T) {
	for _, inflight := range []int{1, 4} {
		t.Run(fmt.Sprintf("inflight=%d", inflight), func(t *testing.T) {
			p := newAsyncProposer(t, 3)
			l := newLog(p.sms[0], p, inflight)
			defer l.Close()
			var wg sync.WaitGroup
			var mu sync.Mutex
			kept := map[store.ID]bool{}
			for g := range 6 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					q := fmt.Sprintf("q%d", g)
					var cs []*store.Commit
					for i := range 300 {
						id, c, err := l.Append(msg(q, i, 64))
						if err != nil {
							t.Error(err)
							return
						}
						cs = append(cs, c)
						if _, err := l.Read(id); err != nil {
							t.Error(err)
							return
						}
						switch i % 3 {
						case 0:
							l.Ack(id)
						case 1:
							l.Delivered(id)
							mu.Lock()
							kept[id] = true
							mu.Unlock()
						default:
							mu.Lock()
							kept[id] = true
							mu.Unlock()
						}
					}
					for _, c := range cs {
						if err := c.Wait(); err != nil {
							t.Error(err)
						}
					}
				}()
			}
			wg.Wait()
			settle(t, l)
			p.checkEqual(t)
			for _, sm := range p.sms {
				if sm.Len() != len(kept) {
					t.Fatalf("replica holds %d, want %d", sm.Len(), len(kept))
				}
			}
			for id := range kept {
				if _, _, err := p.sms[2].read(id, true); err != nil {
					t.Fatalf("replica 2 lacks %d: %v", id, err)
				}
			}
		})
	}
}

// proposed reports whether l has an entry in flight and nothing queued.
func proposed(l *Log) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.flying) > 0 && len(l.ops) == 0
}

// blocked reports whether an Append waits for space.
func blocked(l *Log) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.waiters > 0
}
