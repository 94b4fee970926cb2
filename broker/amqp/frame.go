package amqp

import (
	"encoding/binary"
	"fmt"
	"io"
	"sync"
)

// ProtocolHeader is the 8-byte header an AMQP 0-9-1 client sends first, and
// what a server answers (before closing) to a header it does not accept.
const ProtocolHeader = "AMQP\x00\x00\x09\x01"

// FrameOverhead is the size of a frame without payload: type (1), channel
// (2), payload size (4) and the frame-end octet (1). frame_max counts it,
// so a frame's payload is at most frame_max-8 bytes.
const FrameOverhead = 8

// frameHeaderSize is the part of FrameOverhead before the payload.
const frameHeaderSize = 7

// frameSizeFudge is how far RabbitMQ lets a peer exceed frame_max before it
// fails the connection ("quite a few get it wrong - off-by 1 or 8",
// rabbit_reader.erl): a payload is refused only beyond frame_max bytes.
const frameSizeFudge = FrameOverhead

// Frame is one AMQP frame. Payload aliases the buffer it was parsed from.
type Frame struct {
	Type    uint8 // FrameMethod, FrameHeader, FrameBody or FrameHeartbeat
	Channel uint16
	Payload []byte
}

// ParseProtocolHeader checks the protocol header at the start of buf and
// returns the number of bytes it used (8). It returns ErrIncomplete while
// fewer than 8 bytes are available, and an error wrapping
// ErrProtocolHeader for anything but AMQP 0-9-1. Like RabbitMQ it also
// accepts "AMQP\x01\x01\x00\x09" (the 0-9 header) as 0-9-1.
func ParseProtocolHeader(buf []byte) (int, error) {
	if len(buf) < len(ProtocolHeader) {
		return 0, ErrIncomplete
	}
	h := string(buf[:8])
	if h == ProtocolHeader || h == "AMQP\x01\x01\x00\x09" {
		return 8, nil
	}
	return 0, fmt.Errorf("%w: %q", ErrProtocolHeader, h)
}

// ParseFrame parses the frame at the start of buf and returns it with the
// number of bytes it used. frameMax is the negotiated frame_max (whole
// frame, overhead included); 0 means no limit. Before connection.tune-ok
// RabbitMQ uses 4096 (FrameMinSize).
//
// ErrIncomplete means buf holds only the start of a frame: append more
// bytes and call again. The payload size is checked as soon as the 7-byte
// frame header is there, so an oversized frame fails without being
// buffered. Every other error is an *Error for connection.close, with
// RabbitMQ's code and text:
//
//   - payload over frameMax (RabbitMQ allows 8 bytes of slack): 501
//   - frame-end octet not 0xCE: 501
//   - unknown frame type, a method frame under 4 bytes, a header frame under
//     12 bytes or a heartbeat with payload: 501 (RabbitMQ's unknown_frame)
//   - a heartbeat on a channel other than 0: 505 UNEXPECTED_FRAME
//
// After an error the stream is out of sync: send the close and stop
// reading.
func ParseFrame(buf []byte, frameMax uint32) (Frame, int, error) {
	if len(buf) < frameHeaderSize {
		return Frame{}, 0, ErrIncomplete
	}
	typ := buf[0]
	ch := binary.BigEndian.Uint16(buf[1:])
	size := binary.BigEndian.Uint32(buf[3:])
	if frameMax != 0 && uint64(size) > uint64(frameMax)-FrameOverhead+frameSizeFudge {
		return Frame{}, 0, frameError(typ, nil,
			fmt.Sprintf("{frame_too_large,%d,%d}", size, int64(frameMax)-FrameOverhead))
	}
	total := uint64(size) + FrameOverhead
	if uint64(len(buf)) < total {
		return Frame{}, 0, ErrIncomplete
	}
	n := int(total)
	payload := buf[frameHeaderSize : n-1 : n-1]
	if end := buf[n-1]; end != FrameEnd {
		return Frame{}, 0, frameError(typ, payload, fmt.Sprintf("{invalid_frame_end_marker,%d}", end))
	}
	switch typ {
	case FrameMethod:
		if len(payload) < 4 {
			return Frame{}, 0, frameError(typ, payload, "unknown_frame")
		}
	case FrameHeader:
		if len(payload) < 12 {
			return Frame{}, 0, frameError(typ, payload, "unknown_frame")
		}
	case FrameBody:
	case FrameHeartbeat:
		if len(payload) != 0 {
			return Frame{}, 0, frameError(typ, payload, "unknown_frame")
		}
		if ch != 0 {
			return Frame{}, 0, NewError(UnexpectedFrame, 0, 0, "type %d, %s", typ, payloadSnippet(payload))
		}
	default:
		return Frame{}, 0, frameError(typ, payload, "unknown_frame")
	}
	return Frame{Type: typ, Channel: ch, Payload: payload}, n, nil
}

// AppendHeartbeat appends a heartbeat frame (08 0000 00000000 CE).
func AppendHeartbeat(dst []byte) []byte {
	return append(dst, FrameHeartbeat, 0, 0, 0, 0, 0, 0, FrameEnd)
}

// AppendFrame appends a frame with the given type, channel and payload.
func AppendFrame(dst []byte, typ uint8, ch uint16, payload []byte) []byte {
	dst = append(dst, typ, byte(ch>>8), byte(ch))
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(payload)))
	dst = append(dst, payload...)
	return append(dst, FrameEnd)
}

// AppendMethodFrame appends m as a method frame on channel ch. On error
// (see ErrEncode) it returns dst unchanged.
func AppendMethodFrame(dst []byte, ch uint16, m Method) ([]byte, error) {
	start := len(dst)
	dst = append(dst, FrameMethod, byte(ch>>8), byte(ch), 0, 0, 0, 0)
	dst, err := AppendMethod(dst, m)
	if err != nil {
		return dst[:start], err
	}
	binary.BigEndian.PutUint32(dst[start+3:], uint32(len(dst)-start-frameHeaderSize))
	return append(dst, FrameEnd), nil
}

// AppendHeaderFrame appends a content header frame on channel ch for a body
// of bodySize bytes, with weight 0 and properties p (nil means none). On
// error (an unencodable header table or a shortstr over 255 bytes) it
// returns dst unchanged.
func AppendHeaderFrame(dst []byte, ch, classID uint16, bodySize uint64, p *Properties) ([]byte, error) {
	start := len(dst)
	dst = append(dst, FrameHeader, byte(ch>>8), byte(ch), 0, 0, 0, 0)
	dst = binary.BigEndian.AppendUint16(dst, classID)
	dst = binary.BigEndian.AppendUint16(dst, 0)
	dst = binary.BigEndian.AppendUint64(dst, bodySize)
	if p == nil {
		dst = append(dst, 0, 0)
	} else {
		var err error
		if dst, err = p.Append(dst); err != nil {
			return dst[:start], err
		}
	}
	binary.BigEndian.PutUint32(dst[start+3:], uint32(len(dst)-start-frameHeaderSize))
	return append(dst, FrameEnd), nil
}

// AppendHeaderFrameRaw appends a content header frame whose property flags
// and values are already encoded (ContentHeader.RawProperties), so a broker
// can forward a publisher's properties byte for byte.
func AppendHeaderFrameRaw(dst []byte, ch, classID uint16, bodySize uint64, rawProperties []byte) []byte {
	dst = append(dst, FrameHeader, byte(ch>>8), byte(ch))
	dst = binary.BigEndian.AppendUint32(dst, uint32(12+len(rawProperties)))
	dst = binary.BigEndian.AppendUint16(dst, classID)
	dst = binary.BigEndian.AppendUint16(dst, 0)
	dst = binary.BigEndian.AppendUint64(dst, bodySize)
	dst = append(dst, rawProperties...)
	return append(dst, FrameEnd)
}

// AppendBodyFrames appends body as body frames on channel ch, each frame at
// most frameMax bytes long including its 8 bytes of overhead (0: one frame;
// a frameMax of 8 or less, which leaves no room for payload, counts as
// FrameMinSize).
// An empty body appends nothing: a zero-size content is a header frame with
// body size 0 and no body frame, which is what py-amqp expects.
func AppendBodyFrames(dst []byte, ch uint16, body []byte, frameMax uint32) []byte {
	chunk := len(body)
	if frameMax != 0 {
		if frameMax <= FrameOverhead {
			frameMax = FrameMinSize
		}
		chunk = int(frameMax - FrameOverhead)
	}
	for len(body) > 0 {
		n := min(chunk, len(body))
		dst = AppendFrame(dst, FrameBody, ch, body[:n])
		body = body[n:]
	}
	return dst
}

// FrameReader reads frames from an io.Reader (a net.Conn, a bufio.Reader,
// a pipe) through its own buffer. It does not own the reader. It is not
// safe for concurrent use.
//
// A reader that waits for input waits on a small buffer of its own
// (idleBufSize), which holds the frames an idle or lightly used
// connection gets (heartbeats, acks, short methods): thousands of idle
// readers cost little. A frame that does not fit, or input that fills the
// small buffer (more is probably waiting), moves the reader to a large
// buffer from a pool shared by all readers (bigBufSize; a frame larger
// than that gets a buffer of its own), kept while reads keep filling it
// and given back once everything read has been parsed.
type FrameReader struct {
	r        io.Reader
	buf      []byte // small, big, or a larger one of its own
	small    []byte // the reader's own idleBufSize buffer
	big      *[]byte
	start    int  // first unparsed byte
	end      int  // end of buffered data
	full     bool // the last read filled buf: more input is probably waiting
	frameMax uint32
	err      error
}

const (
	// idleBufSize: a heartbeat is 8 bytes, a basic.ack 21, a
	// connection.start-ok with a client's properties a few hundred.
	idleBufSize = 512
	// bigBufSize is the pooled buffer a busy reader reads into: a few
	// 1 KB messages per read (the buffer RabbitMQ's reader asks the
	// socket for is about this size too).
	bigBufSize = 32 << 10
)

var bigBufs = sync.Pool{New: func() any { b := make([]byte, bigBufSize); return &b }}

// NewFrameReader returns a FrameReader on r with frame_max 4096
// (FrameMinSize), RabbitMQ's limit until connection.tune-ok.
func NewFrameReader(r io.Reader) *FrameReader {
	small := make([]byte, idleBufSize)
	return &FrameReader{r: r, buf: small, small: small, frameMax: FrameMinSize}
}

// SetFrameMax sets the largest frame ReadFrame accepts, as negotiated by
// connection.tune-ok. 0 means no limit, which lets a peer make the reader
// buffer up to 4 GiB; a broker should always negotiate a limit.
func (fr *FrameReader) SetFrameMax(frameMax uint32) { fr.frameMax = frameMax }

// Buffered returns the bytes read from the underlying reader but not yet
// parsed.
func (fr *FrameReader) Buffered() int { return fr.end - fr.start }

// ReadProtocolHeader reads and checks the 8-byte protocol header (see
// ParseProtocolHeader). Call it once, before the first ReadFrame.
func (fr *FrameReader) ReadProtocolHeader() error {
	for {
		n, err := ParseProtocolHeader(fr.buf[fr.start:fr.end])
		if err == nil {
			fr.start += n
			return nil
		}
		if err != ErrIncomplete {
			return err
		}
		if err := fr.fill(len(ProtocolHeader)); err != nil {
			return err
		}
	}
}

// ReadFrame returns the next frame. The payload is valid only until the
// next call. Errors are those of ParseFrame (an *Error the peer should be
// told about) or of the underlying reader (io.EOF when it ends between
// frames, io.ErrUnexpectedEOF when it ends inside one).
func (fr *FrameReader) ReadFrame() (Frame, error) {
	for {
		f, n, err := ParseFrame(fr.buf[fr.start:fr.end], fr.frameMax)
		if err == nil {
			fr.start += n
			return f, nil
		}
		if err != ErrIncomplete {
			return Frame{}, err
		}
		need := frameHeaderSize
		if fr.end-fr.start >= frameHeaderSize {
			need = int(binary.BigEndian.Uint32(fr.buf[fr.start+3:])) + FrameOverhead
		}
		if err := fr.fill(need); err != nil {
			return Frame{}, err
		}
	}
}

// fill reads at least once, making room for a frame of need bytes.
func (fr *FrameReader) fill(need int) error {
	if fr.err != nil {
		return fr.readErr()
	}
	if fr.start == fr.end {
		fr.start, fr.end = 0, 0
		if !fr.full {
			fr.setBuf(fr.small) // all parsed and nothing more waiting
		}
	}
	if len(fr.buf)-fr.start < need || fr.full && len(fr.buf) == idleBufSize {
		if need > len(fr.buf) || fr.full && len(fr.buf) == idleBufSize {
			fr.grow(need)
		} else {
			fr.end = copy(fr.buf, fr.buf[fr.start:fr.end])
			fr.start = 0
		}
	}
	for {
		n, err := fr.r.Read(fr.buf[fr.end:])
		fr.end += n
		// A buffer of a large frame's own is not kept for what may follow.
		fr.full = fr.end == len(fr.buf) && len(fr.buf) <= bigBufSize
		if err == ErrIdle && n == 0 {
			return err
		}
		if err != nil {
			fr.err = err
			if n > 0 {
				return nil
			}
			return fr.readErr()
		}
		if n > 0 {
			return nil
		}
	}
}

// Release gives the pooled buffer back when nothing read is left to
// parse (a reader about to wait a long time for its next input); the
// next read goes to the reader's own small buffer.
func (fr *FrameReader) Release() {
	if fr.start == fr.end {
		fr.start, fr.end, fr.full = 0, 0, false
		fr.setBuf(fr.small)
	}
}

// grow moves the unparsed bytes to a buffer of at least need bytes, and
// at least the pooled size.
func (fr *FrameReader) grow(need int) {
	var nb []byte
	var big *[]byte
	if size := max(need, 2*len(fr.buf)); size <= bigBufSize {
		big = bigBufs.Get().(*[]byte)
		nb = *big
	} else {
		nb = make([]byte, size)
	}
	fr.end = copy(nb, fr.buf[fr.start:fr.end])
	fr.start = 0
	fr.setBuf(nb)
	fr.big = big
}

// setBuf makes b the buffer (its contents already copied), giving a
// pooled buffer back.
func (fr *FrameReader) setBuf(b []byte) {
	if fr.big != nil {
		bigBufs.Put(fr.big)
		fr.big = nil
	}
	fr.buf = b
}

// readErr is the stored read error, with io.EOF turned into
// io.ErrUnexpectedEOF when it cut a frame short.
func (fr *FrameReader) readErr() error {
	if fr.err == io.EOF && fr.end > fr.start {
		return io.ErrUnexpectedEOF
	}
	return fr.err
}
