package replica

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"testing"

	"substrate/broker/store"
)

// batchOf encodes records as one entry.
func batchOf(recs ...[]byte) []byte {
	out := []byte{batchVersion}
	for _, r := range recs {
		out = append(out, r...)
	}
	return out
}

func appendRec(id store.ID, m *store.Message) []byte { return encodeAppend(nil, id, m) }
func ackRec(id store.ID) []byte                      { return encodeID(nil, kindAck, id) }
func deliveredRec(id store.ID) []byte                { return encodeID(nil, kindDelivered, id) }
func dropRec(q string) []byte                        { return encodeDrop(nil, q) }

// randomState applies a seeded random history to a new state machine.
func randomState(seed uint64, n int) *StateMachine {
	r := rand.New(rand.NewPCG(seed, 1))
	sm := NewStateMachine()
	var id store.ID
	var live []store.ID
	for i := range n {
		var recs [][]byte
		for range 1 + r.IntN(8) {
			switch k := r.IntN(10); {
			case k < 5 || len(live) == 0:
				id += store.ID(1 + r.IntN(3))
				m := msg(fmt.Sprintf("q%d", r.IntN(4)), i, r.IntN(200))
				m.Redelivered = r.IntN(5) == 0
				if r.IntN(3) == 0 {
					m.Props = nil
				}
				recs = append(recs, appendRec(id, m))
				live = append(live, id)
			case k < 7:
				recs = append(recs, deliveredRec(live[r.IntN(len(live))]))
			case k < 9:
				j := r.IntN(len(live))
				recs = append(recs, ackRec(live[j]))
				live = append(live[:j], live[j+1:]...)
			default:
				recs = append(recs, dropRec(fmt.Sprintf("q%d", r.IntN(5))))
			}
		}
		sm.Apply(uint64(i+1), batchOf(recs...))
	}
	return sm
}

// states returns every live message of sm, in order, for comparison.
func states(sm *StateMachine) []string {
	var out []string
	sm.each(func(id store.ID, m *store.Message) {
		out = append(out, fmt.Sprintf("%d %+v", id, *m))
	})
	return out
}

func TestApply(t *testing.T) {
	sm := NewStateMachine()
	m1, m2, m3 := msg("a", 1, 5), msg("b", 2, 0), msg("a", 3, 7)
	m2.Props = nil
	sm.Apply(1, batchOf(appendRec(1, m1), appendRec(2, m2), deliveredRec(2), deliveredRec(2), appendRec(5, m3)))
	if sm.Len() != 3 {
		t.Fatalf("Len = %d", sm.Len())
	}
	got, n, err := sm.read(2, false)
	if err != nil || got.Deliveries != 2 || !got.Redelivered || n != 0 || got.Body == nil || got.Props != nil {
		t.Fatalf("read(2) = %+v, %d, %v", got, n, err)
	}
	got, n, err = sm.read(5, true)
	if err != nil || got.Body != nil || n != 7 || !bytes.Equal(got.Props, m3.Props) || got.Queue != "a" {
		t.Fatalf("read head(5) = %+v, %d, %v", got, n, err)
	}
	// Unknown ids and queues are no-ops; a drop takes its queue only.
	sm.Apply(2, batchOf(ackRec(99), deliveredRec(98), dropRec("nope"), dropRec("a")))
	if sm.Len() != 1 {
		t.Fatalf("Len after drop = %d", sm.Len())
	}
	if _, _, err := sm.read(1, false); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("read dropped: %v", err)
	}
	st := sm.Stats()
	if st.MaxID != 5 || st.Applied != 2 || st.Entries != 2 || st.Bad != 0 || st.Live != 1 || st.Bytes != int64(appendSize(2, m2)) {
		t.Fatalf("Stats = %+v", st)
	}

	// An entry already applied (index not above Applied) is ignored.
	sm.Apply(2, batchOf(ackRec(2)))
	if sm.Len() != 1 {
		t.Fatal("re-applied an old index")
	}
	// A malformed entry is skipped whole and counted; so is an append
	// that does not raise the id.
	sm.Apply(3, append(batchOf(ackRec(2)), 0xff))
	sm.Apply(4, batchOf(appendRec(4, m1), appendRec(6, m1)))
	st = sm.Stats()
	if st.Bad != 2 || sm.Len() != 2 || st.MaxID != 6 || st.Applied != 4 {
		t.Fatalf("after bad entries: Len %d, Stats %+v", sm.Len(), st)
	}
}

func TestSnapshotRestore(t *testing.T) {
	for seed := range uint64(20) {
		sm := randomState(seed, 200)
		snap, err := sm.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		r := NewStateMachine()
		r.Apply(1, batchOf(appendRec(1, msg("x", 1, 1)))) // replaced by the restore
		if err := r.Restore(snap); err != nil {
			t.Fatal(err)
		}
		if a, b := states(sm), states(r); fmt.Sprint(a) != fmt.Sprint(b) {
			t.Fatalf("seed %d: restored state differs:\n%v\n%v", seed, a, b)
		}
		s1, s2 := sm.Stats(), r.Stats()
		s1.Entries, s2.Entries = 0, 0
		if s1 != s2 {
			t.Fatalf("seed %d: stats %+v, restored %+v", seed, s1, s2)
		}
		again, _ := r.Snapshot()
		if !bytes.Equal(again, snap) {
			t.Fatalf("seed %d: snapshot of the restored state differs", seed)
		}
		// Both go on identically.
		next := batchOf(appendRec(s1.MaxID+1, msg("q0", 1, 3)), dropRec("q1"))
		sm.Apply(s1.Applied+1, next)
		r.Apply(s1.Applied+1, next)
		a, _ := sm.Snapshot()
		b, _ := r.Snapshot()
		if !bytes.Equal(a, b) {
			t.Fatalf("seed %d: diverged after the restore", seed)
		}
	}
}

// Restore refuses a damaged snapshot and keeps the state it had.
func TestRestoreRefuses(t *testing.T) {
	sm := randomState(7, 50)
	snap, _ := sm.Snapshot()
	r := randomState(8, 10)
	before := states(r)
	bad := map[string][]byte{
		"empty":     nil,
		"truncated": snap[:len(snap)-5],
		"flipped":   flip(snap, len(snap)/2),
		"trailing":  append(bytes.Clone(snap), 0),
	}
	for name, data := range bad {
		if err := r.Restore(data); err == nil {
			t.Fatalf("%s: restored", name)
		} else if de := (*DecodeError)(nil); !errors.As(err, &de) {
			t.Fatalf("%s: error %T %v", name, err, err)
		}
	}
	// A valid checksum over invalid content: ids out of order.
	m := msg("q", 1, 1)
	body := append([]byte{}, snapMagic[:]...)
	body = append(body, snapVersion)
	body = append(body, le64(1)...)
	body = append(body, le64(10)...)
	body = append(body, le64(2)...)
	body = encodeMessage(body, 5, m)
	body = encodeMessage(body, 3, m)
	if err := r.Restore(withCRC(body)); !errors.Is(err, errOrder) {
		t.Fatalf("out of order: %v", err)
	}
	if fmt.Sprint(states(r)) != fmt.Sprint(before) {
		t.Fatal("a refused restore changed the state")
	}
}

func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 0x40
	return c
}

// Decoding: valid batches decode to their records; every malformed one
// fails with a named error.
func TestDecodeBatch(t *testing.T) {
	m := msg("q", 1, 3)
	good := batchOf(appendRec(1<<40, m), deliveredRec(1), ackRec(2), dropRec("q"), dropRec(""))
	recs, err := decodeBatch(good)
	if err != nil || len(recs) != 5 {
		t.Fatalf("decode = %d records, %v", len(recs), err)
	}
	if r := recs[0]; r.id != 1<<40 || r.msg.Queue != "q" || !bytes.Equal(r.msg.Body, m.Body) || r.msg.RoutingKey != "rk.q" {
		t.Fatalf("append record %+v", r)
	}
	if recs, err := decodeBatch([]byte{batchVersion}); err != nil || len(recs) != 0 {
		t.Fatalf("empty batch: %v, %v", recs, err)
	}
	bad := []struct {
		name string
		data []byte
		err  error
	}{
		{"nothing", nil, errShort},
		{"version", []byte{2}, errVersion},
		{"kind", []byte{1, 9}, errKind},
		{"id zero", []byte{1, kindAck, 0}, errRange},
		{"id cut", []byte{1, kindAck, 0x80}, errShort},
		{"id overflow", []byte{1, kindAck, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, errVarint},
		{"field past end", []byte{1, kindDropQueue, 5, 'a'}, errShort},
		{"huge field", []byte{1, kindDropQueue, 0xff, 0xff, 0xff, 0xff, 0x0f}, errShort},
		{"flags", []byte{1, kindAppend, 1, 2, 0, 0, 0, 0, 0, 0}, errFlags},
		{"deliveries", []byte{1, kindAppend, 1, 0, 0x80, 0x80, 0x80, 0x80, 0x10, 0, 0, 0, 0, 0}, errRange},
		{"append cut", appendRec(1, m)[:5], errShort},
	}
	for _, b := range bad {
		data := b.data
		if b.name == "append cut" {
			data = append([]byte{batchVersion}, b.data...)
		}
		_, err := decodeBatch(data)
		if !errors.Is(err, b.err) {
			t.Errorf("%s: %v, want %v", b.name, err, b.err)
		}
	}
	// Every prefix of a good batch either decodes (at a record boundary)
	// or fails; none panics.
	for i := range len(good) {
		decodeBatch(good[:i])
	}
}

func FuzzDecode(f *testing.F) {
	m := msg("q", 1, 3)
	f.Add(batchOf(appendRec(1, m), deliveredRec(1), ackRec(1), dropRec("q")))
	f.Add(batchOf(appendRec(300, &store.Message{Queue: "x", Redelivered: true, Deliveries: 7})))
	f.Add([]byte{batchVersion, kindDropQueue, 0xff, 0xff, 0xff, 0xff, 0x0f})
	snap, _ := randomState(3, 20).Snapshot()
	f.Add(snap)
	empty, _ := NewStateMachine().Snapshot()
	f.Add(empty)
	f.Fuzz(func(t *testing.T, data []byte) {
		if recs, err := decodeBatch(data); err == nil {
			// Re-encoding decodes to the same records.
			out := []byte{batchVersion}
			for _, r := range recs {
				switch r.kind {
				case kindAppend:
					out = encodeAppend(out, r.id, &r.msg)
				case kindDelivered, kindAck:
					out = encodeID(out, r.kind, r.id)
				case kindDropQueue:
					out = encodeDrop(out, r.queue)
				}
			}
			again, err := decodeBatch(out)
			if err != nil || fmt.Sprint(again) != fmt.Sprint(recs) {
				t.Fatalf("re-encoded batch decodes to %v, %v", again, err)
			}
		}
		sm := NewStateMachine()
		sm.Apply(1, data) // never panics
		if err := sm.Restore(data); err == nil {
			snap, err := sm.Snapshot()
			if err != nil {
				t.Fatal(err)
			}
			r := NewStateMachine()
			if err := r.Restore(snap); err != nil {
				t.Fatalf("a snapshot of a restored state does not restore: %v", err)
			}
			if fmt.Sprint(states(r)) != fmt.Sprint(states(sm)) {
				t.Fatal("restore of a snapshot differs")
			}
		}
	})
}

func le64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }

func withCRC(b []byte) []byte {
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}
