package amqp

import (
	"bytes"
	"errors"
	"math"
	"reflect"
	"testing"
	"time"
)

// tableWith wraps one encoded field value as a length-prefixed table with
// key "k".
func tableWith(value []byte) []byte {
	body := append([]byte{1, 'k'}, value...)
	out := []byte{0, 0, 0, byte(len(body))}
	return append(out, body...)
}

func TestTableDecodeEveryLetter(t *testing.T) {
	cases := []struct {
		name  string
		value string // hex: type letter and value
		want  any
	}{
		{"t true", "74 01", true},
		{"t false", "74 00", false},
		{"b int8", "62 ff", int8(-1)},
		{"B uint8", "42 ff", uint8(255)},
		{"s int16", "73 fffe", int16(-2)},
		{"u uint16", "75 fffe", uint16(65534)},
		{"I int32", "49 fffffffd", int32(-3)},
		{"i uint32", "69 fffffffd", uint32(4294967293)},
		{"l int64", "6c fffffffffffffffc", int64(-4)},
		{"L as int64 (py-amqp's signed 64)", "4c fffffffffffffffb", int64(-5)},
		{"L large", "4c 0000010000000000", int64(1) << 40},
		{"f float32", "66 3fc00000", float32(1.5)},
		{"d float64", "64 3ff8000000000000", 1.5},
		{"D decimal", "44 02 fffffec6", Decimal{Scale: 2, Value: -314}},
		{"S longstr", "53 00000005 6775657374", "guest"},
		{"S empty", "53 00000000", ""},
		{"x bytes", "78 00000003 00ff01", []byte{0, 0xff, 1}},
		{"A array", "41 0000000a 49 00000001 53 00000000", []any{int32(1), ""}},
		{"A empty", "41 00000000", []any{}},
		{"T timestamp", "54 000000006553f100", time.Unix(1700000000, 0).UTC()},
		{"F table", "46 00000007 01 78 49 00000001", Table{"x": int32(1)}},
		{"F empty", "46 00000000", Table{}},
		{"V void", "56", nil},
	}
	for _, c := range cases {
		b := tableWith(mustHex(c.value))
		got, n, err := ReadTable(append(b, 0xAA)) // trailing byte is not part of it
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if n != len(b) {
			t.Errorf("%s: used %d bytes, want %d", c.name, n, len(b))
		}
		if v, ok := got["k"]; !ok || !reflect.DeepEqual(v, c.want) {
			t.Errorf("%s: got %#v (%T), want %#v (%T)", c.name, v, v, c.want, c.want)
		}
	}
}

func TestTableEncodeLetters(t *testing.T) {
	cases := []struct {
		in   any
		want string // hex of the value, type letter first
	}{
		{true, "74 01"},
		{false, "74 00"},
		{int8(-1), "49 ffffffff"},
		{uint8(255), "49 000000ff"},
		{int16(-2), "49 fffffffe"},
		{uint16(65534), "49 0000fffe"},
		{int32(-3), "49 fffffffd"},
		{uint32(4294967293), "6c 00000000fffffffd"},
		{int(1800000), "49 001b7740"},
		{int64(math.MinInt32), "49 80000000"},
		{int64(math.MinInt32 - 1), "6c ffffffff7fffffff"},
		{int64(1) << 40, "6c 0000010000000000"},
		{uint(7), "49 00000007"},
		{uint64(math.MaxInt64), "6c 7fffffffffffffff"},
		{float32(1.5), "64 3ff8000000000000"},
		{1.5, "64 3ff8000000000000"},
		{Decimal{Scale: 2, Value: -314}, "44 02 fffffec6"},
		{"guest", "53 00000005 6775657374"},
		{[]byte{0, 0xff}, "78 00000002 00ff"},
		{time.Unix(1700000000, 0), "54 000000006553f100"},
		{Table{"x": int32(1)}, "46 00000007 01 78 49 00000001"},
		{map[string]any{"x": 1}, "46 00000007 01 78 49 00000001"},
		{Table(nil), "46 00000000"},
		{[]any{int32(1), ""}, "41 0000000a 49 00000001 53 00000000"},
		{nil, "56"},
	}
	for _, c := range cases {
		got, err := AppendTable(nil, Table{"k": c.in})
		if err != nil {
			t.Errorf("%T %v: %v", c.in, c.in, err)
			continue
		}
		if want := tableWith(mustHex(c.want)); !bytes.Equal(got, want) {
			t.Errorf("%T %v:\n got %x\nwant %x", c.in, c.in, got, want)
		}
		if l := got[6]; l == 's' || l == 'b' || l == 'B' {
			t.Errorf("%T encoded with forbidden letter %q", c.in, l)
		}
	}
}

// TestTableNeverEmitsForbiddenLetters decodes a table with every letter,
// s, b and B included, re-encodes it, and walks the result.
func TestTableNeverEmitsForbiddenLetters(t *testing.T) {
	var body []byte
	for i, v := range []string{"74 01", "62 ff", "42 ff", "73 fffe", "75 fffe", "49 fffffffd", "69 fffffffd",
		"6c fffffffffffffffc", "4c 0000000000000001", "66 3fc00000", "64 3ff8000000000000", "44 02 fffffec6",
		"53 00000001 61", "78 00000001 00", "41 00000005 62 01 73 0001", "54 0000000000000001",
		"46 00000004 01 6e 42 07", "56"} {
		body = append(body, 2, 'k', byte('a'+i))
		body = append(body, mustHex(v)...)
	}
	tb, err := DecodeTableBody(body)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := AppendTable(nil, tb)
	if err != nil {
		t.Fatal(err)
	}
	var walk func(b []byte, array bool)
	walkValue := func(b []byte) int {
		switch b[0] {
		case 's', 'b', 'B':
			t.Fatalf("encoder emitted %q", b[0])
		}
		_, n, err := decodeValue(b, 0)
		if err != nil {
			t.Fatal(err)
		}
		if b[0] == 'F' {
			walk(b[5:n], false)
		}
		if b[0] == 'A' {
			walk(b[5:n], true)
		}
		return n
	}
	walk = func(b []byte, array bool) {
		for len(b) > 0 {
			if !array {
				b = b[1+int(b[0]):]
			}
			b = b[walkValue(b):]
		}
	}
	walk(enc[4:], false)
	again, _, err := ReadTable(enc)
	if err != nil {
		t.Fatal(err)
	}
	if again["kb"] != int32(-1) || again["kc"] != int32(255) || again["kd"] != int32(-2) || again["kg"] != int64(4294967293) {
		t.Errorf("widened values: %v", again)
	}
}

func TestTableRoundTripAndOrder(t *testing.T) {
	a, err := AppendTable(nil, richTable)
	if err != nil {
		t.Fatal(err)
	}
	for range 20 { // map iteration order must not leak into the encoding
		b, _ := AppendTable(nil, richTable)
		if !bytes.Equal(a, b) {
			t.Fatal("encoding is not deterministic")
		}
	}
	got, n, err := ReadTable(a)
	if err != nil || n != len(a) {
		t.Fatal(n, err)
	}
	if !reflect.DeepEqual(got, richTable) {
		t.Errorf("got %#v", got)
	}
	// An empty table is 4 zero bytes and decodes as nil.
	e, _ := AppendTable(nil, Table{})
	if !bytes.Equal(e, []byte{0, 0, 0, 0}) {
		t.Errorf("empty table = %x", e)
	}
	if got, n, err := ReadTable(e); got != nil || n != 4 || err != nil {
		t.Errorf("ReadTable(empty) = %v, %d, %v", got, n, err)
	}
}

func TestTableErrors(t *testing.T) {
	bad := map[string][]byte{
		"short length":     {0, 0},
		"length overrun":   {0, 0, 0, 5, 1, 'k'},
		"unknown type":     tableWith([]byte{'Z'}),
		"missing type":     tableWith(nil),
		"truncated I":      tableWith([]byte{'I', 0, 0}),
		"truncated S":      tableWith([]byte{'S', 0, 0, 0, 9, 'a'}),
		"truncated S len":  tableWith([]byte{'S', 0, 0}),
		"truncated key":    {0, 0, 0, 2, 5, 'k'},
		"bad nested table": tableWith([]byte{'F', 0, 0, 0, 1, 9}),
		"bad array":        tableWith([]byte{'A', 0, 0, 0, 1, 'Z'}),
	}
	for name, b := range bad {
		_, _, err := ReadTable(b)
		checkErr(t, name, err, SyntaxError, 0, 0, true, "SYNTAX_ERROR - ")
	}
	// Nesting beyond the limit fails cleanly instead of recursing forever.
	var nested any = []any{}
	for range maxTableDepth + 2 {
		nested = []any{nested}
	}
	if _, err := AppendTable(nil, Table{"k": nested}); !errors.Is(err, ErrEncode) {
		t.Errorf("deep encode: %v", err)
	}
	var tb Table = Table{}
	cur := tb
	for range maxTableDepth + 2 {
		next := Table{}
		cur["n"] = next
		cur = next
	}
	enc, err := appendTableBody(nil, tb, -1000) // bypass the limit to build input
	if err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeTableBody(enc); err == nil {
		t.Error("deeply nested table decoded")
	}
	for _, v := range []any{struct{}{}, uint64(math.MaxUint64), []string{"a"}, map[string]string{}} {
		if _, err := AppendTable(nil, Table{"k": v}); !errors.Is(err, ErrEncode) {
			t.Errorf("%T: err = %v", v, err)
		}
	}
	if _, err := AppendTable(nil, Table{string(make([]byte, 256)): 1}); !errors.Is(err, ErrEncode) {
		t.Errorf("long key: %v", err)
	}
}
