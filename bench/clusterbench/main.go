// Command clusterbench compares a three-node substrate cluster (issue 13:
// the broker on Raft) with a three-node cluster of Debian's rabbitmq-server
// 3.10.8, side by side in one run, on the same loopback addresses
// 127.0.0.11, .12 and .13.
//
// Both clusters are started once per run and stay up (substrate: three
// `substrate serve --services etcd,amqp` processes with their etcd.conf
// files naming the three members; RabbitMQ: three nodes with their own
// epmd, cookie and data, nodes 2 and 3 joining node 1 by classic config
// peer discovery). Every load declares a fresh quorum queue
// (x-queue-type quorum, x-quorum-initial-group-size 3, its leader on the
// node the declaring client is connected to) and deletes it at the end.
// The order of the targets alternates every round and medians over rounds
// are reported, because the host is small, shared and noisy.
//
// Throughput, per round and target, four loads: persistent 1 KiB messages
// published with confirms (-window unconfirmed per publisher) by 1 or 4
// publishers, each on its own connection, while one consumer (prefetch
// 1000, ack multiple every 100) drains the queue so that its backlog stays
// small. "lead" loads connect every client to the leader (substrate: the
// node whose /substrate/status says its broker is active; RabbitMQ: the
// quorum queue's leader node), "foll" loads to another node (substrate
// forwards the connection to the leader; RabbitMQ's channel on that node
// talks to the queue's leader). Reported: confirmed msgs/s in the measured
// window and publish -> confirm latency p50/p99 (HDR histogram) of the
// publishes confirmed in it. Goals: msgs/s substrate/rabbitmq >= 1.5,
// confirm p99 substrate/rabbitmq <= 1.0.
//
// Failover, -failovers rounds per target: two publishers publish with
// confirms (16 unconfirmed, at most 500 msgs/s each), one connected to the
// leader's address, one through another node's; when a connection fails
// they reconnect through the next node's address. After confirms have
// flowed for 1.5 s the leader (substrate: the active node; RabbitMQ: the
// queue's leader node, from `rabbitmq-queues quorum_status`)
// gets SIGKILL. Measured: kill -> the first confirm of a publish made at or
// after the kill, per publisher. The killed node is then restarted and
// rejoins before the next round.
//
//	go run ./bench/clusterbench [-substrate bin/substrate] [-rounds 3] [-duration 5s]
//	    [-failovers 3] [-window 256] [-quick] [-substrate-only] [-json out.json] [-timeout 20m]
//
// -rounds 0 runs only the kills, -failovers 0 only the throughput loads.
// -quick: 1 round of 2 s loads and 1 kill per target (about 1.5 minutes).
// For substrate, each kill also says whether the killed node was etcd's
// leader: the new broker reads its definitions from etcd, so a kill that
// takes etcd's leader too waits for etcd's election as well.
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

var hosts = []string{"127.0.0.11", "127.0.0.12", "127.0.0.13"}

// variants are the throughput loads: where the clients connect, and how
// many publishers.
var variants = []struct {
	key    string
	leader bool
	pubs   int
}{
	{"lead1", true, 1}, {"lead4", true, 4}, {"foll1", false, 1}, {"foll4", false, 4},
}

// metrics are the throughput figures; goals are on substrate/rabbitmq of
// the medians.
var metrics = func() []benchkit.Metric {
	var ms []benchkit.Metric
	for _, v := range variants {
		ms = append(ms,
			benchkit.Metric{Key: v.key, Unit: "msgs/s", Goal: "ratio>=1.5"},
			benchkit.Metric{Key: v.key + "_p50", Unit: "ms"},
			benchkit.Metric{Key: v.key + "_p99", Unit: "ms", Goal: "ratio<=1.0"})
	}
	return ms
}()

type figures = benchkit.Figures

type round struct {
	Round   int                          `json:"round"`
	First   string                       `json:"first"`
	Load1   float64                      `json:"loadavg_1m"` // when the round started
	Results map[string]figures           `json:"results"`    // target -> metric -> value
	Backlog map[string]map[string]int    `json:"backlog"`    // target -> load -> messages left
	Errors  map[string]map[string]string `json:"errors,omitempty"`
}

// failover is one kill.
type failover struct {
	Round     int     `json:"round"`
	Target    string  `json:"target"`
	Killed    string  `json:"killed"`     // node address
	NewLeader string  `json:"new_leader"` // node address, "" if unknown
	Load1     float64 `json:"loadavg_1m"`
	// EtcdLeader says whether the killed substrate node was also etcd's
	// leader ("yes", "no"; "" when unknown or for RabbitMQ).
	EtcdLeader string `json:"etcd_leader_killed,omitempty"`
	// LeadMs, FollMs: kill -> first confirmed post-kill publish of the
	// publisher that was connected to the leader / through another node
	// (-1: none within the deadline).
	LeadMs   float64 `json:"lead_ms"`
	FollMs   float64 `json:"foll_ms"`
	Reconns  int64   `json:"reconnects"`
	Lost     int64   `json:"unconfirmed_on_failed_connections"`
	Nacks    int64   `json:"nacks"`
	NackNote string  `json:"nack_note,omitempty"`
	Problems string  `json:"problems,omitempty"`
	// Trace: for a substrate failover over slowFailover, the surviving
	// nodes' log lines from the kill to the first confirm, to tell
	// where the time went.
	Trace []string `json:"trace,omitempty"`
}

type report struct {
	Config struct {
		Substrate string   `json:"substrate"`
		RabbitMQ  string   `json:"rabbitmq,omitempty"`
		Hosts     []string `json:"hosts"`
		Rounds    int      `json:"rounds"`
		Duration  string   `json:"duration"`
		Warmup    string   `json:"warmup"`
		Window    int      `json:"window"`
		Failovers int      `json:"failovers"`
	} `json:"config"`
	Rounds    []round                      `json:"rounds"`
	Median    map[string]figures           `json:"median"`
	Ratio     map[string]float64           `json:"ratio,omitempty"`
	Goals     map[string]benchkit.GoalStat `json:"goals,omitempty"`
	Failovers []failover                   `json:"failovers"`
	Problems  []string                     `json:"substrate_log_problems,omitempty"`
}

var cleanups []func()

func fail(msg string) {
	runCleanups()
	benchkit.Fail("clusterbench", msg)
}

func runCleanups() {
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	cleanups = nil
}

func main() {
	c := benchkit.CommonFlags("each throughput load", 2*time.Second)
	substrateOnly := flag.Bool("substrate-only", false, "measure the substrate cluster only (no RabbitMQ, no ratios)")
	failovers := flag.Int("failovers", 3, "leader kills per target (-quick: 1)")
	window := flag.Int("window", 256, "unconfirmed publishes per throughput publisher")
	limit := flag.Duration("timeout", 20*time.Minute, "give up (stopping both clusters) when the whole run takes longer")
	c.Parse()
	if c.Quick {
		set := false
		flag.Visit(func(f *flag.Flag) { set = set || f.Name == "failovers" })
		if !set {
			*failovers = 1
		}
	}
	if c.Rounds < 0 || c.Duration <= 0 || *failovers < 0 || *window < 1 || c.Rounds+*failovers == 0 || *limit <= 0 {
		fail("-window must be >= 1, -duration and -timeout > 0, -rounds (0: no throughput loads) and -failovers (0: no kills) >= 0 and not both 0")
	}
	if !benchkit.IsExecutable(c.Substrate) {
		fail(fmt.Sprintf("substrate binary not found or not executable at %q (run `make build`, or pass -substrate PATH)", c.Substrate))
	}
	if abs, err := filepath.Abs(c.Substrate); err == nil {
		c.Substrate = abs
	}
	names := []string{"substrate"}
	if !*substrateOnly {
		if why := rabbitmqtest.Available(); why != "" {
			fail("rabbitmq-server cannot run: " + why + " (install rabbitmq-server, or pass -substrate-only)")
		}
		names = append(names, "rabbitmq")
	}
	warmup := min(time.Second, c.Duration/2)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *limit)
	defer cancel()

	var rep report
	rep.Config.Substrate, rep.Config.Hosts = c.Substrate, hosts
	rep.Config.Rounds, rep.Config.Duration, rep.Config.Warmup = c.Rounds, c.Duration.String(), warmup.String()
	rep.Config.Window, rep.Config.Failovers = *window, *failovers
	est := time.Duration(c.Rounds*len(names)*len(variants))*(c.Duration+warmup+time.Second) +
		time.Duration(*failovers)*(15*time.Second+time.Duration(len(names)-1)*45*time.Second) +
		time.Duration(len(names)-1)*90*time.Second + 20*time.Second
	fmt.Printf("clusterbench: %d round(s) x %d target(s) x %d loads of %v (+%v warm-up), window %d; %d failover(s) per target; load average %s; about %v\n",
		c.Rounds, len(names), len(variants), c.Duration, warmup, *window, *failovers, loadavg(), est.Round(time.Second))

	t0 := time.Now()
	fmt.Printf("starting the substrate cluster on %s ... ", strings.Join(hosts, ", "))
	sc, err := startSubstrateCluster(ctx, c.Substrate, hosts)
	if err != nil {
		fmt.Println()
		fail("substrate cluster: " + err.Error())
	}
	cleanups = append(cleanups, sc.stop)
	l, _ := sc.leader(ctx, time.Second, -1)
	fmt.Printf("ready after %.1f s, %s active\n", time.Since(t0).Seconds(), sc.addr(l))

	var rc *rabbitCluster
	if !*substrateOnly {
		rep.Config.RabbitMQ = rabbitmqtest.Wrapper
		t0 = time.Now()
		fmt.Printf("starting the rabbitmq cluster on %s ... ", strings.Join(hosts, ", "))
		if rc, err = startRabbitCluster(ctx, hosts); err != nil {
			fmt.Println()
			fail("rabbitmq cluster: " + err.Error())
		}
		cleanups = append(cleanups, rc.stop)
		fmt.Printf("ready after %.1f s\n", time.Since(t0).Seconds())
		if err := checkRabbitPlacement(ctx, rc); err != nil {
			fail("rabbitmq: " + err.Error())
		}
	}

	for r := range c.Rounds {
		order := benchkit.Order(names, r)
		rd := round{Round: r + 1, First: order[0], Load1: load1(), Results: map[string]figures{},
			Backlog: map[string]map[string]int{}, Errors: map[string]map[string]string{}}
		for _, name := range order {
			f, bl, errs := figures{}, map[string]int{}, map[string]string{}
			for _, v := range variants {
				fmt.Printf("round %d/%d %-9s %s ... ", r+1, c.Rounds, name, v.key)
				var decl, client string
				if name == "substrate" {
					l, err := sc.leader(ctx, 30*time.Second, -1)
					if err != nil {
						fmt.Println()
						fail(err.Error())
					}
					client = sc.addr(l)
					if !v.leader {
						client = sc.addr((l + 1) % len(hosts))
					}
					decl = client
				} else {
					// The queue's leader is node 1 (client-local), checked by
					// checkRabbitPlacement.
					decl, client = rc.addr(0), rc.addr(0)
					if !v.leader {
						client = rc.addr(1)
					}
				}
				res, err := runThroughput(ctx, decl, client, v.pubs, *window, warmup, c.Duration)
				if err != nil {
					fmt.Println()
					fail(fmt.Sprintf("round %d, %s %s: %v (failures: %s)", r+1, name, v.key, err, res.Errors))
				}
				f[v.key], f[v.key+"_p50"], f[v.key+"_p99"] = res.PubPerSec, res.P50ms, res.P99ms
				bl[v.key] = res.Backlog
				note := ""
				if res.Errors.Total() > 0 {
					errs[v.key] = res.Errors.String()
					note = " FAILURES: " + errs[v.key]
				}
				fmt.Printf("%s msgs/s (consumed %s/s, backlog %d), confirm p50 %s p99 %s ms, clients on %s, load %s%s\n",
					benchkit.Num(res.PubPerSec), benchkit.Num(res.ConPerSec), res.Backlog,
					benchkit.Num(res.P50ms), benchkit.Num(res.P99ms), client, loadavg(), note)
			}
			rd.Results[name], rd.Backlog[name] = f, bl
			if len(errs) > 0 {
				rd.Errors[name] = errs
			}
		}
		rep.Rounds = append(rep.Rounds, rd)
	}

	for r := range *failovers {
		for _, name := range benchkit.Order(names, r) {
			fmt.Printf("failover %d/%d %-9s ... ", r+1, *failovers, name)
			var fo failover
			var err error
			if name == "substrate" {
				fo, err = failoverSubstrate(ctx, sc)
			} else {
				fo, err = failoverRabbit(ctx, rc, r)
			}
			fo.Round, fo.Target = r+1, name
			if err != nil {
				fmt.Println()
				fail(fmt.Sprintf("failover %d, %s: %v", r+1, name, err))
			}
			rep.Failovers = append(rep.Failovers, fo)
			if fo.EtcdLeader != "" {
				fmt.Printf("(etcd leader there too: %s) ", fo.EtcdLeader)
			}
			fmt.Printf("killed %s, new leader %s: publisher on the leader %s ms, through another node %s ms (reconnects %d, unconfirmed on failed connections %d, nacks %d), load %s%s\n",
				fo.Killed, fo.NewLeader, msOrNone(fo.LeadMs), msOrNone(fo.FollMs), fo.Reconns, fo.Lost, fo.Nacks, loadavg(),
				map[bool]string{true: " PROBLEMS: " + fo.Problems, false: ""}[fo.Problems != ""])
		}
	}

	rep.Problems = sc.logProblems()
	var kr []benchkit.Round
	for _, rd := range rep.Rounds {
		kr = append(kr, benchkit.Round{Round: rd.Round, First: rd.First, Results: rd.Results})
	}
	rep.Median, rep.Ratio, rep.Goals = benchkit.Summarize(metrics, names, kr)
	runCleanups()
	printReport(os.Stdout, &rep, names, kr)
	if c.JSON != "" {
		if err := benchkit.WriteJSON(c.JSON, &rep); err != nil {
			benchkit.Fail("clusterbench", err.Error())
		}
	}
}

// checkRabbitPlacement declares a quorum queue through node 1 and checks
// with rabbitmqctl that its leader is node 1 and that it has a member
// online on all three nodes: the throughput loads rely on both.
func checkRabbitPlacement(ctx context.Context, rc *rabbitCluster) error {
	q := "clusterbench.check." + rabbitmqtest.RandomHex(4)
	c, err := dial(rc.addr(0))
	if err != nil {
		return err
	}
	defer c.Close()
	err = withTimeout(c, setupTimeout, func() error {
		ch, err := c.Channel()
		if err != nil {
			return err
		}
		_, err = ch.QueueDeclare(q, true, false, false, false, quorumArgs)
		return err
	})
	if err != nil {
		return fmt.Errorf("declaring a quorum queue: %w", err)
	}
	st, err := rc.queue(ctx, 0, q)
	if err != nil {
		return err
	}
	if st.Leader != rc.nodes[0].node || len(st.Online) != len(hosts) {
		return fmt.Errorf("quorum queue declared through %s: leader %s, online %v; want the leader there and members on all %d nodes",
			rc.nodes[0].node, st.Leader, st.Online, len(hosts))
	}
	fmt.Printf("rabbitmq: a quorum queue declared through %s leads there, members online on %d nodes\n", rc.addr(0), len(st.Online))
	return withTimeout(c, setupTimeout, func() error {
		ch, err := c.Channel()
		if err != nil {
			return err
		}
		_, err = ch.QueueDelete(q, false, false, false)
		return err
	})
}

func msOrNone(ms float64) string {
	if ms < 0 {
		return "NONE"
	}
	return benchkit.Num(ms)
}

// loadavg returns the 1, 5 and 15 minute load averages.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func load1() float64 {
	var x float64
	fmt.Sscan(loadavg(), &x)
	return x
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func printReport(w io.Writer, rep *report, names []string, kr []benchkit.Round) {
	if len(rep.Rounds) > 0 {
		fmt.Fprintf(w, "\nThroughput: medians of %d round(s), %s measured per load after %s warm-up; persistent %d B messages, confirms (%d unconfirmed per publisher), one quorum queue replicated on 3 nodes, one consumer draining it.\n"+
			"leadN: N publishers and the consumer connected to the leader; follN: to another node. msgs/s: confirmed; _p50/_p99: publish -> confirm, ms.\n\n",
			len(rep.Rounds), rep.Config.Duration, rep.Config.Warmup, msgSize, rep.Config.Window)
		t := &benchkit.Table{Width: 10, Names: names, Metrics: metrics, Median: rep.Median, Ratio: rep.Ratio, Goals: rep.Goals, GoalTrim: "ratio"}
		benchkit.PrintMedians(w, t)
		benchkit.PrintRounds(w, t, kr)
		fmt.Fprintf(w, "\nload average (1 min) at the start of each round:")
		for _, rd := range rep.Rounds {
			fmt.Fprintf(w, " r%d=%.2f", rd.Round, rd.Load1)
		}
		fmt.Fprintln(w)
	}
	if len(rep.Failovers) > 0 {
		printFailovers(w, rep, names)
	}
	if len(rep.Goals) > 0 {
		fmt.Fprintf(w, "\nGoals (substrate/rabbitmq of the medians):\n")
		for _, m := range metrics {
			if g, ok := rep.Goals[m.Key]; ok {
				fmt.Fprintf(w, "  %-4s %s: %.2f\n", map[bool]string{true: "PASS", false: "FAIL"}[g.Met], g.Goal, g.Got)
			}
		}
	}
	failures := false
	for _, rd := range rep.Rounds {
		for _, name := range names {
			for _, v := range variants {
				if d, ok := rd.Errors[name][v.key]; ok {
					if !failures {
						fmt.Fprintf(w, "\nFAILURES:\n")
					}
					failures = true
					fmt.Fprintf(w, "  round %d %s %s: %s\n", rd.Round, name, v.key, d)
				}
			}
		}
	}
	for _, fo := range rep.Failovers {
		if fo.Problems != "" || fo.LeadMs < 0 || fo.FollMs < 0 {
			if !failures {
				fmt.Fprintf(w, "\nFAILURES:\n")
			}
			failures = true
			fmt.Fprintf(w, "  failover %d %s: lead %s ms, foll %s ms: %s\n", fo.Round, fo.Target, msOrNone(fo.LeadMs), msOrNone(fo.FollMs), fo.Problems)
		}
	}
	if !failures {
		fmt.Fprintf(w, "\nNo failures: no nacks, no publish errors, no unexpected connection closes in the throughput loads; every failover publisher got a post-kill publish confirmed (nacks during failover are listed above).\n")
	}
	if len(rep.Problems) > 0 {
		fmt.Fprintf(w, "\nsubstrate logged %d warning/error line(s) (kills included); the first ones:\n", len(rep.Problems))
		seen := map[string]bool{}
		shown := 0
		for _, p := range rep.Problems {
			k := p
			if i := strings.Index(p, "msg="); i >= 0 {
				k = p[i:]
				if j := strings.Index(k, `" `); j >= 0 {
					k = k[:j+1]
				}
			}
			if seen[k] || shown >= 8 {
				continue
			}
			seen[k] = true
			shown++
			fmt.Fprintf(w, "  %s\n", p)
		}
	}
}

func printFailovers(w io.Writer, rep *report, names []string) {
	fmt.Fprintf(w, "\nFailover: leader SIGKILLed while two publishers publish with confirms (%d unconfirmed, <= %.0f msgs/s each); kill -> first confirm of a publish made after the kill, ms, over %d kill(s) per target.\n"+
		"lead: the publisher connected to the killed leader (reconnects through the other nodes); foll: the one connected through another node.\n\n",
		foWindow, float64(time.Second/foInterval), rep.Config.Failovers)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	hdr := "publisher\t"
	for _, n := range names {
		hdr += n + " median\t" + n + " max\t"
	}
	if len(names) == 2 {
		hdr += "ratio of medians\t"
	}
	fmt.Fprintln(tw, hdr)
	for _, which := range []string{"lead", "foll"} {
		line := which + "\t"
		var meds []float64
		for _, n := range names {
			var xs []float64
			missing := false
			for _, fo := range rep.Failovers {
				if fo.Target != n {
					continue
				}
				x := fo.LeadMs
				if which == "foll" {
					x = fo.FollMs
				}
				if x < 0 {
					missing = true
					continue
				}
				xs = append(xs, x)
			}
			if len(xs) == 0 {
				meds = append(meds, 0)
				line += "NONE\tNONE\t"
				continue
			}
			med, mx := benchkit.Median(xs), slices.Max(xs)
			meds = append(meds, med)
			line += benchkit.Num(med) + "\t" + benchkit.Num(mx) + map[bool]string{true: " (+NONE)", false: ""}[missing] + "\t"
		}
		if len(meds) == 2 {
			if meds[0] > 0 && meds[1] > 0 {
				line += fmt.Sprintf("%.2f\t", meds[0]/meds[1])
			} else {
				line += "-\t"
			}
		}
		fmt.Fprintln(tw, line)
	}
	tw.Flush()
	fmt.Fprintf(w, "\nPer kill:\n")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "round\ttarget\tkilled\tetcd leader too\tnew leader\tlead ms\tfoll ms\treconnects\tunconfirmed on failed conns\tnacks\tload 1m\t")
	for _, fo := range rep.Failovers {
		etcd := fo.EtcdLeader
		if etcd == "" {
			etcd = "-"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%.2f\t\n", fo.Round, fo.Target, fo.Killed, etcd, fo.NewLeader,
			msOrNone(fo.LeadMs), msOrNone(fo.FollMs), fo.Reconns, fo.Lost, fo.Nacks, fo.Load1)
	}
	tw.Flush()
	for _, fo := range rep.Failovers {
		if fo.NackNote != "" {
			fmt.Fprintf(w, "round %d %s: %s\n", fo.Round, fo.Target, fo.NackNote)
		}
		if len(fo.Trace) > 0 {
			fmt.Fprintf(w, "round %d %s: slow failover; the surviving nodes' log from the kill on:\n", fo.Round, fo.Target)
			for _, l := range fo.Trace {
				fmt.Fprintf(w, "  %s\n", l)
			}
		}
	}
	fmt.Fprintf(w, "(A nack makes the publisher reconnect through the next node, as a client that republishes would; unconfirmed publishes on a failed or abandoned connection are counted, not republished.)\n")
}
