package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"substrate/internal/testkit"
)

// ---- vhost limits, against substrate and RabbitMQ ----

// limitTarget is a broker on which a test can create a vhost and set its
// limits: substrate through the admin API, RabbitMQ through rabbitmqctl
// on the private node.
type limitTarget struct {
	base      string // amqp://guest:guest@host:port
	addVHost  func(t *testing.T, vhost string)
	setLimits func(t *testing.T, vhost, json string)
}

func (lt *limitTarget) url(vhost string) string { return lt.base + "/" + url.PathEscape(vhost) }

// forLimitTargets runs body against a fresh substrate broker and against
// the private RabbitMQ node (skipped, or failed with
// SUBSTRATE_REQUIRE_CLIENTS=1, where there is none).
func forLimitTargets(t *testing.T, body func(t *testing.T, lt *limitTarget)) {
	t.Run("substrate", func(t *testing.T) {
		s := startServer(t)
		ctx := context.Background()
		body(t, &limitTarget{
			base: "amqp://guest:guest@" + addrOf(s),
			addVHost: func(t *testing.T, v string) {
				must(t, s.AddVHost(ctx, v))
				must(t, s.SetPermissions(ctx, Permission{User: "guest", VHost: v, Configure: ".*", Write: ".*", Read: ".*"}))
			},
			setLimits: func(t *testing.T, v, def string) {
				var l map[string]int64
				must(t, json.Unmarshal([]byte(def), &l))
				must(t, s.SetVHostLimits(ctx, v, l))
			},
		})
	})
	t.Run("rabbitmq", func(t *testing.T) {
		rabbit.waited.Store(true)
		<-rabbit.ready
		if rabbit.fail != "" {
			t.Fatal(rabbit.fail)
		}
		if rabbit.skip != "" {
			t.Skip(rabbit.skip)
		}
		if rabbit.node == nil {
			t.Skip("SUBSTRATE_TEST_RABBITMQ: no rabbitmqctl access to set vhost limits")
		}
		ctl := func(t *testing.T, args ...string) {
			t.Helper()
			if out, err := rabbit.node.Ctl(context.Background(), args...); err != nil {
				t.Fatalf("rabbitmqctl %v: %v\n%s", args, err, out)
			}
		}
		body(t, &limitTarget{
			base: strings.TrimSuffix(rabbit.url, "/"),
			addVHost: func(t *testing.T, v string) {
				ctl(t, "add_vhost", v)
				t.Cleanup(func() { ctl(t, "delete_vhost", v) })
				ctl(t, "set_permissions", "-p", v, "guest", ".*", ".*", ".*")
			},
			setLimits: func(t *testing.T, v, def string) { ctl(t, "set_vhost_limits", "-p", v, def) },
		})
	})
}

// dialRefused dials u and checks the refusal's code and text.
func dialRefused(t *testing.T, u string, code int, text string) {
	t.Helper()
	c, err := amqp091.Dial(u)
	if err == nil {
		c.Close()
		t.Fatalf("connection to %s accepted, want %d %q", u, code, text)
	}
	wantAMQPError(t, err, code, text)
}

func TestVHostLimitsMatchRabbitMQ(t *testing.T) {
	forLimitTargets(t, func(t *testing.T, lt *limitTarget) {
		v := uniq("limits")
		lt.addVHost(t, v)
		lt.setLimits(t, v, `{"max-connections": 2, "max-queues": 1}`)
		u := lt.url(v)

		c1 := dial(t, u)
		dial(t, u)
		refused := fmt.Sprintf("NOT_ALLOWED - access to vhost '%s' refused for user 'guest': connection limit (2) is reached", v)
		dialRefused(t, u, 530, refused)

		ch := channel091(t, c1)
		_, err := ch.QueueDeclare("qa", false, false, false, false, nil)
		must(t, err)
		_, err = ch.QueueDeclare("qa", false, false, false, false, nil) // an existing queue is no new queue
		must(t, err)
		_, err = ch.QueueDeclare("qb", false, false, false, false, nil)
		wantAMQPError(t, err, 406, fmt.Sprintf("PRECONDITION_FAILED - cannot declare queue 'qb': queue limit in vhost '%s' (1) is reached", v))

		// A closed connection frees its place (RabbitMQ counts
		// asynchronously: poll).
		c1.Close()
		eventually(t, 10*time.Second, func() bool {
			c, err := amqp091.Dial(u)
			if err != nil {
				return false
			}
			c.Close()
			return true
		}, "a connection after one closed")

		lt.setLimits(t, v, `{"max-connections": 0}`)
		dialRefused(t, u, 530, fmt.Sprintf("NOT_ALLOWED - access to vhost '%s' refused for user 'guest': connection limit (0) is reached", v))
		lt.setLimits(t, v, `{"max-connections": -1, "max-queues": -1}`)
		c3 := dial(t, u)
		ch3 := channel091(t, c3)
		_, err = ch3.QueueDeclare("qb", false, false, false, false, nil)
		must(t, err)
		_, err = ch3.QueueDelete("qb", false, false, false)
		must(t, err)
		_, err = ch3.QueueDelete("qa", false, false, false)
		must(t, err)
	})
}

func TestVHostLimitsStoredWithVHost(t *testing.T) {
	ctx := context.Background()
	defs := NewMemDefinitions()
	s := startServer(t, func(c *Config) { c.Definitions = defs })
	must(t, s.AddVHost(ctx, "nova"))
	must(t, s.SetPermissions(ctx, Permission{User: "guest", VHost: "nova", Configure: ".*", Write: ".*", Read: ".*"}))
	must(t, s.SetVHostLimits(ctx, "nova", VHostLimits{LimitMaxConnections: 1}))
	if err := s.SetVHostLimits(ctx, "nova", VHostLimits{"max-channels": 1}); err == nil {
		t.Fatal("an unknown limit was accepted")
	}
	if err := s.SetVHostLimits(ctx, "nosuch", VHostLimits{LimitMaxQueues: 1}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("limits on a missing vhost: %v", err)
	}
	must(t, s.Shutdown(ctx))

	// A new broker on the same definitions enforces them.
	s2 := startServer(t, func(c *Config) { c.Definitions = defs })
	if got := s2.VHostLimits(); len(got) != 1 || got["nova"][LimitMaxConnections] != 1 {
		t.Fatalf("limits after restart: %v", got)
	}
	u := "amqp://guest:guest@" + addrOf(s2) + "/nova"
	dial(t, u)
	dialRefused(t, u, 530, "NOT_ALLOWED - access to vhost 'nova' refused for user 'guest': connection limit (1) is reached")
	must(t, s2.ClearVHostLimits(ctx, "nova"))
	dial(t, u)
	set, err := defs.Load(ctx)
	must(t, err)
	for _, v := range set.VHosts {
		if v.Name == "nova" && len(v.Limits) != 0 {
			t.Fatalf("cleared limits still stored: %v", v.Limits)
		}
	}
}

// ---- connection_max ----

// TestConnectionMaxWaitsAsRabbitMQ: RabbitMQ 3.10 passes connection_max to
// ranch as max_connections; at the limit ranch stops accepting, so a
// further client completes its TCP handshake (the kernel's backlog) and
// then hears nothing until a connection closes. There is no refusal
// frame.
func TestConnectionMaxWaitsAsRabbitMQ(t *testing.T) {
	logs := &testkit.Buffer{}
	s := startServer(t, func(c *Config) {
		c.MaxConnections = 2
		c.Logger = slog.New(slog.NewTextHandler(logs, nil))
	})
	u := urlOf(s)
	c1 := dial(t, u)
	dial(t, u)
	third := make(chan error, 1)
	var c3 *amqp091.Connection
	go func() {
		c, err := amqp091.DialConfig(u, amqp091.Config{Dial: amqp091.DefaultDial(10 * time.Second)})
		c3 = c
		third <- err
	}()
	noRecv(t, third, 300*time.Millisecond)
	eventually(t, 2*time.Second, func() bool { return strings.Contains(logs.String(), "connection_max reached") }, "the connection_max log line")
	c1.Close()
	if err := recvTimeout(t, third, 10*time.Second); err != nil {
		t.Fatalf("the waiting client was not served once a connection closed: %v", err)
	}
	c3.Close()
}

// ---- accept errors ----

// emfileListener fails its first n Accept calls with EMFILE, recording
// when each came.
type emfileListener struct {
	net.Listener
	mu    sync.Mutex
	n     int
	calls []time.Time
}

func (l *emfileListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if len(l.calls) < l.n {
		l.calls = append(l.calls, time.Now())
		l.mu.Unlock()
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: &osSyscallError{syscall.EMFILE}}
	}
	l.mu.Unlock()
	return l.Listener.Accept()
}

// osSyscallError is os.SyscallError's shape (accept4: too many open files).
type osSyscallError struct{ errno syscall.Errno }

func (e *osSyscallError) Error() string { return "accept4: " + e.errno.Error() }
func (e *osSyscallError) Unwrap() error { return e.errno }

func TestAcceptBacksOffOnEMFILE(t *testing.T) {
	logs := &testkit.Buffer{}
	var el *emfileListener
	s := startServer(t, func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(logs, nil))
		c.wrapListener = func(ln net.Listener) net.Listener {
			el = &emfileListener{Listener: ln, n: 6}
			return el
		}
	})
	// The loop survives the errors and serves the client that waited.
	c := dial(t, urlOf(s))
	stillServesQueue(t, c)
	el.mu.Lock()
	calls := append([]time.Time(nil), el.calls...)
	el.mu.Unlock()
	if len(calls) != 6 {
		t.Fatalf("%d failing accepts, want 6", len(calls))
	}
	// 5, 10, 20, 40, 80 ms between them: increasing, not a spin.
	want := 5 * time.Millisecond
	for i := 1; i < len(calls); i++ {
		if gap := calls[i].Sub(calls[i-1]); gap < want {
			t.Errorf("gap %d is %v, want at least %v", i, gap, want)
		}
		want *= 2
	}
	out := logs.String()
	if n := strings.Count(out, "accept failing"); n != 1 {
		t.Errorf("%d 'accept failing' lines for one episode, want 1:\n%s", n, out)
	}
	if !strings.Contains(out, "too many open files") || !strings.Contains(out, `msg="amqp: accepting again"`) || !strings.Contains(out, "failures=6") {
		t.Errorf("log does not name the error and the recovery:\n%s", out)
	}
	select {
	case err := <-s.Err():
		t.Fatalf("accept loop reported a fatal error: %v", err)
	default:
	}
}

func stillServesQueue(t *testing.T, c *amqp091.Connection) {
	t.Helper()
	ch := channel091(t, c)
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	must(t, err)
	stillServes(t, c, q.Name)
}

// ---- logging of refused logins ----

func TestRefusedLoginsLoggedPerPeer(t *testing.T) {
	logs := &testkit.Buffer{}
	addrs := []string{"127.0.0.1:0"}
	ipv6 := false
	if l, err := net.Listen("tcp", "[::1]:0"); err == nil {
		l.Close()
		addrs, ipv6 = append(addrs, "[::1]:0"), true
	}
	s := startServer(t, func(c *Config) {
		c.Addrs = addrs
		c.Logger = slog.New(slog.NewTextHandler(logs, nil))
	})
	v4 := s.Addrs()[0].String()
	for i := 0; i < 30; i++ {
		if c, err := amqp091.Dial("amqp://mallory:wrong@" + v4 + "/"); err == nil {
			c.Close()
			t.Fatal("a wrong password was accepted")
		}
	}
	if ipv6 {
		// Another peer is not silenced by the first one's flood.
		if c, err := amqp091.Dial("amqp://alice:wrong@" + s.Addrs()[1].String() + "/"); err == nil {
			c.Close()
		}
	}
	out := logs.String()
	var refused []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, `msg="amqp: login refused"`) {
			refused = append(refused, l)
		}
	}
	wantLines := 10
	if ipv6 {
		wantLines++
	}
	if len(refused) != wantLines {
		t.Fatalf("%d refused-login lines, want %d (10 for the flooding peer):\n%s", len(refused), wantLines, out)
	}
	for _, l := range refused {
		if !strings.Contains(l, "user=mallory") && !strings.Contains(l, "user=alice") || !strings.Contains(l, "peer=") {
			t.Fatalf("refused login without user or peer: %s", l)
		}
	}
	if ipv6 && !strings.Contains(out, "user=alice peer=[::1]:") {
		t.Fatalf("the other peer's refusal was suppressed:\n%s", out)
	}
	// The flooding peer's suppressed lines are reported once its period
	// ends, with its count, even though it sent nothing more.
	eventually(t, 5*time.Second, func() bool {
		return strings.Contains(logs.String(), `msg="amqp: log lines suppressed" peer=127.0.0.1 count=`)
	}, "the per-peer suppressed report")
}
