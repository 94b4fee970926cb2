package cache

import (
	"math/rand/v2"
	"runtime"
	"strconv"
	"sync"
	"testing"
)

func newTestStore(limit int64, noEvict bool) *store {
	return newStore(limit, noEvict, newClock())
}

func setKey(s *store, k string, n int) storeResult {
	res, _ := s.store(&storeReq{mode: modeSet, key: []byte(k), data: make([]byte, n), maxItem: DefaultMaxItemSize})
	return res
}

// TestStoreAccounting checks used bytes return to zero after every kind
// of removal and replacement.
func TestStoreAccounting(t *testing.T) {
	s := newTestStore(1<<20, false)
	for i := range 100 {
		setKey(s, "k"+strconv.Itoa(i), i)
	}
	for i := range 50 {
		setKey(s, "k"+strconv.Itoa(i), 200-i) // replace
	}
	s.store(&storeReq{mode: modeAppend, key: []byte("k1"), data: []byte("abc"), maxItem: DefaultMaxItemSize})
	setKey(s, "n", 0)
	s.store(&storeReq{mode: modeSet, key: []byte("n"), data: []byte("99"), maxItem: DefaultMaxItemSize})
	if _, _, r := s.incrDecr([]byte("n"), true, 1, 0, nil); r != arithOK {
		t.Fatalf("incr: %v", r)
	}
	if _, _, r := s.incrDecr([]byte("n"), false, 95, 0, nil); r != arithOK {
		t.Fatalf("decr: %v", r)
	}
	var want int64
	for i := range s.shards {
		sh := &s.shards[i]
		for idx := sh.head; idx != nilSlot; idx = sh.at(idx).next {
			want += sh.at(idx).total()
		}
	}
	if got := s.used.Load(); got != want {
		t.Fatalf("used %d, items total %d", got, want)
	}
	for i := range 100 {
		s.delete([]byte("k" + strconv.Itoa(i)))
	}
	s.delete([]byte("n"))
	if got := s.used.Load(); got != 0 {
		t.Fatalf("used %d after deleting everything", got)
	}
	if tot := s.totals(); tot.currItems != 0 {
		t.Fatalf("curr_items %d", tot.currItems)
	}
}

// TestStoreLRUOrder checks a read protects an item from eviction. LRU
// order is per shard (hashing is seeded per process), so the test writes
// only keys of the read item's shard: there, every older unread item must
// go before it.
func TestStoreLRUOrder(t *testing.T) {
	per := int64(itemTotal(4, 100, 0))
	s := newTestStore(per*numShards*4, false)
	home := s.shardFor([]byte("k1000"))
	var same []string // keys of k1000's shard, other than k1000
	for i := 0; len(same) < 8; i++ {
		if k := "x" + strconv.Itoa(i); s.shardFor([]byte(k)) == home {
			same = append(same, k)
		}
	}
	setKey(s, "k1000", 100)
	for _, k := range same[:3] {
		setKey(s, k, 100)
	}
	if _, ok := s.get([]byte("k1000"), false, 0); !ok {
		t.Fatal("k1000 missing before eviction")
	}
	// Fill the whole store from other shards' keys, then write more keys of
	// k1000's shard: the three older unread ones go first.
	for i := 0; s.used.Load()+per <= s.limit.Load(); i++ {
		if k := "f" + strconv.Itoa(i); s.shardFor([]byte(k)) != home {
			setKey(s, k, 100)
		}
	}
	for _, k := range same[3:6] {
		setKey(s, k, 100)
	}
	if _, ok := s.get([]byte("k1000"), false, 0); !ok {
		t.Error("recently read k1000 was evicted before older unread items of its shard")
	}
	for _, k := range same[:3] {
		if _, ok := s.get([]byte(k), false, 0); ok {
			t.Errorf("older unread %s outlived the eviction", k)
		}
	}
	if s.used.Load() > s.limit.Load() {
		t.Errorf("used %d over limit %d", s.used.Load(), s.limit.Load())
	}
}

// TestStoreTagCollisions stores keys whose hashes share the index tag (as
// a 32-bit collision would) in one shard and checks that lookup tells them
// apart by key and that unlinking one keeps the others reachable.
func TestStoreTagCollisions(t *testing.T) {
	s := newTestStore(1<<20, false)
	seen := map[uint32]string{}
	var k1, k2 string
	for i := 0; k2 == ""; i++ {
		k := "k" + strconv.Itoa(i)
		tag := hashTag(s.hash([]byte(k)))
		if o, ok := seen[tag]; ok {
			k1, k2 = o, k
		}
		seen[tag] = k
	}
	sh := &s.shards[0]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	now := s.clk.now()
	keys := []string{k1, "other", k2}
	var idx [3]int32
	for i, k := range keys {
		s.used.Add(int64(itemTotal(len(k), 1, 0)))
		idx[i] = s.link(sh, []byte(k+"v"), len(k), 0, 0, s.nextCAS(), now)
	}
	for i, k := range keys {
		if got := s.lookup(sh, []byte(k)); got != idx[i] {
			t.Fatalf("lookup %s = %d, want %d", k, got, idx[i])
		}
	}
	s.unlink(sh, idx[0])
	if got := s.lookup(sh, []byte(k1)); got != nilSlot {
		t.Fatalf("lookup %s after unlink = %d", k1, got)
	}
	if got := s.lookup(sh, []byte(k2)); got != idx[2] {
		t.Fatalf("lookup %s after unlinking %s = %d, want %d", k2, k1, got, idx[2])
	}
	s.unlink(sh, idx[2])
	s.unlink(sh, idx[1])
	if sh.index.n != 0 {
		t.Fatalf("index holds %d entries after unlinking all", sh.index.n)
	}
}

// TestIndexChurn inserts and removes entries with tags from a small range
// (long probe runs, equal tags, wrap-around at the table's end, growing and
// shrinking) and checks after every step that each entry is reachable from
// its home position and nothing else is in the table.
func TestIndexChurn(t *testing.T) {
	var x index
	live := map[int32]uint32{} // slot -> tag
	r := rand.New(rand.NewPCG(1, 2))
	next := int32(0)
	for step := range 20000 {
		if len(live) == 0 || r.IntN(100) < 55-(step/4000)*10 {
			tag := uint32(r.IntN(24)) | uint32(r.IntN(2))<<31
			x.insert(tag, next)
			live[next] = tag
			next++
		} else {
			for idx, tag := range live {
				x.remove(tag, idx)
				delete(live, idx)
				break
			}
		}
		if x.n != len(live) {
			t.Fatalf("step %d: n = %d, want %d", step, x.n, len(live))
		}
		used := 0
		for _, e := range x.tab {
			if e != 0 {
				used++
			}
		}
		if used != len(live) {
			t.Fatalf("step %d: %d entries in the table, want %d", step, used, len(live))
		}
		for idx, tag := range live {
			mask := len(x.tab) - 1
			i := int(tag) & mask
			for x.tab[i] != indexEntry(tag, idx) {
				if x.tab[i] == 0 {
					t.Fatalf("step %d: slot %d (tag %d) not reachable from its home", step, idx, tag)
				}
				i = (i + 1) & mask
			}
		}
	}
}

func TestStoreConcurrent(t *testing.T) {
	s := newTestStore(256<<10, false)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 3000 {
				k := "k" + strconv.Itoa((i*7+g)%500)
				setKey(s, k, i%300)
				s.get([]byte(k), i%3 == 0, 100)
				s.incrDecr([]byte(k), true, 1, 0, nil)
				if i%5 == 0 {
					s.delete([]byte(k))
				}
				s.store(&storeReq{mode: modeAppend, key: []byte(k), data: []byte("x"), maxItem: DefaultMaxItemSize})
			}
		}()
	}
	wg.Wait()
	if u := s.used.Load(); u < 0 || u > s.limit.Load() {
		t.Fatalf("used %d", u)
	}
}

// BenchmarkItemMemory reports heap bytes per stored 100-byte item with a
// 16-byte key (memcached 1.6.18: 175 B "stats bytes", ~202 B RSS).
func BenchmarkItemMemory(b *testing.B) {
	const n = 200000
	for range b.N {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		s := newTestStore(1<<40, false)
		val := make([]byte, 100)
		for i := range n {
			k := []byte("key:" + strconv.Itoa(10000000+i) + "abcd")
			s.store(&storeReq{mode: modeSet, key: k, data: val, maxItem: DefaultMaxItemSize})
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "heapB/item")
		runtime.KeepAlive(s)
	}
}

func BenchmarkGetParallel(b *testing.B) {
	s := newTestStore(64<<20, false)
	for i := range 1000 {
		setKey(s, "k"+strconv.Itoa(i), 100)
	}
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			s.get([]byte("k"+strconv.Itoa(i%1000)), false, 0)
			i++
		}
	})
}
