package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
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
	msgSize     = 1024             // throughput and backlog body size
	inFlight    = 200              // unconfirmed publishes per publisher
	prefetch    = 200              // basic.qos per consumer
	ackEvery    = 50               // consumers ack with multiple=true every ackEvery deliveries
	rpcTimeout  = 5 * time.Second  // a call without a reply by then is a timeout error
	replyExpire = 1800000          // x-expires of reply queues, ms (oslo.messaging's default)
	drainWait   = 10 * time.Second // publishers wait this long for outstanding confirms at the end
)

// errs counts a load's failures by kind (benchkit.Errs).
type errs = benchkit.Errs

func dial(b *broker) (*amqp.Connection, error) {
	return amqp.DialConfig(b.url(), amqp.Config{
		Heartbeat: 60 * time.Second,
		Locale:    "en_US",
		Dial:      amqp.DefaultDial(10 * time.Second),
	})
}

// watchClose counts a connection that closes while expected is false.
func watchClose(c *amqp.Connection, closing *atomic.Bool, e *errs, who string) {
	ch := c.NotifyClose(make(chan *amqp.Error, 1))
	go func() {
		if err, ok := <-ch; ok && err != nil && !closing.Load() {
			e.Add(who+" connection closed", err)
		}
	}()
}

// ---------------------------------------------------------------------------
// 1. throughput: transient (tpN) and persistent (ptpN)

type tpResult struct {
	MsgsPerSec float64 // consumed in the measured window
	PubPerSec  float64 // confirmed in the measured window
	P50ms      float64 // publish -> confirm latency of publishes confirmed in the window
	P99ms      float64
	Backlog    int     // messages left in the queue at the end
	PeakRSS    int64   // highest server VmRSS sampled while publishing, bytes
	SrvCPU     float64 // server CPU time in the window / window (cores)
	CliCPU     float64 // this process's CPU time in the window / window (cores)
	// Fsyncs is the server's fsyncs per second while the load ran (see
	// broker.fsyncs); FsyncNote says why it is missing when FsyncOK is false.
	Fsyncs    float64
	FsyncOK   bool
	FsyncNote string
	Errors    *errs
}

// tpConfig is one throughput load's shape.
type tpConfig struct {
	n          int  // publishers, and as many consumers
	persistent bool // durable queue and delivery_mode 2 (else non-durable, transient)
	// fsyncs reads the server's fsync counter around the measured window
	// (nil: not measured).
	fsyncs fsyncReader
}

// runThroughput runs cfg.n publishers and cfg.n consumers, each on its own
// connection, on one fresh queue through the default exchange. Publishers
// use publisher confirms with at most inFlight unconfirmed messages each;
// consumers use prefetch and multiple acks. The queue is deleted at the
// end. With cfg.fsyncs, the counter is read once the load is running (before
// the warm-up) and again after the measured window, before the load stops.
func runThroughput(ctx context.Context, b *broker, cfg tpConfig, warmup, dur time.Duration) (tpResult, error) {
	res := tpResult{Errors: &errs{}}
	e := res.Errors
	kind, mode := "tp", amqp.Transient
	if cfg.persistent {
		kind, mode = "ptp", amqp.Persistent
	}
	queue := "amqpbench." + kind + "." + rabbitmqtest.RandomHex(4)

	admin, err := dial(b)
	if err != nil {
		return res, fmt.Errorf("dial: %w", err)
	}
	defer admin.Close()
	ach, err := admin.Channel()
	if err != nil {
		return res, err
	}
	if _, err := ach.QueueDeclare(queue, cfg.persistent, false, false, false, nil); err != nil {
		return res, fmt.Errorf("queue.declare: %w", err)
	}

	var closing atomic.Bool
	var conns []*amqp.Connection
	defer func() {
		closing.Store(true)
		for _, c := range conns {
			c.Close()
		}
	}()
	var consumed, confirmed atomic.Int64
	var measuring atomic.Bool
	stopPub := make(chan struct{})
	var pubWG, conWG sync.WaitGroup
	body := testBody()

	for i := 0; i < cfg.n; i++ {
		c, err := dial(b)
		if err != nil {
			return res, fmt.Errorf("consumer dial: %w", err)
		}
		conns = append(conns, c)
		watchClose(c, &closing, e, "consumer")
		if err := startConsumer(c, queue, &consumed, &closing, e, &conWG); err != nil {
			return res, err
		}
	}

	var lats []*latencies
	for i := 0; i < cfg.n; i++ {
		c, err := dial(b)
		if err != nil {
			return res, fmt.Errorf("publisher dial: %w", err)
		}
		conns = append(conns, c)
		watchClose(c, &closing, e, "publisher")
		p := &publisher{queue: queue, mode: mode, body: body, stop: stopPub,
			confirmed: &confirmed, lat: newLatencies(&measuring), e: e}
		if err := p.start(ctx, c, &pubWG); err != nil {
			return res, err
		}
		lats = append(lats, p.lat)
	}

	// Sample the server's RSS: a broker without publisher flow control
	// lets the queue (and its memory) grow while consumers lag.
	sampleDone := make(chan struct{})
	go func() {
		defer close(sampleDone)
		pid := b.pid()
		for {
			res.PeakRSS = max(res.PeakRSS, benchkit.RSS(pid))
			select {
			case <-stopPub:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()

	var f0 fsyncSample
	var ferr error
	if cfg.fsyncs != nil {
		f0, ferr = cfg.fsyncs(ctx)
	}
	sleepCtx(ctx, warmup)
	pid := b.pid()
	s0, k0 := benchkit.CPUTime(pid), benchkit.CPUTime(os.Getpid())
	c0, p0, t0 := consumed.Load(), confirmed.Load(), time.Now()
	measuring.Store(true)
	sleepCtx(ctx, dur)
	measuring.Store(false)
	c1, p1, el := consumed.Load(), confirmed.Load(), time.Since(t0)
	res.SrvCPU, res.CliCPU = (benchkit.CPUTime(pid)-s0).Seconds()/el.Seconds(), (benchkit.CPUTime(os.Getpid())-k0).Seconds()/el.Seconds()
	if cfg.fsyncs != nil && ferr == nil {
		var f1 fsyncSample
		if f1, ferr = cfg.fsyncs(ctx); ferr == nil {
			res.Fsyncs, ferr = f1.rateSince(f0)
		}
	}
	switch {
	case cfg.fsyncs == nil:
		res.FsyncNote = "not measured"
	case ferr != nil:
		res.FsyncNote = ferr.Error()
	default:
		res.FsyncOK = true
	}
	close(stopPub)
	pubWG.Wait()
	<-sampleDone
	res.MsgsPerSec = float64(c1-c0) / el.Seconds()
	res.PubPerSec = float64(p1-p0) / el.Seconds()
	all := mergeLatencies(lats)
	res.P50ms = float64(all.ValueAtQuantile(50)) / 1000
	res.P99ms = float64(all.ValueAtQuantile(99)) / 1000

	closing.Store(true)
	for _, c := range conns {
		c.Close()
	}
	conWG.Wait()
	// Unacked messages go back to the queue when consumers close.
	if q, err := ach.QueueDelete(queue, false, false, false); err != nil {
		e.Add("queue.delete", err)
	} else {
		res.Backlog = q
	}
	return res, ctx.Err()
}

// testBody returns a msgSize body of letters.
func testBody() []byte {
	body := make([]byte, msgSize)
	for i := range body {
		body[i] = byte('a' + i%26)
	}
	return body
}

// startConsumer is the load's draining consumer (benchkit.Drain).
func startConsumer(c *amqp.Connection, queue string, consumed *atomic.Int64, closing *atomic.Bool, e *errs, wg *sync.WaitGroup) error {
	return benchkit.Drain{Prefetch: prefetch, AckEvery: ackEvery, BodySize: msgSize}.Start(c, queue, consumed, closing, e, wg)
}

// latencies is one publisher's publish -> confirm histogram, recorded while
// measuring is set (µs, 1 µs to 2 minutes).
type latencies struct {
	mu        sync.Mutex
	h         *hdrhistogram.Histogram
	measuring *atomic.Bool
}

func newLatencies(measuring *atomic.Bool) *latencies {
	return &latencies{h: hdrhistogram.New(1, int64(2*time.Minute/time.Microsecond), 3), measuring: measuring}
}

func (l *latencies) record(d time.Duration) {
	if !l.measuring.Load() {
		return
	}
	l.mu.Lock()
	l.h.RecordValue(max(1, int64(d/time.Microsecond)))
	l.mu.Unlock()
}

func mergeLatencies(ls []*latencies) *hdrhistogram.Histogram {
	all := hdrhistogram.New(1, int64(2*time.Minute/time.Microsecond), 3)
	for _, l := range ls {
		l.mu.Lock()
		all.Merge(l.h)
		l.mu.Unlock()
	}
	return all
}

// publisher publishes body to queue through the default exchange with
// publisher confirms and at most inFlight unconfirmed messages, until stop
// is closed or claim (if set) returns false. Confirms arrive one per
// delivery tag in order (amqp091-go resequences multiple acks), so the
// publish times wait in a FIFO for theirs.
type publisher struct {
	queue     string
	mode      uint8 // amqp.Transient or amqp.Persistent
	body      []byte
	stop      <-chan struct{}
	claim     func() bool // nil: publish until stop
	confirmed *atomic.Int64
	lat       *latencies // nil: no latency recorded
	e         *errs
}

// start opens the channel, selects confirms and starts publishing in a
// goroutine; wg is done once the outstanding confirms settled (or
// drainWait passed) after the last publish.
func (p *publisher) start(ctx context.Context, c *amqp.Connection, wg *sync.WaitGroup) error {
	ch, err := c.Channel()
	if err != nil {
		return err
	}
	if err := ch.Confirm(false); err != nil {
		return fmt.Errorf("confirm.select: %w", err)
	}
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, inFlight+1))
	tokens := make(chan struct{}, inFlight)
	sent := make(chan time.Time, inFlight) // publish times of unconfirmed messages, in order
	e := p.e
	wg.Add(1)
	go func() {
		defer wg.Done()
		var published int64
		done := make(chan struct{})
		go func() { // settles confirms, one per delivery tag, in order
			defer close(done)
			for cf := range confirms {
				t := <-sent
				if !cf.Ack {
					e.Add("nack", nil)
				} else {
					p.confirmed.Add(1)
					if p.lat != nil {
						p.lat.record(time.Since(t))
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
			if p.claim != nil && !p.claim() {
				<-tokens
				break
			}
			sent <- time.Now()
			err := ch.PublishWithContext(ctx, "", p.queue, false, false, amqp.Publishing{
				DeliveryMode: p.mode, ContentType: "application/octet-stream", Body: p.body,
			})
			if err != nil {
				// The channel is unusable; its confirms will not come.
				e.Add("publish", err)
				<-tokens
				break
			}
			published++
		}
		// Wait for outstanding confirms (tokens drain as they settle).
		deadline := time.After(drainWait)
		for len(tokens) > 0 {
			select {
			case <-deadline:
				e.Add("confirm timeout", fmt.Errorf("%d of %d publishes unconfirmed %v after the end", len(tokens), published, drainWait))
				return
			case <-done:
				if len(tokens) > 0 {
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
// 2. RPC round trip, shaped like oslo.messaging

type rpcResult struct {
	CallsPerSec float64
	P50ms       float64
	P99ms       float64
	// SrvUs is the server's CPU time per measured call (us); SrvCores
	// and CliCores the server's and this process's CPU time over the
	// measured window.
	SrvUs, SrvCores, CliCores float64
	Errors                    *errs
}

// rpcExpiration is the expiration of a request: oslo.messaging's
// rpc_response_timeout (60 s) in ms, as topic_send sets it on calls.
const rpcExpiration = "60000"

// oslo publishes every message as kombu does: JSON, utf-8, delivery_mode 2,
// an empty headers table and priority 0 (docs: amqp-openstack.md 2.5).
func osloPublishing(body []byte) amqp.Publishing {
	return amqp.Publishing{ContentType: "application/json", ContentEncoding: "utf-8", Headers: amqp.Table{},
		DeliveryMode: amqp.Persistent, Priority: 0, Body: body}
}

// runRPC runs one RPC server and `callers` closed-loop callers in
// oslo.messaging's pattern (amqp-openstack.md section 3): the server
// consumes (manual acks, no prefetch limit: oslo's default) from a queue
// bound to a topic exchange; each caller, on its own connection with its
// own reply queue (x-expires 1800000, consumed with manual acks),
// publishes a request to the topic exchange with expiration 60000 and
// waits for its publisher confirm, then for the reply. The server acks
// each request on receipt, then publishes the reply mandatory to the
// default exchange, keyed by the caller's reply queue, and waits for its
// confirm; the caller acks the reply. Both publishing channels are in
// confirm mode, as oslo's. The correlation id travels in the AMQP
// property (oslo puts it in the body; the broker's work is the same).
// Exchange and queues are deleted at the end.
func runRPC(ctx context.Context, b *broker, callers int, warmup, dur time.Duration) (rpcResult, error) {
	res := rpcResult{Errors: &errs{}}
	e := res.Errors
	tag := rabbitmqtest.RandomHex(4)
	exchange, queue, key := "amqpbench_rpc_"+tag, "amqpbench_rpc_server_"+tag, "amqpbench.server"

	var closing atomic.Bool
	var conns []*amqp.Connection
	defer func() {
		closing.Store(true)
		for _, c := range conns {
			c.Close()
		}
	}()

	// Server.
	sc, err := dial(b)
	if err != nil {
		return res, fmt.Errorf("server dial: %w", err)
	}
	conns = append(conns, sc)
	watchClose(sc, &closing, e, "server")
	sch, err := sc.Channel()
	if err != nil {
		return res, err
	}
	if err := sch.ExchangeDeclare(exchange, "topic", false, false, false, false, nil); err != nil {
		return res, fmt.Errorf("exchange.declare: %w", err)
	}
	if _, err := sch.QueueDeclare(queue, false, false, false, false, nil); err != nil {
		return res, fmt.Errorf("queue.declare: %w", err)
	}
	if err := sch.QueueBind(queue, key, exchange, false, nil); err != nil {
		return res, fmt.Errorf("queue.bind: %w", err)
	}
	if err := sch.Confirm(false); err != nil {
		return res, fmt.Errorf("confirm.select: %w", err)
	}
	returns := sch.NotifyReturn(make(chan amqp.Return, 16))
	go func() {
		for r := range returns {
			if !closing.Load() {
				e.Add("reply returned", fmt.Errorf("%d %s", r.ReplyCode, r.ReplyText))
			}
		}
	}()
	reqs, err := sch.Consume(queue, "", false, false, false, false, nil)
	if err != nil {
		return res, fmt.Errorf("basic.consume: %w", err)
	}
	go func() {
		for d := range reqs {
			if err := d.Ack(false); err != nil && !closing.Load() {
				e.Add("server ack", err)
			}
			p := osloPublishing(d.Body)
			p.CorrelationId = d.CorrelationId
			dc, err := sch.PublishWithDeferredConfirmWithContext(ctx, "", d.ReplyTo, true, false, p)
			if err == nil {
				var ok bool
				ok, err = dc.WaitContext(ctx)
				if err == nil && !ok {
					err = errors.New("nacked")
				}
			}
			if err != nil && !closing.Load() {
				e.Add("reply publish", err)
			}
		}
	}()

	// Callers.
	var measuring atomic.Bool
	var calls atomic.Int64
	hists := make([]*hdrhistogram.Histogram, callers)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < callers; i++ {
		c, err := dial(b)
		if err != nil {
			return res, fmt.Errorf("caller dial: %w", err)
		}
		conns = append(conns, c)
		watchClose(c, &closing, e, "caller")
		ch, err := c.Channel()
		if err != nil {
			return res, err
		}
		if err := ch.Confirm(false); err != nil {
			return res, fmt.Errorf("caller confirm.select: %w", err)
		}
		rq, err := ch.QueueDeclare("amqpbench_reply_"+tag+"_"+strconv.Itoa(i), false, false, false, false,
			amqp.Table{"x-expires": int32(replyExpire)})
		if err != nil {
			return res, fmt.Errorf("reply queue.declare: %w", err)
		}
		replies, err := ch.Consume(rq.Name, "", false, false, false, false, nil)
		if err != nil {
			return res, fmt.Errorf("reply basic.consume: %w", err)
		}
		h := hdrhistogram.New(1, int64(rpcTimeout/time.Microsecond)*2, 3)
		hists[i] = h
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			body := []byte(`{"oslo.version": "2.0", "oslo.message": "{\"method\": \"ping\", \"args\": {}}"}`)
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				corr := fmt.Sprintf("%d-%d", i, n)
				p := osloPublishing(body)
				p.ReplyTo, p.CorrelationId, p.Expiration = rq.Name, corr, rpcExpiration
				t0 := time.Now()
				dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, exchange, key, false, false, p)
				if err != nil {
					e.Add("request publish", err)
					return
				}
				if ok, err := dc.WaitContext(ctx); err != nil || !ok {
					e.Add("request confirm", fmt.Errorf("acked %v: %v", ok, err))
					return
				}
				timeout := time.After(rpcTimeout)
			wait:
				for {
					select {
					case d, ok := <-replies:
						if !ok {
							e.Add("reply consumer closed", nil)
							return
						}
						d.Ack(false)
						if d.CorrelationId != corr {
							// A late reply to a timed-out call.
							e.Add("stale reply", fmt.Errorf("got %s, want %s", d.CorrelationId, corr))
							continue
						}
						break wait
					case <-timeout:
						e.Add("timeout", fmt.Errorf("no reply within %v", rpcTimeout))
						break wait
					case <-stop:
						return
					}
				}
				if measuring.Load() {
					h.RecordValue(int64(time.Since(t0) / time.Microsecond))
					calls.Add(1)
				}
			}
		}(i)
	}

	sleepCtx(ctx, warmup)
	srv0, cli0 := benchkit.CPUTime(b.pid()), benchkit.CPUTime(os.Getpid())
	measuring.Store(true)
	t0 := time.Now()
	sleepCtx(ctx, dur)
	measuring.Store(false)
	n, el := calls.Load(), time.Since(t0)
	srv, cli := benchkit.CPUTime(b.pid())-srv0, benchkit.CPUTime(os.Getpid())-cli0
	close(stop)
	wg.Wait()

	all := hdrhistogram.New(1, int64(rpcTimeout/time.Microsecond)*2, 3)
	for _, h := range hists {
		all.Merge(h)
	}
	res.CallsPerSec = float64(n) / el.Seconds()
	res.P50ms = float64(all.ValueAtQuantile(50)) / 1000
	res.P99ms = float64(all.ValueAtQuantile(99)) / 1000
	if n > 0 {
		res.SrvUs = float64(srv/time.Microsecond) / float64(n)
	}
	res.SrvCores, res.CliCores = srv.Seconds()/el.Seconds(), cli.Seconds()/el.Seconds()

	// Clean up on a connection of its own once the others are closed:
	// the server's channel may still be publishing a late reply.
	closing.Store(true)
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	cc, err := dial(b)
	if err != nil {
		return res, fmt.Errorf("cleanup dial: %w", err)
	}
	defer cc.Close()
	cch, err := cc.Channel()
	if err != nil {
		return res, err
	}
	del := []string{queue}
	for i := 0; i < callers; i++ {
		del = append(del, "amqpbench_reply_"+tag+"_"+strconv.Itoa(i))
	}
	for _, q := range del {
		if _, err := cch.QueueDelete(q, false, false, false); err != nil {
			e.Add("queue.delete", err)
		}
	}
	if err := cch.ExchangeDelete(exchange, false, false); err != nil {
		e.Add("exchange.delete", err)
	}
	return res, ctx.Err()
}

// ---------------------------------------------------------------------------
// 3. RSS per idle connection

type connResult struct {
	PerConnKiB  float64 // (RSS after - RSS before) / conns
	ConnsPerSec float64 // opening rate (connection + one channel)
	Errors      *errs
}

// runConns opens n connections, each with one open channel, waits for the
// server to settle, measures its RSS against the RSS before, and closes
// them all.
func runConns(ctx context.Context, b *broker, n int, settle time.Duration) (connResult, error) {
	res := connResult{Errors: &errs{}}
	e := res.Errors
	pid := b.pid()
	sleepCtx(ctx, settle)
	before := benchkit.RSS(pid)

	var closing atomic.Bool
	conns := make([]*amqp.Connection, n)
	defer func() {
		closing.Store(true)
		var wg sync.WaitGroup
		sem := make(chan struct{}, 32)
		for _, c := range conns {
			if c == nil {
				continue
			}
			wg.Add(1)
			sem <- struct{}{}
			go func() { defer wg.Done(); c.Close(); <-sem }()
		}
		wg.Wait()
	}()
	t0 := time.Now()
	var wg sync.WaitGroup
	var next atomic.Int64
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				c, err := dial(b)
				if err != nil {
					e.Add("dial", err)
					continue
				}
				watchClose(c, &closing, e, "idle")
				if _, err := c.Channel(); err != nil {
					e.Add("channel.open", err)
				}
				conns[i] = c
			}
		}()
	}
	wg.Wait()
	res.ConnsPerSec = float64(n) / time.Since(t0).Seconds()
	sleepCtx(ctx, settle)
	after := benchkit.RSS(pid)
	if before == 0 || after == 0 {
		return res, fmt.Errorf("cannot read VmRSS of PID %d", pid)
	}
	res.PerConnKiB = float64(after-before) / float64(n) / 1024
	return res, ctx.Err()
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
