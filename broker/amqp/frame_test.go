package amqp

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
)

// stream builds a realistic client byte stream: protocol header, then a
// publish with header and a body split into two frames, a heartbeat and an
// ack on another channel. It returns the frames it contains.
func stream(t testing.TB) ([]byte, []Frame) {
	const frameMax = 4096
	b := []byte(ProtocolHeader)
	var err error
	b, err = AppendMethodFrame(b, 1, &BasicPublish{Exchange: "openstack", RoutingKey: "compute.host@backend"})
	if err != nil {
		t.Fatal(err)
	}
	body := bytes.Repeat([]byte("0123456789abcdef"), 300) // 4800 bytes: two body frames
	p := &Properties{ContentType: "application/json", ContentEncoding: "utf-8", Headers: Table{},
		DeliveryMode: 2, Flags: FlagPriority, Expiration: "60000"}
	if b, err = AppendHeaderFrame(b, 1, ClassBasic, uint64(len(body)), p); err != nil {
		t.Fatal(err)
	}
	b = AppendBodyFrames(b, 1, body, frameMax)
	b = AppendHeartbeat(b)
	if b, err = AppendMethodFrame(b, 2, &BasicAck{DeliveryTag: 9, Multiple: true}); err != nil {
		t.Fatal(err)
	}

	var frames []Frame
	rest := b[8:]
	for len(rest) > 0 {
		f, n, err := ParseFrame(rest, frameMax)
		if err != nil {
			t.Fatal(err)
		}
		frames = append(frames, f)
		rest = rest[n:]
	}
	if len(frames) != 6 {
		t.Fatalf("stream has %d frames, want 6", len(frames))
	}
	return b, frames
}

func TestParseFrameStream(t *testing.T) {
	b, frames := stream(t)
	if n, err := ParseProtocolHeader(b); n != 8 || err != nil {
		t.Fatal(n, err)
	}
	types := []uint8{FrameMethod, FrameHeader, FrameBody, FrameBody, FrameHeartbeat, FrameMethod}
	for i, f := range frames {
		if f.Type != types[i] {
			t.Errorf("frame %d type %d, want %d", i, f.Type, types[i])
		}
	}
	if len(frames[2].Payload) != 4096-8 || len(frames[3].Payload) != 4800-(4096-8) {
		t.Errorf("body frames %d+%d bytes", len(frames[2].Payload), len(frames[3].Payload))
	}
	m, err := DecodeMethod(frames[0].Payload)
	if err != nil || m.(*BasicPublish).RoutingKey != "compute.host@backend" {
		t.Fatal(m, err)
	}
	h, err := ParseContentHeader(frames[1].Payload)
	if err != nil || h.BodySize != 4800 || h.ClassID != 60 || h.Properties.Expiration != "60000" {
		t.Fatal(h, err)
	}
	if frames[5].Channel != 2 {
		t.Errorf("ack channel %d", frames[5].Channel)
	}
}

// collect parses frames out of a growing buffer the way a connection loop
// does, feeding the input in the given chunks.
func collect(t *testing.T, chunks [][]byte, frameMax uint32) []Frame {
	t.Helper()
	var buf []byte
	var out []Frame
	header := false
	for _, c := range chunks {
		buf = append(buf, c...)
		for {
			if !header {
				n, err := ParseProtocolHeader(buf)
				if err == ErrIncomplete {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				header = true
				buf = buf[n:]
				continue
			}
			f, n, err := ParseFrame(buf, frameMax)
			if err == ErrIncomplete {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			f.Payload = bytes.Clone(f.Payload)
			out = append(out, f)
			buf = buf[n:]
		}
	}
	if len(buf) != 0 {
		t.Fatalf("%d bytes left over", len(buf))
	}
	return out
}

// TestSplitEveryBoundary feeds the stream cut at every byte boundary, and
// cut at every pair of boundaries, and expects the same frames each time.
func TestSplitEveryBoundary(t *testing.T) {
	b, want := stream(t)
	for i := 0; i <= len(b); i++ {
		got := collect(t, [][]byte{b[:i], b[i:]}, 4096)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("split at %d: frames differ", i)
		}
	}
	// Three chunks, over the first 120 bytes (protocol header, method and
	// content header frames) where the interesting boundaries are.
	for i := 0; i <= 120; i++ {
		for j := i; j <= 120; j++ {
			got := collect(t, [][]byte{b[:i], b[i:j], b[j:]}, 4096)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("split at %d,%d: frames differ", i, j)
			}
		}
	}
}

func TestFrameReader(t *testing.T) {
	b, want := stream(t)
	readers := map[string]func(io.Reader) io.Reader{
		"whole":    func(r io.Reader) io.Reader { return r },
		"one byte": iotest.OneByteReader,
		"half":     iotest.HalfReader,
		"data+err": iotest.DataErrReader,
	}
	for name, wrap := range readers {
		fr := NewFrameReader(wrap(bytes.NewReader(b)))
		if err := fr.ReadProtocolHeader(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for i, w := range want {
			f, err := fr.ReadFrame()
			if err != nil {
				t.Fatalf("%s: frame %d: %v", name, i, err)
			}
			if f.Type != w.Type || f.Channel != w.Channel || !bytes.Equal(f.Payload, w.Payload) {
				t.Fatalf("%s: frame %d differs", name, i)
			}
		}
		if _, err := fr.ReadFrame(); err != io.EOF {
			t.Fatalf("%s: at end: %v, want io.EOF", name, err)
		}
	}

	// EOF inside a frame.
	fr := NewFrameReader(bytes.NewReader(b[8:20]))
	if _, err := fr.ReadFrame(); err != io.ErrUnexpectedEOF {
		t.Errorf("cut frame: %v", err)
	}
	// A frame exactly frame_max long after tune-ok grows the buffer.
	big := AppendBodyFrames(nil, 3, make([]byte, 131072-8), 131072)
	fr = NewFrameReader(iotest.HalfReader(bytes.NewReader(big)))
	fr.SetFrameMax(131072)
	if f, err := fr.ReadFrame(); err != nil || len(f.Payload) != 131072-8 || fr.Buffered() != 0 {
		t.Errorf("big frame: %v", err)
	}
	// Before tune-ok the limit is 4096 (plus RabbitMQ's slack of 8).
	fr = NewFrameReader(bytes.NewReader(AppendFrame(nil, FrameBody, 1, make([]byte, 4097))))
	if _, err := fr.ReadFrame(); err == nil || err.(*Error).Code != FrameError {
		t.Errorf("oversized before tune: %v", err)
	}
	// A bad protocol header.
	fr = NewFrameReader(strings.NewReader("GET / HTTP/1.1\r\n"))
	if err := fr.ReadProtocolHeader(); !errors.Is(err, ErrProtocolHeader) {
		t.Errorf("bad header: %v", err)
	}
}

func TestProtocolHeader(t *testing.T) {
	ok := []string{ProtocolHeader, "AMQP\x01\x01\x00\x09", ProtocolHeader + "trailing"}
	for _, h := range ok {
		if n, err := ParseProtocolHeader([]byte(h)); n != 8 || err != nil {
			t.Errorf("%q: %d %v", h, n, err)
		}
	}
	for i := range len(ProtocolHeader) {
		if _, err := ParseProtocolHeader([]byte(ProtocolHeader[:i])); err != ErrIncomplete {
			t.Errorf("prefix %d: %v", i, err)
		}
	}
	bad := []string{
		"AMQP\x00\x00\x09\x00",             // 0-9-0
		"AMQP\x01\x01\x08\x00",             // 0-8
		"AMQP\x00\x01\x00\x00",             // AMQP 1.0
		"AMQP\x03\x01\x00\x00",             // AMQP 1.0 SASL
		"GET / HTTP/1.1\r\n",               // HTTP
		"\x01\x00\x00\x00\x00\x00\x05\x00", // a frame with no header
	}
	for _, h := range bad {
		_, err := ParseProtocolHeader([]byte(h))
		if !errors.Is(err, ErrProtocolHeader) {
			t.Errorf("%q: %v", h, err)
		}
		var e *Error
		if errors.As(err, &e) {
			t.Errorf("%q: a bad protocol header is answered with ProtocolHeader, not a close", h)
		}
	}
}

// TestFrameMustFail is the corpus of frames that must fail, each with the
// code, level and text start RabbitMQ 3.10 (rabbit_reader.erl) uses.
func TestFrameMustFail(t *testing.T) {
	withEnd := func(b []byte, end byte) []byte { b = bytes.Clone(b); b[len(b)-1] = end; return b }
	ack, _ := AppendMethodFrame(nil, 1, &BasicAck{DeliveryTag: 1})
	cases := []struct {
		name     string
		in       []byte
		frameMax uint32
		code     uint16
		text     string
	}{
		{"bad frame end", withEnd(ack, 0), 0, FrameError,
			"FRAME_ERROR - type 1, all octets = <<0,60,0,80,0,0,0,0,0,0,0,1,0>>: {invalid_frame_end_marker,0}"},
		{"bad frame end long payload", withEnd(AppendFrame(nil, FrameBody, 1, make([]byte, 20)), 0xCD), 0, FrameError,
			"FRAME_ERROR - type 3, first 16 octets = <<0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0>>: {invalid_frame_end_marker,205}"},
		{"bad frame end, printable payload", withEnd(AppendFrame(nil, FrameBody, 1, []byte(`{"oslo.version": "2.0"}`)), 0x0a), 0, FrameError,
			`FRAME_ERROR - type 3, first 16 octets = <<"{\"oslo.version\":">>: {invalid_frame_end_marker,10}`},
		{"oversized", AppendFrame(nil, FrameBody, 1, make([]byte, 4097)), 4096, FrameError,
			"FRAME_ERROR - type 3, all octets = <<>>: {frame_too_large,4097,4088}"},
		{"oversized header only", []byte{3, 0, 1, 0, 2, 0, 9}, 131072, FrameError,
			"FRAME_ERROR - type 3, all octets = <<>>: {frame_too_large,131081,131064}"},
		{"huge size", []byte{1, 0, 0, 0xff, 0xff, 0xff, 0xff}, 131072, FrameError, "FRAME_ERROR - type 1, all octets = <<>>: {frame_too_large,4294967295,131064}"},
		{"unknown type", AppendFrame(nil, 9, 0, []byte{1, 2}), 0, FrameError,
			"FRAME_ERROR - type 9, all octets = <<1,2>>: unknown_frame"},
		{"type 0", AppendFrame(nil, 0, 0, nil), 0, FrameError, "FRAME_ERROR - type 0, all octets = <<>>: unknown_frame"},
		{"method under 4 bytes", AppendFrame(nil, FrameMethod, 1, []byte{0, 60, 0}), 0, FrameError,
			"FRAME_ERROR - type 1, all octets = <<0,60,0>>: unknown_frame"},
		{"header under 12 bytes", AppendFrame(nil, FrameHeader, 1, make([]byte, 11)), 0, FrameError,
			"FRAME_ERROR - type 2, all octets = <<0,0,0,0,0,0,0,0,0,0,0>>: unknown_frame"},
		{"heartbeat with payload", AppendFrame(nil, FrameHeartbeat, 0, []byte{0}), 0, FrameError,
			"FRAME_ERROR - type 8, all octets = <<0>>: unknown_frame"},
		{"heartbeat on channel 1", AppendFrame(nil, FrameHeartbeat, 1, nil), 0, UnexpectedFrame,
			"UNEXPECTED_FRAME - type 8, all octets = <<>>"},
	}
	for _, c := range cases {
		_, n, err := ParseFrame(c.in, c.frameMax)
		e := checkErr(t, c.name, err, c.code, 0, 0, true, c.text)
		if e.Text != c.text {
			t.Errorf("%s: text %q, want %q", c.name, e.Text, c.text)
		}
		if n != 0 {
			t.Errorf("%s: n = %d", c.name, n)
		}
	}
}

func TestFrameMaxBoundaries(t *testing.T) {
	const fm = 131072
	for _, size := range []int{0, 1, fm - 9, fm - 8, fm - 7, fm} { // RabbitMQ allows up to frame_max of payload
		b := AppendFrame(nil, FrameBody, 1, make([]byte, size))
		if _, n, err := ParseFrame(b, fm); err != nil || n != len(b) {
			t.Errorf("payload %d: %d %v", size, n, err)
		}
	}
	if _, _, err := ParseFrame(AppendFrame(nil, FrameBody, 1, make([]byte, fm+1)), fm); err == nil {
		t.Error("payload frame_max+1 accepted")
	}
	// frameMax 0: no limit.
	if _, _, err := ParseFrame(AppendFrame(nil, FrameBody, 1, make([]byte, 1<<20)), 0); err != nil {
		t.Error(err)
	}
	// Every incomplete prefix of a frame asks for more bytes.
	b := AppendFrame(nil, FrameBody, 1, []byte("hello"))
	for i := range b {
		if _, _, err := ParseFrame(b[:i], fm); err != ErrIncomplete {
			t.Errorf("prefix %d: %v", i, err)
		}
	}
}

func TestAppendBodyFrames(t *testing.T) {
	const fm = 4096
	for _, size := range []int{0, 1, fm - 9, fm - 8, fm - 7, 2 * (fm - 8), 2*(fm-8) + 1, 10000} {
		body := make([]byte, size)
		for i := range body {
			body[i] = byte(i * 7)
		}
		out := AppendBodyFrames([]byte("x"), 5, body, fm)
		rest := out[1:]
		var got []byte
		frames := 0
		for len(rest) > 0 {
			f, n, err := ParseFrame(rest, fm)
			if err != nil {
				t.Fatal(size, err)
			}
			if f.Type != FrameBody || f.Channel != 5 || n > fm || len(f.Payload) == 0 {
				t.Fatalf("size %d: bad frame %d bytes", size, n)
			}
			got = append(got, f.Payload...)
			rest = rest[n:]
			frames++
		}
		want := (size + fm - 9) / (fm - 8)
		if frames != want || !bytes.Equal(got, body) {
			t.Errorf("size %d: %d frames (want %d)", size, frames, want)
		}
	}
	if out := AppendBodyFrames(nil, 1, nil, fm); len(out) != 0 {
		t.Error("empty body must give no frame")
	}
	if out := AppendBodyFrames(nil, 1, make([]byte, 10000), 0); len(out) != 10008 {
		t.Errorf("frameMax 0: %d bytes, want one frame", len(out))
	}
}

func TestHeartbeatBytes(t *testing.T) {
	// 08 0000 00000000 CE, as in heartbeat-5s.log.
	if got := AppendHeartbeat(nil); !bytes.Equal(got, []byte{8, 0, 0, 0, 0, 0, 0, 0xCE}) {
		t.Errorf("%x", got)
	}
	f, n, err := ParseFrame(AppendHeartbeat(nil), FrameMinSize)
	if err != nil || n != 8 || f.Type != FrameHeartbeat || f.Channel != 0 || len(f.Payload) != 0 {
		t.Error(f, n, err)
	}
}

func TestHeaderFrames(t *testing.T) {
	// No properties: flags word 0.
	b, err := AppendHeaderFrame(nil, 1, ClassBasic, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := mustHex("02 0001 0000000e 003c 0000 0000000000000000 0000 ce")
	if !bytes.Equal(b, want) {
		t.Errorf("got %x\nwant %x", b, want)
	}
	// The raw form forwards properties byte for byte.
	p := &Properties{ContentType: "application/json", ContentEncoding: "utf-8", Headers: Table{}, DeliveryMode: 2, Flags: FlagPriority}
	full, _ := AppendHeaderFrame(nil, 7, ClassBasic, 204, p)
	f, _, _ := ParseFrame(full, 0)
	h, err := ParseContentHeader(f.Payload)
	if err != nil {
		t.Fatal(err)
	}
	raw := AppendHeaderFrameRaw(nil, 7, h.ClassID, h.BodySize, h.RawProperties)
	if !bytes.Equal(raw, full) {
		t.Errorf("raw header differs:\n%x\n%x", raw, full)
	}
	// An unencodable header table leaves dst alone.
	out, err := AppendHeaderFrame([]byte("keep"), 1, ClassBasic, 1, &Properties{Headers: Table{"k": struct{}{}}})
	if !errors.Is(err, ErrEncode) || string(out) != "keep" {
		t.Errorf("%q %v", out, err)
	}
}
