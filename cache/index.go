package cache

// index is a shard's hash index: open addressing with linear probing over
// a power-of-two table of uint64 entries. An entry holds a tag, the high 32
// bits of the key's 64-bit hash (whose low bits pick the shard), above the
// item's slot + 1; 0 is an empty entry. A tag's home position is its low
// bits, so the table can be resized and entries moved without the keys.
// Equal tags are told apart by comparing keys (see store.lookup).
//
// It replaced a map[uint64]int32: a lookup in that touched a group's
// control word and then its slot, often two cache lines that missed, and
// profiles of the multi-get load put about a tenth of the server's CPU in
// the map access; here a lookup usually reads one line. The table is
// pointer-free, so the GC never scans it, and holds an entry in 8 bytes
// at a load of 3/8 to 3/4.
type index struct {
	tab []uint64
	n   int // entries in use
}

const minIndexSize = 8

func indexEntry(tag uint32, idx int32) uint64 { return uint64(tag)<<32 | uint64(uint32(idx+1)) }

func entryTag(e uint64) uint32 { return uint32(e >> 32) }
func entrySlot(e uint64) int32 { return int32(uint32(e)) - 1 }

// insert adds the entry for slot idx with tag; the caller ensures it is
// not present.
func (x *index) insert(tag uint32, idx int32) {
	if (x.n+1)*4 > len(x.tab)*3 {
		x.resize(max(minIndexSize, 2*len(x.tab)))
	}
	x.put(indexEntry(tag, idx))
	x.n++
}

func (x *index) put(e uint64) {
	mask := len(x.tab) - 1
	i := int(entryTag(e)) & mask
	for x.tab[i] != 0 {
		i = (i + 1) & mask
	}
	x.tab[i] = e
}

// remove deletes the entry for slot idx with tag, which must be present,
// shifting later entries of its probe run back so that no lookup stops
// early (Knuth's algorithm R; no tombstones).
func (x *index) remove(tag uint32, idx int32) {
	mask := len(x.tab) - 1
	e := indexEntry(tag, idx)
	i := int(tag) & mask
	for x.tab[i] != e {
		i = (i + 1) & mask
	}
	for j := i; ; {
		j = (j + 1) & mask
		f := x.tab[j]
		if f == 0 {
			break
		}
		// f stays if its home lies cyclically in (i, j].
		k := int(entryTag(f)) & mask
		if i <= j {
			if i < k && k <= j {
				continue
			}
		} else if i < k || k <= j {
			continue
		}
		x.tab[i] = f
		i = j
	}
	x.tab[i] = 0
	x.n--
	if len(x.tab) > minIndexSize && x.n*8 < len(x.tab) {
		x.resize(len(x.tab) / 2)
	}
}

func (x *index) resize(size int) {
	old := x.tab
	x.tab = make([]uint64, size)
	for _, e := range old {
		if e != 0 {
			x.put(e)
		}
	}
}
