package broker

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
)

// TestDirectConn: a direct connection logs in and works like a TCP one,
// is listed under its chosen addresses, and is closed by Shutdown; after
// that DirectConn refuses.
func TestDirectConn(t *testing.T) {
	s := startServer(t)
	peer := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40001}
	local := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 15672}
	nc, gone, err := s.DirectConn(peer, local)
	if err != nil {
		t.Fatal(err)
	}
	c, err := amqp091.Open(nc, amqp091.Config{SASL: []amqp091.Authentication{&amqp091.PlainAuth{Username: "guest", Password: "guest"}}, Vhost: "/"})
	if err != nil {
		t.Fatal(err)
	}
	ch, err := c.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("direct.q", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	conns := s.Connections()
	if len(conns) != 1 || conns[0].Name != "127.0.0.1:40001 -> 127.0.0.1:15672" {
		t.Fatalf("connections: %+v", conns)
	}
	closed := c.NotifyClose(make(chan *amqp091.Error, 1))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-closed:
		if e == nil || e.Code != 320 {
			t.Fatalf("close at shutdown: %v", e)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the direct connection outlived Shutdown")
	}
	select {
	case <-gone:
	case <-time.After(10 * time.Second):
		t.Fatal("gone not closed after Shutdown")
	}
	if len(s.Connections()) != 0 {
		t.Fatal("a gone connection is listed")
	}
	if _, _, err := s.DirectConn(peer, local); !errors.Is(err, ErrStopped) {
		t.Fatalf("DirectConn after Shutdown: %v", err)
	}
}

// TestCheckLoginGuestRemote: the default user logs in from loopback only.
func TestCheckLoginGuestRemote(t *testing.T) {
	s := startServer(t)
	if _, err := s.CheckLogin("guest", "guest", &net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 1}); !errors.Is(err, ErrLoopbackOnly) {
		t.Fatalf("guest from afar: %v", err)
	}
	if u, err := s.CheckLogin("guest", "guest", &net.TCPAddr{IP: net.ParseIP("::1"), Port: 1}); err != nil || u.Name != "guest" {
		t.Fatalf("guest from ::1: %v %v", u, err)
	}
	if _, err := s.CheckLogin("nobody", "x", nil); !errors.Is(err, ErrLoginRefused) {
		t.Fatalf("unknown user: %v", err)
	}
}
