package amqp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"time"
)

// Table is an AMQP field table (queue and consumer arguments, client and
// server properties, message headers).
//
// Decoded values have these Go types, by field type letter (RabbitMQ's
// letters; py-amqp writes only S t I L d D T F A V x):
//
//	t bool      b int8     B uint8    s int16    u uint16
//	I int32     i uint32   l int64    L int64    f float32
//	d float64   D Decimal  S string   x []byte   A []any
//	T time.Time (UTC, whole seconds)  F Table    V nil
//
// The encoder writes only letters every client agrees on: any Go integer
// as I when it fits in int32 and as l otherwise, bool as t, string as S,
// []byte as x, float32 and float64 as d, Decimal as D, time.Time as T,
// Table or map[string]any as F, []any as A and nil as V. It never writes
// s, b or B, which py-amqp reads differently from RabbitMQ. Keys are
// written in sorted order, so encoding is deterministic.
type Table map[string]any

// Decimal is an AMQP decimal value (field type D): Value / 10^Scale.
type Decimal struct {
	Scale uint8
	Value int32
}

// maxTableDepth bounds nesting of tables and arrays, so hostile input cannot
// recurse without limit. RabbitMQ has no limit; real tables nest 2 deep.
const maxTableDepth = 128

var errTableDepth = errors.New("field table nested too deeply")

// ReadTable decodes a length-prefixed field table (the wire form of a
// "table" argument) from the start of b and returns it with the number of
// bytes used. Errors are *Error: 502 SYNTAX_ERROR, connection-level. An
// empty table decodes as a nil Table.
func ReadTable(b []byte) (Table, int, error) {
	if len(b) < 4 {
		return nil, 0, NewError(SyntaxError, 0, 0, "field table truncated: %d bytes", len(b))
	}
	n := binary.BigEndian.Uint32(b)
	if uint64(n) > uint64(len(b)-4) {
		return nil, 0, NewError(SyntaxError, 0, 0, "field table length %d exceeds the %d bytes left", n, len(b)-4)
	}
	t, err := decodeTable(b[4:4+n], 0)
	if err != nil {
		return nil, 0, NewError(SyntaxError, 0, 0, "%s", err.Error())
	}
	return t, 4 + int(n), nil
}

// DecodeTableBody decodes the entries of a field table that has no length
// prefix: the whole of b. The SASL AMQPLAIN response is in this form
// ("\x05LOGINS\x00\x00\x00\x05guest\x08PASSWORDS..."). Errors are *Error
// (502 SYNTAX_ERROR).
func DecodeTableBody(b []byte) (Table, error) {
	t, err := decodeTable(b, 0)
	if err != nil {
		return nil, NewError(SyntaxError, 0, 0, "%s", err.Error())
	}
	return t, nil
}

// AppendTable appends t in wire form, with its 4-byte length prefix. On
// error (a value type with no AMQP field type, a key longer than 255
// bytes) it returns dst unchanged and an error wrapping ErrEncode.
func AppendTable(dst []byte, t Table) ([]byte, error) {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0)
	dst, err := appendTableBody(dst, t, 0)
	if err != nil {
		return dst[:start], err
	}
	binary.BigEndian.PutUint32(dst[start:], uint32(len(dst)-start-4))
	return dst, nil
}

// AppendTableBody appends the entries of t without a length prefix, the
// form of an AMQPLAIN response.
func AppendTableBody(dst []byte, t Table) ([]byte, error) {
	start := len(dst)
	dst, err := appendTableBody(dst, t, 0)
	if err != nil {
		return dst[:start], err
	}
	return dst, nil
}

func appendTableBody(dst []byte, t Table, depth int) ([]byte, error) {
	if depth > maxTableDepth {
		return dst, fmt.Errorf("%w: %v", ErrEncode, errTableDepth)
	}
	if len(t) == 0 {
		return dst, nil
	}
	var err error
	for _, k := range slices.Sorted(maps.Keys(t)) {
		if len(k) > maxShortstr {
			return dst, fmt.Errorf("%w: table key of %d bytes (max 255)", ErrEncode, len(k))
		}
		dst = append(dst, uint8(len(k)))
		dst = append(dst, k...)
		if dst, err = appendValue(dst, t[k], depth); err != nil {
			return dst, fmt.Errorf("%w (key %q)", err, k)
		}
	}
	return dst, nil
}

func appendInt(dst []byte, v int64) []byte {
	if v >= math.MinInt32 && v <= math.MaxInt32 {
		dst = append(dst, 'I')
		return binary.BigEndian.AppendUint32(dst, uint32(int32(v)))
	}
	dst = append(dst, 'l')
	return binary.BigEndian.AppendUint64(dst, uint64(v))
}

func appendUint(dst []byte, v uint64) ([]byte, error) {
	if v > math.MaxInt64 {
		return dst, fmt.Errorf("%w: uint64 %d does not fit a signed 64-bit field", ErrEncode, v)
	}
	return appendInt(dst, int64(v)), nil
}

func appendValue(dst []byte, v any, depth int) ([]byte, error) {
	switch v := v.(type) {
	case nil:
		return append(dst, 'V'), nil
	case bool:
		if v {
			return append(dst, 't', 1), nil
		}
		return append(dst, 't', 0), nil
	case int:
		return appendInt(dst, int64(v)), nil
	case int8:
		return appendInt(dst, int64(v)), nil
	case int16:
		return appendInt(dst, int64(v)), nil
	case int32:
		return appendInt(dst, int64(v)), nil
	case int64:
		return appendInt(dst, v), nil
	case uint:
		return appendUint(dst, uint64(v))
	case uint8:
		return appendInt(dst, int64(v)), nil
	case uint16:
		return appendInt(dst, int64(v)), nil
	case uint32:
		return appendInt(dst, int64(v)), nil
	case uint64:
		return appendUint(dst, v)
	case float32:
		dst = append(dst, 'd')
		return binary.BigEndian.AppendUint64(dst, math.Float64bits(float64(v))), nil
	case float64:
		dst = append(dst, 'd')
		return binary.BigEndian.AppendUint64(dst, math.Float64bits(v)), nil
	case Decimal:
		dst = append(dst, 'D', v.Scale)
		return binary.BigEndian.AppendUint32(dst, uint32(v.Value)), nil
	case string:
		dst = append(dst, 'S')
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(v)))
		return append(dst, v...), nil
	case []byte:
		dst = append(dst, 'x')
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(v)))
		return append(dst, v...), nil
	case time.Time:
		dst = append(dst, 'T')
		return binary.BigEndian.AppendUint64(dst, uint64(v.Unix())), nil
	case Table:
		return appendNested(dst, v, depth)
	case map[string]any:
		return appendNested(dst, Table(v), depth)
	case []any:
		if depth+1 > maxTableDepth {
			return dst, fmt.Errorf("%w: %v", ErrEncode, errTableDepth)
		}
		dst = append(dst, 'A', 0, 0, 0, 0)
		start := len(dst)
		var err error
		for _, e := range v {
			if dst, err = appendValue(dst, e, depth+1); err != nil {
				return dst, err
			}
		}
		binary.BigEndian.PutUint32(dst[start-4:], uint32(len(dst)-start))
		return dst, nil
	}
	return dst, fmt.Errorf("%w: field value of type %T", ErrEncode, v)
}

func appendNested(dst []byte, t Table, depth int) ([]byte, error) {
	dst = append(dst, 'F', 0, 0, 0, 0)
	start := len(dst)
	dst, err := appendTableBody(dst, t, depth+1)
	if err != nil {
		return dst, err
	}
	binary.BigEndian.PutUint32(dst[start-4:], uint32(len(dst)-start))
	return dst, nil
}

// decodeTable decodes table entries filling all of b.
func decodeTable(b []byte, depth int) (Table, error) {
	if len(b) == 0 {
		return nil, nil
	}
	if depth > maxTableDepth {
		return nil, errTableDepth
	}
	t := make(Table)
	for off := 0; off < len(b); {
		kl := int(b[off])
		off++
		if kl > len(b)-off {
			return nil, fmt.Errorf("field table key truncated at offset %d", off-1)
		}
		k := string(b[off : off+kl])
		off += kl
		v, n, err := decodeValue(b[off:], depth)
		if err != nil {
			return nil, fmt.Errorf("field table key %q: %v", k, err)
		}
		off += n
		t[k] = v
	}
	return t, nil
}

func decodeArray(b []byte, depth int) ([]any, error) {
	if depth > maxTableDepth {
		return nil, errTableDepth
	}
	a := []any{}
	for off := 0; off < len(b); {
		v, n, err := decodeValue(b[off:], depth)
		if err != nil {
			return nil, fmt.Errorf("array element %d: %v", len(a), err)
		}
		off += n
		a = append(a, v)
	}
	return a, nil
}

var errValueTruncated = errors.New("value truncated")

// decodeValue decodes one type letter and value from the start of b.
func decodeValue(b []byte, depth int) (any, int, error) {
	if len(b) < 1 {
		return nil, 0, errors.New("missing field type")
	}
	typ, p := b[0], b[1:]
	fixed := func(n int) bool { return len(p) >= n }
	switch typ {
	case 't':
		if fixed(1) {
			return p[0] != 0, 2, nil
		}
	case 'b':
		if fixed(1) {
			return int8(p[0]), 2, nil
		}
	case 'B':
		if fixed(1) {
			return p[0], 2, nil
		}
	case 's':
		if fixed(2) {
			return int16(binary.BigEndian.Uint16(p)), 3, nil
		}
	case 'u':
		if fixed(2) {
			return binary.BigEndian.Uint16(p), 3, nil
		}
	case 'I':
		if fixed(4) {
			return int32(binary.BigEndian.Uint32(p)), 5, nil
		}
	case 'i':
		if fixed(4) {
			return binary.BigEndian.Uint32(p), 5, nil
		}
	case 'l', 'L':
		if fixed(8) {
			return int64(binary.BigEndian.Uint64(p)), 9, nil
		}
	case 'f':
		if fixed(4) {
			return math.Float32frombits(binary.BigEndian.Uint32(p)), 5, nil
		}
	case 'd':
		if fixed(8) {
			return math.Float64frombits(binary.BigEndian.Uint64(p)), 9, nil
		}
	case 'D':
		if fixed(5) {
			return Decimal{Scale: p[0], Value: int32(binary.BigEndian.Uint32(p[1:]))}, 6, nil
		}
	case 'T':
		if fixed(8) {
			return time.Unix(int64(binary.BigEndian.Uint64(p)), 0).UTC(), 9, nil
		}
	case 'V':
		return nil, 1, nil
	case 'S', 'x', 'A', 'F':
		if !fixed(4) {
			break
		}
		n := binary.BigEndian.Uint32(p)
		if uint64(n) > uint64(len(p)-4) {
			break
		}
		body := p[4 : 4+n]
		used := 5 + int(n)
		switch typ {
		case 'S':
			return string(body), used, nil
		case 'x':
			return append([]byte{}, body...), used, nil
		case 'A':
			a, err := decodeArray(body, depth+1)
			return a, used, err
		default:
			t, err := decodeTable(body, depth+1)
			if t == nil && err == nil {
				t = Table{}
			}
			return t, used, err
		}
	default:
		return nil, 0, fmt.Errorf("unknown field type %q", typ)
	}
	return nil, 0, fmt.Errorf("field type %q: %w", typ, errValueTruncated)
}
