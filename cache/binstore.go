package cache

import "math"

// Store operations for the binary protocol, whose exptimes are unsigned
// 32-bit values (memcached passes them to realtime() as a positive
// time_t, so 0xfffffffe is an absolute time in 2106, not "expired").

// realtimeU converts a binary-protocol exptime to relative time.
func (c *clock) realtimeU(e uint32, now uint32) uint32 {
	t := int64(e)
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

// getRel fetches key; with touch it first sets the expiry to the
// relative time rel (binary touch, gat).
func (s *store) getRel(key []byte, touch bool, exptime uint32) (view, bool) {
	now := s.clk.now()
	return s.fetch(key, now, touch, s.clk.realtimeU(exptime, now))
}

// Results of deleteCAS.
const (
	delDeleted = iota
	delNotFound
	delExists
)

// deleteCAS is the binary delete: a non-zero cas must match the item's.
func (s *store) deleteCAS(key []byte, cas uint64) int {
	sh := s.shardFor(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	idx := s.find(sh, key, s.clk.now())
	if idx == nilSlot {
		return delNotFound
	}
	if cas != 0 && cas != sh.at(idx).cas {
		return delExists
	}
	s.unlink(sh, idx)
	return delDeleted
}

// flushDelay clamps a binary flush delay into the text protocol's range.
func flushDelay(e uint32) int32 {
	if e > math.MaxInt32 {
		return math.MaxInt32
	}
	return int32(e)
}
