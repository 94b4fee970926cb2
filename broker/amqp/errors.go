package amqp

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Error is an AMQP protocol error: the data of the connection.close or
// channel.close the broker must send. Decoders in this package return
// *Error for every malformed input; a broker loop can build its own with
// NewError. Use errors.As to get at it.
type Error struct {
	// Code is the reply code, e.g. NotFound (404) or FrameError (501).
	Code uint16
	// Text is the reply text, RabbitMQ style: the code's name, " - ", then
	// an explanation, at most 255 bytes (e.g. "NOT_FOUND - no queue 'q' in
	// vhost '/'").
	Text string
	// ClassID and MethodID name the method that caused the error, or are 0
	// when no method did (frame errors).
	ClassID  uint16
	MethodID uint16
	// Connection is true when the error closes the whole connection
	// (connection.close on channel 0) and false when it closes only the
	// channel (channel.close).
	Connection bool
}

// maxShortstr is the longest shortstr (reply texts included).
const maxShortstr = 255

// NewError returns an *Error for code with a RabbitMQ-style reply text
// "NAME - explanation", where the explanation is fmt.Sprintf(format,
// args...). Connection is set from IsHardError(code): soft errors (311-313,
// 403-406) close the channel, all others the connection. Texts longer than
// 255 bytes are cut to 252 bytes plus "...", as RabbitMQ does.
func NewError(code, classID, methodID uint16, format string, args ...any) *Error {
	expl := format
	if len(args) > 0 {
		expl = fmt.Sprintf(format, args...)
	}
	return &Error{
		Code:       code,
		Text:       replyTextFor(code, expl),
		ClassID:    classID,
		MethodID:   methodID,
		Connection: IsHardError(code),
	}
}

func replyTextFor(code uint16, expl string) string {
	name := ReplyName(code)
	if name == "" {
		name = strconv.Itoa(int(code))
	}
	t := name
	if expl != "" {
		t = name + " - " + expl
	}
	if len(t) > maxShortstr {
		t = t[:maxShortstr-3] + "..."
	}
	return t
}

// Error implements error: "amqp: <text> (code 404, class 50, method 10)".
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("amqp: ")
	b.WriteString(e.Text)
	fmt.Fprintf(&b, " (code %d", e.Code)
	if e.ClassID != 0 || e.MethodID != 0 {
		fmt.Fprintf(&b, ", %s %d/%d", methodLabel(e.ClassID, e.MethodID), e.ClassID, e.MethodID)
	}
	if e.Connection {
		b.WriteString(", connection")
	} else {
		b.WriteString(", channel")
	}
	b.WriteString(")")
	return b.String()
}

func methodLabel(c, m uint16) string {
	if n := MethodName(c, m); n != "" {
		return n
	}
	return "method"
}

// CloseMethod returns the method that reports e to the peer: a
// *ConnectionClose (send it on channel 0) when e.Connection is set, a
// *ChannelClose (send it on the failing channel) otherwise.
func (e *Error) CloseMethod() Method {
	if e.Connection {
		return &ConnectionClose{ReplyCode: e.Code, ReplyText: e.Text, CauseClassID: e.ClassID, CauseMethodID: e.MethodID}
	}
	return &ChannelClose{ReplyCode: e.Code, ReplyText: e.Text, CauseClassID: e.ClassID, CauseMethodID: e.MethodID}
}

// Sentinel errors. They are not protocol errors and are never *Error.
var (
	// ErrIncomplete means the input holds only part of a frame or protocol
	// header: read more bytes and call again with the longer input.
	ErrIncomplete = errors.New("amqp: incomplete frame, need more bytes")

	// ErrIdle is what a FrameReader's reader returns when it has nothing
	// to read and its caller should stop reading for now (a broker
	// parking an idle connection's reader). The FrameReader passes it up
	// from ReadFrame without keeping it: a later call reads again.
	ErrIdle = errors.New("amqp: no input yet")

	// ErrProtocolHeader means the peer did not open with an AMQP 0-9-1
	// protocol header. Per the spec, and as RabbitMQ does, answer with
	// ProtocolHeader and close the socket (no connection.close).
	ErrProtocolHeader = errors.New("amqp: bad protocol header")

	// ErrEncode wraps every encoding failure: a shortstr longer than 255
	// bytes, or a table value of a type that has no AMQP field type.
	ErrEncode = errors.New("amqp: cannot encode")
)

// erlBinary formats b the way Erlang's ~w prints a binary: <<1,2,3>>. At
// most limit bytes are shown, then ",...". With limit 128 the text always
// exceeds 255 bytes before the limit matters, so after replyTextFor cuts it
// the reply text is the same as RabbitMQ's, which prints every byte.
func erlBinary(b []byte, limit int) string {
	var s strings.Builder
	s.WriteString("<<")
	for i, c := range b {
		if i == limit {
			s.WriteString(",...")
			break
		}
		if i > 0 {
			s.WriteByte(',')
		}
		s.WriteString(strconv.Itoa(int(c)))
	}
	s.WriteString(">>")
	return s.String()
}

// erlPrintBinary formats b the way Erlang's ~p prints a short binary:
// <<"text">> when every byte is printable Latin-1, else <<1,2,3>>.
func erlPrintBinary(b []byte) string {
	if len(b) == 0 {
		return "<<>>"
	}
	var s strings.Builder
	s.WriteString(`<<"`)
	for _, c := range b {
		switch {
		case c == '"' || c == '\\':
			s.WriteByte('\\')
			s.WriteByte(c)
		case c == '\n':
			s.WriteString(`\n`)
		case c == '\r':
			s.WriteString(`\r`)
		case c == '\t':
			s.WriteString(`\t`)
		case c == '\v':
			s.WriteString(`\v`)
		case c == '\b':
			s.WriteString(`\b`)
		case c == '\f':
			s.WriteString(`\f`)
		case c == 0x1b:
			s.WriteString(`\e`)
		case c >= 32 && c <= 126 || c >= 160:
			s.WriteByte(c)
		default:
			return erlBinary(b, len(b))
		}
	}
	s.WriteString(`">>`)
	return s.String()
}

// payloadSnippet mirrors rabbit_reader:payload_snippet/1.
func payloadSnippet(p []byte) string {
	if len(p) <= 16 {
		return "all octets = " + erlPrintBinary(p)
	}
	return "first 16 octets = " + erlPrintBinary(p[:16])
}

// frameError is rabbit_reader:frame_error/5: 501, connection, class/method 0.
func frameError(typ uint8, payload []byte, reason string) *Error {
	return NewError(FrameError, 0, 0, "type %d, %s: %s", typ, payloadSnippet(payload), reason)
}

// cannotDecode is rabbit_misc:frame_error/2, raised by RabbitMQ's generated
// decode_method_fields/2 when the arguments do not match the method's
// layout exactly (too short or trailing bytes): 501 with the method's ids.
func cannotDecode(classID, methodID uint16, args []byte) *Error {
	return NewError(FrameError, classID, methodID, "cannot decode %s", erlBinary(args, 128))
}
