package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	amqp "github.com/rabbitmq/amqp091-go"

	"substrate/bench/internal/benchkit"
	"substrate/internal/rabbitmqtest"
)

// Load shapes.
const (
	msgSize      = 1024             // body size
	prefetch     = 1000             // the draining consumer's basic.qos
	ackEvery     = 100              // it acks with multiple=true every ackEvery deliveries
	drainWait    = 10 * time.Second // publishers wait this long for outstanding confirms at the end
	dialTimeout  = 2 * time.Second
	foWindow     = 16                      // failover publishers' unconfirmed publishes
	foInterval   = 2 * time.Millisecond    // and their pace (at most 500 msgs/s each)
	foSteady     = 1500 * time.Millisecond // confirms flowing this long before the kill
	foDeadline   = 60 * time.Second        // kill -> confirmed publish, at most
	setupTimeout = 30 * time.Second        // declaring a queue, opening a load's connections
)

// quorumArgs declare a quorum queue replicated on all three nodes, its
// leader on the node the declaring client is connected to.
var quorumArgs = amqp.Table{
	"x-queue-type":                "quorum",
	"x-quorum-initial-group-size": int32(3),
	"x-queue-leader-locator":      "client-local",
}

// errs counts a load's failures by kind (benchkit.Errs).
type errs = benchkit.Errs

func dial(addr string) (*amqp.Connection, error) {
	return amqp.DialConfig("amqp://guest:guest@"+addr+"/", amqp.Config{
		Heartbeat: 10 * time.Second,
		Locale:    "en_US",
		Dial:      amqp.DefaultDial(dialTimeout),
	})
}

// withTimeout runs f, closing c if it has not returned within d (amqp091
// calls have no timeouts of their own), and returns f's error.
func withTimeout(c *amqp.Connection, d time.Duration, f func() error) error {
	t := time.AfterFunc(d, func() { c.Close() })
	err := f()
	if !t.Stop() && err != nil {
		return fmt.Errorf("%w (closed after %v)", err, d)
	}
	return err
}

func testBody() []byte {
	body := make([]byte, msgSize)
	for i := range body {
		body[i] = byte('a' + i%26)
	}
	return body
}

// ---------------------------------------------------------------------------
// throughput: persistent publishes with confirms into a quorum queue

type tpResult struct {
	PubPerSec  float64 // confirmed per second in the measured window
	ConPerSec  float64 // consumed per second in the measured window
	P50ms      float64 // publish -> confirm latency of publishes confirmed in the window
	P99ms      float64
	Backlog    int // messages left in the queue at the end
	Errors     *errs
	Unfinished int64 // publishes still unconfirmed drainWait after the end
}

// runThroughput declares a fresh quorum queue through declAddr (its leader
// lands there), then runs nPub publishers (persistent msgSize bodies,
// confirms, window unconfirmed each) and one draining consumer, each on its
// own connection to clientAddr, for warmup then dur. The queue is deleted at
// the end.
func runThroughput(ctx context.Context, declAddr, clientAddr string, nPub, window int, warmup, dur time.Duration) (tpResult, error) {
	res := tpResult{Errors: &errs{}}
	e := res.Errors
	queue := "clusterbench.tp." + rabbitmqtest.RandomHex(4)

	admin, err := dial(declAddr)
	if err != nil {
		return res, fmt.Errorf("dial %s: %w", declAddr, err)
	}
	defer admin.Close()
	var ach *amqp.Channel
	err = withTimeout(admin, setupTimeout, func() error {
		var err error
		if ach, err = admin.Channel(); err != nil {
			return err
		}
		_, err = ach.QueueDeclare(queue, true, false, false, false, quorumArgs)
		return err
	})
	if err != nil {
		return res, fmt.Errorf("queue.declare on %s: %w", declAddr, err)
	}

	var closing atomic.Bool
	var connMu sync.Mutex
	var conns []*amqp.Connection
	closeAll := func() {
		closing.Store(true)
		connMu.Lock()
		defer connMu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	}
	defer closeAll()
	open := func(who string) (*amqp.Connection, error) {
		c, err := dial(clientAddr)
		if err != nil {
			return nil, fmt.Errorf("%s dial %s: %w", who, clientAddr, err)
		}
		connMu.Lock()
		conns = append(conns, c)
		connMu.Unlock()
		ch := c.NotifyClose(make(chan *amqp.Error, 1))
		go func() {
			if err, ok := <-ch; ok && err != nil && !closing.Load() {
				e.Add(who+" connection closed", err)
			}
		}()
		return c, nil
	}

	var consumed, confirmed atomic.Int64
	var measuring atomic.Bool
	stopPub := make(chan struct{})
	var pubWG, conWG sync.WaitGroup
	body := testBody()

	cc, err := open("consumer")
	if err != nil {
		return res, err
	}
	if err := withTimeout(cc, setupTimeout, func() error {
		return startConsumer(cc, queue, &consumed, &closing, e, &conWG)
	}); err != nil {
		return res, err
	}
	var lats []*latencies
	var pubs []*publisher
	for range nPub {
		c, err := open("publisher")
		if err != nil {
			close(stopPub)
			return res, err
		}
		p := &publisher{queue: queue, body: body, window: window, stop: stopPub,
			confirmed: &confirmed, lat: newLatencies(&measuring), e: e}
		if err := withTimeout(c, setupTimeout, func() error { return p.start(ctx, c, &pubWG) }); err != nil {
			close(stopPub)
			return res, err
		}
		lats = append(lats, p.lat)
		pubs = append(pubs, p)
	}

	sleepCtx(ctx, warmup)
	c0, p0, t0 := consumed.Load(), confirmed.Load(), time.Now()
	measuring.Store(true)
	sleepCtx(ctx, dur)
	measuring.Store(false)
	c1, p1, el := consumed.Load(), confirmed.Load(), time.Since(t0)
	close(stopPub)
	pubWG.Wait()
	res.PubPerSec = float64(p1-p0) / el.Seconds()
	res.ConPerSec = float64(c1-c0) / el.Seconds()
	all := hdrhistogram.New(1, int64(2*time.Minute/time.Microsecond), 3)
	for _, l := range lats {
		all.Merge(l.h)
	}
	res.P50ms = float64(all.ValueAtQuantile(50)) / 1000
	res.P99ms = float64(all.ValueAtQuantile(99)) / 1000
	for _, p := range pubs {
		res.Unfinished += p.unfinished.Load()
	}

	closeAll()
	conWG.Wait()
	err = withTimeout(admin, setupTimeout, func() error {
		n, err := ach.QueueDelete(queue, false, false, false)
		res.Backlog = n
		return err
	})
	if err != nil {
		e.Add("queue.delete", err)
	}
	return res, ctx.Err()
}

// startConsumer is the load's draining consumer (benchkit.Drain).
func startConsumer(c *amqp.Connection, queue string, consumed *atomic.Int64, closing *atomic.Bool, e *errs, wg *sync.WaitGroup) error {
	return benchkit.Drain{Prefetch: prefetch, AckEvery: ackEvery, BodySize: msgSize}.Start(c, queue, consumed, closing, e, wg)
}

// latencies is one publisher's publish -> confirm histogram (µs), recorded
// while measuring is set.
type latencies struct {
	h         *hdrhistogram.Histogram
	measuring *atomic.Bool
}

func newLatencies(measuring *atomic.Bool) *latencies {
	return &latencies{h: hdrhistogram.New(1, int64(2*time.Minute/time.Microsecond), 3), measuring: measuring}
}

// publisher publishes persistent bodies to queue with confirms and at most
// window unconfirmed, until stop is closed. amqp091-go delivers confirms
// one per delivery tag, in order, so publish times wait in a FIFO.
type publisher struct {
	queue      string
	body       []byte
	window     int
	stop       <-chan struct{}
	confirmed  *atomic.Int64
	lat        *latencies // written only by the confirm goroutine; read after wg
	e          *errs
	unfinished atomic.Int64
}

func (p *publisher) start(ctx context.Context, c *amqp.Connection, wg *sync.WaitGroup) error {
	ch, err := c.Channel()
	if err != nil {
		return err
	}
	if err := ch.Confirm(false); err != nil {
		return fmt.Errorf("confirm.select: %w", err)
	}
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, p.window+1))
	tokens := make(chan struct{}, p.window)
	sent := make(chan time.Time, p.window)
	e := p.e
	wg.Add(1)
	go func() {
		defer wg.Done()
		done := make(chan struct{})
		go func() {
			defer close(done)
			for cf := range confirms {
				t := <-sent
				if !cf.Ack {
					e.Add("nack", nil)
				} else {
					p.confirmed.Add(1)
					if p.lat.measuring.Load() {
						p.lat.h.RecordValue(max(1, int64(time.Since(t)/time.Microsecond)))
					}
				}
				<-tokens
			}
		}()
	loop:
		for {
			select {
			case <-p.stop:
				break loop
			case tokens <- struct{}{}:
			}
			sent <- time.Now()
			err := ch.PublishWithContext(ctx, "", p.queue, false, false, amqp.Publishing{
				DeliveryMode: amqp.Persistent, ContentType: "application/octet-stream", Body: p.body,
			})
			if err != nil {
				e.Add("publish", err)
				<-tokens
				break
			}
		}
		deadline := time.After(drainWait)
		for len(tokens) > 0 {
			select {
			case <-deadline:
				p.unfinished.Store(int64(len(tokens)))
				e.Add("confirm timeout", fmt.Errorf("%d publishes unconfirmed %v after the end", len(tokens), drainWait))
				return
			case <-done:
				if len(tokens) > 0 {
					p.unfinished.Store(int64(len(tokens)))
					e.Add("confirm timeout", errors.New("channel closed with publishes unconfirmed"))
				}
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	return nil
}

// ---------------------------------------------------------------------------
// failover: kill -> first confirmed publish

// foPublisher publishes with confirms at a steady pace, reconnecting
// through the nodes' addresses (starting from addrs[0]) whenever its
// connection fails or a publish is nacked. It records when the first publish made at or after
// killedAt was confirmed.
type foPublisher struct {
	addrs    []string
	queue    string
	killedAt atomic.Pointer[time.Time]
	steady   chan struct{} // closed at the first confirm
	after    chan struct{} // closed at the first confirm of a post-kill publish
	firstOK  time.Time     // set before after is closed
	e        *errs
	nacks    atomic.Int64
	nackMu   sync.Mutex
	nackSpan [2]time.Time // first and last nack
	lost     atomic.Int64 // publishes unconfirmed when their connection failed
	reconns  atomic.Int64
	// nackReconns counts reconnections after a nack (a nack ends the
	// connection, the rest of its window counts as lost).
	nackReconns atomic.Int64
	mu          sync.Mutex
	conn        *amqp.Connection // the current connection, closed on stop
	stopped     atomic.Bool
	lastErr     atomic.Value // string
	connNode    atomic.Int64 // index into addrs of the current connection
}

func newFoPublisher(addrs []string, queue string) *foPublisher {
	return &foPublisher{addrs: addrs, queue: queue, steady: make(chan struct{}), after: make(chan struct{}), e: &errs{}}
}

func (p *foPublisher) stop() {
	p.stopped.Store(true)
	p.mu.Lock()
	if p.conn != nil {
		p.conn.Close()
	}
	p.mu.Unlock()
}

func (p *foPublisher) run() {
	body := testBody()
	var steadyOnce, afterOnce sync.Once
	for k := 0; !p.stopped.Load(); k++ {
		if k > 0 {
			p.reconns.Add(1)
			time.Sleep(20 * time.Millisecond)
		}
		i := k % len(p.addrs)
		c, err := dial(p.addrs[i])
		if err != nil {
			p.lastErr.Store(err.Error())
			continue
		}
		p.mu.Lock()
		p.conn = c
		p.mu.Unlock()
		if p.stopped.Load() {
			c.Close()
			return
		}
		p.connNode.Store(int64(i))
		var ch *amqp.Channel
		err = withTimeout(c, 10*time.Second, func() error {
			var err error
			if ch, err = c.Channel(); err != nil {
				return err
			}
			if err = ch.Confirm(false); err != nil {
				return err
			}
			_, err = ch.QueueDeclare(p.queue, true, false, false, false, quorumArgs)
			return err
		})
		if err != nil {
			p.lastErr.Store(err.Error())
			c.Close()
			continue
		}
		confirms := ch.NotifyPublish(make(chan amqp.Confirmation, foWindow+1))
		closed := c.NotifyClose(make(chan *amqp.Error, 1))
		var sent []time.Time // publish times of unconfirmed publishes, in order
		next := time.Now()
		for alive := true; alive && !p.stopped.Load(); {
			var wait <-chan time.Time
			if len(sent) < foWindow {
				wait = time.After(time.Until(next))
			}
			select {
			case <-wait:
				t := time.Now()
				if err := ch.Publish("", p.queue, false, false, amqp.Publishing{DeliveryMode: amqp.Persistent, Body: body}); err != nil {
					p.lastErr.Store(err.Error())
					alive = false
					break
				}
				sent = append(sent, t)
				next = t.Add(foInterval)
			case cf, ok := <-confirms:
				if !ok || len(sent) == 0 {
					alive = false
					break
				}
				t := sent[0]
				sent = sent[1:]
				if !cf.Ack {
					p.nacks.Add(1)
					now := time.Now()
					p.nackMu.Lock()
					if p.nackSpan[0].IsZero() {
						p.nackSpan[0] = now
					}
					p.nackSpan[1] = now
					p.nackMu.Unlock()
					// The broker could not take it: start over on a
					// new connection, as a client that republishes would.
					p.nackReconns.Add(1)
					alive = false
					break
				}
				steadyOnce.Do(func() { close(p.steady) })
				if k := p.killedAt.Load(); k != nil && !t.Before(*k) {
					afterOnce.Do(func() { p.firstOK = time.Now(); close(p.after) })
				}
			case err := <-closed:
				if err != nil {
					p.lastErr.Store(err.Error())
				}
				alive = false
			}
		}
		if !p.stopped.Load() {
			p.lost.Add(int64(len(sent)))
		}
		c.Close()
	}
}
