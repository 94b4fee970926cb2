package cache

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestBinaryParseValid(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		sasl bool
		want BinaryRequest
		n    int // consumed; 0 means len(in)
	}{
		{name: "get", in: binReq(BinGet, "key", "", "", 7, 9),
			want: BinaryRequest{Opcode: BinGet, Cmd: BinGet, Key: []byte("key"), Opaque: 7, CAS: 9, BodyLen: 3}},
		{name: "getkq", in: binReq(BinGetKQ, "k", "", "", 0, 0),
			want: BinaryRequest{Opcode: BinGetKQ, Cmd: BinGetK, Quiet: true, Key: []byte("k"), BodyLen: 1}},
		{name: "set", in: binReq(BinSetQ, "k", setExtras(0xdeadbeef, 300), "value", 1, 2),
			want: BinaryRequest{Opcode: BinSetQ, Cmd: BinSet, Quiet: true, Key: []byte("k"), Extras: []byte(setExtras(0xdeadbeef, 300)),
				Value: []byte("value"), Opaque: 1, CAS: 2, BodyLen: 14, Flags: 0xdeadbeef, Exptime: 300}},
		{name: "incr", in: binReq(BinIncrement, "n", arithExtras(3, 4, 5), "", 0, 0),
			want: BinaryRequest{Opcode: BinIncrement, Cmd: BinIncrement, Key: []byte("n"), Extras: []byte(arithExtras(3, 4, 5)),
				BodyLen: 21, Delta: 3, Initial: 4, Exptime: 5}},
		{name: "flush with delay", in: binReq(BinFlushQ, "", u32(10), "", 0, 0),
			want: BinaryRequest{Opcode: BinFlushQ, Cmd: BinFlush, Quiet: true, Extras: []byte(u32(10)), BodyLen: 4, Exptime: 10}},
		{name: "touch", in: binReq(BinTouch, "k", u32(10), "", 0, 0),
			want: BinaryRequest{Opcode: BinTouch, Cmd: BinTouch, Key: []byte("k"), Extras: []byte(u32(10)), BodyLen: 5, Exptime: 10}},
		{name: "stat with trailing body stops at key", in: binReq(BinStat, "items", "", "zz", 0, 0), n: 29,
			want: BinaryRequest{Opcode: BinStat, Cmd: BinStat, Key: []byte("items"), BodyLen: 7}},
		{name: "sasl auth", in: binReq(BinSASLAuth, "PLAIN", "", "\x00u\x00p", 0, 0), sasl: true,
			want: BinaryRequest{Opcode: BinSASLAuth, Cmd: BinSASLAuth, Key: []byte("PLAIN"), Value: []byte("\x00u\x00p"), BodyLen: 9}},
		{name: "version before auth", in: binReq(BinVersion, "", "", "", 0, 0), sasl: true,
			want: BinaryRequest{Opcode: BinVersion, Cmd: BinVersion}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := BinaryParser{SASL: tc.sasl}
			r, n, err := p.Parse([]byte(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			want := tc.n
			if want == 0 {
				want = len(tc.in)
			}
			if n != want {
				t.Errorf("consumed %d, want %d", n, want)
			}
			if !equalBinReq(r, &tc.want) {
				t.Errorf("got %+v\nwant %+v", *r, tc.want)
			}
		})
	}
}

func equalBinReq(a, b *BinaryRequest) bool {
	return a.Opcode == b.Opcode && a.Cmd == b.Cmd && a.Quiet == b.Quiet && bytes.Equal(a.Key, b.Key) &&
		bytes.Equal(a.Extras, b.Extras) && bytes.Equal(a.Value, b.Value) && a.Opaque == b.Opaque && a.CAS == b.CAS &&
		a.BodyLen == b.BodyLen && a.Flags == b.Flags && a.Exptime == b.Exptime && a.Delta == b.Delta && a.Initial == b.Initial
}

// TestBinaryShouldFail is the must-fail corpus: each input gives the named
// error with memcached's status, close flag and swallow count.
func TestBinaryShouldFail(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      string
		sasl    bool
		want    *BinaryError
		swallow int
	}{
		{"text on a binary connection", "get foo\r\n" + strings.Repeat(" ", 15), false, ErrBinaryMagic, 0},
		{"response magic", "\x81" + binReq(BinNoop, "", "", "", 0, 0)[1:], false, ErrBinaryMagic, 0},
		{"key beyond body", "\x80\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00\x02" + u32(0) + u64(0) + "abcde", false, ErrBinaryBodyLength, 0},
		{"extras beyond body", "\x80\x01\x00\x01\x08\x00\x00\x00\x00\x00\x00\x05" + u32(0) + u64(0) + "12345678k", false, ErrBinaryBodyLength, 0},
		{"unauthenticated get", binReq(BinGet, "k", "", "", 0, 0), true, ErrBinaryAuth, 0},
		{"unauthenticated noop", binReq(BinNoop, "", "", "", 0, 0), true, ErrBinaryAuth, 0},
		{"unauthenticated unknown", binReq(0x77, "", "", "", 0, 0), true, ErrBinaryAuth, 0},
		{"key 16361", binReq(BinGet, strings.Repeat("k", 16361), "", "", 0, 0), false, ErrBinaryHeaderTooLong, 0},
		{"extras and key over 16 KiB", binReq(BinSet, strings.Repeat("k", 16353), setExtras(0, 0), "", 0, 0), false, ErrBinaryHeaderTooLong, 0},
		{"key 251", binReq(BinGet, strings.Repeat("k", 251), "", "", 0, 0), false, ErrBinaryKeyLength, 0},
		{"get no key", binReq(BinGet, "", "", "", 0, 0), false, ErrBinaryInvalid, 0},
		{"get extras", binReq(BinGet, "k", "x", "", 0, 0), false, ErrBinaryInvalid, 0},
		{"get value", binReq(BinGetK, "k", "", "v", 0, 0), false, ErrBinaryInvalid, 0},
		{"set short extras", binReq(BinSet, "k", "1234", "v", 0, 0), false, ErrBinaryInvalid, 0},
		{"set no key", binReq(BinAdd, "", setExtras(0, 0), "v", 0, 0), false, ErrBinaryInvalid, 0},
		{"append extras", binReq(BinAppend, "k", "x", "v", 0, 0), false, ErrBinaryInvalid, 0},
		{"delete value", binReq(BinDelete, "k", "", "v", 0, 0), false, ErrBinaryInvalid, 0},
		{"incr no key", binReq(BinIncrement, "", arithExtras(1, 1, 1), "", 0, 0), false, ErrBinaryInvalid, 0},
		{"incr value", binReq(BinDecrement, "k", arithExtras(1, 1, 1), "v", 0, 0), false, ErrBinaryInvalid, 0},
		{"flush extras 8", binReq(BinFlush, "", u64(1), "", 0, 0), false, ErrBinaryInvalid, 0},
		{"flush key", binReq(BinFlush, "k", "", "", 0, 0), false, ErrBinaryInvalid, 0},
		{"version key", binReq(BinVersion, "k", "", "", 0, 0), false, ErrBinaryInvalid, 0},
		{"quit value", binReq(BinQuitQ, "", "", "v", 0, 0), false, ErrBinaryInvalid, 0},
		{"stat extras", binReq(BinStat, "", "x", "", 0, 0), false, ErrBinaryInvalid, 0},
		{"touch no extras", binReq(BinTouch, "k", "", "", 0, 0), false, ErrBinaryInvalid, 0},
		{"gat no key", binReq(BinGATK, "", u32(1), "", 0, 0), false, ErrBinaryInvalid, 0},
		{"sasl auth no mech", binReq(BinSASLAuth, "", "", "x", 0, 0), true, ErrBinaryInvalid, 0},
		{"sasl list with key", binReq(BinSASLListMechs, "k", "", "", 0, 0), true, ErrBinaryInvalid, 0},
		{"unknown opcode", binReq(0x1b, "ab", "", "xyz", 0, 0), false, ErrBinaryUnknown, 5},
		{"sasl disabled", binReq(BinSASLAuth, "PLAIN", "", "data", 0, 0), false, ErrBinaryUnknown, 4},
		{"sasl list disabled", binReq(BinSASLListMechs, "", "", "", 0, 0), false, ErrBinaryUnknown, 0},
		{"sasl mech too long", binReq(BinSASLAuth, strings.Repeat("M", 33), "", "data", 0, 0), true, ErrBinaryMechLength, 4},
		{"value too large", binReq(BinSet, "k", setExtras(0, 0), strings.Repeat("v", 1<<20), 0, 0), false, ErrBinaryTooLarge, 1 << 20},
		{"append too large", binReq(BinPrependQ, "k", "", strings.Repeat("v", 1<<20), 0, 0), false, ErrBinaryTooLarge, 1 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := BinaryParser{SASL: tc.sasl}
			_, _, err := p.Parse([]byte(tc.in))
			var be *BinaryError
			if !errors.As(err, &be) {
				t.Fatalf("err = %v", err)
			}
			if be.msg != tc.want.msg || be.Status != tc.want.Status || be.Close != tc.want.Close || be.Silent != tc.want.Silent {
				t.Errorf("got %+v, want %+v", *be, *tc.want)
			}
			if be.Swallow != tc.swallow {
				t.Errorf("swallow %d, want %d", be.Swallow, tc.swallow)
			}
		})
	}
}

// binSeeds is a stream of valid and invalid requests for the split and
// fuzz tests.
var binSeeds = []string{
	binReq(BinGet, "key", "", "", 1, 0),
	binReq(BinSetQ, "k", setExtras(1, 2), "value", 3, 4) + binReq(BinGetKQ, "k", "", "", 0, 0) + binReq(BinNoop, "", "", "", 0, 0),
	binReq(BinIncrement, "n", arithExtras(1, 2, 3), "", 0, 0),
	binReq(BinStat, "settings", "", "", 0, 0),
	binReq(BinStat, "x", "", binReq(BinVersion, "", "", "", 0, 0), 0, 0),
	binReq(0x1b, "ab", "", "xyz", 0, 0) + binReq(BinVersion, "", "", "", 0, 0),
	binReq(BinSASLAuth, "PLAIN", "", "\x00u\x00p", 0, 0),
	binReq(BinAppend, "k", "", "v", 0, 0) + binReq(BinTouch, "k", u32(1), "", 0, 0),
	"\x80\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00\x02" + u32(0) + u64(0) + "abcde",
	"get foo\r\n",
}

type binEvent struct {
	op      uint8
	err     error
	key     string
	value   string
	swallow int
}

// collectBinary parses a stream delivered in the given chunks, the way the
// connection loop does, and returns what it saw.
func collectBinary(chunks []string, sasl bool) []binEvent {
	p := BinaryParser{SASL: sasl, MaxItemSize: 2048}
	var buf []byte
	var out []binEvent
	swallow := 0
	for _, ch := range chunks {
		buf = append(buf, ch...)
		for {
			if swallow > 0 {
				n := min(swallow, len(buf))
				buf = buf[n:]
				swallow -= n
				if swallow > 0 {
					break
				}
			}
			if len(buf) == 0 || (p.Need > 0 && len(buf) < p.Need) {
				break
			}
			r, n, err := p.Parse(buf)
			if err == ErrIncomplete {
				if p.Need <= len(buf) {
					panic("Need does not exceed the buffer")
				}
				break
			}
			ev := binEvent{op: r.Opcode, err: err, key: string(r.Key), value: string(r.Value)}
			if be, ok := err.(*BinaryError); ok {
				ev.swallow = be.Swallow
				swallow = be.Swallow
				if be.Close {
					return append(out, ev)
				}
			}
			out = append(out, ev)
			buf = buf[n:]
		}
	}
	return out
}

func sameEvents(a, b []binEvent) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].op != b[i].op || a[i].key != b[i].key || a[i].value != b[i].value || a[i].swallow != b[i].swallow {
			return false
		}
		if (a[i].err == nil) != (b[i].err == nil) || (a[i].err != nil && a[i].err.Error() != b[i].err.Error()) {
			return false
		}
	}
	return true
}

// TestBinarySplitEverywhere feeds each seed split at every byte boundary.
func TestBinarySplitEverywhere(t *testing.T) {
	for _, s := range binSeeds {
		whole := collectBinary([]string{s}, false)
		for i := 1; i < len(s); i++ {
			if got := collectBinary([]string{s[:i], s[i:]}, false); !sameEvents(whole, got) {
				t.Fatalf("split %q at %d: %+v, whole %+v", s, i, got, whole)
			}
		}
		bytewise := make([]string, len(s))
		for i := range s {
			bytewise[i] = s[i : i+1]
		}
		if got := collectBinary(bytewise, false); !sameEvents(whole, got) {
			t.Fatalf("byte by byte %q: %+v, whole %+v", s, got, whole)
		}
	}
}

// FuzzBinary checks the parser never panics, never consumes more than it
// was given, and parses the same split in two as whole.
func FuzzBinary(f *testing.F) {
	for _, s := range binSeeds {
		f.Add([]byte(s), uint16(len(s)/2), false)
		f.Add([]byte(s), uint16(len(s)/3), true)
	}
	f.Fuzz(func(t *testing.T, in []byte, at uint16, sasl bool) {
		p := BinaryParser{SASL: sasl, MaxItemSize: 2048}
		if _, n, err := p.Parse(in); n > len(in) || n < 0 {
			t.Fatalf("consumed %d of %d (%v)", n, len(in), err)
		}
		cut := int(at) % (len(in) + 1)
		a := collectBinary([]string{string(in)}, sasl)
		b := collectBinary([]string{string(in[:cut]), string(in[cut:])}, sasl)
		if !sameEvents(a, b) {
			t.Fatalf("whole %+v, split %+v", a, b)
		}
	})
}
