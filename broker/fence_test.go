package broker

import (
	"sync"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
)

// testFence is a Fence the test holds, lifts and loses at will.
type testFence struct {
	mu      sync.Mutex
	held    bool
	lost    bool
	changed chan struct{} // closed and replaced on every change
}

func newTestFence() *testFence { return &testFence{held: true, changed: make(chan struct{})} }

func (f *testFence) Held() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.held
}

func (f *testFence) Wait() bool {
	for {
		f.mu.Lock()
		held, lost, ch := f.held, f.lost, f.changed
		f.mu.Unlock()
		switch {
		case lost:
			return false
		case held:
			return true
		}
		<-ch
	}
}

func (f *testFence) set(held, lost bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.held, f.lost = held, lost
	close(f.changed)
	f.changed = make(chan struct{})
}

// TestFenceHoldsWrites: while a cluster leader's lease (Config.Fence) is
// not held the broker sends its clients nothing, deliveries included;
// they go out once it holds again; once it is lost for good the
// connection is closed without another frame.
func TestFenceHoldsWrites(t *testing.T) {
	fence := newTestFence()
	s := startServer(t, func(c *Config) { c.Fence = fence })
	c := dial(t, urlOf(s))
	defer c.Close()
	ch := channel091(t, c)
	q := uniq("fence")
	if _, err := ch.QueueDeclare(q, false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	msgs, err := ch.Consume(q, "", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	pub := func(body string) {
		t.Helper()
		if err := ch.Publish("", q, false, false, amqp091.Publishing{Body: []byte(body)}); err != nil {
			t.Fatal(err)
		}
	}
	pub("held")
	if m := recvTimeout(t, msgs, 5*time.Second); string(m.Body) != "held" {
		t.Fatalf("got %q", m.Body)
	}

	fence.set(false, false)
	pub("fenced")
	noRecv(t, msgs, 300*time.Millisecond) // held back while the lease lapses
	fence.set(true, false)
	if m := recvTimeout(t, msgs, 5*time.Second); string(m.Body) != "fenced" {
		t.Fatalf("got %q after the lease came back", m.Body)
	}

	closed := c.NotifyClose(make(chan *amqp091.Error, 1))
	fence.set(false, false)
	pub("never")
	fence.set(false, true) // the term is lost: the connection ends, silently
	select {
	case m, ok := <-msgs:
		if ok {
			t.Fatalf("delivered %q after the lease was lost", m.Body)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the connection outlived its lost lease")
	}
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("no close notification after the lease was lost")
	}
}
