package replica

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"substrate/broker/store"
)

// target is one way of running Logs under the behaviour test. reopen
// drains and closes l and returns the Log of the next term: on the same
// state machine, on another replica (a failover), or on a state machine
// restored from a snapshot (a restart).
type target struct {
	name   string
	open   func(t *testing.T) *Log
	reopen func(t *testing.T, l *Log) *Log
}

func targets() []target {
	closeLog := func(t *testing.T, l *Log) {
		settle(t, l)
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}
	var sp *syncProposer
	var ap *asyncProposer
	leader := 0
	return []target{
		{"sync",
			func(t *testing.T) *Log {
				sp = &syncProposer{sms: []*StateMachine{NewStateMachine()}}
				return NewLog(sp.sms[0], sp)
			},
			func(t *testing.T, l *Log) *Log {
				closeLog(t, l)
				return NewLog(sp.sms[0], sp)
			}},
		{"three-replicas-failover",
			func(t *testing.T) *Log {
				ap = newAsyncProposer(t, 3)
				return NewLog(ap.sms[0], ap)
			},
			func(t *testing.T, l *Log) *Log {
				closeLog(t, l)
				ap.checkEqual(t)
				leader = (leader + 1) % 3
				return NewLog(ap.sms[leader], ap)
			}},
		{"snapshot-restart",
			func(t *testing.T) *Log {
				sp = &syncProposer{sms: []*StateMachine{NewStateMachine()}}
				return NewLog(sp.sms[0], sp)
			},
			func(t *testing.T, l *Log) *Log {
				closeLog(t, l)
				snap, err := sp.sms[0].Snapshot()
				if err != nil {
					t.Fatal(err)
				}
				sm := NewStateMachine()
				if err := sm.Restore(snap); err != nil {
					t.Fatal(err)
				}
				sp.sms[0] = sm
				return NewLog(sm, sp)
			}},
	}
}

// TestBehaviour is broker/store's behaviour test body, rewritten for a
// Log per term: the same calls and answers as the disk store, except that
// a new term reports every message live before it as redelivered (the
// disk store's rule after an unclean stop).
func TestBehaviour(t *testing.T) {
	for _, tg := range targets() {
		t.Run(tg.name, func(t *testing.T) { testBehaviour(t, tg) })
	}
}

func testBehaviour(t *testing.T, tg target) {
	l := tg.open(t)
	defer func() { l.Close() }()
	type sent struct {
		id store.ID
		m  *store.Message
	}
	var all []sent
	var cs []*store.Commit
	for i := range 60 {
		q := fmt.Sprintf("q%d", i%3)
		m := msg(q, i, 10*i)
		if i == 7 {
			m.Redelivered, m.Deliveries = true, 2
		}
		id, c, err := l.Append(m)
		if err != nil {
			t.Fatal(err)
		}
		if len(all) > 0 && id <= all[len(all)-1].id {
			t.Fatalf("id %d not increasing", id)
		}
		if len(m.Body) > 0 { // the store must have copied it
			c := append([]byte(nil), m.Body...)
			m.Body[0]++
			m.Body = c
		}
		all = append(all, sent{id, m})
		cs = append(cs, c)
	}
	waitAll(t, cs...)
	check := func(l *Log, live map[store.ID]*store.Message, delivered map[store.ID]uint32) {
		t.Helper()
		if l.Len() != len(live) {
			t.Fatalf("Len = %d, want %d", l.Len(), len(live))
		}
		if s := l.Stats(); s.Live != len(live) {
			t.Fatalf("Stats.Live = %d, want %d", s.Live, len(live))
		}
		es := recovered(t, l)
		if len(es) != len(live) {
			t.Fatalf("recovered %d, want %d", len(es), len(live))
		}
		var last store.ID
		for _, e := range es {
			m := live[e.ID]
			if m == nil {
				t.Fatalf("recovered %d, not live", e.ID)
			}
			if e.ID <= last {
				t.Fatalf("recovered %d after %d: not in append order", e.ID, last)
			}
			last = e.ID
			wantDel := m.Deliveries + delivered[e.ID]
			wantRe := m.Redelivered || delivered[e.ID] > 0 || e.ID <= l.baseMax
			if e.Queue != m.Queue || e.Deliveries != wantDel || e.Redelivered != wantRe || e.Size != appendSize(e.ID, m) {
				t.Fatalf("entry %+v, message %+v delivered %d (term base %d)", e, m, delivered[e.ID], l.baseMax)
			}
			got, err := l.Read(e.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got.Queue != m.Queue || got.Exchange != m.Exchange || got.RoutingKey != m.RoutingKey ||
				!bytes.Equal(got.Props, m.Props) || !bytes.Equal(got.Body, m.Body) || got.Body == nil {
				t.Fatalf("Read(%d) = %+v, want %+v", e.ID, got, m)
			}
			got.Body = append(got.Body, 1) // the caller owns its copy
			head, n, err := l.ReadHead(e.ID)
			if err != nil {
				t.Fatal(err)
			}
			if head.Queue != m.Queue || head.Exchange != m.Exchange || head.RoutingKey != m.RoutingKey ||
				!bytes.Equal(head.Props, m.Props) || head.Body != nil || n != len(m.Body) {
				t.Fatalf("ReadHead(%d) = %+v, %d; want %+v without its body", e.ID, head, n, m)
			}
		}
	}
	live := map[store.ID]*store.Message{}
	for _, s := range all {
		live[s.id] = s.m
	}
	delivered := map[store.ID]uint32{}
	check(l, live, delivered)

	// Deliveries and acks: answered at once, before Raft has them.
	for i, s := range all {
		switch {
		case i%5 == 0:
			if err := l.Ack(s.id); err != nil {
				t.Fatal(err)
			}
			delete(live, s.id)
		case i%5 == 1:
			for range i % 3 {
				if err := l.Delivered(s.id); err != nil {
					t.Fatal(err)
				}
				delivered[s.id]++
			}
		}
	}
	if err := l.Ack(all[0].id); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second ack: %v", err)
	}
	if _, err := l.Read(all[0].id); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("read acked: %v", err)
	}
	if err := l.Delivered(all[0].id); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("delivered acked: %v", err)
	}
	if err := l.Ack(1 << 40); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("ack unknown: %v", err)
	}
	check(l, live, delivered)

	// A new term keeps exactly the live messages and their deliveries.
	l = tg.reopen(t, l)
	check(l, live, delivered)
	if l.sm.Len() != len(live) {
		t.Fatalf("state machine holds %d, want %d", l.sm.Len(), len(live))
	}
	id, c, err := l.Append(msg("q9", 99, 5))
	if err != nil {
		t.Fatal(err)
	}
	waitAll(t, c)
	if id <= all[len(all)-1].id {
		t.Fatalf("id %d reused in a new term", id)
	}
	live[id] = msg("q9", 99, 5)

	// Dropping a queue removes its messages only.
	want := 0
	for id, m := range live {
		if m.Queue == "q1" {
			want++
			delete(live, id)
		}
	}
	n, c, err := l.DropQueue("q1")
	if err != nil || n != want || c == nil {
		t.Fatalf("DropQueue = %d, %v, %v; want %d and a commit", n, c, err, want)
	}
	if err := c.Wait(); err != nil {
		t.Fatal(err)
	}
	if n, c, _ := l.DropQueue("nope"); n != 0 || c != nil {
		t.Fatalf("DropQueue(nope) = %d, %v", n, c)
	}
	check(l, live, delivered)
	l = tg.reopen(t, l)
	check(l, live, delivered)

	// Ack everything: nothing comes back.
	for id := range live {
		if err := l.Ack(id); err != nil {
			t.Fatal(err)
		}
	}
	l = tg.reopen(t, l)
	check(l, map[store.ID]*store.Message{}, nil)
	if l.sm.Len() != 0 {
		t.Fatalf("state machine holds %d after every ack", l.sm.Len())
	}

	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, _, err := l.Append(msg("q", 1, 1)); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("Append after Close: %v", err)
	}
	if err := l.Ack(1); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("Ack after Close: %v", err)
	}
	if err := l.Delivered(1); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("Delivered after Close: %v", err)
	}
	if _, _, err := l.DropQueue("q0"); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("DropQueue after Close: %v", err)
	}
	if _, err := l.Read(1); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("Read after Close: %v", err)
	}
	if err := l.Recover(func(store.Entry) error { return nil }); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("Recover after Close: %v", err)
	}
}
