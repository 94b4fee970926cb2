package cache

// storeProto is the protocol a storage command arrived in: each maps a
// compare value (CAS) to memcached's NREAD_* semantics its own way.
type storeProto uint8

const (
	protoText   storeProto = iota // set add replace append prepend cas
	protoBinary                   // set add replace append prepend, with CAS in the header
	protoMeta                     // ms with M (mode) and C (compare)
)

// storeCmd is a storage command of any protocol, before it becomes a
// store request.
type storeCmd struct {
	proto     storeProto
	mode      storeMode // the command: set, add, replace, append, prepend, or (text) cas
	key, data []byte
	flags     uint32
	exptime   uint32 // absolute, as clock.realtime returns
	cas       uint64 // compare value sent (0: none)
	hasCAS    bool   // meta: the C flag was given
	setStale  bool   // meta: I with C
	keyBinary bool   // meta: b flag
	now       uint32 // the clock reading exptime was computed from (0: the store reads the clock)
}

// storeRequest is the one place where a storage command of the text,
// binary or meta protocol becomes a store request, with memcached
// 1.6.18's rules for the compare value:
//   - text: only "cas" compares; append and prepend ignore it;
//   - binary: a set, add or replace with a non-zero CAS is a cas (not
//     under -C, where the CAS is lost with the item's CAS field); append
//     and prepend compare a non-zero CAS and keep the item's flags and
//     expiry;
//   - meta: a set or replace with C is a cas (I: a lower CAS stores a
//     stale value); add ignores C; append and prepend compare it.
func (s *Server) storeRequest(sc *storeCmd) storeReq {
	r := storeReq{
		mode:    sc.mode,
		key:     sc.key,
		data:    sc.data,
		flags:   sc.flags,
		exptime: sc.exptime,
		cas:     sc.cas,
		binary:  sc.keyBinary,
		maxItem: s.cfg.MaxItemSize,
		now:     sc.now,
	}
	switch sc.proto {
	case protoText:
		if r.mode == modeAppend || r.mode == modePrepend {
			r.cas = 0
		}
	case protoBinary:
		if r.mode <= modeReplace {
			if sc.cas != 0 && !s.cfg.NoCAS {
				r.mode = modeCAS
			}
		} else {
			r.flags, r.exptime = 0, 0
		}
	case protoMeta:
		if sc.hasCAS && (r.mode == modeSet || r.mode == modeReplace) {
			r.mode = modeCAS
			r.setStale = sc.setStale
		}
		if r.mode == modeAdd {
			r.cas = 0
		}
	}
	return r
}

// countCAS counts a cas's outcome (cas_hits, cas_badval, cas_misses).
func (st *serverStats) countCAS(res storeResult) {
	switch res {
	case resStored:
		st.casHits.Add(1)
	case resExists:
		st.casBadval.Add(1)
	case resNotFound:
		st.casMisses.Add(1)
	}
}

// textStoreMode is the store mode of a text storage command.
func textStoreMode(op Op) storeMode {
	switch op {
	case OpAdd:
		return modeAdd
	case OpReplace:
		return modeReplace
	case OpAppend:
		return modeAppend
	case OpPrepend:
		return modePrepend
	case OpCas:
		return modeCAS
	}
	return modeSet
}

// binStoreMode is the store mode of a binary storage opcode (loud form).
func binStoreMode(cmd uint8) storeMode {
	switch cmd {
	case BinAdd:
		return modeAdd
	case BinReplace:
		return modeReplace
	case BinAppend:
		return modeAppend
	case BinPrepend:
		return modePrepend
	}
	return modeSet
}

// metaStoreMode is the store mode of an ms command's M flag.
func metaStoreMode(m byte) storeMode {
	switch m {
	case 'E':
		return modeAdd
	case 'A':
		return modeAppend
	case 'P':
		return modePrepend
	case 'R':
		return modeReplace
	}
	return modeSet
}
