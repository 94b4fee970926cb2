package broker

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"substrate/broker/amqp"
	"substrate/internal/faults"
	"substrate/internal/testkit"
)

// recConn records what a client writes.
type recConn struct {
	net.Conn
	mu  sync.Mutex
	out bytes.Buffer
}

func (r *recConn) Write(p []byte) (int, error) {
	r.mu.Lock()
	r.out.Write(p)
	r.mu.Unlock()
	return r.Conn.Write(p)
}

func (r *recConn) bytes() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Clone(r.out.Bytes())
}

// recordSession runs body with an amqp091-go client of s and returns the
// bytes the client sent: a real client's handshake and channel traffic,
// replayable against a fresh broker.
func recordSession(tb testing.TB, s *Server, auth amqp091.Authentication, body func(*amqp091.Connection) error) []byte {
	var rc *recConn
	cfg := amqp091.Config{
		SASL: []amqp091.Authentication{auth},
		Dial: func(network, addr string) (net.Conn, error) {
			c, err := net.DialTimeout(network, addr, 5*time.Second)
			if err != nil {
				return nil, err
			}
			rc = &recConn{Conn: c}
			return rc, nil
		},
	}
	conn, err := amqp091.DialConfig("amqp://"+addrOf(s)+"/", cfg)
	if err == nil {
		if err := body(conn); err != nil {
			tb.Fatalf("recording a session: %v", err)
		}
		conn.Close()
	}
	if rc == nil {
		tb.Fatal("no connection recorded")
	}
	return rc.bytes()
}

// clientSessions records amqp091-go sessions that exercise the handshake
// (PLAIN, AMQPLAIN, a refused login) and the channel state machine.
func clientSessions(tb testing.TB) [][]byte {
	s := startServer(tb)
	ctx := context.Background()
	guest := &amqp091.PlainAuth{Username: "guest", Password: "guest"}
	var out [][]byte
	out = append(out, recordSession(tb, s, guest, func(c *amqp091.Connection) error {
		ch, err := c.Channel()
		if err != nil {
			return err
		}
		steps := []func() error{
			func() error { return ch.Qos(10, 0, false) },
			func() error { return ch.ExchangeDeclare("fx", "topic", false, true, false, false, nil) },
			func() error {
				_, err := ch.QueueDeclare("fq", false, false, true, false, amqp091.Table{"x-message-ttl": int32(60000), "x-max-length": int32(10)})
				return err
			},
			func() error { return ch.QueueBind("fq", "a.#", "fx", false, nil) },
			func() error { return ch.Confirm(false) },
			func() error {
				dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "fx", "a.b", false, false, amqp091.Publishing{
					Headers: amqp091.Table{"h": "v", "n": int64(7)}, ContentType: "text/plain", DeliveryMode: 2,
					Priority: 1, CorrelationId: "c1", ReplyTo: "r", Expiration: "60000", MessageId: "m1", Body: bytes.Repeat([]byte("b"), 1000)})
				if err == nil && !dc.Wait() {
					err = io.ErrUnexpectedEOF
				}
				return err
			},
			func() error {
				ds, err := ch.Consume("fq", "ctag", false, false, false, false, nil)
				if err != nil {
					return err
				}
				d := <-ds
				if err := d.Nack(false, true); err != nil {
					return err
				}
				d = <-ds
				if err := d.Ack(false); err != nil {
					return err
				}
				return ch.Cancel("ctag", false)
			},
			func() error {
				return ch.PublishWithContext(ctx, "", "fq", false, false, amqp091.Publishing{Body: []byte("for get")})
			},
			func() error { _, _, err := ch.Get("fq", false); return err },
			func() error { return ch.Reject(3, true) },
			func() error { _, err := ch.QueuePurge("fq", false); return err },
			func() error { return ch.QueueUnbind("fq", "a.#", "fx", nil) },
			func() error { _, err := ch.QueueDelete("fq", false, false, false); return err },
			func() error { return ch.ExchangeDelete("fx", false, false) },
			func() error { return ch.Close() },
		}
		for _, step := range steps {
			if err := step(); err != nil {
				return err
			}
		}
		return nil
	}))
	out = append(out, recordSession(tb, s, &amqp091.AMQPlainAuth{Username: "guest", Password: "guest"}, func(c *amqp091.Connection) error {
		ch, err := c.Channel()
		if err != nil {
			return err
		}
		q, err := ch.QueueDeclare("", false, true, true, false, nil)
		if err != nil {
			return err
		}
		if err := ch.Tx(); err != nil {
			return err
		}
		for _, m := range []string{"", "x", strings.Repeat("y", 140000)} { // the last spans body frames
			if err := ch.PublishWithContext(ctx, "", q.Name, false, false, amqp091.Publishing{Body: []byte(m)}); err != nil {
				return err
			}
		}
		if err := ch.TxCommit(); err != nil {
			return err
		}
		if err := ch.PublishWithContext(ctx, "amq.direct", "nowhere", true, false, amqp091.Publishing{Body: []byte("back")}); err != nil {
			return err
		}
		// A channel error (unknown exchange) closes the channel: 404.
		ch2, err := c.Channel()
		if err != nil {
			return err
		}
		ch2.ExchangeDeclarePassive("missing", "direct", false, false, false, false, nil)
		return ch.Close()
	}))
	out = append(out, recordSession(tb, s, &amqp091.PlainAuth{Username: "guest", Password: "wrong"}, nil))
	return out
}

// loopbackConn makes a socket pair end look like a TCP peer on loopback
// (guest may log in only from there).
type loopbackConn struct{ net.Conn }

func (loopbackConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
}
func (loopbackConn) LocalAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5672} }

// serverMethods returns the class and method ids of the method frames s
// wrote on channel 0.
func serverMethods(out []byte) [][2]uint16 {
	out = bytes.TrimPrefix(out, []byte(amqp.ProtocolHeader))
	var ms [][2]uint16
	for len(out) > 0 {
		f, n, err := amqp.ParseFrame(out, 0)
		if err != nil {
			break
		}
		if f.Type == amqp.FrameMethod && f.Channel == 0 && len(f.Payload) >= 4 {
			ms = append(ms, [2]uint16{binary.BigEndian.Uint16(f.Payload), binary.BigEndian.Uint16(f.Payload[2:])})
		}
		out = out[n:]
	}
	return ms
}

// FuzzConnection drives one whole AMQP connection (protocol header,
// handshake with PLAIN or AMQPLAIN, then channels, content and acks) from
// the fuzzer's bytes, against a fresh broker, and half-closes. It fails
// when:
//   - a panic was contained (substrate_panics_total{amqp} grew: the
//     per-connection recovery would otherwise hide the bug);
//   - the connection is still open 10 s after the client's EOF;
//   - the login succeeded (connection.tune sent) without guest's
//     password in the input: the PLAIN split or the AMQPLAIN table let
//     something through;
//   - Shutdown fails, or goroutines remain after it.
//
// Seeds are amqp091-go sessions recorded against a live broker, plus a
// publish declaring a 2^62-byte body.
func FuzzConnection(f *testing.F) {
	sessions := clientSessions(f)
	for _, s := range sessions {
		f.Add(s)
	}
	// The recorded handshake, then a publish declaring a huge body and a
	// few bytes of it.
	hs := sessions[0]
	if i := bytes.Index(hs, []byte{1, 0, 1}); i > 0 { // the first frame on channel 1 (channel.open)
		p := bytes.Clone(hs[:i])
		p, _ = amqp.AppendMethodFrame(p, 1, &amqp.ChannelOpen{})
		p, _ = amqp.AppendMethodFrame(p, 1, &amqp.BasicPublish{RoutingKey: "q"})
		p = amqp.AppendHeaderFrameRaw(p, 1, amqp.ClassBasic, 1<<62, []byte{0, 0})
		p = amqp.AppendFrame(p, amqp.FrameBody, 1, []byte("abc"))
		f.Add(p)
	}
	f.Add([]byte("AMQP\x00\x00\x09\x01"))
	f.Add([]byte("AMQP\x01\x01\x00\x0a"))
	f.Fuzz(func(t *testing.T, data []byte) {
		baseline := runtime.NumGoroutine()
		cfg := NewConfig()
		cfg.Addrs = []string{"127.0.0.1:0"}
		s, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		s.silentCloseDelay = time.Millisecond
		if err := s.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		before := faults.Count(faults.AMQP)
		cl, sv := testkit.SocketPair(t)
		defer cl.Close()
		s.admit(loopbackConn{sv}, nil)
		var out bytes.Buffer
		read := make(chan struct{})
		go func() {
			defer close(read)
			io.Copy(&out, cl)
		}()
		go func() {
			cl.Write(data)
			cl.CloseWrite()
		}()
		select {
		case <-read:
		case <-time.After(10 * time.Second):
			t.Fatalf("connection still open 10 s after the client's EOF; input %q", data)
		}
		for deadline := time.Now().Add(10 * time.Second); len(s.connections()) > 0; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("connection not forgotten 10 s after its socket closed; input %q", data)
			}
		}
		if n := faults.Count(faults.AMQP) - before; n != 0 {
			t.Fatalf("%d panics contained serving %q", n, data)
		}
		for _, m := range serverMethods(out.Bytes()) {
			if m == [2]uint16{amqp.ClassConnection, amqp.MethodConnectionTune} && bytes.Count(data, []byte("guest")) < 2 {
				t.Fatalf("login accepted without guest's password: %q", data)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Fatalf("shutdown: %v", err)
		}
		cl.Close()
		for deadline := time.Now().Add(5 * time.Second); runtime.NumGoroutine() > baseline; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<16)
				t.Fatalf("%d goroutines before, %d after shutdown:\n%s", baseline, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
			}
		}
	})
}
