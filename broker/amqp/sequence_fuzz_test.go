package amqp

import (
	"encoding/binary"
	"errors"
	"math"
	"runtime"
	"testing"
)

// seqFrames turns fuzz bytes into frames: each is a type byte (low two
// bits pick method, header, body or heartbeat), a length byte and that
// many payload bytes. The compact form lets the fuzzer build long
// sequences without getting frame ends and sizes right.
func seqFrames(data []byte) []Frame {
	types := [4]uint8{FrameMethod, FrameHeader, FrameBody, FrameHeartbeat}
	var out []Frame
	for len(data) >= 2 {
		typ, n := types[data[0]&3], int(data[1])
		data = data[2:]
		n = min(n, len(data))
		out = append(out, Frame{Type: typ, Channel: 1, Payload: data[:n]})
		data = data[n:]
	}
	return out
}

func seqEncode(frames ...Frame) []byte {
	var b []byte
	for _, f := range frames {
		var t byte
		switch f.Type {
		case FrameHeader:
			t = 1
		case FrameBody:
			t = 2
		case FrameHeartbeat:
			t = 3
		}
		b = append(b, t, byte(len(f.Payload)))
		b = append(b, f.Payload...)
	}
	return b
}

// seqModel is the rule of rabbit_command_assembler written out plainly,
// the oracle for Sequence.
type seqModel struct {
	state     int // 0 method, 1 header, 2 body
	class     uint16
	remaining uint64
}

// frame returns complete and the error code (0: accepted).
func (m *seqModel) frame(f Frame) (bool, uint16) {
	unknown := func() bool {
		return f.Type == FrameMethod && len(f.Payload) >= 4 &&
			MethodName(binary.BigEndian.Uint16(f.Payload), binary.BigEndian.Uint16(f.Payload[2:])) == ""
	}
	switch m.state {
	case 0:
		if f.Type != FrameMethod {
			return false, UnexpectedFrame
		}
		if len(f.Payload) < 4 {
			return false, FrameError
		}
		if unknown() {
			return false, NotImplemented
		}
		c, id := binary.BigEndian.Uint16(f.Payload), binary.BigEndian.Uint16(f.Payload[2:])
		if c == ClassBasic && (id == MethodBasicPublish || id == MethodBasicReturn || id == MethodBasicDeliver || id == MethodBasicGetOk) {
			m.state, m.class = 1, c
			return false, 0
		}
		return true, 0
	case 1:
		if unknown() {
			return false, NotImplemented
		}
		if f.Type != FrameHeader || len(f.Payload) < 12 || f.Payload[2] != 0 || f.Payload[3] != 0 ||
			binary.BigEndian.Uint16(f.Payload) != m.class {
			return false, UnexpectedFrame
		}
		m.remaining = binary.BigEndian.Uint64(f.Payload[4:])
		if m.remaining == 0 {
			*m = seqModel{}
			return true, 0
		}
		m.state = 2
		return false, 0
	default:
		if unknown() {
			return false, NotImplemented
		}
		if f.Type != FrameBody || uint64(len(f.Payload)) > m.remaining {
			return false, UnexpectedFrame
		}
		m.remaining -= uint64(len(f.Payload))
		if m.remaining == 0 {
			*m = seqModel{}
			return true, 0
		}
		return false, 0
	}
}

func headerPayload(class uint16, size uint64) []byte {
	p := binary.BigEndian.AppendUint16(nil, class)
	p = append(p, 0, 0)
	p = binary.BigEndian.AppendUint64(p, size)
	return append(p, 0, 0) // no properties
}

// FuzzSequence: for any frame sequence Sequence never panics, agrees
// with the plain model frame by frame (accepted or the same error code,
// complete, InContent, Remaining), returns connection-level *Error, and
// allocates nothing in proportion to a declared body size: a header
// declaring 2^64-1 bytes costs no more than one declaring 3.
func FuzzSequence(f *testing.F) {
	pub, _ := AppendMethod(nil, &BasicPublish{Exchange: "x", RoutingKey: "k"})
	ack, _ := AppendMethod(nil, &BasicAck{DeliveryTag: 1})
	deliver, _ := AppendMethod(nil, &BasicDeliver{ConsumerTag: "c", DeliveryTag: 1})
	method := Frame{Type: FrameMethod, Payload: pub}
	f.Add(seqEncode(method, Frame{Type: FrameHeader, Payload: headerPayload(ClassBasic, 3)}, Frame{Type: FrameBody, Payload: []byte("abc")}))
	f.Add(seqEncode(method, Frame{Type: FrameHeader, Payload: headerPayload(ClassBasic, 0)}, Frame{Type: FrameMethod, Payload: ack}))
	f.Add(seqEncode(method, Frame{Type: FrameHeader, Payload: headerPayload(ClassBasic, math.MaxUint64)},
		Frame{Type: FrameBody, Payload: []byte("abc")}, Frame{Type: FrameBody, Payload: []byte("d")}))
	f.Add(seqEncode(method, Frame{Type: FrameHeader, Payload: headerPayload(ClassBasic, 1<<40)}, Frame{Type: FrameMethod, Payload: pub}))
	f.Add(seqEncode(Frame{Type: FrameMethod, Payload: deliver}, Frame{Type: FrameHeader, Payload: headerPayload(ClassQueue, 2)}))
	f.Add(seqEncode(method, Frame{Type: FrameBody, Payload: []byte("x")}))
	f.Add(seqEncode(method, Frame{Type: FrameMethod, Payload: []byte{0, 99, 0, 1}}))
	f.Add(seqEncode(Frame{Type: FrameMethod, Payload: []byte{0, 60}}))
	f.Add(seqEncode(Frame{Type: FrameHeartbeat}, Frame{Type: FrameMethod, Payload: ack}))
	f.Fuzz(func(t *testing.T, data []byte) {
		frames := seqFrames(data)
		// ReadMemStats stops the world: measure only where it matters,
		// when some header declares a body of 4 GiB or more.
		huge := false
		for _, fr := range frames {
			huge = huge || fr.Type == FrameHeader && len(fr.Payload) >= 12 && binary.BigEndian.Uint64(fr.Payload[4:]) >= 1<<32
		}
		var before, after runtime.MemStats
		if huge {
			runtime.ReadMemStats(&before)
		}
		var s Sequence
		var m seqModel
		for i, fr := range frames {
			complete, err := s.Frame(fr)
			wantComplete, wantCode := m.frame(fr)
			if err != nil {
				var e *Error
				if !errors.As(err, &e) || !e.Connection {
					t.Fatalf("frame %d: error %v (%T) is not a connection-level *Error", i, err, err)
				}
				if e.Code != wantCode {
					t.Fatalf("frame %d (%d %x): code %d, model says %d", i, fr.Type, fr.Payload, e.Code, wantCode)
				}
				// The connection closes on these errors; start afresh.
				s.Reset()
				m = seqModel{}
				continue
			}
			if wantCode != 0 {
				t.Fatalf("frame %d (%d %x) accepted, model says %d", i, fr.Type, fr.Payload, wantCode)
			}
			if complete != wantComplete || s.InContent() != (m.state != 0) || s.Remaining() != m.remaining*boolU64(m.state == 2) {
				t.Fatalf("frame %d: complete %v InContent %v Remaining %d; model %+v complete %v",
					i, complete, s.InContent(), s.Remaining(), m, wantComplete)
			}
			if complete && (s.InContent() || s.Remaining() != 0) {
				t.Fatalf("frame %d completes a command but leaves state %+v", i, s)
			}
		}
		if !huge {
			return
		}
		runtime.ReadMemStats(&after)
		// Errors format a short text; nothing may grow with a declared size.
		if grew := after.TotalAlloc - before.TotalAlloc; grew > 1<<20+uint64(len(data))*64 {
			t.Fatalf("%d frames of %d bytes allocated %d bytes", len(frames), len(data), grew)
		}
	})
}

func boolU64(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}
