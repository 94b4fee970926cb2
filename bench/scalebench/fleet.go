package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"substrate/bench/internal/benchkit"
	"substrate/internal/rabbitmqtest"
)

// The queues one host (one connection, one channel) declares and consumes
// from, the way oslo.messaging's rabbit driver declares them for a compute
// node running nova-compute and a Neutron agent (impl_rabbit.py's
// declare_topic_consumer, declare_fanout_consumer, declare_direct_consumer;
// kombu declares the exchange, then the queue, then binds it, per consumer):
//
//   - topic: queue TOPIC.HOST bound with key TOPIC.HOST to the service's
//     topic exchange (control_exchange: "nova", "neutron"); exchange and
//     queue durable=false, auto_delete=false (amqp_durable_queues and
//     amqp_auto_delete default to false).
//   - fanout: queue TOPIC_fanout_UUID bound with key TOPIC to the fanout
//     exchange TOPIC_fanout (auto_delete=true); queue durable=false,
//     auto_delete=false, x-expires 1800000 (rabbit_transient_queues_ttl).
//   - reply: queue reply_UUID on the default exchange, durable=false,
//     auto_delete=false, x-expires 1800000; RPC replies are published to
//     the default exchange with it as routing key, mandatory.
//
// Three topic, five fanout and two reply queues: 10 per host.
type qkind int

const (
	topicQ qkind = iota
	fanoutQ
	replyQ
)

type qspec struct {
	kind     qkind
	exchange string // topic: the control exchange; fanout: TOPIC_fanout; reply: ""
	topic    string // topic: "compute" (queue and key compute.HOST); fanout: the key
}

var hostQueues = []qspec{
	{topicQ, "nova", "compute"},
	{fanoutQ, "compute_fanout", "compute"},
	{replyQ, "", ""},
	{topicQ, "neutron", "q-agent-notifier-port-update"},
	{fanoutQ, "q-agent-notifier-port-update_fanout", "q-agent-notifier-port-update"},
	{fanoutQ, "q-agent-notifier-port-delete_fanout", "q-agent-notifier-port-delete"},
	{fanoutQ, "q-agent-notifier-network-update_fanout", "q-agent-notifier-network-update"},
	{fanoutQ, "q-agent-notifier-security_group-update_fanout", "q-agent-notifier-security_group-update"},
	{topicQ, "neutron", "l3_agent"},
	{replyQ, "", ""},
}

const (
	transientTTL = 1800000 // x-expires of fanout and reply queues, ms (oslo's default)
	heartbeat    = 60 * time.Second
	rpcExchange  = "nova"           // RPC and topic-throughput target: host 0's compute queue
	rpcKey       = "compute.host0"  // its routing key and queue name
	fanExchange  = "compute_fanout" // the fanout load's exchange: one queue per host
	workers      = 16               // connections opened / hosts declared at once
)

// Message types (the AMQP type property) the consumers act on.
const (
	typeRPC    = "rpc"    // reply to reply_to with the correlation id
	typeTopic  = "topic"  // count for the topic-throughput run named by message_id
	typeFanout = "fanout" // count for the fanout run named by message_id
)

// errs counts a load's failures by kind (benchkit.Errs).
type errs = benchkit.Errs

// countRun counts deliveries of one topic or fanout run: messages carry
// its id as message_id; done closes when want have arrived. A token is
// taken from sem (if any) per delivery: the publisher's window. With
// perHost, each host (each queue of a fanout) must receive exactly
// perHost messages: one more is reported as a duplicate.
type countRun struct {
	id      string
	want    int64
	n       atomic.Int64
	done    chan struct{}
	sem     chan struct{}
	perHost int32
	hosts   []atomic.Int32
}

func newRun(want int64, window int) *countRun {
	r := &countRun{id: rabbitmqtest.RandomHex(6), want: want, done: make(chan struct{})}
	if window > 0 {
		r.sem = make(chan struct{}, window)
	}
	return r
}

// got counts a delivery to host h; false means one too many.
func (r *countRun) got(h int) bool {
	if r.sem != nil {
		select {
		case <-r.sem:
		default:
		}
	}
	if r.hosts != nil && (h >= len(r.hosts) || r.hosts[h].Add(1) > r.perHost) {
		return false
	}
	n := r.n.Add(1)
	if n == r.want {
		close(r.done)
	}
	return n <= r.want
}

// fleet is the connections, queues and consumers of one target.
type fleet struct {
	b       *broker
	pid     int // the server's (for its CPU time)
	hosts   []*host
	errs    *errs
	closing atomic.Bool
	topic   atomic.Pointer[countRun] // current topic-throughput run
	fan     atomic.Pointer[countRun] // current fanout run
	// replyCtx bounds the consumers' reply publishes; cancelled at close.
	replyCtx    context.Context
	replyCancel context.CancelFunc
}

func newFleet(b *broker) *fleet {
	f := &fleet{b: b, pid: b.pid(), errs: &errs{}}
	f.replyCtx, f.replyCancel = context.WithCancel(context.Background())
	return f
}

// host is one connection with one channel and its 10 queues.
type host struct {
	i      int
	conn   *amqp.Connection
	ch     *amqp.Channel
	queues []string
}

func hostName(i int) string { return "host" + strconv.Itoa(i) }

func (f *fleet) dial() (*amqp.Connection, error) {
	c, err := amqp.DialConfig(f.b.url(), amqp.Config{
		Heartbeat: heartbeat,
		Locale:    "en_US",
		Dial:      amqp.DefaultDial(10 * time.Second),
	})
	if err != nil {
		return nil, err
	}
	closed := c.NotifyClose(make(chan *amqp.Error, 1))
	go func() {
		if err, ok := <-closed; ok && err != nil && !f.closing.Load() {
			f.errs.Add("connection closed", err)
		}
	}()
	return c, nil
}

// parallel runs fn(i) for i in [from, to) on workers goroutines and
// returns how long that took. It stops at the first error or when timeout
// passes; then it returns without waiting for calls still blocked on the
// server (closing the fleet's connections ends them).
func parallel(ctx context.Context, timeout time.Duration, from, to int, fn func(i int) error) (time.Duration, error) {
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t0 := time.Now()
	var next, finished atomic.Int64
	next.Store(int64(from))
	errc := make(chan error, workers)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= to {
					return
				}
				if err := fn(i); err != nil {
					errc <- err
					cancel()
					return
				}
				finished.Add(1)
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
	el := time.Since(t0)
	select {
	case err := <-errc:
		return el, err
	default:
	}
	switch {
	case finished.Load() == int64(to-from):
		return el, nil
	case parent.Err() != nil:
		return el, parent.Err()
	default:
		return el, fmt.Errorf("%d of %d not finished within %v", int64(to-from)-finished.Load(), to-from, timeout)
	}
}

// open dials hosts [len(f.hosts), n) and opens a channel on each.
func (f *fleet) open(ctx context.Context, n int, timeout time.Duration) (time.Duration, error) {
	from := len(f.hosts)
	for i := from; i < n; i++ {
		f.hosts = append(f.hosts, &host{i: i})
	}
	return parallel(ctx, timeout, from, n, func(i int) error {
		c, err := f.dial()
		if err != nil {
			return fmt.Errorf("host %d: dial: %w", i, err)
		}
		ch, err := c.Channel()
		if err != nil {
			c.Close()
			return fmt.Errorf("host %d: channel.open: %w", i, err)
		}
		f.hosts[i].conn, f.hosts[i].ch = c, ch
		if i == 0 {
			// Host 0 answers RPCs with mandatory replies.
			returns := ch.NotifyReturn(make(chan amqp.Return, 16))
			go func() {
				for r := range returns {
					f.errs.Add("reply returned", fmt.Errorf("%d %s", r.ReplyCode, r.ReplyText))
				}
			}()
		}
		return nil
	})
}

// declare declares the queues of hosts [from, to) as oslo.messaging does.
func (f *fleet) declare(ctx context.Context, from, to int, timeout time.Duration) (time.Duration, error) {
	return parallel(ctx, timeout, from, to, func(i int) error {
		h := f.hosts[i]
		for _, q := range hostQueues {
			var name, key, kind string
			var args amqp.Table
			switch q.kind {
			case topicQ:
				name, key, kind = q.topic+"."+hostName(i), q.topic+"."+hostName(i), "topic"
			case fanoutQ:
				name, key, kind = q.exchange+"_"+rabbitmqtest.RandomHex(16), q.topic, "fanout"
				args = amqp.Table{"x-expires": int32(transientTTL)}
			case replyQ:
				name = "reply_" + rabbitmqtest.RandomHex(16)
				args = amqp.Table{"x-expires": int32(transientTTL)}
			}
			if q.exchange != "" {
				if err := h.ch.ExchangeDeclare(q.exchange, kind, false, q.kind == fanoutQ, false, false, nil); err != nil {
					return fmt.Errorf("host %d: exchange.declare %s: %w", i, q.exchange, err)
				}
			}
			if _, err := h.ch.QueueDeclare(name, false, false, false, false, args); err != nil {
				return fmt.Errorf("host %d: queue.declare %s: %w", i, name, err)
			}
			if q.exchange != "" {
				if err := h.ch.QueueBind(name, key, q.exchange, false, nil); err != nil {
					return fmt.Errorf("host %d: queue.bind %s: %w", i, name, err)
				}
			}
			h.queues = append(h.queues, name)
		}
		return nil
	})
}

// consume starts one consumer (manual acks, no prefetch limit: oslo's
// rabbit_qos_prefetch_count defaults to 0) on each queue of hosts
// [from, to).
func (f *fleet) consume(ctx context.Context, from, to int, timeout time.Duration) (time.Duration, error) {
	return parallel(ctx, timeout, from, to, func(i int) error {
		h := f.hosts[i]
		for j, q := range h.queues {
			ds, err := h.ch.Consume(q, strconv.Itoa(j+1), false, false, false, false, nil)
			if err != nil {
				return fmt.Errorf("host %d: basic.consume %s: %w", i, q, err)
			}
			go f.serve(h, ds)
		}
		return nil
	})
}

// serve handles one consumer's deliveries: an RPC request is answered on
// the host's channel, topic and fanout messages are counted; every
// delivery is acked.
func (f *fleet) serve(h *host, ds <-chan amqp.Delivery) {
	for d := range ds {
		switch d.Type {
		case typeRPC:
			err := h.ch.PublishWithContext(f.replyCtx, "", d.ReplyTo, true, false, amqp.Publishing{
				ContentType: "application/json", CorrelationId: d.CorrelationId, Body: replyBody,
			})
			if err != nil && !f.closing.Load() {
				f.errs.Add("reply publish", err)
			}
		case typeTopic, typeFanout:
			r := f.topic.Load()
			if d.Type == typeFanout {
				r = f.fan.Load()
			}
			switch {
			case r == nil || r.id != d.MessageId:
				f.errs.Add("stale "+d.Type+" message", fmt.Errorf("message_id %q on %s", d.MessageId, d.RoutingKey))
			case !r.got(h.i):
				f.errs.Add("duplicate "+d.Type+" message", fmt.Errorf("message_id %q, host %d", d.MessageId, h.i))
			}
		default:
			f.errs.Add("unexpected message", fmt.Errorf("type %q on %s", d.Type, d.RoutingKey))
		}
		if err := d.Ack(false); err != nil && !f.closing.Load() {
			f.errs.Add("ack", err)
		}
	}
}

// close closes every connection (16 at a time, at most timeout in all).
func (f *fleet) close(timeout time.Duration) {
	f.closing.Store(true)
	f.replyCancel()
	parallel(context.Background(), timeout, 0, len(f.hosts), func(i int) error {
		if c := f.hosts[i].conn; c != nil {
			c.Close()
		}
		return nil
	})
}

var errTimeout = errors.New("timed out")

var replyBody = []byte(`{"oslo.version": "2.0", "oslo.message": "{\"result\": null, \"failure\": null, \"ending\": true}"}`)
