package broker

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"substrate/broker/amqp"
	"substrate/internal/testkit"
)

func TestConfigValidate(t *testing.T) {
	c := NewConfig()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Heartbeat != 60*time.Second || c.FrameMax != 131072 || c.ChannelMax != 2047 {
		t.Fatalf("defaults %+v", c)
	}
	for _, bad := range []func(*Config){
		func(c *Config) { c.Addrs = nil },
		func(c *Config) { c.Addrs = []string{"nohostport"} },
		func(c *Config) { c.FrameMax = 100 },
		func(c *Config) { c.Heartbeat = 1500 * time.Millisecond },
	} {
		c := NewConfig()
		bad(&c)
		if c.Validate() == nil {
			t.Errorf("%+v validated", c)
		}
	}
}

func TestHandshakeStartAndTune(t *testing.T) {
	s := startServer(t)
	r := rawDial(t, addrOf(s))
	r.write([]byte(amqp.ProtocolHeader))
	st := expect[*amqp.ConnectionStart](r, 0)
	if st.VersionMajor != 0 || st.VersionMinor != 9 || st.Mechanisms != "PLAIN AMQPLAIN" || st.Locales != "en_US" {
		t.Fatalf("start %+v", st)
	}
	caps := st.ServerProperties["capabilities"].(amqp.Table)
	for _, k := range []string{"publisher_confirms", "exchange_exchange_bindings", "basic.nack", "consumer_cancel_notify",
		"connection.blocked", "authentication_failure_close", "per_consumer_qos"} {
		if caps[k] != true {
			t.Errorf("capability %s missing", k)
		}
	}
	for _, k := range []string{"direct_reply_to", "consumer_priorities"} {
		if _, ok := caps[k]; ok {
			t.Errorf("capability %s advertised but not implemented", k)
		}
	}
	for _, k := range []string{"product", "version", "platform"} {
		if _, ok := st.ServerProperties[k].(string); !ok {
			t.Errorf("server property %s missing", k)
		}
	}
	b, _ := amqp.AppendTableBody(nil, amqp.Table{"LOGIN": "guest", "PASSWORD": "guest"})
	r.send(0, &amqp.ConnectionStartOk{Mechanism: "AMQPLAIN", Response: string(b), Locale: "en_US"})
	tune := expect[*amqp.ConnectionTune](r, 0)
	if tune.ChannelMax != 2047 || tune.FrameMax != 131072 || tune.Heartbeat != 60 {
		t.Fatalf("tune %+v", tune)
	}
	r.send(0, &amqp.ConnectionTuneOk{ChannelMax: 2047, FrameMax: 131072, Heartbeat: 0})
	r.send(0, &amqp.ConnectionOpen{VirtualHost: "/"})
	expect[*amqp.ConnectionOpenOk](r, 0)
	// Client-initiated close with reply code 0, as oslo sends it.
	r.send(0, &amqp.ConnectionClose{})
	expect[*amqp.ConnectionCloseOk](r, 0)
	// Then the server waits for the client to close the socket, as
	// RabbitMQ does (it waited more than 30 s in a probe), but only
	// closeGrace: a client that never closes does not keep it.
	start := time.Now()
	r.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := r.fr.ReadFrame(); err != io.EOF {
		t.Fatalf("after close-ok: %v, want EOF", err)
	}
	if d := time.Since(start); d < closeGrace/2 || d > 3*closeGrace {
		t.Fatalf("the server closed %v after close-ok; want about closeGrace (%v)", d, closeGrace)
	}
}

func TestWrongProtocolHeader(t *testing.T) {
	s := startServer(t)
	r := rawDial(t, addrOf(s))
	r.write([]byte("AMQP\x00\x00\x08\x00"))
	buf, err := io.ReadAll(io.LimitReader(r.nc, 100))
	if err != nil {
		t.Fatal(err)
	}
	if string(buf) != amqp.ProtocolHeader {
		t.Fatalf("got %q, want our header then EOF", buf)
	}
}

func TestBadLoginIs403(t *testing.T) {
	s := startServer(t)
	for _, mech := range []string{"PLAIN", "AMQPLAIN"} {
		r := rawDial(t, addrOf(s))
		m, _ := r.handshake(rawOpts{user: "guest", pass: "wrong", mechanism: mech})
		wantConnClose(t, m, 403, "ACCESS_REFUSED - Login was refused using authentication mechanism "+mech+". For details see the broker logfile.", 0, 0)
		r.send(0, &amqp.ConnectionCloseOk{})
	}
	// Without authentication_failure_close the socket is just closed.
	r := rawDial(t, addrOf(s))
	r.write([]byte(amqp.ProtocolHeader))
	expect[*amqp.ConnectionStart](r, 0)
	r.send(0, &amqp.ConnectionStartOk{Mechanism: "PLAIN", Response: "\x00guest\x00bad"})
	r.nc.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := r.fr.ReadFrame(); !isEOF(err) {
		t.Fatalf("got %v, want EOF", err)
	}
	// amqp091-go (no authentication_failure_close) reports a login failure.
	if _, err := amqp091.Dial("amqp://guest:nope@" + addrOf(s) + "/"); err == nil {
		t.Fatal("bad password accepted")
	}
}

func TestGuestOnlyFromLoopback(t *testing.T) {
	s := startServer(t)
	// Simulate a remote peer: the loopback check looks at the peer address.
	c1, c2 := net.Pipe()
	defer c1.Close()
	fake := &fakeAddrConn{Conn: c2, remote: &net.TCPAddr{IP: net.ParseIP("10.1.2.3"), Port: 5555}}
	s.admit(fake, nil)
	r := &rawClient{t: t, nc: c1, fr: amqp.NewFrameReader(c1)}
	m, _ := r.handshake(rawOpts{})
	wantConnClose(t, m, 403, "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details see the broker logfile.", 0, 0)
	r.send(0, &amqp.ConnectionCloseOk{})
	// Another user may log in from anywhere.
	if err := s.AddUser(context.Background(), "nova", "pw"); err != nil {
		t.Fatal(err)
	}
	s.SetPermissions(context.Background(), Permission{User: "nova", VHost: "/", Configure: ".*", Write: ".*", Read: ".*"})
	c3, c4 := net.Pipe()
	defer c3.Close()
	s.admit(&fakeAddrConn{Conn: c4, remote: fake.remote}, nil)
	r = &rawClient{t: t, nc: c3, fr: amqp.NewFrameReader(c3)}
	if m, _ := r.handshake(rawOpts{user: "nova", pass: "pw"}); m.Name() != "connection.open-ok" {
		t.Fatalf("nova from remote: %+v", m)
	}
}

type fakeAddrConn struct {
	net.Conn
	remote net.Addr
}

func (f *fakeAddrConn) RemoteAddr() net.Addr { return f.remote }
func (f *fakeAddrConn) LocalAddr() net.Addr {
	return &net.TCPAddr{IP: net.ParseIP("10.0.0.11"), Port: 5672}
}

func TestUnknownVHostAndNoAccess(t *testing.T) {
	s := startServer(t)
	r := rawDial(t, addrOf(s))
	m, _ := r.handshake(rawOpts{vhost: "novhost"})
	wantConnClose(t, m, 530, "NOT_ALLOWED - vhost novhost not found", 10, 40)
	r.send(0, &amqp.ConnectionCloseOk{})

	ctx := context.Background()
	s.AddVHost(ctx, "other")
	r = rawDial(t, addrOf(s))
	m, _ = r.handshake(rawOpts{vhost: "other"})
	wantConnClose(t, m, 530, "NOT_ALLOWED - access to vhost 'other' refused for user 'guest'", 10, 40)
	r.send(0, &amqp.ConnectionCloseOk{})

	// amqp091-go sees the 530.
	_, err := amqp091.Dial(urlOf(s) + "novhost")
	wantAMQPError(t, err, 530, "NOT_ALLOWED - vhost novhost not found")
}

func TestSilentCloseDelay(t *testing.T) {
	s, err := New(NewConfig())
	if err != nil {
		t.Fatal(err)
	}
	if s.silentCloseDelay != 3*time.Second {
		t.Fatalf("silent close delay %v, want RabbitMQ's 3s", s.silentCloseDelay)
	}
}

func TestTuneOkLimits(t *testing.T) {
	s := startServer(t)
	r := rawDial(t, addrOf(s))
	r.write([]byte(amqp.ProtocolHeader))
	expect[*amqp.ConnectionStart](r, 0)
	r.send(0, &amqp.ConnectionStartOk{Mechanism: "PLAIN", Response: "\x00guest\x00guest"})
	expect[*amqp.ConnectionTune](r, 0)
	r.send(0, &amqp.ConnectionTuneOk{ChannelMax: 10, FrameMax: 200000})
	// RabbitMQ closes the socket without a connection.close (see also
	// testdata/connection-errors.golden).
	r.nc.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := r.fr.ReadFrame(); !isEOF(err) {
		t.Fatalf("got %v, want the socket closed", err)
	}
}

func TestHeartbeats(t *testing.T) {
	logs := &testkit.Buffer{}
	s := startServer(t, func(c *Config) {
		c.Heartbeat = time.Second
		c.Logger = slog.New(slog.NewTextHandler(logs, nil))
	})
	r := rawDial(t, addrOf(s))
	r.handshake(rawOpts{heartbeat: 1})
	// The server sends heartbeats when it has sent nothing for hb/2.
	start := time.Now()
	var beats []time.Duration
	r.nc.SetReadDeadline(time.Now().Add(3 * time.Second))
	for len(beats) < 3 {
		f, err := r.fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		if f.Type == amqp.FrameHeartbeat {
			beats = append(beats, time.Since(start))
		}
		// Keep the server's receive side alive.
		r.write(amqp.AppendHeartbeat(nil))
	}
	if beats[2] > 2500*time.Millisecond {
		t.Fatalf("3 heartbeats took %v with heartbeat 1s (want about every 0.5s)", beats[2])
	}
	// Silence from the client: not closed after one interval, closed after
	// about two.
	silent := time.Now()
	r.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		_, err := r.fr.ReadFrame()
		if err != nil {
			if !isEOF(err) {
				t.Fatalf("read: %v", err)
			}
			break
		}
	}
	if d := time.Since(silent); d < 1500*time.Millisecond || d > 3500*time.Millisecond {
		t.Fatalf("closed after %v of client silence, want 2-3 heartbeats (1s)", d)
	}
	// The read's deadline is told apart from other errors (readNow).
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(logs.String(), "missed heartbeats from client"); {
		if time.Now().After(deadline) {
			t.Fatalf("no missed-heartbeats line in the log:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestConnectionResetLogged: a client that resets its connection is
// logged with the read's error, as net.Conn words it.
func TestConnectionResetLogged(t *testing.T) {
	logs := &testkit.Buffer{}
	s := startServer(t, func(c *Config) { c.Logger = slog.New(slog.NewTextHandler(logs, nil)) })
	r := rawOpen(t, addrOf(s))
	r.nc.(*net.TCPConn).SetLinger(0)
	r.nc.Close()
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(logs.String(), "read: connection reset by peer"); {
		if time.Now().After(deadline) {
			t.Fatalf("no reset line in the log:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestHeartbeatZeroMeansNone(t *testing.T) {
	s := startServer(t, func(c *Config) { c.Heartbeat = time.Second })
	r := rawDial(t, addrOf(s))
	r.handshake(rawOpts{heartbeat: 0})
	r.nc.SetReadDeadline(time.Now().Add(2500 * time.Millisecond))
	if f, err := r.fr.ReadFrame(); err == nil {
		t.Fatalf("got frame type %d with heartbeats off", f.Type)
	} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("connection ended with heartbeats off: %v", err)
	}
}

func TestFrameTooLarge(t *testing.T) {
	s := startServer(t)
	r := rawOpen(t, addrOf(s))
	// A body frame of frame_max exactly is fine; one beyond fails with 501.
	body := make([]byte, 131072-8)
	r.publish(1, &amqp.BasicPublish{RoutingKey: "nowhere"}, nil, body, 131072)
	r.write(amqp.AppendFrame(nil, amqp.FrameBody, 1, make([]byte, 131072+100)))
	_, m := r.method()
	if c, ok := m.(*amqp.ConnectionClose); !ok || c.ReplyCode != 501 {
		t.Fatalf("got %+v, want connection.close 501", m)
	}
}

func TestBodySplitAtFrameMax(t *testing.T) {
	s := startServer(t)
	r := rawDial(t, addrOf(s))
	r.write([]byte(amqp.ProtocolHeader))
	expect[*amqp.ConnectionStart](r, 0)
	r.send(0, &amqp.ConnectionStartOk{Mechanism: "PLAIN", Response: "\x00guest\x00guest"})
	expect[*amqp.ConnectionTune](r, 0)
	r.send(0, &amqp.ConnectionTuneOk{ChannelMax: 10, FrameMax: 4096})
	r.send(0, &amqp.ConnectionOpen{VirtualHost: "/"})
	expect[*amqp.ConnectionOpenOk](r, 0)
	r.send(1, &amqp.ChannelOpen{})
	expect[*amqp.ChannelOpenOk](r, 1)
	r.send(1, &amqp.QueueDeclare{Queue: "split"})
	expect[*amqp.QueueDeclareOk](r, 1)
	body := make([]byte, 10000)
	for i := range body {
		body[i] = byte(i)
	}
	r.publish(1, &amqp.BasicPublish{RoutingKey: "split"}, &amqp.Properties{ContentType: "x"}, body, 4096)
	r.send(1, &amqp.BasicGet{Queue: "split", NoAck: true})
	expect[*amqp.BasicGetOk](r, 1)
	var sizes []int
	f := r.frame()
	if f.Type != amqp.FrameHeader {
		t.Fatal("no header")
	}
	for total := 0; total < len(body); {
		f := r.frame()
		sizes = append(sizes, len(f.Payload))
		total += len(f.Payload)
	}
	if len(sizes) != 3 || sizes[0] != 4088 || sizes[1] != 4088 || sizes[2] != 10000-2*4088 {
		t.Fatalf("body frames %v, want 4088,4088,1824", sizes)
	}
	// Empty body: header only, no body frame.
	r.publish(1, &amqp.BasicPublish{RoutingKey: "split"}, nil, nil, 4096)
	r.send(1, &amqp.BasicGet{Queue: "split", NoAck: true})
	expect[*amqp.BasicGetOk](r, 1)
	if f := r.frame(); f.Type != amqp.FrameHeader {
		t.Fatal("no header")
	}
	r.send(1, &amqp.BasicGet{Queue: "split", NoAck: true})
	expect[*amqp.BasicGetEmpty](r, 1) // not a body frame
}

func TestShutdownSends320(t *testing.T) {
	s := startServer(t)
	r := rawOpen(t, addrOf(s))
	c := dial(t, urlOf(s))
	closed := c.NotifyClose(make(chan *amqp091.Error, 1))
	done := make(chan error)
	go func() { done <- s.Shutdown(context.Background()) }()
	_, m := r.method()
	wantConnClose(t, m, 320, "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'", 0, 0)
	r.send(0, &amqp.ConnectionCloseOk{})
	e := recvTimeout(t, closed, 5*time.Second)
	if e == nil || e.Code != 320 || e.Reason != "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'" {
		t.Fatalf("amqp091 saw %+v", e)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatalf("second shutdown: %v", err)
	}
	if _, err := net.Dial("tcp", addrOf(s)); err == nil {
		t.Fatal("still accepting after shutdown")
	}
}

func TestShutdownClosesUnresponsiveClient(t *testing.T) {
	s := startServer(t)
	r := rawOpen(t, addrOf(s))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("shutdown took %v with a client that never answers", d)
	}
	_ = r
}

func TestChannelLifecycle(t *testing.T) {
	s := startServer(t)
	r := rawOpen(t, addrOf(s))
	// A method on a channel that is not open: 504, connection-level.
	r.send(1, &amqp.ChannelClose{})
	expect[*amqp.ChannelCloseOk](r, 1)
	r.send(1, &amqp.ChannelOpen{}) // reuse of the id right after close
	expect[*amqp.ChannelOpenOk](r, 1)
	r.send(1, &amqp.ChannelFlow{Active: true})
	if ok := expect[*amqp.ChannelFlowOk](r, 1); !ok.Active {
		t.Fatal("flow-ok active false")
	}
	// After a channel error, everything but close-ok is ignored.
	r.send(1, &amqp.QueueDeclare{Queue: "nope", Passive: true})
	wantClose(t, expect[*amqp.ChannelClose](r, 1), 404, "NOT_FOUND - no queue 'nope' in vhost '/'", 50, 10)
	r.send(1, &amqp.QueueDeclare{Queue: "x"})
	r.send(1, &amqp.ChannelCloseOk{})
	r.send(1, &amqp.ChannelOpen{})
	expect[*amqp.ChannelOpenOk](r, 1)
	r.send(2, &amqp.QueueDeclare{Queue: "x"})
	wantClose(t, expect[*amqp.ConnectionClose](r, 0), 504, "CHANNEL_ERROR - expected 'channel.open'", 50, 10)
}

func TestChannelOpenTwiceAndChannelMax(t *testing.T) {
	s := startServer(t, func(c *Config) { c.ChannelMax = 2 })
	r := rawOpen(t, addrOf(s))
	r.send(1, &amqp.ChannelOpen{})
	wantClose(t, expect[*amqp.ConnectionClose](r, 0), 504, "CHANNEL_ERROR - second 'channel.open' seen", 20, 10)

	r = rawOpen(t, addrOf(s))
	r.send(2, &amqp.ChannelOpen{})
	expect[*amqp.ChannelOpenOk](r, 2)
	r.send(3, &amqp.ChannelOpen{})
	wantClose(t, expect[*amqp.ConnectionClose](r, 0), 530, "NOT_ALLOWED - number of channels opened (2) has reached the negotiated channel_max (2)", 0, 0)
}

func TestUnexpectedFrame(t *testing.T) {
	s := startServer(t)
	r := rawOpen(t, addrOf(s))
	// A method where a content header is expected.
	r.send(1, &amqp.BasicPublish{RoutingKey: "q"})
	r.send(1, &amqp.QueueDeclare{Queue: "q"})
	_, m := r.method()
	if c, ok := m.(*amqp.ConnectionClose); !ok || c.ReplyCode != 505 || c.CauseClassID != 60 || c.CauseMethodID != 40 {
		t.Fatalf("got %+v, want connection.close 505 (60,40)", m)
	}
	// A body frame with no content started.
	r = rawOpen(t, addrOf(s))
	r.write(amqp.AppendFrame(nil, amqp.FrameBody, 1, []byte("x")))
	_, m = r.method()
	if c, ok := m.(*amqp.ConnectionClose); !ok || c.ReplyCode != 505 {
		t.Fatalf("got %+v, want connection.close 505", m)
	}
}

func TestConnectionsAdmin(t *testing.T) {
	s := startServer(t)
	c := dial(t, urlOf(s))
	ch := channel091(t, c)
	_ = ch
	var infos []ConnectionInfo
	eventually(t, 2*time.Second, func() bool { infos = s.Connections(); return len(infos) == 1 && infos[0].Channels == 1 }, "one connection with one channel")
	ci := infos[0]
	if ci.User != "guest" || ci.VHost != "/" || ci.Name != c.LocalAddr().String()+" -> "+addrOf(s) || ci.Peer != c.LocalAddr().String() {
		t.Fatalf("info %+v", ci)
	}
	if ci.ClientProperties["product"] == nil {
		t.Fatalf("client properties %+v", ci.ClientProperties)
	}
	closed := c.NotifyClose(make(chan *amqp091.Error, 1))
	if err := s.CloseConnection(ci.Name, "maintenance"); err != nil {
		t.Fatal(err)
	}
	e := recvTimeout(t, closed, 3*time.Second)
	if e.Code != 320 || e.Reason != "CONNECTION_FORCED - maintenance" {
		t.Fatalf("got %+v", e)
	}
	if s.CloseConnection("nope", "x") == nil {
		t.Fatal("closing an unknown connection succeeded")
	}
	dial(t, urlOf(s))
	dial(t, urlOf(s))
	eventually(t, 2*time.Second, func() bool { return len(s.Connections()) == 2 }, "two connections")
	if n := s.CloseAllConnections("bye"); n != 2 {
		t.Fatalf("closed %d", n)
	}
	eventually(t, 3*time.Second, func() bool { return len(s.Connections()) == 0 }, "no connections")
}

// TestAnyFrameIsActivity: a client that sends methods but never a
// heartbeat frame is not timed out.
func TestAnyFrameIsActivity(t *testing.T) {
	s := startServer(t, func(c *Config) { c.Heartbeat = time.Second })
	r := rawDial(t, addrOf(s))
	r.handshake(rawOpts{heartbeat: 1})
	r.send(1, &amqp.ChannelOpen{})
	expect[*amqp.ChannelOpenOk](r, 1)
	deadline := time.Now().Add(3500 * time.Millisecond)
	for time.Now().Before(deadline) {
		r.send(1, &amqp.ChannelFlow{Active: true})
		for {
			f := r.frame() // skips the server's heartbeats
			if f.Type == amqp.FrameMethod {
				break
			}
		}
		time.Sleep(400 * time.Millisecond)
	}
	r.send(1, &amqp.BasicQos{})
	expect[*amqp.BasicQosOk](r, 1)
}
