// Command amqpbench compares the AMQP 0-9-1 broker served by
// `substrate serve --services amqp,etcd` with Debian's rabbitmq-server
// 3.10.8, side by side in one run.
//
// rabbitmq-server is started once per run (it takes 5-30 s) on free loopback
// ports with its own epmd, cookie and data, and reused by every round; every
// measurement deletes its queues and exchanges. substrate is started fresh
// in every round. The order of the targets alternates every round, and
// medians over rounds are reported, because the host is small, shared and
// noisy. Everyone logs in as guest/guest from loopback. Each round measures,
// per target:
//
//  1. conn_rss: VmRSS growth of the server process (beam.smp for RabbitMQ,
//     found in the process tree under rabbitmq-server) per idle connection,
//     over 1,000 connections that each open one channel and then sit idle;
//     conn_open is how fast they were opened (16 at a time).
//  2. tp1, tp4: transient throughput with 1 publisher + 1 consumer and 4 + 4,
//     each on its own connection: 1 KB non-persistent messages to a
//     non-durable queue through the default exchange. Publishers use
//     publisher confirms with at most 200 unconfirmed messages each;
//     consumers use prefetch 200 and ack with multiple=true every 50
//     deliveries. Reported: messages consumed per second (tpN) and confirmed
//     per second (tpN_pub) over the measured window, and the server's peak
//     VmRSS during tp4 (tp4_rss) and its CPU time per consumed message
//     (tp4_cpu, from /proc/PID/stat). The per-round progress line also
//     shows the backlog (messages still in the queue when it was deleted)
//     and the CPU cores the server and this client used during tp4: on a
//     small host a fast server is limited by the client's CPU.
//  3. rpc: oslo.messaging-shaped RPC. A server consumes from a queue bound
//     to a topic exchange with a routing key; 8 callers, each on its own
//     connection with its own exclusive reply queue (x-expires 1800000),
//     publish requests with reply_to and correlation_id in a closed loop;
//     the server publishes replies mandatory to the default exchange.
//     Reported: calls/s, p50 and p99 round trip (HDR histogram).
//
// idle_rss is the server's VmRSS right after it became ready (plus 1 s):
// substrate (amqp+etcd) every round, RabbitMQ once, after its start.
//
// Failures (publish errors, nacks, unconfirmed publishes, returned replies,
// RPC timeouts, stale replies, unexpected connection closes, failed dials)
// are counted and printed, never measured as successes.
//
//	go run ./bench/amqpbench [-rounds 3] [-duration 5s] [-conns 1000] [-quick] [-json out.json]
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"substrate/bench/internal/benchkit"
	"substrate/internal/rabbitmqtest"
)

// metrics are the reported figures. Units: "msgs/s", "calls/s", "conns/s"
// (higher is better); "ms", "KiB", "MiB", "us/msg" (lower is better). Goals
// are on the ratio substrate/rabbitmq of the medians.
var metrics = []benchkit.Metric{
	{Key: "ready", Unit: "ms"},
	{Key: "idle_rss", Unit: "MiB"},
	{Key: "conn_rss", Unit: "KiB", Goal: "ratio<=0.25"},
	{Key: "conn_open", Unit: "conns/s"},
	{Key: "tp1", Unit: "msgs/s", Goal: "ratio>=2.0"},
	{Key: "tp1_pub", Unit: "msgs/s"},
	{Key: "tp4", Unit: "msgs/s", Goal: "ratio>=2.0"},
	{Key: "tp4_pub", Unit: "msgs/s"},
	{Key: "tp4_rss", Unit: "MiB"},
	{Key: "tp4_cpu", Unit: "us/msg"},
	{Key: "rpc_calls", Unit: "calls/s"},
	{Key: "rpc_p50", Unit: "ms", Goal: "ratio<=0.5"},
	{Key: "rpc_p99", Unit: "ms"},
}

// loads whose failures are reported, in order.
var loadNames = []string{"conn", "tp1", "tp4", "rpc"}

// figures holds one target's metrics in one round (metric key -> value),
// plus "<load>_errors" counts when something failed and "tpN_backlog"
// (messages left in the queue when it was deleted).
type figures = benchkit.Figures

type round struct {
	Round   int                          `json:"round"`
	First   string                       `json:"first"`
	Results map[string]figures           `json:"results"`          // target name -> figures
	Errors  map[string]map[string]string `json:"errors,omitempty"` // target -> load -> description
}

type report struct {
	Config struct {
		Substrate string `json:"substrate"`
		RabbitMQ  string `json:"rabbitmq"`
		Rounds    int    `json:"rounds"`
		Duration  string `json:"duration"`
		Warmup    string `json:"warmup"`
		Conns     int    `json:"conns"`
		NoFile    uint64 `json:"nofile"`
	} `json:"config"`
	Rounds []round                      `json:"rounds"`
	Median map[string]figures           `json:"median"`          // target -> metric -> median
	Ratio  map[string]float64           `json:"ratio,omitempty"` // metric -> substrate/rabbitmq (of medians)
	Goals  map[string]benchkit.GoalStat `json:"goals,omitempty"`
	// Problems are warning and error lines substrate logged.
	Problems []string `json:"substrate_log_problems,omitempty"`
}

// cleanups run before the process exits, also on fail().
var cleanups []func()

func main() {
	c := benchkit.CommonFlags("each throughput and RPC load", 2*time.Second)
	noRabbit := flag.Bool("no-rabbitmq", false, "measure substrate only")
	nConns := flag.Int("conns", 1000, "idle connections for conn_rss")
	c.Parse()

	if c.Rounds < 1 || c.Duration <= 0 || *nConns < 1 {
		fail("-rounds and -conns must be >= 1 and -duration > 0")
	}
	if !benchkit.IsExecutable(c.Substrate) {
		fail(fmt.Sprintf("substrate binary not found or not executable at %q (build it with `go build -o bin/substrate ./cmd/substrate`, or pass -substrate PATH)", c.Substrate))
	}
	if abs, err := filepath.Abs(c.Substrate); err == nil {
		c.Substrate = abs // substrate runs in its temp dir
	}
	warmup := min(time.Second, c.Duration/4)
	nofile := setNoFile()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var rep report
	rep.Config.Substrate, rep.Config.RabbitMQ = c.Substrate, rabbitmqtest.Wrapper
	rep.Config.Rounds, rep.Config.Duration, rep.Config.Warmup = c.Rounds, c.Duration.String(), warmup.String()
	rep.Config.Conns, rep.Config.NoFile = *nConns, nofile

	names := []string{"substrate"}
	var rmq *broker
	var rmqIdle figures
	why := rabbitmqtest.Available()
	if *noRabbit {
		why = "-no-rabbitmq"
	}
	if why != "" {
		fmt.Printf("amqpbench: not measuring rabbitmq: %s; measuring substrate only (no ratios)\n", why)
		rep.Config.RabbitMQ = ""
	} else {
		fmt.Printf("amqpbench: starting rabbitmq-server (once for the whole run) ... ")
		var err error
		if rmq, err = startRabbit(ctx); err != nil {
			fmt.Println()
			fail("rabbitmq: " + err.Error())
		}
		cleanups = append(cleanups, func() { rmq.stop() })
		sleepCtx(ctx, time.Second)
		rmqIdle = figures{"ready": benchkit.Ms(rmq.ready), "idle_rss": benchkit.MiB(benchkit.RSS(rmq.pid()))}
		fmt.Printf("ready on %s after %.1f s, beam.smp PID %d, VmRSS %.0f MiB\n",
			rmq.addr, rmq.ready.Seconds(), rmq.pid(), rmqIdle["idle_rss"])
		names = append(names, "rabbitmq")
	}
	per := 3*(c.Duration+warmup) + 2*time.Second + time.Duration(*nConns)*5*time.Millisecond + 6*time.Second
	est := time.Duration(c.Rounds*len(names)) * per
	fmt.Printf("amqpbench: %d round(s) x %d target(s), %v per load (+%v warm-up), %d idle connections, RLIMIT_NOFILE %d; about %v\n",
		c.Rounds, len(names), c.Duration, warmup, *nConns, nofile, est.Round(time.Second))

	for r := 0; r < c.Rounds; r++ {
		order := benchkit.Order(names, r)
		rd := round{Round: r + 1, First: order[0], Results: map[string]figures{}, Errors: map[string]map[string]string{}}
		for _, name := range order {
			fmt.Printf("round %d/%d %-9s ... ", r+1, c.Rounds, name)
			var f figures
			var errs map[string]string
			var err error
			if name == "substrate" {
				var probs []string
				f, errs, probs, err = benchSubstrate(ctx, c.Substrate, *nConns, c.Duration, warmup)
				rep.Problems = append(rep.Problems, probs...)
			} else {
				f = figures{"ready": rmqIdle["ready"], "idle_rss": rmqIdle["idle_rss"]}
				errs, err = benchLoads(ctx, rmq, f, *nConns, c.Duration, warmup)
			}
			if err != nil {
				fmt.Println()
				fail(fmt.Sprintf("round %d, %s: %v", r+1, name, err))
			}
			rd.Results[name] = f
			if len(errs) > 0 {
				rd.Errors[name] = errs
			}
			fmt.Printf("conn %.1f KiB, tp1 %.0f/s (backlog %.0f), tp4 %.0f/s (backlog %.0f, CPU cores server %.2f client %.2f), rpc %.0f/s p50 %.2f p99 %.2f ms%s\n",
				f["conn_rss"], f["tp1"], f["tp1_backlog"], f["tp4"], f["tp4_backlog"], f["tp4_srv_cores"], f["tp4_cli_cores"],
				f["rpc_calls"], f["rpc_p50"], f["rpc_p99"], errNote(f, loadNames...))
		}
		rep.Rounds = append(rep.Rounds, rd)
		if ctx.Err() != nil {
			fail("interrupted")
		}
	}
	runCleanups()

	summarize(&rep, names)
	printReport(os.Stdout, &rep, names)
	if c.JSON != "" {
		if err := benchkit.WriteJSON(c.JSON, &rep); err != nil {
			fail(err.Error())
		}
	}
}

// benchSubstrate starts a fresh substrate, records its ready time and idle
// RSS, runs the loads and stops it. It also returns the warning and error
// lines it logged.
func benchSubstrate(ctx context.Context, bin string, nConns int, dur, warmup time.Duration) (figures, map[string]string, []string, error) {
	b, err := startSubstrate(ctx, bin)
	if err != nil {
		return nil, nil, nil, err
	}
	f := figures{"ready": benchkit.Ms(b.ready)}
	sleepCtx(ctx, time.Second)
	f["idle_rss"] = benchkit.MiB(benchkit.RSS(b.pid()))
	errs, err := benchLoads(ctx, b, f, nConns, dur, warmup)
	probs := b.problems()
	if _, serr := b.stop(); serr != nil && err == nil {
		err = serr
	}
	if err != nil {
		err = fmt.Errorf("%v\n--- substrate output tail ---\n%s", err, b.logs())
	}
	return f, errs, probs, err
}

// benchLoads runs every load against b, storing figures in f. It returns
// failure descriptions by load; err is for a load that could not run at all.
func benchLoads(ctx context.Context, b *broker, f figures, nConns int, dur, warmup time.Duration) (map[string]string, error) {
	failures := map[string]string{}
	note := func(load string, e *errs) {
		if n := e.total(); n > 0 {
			f[load+"_errors"] = float64(n)
			failures[load] = e.String()
		}
	}
	cr, err := runConns(ctx, b, nConns, time.Second)
	if err != nil {
		return failures, fmt.Errorf("idle connections: %w", err)
	}
	f["conn_rss"], f["conn_open"] = cr.PerConnKiB, cr.ConnsPerSec
	note("conn", cr.Errors)
	sleepCtx(ctx, 500*time.Millisecond) // let the server finish closing them

	for _, n := range []int{1, 4} {
		load := fmt.Sprintf("tp%d", n)
		tr, err := runThroughput(ctx, b, n, warmup, dur)
		if err != nil {
			return failures, fmt.Errorf("%s: %w (failures: %s)", load, err, tr.Errors)
		}
		f[load], f[load+"_pub"], f[load+"_backlog"] = tr.MsgsPerSec, tr.PubPerSec, float64(tr.Backlog)
		f[load+"_rss"] = benchkit.MiB(tr.PeakRSS)
		f[load+"_srv_cores"], f[load+"_cli_cores"] = tr.SrvCPU, tr.CliCPU
		if tr.MsgsPerSec > 0 {
			f[load+"_cpu"] = tr.SrvCPU / tr.MsgsPerSec * 1e6
		}
		note(load, tr.Errors)
	}

	rr, err := runRPC(ctx, b, warmup, dur)
	if err != nil {
		return failures, fmt.Errorf("rpc: %w (failures: %s)", err, rr.Errors)
	}
	f["rpc_calls"], f["rpc_p50"], f["rpc_p99"] = rr.CallsPerSec, rr.P50ms, rr.P99ms
	note("rpc", rr.Errors)
	return failures, nil
}

// summarize fills in medians, ratios and goal checks.
func summarize(rep *report, names []string) {
	rep.Median, rep.Ratio, rep.Goals = benchkit.Summarize(metrics, names, kitRounds(rep.Rounds))
}

func printReport(w io.Writer, rep *report, names []string) {
	fmt.Fprintf(w, "\nMedians of %d round(s), %s per load, loopback; msgs/s, calls/s, conns/s: higher is better; ms, KiB, MiB, us/msg: lower is better\n\n",
		len(rep.Rounds), rep.Config.Duration)
	t := &benchkit.Table{Width: 10, Names: names, Metrics: metrics,
		Median: rep.Median, Ratio: rep.Ratio, Goals: rep.Goals, GoalTrim: "ratio"}
	benchkit.PrintMedians(w, t)
	benchkit.PrintRounds(w, t, kitRounds(rep.Rounds))

	failures := false
	for _, rd := range rep.Rounds {
		for _, name := range names {
			for _, load := range loadNames {
				if d, ok := rd.Errors[name][load]; ok {
					if !failures {
						fmt.Fprintf(w, "\nFAILURES:\n")
					}
					fmt.Fprintf(w, "round %d %s %s: %s\n", rd.Round, name, load, d)
					failures = true
				}
			}
		}
	}
	if !failures {
		fmt.Fprintf(w, "\nNo errors: every publish was confirmed (no nacks), every message arrived with its 1 KB body, every RPC call got its reply within %v and no reply was returned, every connection and channel opened and stayed open.\n", rpcTimeout)
	}
	if len(rep.Problems) > 0 {
		// Group by message, first example of each.
		var order []string
		count, example := map[string]int{}, map[string]string{}
		for _, p := range rep.Problems {
			k := p
			if i := strings.Index(p, "msg="); i >= 0 {
				k = p[i:]
				if j := strings.Index(k, `" `); j >= 0 {
					k = k[:j+1]
				}
			}
			if count[k] == 0 {
				order = append(order, k)
				example[k] = p
			}
			count[k]++
		}
		fmt.Fprintf(w, "\nsubstrate logged %d warning/error line(s):\n", len(rep.Problems))
		for _, k := range order {
			fmt.Fprintf(w, "  %dx, e.g. %s\n", count[k], example[k])
		}
	}
}

// errNote lists failure counts of the named loads ("" when there were none).
func errNote(f figures, loads ...string) string {
	var s []string
	for _, l := range loads {
		if n := f[l+"_errors"]; n > 0 {
			s = append(s, fmt.Sprintf("%s errors %.0f", l, n))
		}
	}
	if len(s) == 0 {
		return ""
	}
	return " (FAILURES: " + strings.Join(s, ", ") + ")"
}

func runCleanups() {
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	cleanups = nil
}

func kitRounds(rounds []round) []benchkit.Round {
	var rs []benchkit.Round
	for _, rd := range rounds {
		rs = append(rs, benchkit.Round{Round: rd.Round, First: rd.First, Results: rd.Results})
	}
	return rs
}
