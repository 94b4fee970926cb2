package cache

import (
	"bytes"
	"math"
)

// Op identifies a parsed command.
type Op uint8

// Commands of the text and meta protocols.
const (
	OpNone Op = iota
	OpGet
	OpGets
	OpGat
	OpGats
	OpSet
	OpAdd
	OpReplace
	OpAppend
	OpPrepend
	OpCas
	OpDelete
	OpIncr
	OpDecr
	OpTouch
	OpFlushAll
	OpVersion
	OpVerbosity
	OpQuit
	OpStats
	OpShutdown
	OpCacheMemlimit
	OpSlabsAutomove
	OpSlabsReassign
	OpRefreshCerts
	OpWatch      // not implemented: parsed only so that -W can refuse it as memcached does
	OpMetaGet    // mg
	OpMetaSet    // ms
	OpMetaDelete // md
	OpMetaArith  // ma
	OpMetaNoop   // mn
	OpMetaDebug  // me
)

var opNames = [...]string{
	OpNone: "none", OpGet: "get", OpGets: "gets", OpGat: "gat", OpGats: "gats",
	OpSet: "set", OpAdd: "add", OpReplace: "replace", OpAppend: "append",
	OpPrepend: "prepend", OpCas: "cas", OpDelete: "delete", OpIncr: "incr",
	OpDecr: "decr", OpTouch: "touch", OpFlushAll: "flush_all", OpVersion: "version",
	OpVerbosity: "verbosity", OpQuit: "quit", OpStats: "stats", OpShutdown: "shutdown",
	OpCacheMemlimit: "cache_memlimit", OpSlabsAutomove: "slabs automove",
	OpSlabsReassign: "slabs reassign", OpRefreshCerts: "refresh_certs", OpWatch: "watch", OpMetaGet: "mg", OpMetaSet: "ms",
	OpMetaDelete: "md", OpMetaArith: "ma", OpMetaNoop: "mn", OpMetaDebug: "me",
}

func (o Op) String() string {
	if int(o) < len(opNames) {
		return opNames[o]
	}
	return "unknown"
}

// IsStorage reports whether o carries a data block (set, add, replace,
// append, prepend, cas, ms).
func (o Op) IsStorage() bool {
	return (o >= OpSet && o <= OpCas) || o == OpMetaSet
}

// Command is one parsed request. Byte slices alias the buffer handed to
// Parse and are valid until that buffer is modified; the Command itself is
// reused by the next Parse call on the same Parser.
type Command struct {
	Op      Op
	Key     []byte   // single-key commands
	Keys    [][]byte // get, gets, gat, gats
	Flags   uint32   // client flags of storage commands
	Exptime int32    // raw exptime: storage, touch, gat, flush_all delay
	Bytes   int      // declared data length of storage commands
	Data    []byte   // data block without its CRLF
	CAS     uint64   // cas unique of the cas command
	Delta   uint64   // incr/decr
	Value   uint32   // verbosity level, cache_memlimit MB, slabs automove level
	NoReply bool     // reply (errors included) must be suppressed
	Args    [][]byte // stats subcommand and its arguments
	Swallow int      // bytes following this command to discard (object too large, ms errors)
	SlabSrc int32    // slabs reassign
	SlabDst int32
	Meta    MetaFlags
}

const (
	maxTokens      = 24      // memcached MAX_TOKENS, the terminator included
	keyMaxLength   = 250     // KEY_MAX_LENGTH
	maxLineNoNL    = 2048    // longest buffered text without a newline before memcached gives up
	maxGetLine     = 8 << 20 // our cap on a single multi-get line
	itemHeaderSize = 48      // sizeof(item) on 64-bit memcached 1.6.18
	casSize        = 8
	flagsSize      = 4
)

// itemTotal is memcached's ITEM_ntotal: the accounted size of an item with
// CAS enabled. A non-zero flags value costs 4 more bytes.
func itemTotal(nkey, nvalue int, flags uint32) int {
	n := itemHeaderSize + casSize + nkey + 1 + nvalue + 2
	if flags != 0 {
		n += flagsSize
	}
	return n
}

// Parser parses the memcached text and meta protocols. It keeps no
// connection state; the zero value uses DefaultMaxItemSize.
type Parser struct {
	MaxItemSize int

	// Need is set when Parse returns ErrIncomplete for a command whose
	// length is known (a storage command waiting for its data block): the
	// buffer must hold at least Need bytes before parsing again. It is 0
	// when the parser is waiting for a newline.
	Need int

	cmd  Command
	toks [maxTokens][]byte
}

// tokenize is memcached's tokenize_command: split on single spaces,
// ignoring runs, at most max-1 tokens; rest is the unsplit remainder
// (nil when the whole line was consumed).
func tokenize(line []byte, toks *[maxTokens][]byte) (n int, rest []byte) {
	s := 0
	e := 0
	for ; e < len(line); e++ {
		if line[e] != ' ' {
			continue
		}
		if s != e {
			toks[n] = line[s:e]
			n++
			if n == maxTokens-1 {
				e++
				if e < len(line) {
					rest = line[e:]
				}
				return n, rest
			}
		}
		s = e + 1
	}
	if s != e {
		toks[n] = line[s:e]
		n++
	}
	return n, nil
}

// Parse parses the first command in buf. It returns the command, the number
// of bytes it consumed, and an error: nil, ErrIncomplete (nothing consumed),
// or a protocol *Error. With a protocol error the returned Command is still
// meaningful: NoReply says whether the reply is suppressed, Swallow how many
// following bytes belong to the failed command, and Op/Key what was being
// attempted (memcached deletes the old value when a set is too large).
func (p *Parser) Parse(buf []byte) (*Command, int, error) {
	p.Need = 0
	keys := p.cmd.Keys[:0]
	args := p.cmd.Args[:0]
	p.cmd = Command{Keys: keys, Args: args}
	c := &p.cmd

	nl := bytes.IndexByte(buf, '\n')
	if nl < 0 {
		if len(buf) > maxLineNoNL {
			i := 0
			for i < len(buf) && buf[i] == ' ' {
				i++
			}
			rest := buf[i:]
			if i > 100 || !(bytes.HasPrefix(rest, []byte("get ")) || bytes.HasPrefix(rest, []byte("gets "))) {
				return c, 0, ErrLineTooLong
			}
			if len(buf) > maxGetLine {
				return c, 0, ErrLineTooLong
			}
		}
		return c, 0, ErrIncomplete
	}
	consumed := nl + 1
	line := buf[:nl]
	if nl > 1 && line[nl-1] == '\r' {
		line = line[:nl-1]
	}
	// memcached treats the line as a C string.
	if z := bytes.IndexByte(line, 0); z >= 0 {
		line = line[:z]
	}
	n, rest := tokenize(line, &p.toks)
	toks := p.toks[:n]
	ntokens := n + 1 // memcached counts the terminal token

	if ntokens < 2 || len(toks[0]) < 2 {
		return c, consumed, ErrUnknownCommand
	}
	name := toks[0]
	first := name[0]

	switch {
	case first == 'm' && len(name) == 2:
		return p.parseMeta(buf, consumed, toks, name[1])
	case first == 'g':
		if ntokens < 3 {
			return c, consumed, ErrUnknownCommand
		}
		switch string(name) {
		case "get":
			c.Op = OpGet
		case "gets":
			c.Op = OpGets
		case "gat":
			c.Op = OpGat
		case "gats":
			c.Op = OpGats
		default:
			return c, consumed, ErrUnknownCommand
		}
		return c, consumed, p.parseGet(toks, rest)
	case first == 's':
		switch string(name) {
		case "set":
			c.Op = OpSet
			return p.parseUpdate(buf, consumed, toks, false)
		case "stats":
			c.Op = OpStats
			c.Args = append(c.Args, toks[1:]...)
			return c, consumed, nil
		case "shutdown":
			c.Op = OpShutdown
			c.Args = append(c.Args, toks[1:]...)
			return c, consumed, nil
		case "slabs":
			return c, consumed, p.parseSlabs(toks)
		}
		return c, consumed, ErrUnknownCommand
	case first == 'a':
		switch string(name) {
		case "add":
			c.Op = OpAdd
		case "append":
			c.Op = OpAppend
		default:
			return c, consumed, ErrUnknownCommand
		}
		return p.parseUpdate(buf, consumed, toks, false)
	case first == 'c':
		switch string(name) {
		case "cas":
			c.Op = OpCas
			return p.parseUpdate(buf, consumed, toks, true)
		case "cache_memlimit":
			if ntokens != 3 && ntokens != 4 {
				return c, consumed, ErrUnknownCommand
			}
			c.Op = OpCacheMemlimit
			c.NoReply = noreply(toks)
			v, ok := safeStrtoul(toks[1])
			if !ok {
				return c, consumed, ErrUnknownCommand
			}
			c.Value = v
			return c, consumed, nil
		}
		return c, consumed, ErrUnknownCommand
	case first == 'i':
		if string(name) != "incr" {
			return c, consumed, ErrUnknownCommand
		}
		c.Op = OpIncr
		return c, consumed, p.parseArith(toks)
	case first == 'd':
		switch string(name) {
		case "delete":
			if ntokens < 3 || ntokens > 5 {
				return c, consumed, ErrUnknownCommand
			}
			c.Op = OpDelete
			return c, consumed, p.parseDelete(toks)
		case "decr":
			c.Op = OpDecr
			return c, consumed, p.parseArith(toks)
		}
		return c, consumed, ErrUnknownCommand
	case first == 't':
		if string(name) != "touch" {
			return c, consumed, ErrUnknownCommand
		}
		if ntokens != 4 && ntokens != 5 {
			return c, consumed, ErrUnknownCommand
		}
		c.Op = OpTouch
		c.NoReply = noreply(toks)
		c.Key = toks[1]
		if len(c.Key) > keyMaxLength {
			return c, consumed, ErrBadCommandLine
		}
		e, ok := safeStrtol(toks[2])
		if !ok {
			return c, consumed, ErrBadExptime
		}
		c.Exptime = e
		return c, consumed, nil
	}

	switch string(name) {
	case "replace":
		c.Op = OpReplace
		return p.parseUpdate(buf, consumed, toks, false)
	case "prepend":
		c.Op = OpPrepend
		return p.parseUpdate(buf, consumed, toks, false)
	case "bget":
		if ntokens < 3 {
			return c, consumed, ErrUnknownCommand
		}
		c.Op = OpGet
		return c, consumed, p.parseGet(toks, rest)
	case "flush_all":
		if ntokens < 2 || ntokens > 4 {
			return c, consumed, ErrUnknownCommand
		}
		c.Op = OpFlushAll
		c.NoReply = noreply(toks)
		want := 2
		if c.NoReply {
			want = 3
		}
		if ntokens != want {
			e, ok := safeStrtol(toks[1])
			if !ok {
				return c, consumed, ErrBadExptime
			}
			c.Exptime = e
		}
		return c, consumed, nil
	case "version":
		c.Op = OpVersion
		return c, consumed, nil
	case "watch":
		c.Op = OpWatch
		return c, consumed, ErrUnknownCommand
	case "quit":
		c.Op = OpQuit
		return c, consumed, nil
	case "refresh_certs":
		c.Op = OpRefreshCerts
		c.NoReply = noreply(toks)
		return c, consumed, nil
	case "verbosity":
		if ntokens != 3 && ntokens != 4 {
			return c, consumed, ErrUnknownCommand
		}
		c.Op = OpVerbosity
		c.NoReply = noreply(toks)
		v, ok := safeStrtoul(toks[1])
		if !ok {
			return c, consumed, ErrBadCommandLine
		}
		c.Value = v
		return c, consumed, nil
	}
	if bytes.HasPrefix(toks[len(toks)-1], []byte("HTTP/")) {
		return c, consumed, ErrHTTPRequest
	}
	return c, consumed, ErrUnknownCommand
}

// noreply is memcached's set_noreply_maybe: the last token is "noreply".
func noreply(toks [][]byte) bool {
	return len(toks) > 0 && string(toks[len(toks)-1]) == "noreply"
}

func (p *Parser) parseGet(toks [][]byte, rest []byte) error {
	c := &p.cmd
	keys := toks[1:]
	if c.Op == OpGat || c.Op == OpGats {
		e, ok := safeStrtol(toks[1])
		if !ok {
			return ErrBadExptime
		}
		c.Exptime = e
		keys = toks[2:]
	}
	for {
		for _, k := range keys {
			if len(k) > keyMaxLength {
				return ErrBadCommandLine
			}
			c.Keys = append(c.Keys, k)
		}
		if rest == nil {
			return nil
		}
		var n int
		n, rest = tokenize(rest, &p.toks)
		keys = p.toks[:n]
	}
}

func (p *Parser) parseUpdate(buf []byte, consumed int, toks [][]byte, withCAS bool) (*Command, int, error) {
	c := &p.cmd
	ntokens := len(toks) + 1
	if withCAS {
		if ntokens != 7 && ntokens != 8 {
			return c, consumed, ErrUnknownCommand
		}
	} else if ntokens != 6 && ntokens != 7 {
		return c, consumed, ErrUnknownCommand
	}
	c.NoReply = noreply(toks)
	c.Key = toks[1]
	if len(c.Key) > keyMaxLength {
		return c, consumed, ErrBadCommandLine
	}
	flags, ok1 := safeStrtoul(toks[2])
	exptime, ok2 := safeStrtol(toks[3])
	vlen, ok3 := safeStrtol(toks[4])
	if !ok1 || !ok2 || !ok3 {
		return c, consumed, ErrBadCommandLine
	}
	c.Flags, c.Exptime = flags, exptime
	if withCAS {
		cas, ok := safeStrtoull(toks[5])
		if !ok {
			return c, consumed, ErrBadCommandLine
		}
		c.CAS = cas
	}
	if vlen < 0 || vlen > math.MaxInt32-2 {
		return c, consumed, ErrBadCommandLine
	}
	return p.readData(buf, consumed, int(vlen), flags)
}

// readData expects vlen bytes and a CRLF after the command line.
func (p *Parser) readData(buf []byte, consumed, vlen int, flags uint32) (*Command, int, error) {
	c := &p.cmd
	c.Bytes = vlen
	if itemTotal(len(c.Key), vlen, flags) > p.maxItem() {
		c.Swallow = vlen + 2
		return c, consumed, ErrTooLarge
	}
	end := consumed + vlen + 2
	if len(buf) < end {
		p.Need = end
		return c, 0, ErrIncomplete
	}
	if buf[end-2] != '\r' || buf[end-1] != '\n' {
		return c, end, ErrBadDataChunk
	}
	c.Data = buf[consumed : end-2]
	return c, end, nil
}

func (p *Parser) maxItem() int {
	if p.MaxItemSize > 0 {
		return p.MaxItemSize
	}
	return DefaultMaxItemSize
}

func (p *Parser) parseArith(toks [][]byte) error {
	c := &p.cmd
	if n := len(toks) + 1; n != 4 && n != 5 {
		return ErrUnknownCommand
	}
	c.NoReply = noreply(toks)
	c.Key = toks[1]
	if len(c.Key) > keyMaxLength {
		return ErrBadCommandLine
	}
	d, ok := safeStrtoull(toks[2])
	if !ok {
		return ErrBadDelta
	}
	c.Delta = d
	return nil
}

func (p *Parser) parseDelete(toks [][]byte) error {
	c := &p.cmd
	ntokens := len(toks) + 1
	if ntokens > 3 {
		holdIsZero := string(toks[2]) == "0"
		c.NoReply = noreply(toks)
		valid := (ntokens == 4 && (holdIsZero || c.NoReply)) ||
			(ntokens == 5 && holdIsZero && c.NoReply)
		if !valid {
			return ErrDeleteUsage
		}
	}
	c.Key = toks[1]
	if len(c.Key) > keyMaxLength {
		return ErrBadCommandLine
	}
	return nil
}

func (p *Parser) parseSlabs(toks [][]byte) error {
	c := &p.cmd
	ntokens := len(toks) + 1
	switch {
	case ntokens == 5 && string(toks[1]) == "reassign":
		c.Op = OpSlabsReassign
		src, ok1 := safeStrtol(toks[2])
		dst, ok2 := safeStrtol(toks[3])
		if !ok1 || !ok2 {
			return ErrBadCommandLine
		}
		c.SlabSrc, c.SlabDst = src, dst
		return nil
	case ntokens >= 4 && string(toks[1]) == "automove":
		c.Op = OpSlabsAutomove
		c.NoReply = noreply(toks)
		if string(toks[2]) == "ratio" {
			if ntokens < 5 || !validFloat(toks[3]) {
				return ErrUnknownCommand
			}
			c.Value = 0
			return nil
		}
		v, ok := safeStrtoul(toks[2])
		if !ok {
			return ErrBadCommandLine
		}
		if v > 2 {
			return ErrUnknownCommand
		}
		c.Value = v
		return nil
	}
	return ErrUnknownCommand
}

// validFloat is a loose stand-in for memcached's safe_strtod.
func validFloat(b []byte) bool {
	seen := false
	for i, ch := range b {
		switch {
		case ch >= '0' && ch <= '9':
			seen = true
		case ch == '.' || ((ch == '-' || ch == '+') && i == 0):
		default:
			return false
		}
	}
	return seen
}

// The safe_strto* family mirrors memcached's util.c on top of C's strtol
// and strtoul (base 10): leading C whitespace and a sign are accepted, at
// least one digit is required, and the number must end the token or be
// followed by whitespace.

func isCSpace(ch byte) bool { return ch == ' ' || (ch >= '\t' && ch <= '\r') }

// scanNumber returns the magnitude, sign, end index, whether any digit was
// seen and whether the magnitude overflowed uint64.
func scanNumber(b []byte) (mag uint64, neg bool, end int, ok, ovf bool) {
	i := 0
	for i < len(b) && isCSpace(b[i]) {
		i++
	}
	if i < len(b) && (b[i] == '+' || b[i] == '-') {
		neg = b[i] == '-'
		i++
	}
	start := i
	for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		d := uint64(b[i] - '0')
		if mag > (math.MaxUint64-d)/10 {
			ovf = true
		} else if !ovf {
			mag = mag*10 + d
		}
	}
	if i == start {
		return 0, false, 0, false, false
	}
	if i < len(b) && !isCSpace(b[i]) {
		return 0, false, 0, false, false
	}
	return mag, neg, i, true, ovf
}

// safeStrtoull is memcached's safe_strtoull.
func safeStrtoull(b []byte) (uint64, bool) {
	mag, neg, end, ok, ovf := scanNumber(b)
	if !ok || ovf {
		return 0, false
	}
	v := mag
	if neg {
		v = -mag
	}
	if int64(v) < 0 && bytes.IndexByte(b[:end], '-') >= 0 {
		return 0, false
	}
	return v, true
}

// safeStrtoul is memcached's safe_strtoul: a 64-bit strtoul truncated to
// 32 bits (so 4294967296 becomes 0, as in 1.6.18).
func safeStrtoul(b []byte) (uint32, bool) {
	v, ok := safeStrtoull(b)
	return uint32(v), ok
}

// safeStrtol is memcached's safe_strtol: a 64-bit strtol truncated to 32
// bits.
func safeStrtol(b []byte) (int32, bool) {
	mag, neg, _, ok, ovf := scanNumber(b)
	if !ok || ovf {
		return 0, false
	}
	if !neg && mag > math.MaxInt64 || neg && mag > 1<<63 {
		return 0, false
	}
	v := int64(mag)
	if neg {
		v = -v
	}
	return int32(v), true
}
