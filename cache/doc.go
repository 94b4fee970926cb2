// Package cache is a memcached 1.6.18 drop-in server: the classic text
// protocol and the meta protocol (mg, ms, md, ma, mn, me) with memcached's
// reply strings, limits and quirks, over TCP, with a hard memory limit and
// LRU eviction.
//
// The wire codec (Parser, Command, the Err* values) is independent of the
// connection: Parser.Parse takes bytes and returns a Command or a protocol
// *Error whose Reply is the exact line memcached sends. The Server owns
// listeners and connections and executes commands against the store.
//
// # Concurrency
//
// Ownership:
//   - Server.mu guards started, closed, listeners and the conns set.
//   - Each connection's buffers, Parser and writer belong to its own serve
//     goroutine; only conn.nc.Close (Shutdown) and the atomics lastCmd
//     (stats conns) are touched from elsewhere.
//   - The store has 64 shards; shard.mu guards that shard's hash index,
//     item chunks, free list, LRU list and shard counters. Item buffers (key+value) are
//     immutable once linked, so a reader copies the slice header under the
//     lock and writes the value to the socket after unlocking.
//   - store.used/limit, the CAS counter, the flush markers and serverStats
//     are atomics.
//
// Lock order: Server.mu may be held while taking a shard lock only in
// stats (never the reverse). At most one shard lock is held at a time:
// memory is reserved (evicting from shard tails, each under its own lock)
// before the target shard is locked, so eviction never nests shard locks.
//
// Goroutines: one accept loop per listener and one serve loop per
// connection, all counted in Server.wg; Shutdown closes listeners and
// connections and waits for wg.
//
// # Differences from memcached
//
//   - Eviction is per shard LRU (the writer's shard first, then others)
//     rather than memcached's per-slab-class segmented LRU; an item hit
//     moves to the head of its shard's list.
//   - Memory is counted as memcached's "stats bytes" (a 48 B header, 8 B of
//     CAS, the key and value with their terminators, 4 B for non-zero
//     flags) without slab rounding, so slightly more items fit in one -m.
//   - MaxConns counts client connections only; memcached also counts about
//     20 internal descriptors.
//   - The binary protocol is not implemented: a connection whose first byte
//     is 0x80 is closed (memcached would answer in binary).
//   - A get with a key over 250 bytes answers CLIENT_ERROR like memcached,
//     but memcached also drops replies of earlier pipelined commands that
//     it had not sent yet; we keep them.
//   - Too-large and out-of-memory replies for a storage command follow its
//     data block; memcached decides out-of-memory before reading the data,
//     we after, so for a block that is both malformed and unstorable we
//     answer "bad data chunk" where memcached answers out of memory.
//   - Statistics that describe memcached internals (slab mover, LRU
//     crawler, libevent, per-class eviction history in "stats items") are
//     reported with the right names but as 0; "stats items" and "stats
//     slabs" are computed by scanning the items into memcached's default
//     slab classes.
//   - Not implemented (answer ERROR): lru, lru_crawler, watch, stats
//     cachedump, debugtime; the -F (no flush_all), -C (no CAS) and -A
//     (shutdown) switches have no Config fields.
package cache
