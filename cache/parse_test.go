package cache

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func parseAll(t testing.TB, p *Parser, in string) (*Command, int, error) {
	t.Helper()
	return p.Parse([]byte(in))
}

func keysOf(c *Command) []string {
	var out []string
	for _, k := range c.Keys {
		out = append(out, string(k))
	}
	return out
}

func TestParseValid(t *testing.T) {
	tests := []struct {
		in    string
		check func(t *testing.T, c *Command)
	}{
		{"get a\r\n", func(t *testing.T, c *Command) {
			if c.Op != OpGet || strings.Join(keysOf(c), ",") != "a" {
				t.Errorf("%v %v", c.Op, keysOf(c))
			}
		}},
		{"gets a b  c \r\n", func(t *testing.T, c *Command) {
			if c.Op != OpGets || strings.Join(keysOf(c), ",") != "a,b,c" {
				t.Errorf("%v %v", c.Op, keysOf(c))
			}
		}},
		{"gat -5 a b\n", func(t *testing.T, c *Command) {
			if c.Op != OpGat || c.Exptime != -5 || strings.Join(keysOf(c), ",") != "a,b" {
				t.Errorf("%+v", c)
			}
		}},
		{"gats 10 a\r\n", func(t *testing.T, c *Command) {
			if c.Op != OpGats || c.Exptime != 10 {
				t.Errorf("%+v", c)
			}
		}},
		{"get" + strings.Repeat(" k", 100) + "\r\n", func(t *testing.T, c *Command) {
			if len(c.Keys) != 100 {
				t.Errorf("%d keys", len(c.Keys))
			}
		}},
		{"set k 4294967295 -1 3 noreply\r\nabc\r\n", func(t *testing.T, c *Command) {
			if c.Op != OpSet || string(c.Key) != "k" || c.Flags != 4294967295 || c.Exptime != -1 ||
				c.Bytes != 3 || string(c.Data) != "abc" || !c.NoReply {
				t.Errorf("%+v", c)
			}
		}},
		{"set k 16 0 1 \r\nx\r\n", func(t *testing.T, c *Command) {
			if c.Op != OpSet || c.Flags != 16 || c.NoReply || string(c.Data) != "x" {
				t.Errorf("%+v", c)
			}
		}},
		{"set k 4294967296 0 0\r\n\r\n", func(t *testing.T, c *Command) {
			if c.Flags != 0 || len(c.Data) != 0 {
				t.Errorf("%+v", c)
			}
		}},
		{"add k 0 0 1\r\nx\r\n", func(t *testing.T, c *Command) { expectOp(t, c, OpAdd) }},
		{"replace k 0 0 1\r\nx\r\n", func(t *testing.T, c *Command) { expectOp(t, c, OpReplace) }},
		{"append k 0 0 1\r\nx\r\n", func(t *testing.T, c *Command) { expectOp(t, c, OpAppend) }},
		{"prepend k 0 0 1\r\nx\r\n", func(t *testing.T, c *Command) { expectOp(t, c, OpPrepend) }},
		{"cas k 1 2 3 18446744073709551615 noreply\r\nabc\r\n", func(t *testing.T, c *Command) {
			if c.Op != OpCas || c.CAS != 18446744073709551615 || !c.NoReply || string(c.Data) != "abc" {
				t.Errorf("%+v", c)
			}
		}},
		{"set k 0 0 1 bogus\r\nx\r\n", func(t *testing.T, c *Command) {
			if c.NoReply {
				t.Error("bogus token read as noreply")
			}
		}},
		{"delete k\r\n", func(t *testing.T, c *Command) { expectOp(t, c, OpDelete) }},
		{"delete k 0\r\n", func(t *testing.T, c *Command) { expectOp(t, c, OpDelete) }},
		{"delete k noreply\r\n", func(t *testing.T, c *Command) {
			if c.Op != OpDelete || !c.NoReply {
				t.Errorf("%+v", c)
			}
		}},
		{"delete k 0 noreply\r\n", func(t *testing.T, c *Command) {
			if !c.NoReply {
				t.Errorf("%+v", c)
			}
		}},
		{"incr k 18446744073709551615\r\n", func(t *testing.T, c *Command) {
			if c.Op != OpIncr || c.Delta != 18446744073709551615 {
				t.Errorf("%+v", c)
			}
		}},
		{"decr k +5 noreply\r\n", func(t *testing.T, c *Command) {
			if c.Op != OpDecr || c.Delta != 5 || !c.NoReply {
				t.Errorf("%+v", c)
			}
		}},
		{"touch k 2592001\r\n", func(t *testing.T, c *Command) {
			if c.Op != OpTouch || c.Exptime != 2592001 {
				t.Errorf("%+v", c)
			}
		}},
		{"flush_all\r\n", func(t *testing.T, c *Command) { expectOp(t, c, OpFlushAll) }},
		{"flush_all noreply\r\n", func(t *testing.T, c *Command) {
			if c.Op != OpFlushAll || !c.NoReply || c.Exptime != 0 {
				t.Errorf("%+v", c)
			}
		}},
		{"flush_all 10 noreply\r\n", func(t *testing.T, c *Command) {
			if c.Exptime != 10 || !c.NoReply {
				t.Errorf("%+v", c)
			}
		}},
		{"version\r\n", func(t *testing.T, c *Command) { expectOp(t, c, OpVersion) }},
		{"verbosity 3\r\n", func(t *testing.T, c *Command) {
			if c.Op != OpVerbosity || c.Value != 3 {
				t.Errorf("%+v", c)
			}
		}},
		{"quit\r\n", func(t *testing.T, c *Command) { expectOp(t, c, OpQuit) }},
		{"stats settings\r\n", func(t *testing.T, c *Command) {
			if c.Op != OpStats || len(c.Args) != 1 || string(c.Args[0]) != "settings" {
				t.Errorf("%+v", c)
			}
		}},
		{"bget k\r\n", func(t *testing.T, c *Command) { expectOp(t, c, OpGet) }},
		{"mn\r\n", func(t *testing.T, c *Command) { expectOp(t, c, OpMetaNoop) }},
		{"mg k v f t c s k O123 q\r\n", func(t *testing.T, c *Command) {
			m := c.Meta
			if c.Op != OpMetaGet || !m.Value || !m.Quiet || len(m.Tokens) != 8 {
				t.Errorf("%+v", c)
			}
		}},
		{"ms k 2 T10 F7 C99 I MA\r\nhi\r\n", func(t *testing.T, c *Command) {
			m := c.Meta
			if c.Op != OpMetaSet || string(c.Data) != "hi" || m.Exptime != 10 || m.ClientFlags != 7 ||
				!m.HasCAS || m.CompareCAS != 99 || !m.SetStale || m.Mode != 'A' {
				t.Errorf("%+v", c)
			}
		}},
		{"ms aGk= 1 b\r\nx\r\n", func(t *testing.T, c *Command) {
			if string(c.Key) != "hi" || !c.Meta.KeyBinary {
				t.Errorf("%q", c.Key)
			}
		}},
		{"md k I T30 q\r\n", func(t *testing.T, c *Command) {
			if c.Op != OpMetaDelete || !c.Meta.SetStale || !c.Meta.NewTTL || c.Meta.Exptime != 30 {
				t.Errorf("%+v", c)
			}
		}},
		{"ma k N0 J13 D2 MD\r\n", func(t *testing.T, c *Command) {
			m := c.Meta
			if c.Op != OpMetaArith || !m.Vivify || m.Initial != 13 || m.Delta != 2 || m.Mode != 'D' {
				t.Errorf("%+v", c)
			}
		}},
		{"ma k\r\n", func(t *testing.T, c *Command) {
			if c.Meta.Delta != 1 {
				t.Errorf("default delta %d", c.Meta.Delta)
			}
		}},
		{"me k\r\n", func(t *testing.T, c *Command) { expectOp(t, c, OpMetaDebug) }},
	}
	for _, tc := range tests {
		t.Run(strings.TrimSpace(tc.in[:min(len(tc.in), 30)]), func(t *testing.T) {
			var p Parser
			c, n, err := parseAll(t, &p, tc.in+"get next\r\n")
			if err != nil {
				t.Fatalf("Parse(%q): %v", tc.in, err)
			}
			if n != len(tc.in) {
				t.Errorf("consumed %d of %d", n, len(tc.in))
			}
			tc.check(t, c)
		})
	}
}

func expectOp(t *testing.T, c *Command, op Op) {
	t.Helper()
	if c.Op != op {
		t.Errorf("op %v, want %v", c.Op, op)
	}
}

// TestParseShouldFail is the must-fail corpus: every input yields a named
// error whose Reply is memcached 1.6.18's exact line (the same strings are
// checked against the daemon in TestTranscripts).
func TestParseShouldFail(t *testing.T) {
	long := strings.Repeat("k", 251)
	tests := []struct {
		in      string
		err     error
		noreply bool
		swallow int
	}{
		{"\r\n", ErrUnknownCommand, false, 0},
		{"x\r\n", ErrUnknownCommand, false, 0},
		{"bogus\r\n", ErrUnknownCommand, false, 0},
		{"GET k\r\n", ErrUnknownCommand, false, 0},
		{"get\r\n", ErrUnknownCommand, false, 0},
		{"gets\r\n", ErrUnknownCommand, false, 0},
		{"gxt k\r\n", ErrUnknownCommand, false, 0},
		{"set k 0 0\r\n", ErrUnknownCommand, false, 0},
		{"set k 0 0 1 noreply extra\r\n", ErrUnknownCommand, false, 0},
		{"cas k 0 0 1\r\n", ErrUnknownCommand, false, 0},
		{"incr k\r\n", ErrUnknownCommand, false, 0},
		{"decr k 1 2 3\r\n", ErrUnknownCommand, false, 0},
		{"touch k\r\n", ErrUnknownCommand, false, 0},
		{"delete\r\n", ErrUnknownCommand, false, 0},
		{"delete a b c d e\r\n", ErrUnknownCommand, false, 0},
		{"verbosity\r\n", ErrUnknownCommand, false, 0},
		{"flush_all 1 2 3\r\n", ErrUnknownCommand, false, 0},
		{"mg\r\n", ErrUnknownCommand, false, 0},
		{"mz k\r\n", ErrUnknownCommand, false, 0},
		{"cache_memlimit x\r\n", ErrUnknownCommand, false, 0},
		{"set " + long + " 0 0 1\r\n", ErrBadCommandLine, false, 0},
		{"set k x 0 1\r\n", ErrBadCommandLine, false, 0},
		{"set k -1 0 1\r\n", ErrBadCommandLine, false, 0},
		{"set k 18446744073709551616 0 1\r\n", ErrBadCommandLine, false, 0},
		{"set k 0 1x 1\r\n", ErrBadCommandLine, false, 0},
		{"set k 0 0 -1\r\n", ErrBadCommandLine, false, 0},
		{"set k 0 0 2147483647\r\n", ErrBadCommandLine, false, 0},
		{"set k 0 0 4294967295\r\n", ErrBadCommandLine, false, 0},
		{"set k 0 0 x noreply\r\n", ErrBadCommandLine, true, 0},
		{"cas k 0 0 1 x\r\n", ErrBadCommandLine, false, 0},
		{"cas k 0 0 1 -1\r\n", ErrBadCommandLine, false, 0},
		{"get a " + long + "\r\n", ErrBadCommandLine, false, 0},
		{"delete " + long + "\r\n", ErrBadCommandLine, false, 0},
		{"incr " + long + " 1\r\n", ErrBadCommandLine, false, 0},
		{"verbosity x\r\n", ErrBadCommandLine, false, 0},
		{"slabs automove invalid\r\n", ErrBadCommandLine, false, 0},
		{"set k 0 0 1\r\nxy\r\n", ErrBadDataChunk, false, 0},
		{"set k 0 0 1 noreply\r\nx\n\r\n", ErrBadDataChunk, true, 0},
		{"set k 0 0 1048577\r\n", ErrTooLarge, false, 1048579},
		{"set k 1 0 1048513\r\n", ErrTooLarge, false, 1048515},
		{"set k 0 0 2000000 noreply\r\n", ErrTooLarge, true, 2000002},
		{"gat x k\r\n", ErrBadExptime, false, 0},
		{"touch k x\r\n", ErrBadExptime, false, 0},
		{"flush_all x\r\n", ErrBadExptime, false, 0},
		{"flush_all x noreply\r\n", ErrBadExptime, true, 0},
		{"incr k -1\r\n", ErrBadDelta, false, 0},
		{"incr k 18446744073709551616\r\n", ErrBadDelta, false, 0},
		{"decr k 1x\r\n", ErrBadDelta, false, 0},
		{"delete k 5\r\n", ErrDeleteUsage, false, 0},
		{"delete k 5 noreply\r\n", ErrDeleteUsage, true, 0},
		{"GET / HTTP/1.1\r\n", ErrHTTPRequest, false, 0},
		{"POST /x HTTP/1.0\r\n", ErrHTTPRequest, false, 0},
		{"mg k Q\r\n", ErrMetaInvalidFlag, false, 0},
		{"mg k v v\r\n", ErrMetaDuplicateFlag, false, 0},
		{"mg k F\r\n", ErrBadCommandLine, false, 0},
		{"mg k T\r\n", ErrMetaBadToken, false, 0},
		{"mg k O" + strings.Repeat("x", 32) + "\r\n", ErrMetaOpaqueLong, false, 0},
		{"mg !!! b\r\n", ErrMetaKeyDecode, false, 0},
		{"mg " + long + "\r\n", ErrBadCommandLine, false, 0},
		{"mg k" + strings.Repeat(" a", 18) + "\r\n", ErrMetaFlagsLong, false, 0},
		{"md k x\r\n", ErrMetaInvalidOrDup, false, 0},
		{"ma k Dx\r\n", ErrMetaInvalidOrDup, false, 0},
		{"ma k MX\r\n", ErrMetaArithMode, false, 0},
		{"ms k\r\n", ErrBadCommandLine, false, 0},
		{"ms k S2\r\n", ErrBadCommandLine, false, 0},
		{"ms k 1 Z\r\n", ErrMetaInvalidFlag, false, 3},
		{"ms k 1 MX\r\n", ErrMetaSetMode, false, 3},
		{"ms k 1 Mxx\r\n", ErrMetaMLength, false, 3},
		{"ms k 1048577\r\n", ErrTooLarge, false, 1048579},
		{"me\r\n", ErrBadCommandLine, false, 0},
		{strings.Repeat("x", 2049), ErrLineTooLong, false, 0},
		{strings.Repeat(" ", 101) + "get " + strings.Repeat("k", 2000), ErrLineTooLong, false, 0},
	}
	for _, tc := range tests {
		var p Parser
		c, _, err := p.Parse([]byte(tc.in))
		if err != tc.err {
			t.Errorf("Parse(%.40q) = %v, want %v", tc.in, err, tc.err)
			continue
		}
		if c.NoReply != tc.noreply || c.Swallow != tc.swallow {
			t.Errorf("Parse(%.40q): noreply %v swallow %d, want %v %d", tc.in, c.NoReply, c.Swallow, tc.noreply, tc.swallow)
		}
		var pe *Error
		if !errors.As(err, &pe) || !strings.HasPrefix(err.Error(), "cache: ") {
			t.Errorf("error %v is not a prefixed *Error", err)
		}
	}
}

func TestParseIncomplete(t *testing.T) {
	for _, in := range []string{"", "get k", "set k 0 0 5\r\nab", "set k 0 0 5\r\nabcde\r", strings.Repeat("x", 2048),
		"get " + strings.Repeat("k ", 3000)} {
		var p Parser
		if _, n, err := p.Parse([]byte(in)); err != ErrIncomplete || n != 0 {
			t.Errorf("Parse(%.30q) = %d, %v", in, n, err)
		}
	}
	var p Parser
	p.Parse([]byte("set k 0 0 5\r\nab"))
	if p.Need != len("set k 0 0 5\r\nabcde\r\n") {
		t.Errorf("Need = %d", p.Need)
	}
}

// splitCorpus is a pipelined stream mixing every command shape.
const splitCorpus = "set a 0 0 3\r\nabc\r\nget a b\r\ngets a\r\nset b 1 2 0 noreply\r\n\r\n" +
	"cas a 0 0 1 5\r\nx\r\nincr n 1\r\ndelete a \r\nbogus\r\n\r\nset c 0 0 1\r\nxy\r\n" +
	"mg a v k O1\r\nms m 2 T5\r\nhi\r\nmd m q\r\nma n N0 J5\r\nmn\r\nflush_all\r\nversion\r\n"

type parsed struct {
	op      Op
	key     string
	keys    string
	data    string
	err     error
	n       int
	noreply bool
}

func parseStream(t testing.TB, chunks [][]byte) []parsed {
	var p Parser
	var out []parsed
	var buf []byte
	for _, ch := range chunks {
		buf = append(buf, ch...)
		for {
			c, n, err := p.Parse(buf)
			if err == ErrIncomplete {
				break
			}
			out = append(out, parsed{c.Op, string(c.Key), strings.Join(keysOf(c), ","), string(c.Data), err, n, c.NoReply})
			buf = buf[n:]
			if n == 0 {
				t.Fatalf("no progress with %v", err)
			}
		}
	}
	if len(buf) != 0 {
		t.Fatalf("left over %q", buf)
	}
	return out
}

// TestParseSplitEverywhere feeds the corpus split at every byte boundary,
// and byte by byte, and expects the same commands as in one piece.
func TestParseSplitEverywhere(t *testing.T) {
	in := []byte(splitCorpus)
	whole := parseStream(t, [][]byte{in})
	if len(whole) != 18 {
		t.Fatalf("parsed %d commands: %+v", len(whole), whole)
	}
	same := func(got []parsed) bool {
		if len(got) != len(whole) {
			return false
		}
		for i := range got {
			if got[i] != whole[i] {
				return false
			}
		}
		return true
	}
	for i := 1; i < len(in); i++ {
		if got := parseStream(t, [][]byte{in[:i], in[i:]}); !same(got) {
			t.Fatalf("split at %d: %+v", i, got)
		}
	}
	var bytewise [][]byte
	for i := range in {
		bytewise = append(bytewise, in[i:i+1])
	}
	if !same(parseStream(t, bytewise)) {
		t.Fatal("byte-by-byte parse differs")
	}
}

func TestSafeStrto(t *testing.T) {
	u := []struct {
		in string
		v  uint32
		ok bool
	}{
		{"0", 0, true}, {"4294967295", 4294967295, true}, {"4294967296", 0, true}, {"-1", 0, false},
		{"-0", 0, true}, {"+7", 7, true}, {"\t7", 7, true}, {"7\t", 7, true}, {"", 0, false}, {"x", 0, false},
		{"1x", 0, false}, {"18446744073709551615", 4294967295, true}, {"18446744073709551616", 0, false},
	}
	for _, tc := range u {
		if v, ok := safeStrtoul([]byte(tc.in)); v != tc.v || ok != tc.ok {
			t.Errorf("safeStrtoul(%q) = %d %v", tc.in, v, ok)
		}
	}
	l := []struct {
		in string
		v  int32
		ok bool
	}{
		{"-1", -1, true}, {"2147483648", -2147483648, true}, {"4294967296", 0, true},
		{"9223372036854775808", 0, false}, {"-9223372036854775808", 0, true}, {" 5", 5, true}, {"5 ", 5, true},
	}
	for _, tc := range l {
		if v, ok := safeStrtol([]byte(tc.in)); v != tc.v || ok != tc.ok {
			t.Errorf("safeStrtol(%q) = %d %v", tc.in, v, ok)
		}
	}
}

var fuzzSeeds = []string{
	splitCorpus,
	"get a b c\r\n", "gat 1 a\r\n", "set k 0 0 1 noreply\r\nx\r\n", "cas k 0 0 1 9\r\nx\r\n",
	"incr k 1\r\n", "delete k 0 noreply\r\n", "touch k -1\r\n", "flush_all 5\r\n", "stats items\r\n",
	"GET / HTTP/1.1\r\n", "set k 0 0 -1\r\n", "set k 0 0 99999999\r\n", "\x00\r\n", "get a\x00b\r\n",
	"mg k v c f t s k h l O1 q u N30 R5 T9\r\n", "ms k 1 b c k I C5 MS F3\r\nx\r\n", "md k I T1 q C2\r\n",
	"ma k N1 J2 D3 M- v t c\r\n", "me k b\r\n", "mg aGk= b k\r\n", strings.Repeat(" ", 50) + "get k\r\n",
}

// FuzzParse checks the text and meta parser never panics, always makes
// progress or asks for more input, and never reads past its input.
func FuzzParse(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var p Parser
		p.MaxItemSize = 4096
		buf := in
		for len(buf) > 0 {
			c, n, err := p.Parse(buf)
			if err == ErrIncomplete {
				if n != 0 {
					t.Fatalf("incomplete consumed %d", n)
				}
				return
			}
			var pe *Error
			if err != nil && !errors.As(err, &pe) {
				t.Fatalf("unnamed error %v", err)
			}
			if pe != nil && pe.Close {
				return
			}
			if n <= 0 || n > len(buf) {
				t.Fatalf("consumed %d of %d", n, len(buf))
			}
			if err == nil && c.Op.IsStorage() && len(c.Data) != c.Bytes {
				t.Fatalf("data %d bytes, declared %d", len(c.Data), c.Bytes)
			}
			buf = buf[n:]
			if c.Swallow > 0 {
				buf = buf[min(c.Swallow, len(buf)):]
			}
		}
	})
}

// FuzzParseSplit checks that splitting the input in two never changes the
// parse.
func FuzzParseSplit(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s), uint16(len(s)/2))
	}
	f.Fuzz(func(t *testing.T, in []byte, at uint16) {
		if bytes.IndexByte(in, 0x80) == 0 {
			return
		}
		cut := int(at) % (len(in) + 1)
		a := collect(in, [][]byte{in})
		b := collect(in, [][]byte{in[:cut], in[cut:]})
		if len(a) != len(b) {
			t.Fatalf("whole %d commands, split %d", len(a), len(b))
		}
		for i := range a {
			if a[i] != b[i] {
				t.Fatalf("command %d differs: %+v vs %+v", i, a[i], b[i])
			}
		}
	})
}

// collect parses chunks as a connection would (honouring Swallow and
// stopping at closing errors).
func collect(_ []byte, chunks [][]byte) []parsed {
	var p Parser
	p.MaxItemSize = 4096
	var out []parsed
	var buf []byte
	swallow := 0
	for _, ch := range chunks {
		buf = append(buf, ch...)
		for {
			if swallow > 0 {
				k := min(swallow, len(buf))
				buf, swallow = buf[k:], swallow-k
				if swallow > 0 {
					break
				}
			}
			c, n, err := p.Parse(buf)
			if err == ErrIncomplete {
				break
			}
			out = append(out, parsed{c.Op, string(c.Key), strings.Join(keysOf(c), ","), string(c.Data), err, n, c.NoReply})
			var pe *Error
			if errors.As(err, &pe) && pe.Close {
				return out
			}
			buf = buf[n:]
			swallow = c.Swallow
		}
	}
	return out
}
