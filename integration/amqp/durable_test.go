package amqpit

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
)

// TestOsloDurableRestart: oslo.messaging with amqp_durable_queues=True and
// with rabbit_quorum_queue=True (issue 5), both modes in one run of
// py/oslo_durable.py so that they share one broker restart:
//
//   - RPC calls (to the topic and to one server) and casts work;
//   - notifications sent at three priorities to a topic nobody listens to
//     survive a restart of the broker (RabbitMQ: rabbitmqctl stop, then
//     rabbitmq-server on the same data directory; substrate: SIGTERM, then
//     serve on the same --data-dir and ports): a listener started after
//     the restart gets each exactly once, in order per priority;
//   - the RPC server and client started before the restart reconnect by
//     themselves: a call through the old client succeeds after it;
//   - the queues really are durable (and quorum): on the wire a redeclare
//     with durable=0 (or x-queue-type=classic) gets 406 inequivalent arg;
//     and (subtest list_queues) the broker's `rabbitmqctl list_queues name
//     durable arguments type` says so, and that oslo's reply and fanout
//     queues stay transient and classic; a transient notification queue is
//     gone after the restart.
//
// It runs alone: the restart drops every client of the broker.
//
// RabbitMQ 3.10.8 here: rabbitmqctl stop 2.5-4 s, start again 4-8 s, the
// whole body 20-23 s; substrate: 1 s from SIGTERM to exit, 0.3 s to serve
// again, the body about 15 s. Neither target can run other tests
// meanwhile, so this adds about 35 s to the package.
func TestOsloDurableRestart(t *testing.T) {
	t.Parallel()
	needPython(t, "oslo_messaging", "amqp")
	forEachTargetAlone(t, func(t *testing.T, tg *target) {
		if tg.restart == nil || tg.ctl == nil {
			t.Fatalf("target %s has no restart or ctl", tg.name)
		}
		var expects []queueExpect
		restarted := false
		hook := func(line string, stdin io.Writer) error {
			if e, ok := parseQueueExpect(line); ok {
				expects = append(expects, e)
				return nil
			}
			if line != "READY-FOR-RESTART" {
				return nil
			}
			ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second)
			defer cancel()
			// Its own subtest: a broker whose ctl lacks rabbitmqctl's info
			// items fails here, apart from the durability checks.
			t.Run("list_queues", func(t *testing.T) { checkQueueList(t, ctx, tg, expects) })
			summary, err := tg.restart(ctx)
			if err != nil {
				return fmt.Errorf("restarting %s: %v", tg.name, err)
			}
			t.Logf("restart: %s", summary)
			restarted = true
			_, err = io.WriteString(stdin, "RESTARTED\n")
			return err
		}
		r := runPyInteractive(t, tg, 270*time.Second, hook, "oslo_durable.py")
		if !restarted {
			t.Fatal("the script never asked for the restart")
		}
		for _, mode := range []string{"durable", "quorum"} {
			sent := r.float(t, mode+"_notified")
			if got := r.float(t, mode+"_received"); got != sent || sent != 15 {
				t.Errorf("%s: %v of %v notifications sent before the restart were received after it", mode, got, sent)
			}
			if d := r.float(t, mode+"_duplicates"); d != 0 {
				t.Errorf("%s: %v duplicate notifications", mode, d)
			}
			if n := r.float(t, mode+"_live_received"); n != 9 {
				t.Errorf("%s: %v live notifications after the restart, want 9", mode, n)
			}
			if n := r.float(t, mode+"_calls_after_restart"); n != 11 {
				t.Errorf("%s: %v of 11 calls after the restart succeeded", mode, n)
			}
			if n := r.float(t, mode+"_casts"); n != 10 {
				t.Errorf("%s: %v of 10 casts arrived", mode, n)
			}
			if s := r.float(t, mode+"_first_call_after_restart_s"); s > 30 {
				t.Errorf("%s: the first call after the restart took %.1fs", mode, s)
			}
		}
		// The RPC servers, the reply waiters and the notification
		// connections were all dropped by the restart and came back.
		if n := r.float(t, "reconnected"); n < 4 {
			t.Errorf("%v reconnects logged, want at least the 2 RPC servers and 2 reply waiters", n)
		}
	})
}

// queueExpect is one "expect NAME DURABLE TYPE" (or "expect-prefix ...")
// line of oslo_durable.py.
type queueExpect struct {
	name    string
	prefix  bool
	durable string // "true" or "false"
	kind    string // "classic" or "quorum"
}

func parseQueueExpect(line string) (queueExpect, bool) {
	f := strings.Fields(line)
	if len(f) != 4 || (f[0] != "expect" && f[0] != "expect-prefix") {
		return queueExpect{}, false
	}
	return queueExpect{name: f[1], prefix: f[0] == "expect-prefix", durable: f[2], kind: f[3]}, true
}

// checkQueueList runs the broker's `list_queues name durable arguments
// type` (rabbitmqctl's info items) and checks each expectation.
func checkQueueList(t *testing.T, ctx context.Context, tg *target, expects []queueExpect) {
	t.Helper()
	if len(expects) == 0 {
		t.Error("the script printed no queue expectations")
		return
	}
	cols := []string{"name", "durable", "arguments", "type"}
	out, err := tg.ctl(ctx, append([]string{"list_queues"}, cols...)...)
	if err != nil {
		t.Errorf("list_queues %s: %v\n%s", strings.Join(cols, " "), err, out)
		return
	}
	rows, err := parseTable(out, cols)
	if err != nil {
		t.Errorf("list_queues %s: %v", strings.Join(cols, " "), err)
		return
	}
	for _, e := range expects {
		var match []map[string]string
		for _, row := range rows {
			if row["name"] == e.name || (e.prefix && strings.HasPrefix(row["name"], e.name)) {
				match = append(match, row)
			}
		}
		if len(match) != 1 {
			t.Errorf("list_queues: %d queues named %s%s, want 1\n%s", len(match), e.name, map[bool]string{true: "*"}[e.prefix], out)
			continue
		}
		row := match[0]
		quorumArg := strings.Contains(row["arguments"], "x-queue-type") && strings.Contains(row["arguments"], "quorum")
		if row["durable"] != e.durable || row["type"] != e.kind || quorumArg != (e.kind == "quorum") {
			t.Errorf("list_queues: queue %s is durable=%s type=%s arguments=%s; want durable=%s type=%s",
				row["name"], row["durable"], row["type"], row["arguments"], e.durable, e.kind)
		}
	}
}

// parseTable parses rabbitmqctl's tab-separated table output (banner
// lines, then a header line with cols, then rows) into rows by column.
func parseTable(out string, cols []string) ([]map[string]string, error) {
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	header := strings.Join(cols, "\t")
	for i, l := range lines {
		if strings.TrimRight(l, " ") != header {
			continue
		}
		var rows []map[string]string
		for _, l := range lines[i+1:] {
			f := strings.Split(l, "\t")
			if len(f) != len(cols) {
				return nil, fmt.Errorf("row %q has %d columns, want %d", l, len(f), len(cols))
			}
			row := map[string]string{}
			for j, c := range cols {
				row[c] = f[j]
			}
			rows = append(rows, row)
		}
		return rows, nil
	}
	return nil, fmt.Errorf("no header line %q (the requested columns) in:\n%s", header, out)
}
