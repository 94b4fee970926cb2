package amqp

import (
	"encoding/binary"
	"fmt"
)

// Sequence checks the order of frames on one channel: a content-carrying
// method (basic.publish) must be followed by exactly one content header of
// its class and then body frames adding up to the header's body size,
// with no other frame of that channel in between. It mirrors RabbitMQ's
// rabbit_command_assembler and returns its 505 UNEXPECTED_FRAME errors. It
// only looks at frames; it does not decode or buffer anything. The zero
// value expects a method frame. Keep one per open channel.
type Sequence struct {
	state     uint8 // seqMethod, seqHeader or seqBody
	classID   uint16
	methodID  uint16
	remaining uint64
}

const (
	seqMethod = iota
	seqHeader
	seqBody
)

// hasContent reports whether (classID, methodID) is a content-carrying
// method, without allocating.
func hasContent(classID, methodID uint16) bool {
	if classID != ClassBasic {
		return false
	}
	switch methodID {
	case MethodBasicPublish, MethodBasicReturn, MethodBasicDeliver, MethodBasicGetOk:
		return true
	}
	return false
}

// Frame checks f, a method, header or body frame of this channel as
// returned by ParseFrame, and advances. complete is true when f ends a
// command: a method without content, or the header (body size 0) or body
// frame that completes a content. Errors are *Error, connection-level as
// in RabbitMQ: 540 for an unknown method (checked first, as RabbitMQ looks
// the method up before checking the order), 505 UNEXPECTED_FRAME for a
// frame out of order, with the class and method id of the content method
// being assembled, if any.
func (s *Sequence) Frame(f Frame) (complete bool, err error) {
	switch s.state {
	case seqMethod:
		if f.Type != FrameMethod {
			return false, NewError(UnexpectedFrame, 0, 0, "expected method frame, got non method frame instead")
		}
		c, m, err := MethodIDs(f.Payload)
		if err != nil {
			return false, err
		}
		if MethodName(c, m) == "" {
			return false, UnknownMethodError(c, m)
		}
		if !hasContent(c, m) {
			return true, nil
		}
		s.state, s.classID, s.methodID = seqHeader, c, m
		return false, nil

	case seqHeader:
		if f.Type == FrameMethod {
			if c, m, err := MethodIDs(f.Payload); err == nil && MethodName(c, m) == "" {
				return false, UnknownMethodError(c, m)
			}
		}
		if f.Type != FrameHeader || len(f.Payload) < 12 || binary.BigEndian.Uint16(f.Payload[2:]) != 0 {
			return false, s.unexpected(fmt.Sprintf("expected content header for class %d, got non content header frame instead", s.classID))
		}
		if hc := binary.BigEndian.Uint16(f.Payload); hc != s.classID {
			return false, s.unexpected(fmt.Sprintf("expected content header for class %d, got one for class %d instead", s.classID, hc))
		}
		s.remaining = binary.BigEndian.Uint64(f.Payload[4:])
		if s.remaining == 0 {
			s.reset()
			return true, nil
		}
		s.state = seqBody
		return false, nil

	default: // seqBody
		if f.Type == FrameMethod {
			if c, m, err := MethodIDs(f.Payload); err == nil && MethodName(c, m) == "" {
				return false, UnknownMethodError(c, m)
			}
		}
		if f.Type != FrameBody {
			return false, s.unexpected("expected content body, got non content body frame instead")
		}
		if uint64(len(f.Payload)) > s.remaining {
			return false, s.unexpected(fmt.Sprintf("content body frame of %d bytes exceeds the %d bytes left of the declared body size", len(f.Payload), s.remaining))
		}
		s.remaining -= uint64(len(f.Payload))
		if s.remaining == 0 {
			s.reset()
			return true, nil
		}
		return false, nil
	}
}

// Remaining returns how many body bytes the content being assembled still
// needs (0 when no body is expected).
func (s *Sequence) Remaining() uint64 {
	if s.state == seqBody {
		return s.remaining
	}
	return 0
}

// InContent reports whether a content method has been seen and its header
// or body frames are still expected.
func (s *Sequence) InContent() bool { return s.state != seqMethod }

// Reset forgets any partial content, as when the channel closes.
func (s *Sequence) Reset() { s.reset() }

func (s *Sequence) reset() { *s = Sequence{} }

func (s *Sequence) unexpected(text string) *Error {
	return NewError(UnexpectedFrame, s.classID, s.methodID, "%s", text)
}
