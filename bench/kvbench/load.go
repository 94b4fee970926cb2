package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"substrate/bench/internal/benchkit"
)

const (
	keySpace  = 10000      // put keys are drawn uniformly from this many 8-byte keys
	valueSize = 256        // bytes per value
	rangeKey  = "kvbench0" // the single key read by the range measurements
	numConns  = 10         // gRPC connections shared by the many-client runs (like --conns=10)
)

// opFunc performs one request using cli; r is the worker's private RNG.
type opFunc func(ctx context.Context, cli *clientv3.Client, r *rand.Rand) error

// result is one measurement: throughput plus latency percentiles.
type result struct {
	OpsPerSec float64 `json:"ops_per_sec"`
	P50ms     float64 `json:"p50_ms"`
	P99ms     float64 `json:"p99_ms"`
	Ops       int     `json:"ops"`
	Errors    int     `json:"errors"`
	// SrvUs is the server's CPU time (user+system) per request in the
	// measured period, in microseconds (0 if /proc could not be read).
	SrvUs float64 `json:"srv_us"`
}

var (
	keys  = makeKeys()
	value = make([]byte, valueSize)
)

func makeKeys() []string {
	k := make([]string, keySpace)
	for i := range k {
		k[i] = fmt.Sprintf("%08d", i)
	}
	return k
}

func putOp(ctx context.Context, cli *clientv3.Client, r *rand.Rand) error {
	_, err := cli.Put(ctx, keys[r.IntN(keySpace)], string(value))
	return err
}

// rangeOp is a Get with default (linearizable) consistency.
func rangeOp(ctx context.Context, cli *clientv3.Client, _ *rand.Rand) error {
	_, err := cli.Get(ctx, rangeKey)
	return err
}

// runLoad runs op from `clients` concurrent workers (spread round-robin over
// conns) for warmup+dur. Only requests that start after the warmup are
// counted. Workers stop issuing requests at the deadline, and in-flight
// requests are abandoned 10 s after it, so the load always ends by itself.
// The server's CPU time (process pid) is read at the end of the warm-up
// and when the workers are done.
func runLoad(ctx context.Context, pid int, conns []*clientv3.Client, clients int, warmup, dur time.Duration, op opFunc) result {
	start := time.Now()
	measureFrom := start.Add(warmup)
	end := measureFrom.Add(dur)
	octx, cancel := context.WithDeadline(ctx, end.Add(10*time.Second))
	defer cancel()

	lat := make([][]time.Duration, clients)
	errs := make([]int, clients)
	cpu0 := make(chan time.Duration, 1)
	go func() {
		t := time.NewTimer(time.Until(measureFrom))
		defer t.Stop()
		select {
		case <-t.C:
			cpu0 <- benchkit.CPUTime(pid)
		case <-octx.Done():
			cpu0 <- 0
		}
	}()
	var wg sync.WaitGroup
	for w := 0; w < clients; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cli := conns[w%len(conns)]
			r := rand.New(rand.NewPCG(uint64(w), uint64(start.UnixNano())))
			samples := make([]time.Duration, 0, 4096)
			for {
				t0 := time.Now()
				if !t0.Before(end) || octx.Err() != nil {
					break
				}
				err := op(octx, cli, r)
				if t0.Before(measureFrom) {
					continue
				}
				if err != nil {
					errs[w]++
					continue
				}
				samples = append(samples, time.Since(t0))
			}
			lat[w] = samples
		}()
	}
	wg.Wait()
	elapsed := time.Since(measureFrom)
	var cpu time.Duration
	if c0 := <-cpu0; c0 > 0 {
		cpu = benchkit.CPUTime(pid) - c0
	}

	all := slices.Concat(lat...)
	slices.Sort(all)
	res := result{Ops: len(all), OpsPerSec: float64(len(all)) / elapsed.Seconds(),
		P50ms: benchkit.Ms(benchkit.Percentile(all, 0.50)), P99ms: benchkit.Ms(benchkit.Percentile(all, 0.99))}
	for _, e := range errs {
		res.Errors += e
	}
	if len(all) > 0 && cpu > 0 {
		res.SrvUs = float64(cpu.Microseconds()) / float64(len(all))
	}
	return res
}
