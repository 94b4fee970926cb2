package amqp

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

// The seeds below run as ordinary tests under `go test`; run a target with
// e.g. `go test -fuzz FuzzParseFrame ./broker/amqp` to explore further.

func seedMethods(f *testing.F) {
	for i, m := range allMethods() {
		fill(reflect.ValueOf(m), i, func(j int) bool { return j%2 == 0 })
		p, err := AppendMethod(nil, m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(p)
	}
	f.Add([]byte{})
	f.Add([]byte{0, 60, 0, 40})
	f.Add(mustHex("003c 03e7"))
	f.Add(mustHex("0032 000a 0000 01 71 00 00000003 01 6b 5a"))
}

func asProtocolError(t *testing.T, err error) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not *Error", err, err)
	}
	if e.Code == 0 || len(e.Text) > 255 || !e.Connection {
		t.Fatalf("bad error value %+v", e)
	}
}

// FuzzDecodeMethod: decoding never panics, errors are connection-level
// *Error, and what decodes re-encodes to a canonical form that is stable.
func FuzzDecodeMethod(f *testing.F) {
	seedMethods(f)
	f.Fuzz(func(t *testing.T, payload []byte) {
		m, err := DecodeMethod(payload)
		if err != nil {
			asProtocolError(t, err)
			return
		}
		enc1, err := AppendMethod(nil, m)
		if err != nil {
			t.Fatalf("re-encode %s: %v", m.Name(), err)
		}
		m2, err := DecodeMethod(enc1)
		if err != nil {
			t.Fatalf("decode re-encoded %s: %v", m.Name(), err)
		}
		enc2, _ := AppendMethod(nil, m2)
		if !bytes.Equal(enc1, enc2) {
			t.Fatalf("%s: encoding not stable\n%x\n%x", m.Name(), enc1, enc2)
		}
		// Without tables the wire form has the same length (only unused
		// bits of a bit octet may differ: they are ignored, as by RabbitMQ).
		if !hasTable(m) && len(enc1) != len(payload) {
			t.Fatalf("%s: %x re-encoded as %x", m.Name(), payload, enc1)
		}
	})
}

func hasTable(m Method) bool {
	v := reflect.ValueOf(m).Elem()
	for i := 0; i < v.NumField(); i++ {
		if v.Field(i).Type() == reflect.TypeOf(Table(nil)) {
			return true
		}
	}
	return false
}

// FuzzParseFrame: parsing never panics or over-reads, errors are *Error or
// ErrIncomplete, and a parsed frame re-encodes to the bytes it came from.
func FuzzParseFrame(f *testing.F) {
	b, _ := stream(f)
	f.Add(b[8:], uint32(4096))
	f.Add(AppendHeartbeat(nil), uint32(0))
	f.Add([]byte{1, 0, 1, 0, 0, 0, 4, 0, 60, 0, 80, 0}, uint32(4096))
	f.Add([]byte{9, 0, 0, 0, 0, 0, 0, 0xCE}, uint32(4096))
	f.Add([]byte{3, 0, 1, 0xff, 0xff, 0xff, 0xff}, uint32(131072))
	f.Fuzz(func(t *testing.T, data []byte, frameMax uint32) {
		for len(data) > 0 {
			fr, n, err := ParseFrame(data, frameMax)
			if err == ErrIncomplete {
				return
			}
			if err != nil {
				asProtocolError(t, err)
				return
			}
			if n < FrameOverhead || n > len(data) {
				t.Fatalf("n = %d of %d", n, len(data))
			}
			if again := AppendFrame(nil, fr.Type, fr.Channel, fr.Payload); !bytes.Equal(again, data[:n]) {
				t.Fatalf("frame re-encodes differently")
			}
			switch fr.Type {
			case FrameMethod:
				if _, err := DecodeMethod(fr.Payload); err != nil {
					asProtocolError(t, err)
				}
			case FrameHeader:
				if h, err := ParseContentHeader(fr.Payload); err != nil {
					asProtocolError(t, err)
				} else if _, err := h.Properties.Append(nil); err != nil {
					t.Fatal(err)
				}
			}
			data = data[n:]
		}
	})
}

// FuzzTable: table decoding never panics, errors are *Error, and decoded
// tables re-encode (never with s, b or B) to a stable form.
func FuzzTable(f *testing.F) {
	rich, _ := AppendTable(nil, richTable)
	f.Add(rich)
	f.Add([]byte{0, 0, 0, 0})
	f.Add(tableWith(mustHex("4c fffffffffffffffb")))
	f.Add(tableWith(mustHex("73 fffe")))
	f.Add(tableWith(mustHex("62 ff")))
	f.Add(tableWith(mustHex("41 00000005 62 01 73 0001")))
	f.Add([]byte{0, 0, 0, 5, 1, 'k'})
	f.Fuzz(func(t *testing.T, data []byte) {
		tb, n, err := ReadTable(data)
		if err != nil {
			asProtocolError(t, err)
			return
		}
		if n > len(data) {
			t.Fatalf("n = %d of %d", n, len(data))
		}
		enc1, err := AppendTable(nil, tb)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		tb2, _, err := ReadTable(enc1)
		if err != nil {
			t.Fatalf("decode re-encoded: %v", err)
		}
		enc2, _ := AppendTable(nil, tb2)
		if !bytes.Equal(enc1, enc2) {
			t.Fatalf("table encoding not stable")
		}
	})
}

// FuzzProperties: content properties decode without panics, errors are
// *Error, and decoded properties re-encode to the same bytes when they hold
// no headers table (tables may be canonicalised).
func FuzzProperties(f *testing.F) {
	all := Properties{ContentType: "application/json", ContentEncoding: "utf-8", Headers: Table{"a": int32(1)},
		DeliveryMode: 2, Flags: FlagPriority, Expiration: "60000", Type: "t", ClusterID: "c"}
	b, _ := all.Append(nil)
	f.Add(b)
	f.Add(mustHex("4001 0000 05 7574662d38"))
	f.Add([]byte{0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := DecodeProperties(data)
		if err != nil {
			asProtocolError(t, err)
			return
		}
		enc, err := p.Append(nil)
		if err != nil {
			t.Fatal(err)
		}
		if p.Flags&FlagHeaders == 0 && data[1]&1 == 0 && !bytes.Equal(enc, data) {
			t.Fatalf("%x re-encoded as %x", data, enc)
		}
	})
}
