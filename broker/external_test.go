package broker

import (
	"context"
	"net"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"substrate/broker/store"
)

// TestExternalServeAndLog runs a broker as a cluster node's active broker
// does: connections accepted by the caller's listener and handed to
// Serve, and a message store given in Config.Log. A persistent message
// published to the first broker is recovered by a second one over the same
// Log, and Shutdown closes it.
func TestExternalServeAndLog(t *testing.T) {
	if err := (Config{External: true, Addrs: []string{"127.0.0.1:0"}}).Validate(); err == nil {
		t.Fatal("External with listen addresses validated")
	}
	log := &keepOpen{Memory: store.NewMemory()}
	defs := NewMemDefinitions()
	run := func() (*Server, string, func()) {
		cfg := NewConfig()
		cfg.Addrs, cfg.External, cfg.Log, cfg.Definitions = nil, true, log, defs
		s, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for {
				nc, err := ln.Accept()
				if err != nil {
					return
				}
				s.Serve(nc)
			}
		}()
		if len(s.Addrs()) != 0 {
			t.Fatalf("External broker bound %v", s.Addrs())
		}
		// Before Start, Serve closes the socket.
		nc, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := nc.Read(make([]byte, 1)); err == nil {
			t.Fatalf("a connection before Start read %d bytes", n)
		}
		nc.Close()
		if err := s.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		return s, "amqp://guest:guest@" + ln.Addr().String() + "/", func() {
			ln.Close()
			if err := s.Shutdown(context.Background()); err != nil {
				t.Error(err)
			}
		}
	}
	s1, url, stop1 := run()
	c := dial(t, url)
	ch := channel091(t, c)
	if _, err := ch.QueueDeclare("ext", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	conf := ch.NotifyPublish(make(chan amqp091.Confirmation, 1))
	if err := ch.Publish("", "ext", false, false, amqp091.Publishing{DeliveryMode: 2, Body: []byte("kept")}); err != nil {
		t.Fatal(err)
	}
	if cf := recvTimeout(t, conf, 5*time.Second); !cf.Ack {
		t.Fatal("publish nacked")
	}
	if log.Len() != 1 {
		t.Fatalf("Config.Log holds %d messages, want 1", log.Len())
	}
	stop1()
	_ = s1
	if !log.closed {
		t.Fatal("Shutdown did not close Config.Log")
	}
	log.closed = false
	_, url2, stop2 := run()
	defer stop2()
	c2 := dial(t, url2)
	ch2 := channel091(t, c2)
	m, ok, err := ch2.Get("ext", true)
	if err != nil || !ok || string(m.Body) != "kept" {
		t.Fatalf("after a new broker on the same Log: get = %q %v %v", m.Body, ok, err)
	}
}

// keepOpen records Close instead of closing, so one Log serves two
// brokers in turn as one replicated store serves successive terms.
type keepOpen struct {
	*store.Memory
	closed bool
}

func (k *keepOpen) Close() error { k.closed = true; return nil }
