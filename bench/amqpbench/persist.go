package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"substrate/bench/internal/benchkit"
	"substrate/internal/rabbitmqtest"
)

// ---------------------------------------------------------------------------
// fsync counters

// fsyncSample is a server's fsync count at a moment of the reader's clock.
type fsyncSample struct {
	count float64
	at    float64 // seconds, on the clock of whoever read the count
}

// fsyncReader reads a server's cumulative fsync count.
type fsyncReader func(ctx context.Context) (fsyncSample, error)

// rateSince returns the fsyncs per second between s0 and s.
func (s fsyncSample) rateSince(s0 fsyncSample) (float64, error) {
	if s.at <= s0.at {
		return 0, fmt.Errorf("fsync samples not in time order (%v, %v)", s0.at, s.at)
	}
	if s.count < s0.count {
		return 0, fmt.Errorf("fsync counter went backwards (%v -> %v)", s0.count, s.count)
	}
	return (s.count - s0.count) / (s.at - s0.at), nil
}

// fsyncMetric is the Prometheus counter substrate's message store exports
// on the management port's /metrics.
const fsyncMetric = "substrate_amqp_store_fsyncs_total"

// substrateFsyncs reads fsyncMetric from url (http://HOST:PORT/metrics),
// timed by this process's clock. Without the counter it says so.
func substrateFsyncs(url string) fsyncReader {
	client := &http.Client{Timeout: 5 * time.Second}
	t0 := time.Now()
	return func(ctx context.Context) (fsyncSample, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return fsyncSample{}, err
		}
		at := time.Since(t0).Seconds()
		resp, err := client.Do(req)
		if err != nil {
			return fsyncSample{}, fmt.Errorf("GET /metrics: %w", err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fsyncSample{}, fmt.Errorf("GET /metrics: %s", resp.Status)
		}
		v, ok, err := promValue(resp.Body, fsyncMetric)
		if err != nil {
			return fsyncSample{}, fmt.Errorf("reading /metrics: %w", err)
		}
		if !ok {
			return fsyncSample{}, errors.New(fsyncMetric + " is not on /metrics")
		}
		// The request takes well under a millisecond: stamp it at the middle.
		return fsyncSample{count: v, at: (at + time.Since(t0).Seconds()) / 2}, nil
	}
}

// promValue returns the sum over all label sets of the samples of metric
// name in Prometheus text exposition format, and whether there was any.
func promValue(r io.Reader, name string) (float64, bool, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	var sum float64
	found := false
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		switch {
		case rest == "":
			continue
		case rest[0] == '{':
			end := labelsEnd(rest)
			if end < 0 {
				return 0, false, fmt.Errorf("unterminated labels: %q", line)
			}
			rest = rest[end+1:]
		case rest[0] != ' ' && rest[0] != '\t':
			continue // another metric whose name starts with name
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			return 0, false, fmt.Errorf("no value: %q", line)
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return 0, false, fmt.Errorf("bad value in %q: %w", line, err)
		}
		sum += v
		found = true
	}
	return sum, found, sc.Err()
}

// labelsEnd returns the index of the '}' closing the label set that s
// starts with, skipping quoted label values (with backslash escapes), or -1.
func labelsEnd(s string) int {
	quoted := false
	for i := 1; i < len(s); i++ {
		switch c := s[i]; {
		case quoted && c == '\\':
			i++
		case c == '"':
			quoted = !quoted
		case !quoted && c == '}':
			return i
		}
	}
	return -1
}

// rabbitFsyncExpr evaluates, inside the RabbitMQ node, to {MonotonicMs,
// IoSyncCount}: the count of file_handle_cache syncs, which RabbitMQ's
// management plugin reports as io_sync_count. In 3.10 the classic queue
// message store and queue index (where 1 KB persistent messages are
// embedded) write through file_handle_cache, so these are the fsyncs that
// cover persistent messages; Mnesia's and Ra's are not counted.
const rabbitFsyncExpr = `{erlang:monotonic_time(millisecond), ets:lookup_element(file_handle_cache_stats, {io_sync, count}, 2)}.`

var rabbitFsyncRe = regexp.MustCompile(`\{\s*(-?\d+)\s*,\s*(\d+)\s*\}`)

// rabbitFsyncs reads io_sync_count with `rabbitmqctl eval` (no management
// plugin needed), timed by the node's own clock, so the 1-2 s the CLI takes
// to start does not distort the rate.
func rabbitFsyncs(r *rabbitmqtest.Server) fsyncReader {
	return func(ctx context.Context) (fsyncSample, error) {
		out, err := r.Ctl(ctx, "eval", rabbitFsyncExpr)
		if err != nil {
			return fsyncSample{}, fmt.Errorf("rabbitmqctl eval: %v: %s", err, strings.TrimSpace(out))
		}
		return parseRabbitFsyncs(out)
	}
}

func parseRabbitFsyncs(out string) (fsyncSample, error) {
	m := rabbitFsyncRe.FindStringSubmatch(out)
	if m == nil {
		return fsyncSample{}, fmt.Errorf("unexpected rabbitmqctl eval output %q", strings.TrimSpace(out))
	}
	ms, err1 := strconv.ParseInt(m[1], 10, 64)
	n, err2 := strconv.ParseInt(m[2], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return fsyncSample{}, err
	}
	return fsyncSample{count: float64(n), at: float64(ms) / 1000}, nil
}

// ---------------------------------------------------------------------------
// backlog: memory while a deep persistent backlog is published and consumed

const (
	backlogConns  = 4                      // publishers, then consumers
	backlogSample = 100 * time.Millisecond // RSS sampling period
	backlogSettle = time.Second            // pause before the idle and after-publish RSS
)

type backlogResult struct {
	Target      int     `json:"target"`        // messages asked for
	Published   int64   `json:"published"`     // confirmed
	PubSecs     float64 `json:"pub_secs"`      // from the first publish to the last confirm (or the cap)
	PubCapped   bool    `json:"pub_capped"`    // publishing stopped at the cap
	InQueue     int     `json:"in_queue"`      // queue depth after publishing (queue.declare passive)
	Consumed    int64   `json:"consumed"`      // deliveries
	ConSecs     float64 `json:"con_secs"`      // from basic.consume to the last delivery (or the cap)
	ConCapped   bool    `json:"con_capped"`    // consuming stopped at the cap
	Left        int     `json:"left"`          // messages in the queue when it was deleted
	IdleRSS     int64   `json:"idle_rss"`      // before publishing, bytes
	PeakPubRSS  int64   `json:"peak_pub_rss"`  // highest while publishing
	AfterPubRSS int64   `json:"after_pub_rss"` // after publishing (backlogSettle later)
	PeakConRSS  int64   `json:"peak_con_rss"`  // highest while consuming
	EndRSS      int64   `json:"end_rss"`       // right after consuming
	Errors      *errs   `json:"-"`
	Failures    string  `json:"failures,omitempty"` // Errors, for the JSON report
}

// runBacklog declares a durable queue, publishes n persistent msgSize
// messages into it from backlogConns publishers (confirms, inFlight each)
// with nobody consuming, then consumes them with backlogConns consumers
// (prefetch, multiple acks), sampling the server's RSS all along. Each
// phase stops at limit; what was reached is reported. The queue is deleted
// at the end.
func runBacklog(ctx context.Context, b *broker, n int, limit time.Duration) (backlogResult, error) {
	res := backlogResult{Target: n, Errors: &errs{}}
	e := res.Errors
	queue := "amqpbench.backlog." + rabbitmqtest.RandomHex(4)
	pid := b.pid()

	admin, err := dial(b)
	if err != nil {
		return res, fmt.Errorf("dial: %w", err)
	}
	defer admin.Close()
	ach, err := admin.Channel()
	if err != nil {
		return res, err
	}
	if _, err := ach.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		return res, fmt.Errorf("queue.declare: %w", err)
	}
	// Publishers, then consumers; each phase has its own closing flag.
	var pubClosing, conClosing atomic.Bool
	var conns []*amqp.Connection
	closeAll := func(closing *atomic.Bool) {
		closing.Store(true)
		for _, c := range conns {
			c.Close()
		}
		conns = nil
	}
	defer func() { closeAll(&conClosing) }()

	sleepCtx(ctx, backlogSettle)
	res.IdleRSS = benchkit.RSS(pid)

	// Publish.
	var next, confirmed atomic.Int64
	stop := make(chan struct{})
	var pubWG sync.WaitGroup
	body := testBody()
	for i := 0; i < backlogConns; i++ {
		c, err := dial(b)
		if err != nil {
			return res, fmt.Errorf("publisher dial: %w", err)
		}
		conns = append(conns, c)
		watchClose(c, &pubClosing, e, "publisher")
		p := &publisher{queue: queue, mode: amqp.Persistent, body: body, stop: stop,
			claim: func() bool { return next.Add(1) <= int64(n) }, confirmed: &confirmed, e: e}
		if err := p.start(ctx, c, &pubWG); err != nil {
			close(stop)
			return res, err
		}
	}
	t0 := time.Now()
	pubDone := make(chan struct{})
	go func() { pubWG.Wait(); close(pubDone) }()
	res.PeakPubRSS, res.PubCapped = sampleUntil(ctx, pid, limit, pubDone, stop, nil)
	<-pubDone
	res.PubSecs = time.Since(t0).Seconds()
	res.Published = confirmed.Load()
	closeAll(&pubClosing)
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	sleepCtx(ctx, backlogSettle)
	res.AfterPubRSS = benchkit.RSS(pid)
	q, err := ach.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		return res, fmt.Errorf("queue.declare passive: %w", err)
	}
	res.InQueue = q.Messages

	// Consume.
	var consumed atomic.Int64
	var conWG sync.WaitGroup
	t1 := time.Now()
	for i := 0; i < backlogConns; i++ {
		c, err := dial(b)
		if err != nil {
			return res, fmt.Errorf("consumer dial: %w", err)
		}
		conns = append(conns, c)
		watchClose(c, &conClosing, e, "consumer")
		if err := startConsumer(c, queue, &consumed, &conClosing, e, &conWG); err != nil {
			return res, err
		}
	}
	var last time.Time
	seen := int64(-1)
	res.PeakConRSS, res.ConCapped = sampleUntil(ctx, pid, limit, nil, nil, func() bool {
		got := consumed.Load()
		if got != seen {
			seen, last = got, time.Now()
		}
		return got >= int64(res.InQueue)
	})
	res.Consumed = consumed.Load()
	if !last.IsZero() {
		res.ConSecs = last.Sub(t1).Seconds()
	}
	if res.ConCapped {
		res.ConSecs = time.Since(t1).Seconds()
	}
	res.EndRSS = benchkit.RSS(pid)
	closeAll(&conClosing)
	conWG.Wait()
	if q, err := ach.QueueDelete(queue, false, false, false); err != nil {
		e.Add("queue.delete", err)
	} else {
		res.Left = q
	}
	res.Failures = e.String()
	return res, ctx.Err()
}

// sampleUntil samples pid's RSS every backlogSample until done is closed
// or finished (if set) reports true, and returns the highest RSS seen.
// At limit (or when ctx ends) it closes stop, if set, and then waits for
// done; with no done it returns at once. capped says the limit was hit.
func sampleUntil(ctx context.Context, pid int, limit time.Duration, done <-chan struct{}, stop chan struct{}, finished func() bool) (peak int64, capped bool) {
	deadline, ctxDone := time.After(limit), ctx.Done()
	tick := time.NewTicker(backlogSample)
	defer tick.Stop()
	stopped := false
	halt := func() bool {
		if stop != nil && !stopped {
			close(stop)
			stopped = true
		}
		return done == nil
	}
	for {
		peak = max(peak, benchkit.RSS(pid))
		if finished != nil && finished() {
			return peak, capped
		}
		select {
		case <-done:
			return peak, capped
		case <-deadline:
			capped = true
			if halt() {
				return peak, capped
			}
		case <-ctxDone:
			ctxDone = nil
			if halt() {
				return peak, capped
			}
		case <-tick.C:
		}
	}
}

func (b *backlogResult) pubRate() float64 {
	if b.PubSecs <= 0 {
		return 0
	}
	return float64(b.Published) / b.PubSecs
}

func (b *backlogResult) conRate() float64 {
	if b.ConSecs <= 0 {
		return 0
	}
	return float64(b.Consumed) / b.ConSecs
}

// peakRatio is the peak VmRSS while consuming over the idle VmRSS (0 if
// either is unknown).
func (b *backlogResult) peakRatio() float64 {
	if b.IdleRSS <= 0 || b.PeakConRSS <= 0 {
		return 0
	}
	return float64(b.PeakConRSS) / float64(b.IdleRSS)
}
