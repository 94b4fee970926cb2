package store

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
)

// Record framing, shared by segment and ack files:
//
//	crc32c uint32 LE   over the next 5+len bytes
//	len    uint32 LE   payload length
//	type   uint8
//	payload [len]byte
const (
	headerSize = 9
	maxPayload = 256 << 20 // also the largest message record

	typeMessage   = 1 // segment files: one message
	typeAck       = 2 // ack files: a list of acknowledged IDs
	typeDelivered = 3 // ack files: a list of delivered IDs (one delivery each)
	typeMask      = 0x7f
	// flagBatch marks the first record of each write: everything before it
	// in the file was synced before it was written.
	flagBatch = 0x80
)

// segMagic opens every segment file, ackMagic every ack file.
var (
	segMagic = [8]byte{'S', 'B', 'S', 'E', 'G', 0, 0, 1}
	ackMagic = [8]byte{'S', 'B', 'A', 'C', 'K', 0, 0, 1}
)

const fileHeaderSize = 8

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Decoder errors.
var (
	errShort    = errors.New("short record")
	errChecksum = errors.New("checksum mismatch")
	errLength   = errors.New("record length out of range")
	errType     = errors.New("unknown record type")
	errPayload  = errors.New("malformed payload")
)

// appendRecord frames payload (built by fill, which appends exactly n
// bytes) onto dst.
func appendRecord(dst []byte, typ byte, n int, fill func([]byte) []byte) []byte {
	start := len(dst)
	dst = append(dst, make([]byte, headerSize)...)
	dst = fill(dst)
	if len(dst)-start-headerSize != n {
		panic("store: record size mismatch")
	}
	binary.LittleEndian.PutUint32(dst[start+4:], uint32(n))
	dst[start+8] = typ
	binary.LittleEndian.PutUint32(dst[start:], crc32.Checksum(dst[start+4:], castagnoli))
	return dst
}

// decodeRecord reads one record at the start of b. It returns the type
// (flags included), the payload (aliasing b) and the record's size.
func decodeRecord(b []byte) (typ byte, payload []byte, n int, err error) {
	if len(b) < headerSize {
		return 0, nil, 0, errShort
	}
	l := binary.LittleEndian.Uint32(b[4:])
	if l > maxPayload {
		return 0, nil, 0, errLength
	}
	n = headerSize + int(l)
	if len(b) < n {
		return 0, nil, 0, errShort
	}
	if crc32.Checksum(b[4:n], castagnoli) != binary.LittleEndian.Uint32(b) {
		return 0, nil, 0, errChecksum
	}
	typ = b[8]
	switch typ & typeMask {
	case typeMessage, typeAck, typeDelivered:
	default:
		return 0, nil, 0, errType
	}
	return typ, b[headerSize:n], n, nil
}

// Message payload:
//
//	id uint64 LE | flags uint8 (bit 0 redelivered) | deliveries uint32 LE |
//	queue, exchange, routing key, properties: each uvarint length + bytes |
//	body (the rest)
const msgFixed = 8 + 1 + 4

func messageSize(m *Message) int {
	return msgFixed + strSize(len(m.Queue)) + strSize(len(m.Exchange)) + strSize(len(m.RoutingKey)) +
		strSize(len(m.Props)) + len(m.Body)
}

func strSize(n int) int {
	var tmp [binary.MaxVarintLen64]byte
	return binary.PutUvarint(tmp[:], uint64(n)) + n
}

func appendMessage(dst []byte, id ID, m *Message) []byte {
	dst = binary.LittleEndian.AppendUint64(dst, uint64(id))
	var fl byte
	if m.Redelivered {
		fl = 1
	}
	dst = append(dst, fl)
	dst = binary.LittleEndian.AppendUint32(dst, m.Deliveries)
	dst = binary.AppendUvarint(dst, uint64(len(m.Queue)))
	dst = append(dst, m.Queue...)
	dst = binary.AppendUvarint(dst, uint64(len(m.Exchange)))
	dst = append(dst, m.Exchange...)
	dst = binary.AppendUvarint(dst, uint64(len(m.RoutingKey)))
	dst = append(dst, m.RoutingKey...)
	dst = binary.AppendUvarint(dst, uint64(len(m.Props)))
	dst = append(dst, m.Props...)
	return append(dst, m.Body...)
}

// decodeMessage parses a message payload; Props and Body alias p. With
// full false it stops after the queue name (recovery needs no more) and
// leaves the rest unset.
func decodeMessage(p []byte, full bool) (ID, *Message, error) {
	if len(p) < msgFixed {
		return 0, nil, errPayload
	}
	id := ID(binary.LittleEndian.Uint64(p))
	m := &Message{Redelivered: p[8]&1 != 0, Deliveries: binary.LittleEndian.Uint32(p[9:])}
	if p[8]&^1 != 0 {
		return 0, nil, errPayload
	}
	p = p[msgFixed:]
	field := func() ([]byte, bool) {
		l, k := binary.Uvarint(p)
		if k <= 0 || l > uint64(len(p)-k) {
			return nil, false
		}
		f := p[k : k+int(l)]
		p = p[k+int(l):]
		return f, true
	}
	q, ok := field()
	if !ok {
		return 0, nil, errPayload
	}
	m.Queue = string(q)
	if !full {
		return id, m, nil
	}
	ex, ok1 := field()
	rk, ok2 := field()
	pr, ok3 := field()
	if !ok1 || !ok2 || !ok3 {
		return 0, nil, errPayload
	}
	m.Exchange, m.RoutingKey = string(ex), string(rk)
	if len(pr) > 0 {
		m.Props = pr
	}
	m.Body = p
	return id, m, nil
}

// decodeIDs parses an ack or delivered payload: a list of uint64 LE.
func decodeIDs(p []byte) ([]ID, error) {
	if len(p)%8 != 0 {
		return nil, errPayload
	}
	ids := make([]ID, len(p)/8)
	for i := range ids {
		ids[i] = ID(binary.LittleEndian.Uint64(p[8*i:]))
	}
	return ids, nil
}

func appendIDs(dst []byte, typ byte, ids []ID) []byte {
	return appendRecord(dst, typ, 8*len(ids), func(b []byte) []byte {
		for _, id := range ids {
			b = binary.LittleEndian.AppendUint64(b, uint64(id))
		}
		return b
	})
}
