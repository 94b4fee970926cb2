package amqp

import (
	"testing"
)

func mustFrame(b testing.TB, ch uint16, m Method) []byte {
	out, err := AppendMethodFrame(nil, ch, m)
	if err != nil {
		b.Fatal(err)
	}
	return out
}

// BenchmarkDecodePublish parses a basic.publish frame and decodes it into a
// reused struct, as a connection loop on the hot path would.
func BenchmarkDecodePublish(b *testing.B) {
	frame := mustFrame(b, 1, &BasicPublish{Exchange: "openstack", RoutingKey: "compute.node-1"})
	var m BasicPublish
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		f, _, err := ParseFrame(frame, 131072)
		if err != nil {
			b.Fatal(err)
		}
		if err := m.DecodeArgs(f.Payload[4:]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeMethodAck is the generic path (DecodeMethod) for basic.ack.
func BenchmarkDecodeMethodAck(b *testing.B) {
	frame := mustFrame(b, 1, &BasicAck{DeliveryTag: 12345})
	b.ReportAllocs()
	for b.Loop() {
		f, _, _ := ParseFrame(frame, 131072)
		m, err := DecodeMethod(f.Payload)
		if err != nil || m.(*BasicAck).DeliveryTag != 12345 {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseContentHeader decodes the properties kombu sends with every
// message.
func BenchmarkParseContentHeader(b *testing.B) {
	p := &Properties{ContentType: "application/json", ContentEncoding: "utf-8", DeliveryMode: 2,
		Flags: FlagHeaders | FlagPriority, Expiration: "60000"}
	frame, _ := AppendHeaderFrame(nil, 1, ClassBasic, 274, p)
	b.ReportAllocs()
	for b.Loop() {
		f, _, _ := ParseFrame(frame, 131072)
		h, err := ParseContentHeader(f.Payload)
		if err != nil || h.Properties.DeliveryMode != 2 {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncodeDeliver appends a complete delivery (basic.deliver, raw
// content header, one body frame) into a reused buffer.
func BenchmarkEncodeDeliver(b *testing.B) {
	body := make([]byte, 300)
	p := &Properties{ContentType: "application/json", ContentEncoding: "utf-8", DeliveryMode: 2,
		Flags: FlagHeaders | FlagPriority}
	raw, _ := p.Append(nil)
	m := &BasicDeliver{ConsumerTag: "1", Exchange: "openstack", RoutingKey: "compute.node-1"}
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	for b.Loop() {
		m.DeliveryTag++
		var err error
		buf, err = AppendMethodFrame(buf[:0], 1, m)
		if err != nil {
			b.Fatal(err)
		}
		buf = AppendHeaderFrameRaw(buf, 1, ClassBasic, uint64(len(body)), raw)
		buf = AppendBodyFrames(buf, 1, body, 131072)
	}
	b.SetBytes(int64(len(buf)))
}

// BenchmarkEncodeDeliverProperties is the same with properties encoded from
// the struct each time.
func BenchmarkEncodeDeliverProperties(b *testing.B) {
	body := make([]byte, 300)
	p := &Properties{ContentType: "application/json", ContentEncoding: "utf-8", DeliveryMode: 2,
		Flags: FlagHeaders | FlagPriority}
	m := &BasicDeliver{ConsumerTag: "1", Exchange: "openstack", RoutingKey: "compute.node-1"}
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	for b.Loop() {
		m.DeliveryTag++
		buf, _ = AppendMethodFrame(buf[:0], 1, m)
		buf, _ = AppendHeaderFrame(buf, 1, ClassBasic, uint64(len(body)), p)
		buf = AppendBodyFrames(buf, 1, body, 131072)
	}
}

// TestHotPathAllocations pins the allocation counts the benchmarks show, so
// a regression fails the ordinary test run.
func TestHotPathAllocations(t *testing.T) {
	if testing.Short() {
		t.Skip()
	}
	pub := mustFrame(t, 1, &BasicPublish{Exchange: "openstack", RoutingKey: "compute.node-1"})
	var m BasicPublish
	if n := testing.AllocsPerRun(100, func() {
		f, _, _ := ParseFrame(pub, 131072)
		_ = m.DecodeArgs(f.Payload[4:])
	}); n > 2 { // the two strings
		t.Errorf("decode publish: %v allocs", n)
	}
	ack := mustFrame(t, 1, &BasicAck{DeliveryTag: 1})
	if n := testing.AllocsPerRun(100, func() {
		f, _, _ := ParseFrame(ack, 131072)
		_, _ = DecodeMethod(f.Payload)
	}); n > 1 { // the struct
		t.Errorf("decode ack: %v allocs", n)
	}
	p := &Properties{ContentType: "application/json", ContentEncoding: "utf-8", DeliveryMode: 2,
		Flags: FlagHeaders | FlagPriority, Expiration: "60000"}
	hdr, _ := AppendHeaderFrame(nil, 1, ClassBasic, 274, p)
	if n := testing.AllocsPerRun(100, func() {
		f, _, _ := ParseFrame(hdr, 131072)
		_, _ = ParseContentHeader(f.Payload)
	}); n > 0 {
		t.Errorf("parse kombu content header: %v allocs", n)
	}
	d := &BasicDeliver{ConsumerTag: "1", Exchange: "openstack", RoutingKey: "compute.node-1"}
	buf := make([]byte, 0, 4096)
	body := make([]byte, 300)
	if n := testing.AllocsPerRun(100, func() {
		buf, _ = AppendMethodFrame(buf[:0], 1, d)
		buf, _ = AppendHeaderFrame(buf, 1, ClassBasic, uint64(len(body)), p)
		buf = AppendBodyFrames(buf, 1, body, 131072)
	}); n > 0 {
		t.Errorf("encode deliver: %v allocs", n)
	}
}
