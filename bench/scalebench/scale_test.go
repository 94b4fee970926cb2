package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"substrate/bench/internal/benchkit"
)

// substrateBinary returns SUBSTRATE_BIN (as make test sets it; absolute,
// or relative to the repository root) or builds ../../cmd/substrate into
// dir.
func substrateBinary(t *testing.T) string {
	if bin := os.Getenv("SUBSTRATE_BIN"); bin != "" {
		if !filepath.IsAbs(bin) {
			bin, _ = filepath.Abs(filepath.Join("..", "..", bin))
		}
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("SUBSTRATE_BIN: %v", err)
		}
		return bin
	}
	bin := filepath.Join(t.TempDir(), "substrate")
	out, err := exec.Command("go", "build", "-o", bin, "../../cmd/substrate").CombinedOutput()
	if err != nil {
		t.Fatalf("building substrate: %v\n%s", err, out)
	}
	return bin
}

// TestTinyShape runs the whole per-target script against a real substrate
// with tiny counts (1, 3 and 6 hosts: 10, 30 and 60 queues) and checks that
// every figure was measured, nothing failed, and the server holds exactly
// the queues the bench declared, bound as oslo.messaging binds them.
func TestTinyShape(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	bin := substrateBinary(t)
	for _, kv := range clearSubstrateEnv() { // make test's SUBSTRATE_BIN
		k, v, _ := strings.Cut(kv, "=")
		t.Cleanup(func() { os.Setenv(k, v) })
	}
	b, err := startSubstrate(ctx, bin)
	if err != nil {
		t.Fatal(err)
	}
	defer b.stop()
	sh := shape{Hosts: []int{1, 3, 6}, RPCWarm: 2, RPCCalls: 20, RPC8Calls: 5, TopicWarm: 50, TopicMsgs: 300,
		FanRounds: 3, FanBurst: 4, Repeat: 2, Phase: 20 * time.Second}
	var out strings.Builder
	fig, e, err := runTarget(ctx, b, sh, &out)
	if err != nil {
		t.Fatalf("runTarget: %v\n%s\n--- substrate log ---\n%s", err, out.String(), b.logTail())
	}
	if e.Total() != 0 {
		t.Errorf("failures: %s", e)
	}
	for _, m := range allMetrics(sh) {
		v, ok := fig[m.Key]
		if !ok {
			t.Errorf("%s not measured", m.Key)
			continue
		}
		// Only RSS deltas and CPU times (10 ms ticks) may be zero or
		// negative in so small a run.
		if v <= 0 && !strings.HasPrefix(m.Key, "rss_") && !strings.Contains(m.Key, "_cpu") {
			t.Errorf("%s = %v, want > 0", m.Key, v)
		}
	}
	if got := strings.Count(out.String(), "queues on"); got != 3 {
		t.Errorf("%d stage lines, want 3:\n%s", got, out.String())
	}
	if p := b.problems(); len(p) > 0 {
		t.Errorf("substrate logged warnings/errors:\n%s", strings.Join(p, "\n"))
	}

	// The bench's connections are closed; its queues stay (durable=false,
	// auto_delete=false), as oslo.messaging's would.
	c, err := amqp.Dial(b.url())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := 0; i < 7; i++ {
		ch, err := c.Channel()
		if err != nil {
			t.Fatal(err)
		}
		name := fmt.Sprintf("compute.host%d", i)
		_, err = ch.QueueDeclarePassive(name, false, false, false, false, nil)
		var ae *amqp.Error
		switch {
		case i < 6 && err != nil:
			t.Errorf("queue %s: %v", name, err)
		case i == 6 && (!errors.As(err, &ae) || ae.Code != amqp.NotFound):
			t.Errorf("queue %s (host 6 was never opened): %v, want 404", name, err)
		}
		if err == nil {
			ch.Close()
		}
	}
	// The fanout exchange is still bound to the hosts' queues: a mandatory
	// publish is routed (not returned), as one to an unbound key of the
	// topic exchange is returned.
	ch, err := c.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	returns := ch.NotifyReturn(make(chan amqp.Return, 2))
	for _, p := range []struct{ exchange, key string }{{fanExchange, "compute"}, {rpcExchange, "compute.host6"}} {
		conf, err := ch.PublishWithDeferredConfirm(p.exchange, p.key, true, false, amqp.Publishing{Body: []byte("x")})
		if err != nil {
			t.Fatal(err)
		}
		if ok, err := conf.WaitContext(ctx); !ok || err != nil {
			t.Fatalf("confirm: %v, %v", ok, err)
		}
	}
	// A basic.return precedes its publish's confirm.
	select {
	case r := <-returns:
		if r.Exchange != rpcExchange || r.RoutingKey != "compute.host6" {
			t.Errorf("returned %s/%s, want only nova/compute.host6", r.Exchange, r.RoutingKey)
		}
	default:
		t.Error("the publish to nova/compute.host6 (no such queue) was not returned")
	}
	select {
	case r := <-returns:
		t.Errorf("also returned: %s/%s", r.Exchange, r.RoutingKey)
	default:
	}
}

// TestReport checks the summary and its goal lines on made-up figures.
func TestReport(t *testing.T) {
	sh := shape{Hosts: []int{1, 100, 2000}}
	fig := func(rpc1p50, topic, rssQueue float64) benchkit.Figures {
		f := benchkit.Figures{"rss_queue": rssQueue}
		for s, v := range []float64{1, 1.05, rpc1p50} {
			f[stageKey("rpc1_p50", sh.queues(s))] = v
		}
		for s, v := range []float64{1000, 990, topic} {
			f[stageKey("topic", sh.queues(s))] = v
		}
		return f
	}
	rep := &report{Rounds: []round{
		{Round: 1, First: "substrate", Results: map[string]benchkit.Figures{"substrate": fig(1.05, 950, 1), "rabbitmq": fig(2, 500, 10)}},
		{Round: 2, First: "rabbitmq", Results: map[string]benchkit.Figures{"substrate": fig(1.25, 850, 3), "rabbitmq": fig(2, 500, 10)}},
		{Round: 3, First: "substrate", Results: map[string]benchkit.Figures{"substrate": fig(1.30, 800, 2), "rabbitmq": fig(2, 500, 10)}},
	}}
	names := []string{"substrate", "rabbitmq"}
	summarize(rep, names, sh)
	if got := rep.Median["substrate"][stageKey("rpc1_p50", 20000)]; got != 1.25 {
		t.Errorf("median rpc1_p50@20000 = %v, want 1.25", got)
	}
	if g := rep.Goals["rss_queue"]; !g.Met || g.Got != 0.2 {
		t.Errorf("rss_queue goal = %+v, want met at 0.2", g)
	}
	var b strings.Builder
	printReport(&b, rep, names, sh)
	out := b.String()
	for _, want := range []string{
		"PASS  rss_queue substrate/rabbitmq <=0.25 (got 0.200)",
		"FAIL  rpc1_p50 substrate 20000/10 queues <= 1.10 (got 1.250)",
		"FAIL  topic substrate 20000/10 queues >= 0.90 (got 0.850)",
		"n/a   rpc8_p50",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	// Growth column: substrate's topic 850/1000.
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[0] == "topic" {
			if len(f) < 13 || f[5] != "0.85" || f[9] != "0.50" || f[12] != "1.70" {
				t.Errorf("topic row = %q, want growth 0.85 (substrate), 0.50 (rabbitmq), s/r 1.70 at 20000", l)
			}
		}
	}
	rep.Rounds[1].Errors = map[string]string{"rabbitmq": "20000 queues: declaring: not finished"}
	b.Reset()
	printReport(&b, rep, names, sh)
	if !strings.Contains(b.String(), "FAILURES:\nround 2 rabbitmq: 20000 queues: declaring") {
		t.Errorf("report lacks the failure:\n%s", b.String())
	}
	printReport(io.Discard, rep, names[:1], sh) // one target: no ratio columns, no panic
}

func TestParseHosts(t *testing.T) {
	if hs, err := parseHosts(" 1,20, 200"); err != nil || len(hs) != 3 || hs[2] != 200 {
		t.Errorf("parseHosts = %v, %v", hs, err)
	}
	for _, bad := range []string{"", "5", "1,1", "10,5", "1,x", "0,10"} {
		if _, err := parseHosts(bad); err == nil {
			t.Errorf("parseHosts(%q): no error", bad)
		}
	}
}
