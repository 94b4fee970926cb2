package replica

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"

	"substrate/broker/store"
)

// Record kinds. One Raft entry (a batch) is batchVersion followed by
// records, applied in order. See doc.go for the byte layout.
const (
	batchVersion = 1

	kindAppend    = 1
	kindDelivered = 2
	kindAck       = 3
	kindDropQueue = 4

	flagRedelivered = 1

	// maxRecord bounds one append record, as the disk store bounds one
	// message (store.ErrTooLarge beyond).
	maxRecord = 256 << 20
)

// Snapshot framing.
var snapMagic = [4]byte{'S', 'R', 'S', 'N'}

const snapVersion = 1

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Decoding errors. Every one is wrapped in a *DecodeError naming the
// offset.
var (
	errShort    = errors.New("truncated")
	errVersion  = errors.New("unknown version")
	errKind     = errors.New("unknown record kind")
	errFlags    = errors.New("unknown flags")
	errVarint   = errors.New("bad varint")
	errRange    = errors.New("value out of range")
	errChecksum = errors.New("checksum mismatch")
	errOrder    = errors.New("message ids not increasing")
	errTrailing = errors.New("trailing bytes")
	errCount    = errors.New("message count mismatch")
)

// DecodeError reports a malformed batch or snapshot.
type DecodeError struct {
	What   string // "batch" or "snapshot"
	Offset int
	Err    error
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("replica: malformed %s at byte %d: %v", e.What, e.Offset, e.Err)
}

func (e *DecodeError) Unwrap() error { return e.Err }

// record is one decoded record. For an append, msg's byte slices alias
// the decoded buffer.
type record struct {
	kind  byte
	id    store.ID
	msg   store.Message // kindAppend
	queue string        // kindDropQueue
}

func uvarintSize(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

func fieldSize(n int) int { return uvarintSize(uint64(n)) + n }

// appendSize is the encoded size of an append record of m with id.
func appendSize(id store.ID, m *store.Message) int {
	return 1 + uvarintSize(uint64(id)) + 1 + uvarintSize(uint64(m.Deliveries)) +
		fieldSize(len(m.Queue)) + fieldSize(len(m.Exchange)) + fieldSize(len(m.RoutingKey)) +
		fieldSize(len(m.Props)) + fieldSize(len(m.Body))
}

func idSize(id store.ID) int { return 1 + uvarintSize(uint64(id)) }

func dropSize(queue string) int { return 1 + fieldSize(len(queue)) }

func appendField(dst []byte, b []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

func encodeAppend(dst []byte, id store.ID, m *store.Message) []byte {
	dst = append(dst, kindAppend)
	return encodeMessage(dst, id, m)
}

// encodeMessage is an append record without its kind byte (also the
// snapshot's message encoding).
func encodeMessage(dst []byte, id store.ID, m *store.Message) []byte {
	dst = binary.AppendUvarint(dst, uint64(id))
	var fl byte
	if m.Redelivered {
		fl = flagRedelivered
	}
	dst = append(dst, fl)
	dst = binary.AppendUvarint(dst, uint64(m.Deliveries))
	dst = appendString(dst, m.Queue)
	dst = appendString(dst, m.Exchange)
	dst = appendString(dst, m.RoutingKey)
	dst = appendField(dst, m.Props)
	return appendField(dst, m.Body)
}

func encodeID(dst []byte, kind byte, id store.ID) []byte {
	dst = append(dst, kind)
	return binary.AppendUvarint(dst, uint64(id))
}

func encodeDrop(dst []byte, queue string) []byte {
	dst = append(dst, kindDropQueue)
	return appendString(dst, queue)
}

// decoder reads fields from b, checking every length against what is
// left: nothing is allocated by a length read from the input.
type decoder struct {
	b   []byte
	off int
	err error
}

func (d *decoder) fail(err error) {
	if d.err == nil {
		d.err = err
	}
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if d.off >= len(d.b) {
		d.fail(errShort)
		return 0
	}
	c := d.b[d.off]
	d.off++
	return c
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b[d.off:])
	if n <= 0 {
		if n == 0 {
			d.fail(errShort)
		} else {
			d.fail(errVarint)
		}
		return 0
	}
	d.off += n
	return v
}

func (d *decoder) uint64() uint64 {
	if d.err != nil {
		return 0
	}
	if len(d.b)-d.off < 8 {
		d.fail(errShort)
		return 0
	}
	v := binary.LittleEndian.Uint64(d.b[d.off:])
	d.off += 8
	return v
}

// field returns the next length-prefixed field, aliasing b.
func (d *decoder) field() []byte {
	l := d.uvarint()
	if d.err != nil {
		return nil
	}
	if l > uint64(len(d.b)-d.off) {
		d.fail(errShort)
		return nil
	}
	f := d.b[d.off : d.off+int(l) : d.off+int(l)]
	d.off += int(l)
	return f
}

func (d *decoder) id() store.ID {
	v := d.uvarint()
	if d.err == nil && v == 0 {
		d.fail(errRange)
	}
	return store.ID(v)
}

// message decodes encodeMessage's output. Props is nil when empty, Body
// never nil, as the other stores return them.
func (d *decoder) message() (store.ID, store.Message) {
	id := d.id()
	fl := d.byte()
	if d.err == nil && fl&^flagRedelivered != 0 {
		d.fail(errFlags)
	}
	del := d.uvarint()
	if d.err == nil && del > math.MaxUint32 {
		d.fail(errRange)
	}
	q, ex, rk := d.field(), d.field(), d.field()
	props, body := d.field(), d.field()
	if d.err != nil {
		return 0, store.Message{}
	}
	if len(props) == 0 {
		props = nil
	}
	if body == nil {
		body = []byte{}
	}
	return id, store.Message{Queue: string(q), Exchange: string(ex), RoutingKey: string(rk), Props: props, Body: body,
		Redelivered: fl&flagRedelivered != 0, Deliveries: uint32(del)}
}

// decodeBatch decodes one Raft entry's data. Message bytes alias data.
// A malformed entry returns an error and no records.
func decodeBatch(data []byte) ([]record, error) {
	d := &decoder{b: data}
	if v := d.byte(); d.err == nil && v != batchVersion {
		d.fail(errVersion)
	}
	var recs []record
	for d.err == nil && d.off < len(d.b) {
		start := d.off
		var r record
		r.kind = d.byte()
		switch r.kind {
		case kindAppend:
			r.id, r.msg = d.message()
		case kindDelivered, kindAck:
			r.id = d.id()
		case kindDropQueue:
			r.queue = string(d.field())
		default:
			d.fail(errKind)
		}
		if d.err != nil {
			d.off = start
			break
		}
		recs = append(recs, r)
	}
	if d.err != nil {
		return nil, &DecodeError{What: "batch", Offset: d.off, Err: d.err}
	}
	return recs, nil
}

// Snapshot layout: magic "SRSN", version uint8, applied index uint64 LE,
// max id uint64 LE, message count uint64 LE, the messages (encodeMessage,
// ids strictly increasing, none above max id), crc32c uint32 LE over all
// that precedes it.
const snapHeader = 4 + 1 + 8 + 8 + 8

type snapshot struct {
	applied uint64
	maxID   store.ID
	ids     []store.ID
	msgs    []store.Message // aliasing the data
}

// decodeSnapshot validates and decodes a snapshot. Nothing is allocated
// by the count it reads beyond what the data can hold.
func decodeSnapshot(data []byte) (*snapshot, error) {
	bad := func(off int, err error) (*snapshot, error) {
		return nil, &DecodeError{What: "snapshot", Offset: off, Err: err}
	}
	if len(data) < snapHeader+4 {
		return bad(len(data), errShort)
	}
	body := data[:len(data)-4]
	if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(data[len(data)-4:]) {
		return bad(len(data)-4, errChecksum)
	}
	if [4]byte(body[:4]) != snapMagic {
		return bad(0, errVersion)
	}
	if body[4] != snapVersion {
		return bad(4, errVersion)
	}
	d := &decoder{b: body, off: 5}
	s := &snapshot{applied: d.uint64(), maxID: store.ID(d.uint64())}
	n := d.uint64()
	// An encoded message takes at least 8 bytes (id, flags, deliveries,
	// five empty fields).
	if n > uint64(len(body)-d.off)/8 {
		return bad(d.off-8, errCount)
	}
	s.ids = make([]store.ID, 0, n)
	s.msgs = make([]store.Message, 0, n)
	var last store.ID
	for range n {
		start := d.off
		id, m := d.message()
		if d.err != nil {
			return bad(d.off, d.err)
		}
		if id <= last || id > s.maxID {
			return bad(start, errOrder)
		}
		last = id
		s.ids = append(s.ids, id)
		s.msgs = append(s.msgs, m)
	}
	if d.off != len(body) {
		return bad(d.off, errTrailing)
	}
	return s, nil
}
