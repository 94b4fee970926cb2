// Command kvbench compares the etcd API served by `substrate serve --services etcd`
// (embedded etcd) with Debian's stand-alone etcd-server, side by side in one run.
//
// Each round starts a fresh single-member server of each kind on free loopback
// ports with a fresh temp data dir (the order alternates every round), measures
// start-to-ready time, put/s and linearizable range/s with 1 and 100 clients,
// then stops it with SIGTERM. Medians over rounds are reported, because the
// host is small, shared and noisy; so are the server's CPU time per request
// (from /proc/PID/stat, *_cpu) and the host's load average, which say how
// much of a throughput ratio is the code and how much is the neighbours.
//
//	go run ./bench/kvbench [-rounds 3] [-duration 5s] [-quick] [-json out.json]
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"substrate/bench/internal/benchkit"
)

// metrics are the reported figures. Units: "ops/s" (higher is better), "ms"
// or "MiB" (lower is better). Goals are checked against the medians.
var metrics = []benchkit.Metric{
	{Key: "ready", Unit: "ms", Goal: "abs<=1000"},
	{Key: "put_c1", Unit: "ops/s", Goal: "ratio>=1.0"},
	{Key: "put_c1_p50", Unit: "ms"},
	{Key: "put_c1_p99", Unit: "ms"},
	{Key: "put_c1_cpu", Unit: "us/op"},
	{Key: "put_c100", Unit: "ops/s", Goal: "ratio>=1.0"},
	{Key: "put_c100_p50", Unit: "ms"},
	{Key: "put_c100_p99", Unit: "ms"},
	{Key: "put_c100_cpu", Unit: "us/op"},
	{Key: "range_c1", Unit: "ops/s"},
	{Key: "range_c1_p50", Unit: "ms"},
	{Key: "range_c1_p99", Unit: "ms"},
	{Key: "range_c100", Unit: "ops/s"},
	{Key: "range_c100_p50", Unit: "ms"},
	{Key: "range_c100_p99", Unit: "ms"},
	{Key: "range_c100_cpu", Unit: "us/op"},
	{Key: "peak_rss", Unit: "MiB"},
	{Key: "stop", Unit: "ms"},
}

// figures holds one target's metrics in one round (metric key -> value),
// plus "<load>_errors" counts when requests failed.
type figures = benchkit.Figures

type round = benchkit.Round

type report struct {
	Config struct {
		Substrate string `json:"substrate"`
		Etcd      string `json:"etcd"`
		// The etcd versions compared: the one substrate embeds and the
		// stand-alone one (Debian's 3.4), as each binary reports it.
		SubstrateEtcdVersion string `json:"substrate_etcd_version"`
		EtcdVersion          string `json:"etcd_version,omitempty"`
		Rounds               int    `json:"rounds"`
		Duration             string `json:"duration"`
		Warmup               string `json:"warmup"`
		// The host's 1-minute load average before the first round and
		// after the last: the figures are only as good as the host is quiet.
		LoadBefore float64 `json:"load_before"`
		LoadAfter  float64 `json:"load_after"`
	} `json:"config"`
	Rounds []round                      `json:"rounds"`
	Median map[string]figures           `json:"median"`          // target -> metric -> median
	Ratio  map[string]float64           `json:"ratio,omitempty"` // metric -> substrate/etcd (of medians)
	Goals  map[string]benchkit.GoalStat `json:"goals"`
}

func main() {
	c := benchkit.CommonFlags("each load", time.Second)
	etcdBin := flag.String("etcd", "/usr/bin/etcd", "path to the stand-alone etcd binary (required unless -substrate-only)")
	alone := flag.Bool("substrate-only", false, "measure substrate alone, without the stand-alone etcd (no ratios)")
	c.Parse()

	if c.Rounds < 1 || c.Duration <= 0 {
		fail("-rounds must be >= 1 and -duration > 0")
	}
	if !benchkit.IsExecutable(c.Substrate) {
		fail(fmt.Sprintf("substrate binary not found or not executable at %q (build it first, or pass -substrate PATH)", c.Substrate))
	}
	targets := []target{substrateTarget(c.Substrate)}
	var rep report
	rep.Config.SubstrateEtcdVersion = etcdVersion(c.Substrate, "etcd")
	switch {
	case *alone:
		fmt.Println("kvbench: -substrate-only: measuring substrate alone (no ratios)")
	case benchkit.IsExecutable(*etcdBin):
		targets = append(targets, etcdTarget(*etcdBin))
		rep.Config.EtcdVersion = etcdVersion(*etcdBin)
	default:
		fail(fmt.Sprintf("etcd binary %q not found: install etcd-server (Debian's etcd 3.4), pass -etcd PATH, or -substrate-only", *etcdBin))
	}
	fmt.Printf("kvbench: etcd versions: substrate embeds %s; stand-alone %s\n", rep.Config.SubstrateEtcdVersion, orNone(rep.Config.EtcdVersion))
	warmup := min(time.Second, c.Duration/5)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	rep.Config.Substrate, rep.Config.Etcd = c.Substrate, *etcdBin
	rep.Config.Rounds, rep.Config.Duration, rep.Config.Warmup = c.Rounds, c.Duration.String(), warmup.String()
	est := time.Duration(c.Rounds*len(targets)) * (4*(c.Duration+warmup) + 3*time.Second)
	fmt.Printf("kvbench: %d round(s) x %d target(s), %v per load (+%v warm-up), about %v in total\n",
		c.Rounds, len(targets), c.Duration, warmup, est.Round(time.Second))

	rep.Config.LoadBefore = benchkit.LoadAvg()
	for r := 0; r < c.Rounds; r++ {
		order := benchkit.Order(targets, r)
		rd := round{Round: r + 1, First: order[0].name, Results: map[string]figures{}}
		for _, t := range order {
			fmt.Printf("round %d/%d: %-9s ... ", r+1, c.Rounds, t.name)
			f, err := benchOne(ctx, t, c.Duration, warmup)
			if err != nil {
				fmt.Println()
				fail(fmt.Sprintf("round %d, %s: %v", r+1, t.name, err))
			}
			fmt.Printf("ready %.0f ms, put c1 %.0f/s, put c100 %.0f/s (server %.0f us/put), range c1 %.0f/s, range c100 %.0f/s (load %.2f)%s\n",
				f["ready"], f["put_c1"], f["put_c100"], f["put_c100_cpu"], f["range_c1"], f["range_c100"], benchkit.LoadAvg(), errNote(f))
			rd.Results[t.name] = f
		}
		rep.Rounds = append(rep.Rounds, rd)
	}

	rep.Config.LoadAfter = benchkit.LoadAvg()
	summarize(&rep, targets)
	printReport(os.Stdout, &rep, targets)
	if c.JSON != "" {
		if err := benchkit.WriteJSON(c.JSON, &rep); err != nil {
			fail(err.Error())
		}
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
			srv.Stop()
		}
	}()
	f = figures{"ready": benchkit.Ms(srv.Ready)}

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
		res := runLoad(ctx, srv.Cmd.Process.Pid, cs, l.clients, warmup, dur, l.op)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		f[l.name], f[l.name+"_p50"], f[l.name+"_p99"], f[l.name+"_cpu"] = res.OpsPerSec, res.P50ms, res.P99ms, res.SrvUs
		if res.Errors > 0 {
			f[l.name+"_errors"] = float64(res.Errors)
		}
	}
	f["peak_rss"] = srv.peakRSSMB()
	closeConns() // before SIGTERM, so the server need not drain them
	stopped = true
	d, err := srv.Stop()
	if err != nil {
		return nil, fmt.Errorf("stop: %w", err)
	}
	f["stop"] = benchkit.Ms(d)
	return f, nil
}

// summarize fills in medians, ratios and goal checks.
func summarize(rep *report, targets []target) {
	rep.Median = benchkit.Medians(metrics, names(targets), rep.Rounds)
	rep.Goals = map[string]benchkit.GoalStat{}
	sub := rep.Median["substrate"]
	rep.Goals["ready"] = benchkit.GoalStat{Goal: "substrate ready <= 1000 ms", Got: sub["ready"], Met: sub["ready"] <= 1000}
	if len(targets) < 2 {
		return
	}
	rep.Ratio = benchkit.Ratios(metrics, sub, rep.Median["etcd"])
	for _, k := range []string{"put_c1", "put_c100"} {
		rep.Goals[k] = benchkit.GoalStat{Goal: k + " ratio substrate/etcd >= 1.0", Got: rep.Ratio[k], Met: rep.Ratio[k] >= 1.0}
	}
}

func printReport(w io.Writer, rep *report, targets []target) {
	fmt.Fprintf(w, "\nMedians of %d round(s), %s per load, 1 member, loopback; ops/s: higher is better, ms/MiB: lower is better\n",
		len(rep.Rounds), rep.Config.Duration)
	fmt.Fprintf(w, "etcd versions: substrate embeds %s; stand-alone etcd %s\n", rep.Config.SubstrateEtcdVersion, orNone(rep.Config.EtcdVersion))
	fmt.Fprintf(w, "host load average (1 min): %.2f before, %.2f after; *_cpu is the server's CPU time per request\n\n", rep.Config.LoadBefore, rep.Config.LoadAfter)
	t := &benchkit.Table{Width: 15, Names: names(targets), Metrics: metrics,
		Median: rep.Median, Ratio: rep.Ratio, Goals: rep.Goals, GoalTrim: "abs", GoalAlone: true}
	benchkit.PrintMedians(w, t)
	benchkit.PrintRounds(w, t, rep.Rounds)
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

func names(targets []target) []string {
	var ns []string
	for _, t := range targets {
		ns = append(ns, t.name)
	}
	return ns
}

func fail(msg string) { benchkit.Fail("kvbench", msg) }

// etcdVersion runs `bin args... --version` and returns the version on its
// "etcd Version: X" line (substrate: `substrate etcd --version`).
func etcdVersion(bin string, args ...string) string {
	out, err := exec.Command(bin, append(args, "--version")...).Output()
	for line := range strings.Lines(string(out)) {
		if v, ok := strings.CutPrefix(line, "etcd Version: "); ok {
			return strings.TrimSpace(v)
		}
	}
	fail(fmt.Sprintf("%s %s --version: no \"etcd Version:\" line (%v): %q", bin, strings.Join(args, " "), err, out))
	return ""
}

func orNone(v string) string {
	if v == "" {
		return "(not measured)"
	}
	return v
}
