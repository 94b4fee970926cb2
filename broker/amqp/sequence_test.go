package amqp

import (
	"testing"
)

func parseOne(t *testing.T, b []byte) Frame {
	t.Helper()
	f, _, err := ParseFrame(b, 0)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestSequence(t *testing.T) {
	pub := parseOne(t, mustFrame(t, 1, &BasicPublish{RoutingKey: "q"}))
	ack := parseOne(t, mustFrame(t, 1, &BasicAck{DeliveryTag: 1}))
	hdr := func(class uint16, size uint64) Frame {
		b, _ := AppendHeaderFrame(nil, 1, class, size, nil)
		return parseOne(t, b)
	}
	body := func(n int) Frame { return parseOne(t, AppendFrame(nil, FrameBody, 1, make([]byte, n))) }
	unknown := Frame{Type: FrameMethod, Channel: 1, Payload: mustHex("003c 03e7")}

	var s Sequence
	step := func(f Frame, wantComplete bool) {
		t.Helper()
		c, err := s.Frame(f)
		if err != nil || c != wantComplete {
			t.Fatalf("Frame(type %d) = %v, %v; want %v", f.Type, c, err, wantComplete)
		}
	}
	step(ack, true)
	step(pub, false)
	if !s.InContent() {
		t.Error("InContent false after publish")
	}
	step(hdr(60, 10), false)
	if s.Remaining() != 10 {
		t.Errorf("Remaining = %d", s.Remaining())
	}
	step(body(4), false)
	step(body(6), true)
	// An empty body completes at the header; no body frame may follow.
	step(pub, false)
	step(hdr(60, 0), true)
	_, err := s.Frame(body(1))
	checkErr(t, "body after empty content", err, UnexpectedFrame, 0, 0, true,
		"UNEXPECTED_FRAME - expected method frame, got non method frame instead")

	cases := []struct {
		name   string
		frames []Frame
		code   uint16
		c, m   uint16
		text   string
	}{
		{"header first", []Frame{hdr(60, 1)}, UnexpectedFrame, 0, 0,
			"UNEXPECTED_FRAME - expected method frame, got non method frame instead"},
		{"method instead of header", []Frame{pub, ack}, UnexpectedFrame, 60, 40,
			"UNEXPECTED_FRAME - expected content header for class 60, got non content header frame instead"},
		{"body instead of header", []Frame{pub, body(1)}, UnexpectedFrame, 60, 40,
			"UNEXPECTED_FRAME - expected content header for class 60, got non content header frame instead"},
		{"header of another class", []Frame{pub, hdr(50, 1)}, UnexpectedFrame, 60, 40,
			"UNEXPECTED_FRAME - expected content header for class 60, got one for class 50 instead"},
		{"method inside body", []Frame{pub, hdr(60, 5), body(2), ack}, UnexpectedFrame, 60, 40,
			"UNEXPECTED_FRAME - expected content body, got non content body frame instead"},
		{"body too long", []Frame{pub, hdr(60, 5), body(6)}, UnexpectedFrame, 60, 40,
			"UNEXPECTED_FRAME - content body frame of 6 bytes exceeds"},
		{"unknown method", []Frame{unknown}, NotImplemented, 60, 999, "NOT_IMPLEMENTED"},
		{"unknown method inside content", []Frame{pub, unknown}, NotImplemented, 60, 999, "NOT_IMPLEMENTED"},
		{"unknown method inside body", []Frame{pub, hdr(60, 5), unknown}, NotImplemented, 60, 999, "NOT_IMPLEMENTED"},
	}
	for _, c := range cases {
		var s Sequence
		var err error
		for _, f := range c.frames {
			if _, err = s.Frame(f); err != nil {
				break
			}
		}
		checkErr(t, c.name, err, c.code, c.c, c.m, true, c.text)
	}

	// A weight other than 0 is not a content header to RabbitMQ.
	s.Reset()
	step(pub, false)
	h := hdr(60, 1)
	h.Payload[3] = 1
	_, err = s.Frame(h)
	checkErr(t, "weight 1", err, UnexpectedFrame, 60, 40, true, "UNEXPECTED_FRAME - expected content header for class 60")
	s.Reset()
	if s.InContent() {
		t.Error("Reset kept content state")
	}
}
