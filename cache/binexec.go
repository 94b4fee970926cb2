package cache

import (
	"bytes"
	"encoding/binary"
	"strconv"
)

// binConn is the binary-protocol state of a connection, allocated when
// the connection turns out to speak binary.
type binConn struct {
	p           BinaryParser
	saslStarted bool
	hdr         []byte
}

// binHeader writes a response header for req.
func (c *conn) binHeader(b *binConn, req *BinaryRequest, status uint16, extlen uint8, keylen int, bodylen int, cas uint64) {
	b.hdr = AppendBinaryHeader(b.hdr[:0], req.Opcode, status, extlen, uint16(keylen), uint32(bodylen), req.Opaque, cas)
	c.w.Write(b.hdr)
}

// binError writes an error response with memcached's default text for
// status, or text when given.
func (c *conn) binError(b *binConn, req *BinaryRequest, status uint16, text string) {
	if text == "" {
		text = binStatusText(status)
	}
	c.binHeader(b, req, status, 0, 0, len(text), 0)
	c.w.WriteString(text)
}

// binOK writes a success response without extras or key, unless the
// request is quiet.
func (c *conn) binOK(b *binConn, req *BinaryRequest, body []byte, cas uint64) {
	if req.Quiet {
		return
	}
	c.binHeader(b, req, BinStatusOK, 0, 0, len(body), cas)
	c.w.Write(body)
}

// execBinary runs one binary request, or answers its parse error. It
// returns true when the connection must be closed (after flushing).
func (c *conn) execBinary(b *binConn, req *BinaryRequest, err error) bool {
	s := c.s
	st := c.st
	if err != nil {
		be := err.(*BinaryError)
		if be.Status == BinStatusTooLarge && req.Cmd == BinSet {
			// memcached drops the old value of a set it cannot store.
			s.store.remove(req.Key)
		}
		c.binError(b, req, be.Status, "")
		if be.Close && be != ErrBinaryAuth && c.logOK() {
			s.log.Info("cache: closing binary connection", "remote", c.remote(), "reason", be.Error())
		}
		return be.Close
	}
	point(SiteBinary, req.Key, nil)
	switch req.Cmd {
	case BinGet, BinGetK, BinTouch, BinGAT, BinGATK:
		c.binGet(b, req)
	case BinSet, BinAdd, BinReplace, BinAppend, BinPrepend:
		c.binStore(b, req)
	case BinDelete:
		switch s.store.deleteCAS(req.Key, req.CAS) {
		case delDeleted:
			st.deleteHits.Add(1)
			c.binOK(b, req, nil, 0)
		case delExists:
			c.binError(b, req, BinStatusKeyExists, "")
		default:
			st.deleteMisses.Add(1)
			c.binError(b, req, BinStatusKeyNotFound, "")
		}
	case BinIncrement, BinDecrement:
		c.binArith(b, req)
	case BinFlush:
		if s.cfg.NoFlushAll {
			// memcached -F answers a binary flush (and flushq) so, and
			// does not count it (a text one it counts).
			c.binError(b, req, BinStatusAuthError, "")
			break
		}
		st.cmdFlush.Add(1)
		s.store.flush(flushDelay(req.Exptime), s.clk.now())
		c.binOK(b, req, nil, 0)
	case BinNoop:
		// As in memcached, a noop flushes the replies before it: a later
		// error that drops the connection does not lose them.
		c.binOK(b, req, nil, 0)
		c.w.Flush()
	case BinVersion:
		c.binOK(b, req, []byte(version), 0)
	case BinQuit:
		c.binOK(b, req, nil, 0)
		return true
	case BinStat:
		c.binStats(b, req)
	case BinSASLListMechs:
		b.p.Authenticated = false
		c.binOK(b, req, []byte(saslMechs), 0)
	case BinSASLAuth, BinSASLStep:
		c.binSASL(b, req)
	}
	return false
}

func (c *conn) binGet(b *binConn, req *BinaryRequest) {
	st := c.st
	touch := req.Cmd == BinTouch || req.Cmd == BinGAT || req.Cmd == BinGATK
	withKey := req.Cmd == BinGetK || req.Cmd == BinGATK
	v, ok := c.s.store.getRel(req.Key, touch, req.Exptime)
	if touch {
		st.cmdTouch.Add(1)
	} else {
		st.cmdGet.Add(1)
	}
	if !ok {
		if touch {
			st.touchMisses.Add(1)
		} else {
			st.getMisses.Add(1)
		}
		if req.Quiet {
			return
		}
		if withKey {
			c.binHeader(b, req, BinStatusKeyNotFound, 0, len(req.Key), len(req.Key), 0)
			c.w.Write(req.Key)
		} else {
			c.binError(b, req, BinStatusKeyNotFound, "")
		}
		return
	}
	if touch {
		st.touchHits.Add(1)
	} else {
		st.getHits.Add(1)
	}
	val := v.value()
	if req.Cmd == BinTouch {
		val = nil
	}
	keylen := 0
	if withKey {
		keylen = len(req.Key)
	}
	c.binHeader(b, req, BinStatusOK, 4, keylen, 4+keylen+len(val), v.cas)
	var fl [4]byte
	binary.BigEndian.PutUint32(fl[:], v.flags)
	c.w.Write(fl[:])
	if withKey {
		c.w.Write(req.Key)
	}
	c.w.Write(val)
}

func (c *conn) binStore(b *binConn, req *BinaryRequest) {
	s := c.s
	st := c.st
	r := s.storeRequest(&storeCmd{
		proto:   protoBinary,
		mode:    binStoreMode(req.Cmd),
		key:     req.Key,
		data:    req.Value,
		flags:   req.Flags,
		exptime: s.clk.realtimeU(req.Exptime, s.clk.now()),
		cas:     req.CAS,
	})
	res, cas := s.store.store(&r)
	// memcached counts a binary store once it has allocated the item, and
	// keeps no store_no_memory count for the binary protocol.
	if res != resNoMemory {
		st.cmdSet.Add(1)
	}
	if r.mode == modeCAS {
		st.countCAS(res)
	}
	switch res {
	case resStored:
		c.binOK(b, req, nil, cas)
	case resExists:
		c.binError(b, req, BinStatusKeyExists, "")
	case resNotFound:
		c.binError(b, req, BinStatusKeyNotFound, "")
	case resNoMemory:
		c.binError(b, req, BinStatusOutOfMemory, "Out of memory allocating item")
	default:
		switch req.Cmd {
		case BinAdd:
			c.binError(b, req, BinStatusKeyExists, "")
		case BinReplace:
			c.binError(b, req, BinStatusKeyNotFound, "")
		default:
			c.binError(b, req, BinStatusNotStored, "")
		}
	}
}

func (c *conn) binArith(b *binConn, req *BinaryRequest) {
	s := c.s
	st := c.st
	incr := req.Cmd == BinIncrement
	out, cas, res := s.store.incrDecr(req.Key, incr, req.Delta, req.CAS, c.scratch[:0])
	var val [8]byte
	switch res {
	case arithOK:
		st.arith(incr, true)
		n, _ := strconv.ParseUint(string(out), 10, 64)
		c.scratch = out[:0]
		binary.BigEndian.PutUint64(val[:], n)
		c.binOK(b, req, val[:], cas)
	case arithNonNumeric:
		c.binError(b, req, BinStatusNonNumeric, "")
	case arithCASMismatch:
		c.binError(b, req, BinStatusKeyExists, "")
	case arithNoMemory:
		c.binError(b, req, BinStatusOutOfMemory, "Out of memory incrementing value")
	case arithNotFound:
		if req.Exptime == binNoCreate {
			st.arith(incr, false)
			c.binError(b, req, BinStatusKeyNotFound, "")
			return
		}
		data := strconv.AppendUint(nil, req.Initial, 10)
		r := s.storeRequest(&storeCmd{
			proto:   protoBinary,
			mode:    modeAdd,
			key:     req.Key,
			data:    data,
			exptime: s.clk.realtimeU(req.Exptime, s.clk.now()),
		})
		switch res, cas := s.store.store(&r); res {
		case resStored:
			binary.BigEndian.PutUint64(val[:], req.Initial)
			c.binOK(b, req, val[:], cas)
		case resNoMemory:
			c.binError(b, req, BinStatusOutOfMemory, "Out of memory allocating new item")
		default:
			c.binError(b, req, BinStatusNotStored, "")
		}
	}
}

// binStats answers STAT: one response per statistic (key = name, value =
// value), then an empty one. The statistics are those of the text
// protocol's stats command.
func (c *conn) binStats(b *binConn, req *BinaryRequest) {
	s := c.s
	var w statWriter
	key := req.Key
	switch {
	case len(key) == 0:
		s.generalStats(&w)
	case bytes.HasPrefix(key, []byte("reset")):
		s.resetStats()
		s.store.resetStats()
	case bytes.HasPrefix(key, []byte("settings")):
		s.settingsStats(&w)
	case bytes.HasPrefix(key, []byte("detail")):
		switch rest := key[len("detail"):]; {
		case bytes.HasPrefix(rest, []byte(" dump")):
			w.str("detailed", "END\r\n")
		case bytes.HasPrefix(rest, []byte(" on")), bytes.HasPrefix(rest, []byte(" off")):
		default:
			c.binError(b, req, BinStatusKeyNotFound, "")
			return
		}
	case string(key) == "items":
		s.itemStats(&w)
	case string(key) == "slabs":
		s.slabStats(&w)
	case string(key) == "sizes":
		w.str("sizes_status", "disabled")
	default:
		c.binError(b, req, BinStatusKeyNotFound, "")
		return
	}
	// Re-frame the "STAT name value\r\n" lines.
	text := w.b
	for len(text) > 0 {
		line, rest, _ := bytes.Cut(text, []byte("\r\n"))
		text = rest
		line = bytes.TrimPrefix(line, []byte("STAT "))
		name, val, _ := bytes.Cut(line, []byte(" "))
		if string(name) == "detailed" {
			val = []byte("END\r\n")
			text = nil
		}
		c.binHeader(b, req, BinStatusOK, 0, len(name), len(name)+len(val), 0)
		c.w.Write(name)
		c.w.Write(val)
	}
	c.binHeader(b, req, BinStatusOK, 0, 0, 0, 0)
}

// binSASL runs SASL_AUTH and SASL_STEP with the PLAIN mechanism. As in
// memcached every SASL command first drops the connection's
// authentication.
func (c *conn) binSASL(b *binConn, req *BinaryRequest) {
	st := c.st
	b.p.Authenticated = false
	ok, cont := false, false
	switch req.Cmd {
	case BinSASLAuth:
		if string(req.Key) == saslMechs {
			if len(req.Value) == 0 {
				cont = true
			} else {
				ok = c.s.checkPlain(req.Value)
			}
		}
		b.saslStarted = ok || cont
	case BinSASLStep:
		if b.saslStarted {
			ok = c.s.checkPlain(req.Value)
		}
	}
	switch {
	case ok:
		b.p.Authenticated = true
		st.authCmds.Add(1)
		c.binOK(b, req, []byte("Authenticated"), 0)
	case cont:
		c.binHeader(b, req, BinStatusAuthContinue, 0, 0, 0, 0)
	default:
		st.authCmds.Add(1)
		st.authErrors.Add(1)
		c.binError(b, req, BinStatusAuthError, "")
	}
}

// remote is the peer address for logs ("" for unnamed unix peers and a
// UDP socket's pseudo-connection).
func (c *conn) remote() string {
	if c.peer != nil {
		return c.peer.String()
	}
	return ""
}
