// Command cachebench compares the memcached protocol served by
// `substrate memcached` with Debian's memcached 1.6.18, side by side in one run.
//
// Each round runs three phases. In the closed- and open-loop phases every
// target is started fresh (same memcached flags, free loopback port) and
// pre-populated, then each load runs on the targets in turn in one-second
// slices (A B B A A B ...), each after a short warm-up, and a target's
// slices are added up: the host is small, shared and noisy, and slicing
// spreads a neighbour's burst over both targets instead of charging it to
// whichever happened to be running. The memory phase runs one fresh
// target at a time. Servers are stopped with SIGTERM. The order of the
// targets alternates every round, and medians over rounds are reported.
//
//  1. closed loop, on servers pre-populated with both key spaces:
//     token  keystone-token shape: 32 conns, 95% get / 5% set, 1-4 KB values, 40-hex keys
//     oslo   oslo.cache shape: 16 conns, 90% get of 10 keys / 10% set, 100-500 B values
//     pipe   4 conns, each writing 100 gets without waiting, then reading the 100 replies
//     churn  16 workers, each connecting, doing one get and closing
//     maslap (on fresh servers of their own) memcaslap, libmemcached-tools, its default mix: 90% get /
//     10% set, 50 connections from 2 threads; ops/s and server CPU per op
//     (maslap.go); memcaslap is required
//  2. open loop: the token shape at a fixed rate, 70% of the lower of the two
//     targets' closed-loop token rates in this round (or -rate), the same
//     rate for both; latency is measured from each request's scheduled time.
//     open_late_* is how late the client sent: its own timer wake-up and
//     CPU contention with the server on a small host, and, as each
//     connection has one request outstanding, an earlier reply that came
//     back after the next request was due. open_p* include it.
//     open_wake_p99 is the part of it not spent waiting for a reply: the
//     client's own wake-up delay, which on a 2-core host mostly measures
//     how the server's threads share the CPUs with the client's.
//  3. memory: 1,000,000 items of 100 B (20 B keys) into -m 1024; growth of
//     VmRSS over the RSS right after start, per item.
//
// Every reply is checked (key, checksum in the flags; misses of pre-populated
// keys; read-your-write on a private key) and failures are counted and
// printed, never measured as successes.
//
//	go run ./bench/cachebench [-rounds 3] [-duration 5s] [-quick] [-json out.json] [-phases memaslap,closed]
//	go run ./bench/cachebench -addr 127.0.0.1:11211 -load token [-rate N] [-clients N]
//
// The second form drives one load against a server that is already running
// (to profile it under that load) and prints its figures.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
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
	{Key: "maslap_ops", Unit: "ops/s", Goal: "ratio>=1.0"},
	{Key: "maslap_cpu", Unit: "us/op"},
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
	{Key: "open_wake_p99", Unit: "ms"},
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
	mcBin := flag.String("memcached", "/usr/bin/memcached", "path to memcached (required unless -substrate-only)")
	maslapBin := flag.String("memcaslap", "/usr/bin/memcaslap", "path to libmemcached's memaslap (Debian: memcaslap, package libmemcached-tools); required")
	alone := flag.Bool("substrate-only", false, "measure substrate alone, without memcached (no ratios)")
	rate := flag.Float64("rate", 0, "open-loop rate in ops/s (0: 70% of the lower closed-loop token rate of the round)")
	churnWorkers := flag.Int("churn-workers", 16, "concurrent connect-get-close workers")
	addr := flag.String("addr", "", "drive one -load against the server already running at this address (for profiling) instead of comparing")
	load := flag.String("load", "token", "with -addr: token, oslo, pipe or churn")
	phaseList := flag.String("phases", strings.Join(phaseNames, ","), "comma-separated phases to run: "+strings.Join(phaseNames, ", ")+
		" (open needs closed, for its rate, or -rate); the report shows their metrics only")
	clients := flag.Int("clients", 0, "with -addr: connections or workers (0: the load's default)")
	c.Parse()

	if c.Rounds < 1 || c.Duration <= 0 || *rate < 0 || *churnWorkers < 1 {
		fail("-rounds and -churn-workers must be >= 1, -duration > 0, -rate >= 0")
	}
	if *addr != "" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		if err := drive(ctx, *addr, *load, *clients, *rate, c.Duration, min(time.Second, c.Duration/5)); err != nil {
			fail(err.Error())
		}
		return
	}
	if !benchkit.IsExecutable(c.Substrate) {
		fail(fmt.Sprintf("substrate binary not found or not executable at %q (build it with `go build -o bin/substrate ./cmd/substrate`, or pass -substrate PATH)", c.Substrate))
	}
	if !benchkit.IsExecutable(*maslapBin) {
		fail(fmt.Sprintf("memcaslap not found at %q: install libmemcached-tools, or pass -memcaslap PATH", *maslapBin))
	}
	targets := []target{substrateTarget(c.Substrate)}
	switch {
	case *alone:
		fmt.Println("cachebench: -substrate-only: measuring substrate alone (no ratios)")
	case benchkit.IsExecutable(*mcBin):
		targets = append(targets, memcachedTarget(*mcBin))
	default:
		fail(fmt.Sprintf("memcached binary %q not found: install memcached (Debian's 1.6.18), pass -memcached PATH, or -substrate-only", *mcBin))
	}
	warmup := min(time.Second, c.Duration/5)
	phases := map[string]bool{}
	for _, p := range strings.Split(*phaseList, ",") {
		if !slices.Contains(phaseNames, p) {
			fail(fmt.Sprintf("-phases: unknown phase %q (phases: %s)", p, strings.Join(phaseNames, ", ")))
		}
		phases[p] = true
	}
	if phases["open"] && !phases["closed"] && *rate == 0 {
		fail("-phases: open takes its rate from closed's token load: add closed or give -rate")
	}
	metrics = phaseMetrics(phases)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var rep report
	rep.Config.Substrate, rep.Config.Memcached = c.Substrate, *mcBin
	rep.Config.Rounds, rep.Config.Duration, rep.Config.Warmup = c.Rounds, c.Duration.String(), warmup.String()
	est := time.Duration(c.Rounds*len(targets)) * (6*(c.Duration+warmup) + 11*time.Second)
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

		if phases["closed"] {
			fmt.Printf("round %d/%d closed    %s ... ", r+1, c.Rounds, strings.Join(names(order), " + "))
			check(benchClosed(ctx, order, rd.Results, c.Duration, warmup, *churnWorkers), "closed", order[0])
			fmt.Println()
			for _, t := range order {
				f := rd.Results[t.name]
				fmt.Printf("  %-9s token %.0f/s p99 %.2f ms, oslo %.0f/s p99 %.2f ms, pipe %.0f/s, churn %.0f conns/s%s\n",
					t.name, f["token_ops"], f["token_p99"], f["oslo_ops"], f["oslo_p99"], f["pipe_ops"], f["churn_conns"],
					errNote(f, "token", "oslo", "pipe", "churn"))
			}
		}
		if phases["memaslap"] {
			maslapPhase(ctx, r, c.Rounds, *maslapBin, order, rd.Results, c.Duration, check)
		}
		if phases["open"] {
			openPhase(ctx, r, c.Rounds, *rate, order, &rd, c.Duration, warmup, check)
		}
		if phases["memory"] {
			for _, t := range order {
				progress("memory", t)
				f := rd.Results[t.name]
				check(benchMemory(ctx, t, f), "memory", t)
				fmt.Printf("%.1f B/item (RSS +%.0f MiB for %d items)%s\n",
					f["mem_per_item"], f["mem_rss"], memItems, errNote(f, "mem"))
			}
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

// phaseNames are the phases of a round, in order (-phases).
var phaseNames = []string{"closed", "memaslap", "open", "memory"}

// phaseMetrics is the metrics the given phases measure (ready and stop:
// every phase's servers).
func phaseMetrics(phases map[string]bool) []benchkit.Metric {
	prefixes := map[string][]string{
		"closed":   {"token_", "oslo_", "pipe_", "churn_"},
		"memaslap": {"maslap_"},
		"open":     {"open_"},
		"memory":   {"mem_"},
	}
	var out []benchkit.Metric
	for _, m := range metrics {
		keep := m.Key == "ready" || m.Key == "stop"
		for p, pre := range prefixes {
			for _, x := range pre {
				keep = keep || phases[p] && strings.HasPrefix(m.Key, x)
			}
		}
		if keep {
			out = append(out, m)
		}
	}
	return out
}

type checkFunc func(err error, phase string, t target)

// maslapPhase runs the memaslap phase of round r and prints its figures.
func maslapPhase(ctx context.Context, r, rounds int, maslapBin string, order []target, results map[string]figures, dur time.Duration, check checkFunc) {
	fmt.Printf("round %d/%d memaslap  %s (%d conns, 90%% get / 10%% set) ... ", r+1, rounds, strings.Join(names(order), " + "), maslapConns)
	check(benchMaslap(ctx, maslapBin, order, results, dur), "memaslap", order[0])
	fmt.Println()
	for _, t := range order {
		f := results[t.name]
		fmt.Printf("  %-9s %.0f ops/s, server CPU %.1f us/op\n", t.name, f["maslap_ops"], f["maslap_cpu"])
	}
}

// openPhase runs the open-loop phase of round r (at rate, or 70% of the
// lower closed-loop token rate) and prints its figures.
func openPhase(ctx context.Context, r, rounds int, rate float64, order []target, rd *round, dur, warmup time.Duration, check checkFunc) {
	rd.OpenRate = rate
	if rd.OpenRate == 0 {
		for _, t := range order {
			if x := openFrac * rd.Results[t.name]["token_ops"]; rd.OpenRate == 0 || x < rd.OpenRate {
				rd.OpenRate = x
			}
		}
	}
	fmt.Printf("round %d/%d open      %s at %.0f/s ... ", r+1, rounds, strings.Join(names(order), " + "), rd.OpenRate)
	check(benchOpen(ctx, order, rd.Results, rd.OpenRate, dur, warmup), "open", order[0])
	fmt.Println()
	for _, t := range order {
		f := rd.Results[t.name]
		fmt.Printf("  %-9s %.0f/s done, p50 %.2f p99 %.2f p99.9 %.2f ms (client lateness p50 %.2f p99 %.2f ms, of which not waiting for a reply p99 %.2f ms)%s\n",
			t.name, f["open_ops"], f["open_p50"], f["open_p99"], f["open_p999"],
			f["open_late_p50"], f["open_late_p99"], f["open_wake_p99"], errNote(f, "open"))
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

// withServers starts a fresh server of every target (in the given order),
// runs fn against them and stops them, recording "ready" and "stop" times
// in figs.
func withServers(ctx context.Context, ts []target, figs map[string]figures, fn func(ss []*server) error) error {
	var ss []*server
	stopAll := func() {
		for _, s := range ss {
			s.Stop()
		}
	}
	for _, t := range ts {
		s, err := startServer(ctx, t, memMB)
		if err != nil {
			stopAll()
			return err
		}
		ss = append(ss, s)
	}
	if err := fn(ss); err != nil {
		stopAll()
		return err
	}
	for i, s := range ss {
		d, err := s.Stop()
		if err != nil {
			for _, s := range ss[i+1:] {
				s.Stop()
			}
			return fmt.Errorf("stop %s: %w", ts[i].name, err)
		}
		f := figs[ts[i].name]
		f["ready"], f["stop"] = benchkit.Ms(s.Ready), benchkit.Ms(d)
	}
	return ctx.Err()
}

// interleave runs one load against every server in turn, in slices of
// dur/slices (at least one second each) with a warm-up before each, and
// returns each server's slices added up. The order flips every slice
// (A B B A A B ...), so that noise from a shared host (other processes,
// CPU frequency, a neighbour's burst) falls on every target alike instead
// of on whichever ran during it, and neither always follows the other.
func interleave(ctx context.Context, ss []*server, dur, warmup time.Duration, load func(s *server, warmup, dur time.Duration) *run) []*run {
	slices := max(1, int(dur/time.Second))
	slice := dur / time.Duration(slices)
	warm := max(100*time.Millisecond, warmup/time.Duration(slices))
	runs := make([]*run, len(ss))
	for i := range runs {
		runs[i] = newRun()
	}
	for k := 0; k < slices && ctx.Err() == nil; k++ {
		for j := range ss {
			i := j
			if k%2 == 1 {
				i = len(ss) - 1 - j
			}
			runs[i].add(load(ss[i], warm, slice))
		}
	}
	return runs
}

// benchClosed runs the closed-loop loads on fresh servers of every target,
// each pre-populated, interleaving the targets (see interleave).
func benchClosed(ctx context.Context, ts []target, figs map[string]figures, dur, warmup time.Duration, churnWorkers int) error {
	return withServers(ctx, ts, figs, func(ss []*server) error {
		for _, s := range ss {
			if err := populate(s.addr, tokenKS, 4); err != nil {
				return fmt.Errorf("%s: populate token keys: %w", s.Name, err)
			}
			if err := populate(s.addr, osloKS, 4); err != nil {
				return fmt.Errorf("%s: populate oslo keys: %w", s.Name, err)
			}
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
			runs := interleave(ctx, ss, dur, warmup, func(s *server, warm, d time.Duration) *run {
				return runLoad(ctx, s.addr, l.clients, 0, warm, d, l.op)
			})
			if ctx.Err() != nil {
				return ctx.Err()
			}
			for i, s := range ss {
				record(figs[s.Name], l.name, runs[i].result())
			}
		}
		for _, s := range ss {
			figs[s.Name]["churn_conns"] = figs[s.Name]["churn_ops"]
		}
		return nil
	})
}

// benchOpen runs the token shape open-loop at rate ops/s on fresh servers
// of every target, interleaved.
func benchOpen(ctx context.Context, ts []target, figs map[string]figures, rate float64, dur, warmup time.Duration) error {
	scratch := map[string]figures{}
	for _, t := range ts {
		scratch[t.name] = figures{}
	}
	return withServers(ctx, ts, scratch, func(ss []*server) error {
		for _, s := range ss {
			if err := populate(s.addr, tokenKS, 4); err != nil {
				return fmt.Errorf("%s: populate token keys: %w", s.Name, err)
			}
		}
		runs := interleave(ctx, ss, dur, warmup, func(s *server, warm, d time.Duration) *run {
			return runLoad(ctx, s.addr, tokenConns, rate, warm, d, getSetOp(tokenKS, tokenSet))
		})
		for i, s := range ss {
			f, res := figs[s.Name], runs[i].result()
			record(f, "open", res)
			f["open_rate"], f["open_late_p50"], f["open_late_p99"], f["open_wake_p99"] = rate, res.LateP50ms, res.LateP99ms, res.WakeP99ms
		}
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
