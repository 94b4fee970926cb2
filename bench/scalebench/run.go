package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"substrate/bench/internal/benchkit"
)

// shape is what one target's run does; the counts bound every phase.
type shape struct {
	Hosts     []int         `json:"hosts"`      // connections after each stage (10 queues each), increasing
	RPCWarm   int           `json:"rpc_warm"`   // unmeasured calls per caller before each RPC load
	RPCCalls  int           `json:"rpc_calls"`  // measured calls of the one-caller load
	RPC8Calls int           `json:"rpc8_calls"` // measured calls per caller of the eight-caller load
	TopicWarm int           `json:"topic_warm"` // unmeasured topic messages before each throughput load
	TopicMsgs int           `json:"topic_msgs"` // measured topic messages per stage
	FanRounds int           `json:"fan_rounds"` // measured single fanout messages
	FanBurst  int           `json:"fan_burst"`  // fanout messages published back to back
	Repeat    int           `json:"repeat"`     // the RPC and topic loads run this many times per stage (medians)
	Phase     time.Duration `json:"phase"`      // timeout of each phase (open, declare, consume, each load)
	SettleMin time.Duration `json:"settle_min"` // VmRSS is read after at least this long at rest
	SettleMax time.Duration `json:"settle_max"` // ... and at most this long, waiting for it to stop moving
}

// queues is the number of queues (and consumers) after stage s.
func (sh shape) queues(s int) int { return sh.Hosts[s] * len(hostQueues) }

// stageKey names a per-stage figure: "rpc1_p50@20000".
func stageKey(key string, queues int) string { return key + "@" + strconv.Itoa(queues) }

// runTarget runs the whole shape against b and returns its figures. An
// error means a phase failed or timed out; the figures gathered before it
// are returned with it. Progress lines go to w.
func runTarget(ctx context.Context, b *broker, sh shape, w io.Writer) (benchkit.Figures, *errs, error) {
	fig := benchkit.Figures{"ready": benchkit.Ms(b.ready)}
	fl := newFleet(b)
	var callers []*caller
	var pubConn *amqp.Connection
	defer func() {
		fl.closing.Store(true) // before any close: a close racing EOF is no failure
		for _, c := range callers {
			c.conn.Close()
		}
		if pubConn != nil {
			pubConn.Close()
		}
		fl.close(30 * time.Second)
	}()
	pid := b.pid()
	rss := func() (int64, error) {
		v := settledRSS(ctx, pid, sh.SettleMin, sh.SettleMax)
		if v == 0 {
			return 0, fmt.Errorf("cannot read VmRSS of PID %d", pid)
		}
		return v, ctx.Err()
	}
	idle, err := rss()
	if err != nil {
		return fig, fl.errs, err
	}
	fig["idle_rss"] = benchkit.MiB(idle)

	// The controller side: eight RPC callers and one publisher, each on
	// its own connection, before any host.
	for i := 0; i < rpcCallers; i++ {
		c, err := fl.newCaller()
		if err != nil {
			return fig, fl.errs, err
		}
		callers = append(callers, c)
	}
	pubConn, err = fl.dial()
	if err != nil {
		return fig, fl.errs, fmt.Errorf("publisher dial: %w", err)
	}
	pub, err := pubConn.Channel()
	if err != nil {
		return fig, fl.errs, fmt.Errorf("publisher channel.open: %w", err)
	}

	var dConn, dQueue, dCons int64 // VmRSS growth over the open, declare and consume steps
	var openAll, declAll, consAll time.Duration
	prev := 0
	for s, hosts := range sh.Hosts {
		q, newHosts := sh.queues(s), hosts-prev
		newQueues := newHosts * len(hostQueues)
		r0, err := rss()
		if err != nil {
			return fig, fl.errs, err
		}
		elOpen, err := fl.open(ctx, hosts, sh.Phase)
		if err != nil {
			return fig, fl.errs, fmt.Errorf("%d queues: opening %d connections: %w", q, newHosts, err)
		}
		openAll += elOpen
		fig[stageKey("open", q)] = float64(newHosts) / elOpen.Seconds()
		r1, err := rss()
		if err != nil {
			return fig, fl.errs, err
		}
		elDecl, err := fl.declare(ctx, prev, hosts, sh.Phase)
		if err != nil {
			return fig, fl.errs, fmt.Errorf("%d queues: declaring: %w", q, err)
		}
		declAll += elDecl
		fig[stageKey("declare", q)] = float64(newQueues) / elDecl.Seconds()
		r2, err := rss()
		if err != nil {
			return fig, fl.errs, err
		}
		elCons, err := fl.consume(ctx, prev, hosts, sh.Phase)
		if err != nil {
			return fig, fl.errs, fmt.Errorf("%d queues: basic.consume: %w", q, err)
		}
		consAll += elCons
		fig[stageKey("consume", q)] = float64(newQueues) / elCons.Seconds()
		r3, err := rss()
		if err != nil {
			return fig, fl.errs, err
		}
		dConn, dQueue, dCons = dConn+r1-r0, dQueue+r2-r1, dCons+r3-r2
		fig[stageKey("rss", q)] = benchkit.MiB(r3)
		prev = hosts

		// The loads, interleaved, Repeat times; medians are kept.
		var loads [][]float64 // per repeat: the keys below, then the topic and rpc8 loads' server and bench cores
		for k := 0; k < sh.Repeat; k++ {
			r1c, err := runRPC(ctx, fl.pid, callers[:1], sh.RPCWarm, sh.RPCCalls, sh.Phase, fl.errs)
			if err != nil {
				return fig, fl.errs, fmt.Errorf("%d queues: rpc, one caller: %w", q, err)
			}
			r8, err := runRPC(ctx, fl.pid, callers, sh.RPCWarm, sh.RPC8Calls, sh.Phase, fl.errs)
			if err != nil {
				return fig, fl.errs, fmt.Errorf("%d queues: rpc, %d callers: %w", q, rpcCallers, err)
			}
			tp, err := runTopic(ctx, fl, pub, sh.TopicWarm, sh.TopicMsgs, sh.Phase)
			if err != nil {
				return fig, fl.errs, fmt.Errorf("%d queues: topic throughput: %w", q, err)
			}
			loads = append(loads, []float64{r1c.P50, r1c.P99, r8.P50, r8.P99, r8.Calls, r8.SrvUs, tp.Rate, tp.SrvUs,
				r8.SrvCores, r8.CliCores, tp.SrvCores, tp.CliCores})
		}
		med := make([]float64, len(loads[0]))
		for i := range med {
			var xs []float64
			for _, l := range loads {
				xs = append(xs, l[i])
			}
			med[i] = benchkit.Median(xs)
		}
		for i, k := range []string{"rpc1_p50", "rpc1_p99", "rpc8_p50", "rpc8_p99", "rpc8_calls", "rpc8_cpu", "topic", "topic_cpu"} {
			fig[stageKey(k, q)] = med[i]
		}
		fmt.Fprintf(w, "  %6d queues on %4d connections: open %.1f s, declare %.1f s, consume %.1f s, VmRSS %.0f MiB; rpc1 p50 %.2f p99 %.2f ms, rpc8 p50 %.2f p99 %.2f ms %.0f calls/s (server %.0f us/call, cores server %.2f bench %.2f), topic %.0f msgs/s (server %.1f us/msg, cores server %.2f bench %.2f) (load %.2f)\n",
			q, hosts, elOpen.Seconds(), elDecl.Seconds(), elCons.Seconds(), benchkit.MiB(r3),
			med[0], med[1], med[2], med[3], med[4], med[5], med[8], med[9], med[6], med[7], med[10], med[11], benchkit.LoadAvg())
	}
	nHosts, nQueues := float64(prev), float64(prev*len(hostQueues))
	fig["open_all"], fig["declare_all"], fig["consume_all"] = openAll.Seconds(), declAll.Seconds(), consAll.Seconds()
	fig["rss_conn"] = float64(dConn) / nHosts / 1024
	fig["rss_queue"] = float64(dQueue) / nQueues / 1024
	fig["rss_consumer"] = float64(dCons) / nQueues / 1024

	fr, err := runFanout(ctx, fl, pub, prev, sh.FanRounds, sh.FanBurst, sh.Phase)
	if err != nil {
		return fig, fl.errs, fmt.Errorf("fanout to %d queues: %w", prev, err)
	}
	fig["fanout_p50"], fig["fanout_max"], fig["fanout_msgs"] = fr.P50, fr.Max, fr.MsgsPerSec
	fig["fanout_deliv"] = fr.MsgsPerSec * float64(prev)
	fig["fanout_cpu"] = fr.SrvUs
	fmt.Fprintf(w, "  fanout to %d queues: p50 %.1f ms, max %.1f ms, burst %.0f msgs/s (%.0f deliveries/s, server %.1f us/delivery, cores server %.2f bench %.2f); per connection %.1f KiB, per queue %.2f KiB, per consumer %.2f KiB (load %.2f)\n",
		prev, fr.P50, fr.Max, fr.MsgsPerSec, fig["fanout_deliv"], fr.SrvUs, fr.SrvCores, fr.CliCores, fig["rss_conn"], fig["rss_queue"], fig["rss_consumer"], benchkit.LoadAvg())
	return fig, fl.errs, ctx.Err()
}

// settledRSS reads pid's VmRSS every 250 ms, after at least lo, until two
// readings 500 ms apart differ by less than 0.5% or hi has passed, and
// returns the last reading (0 if unreadable).
func settledRSS(ctx context.Context, pid int, lo, hi time.Duration) int64 {
	t0 := time.Now()
	var hist []int64
	for {
		v := benchkit.RSS(pid)
		if v == 0 {
			return 0
		}
		hist = append(hist, v)
		el := time.Since(t0)
		if el >= lo && len(hist) >= 3 {
			old := hist[len(hist)-3]
			d := v - old
			if d < 0 {
				d = -d
			}
			if float64(d) < 0.005*float64(v) {
				return v
			}
		}
		if el >= hi {
			return v
		}
		select {
		case <-ctx.Done():
			return v
		case <-time.After(250 * time.Millisecond):
		}
	}
}
