// Package amqp is the AMQP 0-9-1 wire codec of substrate's broker: frames,
// method structs, field tables and content header properties, with
// RabbitMQ's extensions (publisher confirms, basic.nack, exchange.bind,
// connection.blocked, update-secret). It is pure: no network, no
// goroutines, no broker state. Parsers take bytes and return values or
// errors; encoders append to a caller's []byte.
//
// The method structs (ConnectionStart, BasicPublish, QueueDeclare, ...),
// class and method ids, reply-code constants and the per-method encoders
// and decoders in spec_gen.go are generated from RabbitMQ's
// amqp-rabbitmq-0.9.1.json, a copy of which lives in internal/gen. To
// regenerate, from the repository root:
//
//	go generate ./broker/amqp
//
// # Reading
//
// A connection loop checks the protocol header (ParseProtocolHeader), then
// takes frames with ParseFrame (on a byte slice, returning ErrIncomplete
// until a whole frame is there) or FrameReader (on an io.Reader). A
// Sequence per channel checks that content methods are followed by their
// header and body frames. DecodeMethod turns a method frame's payload into
// a Method; ParseContentHeader decodes a header frame.
//
// On the hot path, switch on MethodIDs and call DecodeArgs on a reused
// struct: decoding basic.publish then allocates only its two strings, and
// a kombu content header decodes without allocating.
//
// # Writing
//
// AppendMethodFrame, AppendHeaderFrame (or AppendHeaderFrameRaw, to forward
// a publisher's properties byte for byte), AppendBodyFrames (split so each
// frame is at most frame_max bytes; nothing for an empty body) and
// AppendHeartbeat append complete frames, so a connection writer can
// coalesce many frames into one write. Encoding fails only for a shortstr
// over 255 bytes or a table value with no AMQP type (ErrEncode).
//
// # Errors
//
// Every decoding error is an *Error holding the reply code, RabbitMQ-style
// reply text, the class and method id of the offending method, and whether
// it closes the connection or only the channel; (*Error).CloseMethod
// builds the connection.close or channel.close to send. The codes follow
// RabbitMQ 3.10 (rabbit_reader.erl, rabbit_command_assembler.erl and the
// generated rabbit_framing_amqp_0_9_1.erl):
//
//	payload over frame_max (8 bytes of slack)   501 FRAME_ERROR  {frame_too_large,Size,Max}
//	frame-end octet not 0xCE                    501 FRAME_ERROR  {invalid_frame_end_marker,N}
//	unknown frame type, short method/header     501 FRAME_ERROR  unknown_frame
//	heartbeat on a channel other than 0         505 UNEXPECTED_FRAME
//	method arguments too short or too long      501 FRAME_ERROR  "cannot decode <<...>>", method's ids
//	field table malformed inside its length     502 SYNTAX_ERROR, method's ids (*)
//	malformed content properties                502 SYNTAX_ERROR (*)
//	unknown class or method id                  540 NOT_IMPLEMENTED, the unknown ids (*)
//	frame out of order on a channel (Sequence)  505 UNEXPECTED_FRAME
//
// All of these close the connection. (*) RabbitMQ 3.10 has no reply code
// of its own here: its decoder crashes instead (for an unknown method id
// the reader exits with {unknown_method_id,{C,M}} and drops the TCP
// connection without a connection.close). The codes above are the spec's.
//
// A bad protocol header is not an *Error: the server answers with
// ProtocolHeader and closes the socket (ErrProtocolHeader).
//
// # Field tables
//
// Table decodes every type letter RabbitMQ and py-amqp use (l and L both as
// int64) and encodes only letters both agree on, never s, b or B.
package amqp

//go:generate go run ./internal/gen -spec internal/gen/amqp-rabbitmq-0.9.1.json -out spec_gen.go
