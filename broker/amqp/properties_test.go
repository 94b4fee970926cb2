package amqp

import (
	"bytes"
	"reflect"
	"testing"
	"time"
)

func propsRoundTrip(t *testing.T, p *Properties) Properties {
	t.Helper()
	b, err := p.Append(nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeProperties(b)
	if err != nil {
		t.Fatalf("decode %x: %v", b, err)
	}
	again, err := got.Append(nil)
	if err != nil || !bytes.Equal(again, b) {
		t.Fatalf("re-encoding differs: %x vs %x (%v)", again, b, err)
	}
	return got
}

func TestPropertiesEach(t *testing.T) {
	ts := time.Unix(1700000000, 0).UTC()
	cases := []struct {
		flag uint16
		p    Properties
		wire string // hex after the flags word
	}{
		{FlagContentType, Properties{ContentType: "application/json"}, "10 6170706c69636174696f6e2f6a736f6e"},
		{FlagContentEncoding, Properties{ContentEncoding: "utf-8"}, "05 7574662d38"},
		{FlagHeaders, Properties{Headers: Table{"compression": "application/x-gzip"}},
			"00000023 0b 636f6d7072657373696f6e 53 00000012 6170706c69636174696f6e2f782d677a6970"},
		{FlagDeliveryMode, Properties{DeliveryMode: 2}, "02"},
		{FlagPriority, Properties{Priority: 9}, "09"},
		{FlagCorrelationID, Properties{CorrelationID: "c"}, "01 63"},
		{FlagReplyTo, Properties{ReplyTo: "r"}, "01 72"},
		{FlagExpiration, Properties{Expiration: "60000"}, "05 3630303030"},
		{FlagMessageID, Properties{MessageID: "m"}, "01 6d"},
		{FlagTimestamp, Properties{Timestamp: ts}, "000000006553f100"},
		{FlagType, Properties{Type: "t"}, "01 74"},
		{FlagUserID, Properties{UserID: "guest"}, "05 6775657374"},
		{FlagAppID, Properties{AppID: "a"}, "01 61"},
		{FlagClusterID, Properties{ClusterID: "k"}, "01 6b"},
	}
	for _, c := range cases {
		b, err := c.p.Append(nil)
		if err != nil {
			t.Fatal(err)
		}
		want := append([]byte{byte(c.flag >> 8), byte(c.flag)}, mustHex(c.wire)...)
		if !bytes.Equal(b, want) {
			t.Errorf("flag %#04x:\n got %x\nwant %x", c.flag, b, want)
		}
		got := propsRoundTrip(t, &c.p)
		c.p.Flags = c.flag
		if !reflect.DeepEqual(got, c.p) {
			t.Errorf("flag %#04x: decoded %+v", c.flag, got)
		}
		if !got.Has(c.flag) {
			t.Errorf("flag %#04x: Has false", c.flag)
		}
	}
}

func TestPropertiesAllAndZeroValues(t *testing.T) {
	all := Properties{
		ContentType: "application/json", ContentEncoding: "utf-8", Headers: richTable,
		DeliveryMode: 2, Priority: 5, CorrelationID: "corr", ReplyTo: "reply_q", Expiration: "60000",
		MessageID: "id", Timestamp: time.Unix(1, 0).UTC(), Type: "type", UserID: "guest", AppID: "app", ClusterID: "c",
	}
	got := propsRoundTrip(t, &all)
	if got.Flags != 0xfffc {
		t.Errorf("flags %#04x", got.Flags)
	}
	all.Flags = 0xfffc
	if !reflect.DeepEqual(got, all) {
		t.Errorf("got %+v", got)
	}

	// What kombu sends on every message (rpc-happy-path.log): an empty
	// headers table and priority 0 are present and must stay present.
	kombu := Properties{ContentType: "application/json", ContentEncoding: "utf-8", DeliveryMode: 2,
		Flags: FlagHeaders | FlagPriority}
	b, _ := kombu.Append(nil)
	want := mustHex("f800 10 6170706c69636174696f6e2f6a736f6e 05 7574662d38 00000000 02 00")
	if !bytes.Equal(b, want) {
		t.Errorf("kombu props:\n got %x\nwant %x", b, want)
	}
	got = propsRoundTrip(t, &kombu)
	if !got.Has(FlagHeaders) || !got.Has(FlagPriority) || got.Has(FlagExpiration) {
		t.Errorf("presence lost: %+v", got)
	}

	// py-amqp's integration test: only content_encoding, nothing added.
	only := Properties{ContentEncoding: "utf-8"}
	b, _ = only.Append(nil)
	if !bytes.Equal(b, mustHex("4000 05 7574662d38")) {
		t.Errorf("%x", b)
	}
	var none Properties
	if b, _ := none.Append(nil); !bytes.Equal(b, []byte{0, 0}) {
		t.Errorf("no properties: %x", b)
	}
}

func TestPropertiesContinuation(t *testing.T) {
	// Flags word with the continuation bit, followed by an empty word.
	b := mustHex("4001 0000 05 7574662d38")
	p, err := DecodeProperties(b)
	if err != nil || p.ContentEncoding != "utf-8" || p.Flags != FlagContentEncoding {
		t.Fatalf("%+v %v", p, err)
	}
	// Two continuation words.
	if _, err := DecodeProperties(mustHex("0001 0001 0000")); err != nil {
		t.Error(err)
	}
}

func TestPropertiesMustFail(t *testing.T) {
	bad := map[string]string{
		"empty":                     "",
		"one byte":                  "40",
		"truncated shortstr":        "8000 05 6162",
		"trailing byte":             "4000 01 61 ff",
		"unknown property bit 1":    "0002",
		"property beyond 14":        "0001 8000 01 61",
		"continuation truncated":    "0001",
		"headers length overrun":    "2000 00000009 00",
		"malformed headers":         "2000 00000003 01 6b 5a",
		"timestamp truncated":       "0040 0000",
		"delivery mode missing":     "1000",
		"continuation then junk":    "4001 00",
		"priority and nothing":      "0800",
		"cluster id length overrun": "0004 09 61",
	}
	for name, h := range bad {
		_, err := DecodeProperties(mustHex(h))
		checkErr(t, name, err, SyntaxError, 0, 0, true, "SYNTAX_ERROR - ")
	}
	_, err := ParseContentHeader(make([]byte, 11))
	checkErr(t, "short header", err, FrameError, 0, 0, true, "FRAME_ERROR - type 2")
	_, err = ParseContentHeader(append(make([]byte, 12), 0x00))
	checkErr(t, "header without full flags", err, SyntaxError, 0, 0, true, "SYNTAX_ERROR")
}
