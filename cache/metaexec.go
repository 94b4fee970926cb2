package cache

import "strconv"

// Meta commands run with the item's shard locked while the reply line is
// built, because flags both read and modify the item (T, N, R, I).

func (c *conn) metaFlagsTail(b []byte, cmd *Command) []byte {
	for _, t := range cmd.Meta.Tokens {
		switch t[0] {
		case 'O':
			b = append(b, ' ')
			b = append(b, t...)
		case 'k':
			b = appendMetaKey(b, cmd.Key, cmd.Meta.KeyBinary)
		}
	}
	return b
}

func (c *conn) metaGet(cmd *Command) {
	s := c.s.store
	st := c.st
	m := &cmd.Meta
	sh := s.shardFor(cmd.Key)
	var reserved int64
	if m.Vivify {
		if need := s.sizeOf(len(cmd.Key), 0, 0); s.reserve(need, sh) {
			reserved = need
		}
	}
	c.lockShard(sh, cmd.Key)
	now := s.clk.now()
	idx := s.find(sh, cmd.Key, now)
	created := false
	if idx == nilSlot && reserved > 0 {
		idx = s.link(sh, makeBuf(cmd.Key), len(cmd.Key), 0, 0, s.nextCAS(), now)
		if m.KeyBinary {
			sh.at(idx).bits |= bitKeyBinary
		}
		created, reserved = true, 0
	}
	if reserved > 0 {
		s.release(reserved)
	}
	b := c.scratch[:0]
	if idx == nilSlot {
		c.unlockShard(sh)
		st.cmdGet.Add(1)
		st.getMisses.Add(1)
		if m.Quiet {
			return
		}
		b = append(b, "EN"...)
		b = c.metaFlagsTail(b, cmd)
		b = append(b, '\r', '\n')
		c.w.Write(b)
		c.scratch = b[:0]
		return
	}
	it := sh.at(idx)
	val := it.value()
	if m.Value {
		b = append(b, "VA "...)
		b = strconv.AppendInt(b, int64(len(val)), 10)
	} else {
		b = append(b, "HD"...)
	}
	won, ttlSet := false, false
	for _, t := range m.Tokens {
		switch t[0] {
		case 'T':
			ttlSet = true
			it.exptime = s.clk.realtime(m.Exptime, now)
		case 'N':
			if created {
				it.exptime = s.clk.realtime(m.AutovivExptime, now)
				won = true
			}
		case 'R':
			if it.bits&bitTokenSent == 0 && !created && it.exptime != 0 &&
				it.exptime < s.clk.realtime(m.RecacheTime, now) {
				won = true
			}
		case 's':
			b = append(b, " s"...)
			b = strconv.AppendInt(b, int64(len(val)), 10)
		case 't':
			b = append(b, " t"...)
			if it.exptime == 0 {
				b = append(b, "-1"...)
			} else {
				b = strconv.AppendUint(b, uint64(it.exptime-now), 10)
			}
		case 'c':
			b = append(b, " c"...)
			b = strconv.AppendUint(b, it.cas, 10)
		case 'f':
			b = append(b, " f"...)
			b = strconv.AppendUint(b, uint64(it.flags), 10)
		case 'l':
			b = append(b, " l"...)
			b = strconv.AppendUint(b, uint64(now-it.time), 10)
		case 'h':
			if it.bits&bitFetched != 0 {
				b = append(b, " h1"...)
			} else {
				b = append(b, " h0"...)
			}
		case 'O':
			b = append(b, ' ')
			b = append(b, t...)
		case 'k':
			b = appendMetaKey(b, it.key(), it.bits&bitKeyBinary != 0)
		}
	}
	if it.bits&bitTokenSent != 0 {
		b = append(b, " Z"...)
	}
	if it.bits&bitStale != 0 {
		b = append(b, " X"...)
		if it.bits&bitTokenSent == 0 {
			won = true
		}
	}
	if won {
		b = append(b, " W"...)
		it.bits |= bitTokenSent
	}
	if !m.NoUpdate {
		sh.bump(idx, now)
	}
	c.unlockShard(sh)
	b = append(b, '\r', '\n')
	c.w.Write(b)
	if m.Value {
		c.w.Write(val)
		c.w.WriteString("\r\n")
	}
	c.scratch = b[:0]
	if ttlSet {
		st.cmdTouch.Add(1)
		st.touchHits.Add(1)
	} else {
		st.cmdGet.Add(1)
		st.getHits.Add(1)
	}
}

func (c *conn) metaSet(cmd *Command) {
	srv := c.s
	st := c.st
	m := &cmd.Meta
	st.cmdSet.Add(1)
	r := srv.storeRequest(&storeCmd{
		proto:     protoMeta,
		mode:      metaStoreMode(m.Mode),
		key:       cmd.Key,
		data:      cmd.Data,
		flags:     m.ClientFlags,
		exptime:   srv.clk.realtime(m.Exptime, srv.clk.now()),
		cas:       m.CompareCAS,
		hasCAS:    m.HasCAS,
		setStale:  m.SetStale,
		keyBinary: m.KeyBinary,
	})
	res, cas := srv.store.store(&r)
	if r.mode == modeCAS {
		st.countCAS(res)
	}
	var code string
	switch res {
	case resStored:
		if m.Quiet {
			return
		}
		code = "HD"
	case resExists:
		code = "EX"
	case resNotFound:
		code = "NF"
	case resNotStored:
		code = "NS"
	default:
		st.storeNoMemory.Add(1)
		srv.store.remove(cmd.Key)
		c.line(storeReply(res))
		return
	}
	b := append(c.scratch[:0], code...)
	for _, t := range m.Tokens {
		switch t[0] {
		case 'O':
			b = append(b, ' ')
			b = append(b, t...)
		case 'k':
			b = appendMetaKey(b, cmd.Key, m.KeyBinary)
		case 'c':
			b = append(b, " c"...)
			b = strconv.AppendUint(b, cas, 10)
		}
	}
	b = append(b, '\r', '\n')
	c.w.Write(b)
	c.scratch = b[:0]
}

func (c *conn) metaDelete(cmd *Command) {
	s := c.s.store
	st := c.st
	m := &cmd.Meta
	sh := s.shardFor(cmd.Key)
	c.lockShard(sh, cmd.Key)
	now := s.clk.now()
	idx := s.find(sh, cmd.Key, now)
	var code string
	switch {
	case idx == nilSlot:
		st.deleteMisses.Add(1)
		code = "NF"
	case m.HasCAS && sh.at(idx).cas != m.CompareCAS:
		st.deleteMisses.Add(1)
		code = "EX"
	case m.SetStale:
		it := sh.at(idx)
		if m.NewTTL {
			it.exptime = s.clk.realtime(m.Exptime, now)
		}
		it.bits |= bitStale
		it.bits &^= bitTokenSent
		it.cas = s.nextCAS()
		code = "HD"
	default:
		st.deleteHits.Add(1)
		s.unlink(sh, idx)
		code = "HD"
	}
	c.unlockShard(sh)
	if code == "HD" && m.Quiet {
		return
	}
	b := append(c.scratch[:0], code...)
	b = c.metaFlagsTail(b, cmd)
	b = append(b, '\r', '\n')
	c.w.Write(b)
	c.scratch = b[:0]
}

func (c *conn) metaArith(cmd *Command) {
	s := c.s.store
	st := c.st
	m := &cmd.Meta
	incr := !(m.Mode == 'D' || m.Mode == '-')
	sh := s.shardFor(cmd.Key)
	if !s.reserve(maxIncrGrowth, sh) {
		c.line(errArithMemory)
		return
	}
	c.lockShard(sh, cmd.Key)
	now := s.clk.now()
	idx := s.find(sh, cmd.Key, now)
	var (
		out     []byte
		res     arithResult
		created bool
	)
	if idx != nilSlot {
		out, _, res = s.addDeltaLocked(sh, idx, incr, m.Delta, m.CompareCAS, now, c.scratch[:0])
	} else {
		res = arithNotFound
		s.release(maxIncrGrowth)
		if m.Vivify {
			out = strconv.AppendUint(c.scratch[:0], m.Initial, 10)
			need := s.sizeOf(len(cmd.Key), len(out), 0)
			if s.used.Add(need) > s.limit.Load() && !c.tryEvictLocked(sh, need) {
				s.release(need)
				c.unlockShard(sh)
				c.line("SERVER_ERROR Out of memory allocating new item")
				return
			}
			idx = s.link(sh, makeBuf(cmd.Key, out), len(cmd.Key), 0, 0, s.nextCAS(), now)
			created, res = true, arithOK
		}
	}
	var b []byte
	switch res {
	case arithNonNumeric:
		c.unlockShard(sh)
		c.line(ErrNonNumeric.Reply)
		return
	case arithCASMismatch:
		b = append(b, "EX"...)
	case arithNotFound:
		st.arith(incr, false)
		b = append(b, "NF"...)
	case arithOK:
		if !created {
			st.arith(incr, true)
		}
		if m.Quiet && !created {
			c.unlockShard(sh)
			return
		}
		it := sh.at(idx)
		if m.Value {
			b = append(b, "VA "...)
			b = strconv.AppendInt(b, int64(len(out)), 10)
		} else {
			b = append(b, "HD"...)
		}
		for _, t := range m.Tokens {
			switch t[0] {
			case 'c':
				b = append(b, " c"...)
				b = strconv.AppendUint(b, it.cas, 10)
			case 't':
				b = append(b, " t"...)
				if it.exptime == 0 {
					b = append(b, "-1"...)
				} else {
					b = strconv.AppendUint(b, uint64(it.exptime-now), 10)
				}
			case 'T':
				it.exptime = s.clk.realtime(m.Exptime, now)
			case 'N':
				if created {
					it.exptime = s.clk.realtime(m.AutovivExptime, now)
				}
			case 'O':
				b = append(b, ' ')
				b = append(b, t...)
			case 'k':
				b = appendMetaKey(b, cmd.Key, m.KeyBinary)
			}
		}
		if m.Value {
			b = append(b, '\r', '\n')
			b = append(b, out...)
		}
		c.unlockShard(sh)
		b = append(b, '\r', '\n')
		c.w.Write(b)
		return
	}
	c.unlockShard(sh)
	b = c.metaFlagsTail(b, cmd)
	b = append(b, '\r', '\n')
	c.w.Write(b)
}

// tryEvictLocked frees memory from sh (locked) for a small vivified item
// that was already added to the usage count.
func (c *conn) tryEvictLocked(sh *shard, need int64) bool {
	s := c.s.store
	for s.used.Load() > s.limit.Load() {
		if s.noEvict || sh.tail == nilSlot {
			return false
		}
		sh.st.evictions++
		s.unlink(sh, sh.tail)
	}
	return true
}

func (c *conn) metaDebug(cmd *Command) {
	s := c.s.store
	c.st.cmdMeta.Add(1)
	sh := s.shardFor(cmd.Key)
	c.lockShard(sh, cmd.Key)
	now := s.clk.now()
	idx := s.find(sh, cmd.Key, now)
	if idx == nilSlot {
		c.unlockShard(sh)
		c.line("EN")
		return
	}
	it := sh.at(idx)
	b := append(c.scratch[:0], "ME "...)
	if it.bits&bitKeyBinary != 0 {
		b = appendBase64(b, it.key())
	} else {
		b = append(b, it.key()...)
	}
	b = append(b, " exp="...)
	if it.exptime == 0 {
		b = append(b, "-1"...)
	} else {
		b = strconv.AppendInt(b, int64(int32(now-it.exptime)), 10)
	}
	b = append(b, " la="...)
	b = strconv.AppendUint(b, uint64(now-it.time), 10)
	b = append(b, " cas="...)
	b = strconv.AppendUint(b, it.cas, 10)
	if it.bits&bitFetched != 0 {
		b = append(b, " fetch=yes"...)
	} else {
		b = append(b, " fetch=no"...)
	}
	tot := c.s.store.size(it)
	b = append(b, " cls="...)
	b = strconv.AppendInt(b, int64(slabClass(tot)), 10)
	b = append(b, " size="...)
	b = strconv.AppendInt(b, tot, 10)
	c.unlockShard(sh)
	b = append(b, '\r', '\n')
	c.w.Write(b)
	c.scratch = b[:0]
}
