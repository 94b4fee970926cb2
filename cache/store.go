package cache

import (
	"bytes"
	"hash/maphash"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// Storage layout (see doc.go for the locking rules).
//
// Items live in per-shard chunks of fixed-size 48-byte item records. A
// pointer-free open-addressing table of 8-byte entries (index.go) maps the
// key hash to a slot number, so each item costs one allocation
// (key+value), one index entry and one record, and the GC never scans the
// index. LRU links are slot numbers too.

const (
	numShards          = 64
	itemUpdateInterval = 60 // ITEM_UPDATE_INTERVAL: access time granularity
	realtimeMaxDelta   = 60 * 60 * 24 * 30
	nilSlot            = -1
	maxIncrGrowth      = 20 // digits of the largest uint64
	tailSearch         = 5  // expired items looked for at an LRU tail
	activeSearch       = 32 // read items given a second chance per eviction
	chunkShift         = 8
	chunkItems         = 1 << chunkShift
)

type itemBits uint8

const (
	bitFetched itemBits = 1 << iota
	bitStale
	bitTokenSent
	bitKeyBinary
	bitActive // read since it last reached its LRU tail
)

type item struct {
	data    *byte // key then value (size bytes); never written after the item is linked
	cas     uint64
	size    uint32
	flags   uint32
	exptime uint32 // relative time (see clock); 0 = never
	time    uint32 // last access, updated at most every 60 s, as memcached
	prev    int32  // LRU neighbours
	next    int32
	klen    uint8
	bits    itemBits
}

func (it *item) buf() []byte   { return unsafe.Slice(it.data, it.size) }
func (it *item) key() []byte   { return it.buf()[:it.klen] }
func (it *item) value() []byte { return it.buf()[it.klen:] }
func (it *item) total() int64 {
	return int64(itemTotal(int(it.klen), int(it.size)-int(it.klen), it.flags))
}

// size is it's accounted size (memcached's ITEM_ntotal): total, without
// the CAS field under -C.
func (s *store) size(it *item) int64 { return it.total() - s.casAdj }

// sizeOf is size for an item not yet built.
func (s *store) sizeOf(nkey, nvalue int, flags uint32) int64 {
	return int64(itemTotal(nkey, nvalue, flags)) - s.casAdj
}

// clock is memcached's rel_time_t clock: seconds since process_started,
// which memcached sets 62 s before the real start so that no relative time
// is ever 0.
type clock struct {
	start     time.Time
	startUnix int64 // process_started
}

func newClock() *clock {
	now := time.Now()
	return &clock{start: now, startUnix: now.Unix() - itemUpdateInterval - 2}
}

func (c *clock) now() uint32 { return c.at(time.Since(c.start)) }

// at is the clock's time d after c.start.
func (c *clock) at(d time.Duration) uint32 {
	return uint32(d/time.Second) + itemUpdateInterval + 2
}

// realtime converts a protocol exptime to relative time, as memcached's
// realtime(EXPTIME_TO_POSITIVE_TIME(e)).
func (c *clock) realtime(e int32, now uint32) uint32 {
	t := int64(e)
	if t < 0 {
		t = realtimeMaxDelta + 1
	}
	if t == 0 {
		return 0
	}
	if t > realtimeMaxDelta {
		if t <= c.startUnix {
			return 1
		}
		return uint32(t - c.startUnix)
	}
	return uint32(t) + now
}

type shardStats struct {
	currItems        uint64
	totalItems       uint64
	evictions        uint64
	reclaimed        uint64
	expiredUnfetched uint64
	evictedUnfetched uint64
	getExpired       uint64
	getFlushed       uint64
}

type shard struct {
	mu    sync.Mutex
	index index               // key hash -> slot
	items []*[chunkItems]item // fixed-size chunks: growing never copies
	slots int32               // slots handed out so far
	free  int32               // free-slot list through item.next
	head  int32               // most recently used
	tail  int32
	st    shardStats
	_     [64]byte
}

// store is the sharded item store. used and limit count bytes as memcached
// counts them (ITEM_ntotal), so "stats bytes" agrees with memcached.
type store struct {
	shards     [numShards]shard
	seed       maphash.Seed
	used       atomic.Int64
	limit      atomic.Int64
	noEvict    bool
	noCAS      bool  // memcached -C: every item's CAS is 0
	casAdj     int64 // and items have no CAS field: casSize bytes less
	casID      atomic.Uint64
	oldestLive atomic.Uint32
	oldestCAS  atomic.Uint64
	rr         atomic.Uint32
	clk        *clock
}

func newStore(limit int64, noEvict bool, clk *clock) *store {
	s := &store{seed: maphash.MakeSeed(), noEvict: noEvict, clk: clk}
	s.limit.Store(limit)
	for i := range s.shards {
		sh := &s.shards[i]
		sh.free, sh.head, sh.tail = nilSlot, nilSlot, nilSlot
	}
	return s
}

func (s *store) hash(key []byte) uint64 { return maphash.Bytes(s.seed, key) }

func (s *store) shardFor(key []byte) *shard {
	return &s.shards[s.hash(key)%numShards]
}

// hashTag is the part of a key's hash that the shard's index keeps (the
// low bits pick the shard).
func hashTag(h uint64) uint32 { return uint32(h >> 32) }

// lookup returns the slot holding key in sh (locked), or nilSlot.
func (s *store) lookup(sh *shard, key []byte) int32 { return s.lookupHash(sh, s.hash(key), key) }

// lookupHash is lookup for a key whose hash h the caller has.
func (s *store) lookupHash(sh *shard, h uint64, key []byte) int32 {
	tab := sh.index.tab
	if len(tab) == 0 {
		return nilSlot
	}
	tag := hashTag(h)
	mask := len(tab) - 1
	for i := int(tag) & mask; ; i = (i + 1) & mask {
		e := tab[i]
		if e == 0 {
			return nilSlot
		}
		if entryTag(e) == tag {
			if idx := entrySlot(e); bytes.Equal(sh.at(idx).key(), key) {
				return idx
			}
		}
	}
}

// nextCAS is the CAS of a new or changed item: 0 under -C, as memcached
// reads an item without a CAS field.
func (s *store) nextCAS() uint64 {
	if s.noCAS {
		return 0
	}
	return s.casID.Add(1)
}

// flushed is memcached's item_is_flushed.
func (s *store) flushed(it *item, now uint32) bool {
	ol := s.oldestLive.Load()
	if ol == 0 || ol > now {
		return false
	}
	oc := s.oldestCAS.Load()
	return it.time <= ol || (oc != 0 && it.cas != 0 && it.cas < oc)
}

func (s *store) flush(delay int32, now uint32) {
	var newOldest uint32
	if delay > 0 {
		newOldest = s.clk.realtime(delay, now)
	} else {
		newOldest = now
	}
	s.oldestLive.Store(newOldest - 1)
	if newOldest-1 <= now {
		s.oldestCAS.Store(s.nextCAS())
	}
}

// reserve claims need bytes of the memory limit, evicting cold items (or,
// with noEvict, only expired ones) until they fit. It must be called
// without any shard lock held. It reports false when nothing more can be
// freed.
func (s *store) reserve(need int64, home *shard) bool {
	for {
		u := s.used.Load()
		if u+need <= s.limit.Load() {
			if s.used.CompareAndSwap(u, u+need) {
				return true
			}
			continue
		}
		if !s.evictOne(home) {
			return false
		}
	}
}

func (s *store) release(n int64) { s.used.Add(-n) }

// evictOne frees one item, trying the home shard first and then the other
// shards round robin. Expired or flushed items near a tail go first.
func (s *store) evictOne(home *shard) bool {
	now := s.clk.now()
	if home != nil && s.evictFrom(home, now) {
		return true
	}
	start := s.rr.Add(1)
	for i := uint32(0); i < numShards; i++ {
		if s.evictFrom(&s.shards[(start+i)%numShards], now) {
			return true
		}
	}
	return false
}

func (s *store) evictFrom(sh *shard, now uint32) bool {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	idx := sh.tail
	for i := 0; i < tailSearch && idx != nilSlot; i++ {
		it := sh.at(idx)
		if (it.exptime != 0 && it.exptime <= now) || s.flushed(it, now) {
			sh.st.reclaimed++
			if it.bits&bitFetched == 0 {
				sh.st.expiredUnfetched++
			}
			s.unlink(sh, idx)
			return true
		}
		idx = it.prev
	}
	if s.noEvict || sh.tail == nilSlot {
		return false
	}
	// Second chance: an item read since it last reached the tail goes back
	// to the head (as memcached's segmented LRU keeps ACTIVE items) instead
	// of being evicted; after activeSearch of them the tail goes anyway.
	for i := 0; i < activeSearch && sh.head != sh.tail; i++ {
		t := sh.tail
		it := sh.at(t)
		if it.bits&bitActive == 0 {
			break
		}
		it.bits &^= bitActive
		sh.remove(t)
		sh.pushHead(t)
	}
	it := sh.at(sh.tail)
	sh.st.evictions++
	if it.bits&bitFetched == 0 {
		sh.st.evictedUnfetched++
	}
	s.unlink(sh, sh.tail)
	return true
}

// find looks key up with sh locked, dropping it if expired or flushed
// (counted as memcached's get_expired/get_flushed).
func (s *store) find(sh *shard, key []byte, now uint32) int32 {
	return s.findHash(sh, s.hash(key), key, now)
}

// findHash is find for a key whose hash h the caller has.
func (s *store) findHash(sh *shard, h uint64, key []byte, now uint32) int32 {
	idx := s.lookupHash(sh, h, key)
	if idx == nilSlot {
		return nilSlot
	}
	it := sh.at(idx)
	if s.flushed(it, now) {
		sh.st.getFlushed++
		s.unlink(sh, idx)
		return nilSlot
	}
	if it.exptime != 0 && it.exptime <= now {
		sh.st.getExpired++
		s.unlink(sh, idx)
		return nilSlot
	}
	return idx
}

// link stores a new item in sh (locked); the caller reserved its memory.
func (s *store) link(sh *shard, buf []byte, klen int, flags, exptime uint32, cas uint64, now uint32) int32 {
	var idx int32
	if sh.free != nilSlot {
		idx = sh.free
		sh.free = sh.at(idx).next
	} else {
		if int(sh.slots)>>chunkShift == len(sh.items) {
			sh.items = append(sh.items, new([chunkItems]item))
		}
		idx = sh.slots
		sh.slots++
	}
	*sh.at(idx) = item{data: &buf[0], size: uint32(len(buf)), cas: cas, flags: flags, exptime: exptime, time: now, klen: uint8(klen), prev: nilSlot, next: nilSlot}
	sh.index.insert(hashTag(s.hash(buf[:klen])), idx)
	sh.pushHead(idx)
	sh.st.currItems++
	sh.st.totalItems++
	return idx
}

// unlink removes the item at idx from sh (locked) and returns its memory.
func (s *store) unlink(sh *shard, idx int32) {
	it := sh.at(idx)
	s.release(s.size(it))
	sh.index.remove(hashTag(s.hash(it.key())), idx)
	sh.remove(idx)
	*it = item{next: sh.free}
	sh.free = idx
	sh.st.currItems--
}

// replace swaps the item at idx for a new buffer with sh locked: the old
// memory is released, the caller reserved the new one.
func (s *store) replace(sh *shard, idx int32, buf []byte, flags, exptime uint32, cas uint64, now uint32) {
	it := sh.at(idx)
	s.release(s.size(it))
	klen := int(it.klen)
	bits := it.bits & bitKeyBinary
	*it = item{data: &buf[0], size: uint32(len(buf)), cas: cas, flags: flags, exptime: exptime, time: now, klen: uint8(klen), prev: it.prev, next: it.next, bits: bits}
	sh.remove(idx)
	sh.pushHead(idx)
	sh.st.totalItems++
}

// bump records a fetch as memcached's segmented LRU does: the first fetch
// sets FETCHED, later ones refresh the access time; every fetch marks the
// item active, so eviction gives it a second chance (evictFrom). Like
// memcached, a hit does not relink the item: moving it to the head also
// wrote both LRU neighbours' records, random cache lines, under the shard
// lock, which the multi-get load takes ten times a request (a shorter hold
// also means fewer waits behind a holder that the OS preempted).
func (sh *shard) bump(idx int32, now uint32) {
	it := sh.at(idx)
	if it.bits&bitFetched == 0 {
		it.bits |= bitFetched
	} else if it.time < now-itemUpdateInterval {
		it.time = now
	}
	it.bits |= bitActive
}

func (sh *shard) at(idx int32) *item {
	return &sh.items[idx>>chunkShift][idx&(chunkItems-1)]
}

func (sh *shard) pushHead(idx int32) {
	it := sh.at(idx)
	it.prev = nilSlot
	it.next = sh.head
	if sh.head != nilSlot {
		sh.at(sh.head).prev = idx
	}
	sh.head = idx
	if sh.tail == nilSlot {
		sh.tail = idx
	}
}

func (sh *shard) remove(idx int32) {
	it := sh.at(idx)
	if it.prev != nilSlot {
		sh.at(it.prev).next = it.next
	} else {
		sh.head = it.next
	}
	if it.next != nilSlot {
		sh.at(it.next).prev = it.prev
	} else {
		sh.tail = it.prev
	}
	it.prev, it.next = nilSlot, nilSlot
}

func makeBuf(key []byte, parts ...[]byte) []byte {
	n := len(key)
	for _, p := range parts {
		n += len(p)
	}
	b := make([]byte, 0, n)
	b = append(b, key...)
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// Results of storage operations, named after their protocol replies.
type storeResult uint8

const (
	resStored storeResult = iota
	resNotStored
	resExists
	resNotFound
	resNoMemory
)

// storeMode selects the semantics of store (memcached's NREAD_* commands).
type storeMode uint8

const (
	modeSet storeMode = iota
	modeAdd
	modeReplace
	modeAppend
	modePrepend
	modeCAS
)

type storeReq struct {
	mode     storeMode
	key      []byte
	data     []byte
	flags    uint32
	exptime  uint32
	cas      uint64 // compare value for modeCAS and (if non-zero) append/prepend
	setStale bool   // ms I with C: a lower CAS stores a stale value
	binary   bool   // key arrived base64-encoded (meta b flag)
	maxItem  int
	now      uint32 // the caller's clock reading (0: read it under the lock)
}

// store executes a storage command and returns the result and the new CAS.
func (s *store) store(r *storeReq) (storeResult, uint64) {
	sh := s.shardFor(r.key)
	need := s.sizeOf(len(r.key), len(r.data), r.flags)
	if !s.reserve(need, sh) {
		// memcached drops the old value when a set cannot be stored.
		if r.mode == modeSet {
			s.remove(r.key)
		}
		return resNoMemory, 0
	}
	reserved := need
	for {
		res, cas, extra := s.storeInShard(sh, r, reserved)
		if extra <= 0 {
			if extra < 0 {
				s.release(-extra)
			}
			return res, cas
		}
		// append/prepend needs more memory than reserved: get it without
		// holding the lock, then retry.
		if !s.reserve(extra, sh) {
			s.release(reserved)
			return resNoMemory, 0
		}
		reserved += extra
	}
}

// storeLocked applies r with sh locked. It returns the result and a memory
// balance: negative = unused reservation to release, positive = bytes still
// needed (nothing was changed).
func (s *store) storeLocked(sh *shard, idx int32, r *storeReq, now uint32, reserved int64) (storeResult, uint64, int64) {
	var old *item
	if idx != nilSlot {
		old = sh.at(idx)
	}
	switch r.mode {
	case modeAdd:
		if old != nil {
			sh.bump(idx, now)
			return resNotStored, 0, -reserved
		}
	case modeReplace:
		if old == nil {
			return resNotStored, 0, -reserved
		}
	case modeCAS:
		if old == nil {
			return resNotFound, 0, -reserved
		}
		// Under -C memcached compares the request's CAS (or, for 0, a
		// fresh id) with the item's missing CAS: it never matches.
		if r.cas != old.cas || s.noCAS {
			if !(r.setStale && r.cas < old.cas) {
				return resExists, 0, -reserved
			}
			cas := s.nextCAS()
			bits := old.bits & (bitTokenSent | bitKeyBinary)
			exp := old.exptime
			s.replace(sh, idx, makeBuf(r.key, r.data), r.flags, exp, cas, now)
			sh.at(idx).bits |= bits | bitStale
			return resStored, cas, 0
		}
	case modeAppend, modePrepend:
		if old == nil {
			return resNotStored, 0, -reserved
		}
		if r.cas != 0 && r.cas != old.cas && !s.noCAS {
			return resExists, 0, -reserved
		}
		total := s.sizeOf(len(r.key), len(old.value())+len(r.data), old.flags)
		if total > int64(r.maxItem) {
			return resNotStored, 0, -reserved
		}
		if total > reserved {
			return 0, 0, total - reserved
		}
		var buf []byte
		if r.mode == modeAppend {
			buf = makeBuf(r.key, old.value(), r.data)
		} else {
			buf = makeBuf(r.key, r.data, old.value())
		}
		cas := s.nextCAS()
		s.replace(sh, idx, buf, old.flags, old.exptime, cas, now)
		return resStored, cas, total - reserved
	}
	cas := s.nextCAS()
	buf := makeBuf(r.key, r.data)
	if old != nil {
		s.replace(sh, idx, buf, r.flags, r.exptime, cas, now)
	} else {
		idx = s.link(sh, buf, len(r.key), r.flags, r.exptime, cas, now)
	}
	if r.binary {
		sh.at(idx).bits |= bitKeyBinary
	}
	return resStored, cas, 0
}

// storeInShard is one attempt of store under the shard lock (deferred, so
// that a panic, contained to the client that caused it, leaves no shard
// locked).
func (s *store) storeInShard(sh *shard, r *storeReq, reserved int64) (storeResult, uint64, int64) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	now := r.now
	if now == 0 {
		now = s.clk.now()
	}
	idx := s.find(sh, r.key, now)
	return s.storeLocked(sh, idx, r, now, reserved)
}

// remove deletes key if present (no statistics).
func (s *store) remove(key []byte) {
	sh := s.shardFor(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if idx := s.lookup(sh, key); idx != nilSlot {
		s.unlink(sh, idx)
	}
}

// delete is the delete command: true if a live item was removed.
func (s *store) delete(key []byte) bool {
	sh := s.shardFor(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	idx := s.find(sh, key, s.clk.now())
	if idx == nilSlot {
		return false
	}
	s.unlink(sh, idx)
	return true
}

// touch sets a new expiry; true if the item exists. CAS is unchanged.
func (s *store) touch(key []byte, exptime int32) bool {
	sh := s.shardFor(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	now := s.clk.now()
	idx := s.find(sh, key, now)
	if idx == nilSlot {
		return false
	}
	sh.at(idx).exptime = s.clk.realtime(exptime, now)
	sh.bump(idx, now)
	return true
}

// view is a snapshot of an item taken under its shard lock. buf is
// immutable, so it may be read after the lock is released.
type view struct {
	buf   []byte
	klen  int
	flags uint32
	cas   uint64
}

func (v *view) value() []byte { return v.buf[v.klen:] }

// get fetches key, optionally setting a new expiry first (gat).
func (s *store) get(key []byte, touch bool, exptime int32) (view, bool) {
	now := s.clk.now()
	return s.fetch(key, now, touch, s.clk.realtime(exptime, now))
}

// fetch fetches key at time now; with touch it first sets the item's
// expiry to exp (already converted to server time).
func (s *store) fetch(key []byte, now uint32, touch bool, exp uint32) (view, bool) {
	h := s.hash(key)
	sh := &s.shards[h%numShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	idx := s.findHash(sh, h, key, now)
	if idx == nilSlot {
		return view{}, false
	}
	it := sh.at(idx)
	if touch {
		it.exptime = exp
	}
	sh.bump(idx, now)
	return view{buf: it.buf(), klen: int(it.klen), flags: it.flags, cas: it.cas}, true
}

// Results of incr/decr.
type arithResult uint8

const (
	arithOK arithResult = iota
	arithNotFound
	arithNonNumeric
	arithCASMismatch
	arithNoMemory
)

// incrDecr is memcached's do_add_delta for the classic incr/decr.
func (s *store) incrDecr(key []byte, incr bool, delta, compareCAS uint64, scratch []byte) ([]byte, uint64, arithResult) {
	sh := s.shardFor(key)
	if !s.reserve(maxIncrGrowth, sh) {
		return nil, 0, arithNoMemory
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	now := s.clk.now()
	idx := s.find(sh, key, now)
	if idx == nilSlot {
		s.release(maxIncrGrowth)
		return nil, 0, arithNotFound
	}
	return s.addDeltaLocked(sh, idx, incr, delta, compareCAS, now, scratch)
}

// addDeltaLocked applies incr/decr to the item at idx with sh locked and
// maxIncrGrowth bytes reserved (always consumed or released). On success
// it returns the new value as decimal text and the new CAS. If the result
// is not longer than the old value, the stored value is padded with
// spaces to the old length, as memcached rewrites in place.
func (s *store) addDeltaLocked(sh *shard, idx int32, incr bool, delta, compareCAS uint64, now uint32, scratch []byte) ([]byte, uint64, arithResult) {
	it := sh.at(idx)
	old := it.value()
	if len(old) == 0 {
		s.release(maxIncrGrowth)
		return nil, 0, arithNonNumeric
	}
	if compareCAS != 0 && compareCAS != it.cas {
		s.release(maxIncrGrowth)
		return nil, 0, arithCASMismatch
	}
	v, ok := safeStrtoull(old)
	if !ok {
		s.release(maxIncrGrowth)
		return nil, 0, arithNonNumeric
	}
	if incr {
		v += delta
	} else if delta > v {
		v = 0
	} else {
		v -= delta
	}
	out := strconv.AppendUint(scratch[:0], v, 10)
	var buf []byte
	inPlace := len(out) <= len(old)
	if inPlace {
		buf = make([]byte, int(it.klen)+len(old))
		copy(buf, it.key())
		n := copy(buf[it.klen:], out)
		for i := int(it.klen) + n; i < len(buf); i++ {
			buf[i] = ' '
		}
	} else {
		buf = makeBuf(it.key(), out)
	}
	oldTotal := s.size(it)
	cas := s.nextCAS()
	flags, exp, t, bits := it.flags, it.exptime, it.time, it.bits
	s.used.Add(oldTotal) // replace releases the old size; keep it reserved
	s.replace(sh, idx, buf, flags, exp, cas, now)
	if inPlace {
		// memcached edits the item in place: no new item, and the access
		// time and flags (fetched, stale, win token) stay.
		sh.st.totalItems--
		sh.at(idx).time = t
		sh.at(idx).bits = bits
	}
	newTotal := s.size(sh.at(idx))
	s.release(oldTotal + maxIncrGrowth - newTotal)
	return out, cas, arithOK
}

type storeTotals struct {
	shardStats
	bytes int64
}

func (s *store) totals() storeTotals {
	var t storeTotals
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		st := sh.st
		sh.mu.Unlock()
		t.currItems += st.currItems
		t.totalItems += st.totalItems
		t.evictions += st.evictions
		t.reclaimed += st.reclaimed
		t.expiredUnfetched += st.expiredUnfetched
		t.evictedUnfetched += st.evictedUnfetched
		t.getExpired += st.getExpired
		t.getFlushed += st.getFlushed
	}
	t.bytes = s.used.Load()
	return t
}

// resetStats clears the counters that memcached's "stats reset" clears.
func (s *store) resetStats() {
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		cur := sh.st.currItems
		sh.st = shardStats{currItems: cur}
		sh.mu.Unlock()
	}
}
