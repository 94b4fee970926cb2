// Command cachebench compares the memcached protocol served by
// `substrate memcached` with Debian's memcached 1.6.18, side by side in one run.
//
// Each round runs three phases; in every phase each target is started fresh
// (same memcached flags, free loopback port), loaded, and stopped with
// SIGTERM. The order of the targets alternates every round, and medians over
// rounds are reported, because the host is small, shared and noisy.
//
//  1. closed loop, on one server pre-populated with both key spaces:
//     token  keystone-token shape: 32 conns, 95% get / 5% set, 1-4 KB values, 40-hex keys
//     oslo   oslo.cache shape: 16 conns, 90% get of 10 keys / 10% set, 100-500 B values
//     pipe   4 conns, each writing 100 gets without waiting, then reading the 100 replies
//     churn  16 workers, each connecting, doing one get and closing
//  2. open loop: the token shape at a fixed rate, 70% of the lower of the two
//     targets' closed-loop token rates in this round (or -rate), the same
//     rate for both; latency is measured from each request's scheduled time.
//     open_late_* is how late the client itself sent (timer wake-up, CPU
//     contention with the server on a small host): a floor under open_p*.
//  3. memory: 1,000,000 items of 100 B (20 B keys) into -m 1024; growth of
//     VmRSS over the RSS right after start, per item.
//
// Every reply is checked (key, checksum in the flags; misses of pre-populated
// keys; read-your-write on a private key) and failures are counted and
// printed, never measured as successes.
//
//	go run ./bench/cachebench [-rounds 3] [-duration 5s] [-quick] [-json out.json]
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"substrate/bench/internal/benchkit"
)

// Load shapes.
const (
	tokenConns = 32
	tokenSet   = 0.05
	osloConns  = 16
	osloSet    = 0.10
	osloKeys   = 10 // keys per multi-get
	pipeConns  = 4
	pipeDepth  = 100
	memItems   = 1_000_000
	memValue   = 100
	memMB      = 1024 // -m for every server
	openFrac   = 0.7  // open-loop rate as a fraction of the lower closed-loop token rate
)

// metrics are the reported figures. Units: "ops/s", "conns/s" (higher is
// better); "ms", "B", "MiB" (lower is better). Goals are on the ratio
// substrate/memcached of the medians.
var metrics = []benchkit.Metric{
	{Key: "ready", Unit: "ms"},
	{Key: "token_ops", Unit: "ops/s", Goal: "ratio>=0.9"},
	{Key: "token_p50", Unit: "ms"},
	{Key: "token_p99", Unit: "ms", Goal: "ratio<=1.2"},
	{Key: "oslo_ops", Unit: "ops/s", Goal: "ratio>=0.9"},
	{Key: "oslo_p50", Unit: "ms"},
	{Key: "oslo_p99", Unit: "ms", Goal: "ratio<=1.2"},
	{Key: "pipe_ops", Unit: "ops/s", Goal: "ratio>=0.9"},
	{Key: "churn_conns", Unit: "conns/s", Goal: "ratio>=0.9"},
	{Key: "churn_p99", Unit: "ms"},
	{Key: "stop", Unit: "ms"},
	{Key: "open_rate", Unit: "ops/s"},
	{Key: "open_ops", Unit: "ops/s"},
	{Key: "open_p50", Unit: "ms"},
	{Key: "open_p99", Unit: "ms", Goal: "ratio<=1.2"},
	{Key: "open_p999", Unit: "ms"},
	{Key: "open_late_p50", Unit: "ms"},
	{Key: "open_late_p99", Unit: "ms"},
	{Key: "mem_per_item", Unit: "B", Goal: "ratio<=1.3"},
	{Key: "mem_rss", Unit: "MiB"},
}

// loads whose failures are reported, in order.
var loadNames = []string{"token", "oslo", "pipe", "churn", "open", "mem"}

// figures holds one target's metrics in one round (metric key -> value),
// plus "<load>_errors", "<load>_misses" and "<load>_bad" counts when nonzero.
type figures = benchkit.Figures

type round struct {
	Round    int                `json:"round"`
	First    string             `json:"first"`
	OpenRate float64            `json:"open_rate"`
	Results  map[string]figures `json:"results"` // target name -> figures
}

type report struct {
	Config struct {
		Substrate string `json:"substrate"`
		Memcached string `json:"memcached"`
		Rounds    int    `json:"rounds"`
		Duration  string `json:"duration"`
		Warmup    string `json:"warmup"`
	} `json:"config"`
	Rounds []round                      `json:"rounds"`
	Median map[string]figures           `json:"median"`          // target -> metric -> median
	Ratio  map[string]float64           `json:"ratio,omitempty"` // metric -> substrate/memcached (of medians)
	Goals  map[string]benchkit.GoalStat `json:"goals,omitempty"`
}

func main() {
	c := benchkit.CommonFlags("each load", time.Second)
	mcBin := flag.String("memcached", "/usr/bin/memcached", "path to memcached (skipped if missing)")
	rate := flag.Float64("rate", 0, "open-loop rate in ops/s (0: 70% of the lower closed-loop token rate of the round)")
	churnWorkers := flag.Int("churn-workers", 16, "concurrent connect-get-close workers")
	c.Parse()

	if c.Rounds < 1 || c.Duration <= 0 || *rate < 0 || *churnWorkers < 1 {
		fail("-rounds and -churn-workers must be >= 1, -duration > 0, -rate >= 0")
	}
	if !benchkit.IsExecutable(c.Substrate) {
		fail(fmt.Sprintf("substrate binary not found or not executable at %q (build it with `go build -o bin/substrate ./cmd/substrate`, or pass -substrate PATH)", c.Substrate))
	}
	targets := []target{substrateTarget(c.Substrate)}
	if benchkit.IsExecutable(*mcBin) {
		targets = append(targets, memcachedTarget(*mcBin))
	} else {
		fmt.Printf("cachebench: memcached binary %q not found; measuring substrate only (no ratios)\n", *mcBin)
	}
	warmup := min(time.Second, c.Duration/5)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var rep report
	rep.Config.Substrate, rep.Config.Memcached = c.Substrate, *mcBin
	rep.Config.Rounds, rep.Config.Duration, rep.Config.Warmup = c.Rounds, c.Duration.String(), warmup.String()
	est := time.Duration(c.Rounds*len(targets)) * (5*(c.Duration+warmup) + 8*time.Second)
	fmt.Printf("cachebench: %d round(s) x %d target(s), %v per load (+%v warm-up), about %v in total\n",
		c.Rounds, len(targets), c.Duration, warmup, est.Round(time.Second))

	for r := 0; r < c.Rounds; r++ {
		order := benchkit.Order(targets, r)
		rd := round{Round: r + 1, First: order[0].name, Results: map[string]figures{}}
		for _, t := range order {
			rd.Results[t.name] = figures{}
		}
		progress := func(phase string, t target) {
			fmt.Printf("round %d/%d %-6s %-9s ... ", r+1, c.Rounds, phase, t.name)
		}
		check := func(err error, phase string, t target) {
			if err != nil {
				fmt.Println()
				fail(fmt.Sprintf("round %d, %s, %s: %v", r+1, phase, t.name, err))
			}
		}

		for _, t := range order {
			progress("closed", t)
			f := rd.Results[t.name]
			check(benchClosed(ctx, t, f, c.Duration, warmup, *churnWorkers), "closed", t)
			fmt.Printf("token %.0f/s p99 %.2f ms, oslo %.0f/s, pipe %.0f/s, churn %.0f conns/s%s\n",
				f["token_ops"], f["token_p99"], f["oslo_ops"], f["pipe_ops"], f["churn_conns"],
				errNote(f, "token", "oslo", "pipe", "churn"))
		}

		rd.OpenRate = *rate
		if rd.OpenRate == 0 {
			for _, t := range order {
				if x := openFrac * rd.Results[t.name]["token_ops"]; rd.OpenRate == 0 || x < rd.OpenRate {
					rd.OpenRate = x
				}
			}
		}
		for _, t := range order {
			progress("open", t)
			f := rd.Results[t.name]
			check(benchOpen(ctx, t, f, rd.OpenRate, c.Duration, warmup), "open", t)
			fmt.Printf("%.0f/s offered, %.0f/s done, p50 %.2f p99 %.2f p99.9 %.2f ms (client lateness p50 %.2f p99 %.2f ms)%s\n",
				f["open_rate"], f["open_ops"], f["open_p50"], f["open_p99"], f["open_p999"],
				f["open_late_p50"], f["open_late_p99"], errNote(f, "open"))
		}

		for _, t := range order {
			progress("memory", t)
			f := rd.Results[t.name]
			check(benchMemory(ctx, t, f), "memory", t)
			fmt.Printf("%.1f B/item (RSS +%.0f MiB for %d items)%s\n",
				f["mem_per_item"], f["mem_rss"], memItems, errNote(f, "mem"))
		}
		rep.Rounds = append(rep.Rounds, rd)
		if ctx.Err() != nil {
			fail("interrupted")
		}
	}

	summarize(&rep, targets)
	printReport(os.Stdout, &rep, targets)
	if c.JSON != "" {
		if err := benchkit.WriteJSON(c.JSON, &rep); err != nil {
			fail(err.Error())
		}
	}
}

// withServer starts a fresh server of target t, runs fn against it and stops
// it, recording "ready" and "stop" times in f if record is set.
func withServer(ctx context.Context, t target, f figures, record bool, fn func(s *server) error) error {
	s, err := startServer(ctx, t, memMB)
	if err != nil {
		return err
	}
	if err := fn(s); err != nil {
		s.Stop()
		return err
	}
	d, err := s.Stop()
	if err != nil {
		return fmt.Errorf("stop: %w", err)
	}
	if record {
		f["ready"], f["stop"] = benchkit.Ms(s.Ready), benchkit.Ms(d)
	}
	return ctx.Err()
}

// benchClosed runs the closed-loop loads on one pre-populated server.
func benchClosed(ctx context.Context, t target, f figures, dur, warmup time.Duration, churnWorkers int) error {
	return withServer(ctx, t, f, true, func(s *server) error {
		if err := populate(s.addr, tokenKS, 4); err != nil {
			return fmt.Errorf("populate token keys: %w", err)
		}
		if err := populate(s.addr, osloKS, 4); err != nil {
			return fmt.Errorf("populate oslo keys: %w", err)
		}
		loads := []struct {
			name    string
			clients int
			op      opFunc
		}{
			{"token", tokenConns, getSetOp(tokenKS, tokenSet)},
			{"oslo", osloConns, multiGetOp(osloKS, osloSet, osloKeys)},
			{"pipe", pipeConns, pipelineOp(osloKS, pipeDepth)},
			{"churn", churnWorkers, churnOp(osloKS)},
		}
		for _, l := range loads {
			res := runLoad(ctx, s.addr, l.clients, 0, warmup, dur, l.op)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			record(f, l.name, res)
		}
		f["churn_conns"] = f["churn_ops"]
		return nil
	})
}

// benchOpen runs the token shape open-loop at rate ops/s on a fresh server.
func benchOpen(ctx context.Context, t target, f figures, rate float64, dur, warmup time.Duration) error {
	return withServer(ctx, t, f, false, func(s *server) error {
		if err := populate(s.addr, tokenKS, 4); err != nil {
			return fmt.Errorf("populate token keys: %w", err)
		}
		res := runLoad(ctx, s.addr, tokenConns, rate, warmup, dur, getSetOp(tokenKS, tokenSet))
		record(f, "open", res)
		f["open_rate"], f["open_late_p50"], f["open_late_p99"] = rate, res.LateP50ms, res.LateP99ms
		return nil
	})
}

// benchMemory measures RSS growth per item on a fresh server.
func benchMemory(ctx context.Context, t target, f figures) error {
	return withServer(ctx, t, f, false, func(s *server) error {
		m, err := measureMemory(s, memItems, memValue)
		if err != nil {
			return err
		}
		f["mem_per_item"], f["mem_rss"] = m.PerItem, m.DeltaMiB
		if m.Errors > 0 {
			f["mem_errors"] = float64(m.Errors)
		}
		return nil
	})
}

// record stores a load's result under its name in f.
func record(f figures, name string, res result) {
	f[name+"_ops"], f[name+"_p50"], f[name+"_p99"], f[name+"_p999"] = res.OpsPerSec, res.P50ms, res.P99ms, res.P999ms
	for k, v := range map[string]int64{"errors": res.Errors, "misses": res.Misses, "bad": res.Bad} {
		if v > 0 {
			f[name+"_"+k] = float64(v)
		}
	}
}

// summarize fills in medians, ratios and goal checks.
func summarize(rep *report, targets []target) {
	rep.Median, rep.Ratio, rep.Goals = benchkit.Summarize(metrics, names(targets), kitRounds(rep.Rounds))
}

func printReport(w io.Writer, rep *report, targets []target) {
	fmt.Fprintf(w, "\nMedians of %d round(s), %s per load, loopback; ops/s, conns/s: higher is better; ms, B, MiB: lower is better\n\n",
		len(rep.Rounds), rep.Config.Duration)
	t := &benchkit.Table{Width: 13, Names: names(targets), Metrics: metrics,
		Median: rep.Median, Ratio: rep.Ratio, Goals: rep.Goals, GoalTrim: "ratio"}
	benchkit.PrintMedians(w, t)
	benchkit.PrintRounds(w, t, kitRounds(rep.Rounds))
	failures := false
	for _, rd := range rep.Rounds {
		for _, t := range targets {
			if n := errNote(rd.Results[t.name], loadNames...); n != "" {
				fmt.Fprintf(w, "round %d %s:%s\n", rd.Round, t.name, n)
				failures = true
			}
		}
	}
	if !failures {
		fmt.Fprintf(w, "\nNo errors: every reply was well-formed, every get of a pre-populated key hit with the right value, every read-your-write check passed.\n")
	}
}

// errNote lists failure counts of the named loads ("" when there were none).
func errNote(f figures, loads ...string) string {
	var s []string
	for _, l := range loads {
		for _, k := range []string{"errors", "misses", "bad"} {
			if n := f[l+"_"+k]; n > 0 {
				s = append(s, fmt.Sprintf("%s %s %.0f", l, k, n))
			}
		}
	}
	if len(s) == 0 {
		return ""
	}
	return " (FAILURES: " + strings.Join(s, ", ") + ")"
}

func names(targets []target) []string {
	var ns []string
	for _, t := range targets {
		ns = append(ns, t.name)
	}
	return ns
}

func kitRounds(rounds []round) []benchkit.Round {
	var rs []benchkit.Round
	for _, rd := range rounds {
		rs = append(rs, benchkit.Round{Round: rd.Round, First: rd.First, Results: rd.Results})
	}
	return rs
}

func fail(msg string) { benchkit.Fail("cachebench", msg) }
