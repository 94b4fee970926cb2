package cache

import (
	"encoding/base64"
	"strconv"
)

const version = "1.6.18"

// errArithMemory is memcached's reply when incr/decr cannot allocate.
const (
	errArithMemory   = "SERVER_ERROR out of memory"
	errFlushDisabled = "CLIENT_ERROR flush_all not allowed" // -F
)

func (c *conn) line(s string) {
	c.w.WriteString(s)
	c.w.WriteString("\r\n")
}

// exec runs one parsed command (or reports its parse error) and writes the
// reply. It returns true when the connection must be closed.
func (c *conn) exec(cmd *Command, err error) bool {
	s := c.s
	st := c.st
	if err != nil {
		e, ok := err.(*Error)
		if !ok {
			return true
		}
		switch {
		case cmd.Op.IsStorage() && (err == ErrTooLarge || err == ErrBadDataChunk):
			if err == ErrTooLarge {
				st.storeTooLarge.Add(1)
				// memcached drops the old value of a failed set (ms always).
				if cmd.Op == OpSet || cmd.Op == OpMetaSet {
					s.store.remove(cmd.Key)
				}
			} else {
				st.cmdSet.Add(1)
			}
		case cmd.Op == OpFlushAll:
			st.cmdFlush.Add(1)
		case cmd.Op == OpWatch && s.cfg.NoWatch:
			c.line("CLIENT_ERROR watch commands not allowed") // -W
			return false
		case err == ErrBadCommandLine && cmd.Op >= OpGet && cmd.Op <= OpGats:
			// memcached looks up the keys before the bad one, then
			// discards their output.
			c.getKeys(cmd, true)
		}
		if e.Close {
			if e.Reply != "" {
				c.line(e.Reply)
			}
			return true
		}
		// Meta errors are always sent; classic ones obey noreply.
		if !cmd.NoReply || cmd.Op >= OpMetaGet {
			c.line(e.Reply)
		}
		return false
	}

	point(SiteConn, cmd.Key, cmd.Keys)
	switch cmd.Op {
	case OpGet, OpGets, OpGat, OpGats:
		c.getKeys(cmd, false)
		c.w.WriteString("END\r\n")
	case OpSet, OpAdd, OpReplace, OpAppend, OpPrepend, OpCas:
		c.storage(cmd)
	case OpDelete:
		if s.store.delete(cmd.Key) {
			st.deleteHits.Add(1)
			c.reply(cmd, "DELETED")
		} else {
			st.deleteMisses.Add(1)
			c.reply(cmd, "NOT_FOUND")
		}
	case OpIncr, OpDecr:
		incr := cmd.Op == OpIncr
		out, _, res := s.store.incrDecr(cmd.Key, incr, cmd.Delta, 0, c.scratch[:0])
		switch res {
		case arithOK:
			st.arith(incr, true)
			if !cmd.NoReply {
				c.w.Write(out)
				c.w.WriteString("\r\n")
			}
			c.scratch = out[:0]
		case arithNotFound:
			st.arith(incr, false)
			c.reply(cmd, "NOT_FOUND")
		case arithNoMemory:
			c.reply(cmd, errArithMemory)
		default:
			c.reply(cmd, ErrNonNumeric.Reply)
		}
	case OpTouch:
		st.cmdTouch.Add(1)
		if s.store.touch(cmd.Key, cmd.Exptime) {
			st.touchHits.Add(1)
			c.reply(cmd, "TOUCHED")
		} else {
			st.touchMisses.Add(1)
			c.reply(cmd, "NOT_FOUND")
		}
	case OpFlushAll:
		st.cmdFlush.Add(1) // counted even under -F, as memcached does
		if s.cfg.NoFlushAll {
			c.reply(cmd, errFlushDisabled)
			break
		}
		s.store.flush(cmd.Exptime, s.clk.now())
		c.reply(cmd, "OK")
	case OpShutdown:
		// memcached -A: "shutdown" and "shutdown graceful" close the
		// connection without a reply and stop the process.
		switch {
		case s.cfg.OnShutdown == nil:
			c.line(ErrShutdownOff.Reply)
		case len(cmd.Args) == 0 || len(cmd.Args) == 1 && string(cmd.Args[0]) == "graceful":
			graceful := len(cmd.Args) == 1
			s.shutdown.Do(func() {
				s.log.Info("cache: shutdown command received", "remote", c.remote(), "graceful", graceful)
				s.cfg.OnShutdown(graceful)
			})
			return true
		default:
			c.line("CLIENT_ERROR invalid shutdown mode")
		}
	case OpVersion:
		c.line("VERSION " + version)
	case OpVerbosity:
		s.verbosity.Store(min(cmd.Value, 2))
		c.reply(cmd, "OK")
	case OpQuit:
		return true
	case OpStats:
		return c.statsCmd(cmd)
	case OpCacheMemlimit:
		switch {
		case cmd.Value < 8:
			c.reply(cmd, ErrMemlimitSmall.Reply)
		case cmd.Value > 1000000000:
			c.reply(cmd, ErrMemlimitUnits.Reply)
		case s.cfg.MaxMemoryLimit > 0 && int64(cmd.Value)<<20 > s.cfg.MaxMemoryLimit:
			c.reply(cmd, memlimitCapReply(s.cfg.MaxMemoryLimit))
		default:
			s.store.limit.Store(int64(cmd.Value) << 20)
			c.reply(cmd, "OK")
		}
	case OpSlabsAutomove:
		c.reply(cmd, "OK")
	case OpSlabsReassign:
		// We have no slab pages to move, so a valid request always finds
		// no spare page.
		largest := int32(len(slabClasses) - 1)
		switch src, dst := cmd.SlabSrc, cmd.SlabDst; {
		case src == dst:
			c.line("SAME src and dst class are identical")
		case src < 0 || src > largest || dst < 0 || dst > largest:
			c.line("BADCLASS invalid src or dst class id")
		default:
			c.line("NOSPARE source class has no spare pages")
		}
	case OpRefreshCerts:
		// memcached answers errors even with noreply.
		switch {
		case s.tls == nil:
			c.line(errTLSNotEnabled.Msg)
		default:
			if err := s.tls.refresh(); err != nil {
				c.line(err.Msg)
			} else {
				c.reply(cmd, "OK")
			}
		}
	case OpMetaNoop:
		c.line("MN")
	case OpMetaDebug:
		c.metaDebug(cmd)
	case OpMetaGet:
		c.metaGet(cmd)
	case OpMetaSet:
		c.metaSet(cmd)
	case OpMetaDelete:
		c.metaDelete(cmd)
	case OpMetaArith:
		c.metaArith(cmd)
	}
	return false
}

func (c *conn) reply(cmd *Command, s string) {
	if !cmd.NoReply {
		c.line(s)
	}
}

// getKeys answers get/gets/gat/gats; with discard it only performs the
// lookups (and their statistics).
func (c *conn) getKeys(cmd *Command, discard bool) {
	st := c.st
	touch := cmd.Op == OpGat || cmd.Op == OpGats
	withCAS := cmd.Op == OpGets || cmd.Op == OpGats
	var hits, misses uint64
	// One clock reading serves every key, as memcached's current_time.
	now := c.now()
	exp := c.s.clk.realtime(cmd.Exptime, now)
	for _, k := range cmd.Keys {
		v, ok := c.s.store.fetch(k, now, touch, exp)
		if !ok {
			misses++
			continue
		}
		hits++
		if discard {
			continue
		}
		b := c.scratch[:0]
		b = append(b, "VALUE "...)
		b = append(b, k...)
		b = append(b, ' ')
		b = strconv.AppendUint(b, uint64(v.flags), 10)
		b = append(b, ' ')
		b = strconv.AppendInt(b, int64(len(v.value())), 10)
		if withCAS {
			b = append(b, ' ')
			b = strconv.AppendUint(b, v.cas, 10)
		}
		b = append(b, '\r', '\n')
		c.w.Write(b)
		c.w.Write(v.value())
		c.w.WriteString("\r\n")
		c.scratch = b[:0]
	}
	if touch {
		st.cmdTouch.Add(hits + misses)
		st.touchHits.Add(hits)
		st.touchMisses.Add(misses)
	} else {
		st.cmdGet.Add(hits + misses)
		st.getHits.Add(hits)
		st.getMisses.Add(misses)
	}
}

func (c *conn) storage(cmd *Command) {
	s := c.s
	st := c.st
	st.cmdSet.Add(1)
	// A fresh clock reading, not the loop's (conn.now): an item's time
	// decides whether an earlier flush_all covers it.
	now := s.clk.now()
	r := s.storeRequest(&storeCmd{
		proto:   protoText,
		mode:    textStoreMode(cmd.Op),
		key:     cmd.Key,
		data:    cmd.Data,
		flags:   cmd.Flags,
		exptime: s.clk.realtime(cmd.Exptime, now),
		cas:     cmd.CAS,
		now:     now,
	})
	res, _ := s.store.store(&r)
	if res == resNoMemory {
		st.storeNoMemory.Add(1)
	}
	if r.mode == modeCAS {
		st.countCAS(res)
	}
	c.reply(cmd, storeReply(res))
}

func storeReply(res storeResult) string {
	switch res {
	case resStored:
		return "STORED"
	case resNotStored:
		return "NOT_STORED"
	case resExists:
		return "EXISTS"
	case resNotFound:
		return "NOT_FOUND"
	}
	return ErrOutOfMemory.Reply
}

// appendMetaKey writes " k<key>" (base64 plus " b" for binary keys).
func appendMetaKey(b, key []byte, binary bool) []byte {
	b = append(b, " k"...)
	if !binary {
		return append(b, key...)
	}
	b = base64.StdEncoding.AppendEncode(b, key)
	return append(b, " b"...)
}

func appendBase64(b, src []byte) []byte { return base64.StdEncoding.AppendEncode(b, src) }
