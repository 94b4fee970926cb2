// Command scalebench measures what the AMQP broker of `substrate serve
// --services amqp,etcd` costs as an OpenStack cloud grows, side by side with
// Debian's rabbitmq-server 3.10.8 (issue 12, "Cost as the cloud grows").
//
// A compute node's services (nova-compute, a Neutron agent) hold one
// connection and declare queues the way oslo.messaging's rabbit driver does
// (see hostQueues): per host three topic queues (compute.HOST on the topic
// exchange "nova", q-agent-notifier-port-update.HOST and l3_agent.HOST on
// "neutron"), five fanout queues (compute_fanout_UUID bound to the fanout
// exchange "compute_fanout", four q-agent-notifier-*_fanout_UUID) and two
// reply queues (reply_UUID), all durable=false auto_delete=false, each with
// one consumer (manual acks). So 10 queues and 10 consumers per connection,
// on one channel.
//
// Per target (a fresh server every round; RabbitMQ is started privately by
// internal/rabbitmqtest, as amqpbench does), the run grows in stages, by
// default to 1, 100 and 2,000 hosts: 10, 1,000 and 20,000 queues. Each
// stage opens the new hosts' connections, declares their queues, starts
// their consumers (16 hosts at a time), reading the server's VmRSS (from
// /proc/PID/status; beam.smp for RabbitMQ) at rest before and after each
// step. Then, against host0's compute queue, with every queue of the stage
// bound and consumed:
//
//   - rpc1: one caller (its own connection and reply queue, as a
//     controller's nova-conductor) publishes requests to exchange "nova",
//     key compute.host0, with reply_to and a correlation id; host0's
//     consumer replies to the default exchange (mandatory), the caller waits
//     for it. p50 and p99 of the round trip.
//   - rpc8: eight such callers at once: p50, p99, calls/s and the server's
//     CPU time per call (rpc8_cpu).
//   - topic: one publisher sends transient 1 KB messages to "nova" with key
//     compute.host0 (at most 500 not yet consumed); msgs/s consumed, and the
//     server's CPU time per message (topic_cpu, from /proc/PID/stat).
//
// The three loads run interleaved 3 times per stage; each figure is the
// median of the 3. After the last stage, the fanout load publishes to
// "compute_fanout" (one queue per host: 2,000): single messages, each
// waited for until every consumer had it (p50 and max of 20), then a burst
// of 20 (msgs/s until every delivery arrived; the server's CPU time per
// delivery). A message that reaches a queue twice, or arrives after its
// load ended, is a failure; so is a missing reply, a returned one, a
// connection closed by the server.
//
// Per-connection (with its one channel), per-queue (with its exchange
// declares and binding) and per-consumer RSS are the VmRSS growth over all
// open, declare and consume steps divided by the connections, queues and
// consumers they added (each step's growth is measured alone, so the
// others' costs are not in it). The 8 callers and the publisher are
// controller connections opened before the first stage; their 8 reply
// queues are not counted.
//
// Every phase has a count and a timeout (-phase-timeout). Rounds alternate
// which server goes first; medians over rounds are reported (three rounds
// by default, so that the median is one round's figure and one slow round,
// which the bench client's own CPU makes common at 2,000 connections,
// does not move it). Goals (PASS or
// FAIL lines; the exit status is 0 either way): rss_queue substrate/rabbitmq
// <= 0.25; substrate's latencies at the largest stage <= 1.10x and its
// throughputs >= 0.90x its figures at the smallest. The bench exits 1 only
// when it cannot run: substrate missing, rabbitmq-server missing without
// -no-rabbitmq, a server that does not start, too low a file limit. A phase
// that fails or times out ends that server's run (reported under FAILURES;
// its figures so far are kept) and the bench goes on.
//
// The bench raises its RLIMIT_NOFILE soft limit to 65536 (or the hard
// limit), which both servers inherit. substrate runs with its defaults: the
// bench removes SUBSTRATE_* variables from the environment it passes on.
// The 1-minute load average is printed with every stage: on a shared host
// the figures mean little when it is above the number of CPUs.
//
//	go run ./bench/scalebench [-substrate bin/substrate] [-rounds 3] [-quick]
//	    [-no-rabbitmq] [-hosts 1,100,2000] [-phase-timeout 120s] [-json out.json]
//
// -quick: 1 round of 1, 20 and 200 hosts (10, 200 and 2,000 queues) and
// smaller counts, about a minute; the default shape takes about 3.5 minutes
// a round on a 2-core host (substrate 40 s, RabbitMQ 150-220 s: declaring
// its 20,000 queues alone takes 45-60 s).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"substrate/bench/internal/benchkit"
	"substrate/internal/rabbitmqtest"
)

// fullShape and quickShape are the default shapes.
var (
	fullShape = shape{Hosts: []int{1, 100, 2000}, RPCWarm: 50, RPCCalls: 1000, RPC8Calls: 250,
		TopicWarm: 2000, TopicMsgs: 20000, FanRounds: 20, FanBurst: 20, Repeat: 3,
		Phase: 120 * time.Second, SettleMin: time.Second, SettleMax: 3 * time.Second}
	quickShape = shape{Hosts: []int{1, 20, 200}, RPCWarm: 20, RPCCalls: 300, RPC8Calls: 60,
		TopicWarm: 1000, TopicMsgs: 5000, FanRounds: 10, FanBurst: 20, Repeat: 3,
		Phase: 60 * time.Second, SettleMin: 500 * time.Millisecond, SettleMax: 2 * time.Second}
)

// singles are the figures measured once per run.
var singles = []benchkit.Metric{
	{Key: "ready", Unit: "ms"},
	{Key: "idle_rss", Unit: "MiB"},
	{Key: "open_all", Unit: "s"},
	{Key: "declare_all", Unit: "s"},
	{Key: "consume_all", Unit: "s"},
	{Key: "rss_conn", Unit: "KiB"},
	{Key: "rss_queue", Unit: "KiB", Goal: "ratio<=0.25"},
	{Key: "rss_consumer", Unit: "KiB"},
	{Key: "fanout_p50", Unit: "ms"},
	{Key: "fanout_max", Unit: "ms"},
	{Key: "fanout_msgs", Unit: "msgs/s"},
	{Key: "fanout_deliv", Unit: "deliv/s"},
	{Key: "fanout_cpu", Unit: "us/deliv"},
}

// staged are the figures measured at every stage. Growth goals compare
// substrate's figure at the last stage with its figure at the first.
type stagedMetric struct {
	Key, Unit string
	// MaxGrowth (latency) or MinGrowth (throughput): goal on last/first.
	MaxGrowth, MinGrowth float64
}

var staged = []stagedMetric{
	{Key: "rss", Unit: "MiB"},
	{Key: "open", Unit: "conns/s"},
	{Key: "declare", Unit: "queues/s"},
	{Key: "consume", Unit: "cons/s"},
	{Key: "rpc1_p50", Unit: "ms", MaxGrowth: 1.10},
	{Key: "rpc1_p99", Unit: "ms", MaxGrowth: 1.10},
	{Key: "rpc8_p50", Unit: "ms", MaxGrowth: 1.10},
	{Key: "rpc8_p99", Unit: "ms", MaxGrowth: 1.10},
	{Key: "rpc8_calls", Unit: "calls/s", MinGrowth: 0.90},
	{Key: "rpc8_cpu", Unit: "us/call"},
	{Key: "topic", Unit: "msgs/s", MinGrowth: 0.90},
	{Key: "topic_cpu", Unit: "us/msg"},
}

type round struct {
	Round   int                         `json:"round"`
	First   string                      `json:"first"`
	Results map[string]benchkit.Figures `json:"results"`          // target -> figures
	Errors  map[string]string           `json:"errors,omitempty"` // target -> failures
	// Load is the 1-minute load average before and after each target's run.
	Load map[string][2]float64 `json:"load"`
}

type report struct {
	Config struct {
		Substrate string `json:"substrate"`
		RabbitMQ  string `json:"rabbitmq,omitempty"`
		Rounds    int    `json:"rounds"`
		Shape     shape  `json:"shape"`
		NoFile    uint64 `json:"nofile"`
		CPUs      int    `json:"cpus"`
	} `json:"config"`
	Rounds   []round                      `json:"rounds"`
	Median   map[string]benchkit.Figures  `json:"median"`
	Ratio    map[string]float64           `json:"ratio,omitempty"`
	Goals    map[string]benchkit.GoalStat `json:"goals,omitempty"`
	Growth   []goalLine                   `json:"growth_goals"`
	Problems []string                     `json:"substrate_log_problems,omitempty"`
}

// cleanups run before the process exits, also on fail().
var cleanups []func()

func fail(msg string) {
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	benchkit.Fail("scalebench", msg)
}

func main() {
	bin := flag.String("substrate", "bin/substrate", "path to the substrate binary")
	rounds := flag.Int("rounds", 3, "rounds; each runs both servers (fresh), alternating which goes first (-quick: 1 unless given)")
	quick := flag.Bool("quick", false, "smaller shape (1,20,200 hosts: 10, 200, 2,000 queues) and counts, for a check in a couple of minutes")
	noRabbit := flag.Bool("no-rabbitmq", false, "measure substrate only (no ratios, no rss_queue goal)")
	hostList := flag.String("hosts", "", "connections (hosts, 10 queues each) after each stage, increasing (default 1,100,2000; -quick: 1,20,200)")
	phase := flag.Duration("phase-timeout", 0, "timeout of each phase: opening, declaring, consuming, each load (default 120s; -quick: 60s)")
	jsonOut := flag.String("json", "", "also write the results as JSON to this file")
	flag.Parse()
	if flag.NArg() > 0 {
		fail("unexpected arguments: " + strings.Join(flag.Args(), " "))
	}

	sh := fullShape
	if *quick {
		sh = quickShape
	}
	if *hostList != "" {
		hs, err := parseHosts(*hostList)
		if err != nil {
			fail("-hosts: " + err.Error())
		}
		sh.Hosts = hs
	}
	if *phase < 0 {
		fail("-phase-timeout must be > 0")
	} else if *phase > 0 {
		sh.Phase = *phase
	}
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if *quick && !set["rounds"] {
		*rounds = 1
	}
	if *rounds < 1 {
		fail("-rounds must be >= 1")
	}
	if !benchkit.IsExecutable(*bin) {
		fail(fmt.Sprintf("substrate binary not found or not executable at %q (build it with `make build`, or pass -substrate PATH)", *bin))
	}
	if abs, err := filepath.Abs(*bin); err == nil {
		*bin = abs
	}
	// Each host connection is a descriptor here and one in the server,
	// which inherits this limit; plus the controller's and some slack.
	nofile, err := setNoFile(sh.Hosts[len(sh.Hosts)-1] + rpcCallers + 200)
	if err != nil {
		fail(err.Error())
	}

	for _, kv := range clearSubstrateEnv() {
		k, _, _ := strings.Cut(kv, "=")
		fmt.Printf("scalebench: not passing %s on to substrate (it runs with its defaults and the bench's flags)\n", k)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var rep report
	rep.Config.Substrate, rep.Config.Rounds, rep.Config.Shape, rep.Config.NoFile = *bin, *rounds, sh, nofile
	rep.Config.CPUs = runtime.NumCPU()
	names := []string{"substrate"}
	if *noRabbit {
		fmt.Println("scalebench: -no-rabbitmq: measuring substrate only (no ratios)")
	} else if why := rabbitmqtest.Available(); why != "" {
		fail("rabbitmq-server cannot run: " + why + " (install rabbitmq-server, or pass -no-rabbitmq to measure substrate alone)")
	} else {
		names = append(names, "rabbitmq")
		rep.Config.RabbitMQ = rabbitmqtest.Wrapper
	}
	last := len(sh.Hosts) - 1
	fmt.Printf("scalebench: %d round(s) x %v; stages %s queues on %s connections (%d queues per connection); fanout to %d queues; each phase at most %v; RLIMIT_NOFILE %d; load average %.2f\n",
		*rounds, names, joinInts(sh.Hosts, len(hostQueues)), joinInts(sh.Hosts, 1), len(hostQueues), sh.Hosts[last], sh.Phase, nofile, benchkit.LoadAvg())

	for r := 0; r < *rounds; r++ {
		order := benchkit.Order(names, r)
		rd := round{Round: r + 1, First: order[0], Results: map[string]benchkit.Figures{}, Errors: map[string]string{}, Load: map[string][2]float64{}}
		for _, name := range order {
			l0, tStart := benchkit.LoadAvg(), time.Now()
			fmt.Printf("round %d/%d %s: starting (load %.2f)\n", r+1, *rounds, name, l0)
			var b *broker
			var err error
			if name == "substrate" {
				b, err = startSubstrate(ctx, *bin)
			} else {
				b, err = startRabbit(ctx)
			}
			if err != nil {
				fail(fmt.Sprintf("round %d: %s: %v", r+1, name, err))
			}
			cleanups = append(cleanups, func() { b.stop() })
			fmt.Printf("  ready after %.1f s, PID %d\n", b.ready.Seconds(), b.pid())
			fig, e, err := runTarget(ctx, b, sh, os.Stdout)
			rep.Problems = append(rep.Problems, b.problems()...)
			var msgs []string
			if err != nil {
				msgs = append(msgs, err.Error())
				fmt.Printf("  FAILED: %v\n--- %s log tail ---\n%s\n", err, name, b.logTail())
			}
			if e.Total() > 0 {
				msgs = append(msgs, e.String())
				fmt.Printf("  FAILURES: %s\n", e)
			}
			tStop := time.Now()
			if serr := b.stop(); serr != nil {
				msgs = append(msgs, "stop: "+serr.Error())
			}
			fmt.Printf("  stopped in %.1f s; %s took %.0f s in all\n", time.Since(tStop).Seconds(), name, time.Since(tStart).Seconds())
			cleanups = cleanups[:len(cleanups)-1]
			if len(msgs) > 0 {
				rd.Errors[name] = strings.Join(msgs, "; ")
			}
			rd.Results[name] = fig
			rd.Load[name] = [2]float64{l0, benchkit.LoadAvg()}
			if ctx.Err() != nil {
				fail("interrupted")
			}
		}
		rep.Rounds = append(rep.Rounds, rd)
	}

	summarize(&rep, names, sh)
	printReport(os.Stdout, &rep, names, sh)
	if *jsonOut != "" {
		if err := benchkit.WriteJSON(*jsonOut, &rep); err != nil {
			fail(err.Error())
		}
	}
}

// parseHosts parses -hosts: increasing positive counts.
func parseHosts(s string) ([]int, error) {
	var hs []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive count", f)
		}
		if len(hs) > 0 && n <= hs[len(hs)-1] {
			return nil, fmt.Errorf("counts must increase (%d after %d)", n, hs[len(hs)-1])
		}
		hs = append(hs, n)
	}
	if len(hs) < 2 {
		return nil, fmt.Errorf("need at least two stages, got %q", s)
	}
	return hs, nil
}

func joinInts(xs []int, mul int) string {
	var s []string
	for _, x := range xs {
		s = append(s, strconv.Itoa(x*mul))
	}
	return strings.Join(s, "/")
}

// allMetrics flattens singles and staged (one per stage) for benchkit.
func allMetrics(sh shape) []benchkit.Metric {
	ms := slices.Clone(singles)
	for _, m := range staged {
		for s := range sh.Hosts {
			ms = append(ms, benchkit.Metric{Key: stageKey(m.Key, sh.queues(s)), Unit: m.Unit})
		}
	}
	return ms
}

// goalLine is one checked goal.
type goalLine struct {
	Text string  `json:"goal"`
	Got  float64 `json:"got"`
	Met  bool    `json:"met"`
}

// summarize fills in the medians over rounds, the ratios substrate/rabbitmq
// and the goals. A target's figures from a round it failed are not used
// for the figures it lacks (median of the rounds that have them).
func summarize(rep *report, names []string, sh shape) {
	ms := allMetrics(sh)
	rep.Median = map[string]benchkit.Figures{}
	for _, name := range names {
		m := benchkit.Figures{}
		for _, mt := range ms {
			var xs []float64
			for _, rd := range rep.Rounds {
				if v, ok := rd.Results[name][mt.Key]; ok {
					xs = append(xs, v)
				}
			}
			if len(xs) > 0 {
				m[mt.Key] = benchkit.Median(xs)
			}
		}
		rep.Median[name] = m
	}
	if len(names) == 2 {
		rep.Ratio = benchkit.Ratios(ms, rep.Median[names[0]], rep.Median[names[1]])
		rep.Goals = benchkit.RatioGoals(singles, rep.Ratio, names[0]+"/"+names[1])
	}
	rep.Growth = growthGoals(rep.Median[names[0]], sh)
}

// growthGoals checks substrate's staged figures at the last stage against
// the first: latency within +10%, throughput within -10%.
func growthGoals(med benchkit.Figures, sh shape) []goalLine {
	lo, hi := sh.queues(0), sh.queues(len(sh.Hosts)-1)
	var out []goalLine
	for _, m := range staged {
		if m.MaxGrowth == 0 && m.MinGrowth == 0 {
			continue
		}
		a, okA := med[stageKey(m.Key, lo)]
		b, okB := med[stageKey(m.Key, hi)]
		g := goalLine{}
		switch {
		case m.MaxGrowth > 0:
			g.Text = fmt.Sprintf("%s substrate %d/%d queues <= %.2f", m.Key, hi, lo, m.MaxGrowth)
		default:
			g.Text = fmt.Sprintf("%s substrate %d/%d queues >= %.2f", m.Key, hi, lo, m.MinGrowth)
		}
		if okA && okB && a > 0 {
			g.Got = b / a
			g.Met = (m.MaxGrowth > 0 && g.Got <= m.MaxGrowth) || (m.MinGrowth > 0 && g.Got >= m.MinGrowth)
		}
		out = append(out, g)
	}
	return out
}

func printReport(w io.Writer, rep *report, names []string, sh shape) {
	last := len(sh.Hosts) - 1
	fmt.Fprintf(w, "\nMedians of %d round(s); loopback, %d CPUs; 10 queues + 10 consumers per connection; lower is better for ms, s, KiB, MiB\n", len(rep.Rounds), rep.Config.CPUs)
	for _, rd := range rep.Rounds {
		var s []string
		for _, name := range names {
			l := rd.Load[name]
			s = append(s, fmt.Sprintf("%s %.2f -> %.2f", name, l[0], l[1]))
		}
		fmt.Fprintf(w, "load average (1 min) round %d, before -> after each run: %s\n", rd.Round, strings.Join(s, ", "))
	}
	fmt.Fprintf(w, "\nOnce per run (RSS per connection/queue/consumer over all %d connections and %d queues; fanout to %d queues):\n\n",
		sh.Hosts[last], sh.queues(last), sh.Hosts[last])
	t := &benchkit.Table{Width: 12, Names: names, Metrics: singles, Median: rep.Median, Ratio: rep.Ratio, Goals: rep.Goals, GoalTrim: "ratio"}
	benchkit.PrintMedians(w, t)
	if len(rep.Rounds) > 1 {
		benchkit.PrintRounds(w, t, kitRounds(rep.Rounds))
	}

	fmt.Fprintf(w, "\nGrowth with the queues bound (and consumed): %s; xN = figure at %d / figure at %d\n\n",
		joinInts(sh.Hosts, len(hostQueues)), sh.queues(last), sh.queues(0))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	hdr := "metric\tunit\t"
	for _, name := range names {
		for s := range sh.Hosts {
			hdr += fmt.Sprintf("%s %d\t", abbrev(name), sh.queues(s))
		}
		hdr += abbrev(name) + " xN\t"
	}
	if len(names) == 2 {
		for s := range sh.Hosts {
			hdr += fmt.Sprintf("s/r %d\t", sh.queues(s))
		}
	}
	fmt.Fprintln(tw, hdr)
	for _, m := range staged {
		line := m.Key + "\t" + m.Unit + "\t"
		for _, name := range names {
			med := rep.Median[name]
			for s := range sh.Hosts {
				line += num(med, stageKey(m.Key, sh.queues(s))) + "\t"
			}
			line += growthCell(med, m.Key, sh) + "\t"
		}
		if len(names) == 2 {
			for s := range sh.Hosts {
				k := stageKey(m.Key, sh.queues(s))
				if r, ok := rep.Ratio[k]; ok {
					line += fmt.Sprintf("%.2f\t", r)
				} else {
					line += "-\t"
				}
			}
		}
		fmt.Fprintln(tw, line)
	}
	tw.Flush()

	fmt.Fprintf(w, "\nGoals:\n")
	for _, k := range []string{"rss_queue"} {
		if g, ok := rep.Goals[k]; ok {
			fmt.Fprintf(w, "  %s  %s (got %.3f)\n", passFail(g.Met), g.Goal, g.Got)
		} else {
			fmt.Fprintf(w, "  n/a   %s substrate/rabbitmq <= 0.25 (no ratio: rabbitmq not measured or a run failed)\n", k)
		}
	}
	for _, g := range rep.Growth {
		if g.Got == 0 {
			fmt.Fprintf(w, "  n/a   %s (not measured)\n", g.Text)
			continue
		}
		fmt.Fprintf(w, "  %s  %s (got %.3f)\n", passFail(g.Met), g.Text, g.Got)
	}

	for _, name := range names {
		for _, k := range []string{"rss_conn", "rss_queue", "rss_consumer"} {
			if v, ok := rep.Median[name][k]; ok && v <= 0 {
				fmt.Fprintf(w, "  note: %s %s is %.2f KiB: that step's VmRSS growth was below the noise (the garbage a collector has not yet reclaimed); use more hosts (-hosts) for a figure\n", name, k, v)
			}
		}
	}

	failed := false
	for _, rd := range rep.Rounds {
		for _, name := range names {
			if e, ok := rd.Errors[name]; ok {
				if !failed {
					fmt.Fprintf(w, "\nFAILURES:\n")
					failed = true
				}
				fmt.Fprintf(w, "round %d %s: %s\n", rd.Round, name, e)
			}
		}
	}
	if !failed {
		fmt.Fprintf(w, "\nNo failures: every connection, declare, bind and consume succeeded, every RPC got its reply within %v (none returned), every topic and fanout message arrived at each of its queues, none twice, none stale.\n", callTimeout)
	}
	if len(rep.Problems) > 0 {
		fmt.Fprintf(w, "\nsubstrate logged %d warning/error line(s), e.g.:\n", len(rep.Problems))
		for _, p := range rep.Problems[:min(5, len(rep.Problems))] {
			fmt.Fprintf(w, "  %s\n", p)
		}
	}
}

func abbrev(name string) string {
	switch name {
	case "substrate":
		return "sub"
	case "rabbitmq":
		return "rmq"
	}
	return name
}

func num(f benchkit.Figures, k string) string {
	if v, ok := f[k]; ok {
		return benchkit.Num(v)
	}
	return "-"
}

func growthCell(med benchkit.Figures, key string, sh shape) string {
	a, okA := med[stageKey(key, sh.queues(0))]
	b, okB := med[stageKey(key, sh.queues(len(sh.Hosts)-1))]
	if !okA || !okB || a == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", b/a)
}

func passFail(ok bool) string {
	if ok {
		return "PASS"
	}
	return "FAIL"
}

func kitRounds(rounds []round) []benchkit.Round {
	var rs []benchkit.Round
	for _, rd := range rounds {
		rs = append(rs, benchkit.Round{Round: rd.Round, First: rd.First, Results: rd.Results})
	}
	return rs
}
