package store

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
)

// target is one Log implementation under the behaviour tests. reopen
// closes l and opens the same storage again, as a restart does.
type target struct {
	name   string
	open   func(t *testing.T) Log
	reopen func(t *testing.T, l Log) Log
}

func targets() []target {
	return []target{
		{"memory",
			func(t *testing.T) Log { return NewMemory() },
			func(t *testing.T, l Log) Log { l.Close(); return l.(*Memory).reopen() }},
		{"disk",
			func(t *testing.T) Log {
				cfg := NewConfig(t.TempDir())
				cfg.SegmentSize = 4096 // several segments
				s := mustOpen(t, cfg)
				t.Cleanup(func() { s.Close() })
				return s
			},
			func(t *testing.T, l Log) Log {
				d := l.(*Disk)
				if err := d.Close(); err != nil {
					t.Fatal(err)
				}
				s := mustOpen(t, d.cfg)
				t.Cleanup(func() { s.Close() })
				return s
			}},
	}
}

// TestBehaviour is one test body run against every implementation.
func TestBehaviour(t *testing.T) {
	for _, tg := range targets() {
		t.Run(tg.name, func(t *testing.T) { testBehaviour(t, tg) })
	}
}

func testBehaviour(t *testing.T, tg target) {
	l := tg.open(t)
	type sent struct {
		id ID
		m  *Message
	}
	var all []sent
	var cs []*Commit
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
	check := func(l Log, live map[ID]*Message, delivered map[ID]uint32) {
		t.Helper()
		if l.Len() != len(live) {
			t.Fatalf("Len = %d, want %d", l.Len(), len(live))
		}
		es := recovered(t, l)
		if len(es) != len(live) {
			t.Fatalf("recovered %d, want %d", len(es), len(live))
		}
		last := map[string]ID{}
		for _, e := range es {
			m := live[e.ID]
			if m == nil {
				t.Fatalf("recovered %d, not live", e.ID)
			}
			if e.ID <= last[e.Queue] {
				t.Fatalf("queue %s out of order", e.Queue)
			}
			last[e.Queue] = e.ID
			wantDel := m.Deliveries + delivered[e.ID]
			if e.Queue != m.Queue || e.Deliveries != wantDel || e.Redelivered != (m.Redelivered || delivered[e.ID] > 0) {
				t.Fatalf("entry %+v, message %+v delivered %d", e, m, delivered[e.ID])
			}
			got, err := l.Read(e.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got.Queue != m.Queue || got.Exchange != m.Exchange || got.RoutingKey != m.RoutingKey ||
				!bytes.Equal(got.Props, m.Props) || !bytes.Equal(got.Body, m.Body) {
				t.Fatalf("Read(%d) = %+v, want %+v", e.ID, got, m)
			}
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
	live := map[ID]*Message{}
	for _, s := range all {
		live[s.id] = s.m
	}
	delivered := map[ID]uint32{}
	check(l, live, delivered)

	// Deliveries and acks.
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
	if err := l.Ack(all[0].id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second ack: %v", err)
	}
	if _, err := l.Read(all[0].id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("read acked: %v", err)
	}
	if err := l.Delivered(all[0].id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delivered acked: %v", err)
	}
	if err := l.Ack(1 << 40); !errors.Is(err, ErrNotFound) {
		t.Fatalf("ack unknown: %v", err)
	}
	check(l, live, delivered)

	// A restart keeps exactly the live messages and their deliveries.
	l = tg.reopen(t, l)
	check(l, live, delivered)
	id, c, err := l.Append(msg("q9", 99, 5))
	if err != nil {
		t.Fatal(err)
	}
	waitAll(t, c)
	if id <= all[len(all)-1].id {
		t.Fatalf("id %d reused after restart", id)
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
	check(l, map[ID]*Message{}, nil)

	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, _, err := l.Append(msg("q", 1, 1)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close: %v", err)
	}
	if err := l.Ack(1); !errors.Is(err, ErrClosed) {
		t.Fatalf("Ack after Close: %v", err)
	}
}
