// Command kvbench compares the etcd API served by `substrate serve --services etcd`
// (embedded etcd) with Debian's stand-alone etcd-server, side by side in one run.
//
// Each round starts a fresh single-member server of each kind on free loopback
// ports with a fresh temp data dir (the order alternates every round), measures
// start-to-ready time, put/s and linearizable range/s with 1 and 100 clients,
// then stops it with SIGTERM. Medians over rounds are reported, because the
// host is small, shared and noisy.
//
//	go run ./bench/kvbench [-rounds 3] [-duration 5s] [-quick] [-json out.json]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// metric describes one reported figure.
type metric struct {
	key  string
	unit string // "ops/s" (higher is better), "ms" or "MiB" (lower is better)
	goal string // goal checked against the medians, if any
}

var metrics = []metric{
	{"ready", "ms", "abs<=1000"},
	{"put_c1", "ops/s", "ratio>=1.0"},
	{"put_c1_p50", "ms", ""},
	{"put_c1_p99", "ms", ""},
	{"put_c100", "ops/s", "ratio>=1.0"},
	{"put_c100_p50", "ms", ""},
	{"put_c100_p99", "ms", ""},
	{"range_c1", "ops/s", ""},
	{"range_c1_p50", "ms", ""},
	{"range_c1_p99", "ms", ""},
	{"range_c100", "ops/s", ""},
	{"range_c100_p50", "ms", ""},
	{"range_c100_p99", "ms", ""},
	{"peak_rss", "MiB", ""},
	{"stop", "ms", ""},
}

// figures holds one target's metrics in one round (metric key -> value),
// plus "<load>_errors" counts when requests failed.
type figures map[string]float64

type round struct {
	Round   int                `json:"round"`
	First   string             `json:"first"`
	Results map[string]figures `json:"results"` // target name -> figures
}

type report struct {
	Config struct {
		Substrate string `json:"substrate"`
		Etcd      string `json:"etcd"`
		Rounds    int    `json:"rounds"`
		Duration  string `json:"duration"`
		Warmup    string `json:"warmup"`
	} `json:"config"`
	Rounds []round             `json:"rounds"`
	Median map[string]figures  `json:"median"`          // target -> metric -> median
	Ratio  map[string]float64  `json:"ratio,omitempty"` // metric -> substrate/etcd (of medians)
	Goals  map[string]goalStat `json:"goals"`
}

type goalStat struct {
	Goal string  `json:"goal"`
	Got  float64 `json:"got"`
	Met  bool    `json:"met"`
}

func main() {
	subBin := flag.String("substrate", "bin/substrate", "path to the substrate binary")
	etcdBin := flag.String("etcd", "/usr/bin/etcd", "path to the stand-alone etcd binary (skipped if missing)")
	rounds := flag.Int("rounds", 3, "rounds; each runs both targets, alternating which goes first")
	dur := flag.Duration("duration", 5*time.Second, "measured duration of each load")
	quick := flag.Bool("quick", false, "smoke test: 1 round of 1s loads (unless -rounds/-duration are given)")
	jsonOut := flag.String("json", "", "also write the results as JSON to this file")
	flag.Parse()

	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if *quick {
		if !set["rounds"] {
			*rounds = 1
		}
		if !set["duration"] {
			*dur = time.Second
		}
	}
	if *rounds < 1 || *dur <= 0 {
		fail("-rounds must be >= 1 and -duration > 0")
	}
	if !isExecutable(*subBin) {
		fail(fmt.Sprintf("substrate binary not found or not executable at %q (build it first, or pass -substrate PATH)", *subBin))
	}
	targets := []target{substrateTarget(*subBin)}
	if isExecutable(*etcdBin) {
		targets = append(targets, etcdTarget(*etcdBin))
	} else {
		fmt.Printf("kvbench: etcd binary %q not found; measuring substrate only (no ratios)\n", *etcdBin)
	}
	warmup := min(time.Second, *dur/5)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var rep report
	rep.Config.Substrate, rep.Config.Etcd = *subBin, *etcdBin
	rep.Config.Rounds, rep.Config.Duration, rep.Config.Warmup = *rounds, dur.String(), warmup.String()
	est := time.Duration(*rounds*len(targets)) * (4*(*dur+warmup) + 3*time.Second)
	fmt.Printf("kvbench: %d round(s) x %d target(s), %v per load (+%v warm-up), about %v in total\n",
		*rounds, len(targets), *dur, warmup, est.Round(time.Second))

	for r := 0; r < *rounds; r++ {
		order := targets
		if r%2 == 1 && len(targets) == 2 {
			order = []target{targets[1], targets[0]}
		}
		rd := round{Round: r + 1, First: order[0].name, Results: map[string]figures{}}
		for _, t := range order {
			fmt.Printf("round %d/%d: %-9s ... ", r+1, *rounds, t.name)
			f, err := benchOne(ctx, t, *dur, warmup)
			if err != nil {
				fmt.Println()
				fail(fmt.Sprintf("round %d, %s: %v", r+1, t.name, err))
			}
			fmt.Printf("ready %.0f ms, put c1 %.0f/s, put c100 %.0f/s, range c1 %.0f/s, range c100 %.0f/s%s\n",
				f["ready"], f["put_c1"], f["put_c100"], f["range_c1"], f["range_c100"], errNote(f))
			rd.Results[t.name] = f
		}
		rep.Rounds = append(rep.Rounds, rd)
	}

	summarize(&rep, targets)
	printReport(os.Stdout, &rep, targets)
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(&rep, "", "  ")
		if err := os.WriteFile(*jsonOut, append(b, '\n'), 0o644); err != nil {
			fail(err.Error())
		}
		fmt.Printf("\nwrote %s\n", *jsonOut)
	}
}

// benchOne starts a fresh server of target t, runs all loads against it and stops it.
func benchOne(ctx context.Context, t target, dur, warmup time.Duration) (f figures, err error) {
	srv, err := startServer(ctx, t)
	if err != nil {
		return nil, err
	}
	stopped := false
	defer func() {
		if !stopped {
			srv.stop()
		}
	}()
	f = figures{"ready": ms(srv.ready)}

	conns := make([]*clientv3.Client, 0, numConns)
	closeConns := func() {
		for _, c := range conns {
			c.Close()
		}
		conns = nil
	}
	defer func() { closeConns() }()
	for range numConns {
		c, err := dial(srv.endpoint)
		if err != nil {
			return nil, err
		}
		conns = append(conns, c)
	}
	if _, err := conns[0].Put(ctx, rangeKey, string(value)); err != nil {
		return nil, fmt.Errorf("seed put: %w", err)
	}
	loads := []struct {
		name    string
		clients int
		op      opFunc
	}{
		{"put_c1", 1, putOp},
		{"put_c100", 100, putOp},
		{"range_c1", 1, rangeOp},
		{"range_c100", 100, rangeOp},
	}
	for _, l := range loads {
		cs := conns
		if l.clients == 1 {
			cs = conns[:1]
		}
		res := runLoad(ctx, cs, l.clients, warmup, dur, l.op)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		f[l.name], f[l.name+"_p50"], f[l.name+"_p99"] = res.OpsPerSec, res.P50ms, res.P99ms
		if res.Errors > 0 {
			f[l.name+"_errors"] = float64(res.Errors)
		}
	}
	f["peak_rss"] = srv.peakRSSMB()
	closeConns() // before SIGTERM, so the server need not drain them
	stopped = true
	d, err := srv.stop()
	if err != nil {
		return nil, fmt.Errorf("stop: %w", err)
	}
	f["stop"] = ms(d)
	return f, nil
}

// summarize fills in medians, ratios and goal checks.
func summarize(rep *report, targets []target) {
	rep.Median = map[string]figures{}
	for _, t := range targets {
		m := figures{}
		for _, mt := range metrics {
			var xs []float64
			for _, rd := range rep.Rounds {
				xs = append(xs, rd.Results[t.name][mt.key])
			}
			m[mt.key] = median(xs)
		}
		rep.Median[t.name] = m
	}
	rep.Goals = map[string]goalStat{}
	sub := rep.Median["substrate"]
	rep.Goals["ready"] = goalStat{Goal: "substrate ready <= 1000 ms", Got: sub["ready"], Met: sub["ready"] <= 1000}
	if len(targets) < 2 {
		return
	}
	rep.Ratio = map[string]float64{}
	for _, mt := range metrics {
		if e := rep.Median["etcd"][mt.key]; e != 0 {
			rep.Ratio[mt.key] = sub[mt.key] / e
		}
	}
	for _, k := range []string{"put_c1", "put_c100"} {
		rep.Goals[k] = goalStat{Goal: k + " ratio substrate/etcd >= 1.0", Got: rep.Ratio[k], Met: rep.Ratio[k] >= 1.0}
	}
}

func printReport(w io.Writer, rep *report, targets []target) {
	both := len(targets) == 2
	fmt.Fprintf(w, "\nMedians of %d round(s), %s per load, 1 member, loopback; ops/s: higher is better, ms/MiB: lower is better\n\n",
		len(rep.Rounds), rep.Config.Duration)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	if both {
		fmt.Fprintf(tw, "%-15s\tunit\tsubstrate\tetcd\tsubstrate/etcd\tgoal\t\n", "metric")
	} else {
		fmt.Fprintf(tw, "%-15s\tunit\tsubstrate\tgoal\t\n", "metric")
	}
	for _, mt := range metrics {
		sub := rep.Median["substrate"][mt.key]
		goal := ""
		if g, ok := rep.Goals[mt.key]; ok {
			goal = strings.TrimPrefix(mt.goal, "abs") + map[bool]string{true: " ok", false: " MISS"}[g.Met]
		}
		if both {
			ratio := "-"
			if r, ok := rep.Ratio[mt.key]; ok {
				ratio = fmt.Sprintf("%.2f", r)
			}
			fmt.Fprintf(tw, "%-15s\t%s\t%s\t%s\t%s\t%s\t\n", mt.key, mt.unit, num(sub), num(rep.Median["etcd"][mt.key]), ratio, goal)
		} else {
			fmt.Fprintf(tw, "%-15s\t%s\t%s\t%s\t\n", mt.key, mt.unit, num(sub), goal)
		}
	}
	tw.Flush()

	// Per-round figures, so the spread is visible.
	fmt.Fprintf(w, "\nPer round (first to run: ")
	for i, rd := range rep.Rounds {
		fmt.Fprintf(w, "%sr%d=%s", map[bool]string{true: ", ", false: ""}[i > 0], rd.Round, rd.First)
	}
	fmt.Fprintf(w, ")\n\n")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	hdr := fmt.Sprintf("%-15s\t", "metric")
	for _, t := range targets {
		for _, rd := range rep.Rounds {
			hdr += fmt.Sprintf("%s r%d\t", t.name, rd.Round)
		}
	}
	fmt.Fprintln(tw, hdr)
	for _, mt := range metrics {
		line := fmt.Sprintf("%-15s\t", mt.key)
		for _, t := range targets {
			for _, rd := range rep.Rounds {
				line += num(rd.Results[t.name][mt.key]) + "\t"
			}
		}
		fmt.Fprintln(tw, line)
	}
	tw.Flush()
	for _, rd := range rep.Rounds {
		for _, t := range targets {
			if n := errNote(rd.Results[t.name]); n != "" {
				fmt.Fprintf(w, "round %d %s:%s\n", rd.Round, t.name, n)
			}
		}
	}
}

// errNote lists failed-request counts, if any ("" when all requests succeeded).
func errNote(f figures) string {
	var s []string
	for _, k := range []string{"put_c1", "put_c100", "range_c1", "range_c100"} {
		if n := f[k+"_errors"]; n > 0 {
			s = append(s, fmt.Sprintf("%s %.0f", k, n))
		}
	}
	if len(s) == 0 {
		return ""
	}
	return " (failed requests: " + strings.Join(s, ", ") + ")"
}

// num formats a figure with precision suited to its size.
func num(x float64) string {
	switch {
	case x >= 100:
		return fmt.Sprintf("%.0f", x)
	case x >= 10:
		return fmt.Sprintf("%.1f", x)
	default:
		return fmt.Sprintf("%.2f", x)
	}
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "kvbench: "+msg)
	os.Exit(1)
}
