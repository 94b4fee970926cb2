package amqp

import (
	"encoding/binary"
	"time"
)

// Property flag bits of the basic class, in the content header's
// property-flags word. Bit 0 of each flags word is the continuation bit.
const (
	FlagContentType     uint16 = 1 << 15 // content-type present
	FlagContentEncoding uint16 = 1 << 14 // content-encoding present
	FlagHeaders         uint16 = 1 << 13 // headers present
	FlagDeliveryMode    uint16 = 1 << 12 // delivery-mode present
	FlagPriority        uint16 = 1 << 11 // priority present
	FlagCorrelationID   uint16 = 1 << 10 // correlation-id present
	FlagReplyTo         uint16 = 1 << 9  // reply-to present
	FlagExpiration      uint16 = 1 << 8  // expiration present
	FlagMessageID       uint16 = 1 << 7  // message-id present
	FlagTimestamp       uint16 = 1 << 6  // timestamp present
	FlagType            uint16 = 1 << 5  // type present
	FlagUserID          uint16 = 1 << 4  // user-id present
	FlagAppID           uint16 = 1 << 3  // app-id present
	FlagClusterID       uint16 = 1 << 2  // cluster-id present
)

// Properties are the 14 basic-class content properties.
//
// A property is sent when its bit is set in Flags or its value is not the
// zero value. Decoding sets Flags to exactly the properties received, so
// a received header re-encodes unchanged, present zero values included
// (kombu sends priority 0 and an empty headers table, and clients compare
// what they get back).
type Properties struct {
	Flags           uint16    // presence bits (FlagContentType, ...)
	ContentType     string    // content-type, e.g. "application/json"
	ContentEncoding string    // content-encoding, e.g. "utf-8"
	Headers         Table     // headers (application headers)
	DeliveryMode    uint8     // delivery-mode: 1 transient, 2 persistent
	Priority        uint8     // priority, 0-9
	CorrelationID   string    // correlation-id
	ReplyTo         string    // reply-to
	Expiration      string    // expiration: per-message TTL in ms, as a decimal string
	MessageID       string    // message-id
	Timestamp       time.Time // timestamp (whole seconds; decoded in UTC)
	Type            string    // type
	UserID          string    // user-id
	AppID           string    // app-id
	ClusterID       string    // cluster-id (deprecated)
}

// Has reports whether the property with flag bit f is present.
func (p *Properties) Has(f uint16) bool { return p.present()&f != 0 }

// present returns Flags plus the bits of non-zero values.
func (p *Properties) present() uint16 {
	f := p.Flags &^ 1
	set := func(bit uint16, ok bool) {
		if ok {
			f |= bit
		}
	}
	set(FlagContentType, p.ContentType != "")
	set(FlagContentEncoding, p.ContentEncoding != "")
	set(FlagHeaders, p.Headers != nil)
	set(FlagDeliveryMode, p.DeliveryMode != 0)
	set(FlagPriority, p.Priority != 0)
	set(FlagCorrelationID, p.CorrelationID != "")
	set(FlagReplyTo, p.ReplyTo != "")
	set(FlagExpiration, p.Expiration != "")
	set(FlagMessageID, p.MessageID != "")
	set(FlagTimestamp, !p.Timestamp.IsZero())
	set(FlagType, p.Type != "")
	set(FlagUserID, p.UserID != "")
	set(FlagAppID, p.AppID != "")
	set(FlagClusterID, p.ClusterID != "")
	return f & 0xfffc
}

// Append appends the property flags and the present properties, in wire
// order. On error (see ErrEncode) it returns dst unchanged.
func (p *Properties) Append(dst []byte) ([]byte, error) {
	f := p.present()
	e := encoder{buf: binary.BigEndian.AppendUint16(dst, f)}
	if f&FlagContentType != 0 {
		e.shortstr(p.ContentType)
	}
	if f&FlagContentEncoding != 0 {
		e.shortstr(p.ContentEncoding)
	}
	if f&FlagHeaders != 0 {
		e.table(p.Headers)
	}
	if f&FlagDeliveryMode != 0 {
		e.octet(p.DeliveryMode)
	}
	if f&FlagPriority != 0 {
		e.octet(p.Priority)
	}
	if f&FlagCorrelationID != 0 {
		e.shortstr(p.CorrelationID)
	}
	if f&FlagReplyTo != 0 {
		e.shortstr(p.ReplyTo)
	}
	if f&FlagExpiration != 0 {
		e.shortstr(p.Expiration)
	}
	if f&FlagMessageID != 0 {
		e.shortstr(p.MessageID)
	}
	if f&FlagTimestamp != 0 {
		e.timestamp(uint64(p.Timestamp.Unix()))
	}
	if f&FlagType != 0 {
		e.shortstr(p.Type)
	}
	if f&FlagUserID != 0 {
		e.shortstr(p.UserID)
	}
	if f&FlagAppID != 0 {
		e.shortstr(p.AppID)
	}
	if f&FlagClusterID != 0 {
		e.shortstr(p.ClusterID)
	}
	if e.err != nil {
		return dst, e.err
	}
	return e.buf, nil
}

// DecodeProperties decodes property flags and values filling all of b (the
// header frame payload after its first 12 bytes). Flag words with the
// continuation bit set are followed by more flag words; the basic class
// defines only 14 properties, so later words must be all zero. Errors are
// *Error: 502 SYNTAX_ERROR, connection-level. (RabbitMQ decodes properties
// lazily and fails on malformed ones without a reply code of its own.)
func DecodeProperties(b []byte) (Properties, error) {
	var p Properties
	d := decoder{buf: b}
	f := d.short()
	for more := f&1 != 0; more && !d.trunc; {
		next := d.short()
		if next&^1 != 0 {
			return Properties{}, NewError(SyntaxError, 0, 0, "unknown content properties (flags word %#04x)", next)
		}
		more = next&1 != 0
	}
	f &^= 1
	if f&3 != 0 {
		return Properties{}, NewError(SyntaxError, 0, 0, "unknown content properties (flags %#04x)", f)
	}
	p.Flags = f
	if f&FlagContentType != 0 {
		p.ContentType = d.internShortstr()
	}
	if f&FlagContentEncoding != 0 {
		p.ContentEncoding = d.internShortstr()
	}
	if f&FlagHeaders != 0 {
		p.Headers = d.table()
	}
	if f&FlagDeliveryMode != 0 {
		p.DeliveryMode = d.octet()
	}
	if f&FlagPriority != 0 {
		p.Priority = d.octet()
	}
	if f&FlagCorrelationID != 0 {
		p.CorrelationID = d.shortstr()
	}
	if f&FlagReplyTo != 0 {
		p.ReplyTo = d.shortstr()
	}
	if f&FlagExpiration != 0 {
		p.Expiration = d.internShortstr()
	}
	if f&FlagMessageID != 0 {
		p.MessageID = d.shortstr()
	}
	if f&FlagTimestamp != 0 {
		p.Timestamp = time.Unix(int64(d.timestamp()), 0).UTC()
	}
	if f&FlagType != 0 {
		p.Type = d.shortstr()
	}
	if f&FlagUserID != 0 {
		p.UserID = d.shortstr()
	}
	if f&FlagAppID != 0 {
		p.AppID = d.shortstr()
	}
	if f&FlagClusterID != 0 {
		p.ClusterID = d.shortstr()
	}
	if d.trunc || d.off != len(b) {
		return Properties{}, NewError(SyntaxError, 0, 0, "cannot decode content properties %s", erlBinary(b, 128))
	}
	if d.tableErr != nil {
		return Properties{}, NewError(SyntaxError, 0, 0, "content headers: %s", d.tableErr.Error())
	}
	return p, nil
}

// internShortstr reads a shortstr, returning a constant string without
// allocating for the values OpenStack sends on every message.
func (d *decoder) internShortstr() string {
	n := int(d.octet())
	b := d.bytesN(n)
	switch string(b) {
	case "application/json":
		return "application/json"
	case "utf-8":
		return "utf-8"
	case "60000":
		return "60000"
	}
	return string(b)
}

// ContentHeader is a decoded content header frame.
type ContentHeader struct {
	ClassID  uint16 // must be the class of the method it follows (60)
	Weight   uint16 // must be 0
	BodySize uint64 // total size of the body frames that follow
	// Properties holds the decoded properties.
	Properties Properties
	// RawProperties aliases the flags and property bytes of the payload,
	// for AppendHeaderFrameRaw.
	RawProperties []byte
}

// ParseContentHeader decodes a header frame payload. Errors are *Error: a
// payload under 12 bytes is 501 FRAME_ERROR (RabbitMQ's unknown_frame),
// malformed properties are 502 SYNTAX_ERROR. Checking ClassID and Weight
// against the method being assembled is left to the caller (RabbitMQ: 505
// UNEXPECTED_FRAME).
func ParseContentHeader(payload []byte) (ContentHeader, error) {
	if len(payload) < 12 {
		return ContentHeader{}, frameError(FrameHeader, payload, "unknown_frame")
	}
	h := ContentHeader{
		ClassID:       binary.BigEndian.Uint16(payload),
		Weight:        binary.BigEndian.Uint16(payload[2:]),
		BodySize:      binary.BigEndian.Uint64(payload[4:]),
		RawProperties: payload[12:len(payload):len(payload)],
	}
	p, err := DecodeProperties(h.RawProperties)
	if err != nil {
		return ContentHeader{}, err
	}
	h.Properties = p
	return h, nil
}
