package broker

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"substrate/broker/amqp"
)

// TestIdleConnectionMemory opens idle connections with one channel each,
// as oslo's pools do, and checks what the broker spends on each.
func TestIdleConnectionMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	s := startServer(t)
	const n = 300
	// Clients are raw sockets that keep nothing but the socket.
	hello := func() []byte {
		b := []byte(amqp.ProtocolHeader)
		b, _ = amqp.AppendMethodFrame(b, 0, &amqp.ConnectionStartOk{Mechanism: "PLAIN", Response: "\x00guest\x00guest"})
		b, _ = amqp.AppendMethodFrame(b, 0, &amqp.ConnectionTuneOk{ChannelMax: 2047, FrameMax: 131072, Heartbeat: 60})
		b, _ = amqp.AppendMethodFrame(b, 0, &amqp.ConnectionOpen{VirtualHost: "/"})
		b, _ = amqp.AppendMethodFrame(b, 1, &amqp.ChannelOpen{})
		return b
	}()
	measure := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse + ms.StackInuse
	}
	before := measure()
	for i := 0; i < n; i++ {
		r := rawDial(t, addrOf(s))
		r.write(hello)
	}
	eventually(t, 10*time.Second, func() bool {
		for _, c := range s.Connections() {
			if c.Channels != 1 {
				return false
			}
		}
		return len(s.Connections()) == n
	}, "connections open")
	per := (measure() - before) / n
	t.Logf("%d bytes per idle connection (server and client socket sides, both goroutines)", per)
	if per > 40<<10 {
		t.Fatalf("%d bytes per idle connection, want under 40 KiB", per)
	}
}

// TestSlowConsumerDoesNotBlockPublisher: a consumer that never reads its
// socket must not stop publishers or other consumers.
func TestSlowConsumerDoesNotBlockPublisher(t *testing.T) {
	s := startServer(t)
	// A stuck consumer: consumes without ack, never reads.
	r := rawOpen(t, addrOf(s))
	r.send(1, &amqp.QueueDeclare{Queue: "slow"})
	expect[*amqp.QueueDeclareOk](r, 1)
	r.send(1, &amqp.BasicConsume{Queue: "slow", ConsumerTag: "stuck", NoAck: true})
	expect[*amqp.BasicConsumeOk](r, 1)

	c := dial(t, urlOf(s))
	ch := channel091(t, c)
	must(t, ch.Confirm(false))
	_, err := ch.QueueDeclare("fast", false, false, false, false, nil)
	must(t, err)
	fast, err := channel091(t, c).Consume("fast", "", true, false, false, false, nil)
	must(t, err)
	body := make([]byte, 64<<10)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 300; i++ { // ~19 MB towards the stuck consumer
			dc, err := ch.PublishWithDeferredConfirm("", "slow", false, false, amqp091.Publishing{Body: body})
			if err != nil {
				t.Error(err)
				return
			}
			if i%50 == 0 && !dc.Wait() {
				t.Error("nack")
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("publisher blocked by a stuck consumer")
	}
	must(t, ch.Publish("", "fast", false, false, amqp091.Publishing{Body: []byte("hi")}))
	if d := recvTimeout(t, fast, 5*time.Second); string(d.Body) != "hi" {
		t.Fatal(string(d.Body))
	}
	var q QueueInfo
	for _, qi := range s.Queues("/") {
		if qi.Name == "slow" {
			q = qi
		}
	}
	if q.MessagesReady == 0 {
		t.Fatal("nothing waiting in the queue: deliveries were buffered without bound")
	}
	t.Logf("stuck consumer: %d messages wait in the queue", q.MessagesReady)
}

func BenchmarkPublishConfirmConsume(b *testing.B) {
	s := startServer(b)
	c := dial(b, urlOf(s))
	pub := channel091(b, c)
	must(b, pub.Confirm(false))
	_, err := pub.QueueDeclare("bench", false, false, false, false, nil)
	must(b, err)
	cc := dial(b, urlOf(s))
	sub := channel091(b, cc)
	must(b, sub.Qos(100, 0, false))
	dl, err := sub.Consume("bench", "", false, false, false, false, nil)
	must(b, err)
	confirms := pub.NotifyPublish(make(chan amqp091.Confirmation, 1024))
	body := make([]byte, 1024)
	var wg sync.WaitGroup
	wg.Add(2)
	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	go func() {
		defer wg.Done()
		for i := 0; i < b.N; i++ {
			d := <-dl
			d.Ack(false)
		}
	}()
	go func() {
		defer wg.Done()
		for i := 0; i < b.N; i++ {
			<-confirms
		}
	}()
	for i := 0; i < b.N; i++ {
		pub.Publish("", "bench", false, false, amqp091.Publishing{ContentType: "application/json", DeliveryMode: 2, Body: body})
	}
	wg.Wait()
}

// TestConcurrentChurn runs publishers, consumers that ack, reject, cancel
// and close, and queue deletions at once, under the race detector, and
// checks nothing deadlocks and every confirm arrives.
func TestConcurrentChurn(t *testing.T) {
	s := startServer(t)
	url := urlOf(s)
	setup := channel091(t, dial(t, url))
	must(t, setup.ExchangeDeclare("churn", "topic", false, false, false, false, nil))
	for i := 0; i < 4; i++ {
		q := fmt.Sprintf("churn.%d", i)
		_, err := setup.QueueDeclare(q, false, false, false, false, nil)
		must(t, err)
		must(t, setup.QueueBind(q, "k.#", "churn", false, nil))
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for p := 0; p < 3; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ch := channel091(t, dial(t, url))
			must(t, ch.Confirm(false))
			// Confirms are taken as they come: amqp091-go's reader waits
			// for a full listener, and gives a confirm up after 5 s.
			confirms := ch.NotifyPublish(make(chan amqp091.Confirmation, 64))
			var acked, nacked atomic.Int64
			go func() {
				for cf := range confirms { // until the connection closes
					if cf.Ack {
						acked.Add(1)
					} else {
						nacked.Add(1)
					}
				}
			}()
			n := 0
			for {
				select {
				case <-stop:
					deadline := time.Now().Add(30 * time.Second)
					for acked.Load()+nacked.Load() < int64(n) && time.Now().Before(deadline) {
						time.Sleep(10 * time.Millisecond)
					}
					if a, k := acked.Load(), nacked.Load(); a != int64(n) {
						t.Errorf("confirms for %d publishes: %d acks, %d nacks", n, a, k)
					}
					return
				default:
				}
				if err := ch.Publish("churn", "k.x", false, false, amqp091.Publishing{Body: []byte("m")}); err != nil {
					t.Error(err)
					return
				}
				n++
			}
		}()
	}
	for cIdx := 0; cIdx < 4; cIdx++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for round := 0; ; round++ {
				select {
				case <-stop:
					return
				default:
				}
				c, err := amqp091.Dial(url)
				if err != nil {
					t.Error(err)
					return
				}
				ch, _ := c.Channel()
				ch.Qos(5, 0, round%2 == 0)
				dl, err := ch.Consume(fmt.Sprintf("churn.%d", cIdx), "", false, false, false, false, nil)
				if err != nil {
					c.Close()
					continue
				}
				for i := 0; i < 50; i++ {
					select {
					case d := <-dl:
						switch i % 3 {
						case 0:
							d.Ack(false)
						case 1:
							d.Reject(true)
						case 2:
							d.Nack(true, false)
						}
					case <-time.After(200 * time.Millisecond):
					}
				}
				c.Close()
			}
		}()
	}
	wg.Add(1)
	go func() { // declare and delete consumed queues
		defer wg.Done()
		ch := channel091(t, dial(t, url))
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			q := fmt.Sprintf("churn.tmp.%d", i)
			ch.QueueDeclare(q, false, true, false, false, nil)
			ch.QueueBind(q, "k.*", "churn", false, nil)
			time.Sleep(20 * time.Millisecond)
			ch.QueueDelete(q, false, false, false)
		}
	}()
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown after churn: %v", err)
	}
}
