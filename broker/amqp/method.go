package amqp

import (
	"encoding/binary"
	"fmt"
)

// Method is implemented by every generated method struct (*BasicPublish,
// *QueueDeclare, ...). The structs' fields are the spec's arguments,
// reserved ones (Ticket, Insist, OutOfBand, ...) included.
type Method interface {
	// ClassID and MethodID are the method's ids, e.g. 60 and 40 for
	// basic.publish.
	ClassID() uint16
	MethodID() uint16
	// Name is the spec name for logs, e.g. "basic.publish".
	Name() string
	// HasContent reports whether a content header and body frames follow
	// the method (basic.publish, basic.return, basic.deliver, basic.get-ok).
	HasContent() bool
	// Synchronous reports whether the spec expects a reply method.
	Synchronous() bool
	// AppendArgs appends the encoded arguments (no class or method id). The
	// only errors wrap ErrEncode; after one, discard the returned slice
	// (AppendMethod and AppendMethodFrame restore dst for you).
	AppendArgs(dst []byte) ([]byte, error)
	// DecodeArgs decodes the arguments (the method frame payload after the
	// 4 bytes of ids) into the receiver, overwriting every field. They
	// must fill args exactly. Errors are *Error; after one the receiver
	// holds partial values. Strings and tables are copies, so args may be
	// reused afterwards.
	DecodeArgs(args []byte) error
}

// MethodIDs returns the class and method id at the start of a method frame
// payload. Errors are *Error (501, as RabbitMQ's unknown_frame for a method
// frame shorter than 4 bytes).
func MethodIDs(payload []byte) (classID, methodID uint16, err error) {
	if len(payload) < 4 {
		return 0, 0, frameError(FrameMethod, payload, "unknown_frame")
	}
	return binary.BigEndian.Uint16(payload), binary.BigEndian.Uint16(payload[2:]), nil
}

// UnknownMethodError is the error for a class and method id the spec does
// not define: 540 NOT_IMPLEMENTED, connection-level, naming the ids.
//
// RabbitMQ 3.10 has no reply for this case: its reader exits with
// {unknown_method_id, {C,M}} and drops the TCP connection without a
// connection.close. 540 is the spec's code for "not implemented" and, like
// a dropped socket, makes clients give up on the connection.
func UnknownMethodError(classID, methodID uint16) *Error {
	return NewError(NotImplemented, classID, methodID, "unknown method {%d,%d}", classID, methodID)
}

// DecodeMethod decodes a method frame payload into a new method struct.
// Errors are *Error, all connection-level as in RabbitMQ:
//
//   - payload under 4 bytes: 501 FRAME_ERROR
//   - unknown class or method id: 540 NOT_IMPLEMENTED (UnknownMethodError)
//   - arguments too short, or trailing bytes after them: 501 FRAME_ERROR
//     "cannot decode <<...>>" with the method's class and method id, as
//     RabbitMQ's generated decoder raises
//   - a field table argument that is malformed inside a correct length:
//     502 SYNTAX_ERROR with the method's ids
//
// To avoid allocating the struct on a hot path, switch on MethodIDs and
// call DecodeArgs on a reused struct instead.
func DecodeMethod(payload []byte) (Method, error) {
	c, m, err := MethodIDs(payload)
	if err != nil {
		return nil, err
	}
	meth := NewMethod(c, m)
	if meth == nil {
		return nil, UnknownMethodError(c, m)
	}
	if err := meth.DecodeArgs(payload[4:]); err != nil {
		return nil, err
	}
	return meth, nil
}

// AppendMethod appends the method frame payload of m: class id, method id,
// arguments. On error it returns dst unchanged.
func AppendMethod(dst []byte, m Method) ([]byte, error) {
	start := len(dst)
	dst = binary.BigEndian.AppendUint16(dst, m.ClassID())
	dst = binary.BigEndian.AppendUint16(dst, m.MethodID())
	dst, err := m.AppendArgs(dst)
	if err != nil {
		return dst[:start], fmt.Errorf("%s: %w", m.Name(), err)
	}
	return dst, nil
}
