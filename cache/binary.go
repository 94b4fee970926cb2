package cache

import "encoding/binary"

// The binary protocol (deprecated by memcached 1.6.0, still served by
// 1.6.18) as memcached's proto_bin.c implements it. Only the subset
// python-binary-memcached and other SASL clients use is recognised; other
// opcodes answer "Unknown command" exactly as memcached does.

// Binary protocol magic bytes and header size.
const (
	BinRequestMagic  = 0x80
	BinResponseMagic = 0x81
	BinHeaderLen     = 24

	binMaxSASLMech = 32       // MAX_SASL_MECH_LEN
	binReadBuffer  = 16 << 10 // memcached READ_BUFFER_SIZE
	binNoCreate    = 0xffffffff
)

// Binary opcodes served (memcached protocol_binary.h).
const (
	BinGet           = 0x00
	BinSet           = 0x01
	BinAdd           = 0x02
	BinReplace       = 0x03
	BinDelete        = 0x04
	BinIncrement     = 0x05
	BinDecrement     = 0x06
	BinQuit          = 0x07
	BinFlush         = 0x08
	BinGetQ          = 0x09
	BinNoop          = 0x0a
	BinVersion       = 0x0b
	BinGetK          = 0x0c
	BinGetKQ         = 0x0d
	BinAppend        = 0x0e
	BinPrepend       = 0x0f
	BinStat          = 0x10
	BinSetQ          = 0x11
	BinAddQ          = 0x12
	BinReplaceQ      = 0x13
	BinDeleteQ       = 0x14
	BinIncrementQ    = 0x15
	BinDecrementQ    = 0x16
	BinQuitQ         = 0x17
	BinFlushQ        = 0x18
	BinAppendQ       = 0x19
	BinPrependQ      = 0x1a
	BinTouch         = 0x1c
	BinGAT           = 0x1d
	BinGATQ          = 0x1e
	BinSASLListMechs = 0x20
	BinSASLAuth      = 0x21
	BinSASLStep      = 0x22
	BinGATK          = 0x23
	BinGATKQ         = 0x24
)

// Binary response status codes.
const (
	BinStatusOK             = 0x00
	BinStatusKeyNotFound    = 0x01
	BinStatusKeyExists      = 0x02
	BinStatusTooLarge       = 0x03
	BinStatusInvalid        = 0x04
	BinStatusNotStored      = 0x05
	BinStatusNonNumeric     = 0x06
	BinStatusAuthError      = 0x20
	BinStatusAuthContinue   = 0x21
	BinStatusUnknownCommand = 0x81
	BinStatusOutOfMemory    = 0x82
)

// binStatusText is memcached's write_bin_error default text per status.
func binStatusText(status uint16) string {
	switch status {
	case BinStatusOutOfMemory:
		return "Out of memory"
	case BinStatusUnknownCommand:
		return "Unknown command"
	case BinStatusKeyNotFound:
		return "Not found"
	case BinStatusInvalid:
		return "Invalid arguments"
	case BinStatusKeyExists:
		return "Data exists for key."
	case BinStatusTooLarge:
		return "Too large."
	case BinStatusNonNumeric:
		return "Non-numeric server-side value for incr or decr"
	case BinStatusNotStored:
		return "Not stored."
	case BinStatusAuthError:
		return "Auth failure."
	}
	return ""
}

// BinaryRequest is one parsed binary request. Byte slices alias the buffer
// given to Parse; the request is reused by the next Parse call.
type BinaryRequest struct {
	Opcode  uint8  // as sent
	Cmd     uint8  // Opcode with quiet variants mapped to the loud one
	Quiet   bool   // a quiet variant: success replies (and get misses) are suppressed
	Key     []byte // key, or mechanism name for SASL, or stats group
	Extras  []byte
	Value   []byte // set/add/replace/append/prepend data, SASL data
	Opaque  uint32 // echoed in the reply
	CAS     uint64
	BodyLen uint32

	// Decoded extras.
	Flags   uint32 // set/add/replace
	Exptime uint32 // set/add/replace, touch/gat, incr/decr, flush
	Delta   uint64 // incr/decr
	Initial uint64 // incr/decr
}

// BinaryError is a binary-protocol error: the status and text memcached
// answers with, whether it then closes the connection, and how many
// bytes after the consumed part it discards. Silent errors close without
// a reply (a bad magic byte).
type BinaryError struct {
	Status  uint16
	Close   bool
	Silent  bool
	Swallow int
	msg     string
}

func (e *BinaryError) Error() string { return "cache: binary: " + e.msg }

// Text is the error body memcached sends.
func (e *BinaryError) Text() string { return binStatusText(e.Status) }

// Binary protocol errors. Those with Swallow set are returned as copies
// carrying the byte count.
var (
	ErrBinaryMagic         = &BinaryError{Close: true, Silent: true, msg: "invalid magic byte"}
	ErrBinaryHeaderTooLong = &BinaryError{Close: true, Silent: true, msg: "header, extras and key exceed 16 KiB"}
	ErrBinaryBodyLength    = &BinaryError{Status: BinStatusUnknownCommand, Close: true, msg: "key and extras longer than body"}
	ErrBinaryAuth          = &BinaryError{Status: BinStatusAuthError, Close: true, msg: "command before authentication"}
	ErrBinaryKeyLength     = &BinaryError{Status: BinStatusInvalid, Close: true, msg: "key longer than 250 bytes"}
	ErrBinaryInvalid       = &BinaryError{Status: BinStatusInvalid, Close: true, msg: "invalid extras, key or body length for opcode"}
	ErrBinaryUnknown       = &BinaryError{Status: BinStatusUnknownCommand, msg: "unknown opcode"}
	ErrBinaryTooLarge      = &BinaryError{Status: BinStatusTooLarge, msg: "value too large"}
	ErrBinaryMechLength    = &BinaryError{Status: BinStatusInvalid, msg: "SASL mechanism name too long"}
	ErrBinarySASLData      = &BinaryError{Status: BinStatusOutOfMemory, msg: "SASL data too large"}
)

func (e *BinaryError) swallow(n int) *BinaryError {
	c := *e
	c.Swallow = n
	return &c
}

// BinaryParser parses binary requests the way memcached 1.6.18 does: the
// header, extras and key are read first and validated, then the value of
// the commands that carry one. Bytes of the body that a command does not
// read (a stat or touch with a value, say) are left to be parsed as the
// next request, as in memcached.
type BinaryParser struct {
	MaxItemSize int
	// SASL enables the SASL opcodes and, until Authenticated, refuses
	// every other command except version (memcached -S).
	SASL          bool
	Authenticated bool

	// Need is the buffer length required before Parse can make progress
	// after ErrIncomplete.
	Need int

	req BinaryRequest
}

func isQuiet(op uint8) (uint8, bool) {
	switch op {
	case BinSetQ:
		return BinSet, true
	case BinAddQ:
		return BinAdd, true
	case BinReplaceQ:
		return BinReplace, true
	case BinDeleteQ:
		return BinDelete, true
	case BinIncrementQ:
		return BinIncrement, true
	case BinDecrementQ:
		return BinDecrement, true
	case BinQuitQ:
		return BinQuit, true
	case BinFlushQ:
		return BinFlush, true
	case BinAppendQ:
		return BinAppend, true
	case BinPrependQ:
		return BinPrepend, true
	case BinGetQ:
		return BinGet, true
	case BinGetKQ:
		return BinGetK, true
	case BinGATQ:
		return BinGAT, true
	case BinGATKQ:
		return BinGATK, true
	}
	return op, false
}

// Parse parses one request from buf. It returns the request, the number
// of bytes consumed, and nil, ErrIncomplete (see Need) or a *BinaryError.
// With a *BinaryError the request holds at least the header fields needed
// for the error reply, and n bytes are consumed before Swallow more are
// discarded.
func (p *BinaryParser) Parse(buf []byte) (*BinaryRequest, int, error) {
	p.Need = 0
	p.req = BinaryRequest{}
	r := &p.req
	if len(buf) < BinHeaderLen {
		p.Need = BinHeaderLen
		return r, 0, ErrIncomplete
	}
	if buf[0] != BinRequestMagic {
		return r, 0, ErrBinaryMagic
	}
	r.Opcode = buf[1]
	keylen := int(binary.BigEndian.Uint16(buf[2:]))
	extlen := int(buf[4])
	bodylen := binary.BigEndian.Uint32(buf[8:])
	r.BodyLen = bodylen
	r.Opaque = binary.BigEndian.Uint32(buf[12:])
	r.CAS = binary.BigEndian.Uint64(buf[16:])
	n := BinHeaderLen + extlen + keylen
	if n > binReadBuffer {
		// memcached's 16 KiB read buffer cannot hold the header, extras
		// and key: it closes once the buffer is full.
		if len(buf) >= binReadBuffer {
			return r, 0, ErrBinaryHeaderTooLong
		}
		p.Need = binReadBuffer
		return r, 0, ErrIncomplete
	}
	if len(buf) < n {
		p.Need = n
		return r, 0, ErrIncomplete
	}
	r.Extras = buf[BinHeaderLen : BinHeaderLen+extlen]
	r.Key = buf[BinHeaderLen+extlen : n]
	r.Cmd, r.Quiet = isQuiet(r.Opcode)
	body := int64(bodylen)
	if int64(keylen) > body || int64(keylen+extlen) > body {
		return r, n, ErrBinaryBodyLength
	}
	if p.SASL && !p.Authenticated {
		switch r.Opcode {
		case BinSASLListMechs, BinSASLAuth, BinSASLStep, BinVersion:
		default:
			return r, n, ErrBinaryAuth
		}
	}
	if keylen > keyMaxLength {
		return r, n, ErrBinaryKeyLength
	}
	vlen := int(body) - keylen - extlen
	ok := false
	switch r.Cmd {
	case BinVersion, BinNoop, BinQuit:
		ok = extlen == 0 && keylen == 0 && body == 0
	case BinFlush:
		ok = keylen == 0 && int(body) == extlen && (extlen == 0 || extlen == 4)
		if ok && extlen == 4 {
			r.Exptime = binary.BigEndian.Uint32(r.Extras)
		}
	case BinSet, BinAdd, BinReplace:
		if !(extlen == 8 && keylen != 0 && int(body) >= keylen+8) {
			break
		}
		r.Flags = binary.BigEndian.Uint32(r.Extras)
		r.Exptime = binary.BigEndian.Uint32(r.Extras[4:])
		if itemTotal(keylen, vlen, r.Flags) > p.maxItem() {
			return r, n, ErrBinaryTooLarge.swallow(vlen)
		}
		return p.value(buf, n, vlen)
	case BinAppend, BinPrepend:
		if !(keylen > 0 && extlen == 0) {
			break
		}
		if itemTotal(keylen, vlen, 0) > p.maxItem() {
			return r, n, ErrBinaryTooLarge.swallow(vlen)
		}
		return p.value(buf, n, vlen)
	case BinGet, BinGetK:
		ok = extlen == 0 && int(body) == keylen && keylen > 0
	case BinDelete:
		ok = keylen > 0 && extlen == 0 && int(body) == keylen
	case BinIncrement, BinDecrement:
		ok = keylen > 0 && extlen == 20 && int(body) == keylen+extlen
		if ok {
			r.Delta = binary.BigEndian.Uint64(r.Extras)
			r.Initial = binary.BigEndian.Uint64(r.Extras[8:])
			r.Exptime = binary.BigEndian.Uint32(r.Extras[16:])
		}
	case BinStat:
		ok = extlen == 0
	case BinSASLListMechs:
		if !(extlen == 0 && keylen == 0 && body == 0) {
			break
		}
		if !p.SASL {
			return r, n, ErrBinaryUnknown.swallow(0)
		}
		return r, n, nil
	case BinSASLAuth, BinSASLStep:
		if !(extlen == 0 && keylen != 0) {
			break
		}
		if !p.SASL {
			return r, n, ErrBinaryUnknown.swallow(vlen)
		}
		if keylen > binMaxSASLMech {
			return r, n, ErrBinaryMechLength.swallow(vlen)
		}
		if itemTotal(keylen, vlen, 0) > p.maxItem() {
			return r, n, ErrBinarySASLData.swallow(vlen)
		}
		return p.value(buf, n, vlen)
	case BinTouch, BinGAT, BinGATK:
		ok = extlen == 4 && keylen != 0
		if ok {
			r.Exptime = binary.BigEndian.Uint32(r.Extras)
		}
	default:
		// memcached swallows the whole body length after the header,
		// extras and key it has already consumed.
		return r, n, ErrBinaryUnknown.swallow(int(body))
	}
	if !ok {
		return r, n, ErrBinaryInvalid
	}
	return r, n, nil
}

func (p *BinaryParser) maxItem() int {
	if p.MaxItemSize > 0 {
		return p.MaxItemSize
	}
	return DefaultMaxItemSize
}

// value completes a request whose value follows the key.
func (p *BinaryParser) value(buf []byte, n, vlen int) (*BinaryRequest, int, error) {
	if len(buf) < n+vlen {
		p.Need = n + vlen
		return &p.req, 0, ErrIncomplete
	}
	p.req.Value = buf[n : n+vlen]
	return &p.req, n + vlen, nil
}

// AppendBinaryHeader appends a response header.
func AppendBinaryHeader(b []byte, opcode uint8, status uint16, extlen uint8, keylen uint16, bodylen, opaque uint32, cas uint64) []byte {
	var h [BinHeaderLen]byte
	h[0] = BinResponseMagic
	h[1] = opcode
	binary.BigEndian.PutUint16(h[2:], keylen)
	h[4] = extlen
	binary.BigEndian.PutUint16(h[6:], status)
	binary.BigEndian.PutUint32(h[8:], bodylen)
	binary.BigEndian.PutUint32(h[12:], opaque)
	binary.BigEndian.PutUint64(h[16:], cas)
	return append(b, h[:]...)
}
