package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// keyspace is a pre-populated set of keys with a value-size range.
type keyspace struct {
	keys       []string
	minV, maxV int // value size range in bytes, inclusive
}

// hexKeys returns n distinct 40-char hex keys (like keystone token ids or
// dogpile's sha1-mangled oslo.cache keys), deterministic for a seed.
func hexKeys(n int, seed uint64) []string {
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	seen := make(map[string]bool, n)
	keys := make([]string, 0, n)
	var b [20]byte
	for len(keys) < n {
		for i := range b {
			b[i] = byte(r.UintN(256))
		}
		k := hex.EncodeToString(b[:])
		if !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
	}
	return keys
}

var (
	// tokenKS: keystone tokens, 1-4 KB values; ~128 MB of values.
	tokenKS = &keyspace{keys: hexKeys(50000, 1), minV: 1024, maxV: 4096}
	// osloKS: oslo.cache entries, 100-500 B values; ~30 MB of values.
	osloKS = &keyspace{keys: hexKeys(100000, 2), minV: 100, maxV: 500}
)

func (ks *keyspace) key(r *rand.Rand) string { return ks.keys[r.IntN(len(ks.keys))] }
func (ks *keyspace) size(r *rand.Rand) int   { return ks.minV + r.IntN(ks.maxV-ks.minV+1) }

// result is one measurement: throughput, latency percentiles and error counts.
type result struct {
	OpsPerSec float64 `json:"ops_per_sec"`
	P50ms     float64 `json:"p50_ms"`
	P99ms     float64 `json:"p99_ms"`
	P999ms    float64 `json:"p999_ms"`
	// Open loop only: how late the client itself sent requests relative to
	// their schedule (timer wake-up delay, a busy client). This is included
	// in the latencies above and is the same for both targets: a floor.
	LateP50ms float64 `json:"late_p50_ms,omitempty"`
	LateP99ms float64 `json:"late_p99_ms,omitempty"`
	// Open loop only: the part of that lateness not spent waiting for the
	// connection's previous reply, i.e. the client's own wake-up delay.
	WakeP99ms float64 `json:"wake_p99_ms,omitempty"`
	Ops       int64   `json:"ops"`
	Errors    int64   `json:"errors"` // I/O or protocol errors (connection dropped and redialled)
	Misses    int64   `json:"misses"` // gets of pre-populated keys that found nothing
	Bad       int64   `json:"bad"`    // wrong data: mismatched key/checksum, failed read-your-write
}

// worker is one client: its connection, RNG, histogram and counters.
type worker struct {
	id       int
	addr     string
	deadline time.Time // I/O deadline for every connection it opens
	c        *mcConn   // nil until dialled, and after an I/O error
	r        *rand.Rand
	hist     *hdrhistogram.Histogram // latency in µs
	late     *hdrhistogram.Histogram // open loop: send time - scheduled time, µs
	wake     *hdrhistogram.Histogram // open loop: send time - max(scheduled time, previous reply), µs
	ops      int64
	errs     int64
	misses   int64
	bad      int64
	buf      []byte // scratch for building values
	batch    []string

	// read-your-write check: every 20th set goes to the worker's private
	// key, and its next op reads it back and expects exactly that value.
	sets       int
	checkKey   string
	checkFlags uint32
	checkDue   bool
}

func (w *worker) conn() (*mcConn, error) {
	if w.c == nil {
		c, err := dialMC(w.addr, w.deadline)
		if err != nil {
			return nil, err
		}
		w.c = c
	}
	return w.c, nil
}

// opFunc performs one request (or one batch) and returns how many
// operations it counts for. Wrong data is counted in w.misses/w.bad;
// a returned error means the connection is unusable.
type opFunc func(w *worker) (n int, err error)

func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(1, 60_000_000, 3) } // 1 µs .. 60 s

// run is the raw outcome of runLoad: histograms and counters, which add
// up over the time slices that one target's load is split into.
type run struct {
	hist    *hdrhistogram.Histogram // latency, µs
	late    *hdrhistogram.Histogram // open loop: send time - scheduled time, µs
	wake    *hdrhistogram.Histogram // open loop: the part of late not spent waiting for a reply
	ops     int64
	errs    int64
	misses  int64
	bad     int64
	elapsed time.Duration // measured time (open loop: scheduled time)
	open    bool
}

func newRun() *run { return &run{hist: newHist(), late: newHist(), wake: newHist()} }

// add merges o into r.
func (r *run) add(o *run) {
	r.hist.Merge(o.hist)
	r.late.Merge(o.late)
	r.wake.Merge(o.wake)
	r.ops += o.ops
	r.errs += o.errs
	r.misses += o.misses
	r.bad += o.bad
	r.elapsed += o.elapsed
	r.open = r.open || o.open
}

// result turns r into the reported figures.
func (r *run) result() result {
	res := result{Ops: r.ops, Errors: r.errs, Misses: r.misses, Bad: r.bad}
	if r.elapsed > 0 {
		res.OpsPerSec = float64(r.ops) / r.elapsed.Seconds()
	}
	res.P50ms = float64(r.hist.ValueAtQuantile(50)) / 1000
	res.P99ms = float64(r.hist.ValueAtQuantile(99)) / 1000
	res.P999ms = float64(r.hist.ValueAtQuantile(99.9)) / 1000
	if r.open {
		res.LateP50ms = float64(r.late.ValueAtQuantile(50)) / 1000
		res.LateP99ms = float64(r.late.ValueAtQuantile(99)) / 1000
		res.WakeP99ms = float64(r.wake.ValueAtQuantile(99)) / 1000
	}
	return res
}

// runLoad runs op from `clients` workers for warmup+dur. Only ops that start
// (closed loop) or are scheduled (open loop) after the warm-up are counted.
//
// rate == 0: closed loop, each worker issues its next op when the last one
// completed. rate > 0: open loop, ops are scheduled at fixed intervals
// (rate/clients per worker, staggered) and latency is measured from the
// scheduled time, so a stalled server is charged for the queueing it causes
// (no coordinated omission).
//
// Workers stop issuing at the deadline; every connection has an I/O deadline
// 10 s later, so the load always ends by itself.
func runLoad(ctx context.Context, addr string, clients int, rate float64, warmup, dur time.Duration, op opFunc) *run {
	start := time.Now()
	measureFrom := start.Add(warmup)
	end := measureFrom.Add(dur)
	hardStop := end.Add(10 * time.Second)

	ws := make([]*worker, clients)
	var wg sync.WaitGroup
	for i := range ws {
		w := &worker{id: i, addr: addr, deadline: hardStop, hist: newHist(), late: newHist(), wake: newHist(),
			r:        rand.New(rand.NewPCG(uint64(i), uint64(start.UnixNano()))),
			checkKey: fmt.Sprintf("cachebench:check:%d:%d", start.UnixNano(), i)}
		ws[i] = w
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				if w.c != nil {
					w.c.Close()
				}
			}()
			var interval time.Duration
			var done time.Time // when the previous op completed
			next := start
			if rate > 0 {
				interval = time.Duration(float64(clients) / rate * float64(time.Second))
				next = start.Add(interval * time.Duration(i) / time.Duration(clients))
			}
			for ctx.Err() == nil {
				var t0 time.Time
				if rate > 0 {
					if !next.Before(end) {
						break
					}
					if d := time.Until(next); d > 0 {
						time.Sleep(d)
					} else if time.Now().After(hardStop) {
						// Hopelessly behind: count what was never sent as errors.
						w.errs += int64(end.Sub(next)/interval) + 1
						break
					}
					t0 = next
					next = next.Add(interval)
				} else {
					t0 = time.Now()
					if !t0.Before(end) {
						break
					}
				}
				sent := time.Now()
				n, err := op(w)
				now := time.Now()
				lat := now.Sub(t0)
				ready := t0 // when this op could have been sent at the earliest
				if done.After(ready) {
					ready = done
				}
				done = now
				if err != nil {
					if w.c != nil {
						w.c.Close()
						w.c = nil
					}
					if !t0.Before(measureFrom) {
						w.errs++
					}
					time.Sleep(10 * time.Millisecond) // don't spin on a broken server
					continue
				}
				if t0.Before(measureFrom) {
					continue
				}
				w.ops += int64(n)
				w.hist.RecordValue(max(1, lat.Microseconds()))
				if rate > 0 {
					w.late.RecordValue(max(1, sent.Sub(t0).Microseconds()))
					w.wake.RecordValue(max(1, sent.Sub(ready).Microseconds()))
				}
			}
		}()
	}
	wg.Wait()
	r := newRun()
	r.elapsed = time.Since(measureFrom)
	if rate > 0 {
		r.elapsed = dur // ops were scheduled over exactly dur
		r.open = true
	}
	for _, w := range ws {
		r.add(&run{hist: w.hist, late: w.late, wake: w.wake, ops: w.ops, errs: w.errs, misses: w.misses, bad: w.bad})
	}
	return r
}

// setOp stores a fresh value for key, reads the reply and returns the
// value's flags (its checksum).
func setOp(w *worker, c *mcConn, ks *keyspace, key string) (uint32, error) {
	v, flags := makeValue(w.buf, key, ks.size(w.r), w.r)
	w.buf = v
	c.writeSet(key, flags, v)
	if err := c.w.Flush(); err != nil {
		return 0, err
	}
	return flags, c.readStored()
}

// getSetOp is the keystone-token shape (and any single-key get/set mix):
// get a random pre-populated key, or with probability setFrac set one.
// Every 20th set goes to the worker's private key and is read back by the
// worker's next op (read-your-write check; it still counts as a get).
func getSetOp(ks *keyspace, setFrac float64) opFunc {
	return func(w *worker) (int, error) {
		c, err := w.conn()
		if err != nil {
			return 0, err
		}
		if w.checkDue {
			w.checkDue = false
			c.writeGet(w.checkKey)
			if err := c.w.Flush(); err != nil {
				return 0, err
			}
			key, flags, data, end, err := c.readValue()
			if err != nil {
				return 0, err
			}
			if end || string(key) != w.checkKey || flags != w.checkFlags || !checkValue(w.checkKey, flags, data) {
				w.bad++
			}
			if !end {
				if _, _, _, end, err = c.readValue(); err != nil {
					return 0, err
				} else if !end {
					return 0, fmt.Errorf("%w: no END after single value", errProto)
				}
			}
			return 1, nil
		}
		if w.r.Float64() < setFrac {
			w.sets++
			key := ks.key(w.r)
			if w.sets%20 == 0 {
				key = w.checkKey
			}
			flags, err := setOp(w, c, ks, key)
			if err != nil {
				return 0, err
			}
			if key == w.checkKey {
				w.checkDue, w.checkFlags = true, flags
			}
			return 1, nil
		}
		key := ks.key(w.r)
		c.writeGet(key)
		if err := c.w.Flush(); err != nil {
			return 0, err
		}
		misses, bad, err := c.getCheck(key)
		w.misses += int64(misses)
		w.bad += int64(bad)
		return 1, err
	}
}

// multiGetOp is the oslo.cache shape: with probability setFrac set one key,
// otherwise one "get" of nKeys random keys. One command counts as one op.
func multiGetOp(ks *keyspace, setFrac float64, nKeys int) opFunc {
	return func(w *worker) (int, error) {
		c, err := w.conn()
		if err != nil {
			return 0, err
		}
		if w.r.Float64() < setFrac {
			_, err := setOp(w, c, ks, ks.key(w.r))
			return 1, err
		}
		w.batch = w.batch[:0]
		for range nKeys {
			w.batch = append(w.batch, ks.key(w.r))
		}
		c.writeGet(w.batch...)
		if err := c.w.Flush(); err != nil {
			return 0, err
		}
		misses, bad, err := c.getCheck(w.batch...)
		w.misses += int64(misses)
		w.bad += int64(bad)
		return 1, err
	}
}

// pipelineOp writes depth single-key gets without waiting, then reads the
// depth replies. Each get counts as one op.
func pipelineOp(ks *keyspace, depth int) opFunc {
	return func(w *worker) (int, error) {
		c, err := w.conn()
		if err != nil {
			return 0, err
		}
		w.batch = w.batch[:0]
		for range depth {
			k := ks.key(w.r)
			w.batch = append(w.batch, k)
			c.writeGet(k)
		}
		if err := c.w.Flush(); err != nil {
			return 0, err
		}
		for _, k := range w.batch {
			misses, bad, err := c.getCheck(k)
			if err != nil {
				return 0, err
			}
			w.misses += int64(misses)
			w.bad += int64(bad)
		}
		return depth, nil
	}
}

// churnOp connects, does one get, and closes: one op is one connection.
func churnOp(ks *keyspace) opFunc {
	return func(w *worker) (int, error) {
		c, err := dialMC(w.addr, w.deadline)
		if err != nil {
			return 0, err
		}
		defer c.Close()
		key := ks.key(w.r)
		c.writeGet(key)
		if err := c.w.Flush(); err != nil {
			return 0, err
		}
		misses, bad, err := c.getCheck(key)
		w.misses += int64(misses)
		w.bad += int64(bad)
		return 1, err
	}
}

// populate stores every key of ks (a value of random size each) over conns
// parallel connections, pipelining batches of 100 sets.
func populate(addr string, ks *keyspace, conns int) error {
	return parallelSets(addr, len(ks.keys), conns, func(i int, r *rand.Rand, buf []byte) (string, []byte, uint32) {
		k := ks.keys[i]
		v, f := makeValue(buf, k, ks.size(r), r)
		return k, v, f
	})
}

// parallelSets stores items 0..n-1 (made by mk) over conns connections,
// pipelining batches of 100 sets and then reading their 100 replies.
func parallelSets(addr string, n, conns int, mk func(i int, r *rand.Rand, buf []byte) (string, []byte, uint32)) error {
	const batch = 100
	errc := make(chan error, conns)
	deadline := time.Now().Add(2 * time.Minute)
	for ci := range conns {
		go func() {
			c, err := dialMC(addr, deadline)
			if err != nil {
				errc <- err
				return
			}
			defer c.Close()
			r := rand.New(rand.NewPCG(uint64(ci), 7))
			var buf []byte
			for lo := ci * batch; lo < n; lo += conns * batch {
				hi := min(lo+batch, n)
				for i := lo; i < hi; i++ {
					k, v, f := mk(i, r, buf)
					buf = v
					c.writeSet(k, f, v)
				}
				if err := c.w.Flush(); err != nil {
					errc <- err
					return
				}
				for i := lo; i < hi; i++ {
					if err := c.readStored(); err != nil {
						errc <- fmt.Errorf("item %d: %w", i, err)
						return
					}
				}
			}
			errc <- nil
		}()
	}
	var first error
	for range conns {
		if err := <-errc; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// memResult is the outcome of the memory-per-item load.
type memResult struct {
	PerItem  float64 // (VmRSS after load - VmRSS after start) / items, bytes
	DeltaMiB float64 // VmRSS growth, MiB
	Items    int64   // curr_items reported by the server
	Errors   int64   // evictions, missing items, wrong values, I/O errors
}

// memKey is the key of memory-load item i: 20 bytes.
func memKey(i int) string { return fmt.Sprintf("cachebench:m:%07d", i) }

// measureMemory stores items items of valueSize bytes (keys of 20 bytes),
// then reports the server's RSS growth per item. It checks via "stats"
// that all items are resident (no evictions) and reads back a sample.
func measureMemory(s *server, items, valueSize int) (memResult, error) {
	var m memResult
	err := parallelSets(s.addr, items, 4, func(i int, r *rand.Rand, buf []byte) (string, []byte, uint32) {
		k := memKey(i)
		v, f := makeValue(buf, k, valueSize, r)
		return k, v, f
	})
	if err != nil {
		return m, fmt.Errorf("load: %w", err)
	}
	time.Sleep(200 * time.Millisecond) // let the last replies' buffers settle
	rss := s.rss()
	if rss == 0 || s.baseRSS == 0 {
		return m, fmt.Errorf("cannot read VmRSS of PID %d", s.Cmd.Process.Pid)
	}
	m.DeltaMiB = float64(rss-s.baseRSS) / (1 << 20)
	m.PerItem = float64(rss-s.baseRSS) / float64(items)

	c, err := dialMC(s.addr, time.Now().Add(30*time.Second))
	if err != nil {
		return m, err
	}
	defer c.Close()
	st, err := c.stats()
	if err != nil {
		return m, fmt.Errorf("stats: %w", err)
	}
	fmt.Sscan(st["curr_items"], &m.Items)
	var evictions int64
	fmt.Sscan(st["evictions"], &evictions)
	m.Errors += evictions + max(0, int64(items)-m.Items)
	r := rand.New(rand.NewPCG(3, 4))
	for range 1000 {
		k := memKey(r.IntN(items))
		c.writeGet(k)
		if err := c.w.Flush(); err != nil {
			return m, err
		}
		misses, bad, err := c.getCheck(k)
		if err != nil {
			return m, err
		}
		m.Errors += int64(misses + bad)
	}
	return m, nil
}
