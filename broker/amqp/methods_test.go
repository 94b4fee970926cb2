package amqp

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

// allMethods returns a new zero struct of every method the spec defines.
func allMethods() []Method {
	var ms []Method
	for c := uint16(0); c < 200; c++ {
		for m := uint16(0); m < 200; m++ {
			if meth := NewMethod(c, m); meth != nil {
				ms = append(ms, meth)
			}
		}
	}
	return ms
}

func TestSpecCoverage(t *testing.T) {
	ms := allMethods()
	// 0-9-1 has 55 methods (access.request(-ok) included); RabbitMQ's
	// extensions add connection.blocked/unblocked/update-secret(-ok),
	// exchange.bind(-ok)/unbind(-ok), basic.nack and confirm.select(-ok).
	if len(ms) != 66 {
		t.Errorf("got %d methods, want 66", len(ms))
	}
	content := map[string]bool{}
	for _, m := range ms {
		if got := MethodName(m.ClassID(), m.MethodID()); got != m.Name() {
			t.Errorf("MethodName(%d,%d) = %q, want %q", m.ClassID(), m.MethodID(), got, m.Name())
		}
		if m.HasContent() {
			content[m.Name()] = true
		}
	}
	want := map[string]bool{"basic.publish": true, "basic.return": true, "basic.deliver": true, "basic.get-ok": true}
	if !reflect.DeepEqual(content, want) {
		t.Errorf("content-carrying methods = %v, want %v", content, want)
	}
	if NewMethod(60, 999) != nil || NewMethod(999, 10) != nil || MethodName(60, 999) != "" {
		t.Error("unknown ids must give nil and \"\"")
	}
	if n := (&ExchangeUnbindOk{}).MethodID(); n != 51 {
		t.Errorf("exchange.unbind-ok id = %d, want 51", n)
	}
	if !(&QueueDeclare{}).Synchronous() || (&BasicPublish{}).Synchronous() {
		t.Error("Synchronous flags wrong")
	}
}

func TestReplyCodes(t *testing.T) {
	codes := map[uint16]uint16{
		ReplySuccess: 200, ContentTooLarge: 311, NoRoute: 312, NoConsumers: 313,
		ConnectionForced: 320, InvalidPath: 402, AccessRefused: 403, NotFound: 404,
		ResourceLocked: 405, PreconditionFailed: 406, FrameError: 501, SyntaxError: 502,
		CommandInvalid: 503, ChannelError: 504, UnexpectedFrame: 505, ResourceError: 506,
		NotAllowed: 530, NotImplemented: 540, InternalError: 541,
	}
	for got, want := range codes {
		if got != want {
			t.Errorf("constant %d != %d", got, want)
		}
	}
	for _, c := range []uint16{311, 312, 313, 403, 404, 405, 406} {
		if IsHardError(c) {
			t.Errorf("%d should be soft", c)
		}
	}
	for _, c := range []uint16{320, 402, 501, 502, 503, 504, 505, 506, 530, 540, 541, 999} {
		if !IsHardError(c) {
			t.Errorf("%d should be hard", c)
		}
	}
	if ReplyName(404) != "NOT_FOUND" || ReplyName(406) != "PRECONDITION_FAILED" || ReplyName(1) != "" {
		t.Error("ReplyName wrong")
	}
}

var richTable = Table{
	"int":     int32(-5),
	"long":    int64(1) << 40,
	"str":     "value",
	"bool":    true,
	"double":  1.5,
	"bytes":   []byte{0, 1, 0xff},
	"time":    time.Unix(1700000000, 0).UTC(),
	"void":    nil,
	"array":   []any{int32(1), "two", false, []any{}},
	"table":   Table{"x": int32(1), "empty": Table{}},
	"decimal": Decimal{Scale: 2, Value: -314},
}

// fill sets every field of the method struct behind v to a non-zero value
// derived from seed; bools get the values in bits, in field order.
func fill(v reflect.Value, seed int, bits func(i int) bool) {
	v = v.Elem()
	nb := 0
	for i := 0; i < v.NumField(); i++ {
		f := v.Field(i)
		k := uint64(seed*31 + i + 1)
		switch f.Kind() {
		case reflect.Uint8:
			f.SetUint(0x80 | k&0x7f)
		case reflect.Uint16:
			f.SetUint(0x8000 | k)
		case reflect.Uint32:
			f.SetUint(0x80000000 | k)
		case reflect.Uint64:
			f.SetUint(0x8000000000000000 | k)
		case reflect.String:
			f.SetString(fmt.Sprintf("%s-%d-é", v.Type().Field(i).Name, k))
		case reflect.Bool:
			f.SetBool(bits(nb))
			nb++
		case reflect.Map:
			f.Set(reflect.ValueOf(richTable))
		default:
			panic("unexpected field kind " + f.Kind().String())
		}
	}
}

func roundTrip(t *testing.T, m Method) Method {
	t.Helper()
	const ch = 0x0102
	frame, err := AppendMethodFrame([]byte("prefix"), ch, m)
	if err != nil {
		t.Fatalf("%s: encode: %v", m.Name(), err)
	}
	if !bytes.HasPrefix(frame, []byte("prefix")) {
		t.Fatalf("%s: AppendMethodFrame clobbered dst", m.Name())
	}
	f, n, err := ParseFrame(frame[6:], 0)
	if err != nil || n != len(frame)-6 || f.Type != FrameMethod || f.Channel != ch {
		t.Fatalf("%s: ParseFrame = %+v, %d, %v", m.Name(), f, n, err)
	}
	got, err := DecodeMethod(f.Payload)
	if err != nil {
		t.Fatalf("%s: decode: %v", m.Name(), err)
	}
	if !reflect.DeepEqual(got, m) {
		t.Fatalf("%s: round trip\n got %#v\nwant %#v", m.Name(), got, m)
	}
	return got
}

func TestMethodRoundTripAll(t *testing.T) {
	for i, m := range allMethods() {
		t.Run(m.Name(), func(t *testing.T) {
			// All values non-zero, all bits set.
			fill(reflect.ValueOf(m), i, func(int) bool { return true })
			roundTrip(t, m)
			// Each bit alone, to catch wrong or shared bit positions.
			nbits := 0
			fill(reflect.ValueOf(m), i, func(int) bool { nbits++; return false })
			for b := 0; b < nbits; b++ {
				fill(reflect.ValueOf(m), i, func(j int) bool { return j == b })
				roundTrip(t, m)
			}
			// Zero values.
			z := reflect.New(reflect.TypeOf(m).Elem()).Interface().(Method)
			roundTrip(t, z)
		})
	}
}

// TestMethodTruncatedAndTrailing: every strict prefix of the arguments, and
// the arguments plus one byte, must fail as RabbitMQ's decoder does: 501
// FRAME_ERROR "cannot decode", connection-level, with the method's ids.
func TestMethodTruncatedAndTrailing(t *testing.T) {
	for i, m := range allMethods() {
		fill(reflect.ValueOf(m), i, func(int) bool { return true })
		payload, err := AppendMethod(nil, m)
		if err != nil {
			t.Fatal(err)
		}
		bad := [][]byte{append(bytes.Clone(payload), 0)}
		for n := 4; n < len(payload); n++ {
			bad = append(bad, payload[:n])
		}
		for _, p := range bad {
			_, err := DecodeMethod(p)
			checkErr(t, fmt.Sprintf("%s len %d", m.Name(), len(p)), err, FrameError, m.ClassID(), m.MethodID(), true, "FRAME_ERROR - cannot decode <<")
		}
	}
}

func checkErr(t *testing.T, what string, err error, code, classID, methodID uint16, conn bool, textPrefix string) *Error {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("%s: err = %v (%T), want *Error %d", what, err, err, code)
	}
	if e.Code != code || e.ClassID != classID || e.MethodID != methodID || e.Connection != conn {
		t.Fatalf("%s: got %+v, want code %d class %d method %d connection %v", what, e, code, classID, methodID, conn)
	}
	if !strings.HasPrefix(e.Text, textPrefix) {
		t.Fatalf("%s: text %q, want prefix %q", what, e.Text, textPrefix)
	}
	if len(e.Text) > 255 {
		t.Fatalf("%s: text longer than 255 bytes", what)
	}
	return e
}

func mustHex(s string) []byte {
	b, err := hex.DecodeString(strings.NewReplacer(" ", "", "\n", "", "\t", "").Replace(s))
	if err != nil {
		panic(err)
	}
	return b
}

// TestMethodVectors checks byte-exact encodings worked out by hand from
// the spec, with the values seen in the reference captures.
func TestMethodVectors(t *testing.T) {
	cases := []struct {
		m   Method
		hex string
	}{
		{&BasicPublish{Exchange: "openstack", RoutingKey: "q", Mandatory: true},
			"003c 0028 0000 09 6f70656e737461636b 01 71 01"},
		{&BasicPublish{Immediate: true}, "003c 0028 0000 00 00 02"},
		{&BasicAck{DeliveryTag: 1}, "003c 0050 0000000000000001 00"},
		{&BasicAck{DeliveryTag: 7, Multiple: true}, "003c 0050 0000000000000007 01"},
		{&BasicNack{DeliveryTag: 2, Multiple: false, Requeue: true}, "003c 0078 0000000000000002 02"},
		{&BasicDeliver{ConsumerTag: "1", DeliveryTag: 1, Exchange: "", RoutingKey: "reply_x"},
			"003c 003c 01 31 0000000000000001 00 00 07 7265706c795f78"},
		{&BasicCancel{ConsumerTag: "3", NoWait: true}, "003c 001e 01 33 01"},
		{&QueueDeclare{Queue: "q", AutoDelete: true, Arguments: Table{"x-expires": int32(1800000)}},
			"0032 000a 0000 01 71 08 0000000f 09 782d65787069726573 49 001b7740"},
		{&ExchangeDeclare{Exchange: "x", Type: "topic", Durable: true, NoWait: true},
			"0028 000a 0000 01 78 05 746f706963 12 00000000"},
		{&ConnectionTune{ChannelMax: 2047, FrameMax: 131072, Heartbeat: 60}, "000a 001e 07ff 00020000 003c"},
		{&ConnectionClose{ReplyCode: 320, ReplyText: "CONNECTION_FORCED", CauseClassID: 0, CauseMethodID: 0},
			"000a 0032 0140 11 434f4e4e454354494f4e5f464f52434544 0000 0000"},
		{&ChannelClose{ReplyCode: 406, ReplyText: "x", CauseClassID: 60, CauseMethodID: 80}, "0014 0028 0196 01 78 003c 0050"},
		{&ConfirmSelect{}, "0055 000a 00"},
		{&ConnectionCloseOk{}, "000a 0033"},
		{&ConnectionStartOk{Mechanism: "PLAIN", Response: "\x00u\x00p", Locale: "en_US"},
			"000a 000b 00000000 05 504c41494e 00000004 00750070 05 656e5f5553"},
	}
	for _, c := range cases {
		want := mustHex(c.hex)
		got, err := AppendMethod(nil, c.m)
		if err != nil {
			t.Fatalf("%s: %v", c.m.Name(), err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s:\n got %x\nwant %x", c.m.Name(), got, want)
		}
		back, err := DecodeMethod(want)
		if err != nil {
			t.Fatalf("%s: decode: %v", c.m.Name(), err)
		}
		if !reflect.DeepEqual(back, c.m) {
			t.Errorf("%s: decoded %#v", c.m.Name(), back)
		}
	}
}

// TestCaptureHandshake re-encodes the connection.start RabbitMQ 3.10.8 sent
// in rpc-happy-path.log (the capture holds decoded values, not bytes) and
// the AMQPLAIN response py-amqp sent, which the log shows byte for byte.
func TestCaptureHandshake(t *testing.T) {
	start := &ConnectionStart{
		VersionMajor: 0, VersionMinor: 9,
		ServerProperties: Table{
			"capabilities": Table{
				"publisher_confirms": true, "exchange_exchange_bindings": true, "basic.nack": true,
				"consumer_cancel_notify": true, "connection.blocked": true, "consumer_priorities": true,
				"authentication_failure_close": true, "per_consumer_qos": true, "direct_reply_to": true,
			},
			"cluster_name": "rabbit@vm",
			"copyright":    "Copyright (c) 2007-2022 VMware, Inc. or its affiliates.",
			"information":  "Licensed under the MPL 2.0. Website: https://rabbitmq.com",
			"platform":     "Erlang/OTP 25.2.3",
			"product":      "RabbitMQ",
			"version":      "3.10.8",
		},
		Mechanisms: "AMQPLAIN PLAIN",
		Locales:    "en_US",
	}
	roundTrip(t, start)

	resp := "\x05LOGINS\x00\x00\x00\x05guest\x08PASSWORDS\x00\x00\x00\x05guest"
	startOk := mustHex("000a 000b") // class, method
	startOk = append(startOk, 0, 0, 0, 0)
	startOk = append(startOk, 8)
	startOk = append(startOk, "AMQPLAIN"...)
	startOk = append(startOk, 0, 0, 0, byte(len(resp)))
	startOk = append(startOk, resp...)
	startOk = append(startOk, 5)
	startOk = append(startOk, "en_US"...)
	m, err := DecodeMethod(startOk)
	if err != nil {
		t.Fatal(err)
	}
	so := m.(*ConnectionStartOk)
	creds, err := DecodeTableBody([]byte(so.Response))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(creds, Table{"LOGIN": "guest", "PASSWORD": "guest"}) {
		t.Errorf("AMQPLAIN = %v", creds)
	}
	again, err := AppendTableBody(nil, creds)
	if err != nil || string(again) != resp {
		t.Errorf("AppendTableBody = %q, %v; want %q", again, err, resp)
	}
}

func TestDecodeMethodErrors(t *testing.T) {
	// Unknown class and unknown method: 540, connection-level, naming the ids.
	_, err := DecodeMethod(mustHex("003c 03e7"))
	checkErr(t, "unknown method", err, NotImplemented, 60, 999, true, "NOT_IMPLEMENTED - unknown method {60,999}")
	_, err = DecodeMethod(mustHex("0063 000a 00"))
	checkErr(t, "unknown class", err, NotImplemented, 99, 10, true, "NOT_IMPLEMENTED")

	// A method payload too short to hold the ids.
	for _, p := range [][]byte{nil, {0}, {0, 60, 0}} {
		_, err = DecodeMethod(p)
		checkErr(t, "short payload", err, FrameError, 0, 0, true, "FRAME_ERROR - type 1, all octets = <<")
	}

	// Long arguments: the text is cut at 255 bytes like RabbitMQ's.
	long, _ := AppendMethod(nil, &BasicPublish{Exchange: strings.Repeat("x", 200)})
	e := checkErr(t, "long trailing", func() error { _, err := DecodeMethod(append(long, 1)); return err }(),
		FrameError, 60, 40, true, "FRAME_ERROR - cannot decode <<0,0,200,120,120,")
	if len(e.Text) != 255 || !strings.HasSuffix(e.Text, "...") {
		t.Errorf("long text %d bytes: %q", len(e.Text), e.Text)
	}

	// A table length running past the arguments: 501 like any truncation.
	_, err = DecodeMethod(mustHex("0032 000a 0000 01 71 00 000000ff 09"))
	checkErr(t, "table overrun", err, FrameError, 50, 10, true, "FRAME_ERROR - cannot decode <<0,0,1,113,0,0,0,0,255,9>>")

	// A malformed table inside a correct length: 502 with the method's ids.
	malformed := []string{
		"01 6b 5a",                   // unknown type 'Z'
		"01 6b 49 0000",              // I truncated
		"05 6b",                      // key truncated
		"01 6b 53 00000009 61",       // S length past the table end
		"01 6b 46 00000003 01 6b 3f", // nested table with unknown type '?'
		"01 6b 41 00000001 5a",       // array with unknown type
	}
	for _, tb := range malformed {
		body := mustHex(tb)
		p := mustHex("0032 000a 0000 01 71 00")
		p = append(p, 0, 0, 0, byte(len(body)))
		p = append(p, body...)
		_, err = DecodeMethod(p)
		checkErr(t, "table "+tb, err, SyntaxError, 50, 10, true, "SYNTAX_ERROR - ")
	}
}

func TestEncodeErrors(t *testing.T) {
	long := strings.Repeat("q", 256)
	dst := []byte("keep")
	out, err := AppendMethodFrame(dst, 1, &QueueDeclare{Queue: long})
	if !errors.Is(err, ErrEncode) || string(out) != "keep" {
		t.Errorf("long shortstr: %q, %v", out, err)
	}
	if _, err := AppendMethodFrame(nil, 1, &QueueDeclare{Queue: long[:255]}); err != nil {
		t.Errorf("255-byte shortstr: %v", err)
	}
	out, err = AppendMethodFrame(dst, 1, &QueueDeclare{Arguments: Table{"bad": struct{}{}}})
	if !errors.Is(err, ErrEncode) || string(out) != "keep" {
		t.Errorf("bad table value: %q, %v", out, err)
	}
	if !strings.Contains(err.Error(), "queue.declare") {
		t.Errorf("error should name the method: %v", err)
	}
}

func TestErrorValue(t *testing.T) {
	e := NewError(NotFound, 50, 10, "no queue '%s' in vhost '/'", "q")
	if e.Text != "NOT_FOUND - no queue 'q' in vhost '/'" || e.Connection {
		t.Errorf("%+v", e)
	}
	want := "amqp: NOT_FOUND - no queue 'q' in vhost '/' (code 404, queue.declare 50/10, channel)"
	if e.Error() != want {
		t.Errorf("Error() = %q, want %q", e.Error(), want)
	}
	cm := e.CloseMethod().(*ChannelClose)
	if cm.ReplyCode != 404 || cm.CauseClassID != 50 || cm.CauseMethodID != 10 || cm.ReplyText != e.Text {
		t.Errorf("CloseMethod = %+v", cm)
	}
	h := NewError(ConnectionForced, 0, 0, "broker forced connection closure with reason 'shutdown'")
	if !h.Connection {
		t.Error("320 must be connection-level")
	}
	if _, ok := h.CloseMethod().(*ConnectionClose); !ok {
		t.Error("hard error must give connection.close")
	}
	// The 406 for an unknown delivery tag, exactly as oslo matches it.
	u := NewError(PreconditionFailed, ClassBasic, MethodBasicAck, "unknown delivery tag %d", 1)
	if u.Text != "PRECONDITION_FAILED - unknown delivery tag 1" || u.Connection || u.ClassID != 60 || u.MethodID != 80 {
		t.Errorf("%+v", u)
	}
	// Texts are cut at 255 bytes like RabbitMQ's.
	l := NewError(NotFound, 0, 0, "%s", strings.Repeat("x", 300))
	if len(l.Text) != 255 || !strings.HasSuffix(l.Text, "...") {
		t.Errorf("long text: %d bytes", len(l.Text))
	}
	if _, err := AppendMethod(nil, l.CloseMethod()); err != nil {
		t.Errorf("close method with cut text must encode: %v", err)
	}
	var target *Error
	if !errors.As(fmt.Errorf("wrapped: %w", e), &target) || target != e {
		t.Error("errors.As through wrapping")
	}
}
