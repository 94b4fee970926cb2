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
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

// metric describes one reported figure.
type metric struct {
	key  string
	unit string // "msgs/s", "calls/s", "conns/s" (higher is better); "ms", "KiB", "MiB", "us/msg" (lower is better)
	goal string // goal on the ratio substrate/rabbitmq of the medians, if any
}

var metrics = []metric{
	{"ready", "ms", ""},
	{"idle_rss", "MiB", ""},
	{"conn_rss", "KiB", "ratio<=0.25"},
	{"conn_open", "conns/s", ""},
	{"tp1", "msgs/s", "ratio>=2.0"},
	{"tp1_pub", "msgs/s", ""},
	{"tp4", "msgs/s", "ratio>=2.0"},
	{"tp4_pub", "msgs/s", ""},
	{"tp4_rss", "MiB", ""},
	{"tp4_cpu", "us/msg", ""},
	{"rpc_calls", "calls/s", ""},
	{"rpc_p50", "ms", "ratio<=0.5"},
	{"rpc_p99", "ms", ""},
}

// loads whose failures are reported, in order.
var loadNames = []string{"conn", "tp1", "tp4", "rpc"}

// figures holds one target's metrics in one round (metric key -> value),
// plus "<load>_errors" counts when something failed and "tpN_backlog"
// (messages left in the queue when it was deleted).
type figures map[string]float64

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
	Rounds []round             `json:"rounds"`
	Median map[string]figures  `json:"median"`          // target -> metric -> median
	Ratio  map[string]float64  `json:"ratio,omitempty"` // metric -> substrate/rabbitmq (of medians)
	Goals  map[string]goalStat `json:"goals,omitempty"`
	// Problems are warning and error lines substrate logged.
	Problems []string `json:"substrate_log_problems,omitempty"`
}

type goalStat struct {
	Goal string  `json:"goal"`
	Got  float64 `json:"got"`
	Met  bool    `json:"met"`
}

// cleanups run before the process exits, also on fail().
var cleanups []func()

func main() {
	subBin := flag.String("substrate", "bin/substrate", "path to the substrate binary")
	noRabbit := flag.Bool("no-rabbitmq", false, "measure substrate only")
	rounds := flag.Int("rounds", 3, "rounds; each runs both targets, alternating which goes first")
	dur := flag.Duration("duration", 5*time.Second, "measured duration of each throughput and RPC load")
	nConns := flag.Int("conns", 1000, "idle connections for conn_rss")
	quick := flag.Bool("quick", false, "smoke test: 1 round of 2s loads (unless -rounds/-duration are given)")
	jsonOut := flag.String("json", "", "also write the results as JSON to this file")
	flag.Parse()

	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if *quick {
		if !set["rounds"] {
			*rounds = 1
		}
		if !set["duration"] {
			*dur = 2 * time.Second
		}
	}
	if *rounds < 1 || *dur <= 0 || *nConns < 1 {
		fail("-rounds and -conns must be >= 1 and -duration > 0")
	}
	if !isExecutable(*subBin) {
		fail(fmt.Sprintf("substrate binary not found or not executable at %q (build it with `go build -o bin/substrate ./cmd/substrate`, or pass -substrate PATH)", *subBin))
	}
	if abs, err := filepath.Abs(*subBin); err == nil {
		*subBin = abs // substrate runs in its temp dir
	}
	warmup := min(time.Second, *dur/4)
	nofile := setNoFile()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var rep report
	rep.Config.Substrate, rep.Config.RabbitMQ = *subBin, rabbitWrapper
	rep.Config.Rounds, rep.Config.Duration, rep.Config.Warmup = *rounds, dur.String(), warmup.String()
	rep.Config.Conns, rep.Config.NoFile = *nConns, nofile

	names := []string{"substrate"}
	var rmq *broker
	var rmqIdle figures
	why := rabbitAvailable()
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
		rmqIdle = figures{"ready": ms(rmq.ready), "idle_rss": mib(rssOf(rmq.pid()))}
		fmt.Printf("ready on %s after %.1f s, beam.smp PID %d, VmRSS %.0f MiB\n",
			rmq.addr, rmq.ready.Seconds(), rmq.pid(), rmqIdle["idle_rss"])
		names = append(names, "rabbitmq")
	}
	per := 3*(*dur+warmup) + 2*time.Second + time.Duration(*nConns)*5*time.Millisecond + 6*time.Second
	est := time.Duration(*rounds*len(names)) * per
	fmt.Printf("amqpbench: %d round(s) x %d target(s), %v per load (+%v warm-up), %d idle connections, RLIMIT_NOFILE %d; about %v\n",
		*rounds, len(names), *dur, warmup, *nConns, nofile, est.Round(time.Second))

	for r := 0; r < *rounds; r++ {
		order := slices.Clone(names)
		if r%2 == 1 {
			slices.Reverse(order)
		}
		rd := round{Round: r + 1, First: order[0], Results: map[string]figures{}, Errors: map[string]map[string]string{}}
		for _, name := range order {
			fmt.Printf("round %d/%d %-9s ... ", r+1, *rounds, name)
			var f figures
			var errs map[string]string
			var err error
			if name == "substrate" {
				var probs []string
				f, errs, probs, err = benchSubstrate(ctx, *subBin, *nConns, *dur, warmup)
				rep.Problems = append(rep.Problems, probs...)
			} else {
				f = figures{"ready": rmqIdle["ready"], "idle_rss": rmqIdle["idle_rss"]}
				errs, err = benchLoads(ctx, rmq, f, *nConns, *dur, warmup)
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
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(&rep, "", "  ")
		if err := os.WriteFile(*jsonOut, append(b, '\n'), 0o644); err != nil {
			fail(err.Error())
		}
		fmt.Printf("\nwrote %s\n", *jsonOut)
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
	f := figures{"ready": ms(b.ready)}
	sleepCtx(ctx, time.Second)
	f["idle_rss"] = mib(rssOf(b.pid()))
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
		f[load+"_rss"] = mib(tr.PeakRSS)
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
	rep.Median = map[string]figures{}
	for _, name := range names {
		m := figures{}
		for _, mt := range metrics {
			var xs []float64
			for _, rd := range rep.Rounds {
				xs = append(xs, rd.Results[name][mt.key])
			}
			m[mt.key] = median(xs)
		}
		rep.Median[name] = m
	}
	if len(names) < 2 {
		return
	}
	sub, rmq := rep.Median["substrate"], rep.Median["rabbitmq"]
	rep.Ratio = map[string]float64{}
	rep.Goals = map[string]goalStat{}
	for _, mt := range metrics {
		if rmq[mt.key] == 0 {
			continue
		}
		r := sub[mt.key] / rmq[mt.key]
		rep.Ratio[mt.key] = r
		var limit float64
		switch {
		case mt.goal == "":
		case strings.HasPrefix(mt.goal, "ratio>="):
			fmt.Sscan(strings.TrimPrefix(mt.goal, "ratio>="), &limit)
			rep.Goals[mt.key] = goalStat{Goal: mt.key + " substrate/rabbitmq " + mt.goal[5:], Got: r, Met: r >= limit}
		case strings.HasPrefix(mt.goal, "ratio<="):
			fmt.Sscan(strings.TrimPrefix(mt.goal, "ratio<="), &limit)
			rep.Goals[mt.key] = goalStat{Goal: mt.key + " substrate/rabbitmq " + mt.goal[5:], Got: r, Met: r <= limit}
		}
	}
}

func printReport(w io.Writer, rep *report, names []string) {
	both := len(names) == 2
	fmt.Fprintf(w, "\nMedians of %d round(s), %s per load, loopback; msgs/s, calls/s, conns/s: higher is better; ms, KiB, MiB, us/msg: lower is better\n\n",
		len(rep.Rounds), rep.Config.Duration)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	if both {
		fmt.Fprintf(tw, "%-10s\tunit\tsubstrate\trabbitmq\tsubstrate/rabbitmq\tgoal\t\n", "metric")
	} else {
		fmt.Fprintf(tw, "%-10s\tunit\tsubstrate\t\n", "metric")
	}
	for _, mt := range metrics {
		sub := rep.Median["substrate"][mt.key]
		if !both {
			fmt.Fprintf(tw, "%-10s\t%s\t%s\t\n", mt.key, mt.unit, num(sub))
			continue
		}
		ratio, goal := "-", ""
		if r, ok := rep.Ratio[mt.key]; ok {
			ratio = fmt.Sprintf("%.2f", r)
		}
		if g, ok := rep.Goals[mt.key]; ok {
			goal = strings.TrimPrefix(mt.goal, "ratio") + map[bool]string{true: " ok", false: " MISS"}[g.Met]
		}
		fmt.Fprintf(tw, "%-10s\t%s\t%s\t%s\t%s\t%s\t\n", mt.key, mt.unit, num(sub), num(rep.Median["rabbitmq"][mt.key]), ratio, goal)
	}
	tw.Flush()

	// Per-round figures, so the spread is visible.
	fmt.Fprintf(w, "\nPer round (first to run: ")
	for i, rd := range rep.Rounds {
		fmt.Fprintf(w, "%sr%d=%s", map[bool]string{true: ", ", false: ""}[i > 0], rd.Round, rd.First)
	}
	fmt.Fprintf(w, ")\n\n")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	hdr := fmt.Sprintf("%-10s\t", "metric")
	for _, name := range names {
		for _, rd := range rep.Rounds {
			hdr += fmt.Sprintf("%s r%d\t", name, rd.Round)
		}
	}
	fmt.Fprintln(tw, hdr)
	for _, mt := range metrics {
		line := fmt.Sprintf("%-10s\t", mt.key)
		for _, name := range names {
			for _, rd := range rep.Rounds {
				line += num(rd.Results[name][mt.key]) + "\t"
			}
		}
		fmt.Fprintln(tw, line)
	}
	tw.Flush()

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
