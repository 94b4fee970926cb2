package broker

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"substrate/broker/amqp"
	"substrate/internal/rabbitmqtest"
)

func startServer(t testing.TB, mod ...func(*Config)) *Server {
	t.Helper()
	cfg := NewConfig()
	cfg.Addrs = []string{"127.0.0.1:0"}
	for _, m := range mod {
		m(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.silentCloseDelay = 10 * time.Millisecond
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return s
}

func addrOf(s *Server) string { return s.Addrs()[0].String() }

func urlOf(s *Server) string { return "amqp://guest:guest@" + addrOf(s) + "/" }

// ---- targets: substrate and RabbitMQ ----

// The client-level tests (forTargets) run their body twice, as subtests:
//
//   - substrate: a fresh broker of this package, started for the subtest.
//   - rabbitmq: the RabbitMQ at SUBSTRATE_TEST_RABBITMQ (amqp://...) if
//     set; otherwise one private Debian rabbitmq-server for the whole
//     package run, started by TestMain in the background on free loopback
//     ports (rabbitmqtest.Start) and stopped, its files removed, when the
//     tests end. The first subtest that needs it waits for it to boot
//     (10-30 s). Not started with -short. When rabbitmq-server is not
//     installed (or cannot run here) the subtests are skipped, unless
//     SUBSTRATE_REQUIRE_CLIENTS=1, which makes them fail.
//
// It proves the tests themselves: the same assertions hold on both. Bodies
// share the RabbitMQ node, so they use uniq names and delete what they
// declare (dropQueues, dropExchanges).
var rabbit struct {
	ready      chan struct{}        // closed once url, skip or fail is set
	node       *rabbitmqtest.Server // the private node (nil with SUBSTRATE_TEST_RABBITMQ): for rabbitmqctl
	url        string
	skip, fail string
	waited     atomic.Bool // a test needed it
}

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	stop := startRabbit()
	defer stop()
	return m.Run()
}

// requireClients reports whether missing clients or daemons must fail.
func requireClients() bool { return os.Getenv("SUBSTRATE_REQUIRE_CLIENTS") == "1" }

// startRabbit sets up the rabbitmq target, starting rabbitmq-server in the
// background if needed; stop stops it.
func startRabbit() (stop func()) {
	rabbit.ready = make(chan struct{})
	noop := func() {}
	if u := os.Getenv("SUBSTRATE_TEST_RABBITMQ"); u != "" {
		rabbit.url = u
		close(rabbit.ready)
		return noop
	}
	if testing.Short() {
		rabbit.skip = "-short: RabbitMQ not started"
		close(rabbit.ready)
		return noop
	}
	if why := rabbitmqtest.Available(); why != "" {
		if requireClients() {
			rabbit.fail = "RabbitMQ not available: " + why + " (SUBSTRATE_REQUIRE_CLIENTS=1)"
		} else {
			rabbit.skip = "RabbitMQ not available: " + why + " (SUBSTRATE_REQUIRE_CLIENTS=1 makes this a failure)"
		}
		close(rabbit.ready)
		return noop
	}
	ctx, cancel := context.WithCancel(context.Background())
	var srv *rabbitmqtest.Server
	go func() {
		defer close(rabbit.ready)
		r, err := rabbitmqtest.Start(ctx, rabbitmqtest.Options{Name: "brokertest", LogLevel: "warning", Poll: 100 * time.Millisecond})
		if err != nil {
			rabbit.fail = "starting rabbitmq-server: " + err.Error()
			return
		}
		srv = r
		rabbit.node = r
		rabbit.url = "amqp://guest:guest@" + r.Addr + "/"
		if testing.Verbose() {
			fmt.Fprintf(os.Stderr, "broker: rabbitmq %s ready on %s after %v\n", r.Node, r.Addr, time.Since(r.StartedAt).Round(100*time.Millisecond))
		}
	}()
	return func() {
		if !rabbit.waited.Load() {
			cancel() // nobody needed it: stop booting
		}
		<-rabbit.ready
		cancel()
		if srv != nil {
			if d, err := srv.Stop(); err != nil || testing.Verbose() {
				fmt.Fprintf(os.Stderr, "broker: rabbitmq stopped in %v (%v)\n", d.Round(100*time.Millisecond), err)
			}
		}
	}
}

// forTargets runs body as the subtests substrate (a fresh broker) and
// rabbitmq (shared; see rabbit), each with the URL to dial.
func forTargets(t *testing.T, body func(t *testing.T, url string)) {
	t.Helper()
	t.Run("substrate", func(t *testing.T) {
		body(t, urlOf(startServer(t)))
	})
	t.Run("rabbitmq", func(t *testing.T) {
		rabbit.waited.Store(true)
		if t0 := time.Now(); !isClosed(rabbit.ready) {
			<-rabbit.ready
			t.Logf("waited %v for rabbitmq-server to start", time.Since(t0).Round(100*time.Millisecond))
		}
		if rabbit.fail != "" {
			t.Fatal(rabbit.fail)
		}
		if rabbit.skip != "" {
			t.Skip(rabbit.skip)
		}
		body(t, rabbit.url)
	})
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// dropQueues deletes the named queues when t ends, through a connection of
// its own (the test's may be closed by then), so that tests sharing
// RabbitMQ leave nothing behind. Missing queues are fine.
func dropQueues(t testing.TB, url string, names ...string) {
	t.Helper()
	t.Cleanup(func() {
		drop(t, url, names, func(ch *amqp091.Channel, n string) error {
			_, err := ch.QueueDelete(n, false, false, false)
			return err
		})
	})
}

// dropExchanges is dropQueues for exchanges.
func dropExchanges(t testing.TB, url string, names ...string) {
	t.Helper()
	t.Cleanup(func() {
		drop(t, url, names, func(ch *amqp091.Channel, n string) error { return ch.ExchangeDelete(n, false, false) })
	})
}

func drop(t testing.TB, url string, names []string, del func(*amqp091.Channel, string) error) {
	c, err := amqp091.Dial(url)
	if err != nil {
		t.Errorf("cleanup: dial %s: %v", url, err)
		return
	}
	defer c.Close()
	for _, n := range names {
		ch, err := c.Channel()
		if err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		// An exclusive queue of a connection still open refuses (405);
		// it goes with that connection.
		if err := del(ch, n); err != nil && !isCode(err, 405) {
			t.Errorf("cleanup: delete %q: %v", n, err)
		}
		ch.Close()
	}
}

func isCode(err error, code int) bool {
	var e *amqp091.Error
	return errors.As(err, &e) && e.Code == code
}

var nameSeq atomic.Int64

// uniq returns a name unique to this run, for tests shared with RabbitMQ.
func uniq(prefix string) string {
	return fmt.Sprintf("%s.%d.%d", prefix, time.Now().UnixNano()%1e9, nameSeq.Add(1))
}

func dial(t testing.TB, url string) *amqp091.Connection {
	t.Helper()
	c, err := amqp091.Dial(url)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() { closeClient(t, c) })
	return c
}

// closeClient closes an amqp091-go connection at the end of a test, and
// fails the test if Close has not returned within 10 s instead of hanging
// it: amqp091-go's reader blocks while a Notify* listener channel is full,
// and a Close then waits forever (the test left confirms or returns
// unread; the broker is not at fault).
func closeClient(t testing.TB, c *amqp091.Connection) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Close()
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Errorf("amqp091-go Close of %s hung for 10 s (a full Notify* listener blocks its reader)", c.LocalAddr())
	}
}

func channel091(t testing.TB, c *amqp091.Connection) *amqp091.Channel {
	t.Helper()
	ch, err := c.Channel()
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

// wantAMQPError checks a client error's code and reply text.
func wantAMQPError(t testing.TB, err error, code int, text string) {
	t.Helper()
	var e *amqp091.Error
	if !errors.As(err, &e) {
		t.Fatalf("got error %v, want AMQP %d %q", err, code, text)
	}
	if e.Code != code || (text != "" && e.Reason != text) {
		t.Fatalf("got %d %q, want %d %q", e.Code, e.Reason, code, text)
	}
}

func recvTimeout[T any](t testing.TB, c <-chan T, d time.Duration) T {
	t.Helper()
	select {
	case v, ok := <-c:
		if !ok {
			t.Fatal("channel closed")
		}
		return v
	case <-time.After(d):
		t.Fatal("timeout waiting")
	}
	var zero T
	return zero
}

func noRecv[T any](t testing.TB, c <-chan T, d time.Duration) {
	t.Helper()
	select {
	case v, ok := <-c:
		if ok {
			t.Fatalf("unexpected %v", v)
		}
	case <-time.After(d):
	}
}

func eventually(t testing.TB, d time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// ---- raw client on the codec, for frame-order tests ----

type rawClient struct {
	t  testing.TB
	nc net.Conn
	fr *amqp.FrameReader
}

func rawDial(t testing.TB, addr string) *rawClient {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &rawClient{t: t, nc: nc, fr: amqp.NewFrameReader(nc)}
}

func (r *rawClient) write(b []byte) {
	r.t.Helper()
	if _, err := r.nc.Write(b); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rawClient) send(ch uint16, m amqp.Method) {
	r.t.Helper()
	b, err := amqp.AppendMethodFrame(nil, ch, m)
	if err != nil {
		r.t.Fatal(err)
	}
	r.write(b)
}

func (r *rawClient) publish(ch uint16, m *amqp.BasicPublish, p *amqp.Properties, body []byte, frameMax uint32) {
	r.t.Helper()
	b, _ := amqp.AppendMethodFrame(nil, ch, m)
	b, err := amqp.AppendHeaderFrame(b, ch, amqp.ClassBasic, uint64(len(body)), p)
	if err != nil {
		r.t.Fatal(err)
	}
	b = amqp.AppendBodyFrames(b, ch, body, frameMax)
	r.write(b)
}

// frame returns the next frame that is not a heartbeat.
func (r *rawClient) frame() amqp.Frame {
	r.t.Helper()
	r.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			r.t.Fatalf("read frame: %v", err)
		}
		if f.Type != amqp.FrameHeartbeat {
			f.Payload = append([]byte(nil), f.Payload...)
			return f
		}
	}
}

// method returns the next frame, which must be a method, decoded.
func (r *rawClient) method() (uint16, amqp.Method) {
	r.t.Helper()
	f := r.frame()
	if f.Type != amqp.FrameMethod {
		r.t.Fatalf("got frame type %d on channel %d, want a method", f.Type, f.Channel)
	}
	m, err := amqp.DecodeMethod(f.Payload)
	if err != nil {
		r.t.Fatal(err)
	}
	return f.Channel, m
}

// expect reads the next method and checks its type.
func expect[M amqp.Method](r *rawClient, ch uint16) M {
	r.t.Helper()
	gotCh, m := r.method()
	want, ok := m.(M)
	if !ok || gotCh != ch {
		var zero M
		r.t.Fatalf("got %s on channel %d (%+v), want %T on channel %d", m.Name(), gotCh, m, zero, ch)
	}
	return want
}

// ackedTo reads basic.ack frames (and nothing else) until one covers
// delivery tag want.
func (r *rawClient) ackedTo(want uint64) {
	r.t.Helper()
	for got := uint64(0); got < want; {
		_, m := r.method()
		a, ok := m.(*amqp.BasicAck)
		if !ok {
			r.t.Fatalf("got %s, want basic.ack", m.Name())
		}
		got = a.DeliveryTag
	}
}

// content reads a header and its body frames.
func (r *rawClient) content() (amqp.ContentHeader, []byte) {
	r.t.Helper()
	f := r.frame()
	if f.Type != amqp.FrameHeader {
		r.t.Fatalf("got frame type %d, want header", f.Type)
	}
	h, err := amqp.ParseContentHeader(f.Payload)
	if err != nil {
		r.t.Fatal(err)
	}
	var body []byte
	for uint64(len(body)) < h.BodySize {
		f := r.frame()
		if f.Type != amqp.FrameBody {
			r.t.Fatalf("got frame type %d, want body", f.Type)
		}
		body = append(body, f.Payload...)
	}
	return h, body
}

type rawOpts struct {
	user, pass, vhost, mechanism string
	heartbeat                    uint16
	caps                         amqp.Table
}

// handshake runs the connection handshake up to the reply to
// connection.open (returned), with channel 1 not yet open.
func (r *rawClient) handshake(o rawOpts) (amqp.Method, *amqp.ConnectionTune) {
	r.t.Helper()
	if o.user == "" {
		o.user, o.pass = "guest", "guest"
	}
	if o.vhost == "" {
		o.vhost = "/"
	}
	if o.mechanism == "" {
		o.mechanism = "PLAIN"
	}
	if o.caps == nil {
		o.caps = amqp.Table{"authentication_failure_close": true, "consumer_cancel_notify": true}
	}
	r.write([]byte(amqp.ProtocolHeader))
	expect[*amqp.ConnectionStart](r, 0)
	resp := "\x00" + o.user + "\x00" + o.pass
	if o.mechanism == "AMQPLAIN" {
		b, _ := amqp.AppendTableBody(nil, amqp.Table{"LOGIN": o.user, "PASSWORD": o.pass})
		resp = string(b)
	}
	r.send(0, &amqp.ConnectionStartOk{ClientProperties: amqp.Table{"capabilities": o.caps}, Mechanism: o.mechanism, Response: resp, Locale: "en_US"})
	_, m := r.method()
	tune, ok := m.(*amqp.ConnectionTune)
	if !ok {
		return m, nil
	}
	r.send(0, &amqp.ConnectionTuneOk{ChannelMax: tune.ChannelMax, FrameMax: tune.FrameMax, Heartbeat: o.heartbeat})
	r.send(0, &amqp.ConnectionOpen{VirtualHost: o.vhost})
	_, m = r.method()
	return m, tune
}

// open completes a guest handshake and opens channel 1.
func rawOpen(t testing.TB, addr string) *rawClient {
	t.Helper()
	r := rawDial(t, addr)
	if m, _ := r.handshake(rawOpts{}); m.Name() != "connection.open-ok" {
		t.Fatalf("handshake: %+v", m)
	}
	r.send(1, &amqp.ChannelOpen{})
	expect[*amqp.ChannelOpenOk](r, 1)
	return r
}

// wantConnClose checks a connection.close.
func wantConnClose(t testing.TB, m amqp.Method, code uint16, text string, cls, mth uint16) {
	t.Helper()
	if _, ok := m.(*amqp.ConnectionClose); !ok {
		t.Fatalf("got %s %+v, want connection.close", m.Name(), m)
	}
	wantClose(t, m, code, text, cls, mth)
}

// wantClose checks a channel.close or connection.close.
func wantClose(t testing.TB, m amqp.Method, code uint16, text string, cls, mth uint16) {
	t.Helper()
	var gotCode, gotCls, gotMth uint16
	var gotText string
	switch c := m.(type) {
	case *amqp.ChannelClose:
		gotCode, gotText, gotCls, gotMth = c.ReplyCode, c.ReplyText, c.CauseClassID, c.CauseMethodID
	case *amqp.ConnectionClose:
		gotCode, gotText, gotCls, gotMth = c.ReplyCode, c.ReplyText, c.CauseClassID, c.CauseMethodID
	default:
		t.Fatalf("got %s, want a close", m.Name())
	}
	if gotCode != code || gotText != text || gotCls != cls || gotMth != mth {
		t.Fatalf("got %d %q (%d,%d), want %d %q (%d,%d)", gotCode, gotText, gotCls, gotMth, code, text, cls, mth)
	}
}

func isEOF(err error) bool {
	return err != nil && (errors.Is(err, net.ErrClosed) || strings.Contains(err.Error(), "EOF") || strings.Contains(err.Error(), "reset"))
}
