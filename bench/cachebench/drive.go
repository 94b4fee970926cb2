package main

import (
	"context"
	"fmt"
	"time"
)

// drive runs one named load against an already running server at addr
// (which must hold nothing the load needs but what populate stores), for
// profiling a server under a known load: -addr HOST:PORT -load NAME.
// rate > 0 runs it open loop.
func drive(ctx context.Context, addr, load string, clients int, rate float64, dur, warmup time.Duration) error {
	var op opFunc
	var ks *keyspace
	switch load {
	case "token":
		ks, op = tokenKS, getSetOp(tokenKS, tokenSet)
		if clients == 0 {
			clients = tokenConns
		}
	case "oslo":
		ks, op = osloKS, multiGetOp(osloKS, osloSet, osloKeys)
		if clients == 0 {
			clients = osloConns
		}
	case "pipe":
		ks, op = osloKS, pipelineOp(osloKS, pipeDepth)
		if clients == 0 {
			clients = pipeConns
		}
	case "churn":
		ks, op = osloKS, churnOp(osloKS)
		if clients == 0 {
			clients = 16
		}
	default:
		return fmt.Errorf("unknown load %q (token, oslo, pipe, churn)", load)
	}
	if err := populate(addr, ks, 4); err != nil {
		return fmt.Errorf("populate: %w", err)
	}
	res := runLoad(ctx, addr, clients, rate, warmup, dur, op).result()
	fmt.Printf("%s on %s: %d clients, %.0f ops/s, p50 %.3f p99 %.3f p99.9 %.3f ms", load, addr, clients,
		res.OpsPerSec, res.P50ms, res.P99ms, res.P999ms)
	if rate > 0 {
		fmt.Printf(", offered %.0f/s, client lateness p50 %.3f p99 %.3f ms (wake-up p99 %.3f ms)", rate, res.LateP50ms, res.LateP99ms, res.WakeP99ms)
	}
	fmt.Printf(", errors %d misses %d bad %d\n", res.Errors, res.Misses, res.Bad)
	return nil
}
