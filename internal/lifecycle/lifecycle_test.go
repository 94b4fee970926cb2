package lifecycle

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"substrate/internal/logging"
)

type fake struct {
	name     string
	startErr error
	log      *[]string
	errc     chan error
}

func (f *fake) Name() string { return f.name }
func (f *fake) Start(context.Context) error {
	*f.log = append(*f.log, "start "+f.name)
	return f.startErr
}
func (f *fake) Shutdown(context.Context) error {
	*f.log = append(*f.log, "stop "+f.name)
	return nil
}
func (f *fake) Err() <-chan error { return f.errc }

func TestOrderAndReverseShutdown(t *testing.T) {
	var log []string
	g := NewGroup(logging.Discard(), &fake{name: "etcd", log: &log}, &fake{name: "amqp", log: &log}, &fake{name: "http", log: &log})
	if err := g.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := g.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(log, ","); got != "start etcd,start amqp,start http,stop http,stop amqp,stop etcd" {
		t.Fatalf("order = %s", got)
	}
}

func TestFailedStartStopsWhatStarted(t *testing.T) {
	var log []string
	g := NewGroup(logging.Discard(), &fake{name: "etcd", log: &log}, &fake{name: "amqp", log: &log, startErr: errors.New("port busy")}, &fake{name: "http", log: &log})
	err := g.Start(context.Background())
	if err == nil || err.Error() != "amqp: port busy" {
		t.Fatalf("err = %v", err)
	}
	if got := strings.Join(log, ","); got != "start etcd,start amqp,stop etcd" {
		t.Fatalf("order = %s", got)
	}
}

func TestWaitReturnsServiceFailure(t *testing.T) {
	var log []string
	errc := make(chan error, 1)
	g := NewGroup(logging.Discard(), &fake{name: "etcd", log: &log, errc: errc}, &fake{name: "http", log: &log})
	if err := g.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	errc <- errors.New("member removed")
	if err := g.Wait(context.Background()); err == nil || err.Error() != "etcd: member removed" {
		t.Fatalf("Wait = %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := g.Wait(ctx); err != nil {
		t.Fatalf("Wait after cancel = %v", err)
	}
}

func TestEmergencySkipsTheFailingService(t *testing.T) {
	var log []string
	g := NewGroup(logging.Discard(), &fake{name: "etcd", log: &log}, &fake{name: "amqp", log: &log}, &fake{name: "memcached", log: &log})
	if err := g.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() { done <- g.Emergency(context.Background(), "etcd") }() // from another goroutine, as a fatal log entry would
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(log, ","); got != "start etcd,start amqp,start memcached,stop memcached,stop amqp" {
		t.Fatalf("order = %s", got)
	}
}
