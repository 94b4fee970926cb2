package cache

import (
	"encoding/base64"
	"math"
)

// MetaFlags is the pre-parsed flag list of a meta command (memcached's
// _meta_flag_preparse). Tokens keeps every flag token in request order,
// because replies echo flags in that order.
type MetaFlags struct {
	Tokens [][]byte

	NoUpdate  bool // u
	Vivify    bool // N
	Value     bool // v
	SetStale  bool // I
	Quiet     bool // q
	HasCAS    bool // C
	NewTTL    bool // T
	KeyBinary bool // b
	Mode      byte // M

	Exptime        int32 // T
	AutovivExptime int32 // N
	RecacheTime    int32 // R
	ClientFlags    uint32
	CompareCAS     uint64 // C
	Delta          uint64 // D (default 1 for ma)
	Initial        uint64 // J
}

const (
	metaMaxOptTokens = 20 // MFLAG_MAX_OPT_LENGTH, compared with ntokens
	metaMaxOpaque    = 32 // MFLAG_MAX_OPAQUE_LENGTH, the O included
)

var (
	errMetaDefault = ErrBadCommandLine
)

// preparse is memcached's _meta_flag_preparse. It decodes a base64 key in
// place of c.Key (into a fresh slice) and returns the error string memcached
// would use, or nil.
func preparseMeta(c *Command, flags [][]byte) error {
	m := &c.Meta
	var seen [127]bool
	var errv error
	hasErr := false
	for _, t := range flags {
		o := t[0]
		if o >= 127 || seen[o] {
			return ErrMetaDuplicateFlag
		}
		seen[o] = true
		switch o {
		case 'b':
			dec := make([]byte, base64.StdEncoding.DecodedLen(len(c.Key)))
			n, err := base64.StdEncoding.Decode(dec, c.Key)
			if err != nil || n == 0 {
				errv, hasErr = ErrMetaKeyDecode, true
				dec = dec[:0]
			}
			c.Key = dec[:n]
			m.KeyBinary = true
		case 'N', 'T', 'R':
			v, ok := safeStrtol(t[1:])
			if !ok {
				errv, hasErr = ErrMetaBadToken, true
				break
			}
			switch o {
			case 'N':
				m.Vivify = true
				m.AutovivExptime = v
			case 'T':
				m.Exptime = v
				m.NewTTL = true
			case 'R':
				m.RecacheTime = v
			}
		case 'l', 'O', 'P', 'L', 'k', 's', 't', 'c', 'f', 'h':
		case 'v':
			m.Value = true
		case 'u':
			m.NoUpdate = true
		case 'q':
			m.Quiet = true
		case 'F':
			v, ok := safeStrtoul(t[1:])
			if !ok {
				hasErr = true
				break
			}
			m.ClientFlags = v
		case 'C':
			v, ok := safeStrtoull(t[1:])
			if !ok {
				errv, hasErr = ErrMetaBadToken, true
				break
			}
			m.CompareCAS = v
			m.HasCAS = true
		case 'M':
			if len(t) != 2 {
				errv, hasErr = ErrMetaMLength, true
				break
			}
			m.Mode = t[1]
		case 'J':
			v, ok := safeStrtoull(t[1:])
			if !ok {
				errv, hasErr = ErrMetaInitial, true
				break
			}
			m.Initial = v
		case 'D':
			v, ok := safeStrtoull(t[1:])
			if !ok {
				errv, hasErr = ErrMetaDeltaValue, true
				break
			}
			m.Delta = v
		case 'I':
			m.SetStale = true
		default:
			return ErrMetaInvalidFlag
		}
	}
	if hasErr {
		if errv == nil {
			errv = errMetaDefault
		}
		return errv
	}
	return nil
}

// checkOpaque applies the O-token length limit that memcached checks while
// building the reply.
func checkOpaque(flags [][]byte) error {
	for _, t := range flags {
		if t[0] == 'O' && len(t) > metaMaxOpaque {
			return ErrMetaOpaqueLong
		}
	}
	return nil
}

func (p *Parser) parseMeta(buf []byte, consumed int, toks [][]byte, which byte) (*Command, int, error) {
	c := &p.cmd
	ntokens := len(toks) + 1
	switch which {
	case 'n':
		c.Op = OpMetaNoop
		return c, consumed, nil
	case 'e':
		c.Op = OpMetaDebug
		if ntokens < 3 || len(toks[1]) > keyMaxLength {
			return c, consumed, ErrBadCommandLine
		}
		c.Key = toks[1]
		if ntokens >= 4 && string(toks[2]) == "b" {
			dec := make([]byte, base64.StdEncoding.DecodedLen(len(c.Key)))
			n, err := base64.StdEncoding.Decode(dec, c.Key)
			if err != nil || n == 0 {
				return c, consumed, ErrBadCommandLine
			}
			c.Key = dec[:n]
			c.Meta.KeyBinary = true
		}
		return c, consumed, nil
	case 'g', 'd', 'a':
		switch which {
		case 'g':
			c.Op = OpMetaGet
		case 'd':
			c.Op = OpMetaDelete
		case 'a':
			c.Op = OpMetaArith
			c.Meta.Delta = 1
		}
		if ntokens < 3 {
			return c, consumed, ErrUnknownCommand
		}
		c.Key = toks[1]
		if len(c.Key) > keyMaxLength {
			return c, consumed, ErrBadCommandLine
		}
		if ntokens > metaMaxOptTokens {
			if which == 'g' {
				return c, consumed, ErrMetaFlagsLong
			}
			return c, consumed, ErrMetaFlagsTooLong
		}
		flags := toks[2:]
		c.Meta.Tokens = flags
		if err := preparseMeta(c, flags); err != nil {
			if which != 'g' {
				return c, consumed, ErrMetaInvalidOrDup
			}
			return c, consumed, err
		}
		if which == 'a' {
			switch c.Meta.Mode {
			case 0, 'I', '+', 'D', '-':
			default:
				return c, consumed, ErrMetaArithMode
			}
		}
		return c, consumed, checkOpaque(flags)
	case 's':
		c.Op = OpMetaSet
		if ntokens < 3 {
			return c, consumed, ErrUnknownCommand
		}
		c.Key = toks[1]
		if len(c.Key) > keyMaxLength || ntokens == 3 {
			return c, consumed, ErrBadCommandLine
		}
		if ntokens > metaMaxOptTokens {
			return c, consumed, ErrMetaFlagsTooLong
		}
		vlen, ok := safeStrtol(toks[2])
		if !ok || vlen < 0 || vlen > math.MaxInt32-2 {
			return c, consumed, ErrBadCommandLine
		}
		flags := toks[3:]
		c.Meta.Tokens = flags
		err := preparseMeta(c, flags)
		if err == nil {
			err = checkOpaque(flags)
		}
		if err == nil {
			switch c.Meta.Mode {
			case 0, 'E', 'A', 'P', 'R', 'S':
			default:
				err = ErrMetaSetMode
			}
		}
		if err != nil {
			c.Bytes = int(vlen)
			c.Swallow = int(vlen) + 2
			return c, consumed, err
		}
		c.Flags = c.Meta.ClientFlags
		c.Exptime = c.Meta.Exptime
		return p.readData(buf, consumed, int(vlen), c.Flags)
	}
	return c, consumed, ErrUnknownCommand
}
