package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"testing"
)

func encodeMsg(id ID, m *Message) []byte {
	return appendRecord(nil, typeMessage, messageSize(m), func(b []byte) []byte { return appendMessage(b, id, m) })
}

func TestRecordRoundTrip(t *testing.T) {
	for i, m := range []*Message{
		{},
		{Queue: "q", Body: []byte("x")},
		{Queue: "vh\x00reply_1234", Exchange: "nova", RoutingKey: "compute.host1", Props: []byte{1, 2, 3},
			Body: bytes.Repeat([]byte("b"), 70000), Redelivered: true, Deliveries: 7},
	} {
		rec := encodeMsg(ID(i+1), m)
		if len(rec) != headerSize+messageSize(m) {
			t.Fatalf("size %d, want %d", len(rec), headerSize+messageSize(m))
		}
		typ, p, n, err := decodeRecord(append(rec, 0xff, 0xee)) // trailing bytes are the next record's
		if err != nil || typ != typeMessage || n != len(rec) {
			t.Fatalf("decodeRecord: %v %d %d", err, typ, n)
		}
		id, got, err := decodeMessage(p, true)
		if err != nil || id != ID(i+1) || got.Queue != m.Queue || got.Exchange != m.Exchange ||
			got.RoutingKey != m.RoutingKey || !bytes.Equal(got.Props, m.Props) || !bytes.Equal(got.Body, m.Body) ||
			got.Redelivered != m.Redelivered || got.Deliveries != m.Deliveries {
			t.Fatalf("decodeMessage = %d %+v %v", id, got, err)
		}
	}
	ids := []ID{1, 1 << 40, 3}
	_, p, _, err := decodeRecord(appendIDs(nil, typeAck|flagBatch, ids))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := decodeIDs(p); err != nil || len(got) != 3 || got[1] != 1<<40 {
		t.Fatalf("decodeIDs = %v %v", got, err)
	}
}

// TestRecordShouldFail: inputs that must fail, each with its named error.
func TestRecordShouldFail(t *testing.T) {
	good := encodeMsg(5, &Message{Queue: "q", Body: []byte("hello")})
	mod := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	recrc := func(b []byte) []byte {
		binary.LittleEndian.PutUint32(b, crc32.Checksum(b[4:], castagnoli))
		return b
	}
	for _, tc := range []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, errShort},
		{"header only", good[:headerSize], errShort},
		{"short by one", good[:len(good)-1], errShort},
		{"bad crc", mod(func(b []byte) []byte { b[0] ^= 1; return b }), errChecksum},
		{"flipped body", mod(func(b []byte) []byte { b[len(b)-1] ^= 0x80; return b }), errChecksum},
		{"flipped type", mod(func(b []byte) []byte { b[8] = typeAck; return b }), errChecksum},
		{"huge length", mod(func(b []byte) []byte { binary.LittleEndian.PutUint32(b[4:], maxPayload+1); return b }), errLength},
		{"unknown type", mod(func(b []byte) []byte { b[8] = 9; return recrc(b) }), errType},
	} {
		if _, _, _, err := decodeRecord(tc.in); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	for _, tc := range []struct {
		name string
		p    []byte
	}{
		{"short fixed part", make([]byte, msgFixed-1)},
		{"unknown flag", append(make([]byte, 8), 2, 0, 0, 0, 0, 0)},
		{"queue overruns", append(make([]byte, msgFixed), 5, 'a')},
		{"no queue", make([]byte, msgFixed)},
		{"bad varint", append(make([]byte, msgFixed), 0x80)},
	} {
		if _, _, err := decodeMessage(tc.p, true); !errors.Is(err, errPayload) {
			t.Errorf("%s: %v, want errPayload", tc.name, err)
		}
	}
	if _, err := decodeIDs(make([]byte, 9)); !errors.Is(err, errPayload) {
		t.Errorf("odd ID list: %v", err)
	}
}

// FuzzDecodeRecord: the decoders never panic, never read past their input,
// and what they accept re-encodes to an equal message.
func FuzzDecodeRecord(f *testing.F) {
	f.Add(encodeMsg(1, &Message{Queue: "q", Exchange: "e", RoutingKey: "k", Props: []byte{9}, Body: []byte("body")}))
	f.Add(encodeMsg(1<<50, &Message{Redelivered: true, Deliveries: 3}))
	f.Add(appendIDs(nil, typeAck, []ID{1, 2, 3}))
	f.Add(appendIDs(nil, typeDelivered|flagBatch, nil))
	f.Add([]byte{})
	f.Add(make([]byte, headerSize))
	f.Add(append(segMagic[:], encodeMsg(2, &Message{Queue: "x"})...))
	f.Fuzz(func(t *testing.T, data []byte) {
		if _, m, err := decodeMessage(data, true); err == nil && len(m.Body) > len(data) {
			t.Fatal("body longer than the input")
		}
		decodeIDs(data)
		typ, p, n, err := decodeRecord(data)
		if err != nil {
			return
		}
		if n > len(data) || len(p) != n-headerSize {
			t.Fatalf("n %d, payload %d, input %d", n, len(p), len(data))
		}
		switch typ & typeMask {
		case typeMessage:
			id, m, err := decodeMessage(p, true)
			if err != nil {
				return
			}
			if _, q, err := decodeMessage(p, false); err != nil || q.Queue != m.Queue {
				t.Fatalf("partial decode differs: %v", err)
			}
			_, p2, _, err := decodeRecord(encodeMsg(id, m))
			if err != nil {
				t.Fatal(err)
			}
			id2, m2, err := decodeMessage(p2, true)
			if err != nil || id2 != id || m2.Queue != m.Queue || m2.Exchange != m.Exchange ||
				m2.RoutingKey != m.RoutingKey || !bytes.Equal(m2.Props, m.Props) || !bytes.Equal(m2.Body, m.Body) ||
				m2.Redelivered != m.Redelivered || m2.Deliveries != m.Deliveries {
				t.Fatalf("re-encoding changed the message: %+v vs %+v", m, m2)
			}
		default:
			decodeIDs(p)
		}
	})
}
