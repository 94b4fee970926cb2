package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"substrate/bench/internal/benchkit"
	"substrate/internal/rabbitmqtest"
)

const (
	rpcCallers  = 8               // the rpc8 load's concurrent callers
	callTimeout = 5 * time.Second // a call without its reply by then is an error
	topicSize   = 1024            // topic-throughput body size
	topicWindow = 500             // topic messages published but not yet consumed, at most
	rpcExpire   = "60000"         // expiration of RPC requests (oslo: rpc_response_timeout 60 s)
)

var rpcBody = []byte(`{"oslo.version": "2.0", "oslo.message": "{\"method\": \"ping\", \"args\": {}, \"namespace\": null, \"version\": \"6.0\"}"}`)

// caller is an RPC client (nova-conductor, say): its own connection,
// channel and reply queue reply_UUID (x-expires 1800000), consumed with
// manual acks.
type caller struct {
	conn    *amqp.Connection
	ch      *amqp.Channel
	queue   string
	replies <-chan amqp.Delivery
	n       int
}

func (f *fleet) newCaller() (*caller, error) {
	c, err := f.dial()
	if err != nil {
		return nil, fmt.Errorf("caller dial: %w", err)
	}
	ch, err := c.Channel()
	if err != nil {
		c.Close()
		return nil, err
	}
	q, err := ch.QueueDeclare("reply_"+rabbitmqtest.RandomHex(16), false, false, false, false, amqp.Table{"x-expires": int32(transientTTL)})
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("caller reply queue.declare: %w", err)
	}
	ds, err := ch.Consume(q.Name, "1", false, false, false, false, nil)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("caller basic.consume: %w", err)
	}
	return &caller{conn: c, ch: ch, queue: q.Name, replies: ds}, nil
}

// call publishes one request to the nova exchange, key compute.host0, and
// waits for the reply with its correlation id.
func (c *caller) call(ctx context.Context, e *errs) (time.Duration, error) {
	c.n++
	corr := strconv.Itoa(c.n)
	t0 := time.Now()
	err := c.ch.PublishWithContext(ctx, rpcExchange, rpcKey, false, false, amqp.Publishing{
		ContentType: "application/json", Type: typeRPC, ReplyTo: c.queue, CorrelationId: corr,
		Expiration: rpcExpire, Body: rpcBody,
	})
	if err != nil {
		return 0, fmt.Errorf("request publish: %w", err)
	}
	timer := time.NewTimer(callTimeout)
	defer timer.Stop()
	for {
		select {
		case d, ok := <-c.replies:
			if !ok {
				return 0, fmt.Errorf("reply consumer closed")
			}
			d.Ack(false)
			if d.CorrelationId != corr {
				e.Add("stale reply", fmt.Errorf("got %s, want %s", d.CorrelationId, corr))
				continue
			}
			return time.Since(t0), nil
		case <-timer.C:
			return 0, fmt.Errorf("no reply within %v: %w", callTimeout, errTimeout)
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// rpcResult is one RPC load's figures.
type rpcResult struct {
	P50, P99 float64 // ms
	Calls    float64 // calls/s over the measured calls
	// SrvUs is the server's CPU time per measured call (us); SrvCores and
	// CliCores the server's and this process's CPU time over the
	// measured calls' duration.
	SrvUs, SrvCores, CliCores float64
}

// runRPC runs the callers concurrently: warm calls each, then calls
// measured calls each; at most timeout in all. A failed call ends that
// caller's part and is reported as an error.
func runRPC(ctx context.Context, srvPid int, callers []*caller, warm, calls int, timeout time.Duration, e *errs) (rpcResult, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var res rpcResult
	run := func(n int, record bool) ([]time.Duration, time.Duration, error) {
		var mu sync.Mutex
		var all []time.Duration
		var first error
		var wg sync.WaitGroup
		t0 := time.Now()
		for _, c := range callers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var mine []time.Duration
				for i := 0; i < n; i++ {
					d, err := c.call(ctx, e)
					if err != nil {
						mu.Lock()
						if first == nil {
							first = err
						}
						mu.Unlock()
						return
					}
					mine = append(mine, d)
				}
				if record {
					mu.Lock()
					all = append(all, mine...)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		return all, time.Since(t0), first
	}
	if _, _, err := run(warm, false); err != nil {
		return res, fmt.Errorf("warm-up: %w", err)
	}
	srv, cli := benchkit.CPUTime(srvPid), benchkit.CPUTime(os.Getpid())
	all, el, err := run(calls, true)
	if err != nil {
		return res, err
	}
	srv, cli = benchkit.CPUTime(srvPid)-srv, benchkit.CPUTime(os.Getpid())-cli
	res.SrvUs = float64(srv/time.Microsecond) / float64(len(all))
	res.SrvCores, res.CliCores = srv.Seconds()/el.Seconds(), cli.Seconds()/el.Seconds()
	slices.Sort(all)
	res.P50 = benchkit.Ms(benchkit.Percentile(all, 0.50))
	res.P99 = benchkit.Ms(benchkit.Percentile(all, 0.99))
	res.Calls = float64(len(all)) / el.Seconds()
	return res, nil
}

// topicResult is one topic-throughput load's figures.
type topicResult struct {
	Rate     float64 // messages consumed per second
	SrvUs    float64 // server CPU time per message, microseconds
	SrvCores float64 // server CPU time / elapsed
	CliCores float64 // this process's CPU time / elapsed
}

// runTopic publishes n transient 1 KB messages from one publisher to the
// nova exchange with key compute.host0 (host 0's consumer acks each) with
// at most topicWindow unconsumed, and returns messages consumed per second
// from the first publish to the last delivery, and the CPU time the server
// and this process used meanwhile. A warm-up of warm messages runs first.
// At most timeout in all.
func runTopic(ctx context.Context, f *fleet, pub *amqp.Channel, warm, n int, timeout time.Duration) (topicResult, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	body := make([]byte, topicSize)
	for i := range body {
		body[i] = 'a' + byte(i%26)
	}
	one := func(n int) (time.Duration, error) {
		r := newRun(int64(n), topicWindow)
		f.topic.Store(r)
		t0 := time.Now()
		for i := 0; i < n; i++ {
			select {
			case r.sem <- struct{}{}:
			case <-ctx.Done():
				return 0, fmt.Errorf("published %d of %d, %d consumed: %w", i, n, r.n.Load(), ctx.Err())
			}
			err := pub.PublishWithContext(ctx, rpcExchange, rpcKey, false, false, amqp.Publishing{
				Type: typeTopic, MessageId: r.id, DeliveryMode: amqp.Transient, Body: body,
			})
			if err != nil {
				return 0, fmt.Errorf("publish: %w", err)
			}
		}
		select {
		case <-r.done:
			return time.Since(t0), nil
		case <-ctx.Done():
			return 0, fmt.Errorf("%d of %d consumed: %w", r.n.Load(), n, ctx.Err())
		}
	}
	var res topicResult
	if _, err := one(warm); err != nil {
		return res, fmt.Errorf("warm-up: %w", err)
	}
	srv, cli := benchkit.CPUTime(f.pid), benchkit.CPUTime(os.Getpid())
	el, err := one(n)
	if err != nil {
		return res, err
	}
	srv, cli = benchkit.CPUTime(f.pid)-srv, benchkit.CPUTime(os.Getpid())-cli
	res.Rate = float64(n) / el.Seconds()
	res.SrvUs = float64(srv/time.Microsecond) / float64(n)
	res.SrvCores, res.CliCores = srv.Seconds()/el.Seconds(), cli.Seconds()/el.Seconds()
	return res, nil
}

// fanResult is the fanout load's figures.
type fanResult struct {
	P50, Max   float64 // ms from publish until every queue's consumer had the message
	MsgsPerSec float64 // burst: messages published / time until every delivery arrived
	// SrvUs is the server's CPU time per delivery during the burst (us);
	// SrvCores and CliCores the server's and this process's CPU time over
	// the burst's duration.
	SrvUs, SrvCores, CliCores float64
}

// runFanout publishes to the compute_fanout exchange, which has one queue
// (and consumer) per host: rounds single messages, each waited for until
// all queues' consumers received it (after 2 unmeasured), then a burst of
// burst messages. At most timeout in all.
func runFanout(ctx context.Context, f *fleet, pub *amqp.Channel, queues, rounds, burst int, timeout time.Duration) (fanResult, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var res fanResult
	send := func(msgs int) (time.Duration, error) {
		r := newRun(int64(msgs*queues), 0)
		r.perHost, r.hosts = int32(msgs), make([]atomic.Int32, queues)
		f.fan.Store(r)
		t0 := time.Now()
		for i := 0; i < msgs; i++ {
			err := pub.PublishWithContext(ctx, fanExchange, "compute", false, false, amqp.Publishing{
				Type: typeFanout, MessageId: r.id, DeliveryMode: amqp.Transient, Body: rpcBody,
			})
			if err != nil {
				return 0, fmt.Errorf("publish: %w", err)
			}
		}
		select {
		case <-r.done:
			return time.Since(t0), nil
		case <-ctx.Done():
			return 0, fmt.Errorf("%d of %d deliveries: %w", r.n.Load(), r.want, ctx.Err())
		}
	}
	var lat []time.Duration
	for i := 0; i < rounds+2; i++ {
		d, err := send(1)
		if err != nil {
			return res, fmt.Errorf("round %d: %w", i+1, err)
		}
		if i >= 2 {
			lat = append(lat, d)
		}
	}
	slices.Sort(lat)
	res.P50, res.Max = benchkit.Ms(benchkit.Percentile(lat, 0.5)), benchkit.Ms(lat[len(lat)-1])
	srv, cli := benchkit.CPUTime(f.pid), benchkit.CPUTime(os.Getpid())
	el, err := send(burst)
	if err != nil {
		return res, fmt.Errorf("burst: %w", err)
	}
	srv, cli = benchkit.CPUTime(f.pid)-srv, benchkit.CPUTime(os.Getpid())-cli
	res.MsgsPerSec = float64(burst) / el.Seconds()
	res.SrvUs = float64(srv/time.Microsecond) / float64(burst*queues)
	res.SrvCores, res.CliCores = srv.Seconds()/el.Seconds(), cli.Seconds()/el.Seconds()
	return res, nil
}
