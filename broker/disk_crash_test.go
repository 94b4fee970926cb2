package broker

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"sync"
	"syscall"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"substrate/broker/store"
)

// crashBroker starts a broker whose message store lives on fsys, with
// definitions defs that outlive it, as serve's restarts do.
func crashBroker(t *testing.T, defs *MemDefinitions, fsys *store.MemFS) *Server {
	t.Helper()
	cfg := NewConfig()
	cfg.Addrs = []string{"127.0.0.1:0"}
	cfg.Definitions = defs
	cfg.StoreDir = "/mem/broker"
	cfg.storeTweak = func(sc *store.Config) { sc.FS = fsys; sc.SegmentSize = 64 << 10 }
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.silentCloseDelay = 10 * time.Millisecond
	if err := s.Start(context.Background()); err != nil {
		t.Fatalf("start after a crash: %v (files %v)", err, fsys)
	}
	return s
}

// TestDiskCrashLoop is the crash loop through the broker, on a MemFS that
// loses at a simulated crash every byte not fsynced: in each round one
// client publishes persistent messages with confirms and gets and acks
// some on the same connection (so a later confirm covers its acks), with
// ENOSPC and EIO injected in some rounds, until the file system crashes at
// a random moment; the broker is then stopped and a new one started on
// the same files. After every restart: no confirmed message is lost, no
// message whose ack a later confirm covered comes back, and the queue
// holds the messages in publish order.
func TestDiskCrashLoop(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 9))
	fsys := store.NewMemFS()
	defs := NewMemDefinitions()
	var mu sync.Mutex
	live := map[uint64]bool{}  // confirmed (or recovered), not acked
	acked := map[uint64]bool{} // acked, and a later confirm covered the ack
	var seq uint64
	rounds := 8
	if testing.Short() {
		rounds = 4
	}
	nacks := 0
	for round := 0; round <= rounds; round++ {
		s := crashBroker(t, defs, fsys)
		c, err := amqp091.Dial(urlOf(s))
		if err != nil {
			t.Fatal(err)
		}
		// Check what came back, in order, without consuming it.
		check := channel091(t, c)
		if _, err := check.QueueDeclare("crashq", true, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
		got := map[uint64]bool{}
		var last uint64
		for {
			d, ok, err := check.Get("crashq", false)
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				break
			}
			if len(d.Body) != 8 {
				continue // a marker
			}
			n := binary.BigEndian.Uint64(d.Body)
			if n <= last {
				t.Fatalf("round %d: message %d after %d: order lost", round, n, last)
			}
			last = n
			got[n] = true
		}
		mu.Lock()
		for n := range live {
			if !got[n] {
				t.Fatalf("round %d: confirmed message %d lost (files %v)", round, n, fsys)
			}
		}
		for n := range acked {
			if got[n] {
				t.Fatalf("round %d: acked message %d came back", round, n)
			}
		}
		for n := range got {
			live[n] = true
		}
		mu.Unlock()
		check.Close() // the messages go back to the queue, in order
		if round == rounds {
			c.Close()
			s.Shutdown(context.Background())
			break
		}

		if round%2 == 1 {
			fsys.SetFault(func(op, path string) error {
				if (op == "write" || op == "sync") && rand.IntN(5) == 0 {
					if rand.IntN(2) == 0 {
						return syscall.ENOSPC
					}
					return syscall.EIO
				}
				return nil
			})
		} else {
			fsys.SetFault(nil)
		}
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			ch, err := c.Channel()
			if err != nil {
				return
			}
			if ch.Confirm(false) != nil {
				return
			}
			confirms := ch.NotifyPublish(make(chan amqp091.Confirmation, 64))
			publish := func(body []byte) (bool, bool) { // acked, still running
				if ch.Publish("", "crashq", false, false, amqp091.Publishing{DeliveryMode: 2, Body: body}) != nil {
					return false, false
				}
				select {
				case cf, ok := <-confirms:
					return ok && cf.Ack, ok
				case <-stop: // after the crash: the store retries in vain
					return false, false
				case <-time.After(5 * time.Second):
					return false, false
				}
			}
			for {
				select {
				case <-stop:
					return
				default:
				}
				for range 10 {
					mu.Lock()
					seq++
					n := seq
					mu.Unlock()
					body := binary.BigEndian.AppendUint64(nil, n)
					ok, running := publish(body)
					if !running {
						return
					}
					mu.Lock()
					if ok {
						live[n] = true
					} else {
						nacks++
					}
					mu.Unlock()
				}
				var mine []uint64
				for range 6 {
					d, ok, err := ch.Get("crashq", false)
					if err != nil || !ok {
						break
					}
					if d.Ack(false) != nil {
						return
					}
					if len(d.Body) == 8 {
						n := binary.BigEndian.Uint64(d.Body)
						mu.Lock()
						delete(live, n) // may or may not come back until a confirm covers the ack
						mu.Unlock()
						mine = append(mine, n)
					}
				}
				ok, running := publish([]byte("marker"))
				if !running {
					return
				}
				if ok {
					mu.Lock()
					for _, n := range mine {
						acked[n] = true
					}
					mu.Unlock()
				}
			}
		}()
		time.Sleep(time.Duration(50+rng.IntN(250)) * time.Millisecond)
		fsys.Crash() // the machine loses what was not synced
		close(stop)
		<-done
		c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		s.Shutdown(ctx) // fails: the store's files are gone with the crash
		cancel()
		fsys.SetFault(nil)
	}
	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d rounds: %d published, %d nacked, %d live, %d acked", rounds, seq, nacks, len(live), len(acked))
	if len(acked) == 0 || len(live) == 0 {
		t.Fatal("the loop tested nothing")
	}
}
