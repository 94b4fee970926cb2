package amqpit

import (
	"context"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Each test runs one py/ scenario against every target. The scripts assert
// the behaviour themselves (and exit non-zero with a FAIL: line); the Go side
// re-checks the numbers they report, so that a script that silently checks
// less would still be caught.

func TestOsloRPCCall(t *testing.T) {
	t.Parallel()
	needPython(t, "oslo_messaging")
	forEachTarget(t, func(t *testing.T, tg *target) {
		r := runPy(t, tg, 60*time.Second, "oslo_rpc.py", "call")
		if ms := r.float(t, "call_ms"); ms <= 0 || ms > 500 {
			t.Errorf("a call took %.1f ms on average", ms)
		}
	})
}

func TestOsloRPCCast(t *testing.T) {
	t.Parallel()
	needPython(t, "oslo_messaging", "amqp")
	forEachTarget(t, func(t *testing.T, tg *target) {
		r := runPy(t, tg, 60*time.Second, "oslo_rpc.py", "cast")
		// 20 casts on a queue shared by two servers: each exactly once,
		// spread over both. RabbitMQ round-robins them 10/10.
		s1, s2 := r.float(t, "srv1"), r.float(t, "srv2")
		if s1+s2 != 20 || s1 == 0 || s2 == 0 {
			t.Errorf("shared topic queue delivered srv1=%v srv2=%v, want 20 spread over both", s1, s2)
		}
	})
}

// TestOsloRPCFanout also checks that RabbitMQ removes the auto-delete
// <topic>_fanout exchange once both servers stopped (oslo deletes their
// fanout queues), while the shared topic queue stays.
func TestOsloRPCFanout(t *testing.T) {
	t.Parallel()
	needPython(t, "oslo_messaging", "amqp")
	forEachTarget(t, func(t *testing.T, tg *target) {
		r := runPy(t, tg, 60*time.Second, "oslo_rpc.py", "fanout")
		// 3 fanout casts reach both servers, 1 plain cast reaches one.
		s1, s2 := r.float(t, "srv1"), r.float(t, "srv2")
		if s1+s2 != 7 || s1 < 3 || s2 < 3 {
			t.Errorf("srv1 got %v and srv2 %v messages, want 3 fanout each plus 1 plain cast", s1, s2)
		}
	})
}

func TestOsloRPCCallTimeout(t *testing.T) {
	t.Parallel()
	needPython(t, "oslo_messaging")
	forEachTarget(t, func(t *testing.T, tg *target) {
		r := runPy(t, tg, 60*time.Second, "oslo_rpc.py", "timeout")
		if e := r.float(t, "elapsed"); e < 1.9 || e > 6 {
			t.Errorf("MessagingTimeout after %.2fs, want about the 2s timeout", e)
		}
	})
}

// TestOsloRPCUndeliverable: oslo 14.0.3 publishes call/cast requests with
// mandatory=1 only under TransportOptions(at_least_once=True) (replies always
// use mandatory: direct_mandatory_flag=True). RabbitMQ then returns the
// unroutable request (basic.return 312 NO_ROUTE, before the confirm ack) and
// the caller gets MessageUndeliverable at once instead of a timeout; RabbitMQ
// answered in ~30 ms. Without at_least_once the request is dropped silently
// and the call times out (checked by the script too).
func TestOsloRPCUndeliverable(t *testing.T) {
	t.Parallel()
	needPython(t, "oslo_messaging")
	forEachTarget(t, func(t *testing.T, tg *target) {
		r := runPy(t, tg, 60*time.Second, "oslo_rpc.py", "undeliverable")
		if e := r.float(t, "call_elapsed"); e >= 5 {
			t.Errorf("MessageUndeliverable after %.2fs; the call timeout was 15s, the return should be immediate", e)
		}
	})
}

// TestOsloRPCReplyToGoneCaller: the caller times out and disappears with its
// reply queue; the server's mandatory reply is returned, retried for
// kombu_missing_consumer_retry_timeout (2 s here) and abandoned, while the
// server keeps answering other callers.
func TestOsloRPCReplyToGoneCaller(t *testing.T) {
	t.Parallel()
	needPython(t, "oslo_messaging", "amqp")
	forEachTarget(t, func(t *testing.T, tg *target) {
		r := runPy(t, tg, 60*time.Second, "oslo_rpc.py", "gone-caller")
		if d := r.float(t, "call_during_retry_s"); d > 3 {
			t.Errorf("a call while the server retried a reply took %.2fs", d)
		}
		// From the reply's first attempt to its abandonment: the 2 s retry
		// window (RabbitMQ: 2.0-2.3 s). Much less means nothing was
		// retried; much more, the returns were slow.
		if a := r.float(t, "retried_for_s"); a < 1.5 || a > 6 {
			t.Errorf("the reply was retried for %.2fs, want about 2s", a)
		}
	})
}

func TestOsloNotifyAllPriorities(t *testing.T) {
	t.Parallel()
	needPython(t, "oslo_messaging")
	forEachTarget(t, func(t *testing.T, tg *target) {
		r := runPy(t, tg, 60*time.Second, "oslo_notify.py", "priorities")
		if n := r.float(t, "received"); n != 14 {
			t.Errorf("listener received %v notifications, want 7 queued + 7 live", n)
		}
	})
}

func TestOsloNotifyPools(t *testing.T) {
	t.Parallel()
	needPython(t, "oslo_messaging", "amqp")
	forEachTarget(t, func(t *testing.T, tg *target) {
		r := runPy(t, tg, 60*time.Second, "oslo_notify.py", "pools")
		a1, a2, b, plain := r.float(t, "a1"), r.float(t, "a2"), r.float(t, "b"), r.float(t, "plain")
		if a1+a2 != 20 || a1 == 0 || a2 == 0 || b != 20 || plain != 20 {
			t.Errorf("pool A got %v+%v, pool B %v, no pool %v; want 20 shared, 20, 20", a1, a2, b, plain)
		}
	})
}

// TestOsloSurvivesForceClose: an RPC server, a notification listener and a
// client survive the broker closing every connection with 320
// CONNECTION_FORCED, reconnect and keep working. The script stops at
// READY-FOR-CLOSE; the target's forceClose runs; "CLOSED" lets it go on.
//
// RabbitMQ: "Closed 5 connections" (RPC server, reply waiter, RPC sender
// pool, notification listener, notifier), oslo logged "(0, 0): (320)
// CONNECTION_FORCED - test" on each, all 5 "Reconnected", and the first call
// after the close returned in ~1.0 s (kombu_reconnect_delay).
func TestOsloSurvivesForceClose(t *testing.T) {
	t.Parallel()
	needPython(t, "oslo_messaging")
	// Alone: the force-close hits every client of the broker, and would
	// break the other tests' probe connections.
	forEachTargetAlone(t, func(t *testing.T, tg *target) {
		closed := false
		hook := func(line string, stdin io.Writer) error {
			if line != "READY-FOR-CLOSE" {
				return nil
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			out, err := tg.forceClose(ctx)
			if err != nil {
				return fmt.Errorf("force-close: %v\n%s", err, out)
			}
			// RabbitMQ: "Closing all connections in vhost /, reason: test...
			// Closed N connections". The script has at least 4 open: RPC
			// server, reply waiter, sender pool, notification listener
			// (+ notifier's sender).
			t.Logf("force-close: %s", strings.TrimSpace(out))
			m := closedRE.FindStringSubmatch(out)
			if m == nil {
				return fmt.Errorf("force-close output lacks rabbitmqctl's \"Closed N connections\":\n%s", out)
			}
			if n, _ := strconv.Atoi(m[1]); n < 4 {
				return fmt.Errorf("force-close closed %d connections, the script alone has 4 or more", n)
			}
			closed = true
			_, err = io.WriteString(stdin, "CLOSED\n")
			return err
		}
		r := runPyInteractive(t, tg, 60*time.Second, hook, "oslo_reconnect.py")
		if !closed {
			t.Fatal("the script never asked for the force-close")
		}
		if n := r.float(t, "forced_errors"); n < 1 {
			t.Errorf("oslo logged no CONNECTION_FORCED error: the close did not reach it")
		}
		if n := r.float(t, "reconnected"); n < 3 {
			t.Errorf("%v reconnects logged, want the RPC server, reply waiter and listener at least", n)
		}
		if s := r.float(t, "first_call_after_close_s"); s > 15 {
			t.Errorf("first call after the close took %.1fs", s)
		}
	})
}

// closedRE matches rabbitmqctl close_all_connections' summary.
var closedRE = regexp.MustCompile(`Closed (\d+) connections`)
