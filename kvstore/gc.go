package kvstore

import (
	"os"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"time"
)

// The Go collector's headroom while etcd writes.
//
// Go collects when the heap has grown by GOGC% (100) of what the last
// cycle found live. etcd alone keeps about 10 MB live, so under a stream
// of puts (about 15 KB of short-lived garbage each: gRPC frames, the
// Raft entry, the WAL record, the request's trace) the collector ran
// three to four times a second and took about 12% of the member's CPU,
// against about 7% for Debian's etcd 3.4, whose Raft log grows in memory
// up to its snapshot count (100,000 entries) and so collects less often.
// etcd 3.7 compacts that log every 100 entries, which is better for
// memory, and costs collections.
//
// So while a member applies at least gcBusyRate entries a second, the
// collector is given at least gcHeadroom of garbage before a cycle (GOGC
// raised to headroom/live, at most maxGCPercent): about 30 MB more RSS
// under a write load, inside etcd's 256 MiB share of the memory budget,
// and Go's memory limit still bounds the whole heap. A member that is idle
// or only read (an OpenStack controller's usual etcd) leaves GOGC at 100,
// so the broker's and the cache's memory figures are those of GOGC=100.
// GOGC set in the environment wins: then nothing here runs.
const (
	gcHeadroom   = 32 << 20
	gcTick       = time.Second
	maxGCPercent = 1000
)

// gcBusyRate is the apply rate, in entries per second, from which a
// member counts as busy (a variable for the test).
var gcBusyRate = 500.0

// gcTune is the process-wide setting (one Go heap, any number of
// members: tests run three in one process).
var gcTune = struct {
	mu      sync.Mutex
	busy    map[*Store]bool
	percent int // GOGC in force; 100 unless raised here
}{busy: map[*Store]bool{}, percent: 100}

// gcTunable reports whether the operator left GOGC to substrate.
func gcTunable() bool { return os.Getenv("GOGC") == "" }

// setGCBusy records whether s is busy writing, and sets GOGC for the
// live heap: raised while any member is busy, 100 once none is.
func setGCBusy(s *Store, busy bool) {
	gcTune.mu.Lock()
	defer gcTune.mu.Unlock()
	if busy {
		gcTune.busy[s] = true
	} else {
		delete(gcTune.busy, s)
	}
	want := 100
	if len(gcTune.busy) > 0 {
		want = gcPercentFor(liveHeap())
	}
	// SetGCPercent stops the world: a change within 10% is not worth it,
	// but going back to 100 always is.
	cur := gcTune.percent
	if want != cur && (want == 100 || 10*abs(want-cur) > cur) {
		debug.SetGCPercent(want)
		gcTune.percent = want
	}
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}

// gcPercentFor is the GOGC that lets live bytes grow by gcHeadroom, and
// never less than Go's default.
func gcPercentFor(live uint64) int {
	if live == 0 {
		return maxGCPercent
	}
	p := int(uint64(gcHeadroom) * 100 / live)
	return min(max(p, 100), maxGCPercent)
}

func liveHeap() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

// tuneGC watches the member's apply rate until Shutdown, and sets the
// process's GOGC from it (above).
func (s *Store) tuneGC() {
	defer s.wg.Done()
	defer setGCBusy(s, false)
	t := time.NewTicker(gcTick)
	defer t.Stop()
	last, lastAt := s.etcd.Server.AppliedIndex(), time.Now()
	for {
		select {
		case <-s.stopping:
			return
		case now := <-t.C:
			idx := s.etcd.Server.AppliedIndex()
			rate := float64(idx-last) / now.Sub(lastAt).Seconds()
			last, lastAt = idx, now
			setGCBusy(s, rate >= gcBusyRate)
		}
	}
}
