package amqp

import (
	"encoding/binary"
	"fmt"
)

// encoder appends AMQP domain values to buf. The first failure is kept in
// err and later calls still append (garbage the caller discards), which
// keeps the generated code straight-line.
type encoder struct {
	buf []byte
	err error
}

func (e *encoder) octet(v uint8)      { e.buf = append(e.buf, v) }
func (e *encoder) short(v uint16)     { e.buf = binary.BigEndian.AppendUint16(e.buf, v) }
func (e *encoder) long(v uint32)      { e.buf = binary.BigEndian.AppendUint32(e.buf, v) }
func (e *encoder) longlong(v uint64)  { e.buf = binary.BigEndian.AppendUint64(e.buf, v) }
func (e *encoder) timestamp(v uint64) { e.buf = binary.BigEndian.AppendUint64(e.buf, v) }
func (e *encoder) longstr(s string) {
	e.buf = append(binary.BigEndian.AppendUint32(e.buf, uint32(len(s))), s...)
}

func (e *encoder) table(t Table) {
	var err error
	e.buf, err = AppendTable(e.buf, t)
	if err != nil && e.err == nil {
		e.err = err
	}
}

func (e *encoder) shortstr(s string) {
	if len(s) > maxShortstr && e.err == nil {
		e.err = fmt.Errorf("%w: shortstr of %d bytes (max 255): %.40q...", ErrEncode, len(s), s)
	}
	e.buf = append(e.buf, uint8(len(s)))
	e.buf = append(e.buf, s...)
}

// decoder reads AMQP domain values from buf. Running past the end sets
// trunc and yields zero values; a malformed field table sets tableErr. The
// generated DecodeArgs methods read every argument and then call finish.
type decoder struct {
	buf      []byte
	off      int
	trunc    bool
	tableErr error
}

func (d *decoder) need(n int) bool {
	if len(d.buf)-d.off < n {
		d.trunc = true
		d.off = len(d.buf)
		return false
	}
	return true
}

func (d *decoder) octet() uint8 {
	if !d.need(1) {
		return 0
	}
	v := d.buf[d.off]
	d.off++
	return v
}

func (d *decoder) short() uint16 {
	if !d.need(2) {
		return 0
	}
	v := binary.BigEndian.Uint16(d.buf[d.off:])
	d.off += 2
	return v
}

func (d *decoder) long() uint32 {
	if !d.need(4) {
		return 0
	}
	v := binary.BigEndian.Uint32(d.buf[d.off:])
	d.off += 4
	return v
}

func (d *decoder) longlong() uint64 {
	if !d.need(8) {
		return 0
	}
	v := binary.BigEndian.Uint64(d.buf[d.off:])
	d.off += 8
	return v
}

func (d *decoder) timestamp() uint64 { return d.longlong() }

func (d *decoder) bytesN(n int) []byte {
	if !d.need(n) {
		return nil
	}
	b := d.buf[d.off : d.off+n : d.off+n]
	d.off += n
	return b
}

func (d *decoder) shortstr() string {
	n := int(d.octet())
	return string(d.bytesN(n))
}

func (d *decoder) longstr() string {
	n := d.long()
	if uint64(n) > uint64(len(d.buf)-d.off) {
		d.need(len(d.buf) - d.off + 1)
		return ""
	}
	return string(d.bytesN(int(n)))
}

// table reads a length-prefixed field table. A length running past the end
// of the arguments is a framing problem (501, like RabbitMQ's binary
// pattern match); a malformed table inside a correct length is a syntax
// problem (502).
func (d *decoder) table() Table {
	n := d.long()
	if uint64(n) > uint64(len(d.buf)-d.off) {
		d.need(len(d.buf) - d.off + 1)
		return nil
	}
	body := d.bytesN(int(n))
	t, err := decodeTable(body, 0)
	if err != nil && d.tableErr == nil {
		d.tableErr = err
	}
	return t
}

// finish turns the decoder state into the *Error RabbitMQ would raise for
// method (classID, methodID): 501 "cannot decode" when the arguments are
// short or have trailing bytes, 502 for a malformed field table.
func (d *decoder) finish(classID, methodID uint16) error {
	if d.trunc || d.off != len(d.buf) {
		return cannotDecode(classID, methodID, d.buf)
	}
	if d.tableErr != nil {
		return NewError(SyntaxError, classID, methodID, "%s", d.tableErr.Error())
	}
	return nil
}
