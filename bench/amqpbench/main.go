// Command amqpbench compares the AMQP 0-9-1 broker served by
// `substrate serve --services amqp,etcd,http` with Debian's rabbitmq-server
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
//  3. rpc1, rpc8: oslo.messaging-shaped RPC (amqp-openstack.md section 3)
//     with one caller and with eight. A server consumes (manual acks, no
//     prefetch limit) from a queue bound to a topic exchange; each caller,
//     on its own connection with its own reply queue (x-expires 1800000,
//     manual acks), publishes a request (expiration 60000, delivery_mode
//     2, an empty headers table, reply_to and correlation_id) in a closed
//     loop, waits for its publisher confirm, then for the reply. The
//     server acks the request on receipt, then publishes the reply
//     mandatory to the default exchange and waits for its confirm; the
//     caller acks the reply. Reported: calls/s, p50 and p99 round trip
//     (HDR histogram, publish to reply) and the server's CPU time per call
//     (rpcN_cpu, from /proc/PID/stat).
//  4. ptp1, ptp4: persistent throughput, as tp1 and tp4 but to a durable
//     queue with delivery_mode 2 (issue 5's benchmark). Reported besides
//     msgs/s: publish -> confirm latency p50 and p99 of the publishes
//     confirmed in the window (ptpN_p50, ptpN_p99) and the server's fsyncs
//     per second while the load ran: substrate's counter
//     substrate_amqp_store_fsyncs_total from the management port's /metrics,
//     RabbitMQ's io_sync_count (file_handle_cache syncs, what its management
//     plugin shows) read with `rabbitmqctl eval`; "n/a" when a server does
//     not have one.
//
// idle_rss is the server's VmRSS right after it became ready (plus 1 s):
// substrate (amqp+etcd+http) every round, RabbitMQ once, after its start.
//
// After the rounds, the backlog load runs once per target (substrate fresh,
// RabbitMQ on the node the rounds used, as the last thing it does): 4
// publishers (confirms, 200 in flight each) put -backlog persistent 1 KB
// messages into a durable queue with nobody consuming, then 4 consumers
// (prefetch 200, multiple acks) drain it. Each phase stops at -backlog-cap,
// and what was reached is reported. Reported: VmRSS idle (just before),
// peak while publishing, after publishing, peak while consuming, peak while
// consuming / after publishing (what consuming the backlog adds) and peak
// while consuming / idle (goal: at most 2).
//
// Failures (publish errors, nacks, unconfirmed publishes, returned replies,
// RPC timeouts, stale replies, unexpected connection closes, failed dials)
// are counted and printed, never measured as successes.
//
//	go run ./bench/amqpbench [-rounds 3] [-duration 5s] [-conns 1000] [-quick] [-json out.json]
//	    [-loads conn,tp,rpc,ptp,backlog] [-backlog 1000000] [-backlog-cap 60s]
//
// Only the persistent part: -loads ptp,backlog.
package main

import (
	"context"
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
	{Key: "rpc1_calls", Unit: "calls/s"},
	{Key: "rpc1_p50", Unit: "ms", Goal: "ratio<=0.4"},
	{Key: "rpc1_p99", Unit: "ms"},
	{Key: "rpc1_cpu", Unit: "us/call"},
	{Key: "rpc8_calls", Unit: "calls/s"},
	{Key: "rpc8_p50", Unit: "ms", Goal: "ratio<=0.4"},
	{Key: "rpc8_p99", Unit: "ms"},
	{Key: "rpc8_cpu", Unit: "us/call"},
}

// persistMetrics are the persistent loads' figures, printed in a table of
// their own. The fsync rates (ptpN_fsyncs) are printed after it: a server
// may not have a counter ("n/a").
var persistMetrics = []benchkit.Metric{
	{Key: "ptp1", Unit: "msgs/s", Goal: "ratio>=1.5"},
	{Key: "ptp1_pub", Unit: "msgs/s"},
	{Key: "ptp1_p50", Unit: "ms"},
	{Key: "ptp1_p99", Unit: "ms", Goal: "ratio<=1.0"},
	{Key: "ptp4", Unit: "msgs/s", Goal: "ratio>=1.5"},
	{Key: "ptp4_pub", Unit: "msgs/s"},
	{Key: "ptp4_p50", Unit: "ms"},
	{Key: "ptp4_p99", Unit: "ms", Goal: "ratio<=1.0"},
	{Key: "ptp4_rss", Unit: "MiB"},
	{Key: "ptp4_cpu", Unit: "us/msg"},
}

// allLoads are the -loads names, in the order they run.
var allLoads = []string{"conn", "tp", "rpc", "ptp", "backlog"}

// loads whose failures are reported, in order.
var loadNames = []string{"conn", "tp1", "tp4", "rpc1", "rpc8", "ptp1", "ptp4"}

// metricLoad returns the -loads name a metric belongs to ("" for ready and
// idle_rss, which every round measures).
func metricLoad(key string) string {
	k, _, _ := strings.Cut(key, "_")
	k = strings.TrimRight(k, "0123456789")
	if slices.Contains(allLoads, k) {
		return k
	}
	return ""
}

// selectMetrics returns the metrics of the selected loads.
func selectMetrics(ms []benchkit.Metric, loads map[string]bool) []benchkit.Metric {
	var out []benchkit.Metric
	for _, m := range ms {
		if l := metricLoad(m.Key); l == "" || loads[l] {
			out = append(out, m)
		}
	}
	return out
}

// parseLoads checks -loads.
func parseLoads(list string) (map[string]bool, error) {
	loads := map[string]bool{}
	for _, l := range strings.Split(list, ",") {
		l = strings.TrimSpace(l)
		if l == "" {
			continue
		}
		if !slices.Contains(allLoads, l) {
			return nil, fmt.Errorf("-loads: unknown load %q (known: %s)", l, strings.Join(allLoads, ","))
		}
		loads[l] = true
	}
	if len(loads) == 0 {
		return nil, fmt.Errorf("-loads: none named (known: %s)", strings.Join(allLoads, ","))
	}
	return loads, nil
}

// figures holds one target's metrics in one round (metric key -> value),
// plus "<load>_errors" counts when something failed and "tpN_backlog"
// (messages left in the queue when it was deleted).
type figures = benchkit.Figures

type round struct {
	Round   int                `json:"round"`
	First   string             `json:"first"`
	Results map[string]figures `json:"results"` // target name -> figures
	// Errors: target -> load -> description of its failures; also
	// target -> "ptpN_fsyncs" -> why there is no fsync rate (not a failure).
	Errors map[string]map[string]string `json:"errors,omitempty"`
}

type report struct {
	Config struct {
		Substrate  string `json:"substrate"`
		RabbitMQ   string `json:"rabbitmq"`
		Rounds     int    `json:"rounds"`
		Duration   string `json:"duration"`
		Warmup     string `json:"warmup"`
		Conns      int    `json:"conns"`
		NoFile     uint64 `json:"nofile"`
		Loads      string `json:"loads"`
		Backlog    int    `json:"backlog"`
		BacklogCap string `json:"backlog_cap"`
	} `json:"config"`
	Rounds []round                      `json:"rounds"`
	Median map[string]figures           `json:"median"`          // target -> metric -> median
	Ratio  map[string]float64           `json:"ratio,omitempty"` // metric -> substrate/rabbitmq (of medians)
	Goals  map[string]benchkit.GoalStat `json:"goals,omitempty"`
	// Fsyncs are the medians of ptpN_fsyncs over the rounds that had them
	// (target -> load -> fsyncs/s); FsyncNotes say why one is missing.
	Fsyncs     map[string]map[string]float64 `json:"fsyncs,omitempty"`
	FsyncNotes map[string]map[string]string  `json:"fsync_notes,omitempty"`
	// Backlog is the backlog load's result per target.
	Backlog map[string]*backlogResult `json:"backlog,omitempty"`
	// Problems are warning and error lines substrate logged.
	Problems []string `json:"substrate_log_problems,omitempty"`
}

// cleanups run before the process exits, also on fail().
var cleanups []func()

// quickBacklog is -backlog's default under -quick.
const quickBacklog = 100000

// opts are the settings every round's loads share.
type opts struct {
	loads      map[string]bool
	nConns     int
	dur        time.Duration
	warmup     time.Duration
	backlog    int
	backlogCap time.Duration
}

func main() {
	c := benchkit.CommonFlags("each throughput and RPC load", 2*time.Second)
	noRabbit := flag.Bool("no-rabbitmq", false, "measure substrate only")
	nConns := flag.Int("conns", 1000, "idle connections for conn_rss")
	loadList := flag.String("loads", strings.Join(allLoads, ","), "loads to run: "+strings.Join(allLoads, ",")+" (the persistent part alone: ptp,backlog)")
	backlog := flag.Int("backlog", 1000000, fmt.Sprintf("persistent messages the backlog load publishes, then consumes (-quick: %d)", quickBacklog))
	backlogCap := flag.Duration("backlog-cap", 60*time.Second, "time limit of each backlog phase (publishing, consuming) per target")
	c.Parse()

	if c.Quick {
		set := false
		flag.Visit(func(f *flag.Flag) { set = set || f.Name == "backlog" })
		if !set {
			*backlog = quickBacklog
		}
	}
	loads, err := parseLoads(*loadList)
	if err != nil {
		fail(err.Error())
	}
	if c.Rounds < 1 || c.Duration <= 0 || *nConns < 1 {
		fail("-rounds and -conns must be >= 1 and -duration > 0")
	}
	if loads["backlog"] && (*backlog < 1 || *backlogCap <= 0) {
		fail("-backlog must be >= 1 and -backlog-cap > 0 (leave backlog out of -loads to skip it)")
	}
	if !benchkit.IsExecutable(c.Substrate) {
		fail(fmt.Sprintf("substrate binary not found or not executable at %q (build it with `go build -o bin/substrate ./cmd/substrate`, or pass -substrate PATH)", c.Substrate))
	}
	if abs, err := filepath.Abs(c.Substrate); err == nil {
		c.Substrate = abs // substrate runs in its temp dir
	}
	o := opts{loads: loads, nConns: *nConns, dur: c.Duration, warmup: min(time.Second, c.Duration/4),
		backlog: *backlog, backlogCap: *backlogCap}
	nofile := setNoFile()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var rep report
	rep.Config.Substrate, rep.Config.RabbitMQ = c.Substrate, rabbitmqtest.Wrapper
	rep.Config.Rounds, rep.Config.Duration, rep.Config.Warmup = c.Rounds, c.Duration.String(), o.warmup.String()
	rep.Config.Conns, rep.Config.NoFile = *nConns, nofile
	rep.Config.Loads = strings.Join(slices.DeleteFunc(slices.Clone(allLoads), func(l string) bool { return !loads[l] }), ",")
	if loads["backlog"] {
		rep.Config.Backlog, rep.Config.BacklogCap = *backlog, backlogCap.String()
	}

	names := []string{"substrate"}
	var rmq *broker
	var rmqIdle figures
	why := rabbitmqtest.Available()
	if *noRabbit {
		why = "-no-rabbitmq"
	}
	if why != "" && !*noRabbit {
		fail("rabbitmq-server cannot run: " + why + " (install rabbitmq-server, or pass -no-rabbitmq to measure substrate alone)")
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
	per := 6 * time.Second
	if loads["conn"] {
		per += time.Second + o.warmup + time.Duration(*nConns)*5*time.Millisecond
	}
	if loads["tp"] {
		per += 2 * (c.Duration + o.warmup)
	}
	if loads["rpc"] {
		per += 2 * (c.Duration + o.warmup)
	}
	if loads["ptp"] {
		per += 2*(c.Duration+o.warmup) + 4*time.Second // + the fsync counter reads
	}
	roundLoads := !(len(loads) == 1 && loads["backlog"])
	var est time.Duration
	if roundLoads {
		est = time.Duration(c.Rounds*len(names)) * per
	}
	if loads["backlog"] {
		est += time.Duration(len(names)) * (2**backlogCap + 15*time.Second)
	}
	fmt.Printf("amqpbench: %d round(s) x %d target(s), loads %s, %v per load (+%v warm-up), %d idle connections, RLIMIT_NOFILE %d",
		c.Rounds, len(names), rep.Config.Loads, c.Duration, o.warmup, *nConns, nofile)
	if loads["backlog"] {
		fmt.Printf(", backlog %d messages (at most %v per phase)", *backlog, *backlogCap)
	}
	fmt.Printf("; about %v at most\n", est.Round(time.Second))

	for r := 0; roundLoads && r < c.Rounds; r++ {
		order := benchkit.Order(names, r)
		rd := round{Round: r + 1, First: order[0], Results: map[string]figures{}, Errors: map[string]map[string]string{}}
		for _, name := range order {
			fmt.Printf("round %d/%d %-9s ... ", r+1, c.Rounds, name)
			var f figures
			var errs map[string]string
			var err error
			if name == "substrate" {
				var probs []string
				f, errs, probs, err = benchSubstrate(ctx, c.Substrate, o)
				rep.Problems = append(rep.Problems, probs...)
			} else {
				f = figures{"ready": rmqIdle["ready"], "idle_rss": rmqIdle["idle_rss"]}
				errs, err = benchLoads(ctx, rmq, f, o)
			}
			if err != nil {
				fmt.Println()
				fail(fmt.Sprintf("round %d, %s: %v", r+1, name, err))
			}
			rd.Results[name] = f
			if len(errs) > 0 {
				rd.Errors[name] = errs
			}
			fmt.Println(progress(f, loads))
		}
		rep.Rounds = append(rep.Rounds, rd)
		if ctx.Err() != nil {
			fail("interrupted")
		}
	}

	if loads["backlog"] {
		rep.Backlog = map[string]*backlogResult{}
		for _, name := range names {
			fmt.Printf("backlog %-9s ... ", name)
			var res backlogResult
			var err error
			if name == "substrate" {
				var probs []string
				res, probs, err = backlogSubstrate(ctx, c.Substrate, o)
				rep.Problems = append(rep.Problems, probs...)
			} else {
				res, err = runBacklog(ctx, rmq, o.backlog, o.backlogCap)
			}
			if err != nil {
				fmt.Println()
				fail(fmt.Sprintf("backlog, %s: %v (failures: %s)", name, err, res.Errors))
			}
			rep.Backlog[name] = &res
			fmt.Printf("published %d in %.1f s, consumed %d in %.1f s; VmRSS idle %.0f, after publishing %.0f, peak consuming %.0f MiB%s\n",
				res.Published, res.PubSecs, res.Consumed, res.ConSecs,
				benchkit.MiB(res.IdleRSS), benchkit.MiB(res.AfterPubRSS), benchkit.MiB(res.PeakConRSS), backlogNote(&res))
		}
	}
	runCleanups()

	summarize(&rep, names, loads)
	printReport(os.Stdout, &rep, names, loads)
	if c.JSON != "" {
		if err := benchkit.WriteJSON(c.JSON, &rep); err != nil {
			fail(err.Error())
		}
	}
}

// progress is the per-round line of one target.
func progress(f figures, loads map[string]bool) string {
	var s []string
	if loads["conn"] {
		s = append(s, fmt.Sprintf("conn %.1f KiB", f["conn_rss"]))
	}
	if loads["tp"] {
		s = append(s, fmt.Sprintf("tp1 %.0f/s (backlog %.0f), tp4 %.0f/s (backlog %.0f, CPU cores server %.2f client %.2f)",
			f["tp1"], f["tp1_backlog"], f["tp4"], f["tp4_backlog"], f["tp4_srv_cores"], f["tp4_cli_cores"]))
	}
	if loads["rpc"] {
		for _, k := range []string{"rpc1", "rpc8"} {
			s = append(s, fmt.Sprintf("%s %.0f/s p50 %.3f p99 %.3f ms (server %.0f us/call, cores server %.2f client %.2f)",
				k, f[k+"_calls"], f[k+"_p50"], f[k+"_p99"], f[k+"_cpu"], f[k+"_srv_cores"], f[k+"_cli_cores"]))
		}
	}
	if loads["ptp"] {
		for _, n := range []string{"1", "4"} {
			k := "ptp" + n
			fs := "n/a"
			if v, ok := f[k+"_fsyncs"]; ok {
				fs = benchkit.Num(v)
			}
			s = append(s, fmt.Sprintf("%s %.0f/s (backlog %.0f) confirm p50 %.2f p99 %.2f ms fsyncs/s %s",
				k, f[k], f[k+"_backlog"], f[k+"_p50"], f[k+"_p99"], fs))
		}
	}
	return strings.Join(s, ", ") + errNote(f, loadNames...)
}

// benchSubstrate starts a fresh substrate, records its ready time and idle
// RSS, runs the loads and stops it. It also returns the warning and error
// lines it logged.
func benchSubstrate(ctx context.Context, bin string, o opts) (figures, map[string]string, []string, error) {
	b, err := startSubstrate(ctx, bin)
	if err != nil {
		return nil, nil, nil, err
	}
	f := figures{"ready": benchkit.Ms(b.ready)}
	sleepCtx(ctx, time.Second)
	f["idle_rss"] = benchkit.MiB(benchkit.RSS(b.pid()))
	errs, err := benchLoads(ctx, b, f, o)
	probs := b.problems()
	if _, serr := b.stop(); serr != nil && err == nil {
		err = serr
	}
	if err != nil {
		err = fmt.Errorf("%v\n--- substrate output tail ---\n%s", err, b.logs())
	}
	return f, errs, probs, err
}

// backlogSubstrate runs the backlog load on a fresh substrate.
func backlogSubstrate(ctx context.Context, bin string, o opts) (backlogResult, []string, error) {
	b, err := startSubstrate(ctx, bin)
	if err != nil {
		return backlogResult{Errors: &errs{}}, nil, err
	}
	res, err := runBacklog(ctx, b, o.backlog, o.backlogCap)
	probs := b.problems()
	if _, serr := b.stop(); serr != nil && err == nil {
		err = serr
	}
	if err != nil {
		err = fmt.Errorf("%v\n--- substrate output tail ---\n%s", err, b.logs())
	}
	return res, probs, err
}

// benchLoads runs the selected loads against b, storing figures in f. It
// returns failure descriptions by load; err is for a load that could not
// run at all.
func benchLoads(ctx context.Context, b *broker, f figures, o opts) (map[string]string, error) {
	failures := map[string]string{}
	note := func(load string, e *errs) {
		if n := e.Total(); n > 0 {
			f[load+"_errors"] = float64(n)
			failures[load] = e.String()
		}
	}
	if o.loads["conn"] {
		cr, err := runConns(ctx, b, o.nConns, time.Second)
		if err != nil {
			return failures, fmt.Errorf("idle connections: %w", err)
		}
		f["conn_rss"], f["conn_open"] = cr.PerConnKiB, cr.ConnsPerSec
		note("conn", cr.Errors)
		sleepCtx(ctx, 500*time.Millisecond) // let the server finish closing them
	}

	var tps []tpConfig
	if o.loads["tp"] {
		tps = append(tps, tpConfig{n: 1}, tpConfig{n: 4})
	}
	if o.loads["ptp"] {
		tps = append(tps, tpConfig{n: 1, persistent: true, fsyncs: b.fsyncs}, tpConfig{n: 4, persistent: true, fsyncs: b.fsyncs})
	}
	for _, cfg := range tps {
		load := fmt.Sprintf("tp%d", cfg.n)
		if cfg.persistent {
			load = "p" + load
		}
		tr, err := runThroughput(ctx, b, cfg, o.warmup, o.dur)
		if err != nil {
			return failures, fmt.Errorf("%s: %w (failures: %s)", load, err, tr.Errors)
		}
		f[load], f[load+"_pub"], f[load+"_backlog"] = tr.MsgsPerSec, tr.PubPerSec, float64(tr.Backlog)
		f[load+"_rss"] = benchkit.MiB(tr.PeakRSS)
		f[load+"_srv_cores"], f[load+"_cli_cores"] = tr.SrvCPU, tr.CliCPU
		if tr.MsgsPerSec > 0 {
			f[load+"_cpu"] = tr.SrvCPU / tr.MsgsPerSec * 1e6
		}
		if cfg.persistent {
			f[load+"_p50"], f[load+"_p99"] = tr.P50ms, tr.P99ms
			if tr.FsyncOK {
				f[load+"_fsyncs"] = tr.Fsyncs
			} else {
				failures[load+"_fsyncs"] = tr.FsyncNote
			}
		}
		note(load, tr.Errors)
	}

	for _, n := range []int{1, 8} {
		if !o.loads["rpc"] {
			break
		}
		load := fmt.Sprintf("rpc%d", n)
		rr, err := runRPC(ctx, b, n, o.warmup, o.dur)
		if err != nil {
			return failures, fmt.Errorf("%s: %w (failures: %s)", load, err, rr.Errors)
		}
		f[load+"_calls"], f[load+"_p50"], f[load+"_p99"], f[load+"_cpu"] = rr.CallsPerSec, rr.P50ms, rr.P99ms, rr.SrvUs
		f[load+"_srv_cores"], f[load+"_cli_cores"] = rr.SrvCores, rr.CliCores
		note(load, rr.Errors)
	}
	return failures, nil
}

// summarize fills in medians, ratios and goal checks, and the medians of
// the fsync rates over the rounds that had them.
func summarize(rep *report, names []string, loads map[string]bool) {
	ms := selectMetrics(slices.Concat(metrics, persistMetrics), loads)
	rep.Median, rep.Ratio, rep.Goals = benchkit.Summarize(ms, names, kitRounds(rep.Rounds))
	if !loads["ptp"] {
		return
	}
	rep.Fsyncs, rep.FsyncNotes = map[string]map[string]float64{}, map[string]map[string]string{}
	for _, name := range names {
		rep.Fsyncs[name], rep.FsyncNotes[name] = map[string]float64{}, map[string]string{}
		for _, load := range []string{"ptp1", "ptp4"} {
			var xs []float64
			for _, rd := range rep.Rounds {
				if v, ok := rd.Results[name][load+"_fsyncs"]; ok {
					xs = append(xs, v)
				} else if why := rd.Errors[name][load+"_fsyncs"]; why != "" {
					rep.FsyncNotes[name][load] = why
				}
			}
			if len(xs) > 0 {
				rep.Fsyncs[name][load] = benchkit.Median(xs)
			}
		}
	}
}

func printReport(w io.Writer, rep *report, names []string, loads map[string]bool) {
	if len(rep.Rounds) > 0 {
		fmt.Fprintf(w, "\nMedians of %d round(s), %s per load, loopback; msgs/s, calls/s, conns/s: higher is better; ms, KiB, MiB, us/msg: lower is better\n\n",
			len(rep.Rounds), rep.Config.Duration)
		t := &benchkit.Table{Width: 10, Names: names, Metrics: selectMetrics(metrics, loads),
			Median: rep.Median, Ratio: rep.Ratio, Goals: rep.Goals, GoalTrim: "ratio"}
		benchkit.PrintMedians(w, t)
		benchkit.PrintRounds(w, t, kitRounds(rep.Rounds))
	}
	if loads["ptp"] && len(rep.Rounds) > 0 {
		fmt.Fprintf(w, "\nPersistent + confirms: durable queue, delivery_mode 2, %d B bodies, %d unconfirmed per publisher, prefetch %d, ack multiple every %d; ptpN_p50/p99: publish -> confirm latency\n\n",
			msgSize, inFlight, prefetch, ackEvery)
		t := &benchkit.Table{Width: 10, Names: names, Metrics: persistMetrics,
			Median: rep.Median, Ratio: rep.Ratio, Goals: rep.Goals, GoalTrim: "ratio"}
		benchkit.PrintMedians(w, t)
		benchkit.PrintRounds(w, t, kitRounds(rep.Rounds))
		fmt.Fprintf(w, "\nfsyncs/s while the load ran (median of the rounds that had them; substrate: %s, rabbitmq: io_sync_count):\n", fsyncMetric)
		for _, load := range []string{"ptp1", "ptp4"} {
			for _, name := range names {
				v, ok := rep.Fsyncs[name][load]
				if !ok {
					fmt.Fprintf(w, "  %s %-9s n/a (%s)\n", load, name, rep.FsyncNotes[name][load])
					continue
				}
				per := ""
				if v > 0 && rep.Median[name][load+"_pub"] > 0 {
					per = fmt.Sprintf(" (%.1f confirmed msgs per fsync)", rep.Median[name][load+"_pub"]/v)
				}
				fmt.Fprintf(w, "  %s %-9s %s%s\n", load, name, benchkit.Num(v), per)
			}
		}
	}
	if loads["backlog"] {
		printBacklog(w, rep, names)
	}

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
	for _, name := range names {
		if b := rep.Backlog[name]; b != nil && b.Errors.Total() > 0 {
			if !failures {
				fmt.Fprintf(w, "\nFAILURES:\n")
			}
			fmt.Fprintf(w, "backlog %s: %s\n", name, b.Errors)
			failures = true
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

// backlogGoal is the backlog load's goal: VmRSS peak while consuming at
// most this many times the idle VmRSS.
const backlogGoal = 2.0

// printBacklog prints the backlog load's table.
func printBacklog(w io.Writer, rep *report, names []string) {
	fmt.Fprintf(w, "\nBacklog: %d persistent %d B messages into a durable queue by %d publishers (%d unconfirmed each), nobody consuming; then %d consumers (prefetch %d) drain it; each phase stops after %s. VmRSS in MiB; goal: peak while consuming <= %.0fx at rest (after pub / empty idle)\n\n",
		rep.Config.Backlog, msgSize, backlogConns, inFlight, backlogConns, prefetch, rep.Config.BacklogCap, backlogGoal)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "target\tpublished\tpub msgs/s\tconsumed\tcon msgs/s\tidle\tpeak pub\tafter pub\tpeak con\tpeak con/after pub\tpeak con/idle\tgoal\t\n")
	for _, name := range names {
		b := rep.Backlog[name]
		if b == nil {
			continue
		}
		// The goal reads two ways; both are judged. Consuming the backlog
		// must not grow memory past 2x what the broker holds at rest with
		// it (peak con / after pub), and, more strictly, past 2x the empty
		// broker (peak con / idle).
		ratio, growth, goal := b.peakRatio(), 0.0, "-"
		if b.AfterPubRSS > 0 {
			growth = float64(b.PeakConRSS) / float64(b.AfterPubRSS)
		}
		if ratio > 0 && growth > 0 {
			mark := map[bool]string{true: "ok", false: "MISS"}
			goal = fmt.Sprintf("<=%.1f: %s / %s", backlogGoal, mark[growth <= backlogGoal], mark[ratio <= backlogGoal])
		}
		fmt.Fprintf(tw, "%s\t%d%s\t%s\t%d%s\t%s\t%s\t%s\t%s\t%s\t%.2f\t%.2f\t%s\t\n", name,
			b.Published, map[bool]string{true: "*", false: ""}[b.PubCapped], benchkit.Num(b.pubRate()),
			b.Consumed, map[bool]string{true: "*", false: ""}[b.ConCapped], benchkit.Num(b.conRate()),
			benchkit.Num(benchkit.MiB(b.IdleRSS)), benchkit.Num(benchkit.MiB(b.PeakPubRSS)),
			benchkit.Num(benchkit.MiB(b.AfterPubRSS)), benchkit.Num(benchkit.MiB(b.PeakConRSS)), growth, ratio, goal)
	}
	tw.Flush()
	for _, name := range names {
		if b := rep.Backlog[name]; b != nil && (b.PubCapped || b.ConCapped) {
			fmt.Fprintf(w, "* %s: stopped at the %s cap (published %d of %d, consumed %d of %d in the queue)\n",
				name, rep.Config.BacklogCap, b.Published, b.Target, b.Consumed, b.InQueue)
		}
	}
	if len(names) == 2 && rep.Backlog[names[0]] != nil && rep.Backlog[names[1]] != nil {
		fmt.Fprintf(w, "(substrate ran fresh; rabbitmq after the rounds, so its idle VmRSS includes what they left)\n")
	}
}

// backlogNote flags a capped or failing backlog run for the progress line.
func backlogNote(b *backlogResult) string {
	var s []string
	if b.PubCapped {
		s = append(s, "publishing hit the cap")
	}
	if b.ConCapped {
		s = append(s, "consuming hit the cap")
	}
	if n := b.Errors.Total(); n > 0 {
		s = append(s, fmt.Sprintf("FAILURES %d", n))
	}
	if len(s) == 0 {
		return ""
	}
	return " (" + strings.Join(s, ", ") + ")"
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
