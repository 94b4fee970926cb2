package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// The crash test of issue 5: publishers send persistent messages with
// confirms while the test kills substrate with SIGKILL at a random moment;
// after a restart on the same data dir every confirmed message must be
// consumable, in each publisher's order, and nothing that was never
// published may appear.
//
// Topology: a classic durable queue, a quorum queue, and a durable fanout
// exchange bound to two durable classic queues (one message stored twice).
// Message seq of a publisher goes to the classic queue when seq%3 == 0, to
// the quorum queue when 1, through the fanout when 2.
//
// Each iteration, on the same data dir throughout:
//
//  1. settle: the four queues must be empty (everything was acknowledged
//     before the last kill), the fence queue is drained, and DATA/broker/
//     holds at most one segment and one ack file (acknowledged segments
//     are removed: disk use follows the backlog);
//  2. 4 publishers (a connection and a confirm-mode channel each, 64
//     unconfirmed in flight) publish with delivery mode 2, and a consumer
//     takes crash.fan.b's copies as they come, holding the last 16
//     unacknowledged; the test SIGKILLs substrate after a seeded random
//     delay (20 ms to 1.52 s);
//  3. every third iteration the newest segment gets garbage or a partial
//     record appended (a crash mid-write), every third one after that is
//     truncated in the middle of a record (see the variants below);
//  4. restart: ready, no ERROR line; after a tear, a WARN line about it;
//     in half the iterations (seeded), consumers then take and acknowledge
//     messages of all four queues and the test kills again after 0-400 ms
//     (acks, delivery records and segment removal interrupted), and
//     restarts;
//  5. each queue is consumed (manual ack) and checked: every confirmed
//     message at least once; per publisher, first occurrences in increasing
//     sequence; no garbage (a body that is not exactly what was published,
//     a sequence that was never published, a message from an earlier,
//     acknowledged iteration); a second copy only if redelivered or never
//     confirmed. What a consumer acknowledged before a kill may be back or
//     not (acks are not synced before they take effect, as in RabbitMQ);
//     what it held unacknowledged must be back if it was confirmed, and
//     whatever it took that comes back is marked redelivered;
//  6. fence: after every ack (the consuming channel closed, the queues
//     report 0 messages) one confirmed persistent message goes to the fence
//     queue, then SIGKILL and restart. broker/store documents that "an ack
//     made before a later Commit completed is durable": so the acks made
//     before the fence's confirm must survive, and step 1 of the next
//     iteration checks that nothing comes back.
//
// At the end the server is stopped with SIGTERM (exit 0, no ERROR, at most
// one segment and one ack file left), started again (nothing comes back)
// and stopped again.
//
// SUBSTRATE_CRASH_SEED replays a run's random choices (kill delays, tears;
// the timing of a run is not replayable); SUBSTRATE_CRASH_ITERATIONS sets
// the number of iterations (default 9, 30-40 s on two cores; 3 with -short).
func TestCrashRecovery(t *testing.T) {
	seed := envInt(t, "SUBSTRATE_CRASH_SEED", time.Now().UnixNano()&(1<<62-1))
	iterations := int(envInt(t, "SUBSTRATE_CRASH_ITERATIONS", 9))
	if testing.Short() && os.Getenv("SUBSTRATE_CRASH_ITERATIONS") == "" {
		iterations = 3
	}
	t.Logf("seed %d (replay with SUBSTRATE_CRASH_SEED=%d), %d iterations", seed, seed, iterations)
	t0 := time.Now()

	c := &crashRun{t: t, seed: seed, s: newServer(t)}
	c.storeDir = filepath.Join(c.s.dataDir, "broker")
	c.s.proc = start(t, nil, c.s.args()...)
	c.s.waitReady(30 * time.Second)

	for it := range iterations {
		c.iteration(it)
		if t.Failed() {
			t.Fatalf("stopped after iteration %d of seed %d (replay with SUBSTRATE_CRASH_SEED=%d)", it, seed, seed)
		}
	}
	c.settle(iterations, iterations > 0)

	// Clean stops at the end: exit 0, nothing logged as an error, the
	// store still bounded once the process has flushed and gone, and after
	// one more start nothing comes back.
	for round := range 2 {
		c.noErrors("final run")
		c.s.cmd.Process.Signal(syscall.SIGTERM)
		if code := c.s.wait(15 * time.Second); code != 0 {
			t.Errorf("exit status %d after SIGTERM:\n%s", code, c.s.output())
		}
		c.noErrors("shutdown")
		segs, acks := storeFiles(t, c.storeDir)
		if len(segs) > 1 || len(acks) > 1 {
			t.Errorf("after everything was acknowledged and a clean stop, %s holds %d segment and %d ack files: %v %v",
				c.storeDir, len(segs), len(acks), segs, acks)
		}
		if round == 0 {
			c.s.restart(t)
			c.noErrors("restart after a clean stop")
			c.settle(iterations+1, false)
		}
	}
	t.Logf("%d iterations in %v; %s holds %d bytes at the end; seed %d",
		iterations, time.Since(t0).Round(time.Millisecond), c.storeDir, dirSize(c.storeDir), seed)
	if t.Failed() {
		t.Logf("seed %d (replay with SUBSTRATE_CRASH_SEED=%d)", seed, seed)
	}
}

const (
	crashPublishers = 4
	crashWindow     = 64 // unconfirmed messages in flight per publisher
	crashMaxSeq     = 1 << 20

	crashClassic = "crash.classic"
	crashQuorum  = "crash.quorum"
	crashFanA    = "crash.fan.a"
	crashFanB    = "crash.fan.b"
	crashFence   = "crash.fence"
	crashFanout  = "crash.fanout"
)

// crashQueues are the queues whose contents are checked.
var crashQueues = []string{crashClassic, crashQuorum, crashFanA, crashFanB}

// crashRoute is where message seq is published.
func crashRoute(seq int) (exchange, key string) {
	switch seq % 3 {
	case 0:
		return "", crashClassic
	case 1:
		return "", crashQuorum
	}
	return crashFanout, ""
}

// crashRoutesTo reports whether message seq lands in queue.
func crashRoutesTo(seq int, queue string) bool {
	switch seq % 3 {
	case 0:
		return queue == crashClassic
	case 1:
		return queue == crashQuorum
	}
	return queue == crashFanA || queue == crashFanB
}

// Variants of an iteration: what is done to the newest segment file
// between the kill and the restart.
type crashVariant int

const (
	variantKill     crashVariant = iota // nothing: SIGKILL alone
	variantGarbage                      // garbage or a partial record appended (a torn write)
	variantTruncate                     // cut in the middle of a record
)

func (v crashVariant) String() string {
	return [...]string{"kill", "kill+garbage tail", "kill+truncated mid-record"}[v]
}

// msgKey names one stored copy of a message: publisher's message seq in
// one queue.
type msgKey struct {
	queue    string
	pub, seq int
}

type crashRun struct {
	t        *testing.T
	seed     int64
	s        *server
	storeDir string
}

// crashPublisher is one publisher's record of an iteration, read once it
// has stopped.
type crashPublisher struct {
	id        int
	sent      int    // highest seq handed to Publish
	confirmed []bool // [seq]: basic.ack received
	nacked    int    // basic.nack, or no confirm before the connection died
	err       error  // a failure other than the connection dying
}

func (c *crashRun) dial() *amqp.Connection {
	c.t.Helper()
	conn, err := dialAMQP(c.s, "guest", "guest")
	if err != nil {
		c.t.Fatalf("dial: %v", err)
	}
	return conn
}

// declare declares the topology (again after a restart: the same
// arguments must be accepted, so the definitions came back as they were).
func (c *crashRun) declare(ch *amqp.Channel) {
	c.t.Helper()
	must := func(err error) {
		c.t.Helper()
		if err != nil {
			c.t.Fatalf("declare: %v", err)
		}
	}
	must(ch.ExchangeDeclare(crashFanout, "fanout", true, false, false, false, nil))
	for _, q := range []string{crashClassic, crashFanA, crashFanB, crashFence} {
		_, err := ch.QueueDeclare(q, true, false, false, false, nil)
		must(err)
	}
	_, err := ch.QueueDeclare(crashQuorum, true, false, false, false, amqp.Table{"x-queue-type": "quorum"})
	must(err)
	must(ch.QueueBind(crashFanA, "", crashFanout, false, nil))
	must(ch.QueueBind(crashFanB, "", crashFanout, false, nil))
}

// noErrors fails the test if the current process logged an ERROR line.
func (c *crashRun) noErrors(when string) {
	c.t.Helper()
	if lines := logLines(c.s.output(), "level=ERROR"); len(lines) > 0 {
		c.t.Errorf("%s: substrate logged errors:\n%s", when, strings.Join(lines, "\n"))
	}
}

// killAndRestart SIGKILLs the server (after checking its log) and starts
// it again on the same ports and data dir.
func (c *crashRun) killAndRestart(when string) {
	c.t.Helper()
	c.noErrors(when)
	c.s.stop(syscall.SIGKILL)
	c.s.restart(c.t)
	c.noErrors(when + ", restart")
}

// settle runs at the start of iteration it (and at the end): after the
// previous iteration's fence and kill, the checked queues must be empty,
// the last fence (of iteration it-1) must be there if fence is set (none
// at all if not: after a clean stop every ack is on disk), and
// the store must be small.
func (c *crashRun) settle(it int, fence bool) {
	t := c.t
	t.Helper()
	conn := c.dial()
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	c.declare(ch)
	for _, q := range crashQueues {
		var back []string
		for n := 0; n < 1_000_000; n++ {
			d, ok, err := ch.Get(q, true)
			if err != nil {
				t.Fatalf("get %s: %v", q, err)
			}
			if !ok {
				break
			}
			if len(back) < 20 {
				back = append(back, describeDelivery(d))
			}
		}
		if len(back) > 0 {
			t.Errorf("iteration %d: %s is not empty after a restart, though every message was acknowledged before "+
				"the fence message's confirm (broker/store: an ack made before a later Commit completed is durable); "+
				"first of them: %s", it, q, strings.Join(back, "; "))
		}
	}
	fences := map[int]bool{}
	for n := 0; n < 1_000_000; n++ {
		d, ok, err := ch.Get(crashFence, false)
		if err != nil {
			t.Fatalf("get %s: %v", crashFence, err)
		}
		if !ok {
			break
		}
		var i int
		if _, err := fmt.Sscanf(string(d.Body), "fence i=%d", &i); err != nil || i >= it {
			t.Errorf("iteration %d: garbage in %s: %s", it, crashFence, describeDelivery(d))
		}
		fences[i] = true
		d.Ack(false)
	}
	if fence && !fences[it-1] {
		t.Errorf("iteration %d: the confirmed fence message of iteration %d is lost (found %v)", it, it-1, fences)
	}
	if !fence && len(fences) > 0 {
		t.Errorf("iteration %d: acknowledged fence messages came back after a clean stop: %v", it, fences)
	}
	// Acknowledged segments go away: at most the tail and one ack file.
	deadline := time.Now().Add(5 * time.Second)
	for {
		segs, acks := storeFiles(t, c.storeDir)
		if len(segs) <= 1 && len(acks) <= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("iteration %d: with no message left, %s still holds %d segment and %d ack files (%d bytes): %v %v",
				it, c.storeDir, len(segs), len(acks), dirSize(c.storeDir), segs, acks)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (c *crashRun) iteration(it int) {
	t := c.t
	rng := rand.New(rand.NewPCG(uint64(c.seed), uint64(it)))
	v := crashVariant(it % 3)
	killAfter := 20*time.Millisecond + time.Duration(rng.Int64N(int64(1500*time.Millisecond)))
	where := fmt.Sprintf("iteration %d (%s, kill after %v, seed %d)", it, v, killAfter, c.seed)

	c.settle(it, it > 0)
	if t.Failed() {
		return
	}

	// Publish until killed.
	pubs := make([]*crashPublisher, crashPublishers)
	var ready, done sync.WaitGroup
	go2 := make(chan struct{})
	for i := range pubs {
		p := &crashPublisher{id: i, confirmed: []bool{false}}
		pubs[i] = p
		ready.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			p.run(c.s, it, &ready, go2)
		}()
	}
	// A consumer on crash.fan.b all along, acknowledging each message when
	// 16 later ones have arrived: at the kill some are delivered and not
	// acknowledged, and acks are in flight.
	live := newCrashConsumer(crashFanB, false)
	ready.Add(1)
	done.Add(1)
	go func() {
		defer done.Done()
		live.run(c.s, it, &ready, go2)
	}()
	ready.Wait()
	close(go2)
	time.Sleep(killAfter)
	c.noErrors(where)
	c.s.stop(syscall.SIGKILL)
	waited := make(chan struct{})
	go func() { done.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(60 * time.Second):
		t.Fatalf("%s: publishers still running 60 s after the kill", where)
	}
	sent, confirmed := 0, 0
	c.checkLive(where, it, live, pubs)
	for _, p := range pubs {
		if p.err != nil {
			t.Errorf("%s: publisher %d: %v", where, p.id, p.err)
		}
		sent += p.sent
		for _, ok := range p.confirmed {
			if ok {
				confirmed++
			}
		}
	}
	if t.Failed() {
		return
	}

	// Tear the newest segment as a crash mid-write (or a lost tail) would.
	var cut, intact map[msgKey]bool
	tore := ""
	switch v {
	case variantGarbage:
		tore = c.appendGarbage(rng, it/3%2 == 0)
	case variantTruncate:
		tore, cut, intact = c.truncateMidRecord(rng, it)
	}

	ready0 := time.Now()
	c.s.restart(t)
	readyIn := time.Since(ready0)
	c.noErrors(where + ", restart")
	if tore != "" {
		if lines := logLines(c.s.output(), "level=WARN", "torn"); len(lines) == 0 {
			t.Errorf("%s: after %s, the restart logged no warning about a torn tail:\n%s", where, tore, c.s.output())
		}
	}

	// Half the iterations kill again while consumers take and acknowledge
	// messages of every queue: acks and deliveries being written, fully
	// acknowledged segments being removed.
	pre := map[string][]*crashConsumer{crashFanB: {live}}
	consumeKill := ""
	if rng.IntN(2) == 0 {
		after := time.Duration(rng.Int64N(int64(400 * time.Millisecond)))
		ks := make([]*crashConsumer, len(crashQueues))
		var ready, done sync.WaitGroup
		go2 := make(chan struct{})
		for i, q := range crashQueues {
			k := newCrashConsumer(q, true)
			ks[i] = k
			pre[q] = append(pre[q], k)
			ready.Add(1)
			done.Add(1)
			go func() {
				defer done.Done()
				k.run(c.s, it, &ready, go2)
			}()
		}
		ready.Wait()
		close(go2)
		time.Sleep(after)
		c.noErrors(where + ", consuming")
		c.s.stop(syscall.SIGKILL)
		done.Wait()
		n, a := 0, 0
		for _, k := range ks {
			c.checkLive(where+", consuming", it, k, pubs)
			n += len(k.delivered)
			a += len(k.acked)
		}
		c.s.restart(t)
		c.noErrors(where + ", restart after the kill while consuming")
		consumeKill = fmt.Sprintf("; killed again %v into consuming (%d consumed, %d acknowledged)",
			after.Round(time.Millisecond), n, a)
	}

	// Consume and check every queue.
	conn := c.dial()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Qos(1000, 0, false); err != nil {
		t.Fatal(err)
	}
	stats := make([]string, 0, len(crashQueues))
	for _, q := range crashQueues {
		got := c.consume(ch, q, where)
		stats = append(stats, c.check(where, it, q, got, pubs, mergeConsumers(pre[q]), cut, intact))
	}
	if err := ch.Close(); err != nil {
		t.Errorf("%s: closing the consuming channel: %v", where, err)
	}

	// Everything is acknowledged: the queues must say so.
	ch, err = conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range crashQueues {
		st, err := ch.QueueDeclarePassive(q, true, false, false, false, nil)
		if err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		if st.Messages != 0 || st.Consumers != 0 {
			t.Errorf("%s: %s after consuming and acknowledging everything: %d messages, %d consumers",
				where, q, st.Messages, st.Consumers)
		}
	}
	// The fence: its confirm covers the acks made before it.
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	dc, err := ch.PublishWithDeferredConfirm("", crashFence, false, false, amqp.Publishing{
		DeliveryMode: amqp.Persistent, Body: fmt.Appendf(nil, "fence i=%d", it)})
	if err != nil {
		t.Fatalf("%s: fence: %v", where, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	acked, err := dc.WaitContext(ctx)
	cancel()
	if err != nil || !acked {
		t.Errorf("%s: fence message not confirmed (%v, ack %v)", where, err, acked)
	}
	conn.Close()

	t.Logf("%s: %d published, %d confirmed%s; ready %v after the kill%s; %s",
		where, sent, confirmed, tore, readyIn.Round(time.Millisecond), consumeKill, strings.Join(stats, "; "))
	c.killAndRestart(where + ", after the fence")
}

// run publishes messages 1, 2, ... of iteration iter with at most
// crashWindow unconfirmed, until the connection dies.
func (p *crashPublisher) run(s *server, iter int, ready *sync.WaitGroup, start <-chan struct{}) {
	conn, err := dialAMQP(s, "guest", "guest")
	var ch *amqp.Channel
	if err == nil {
		defer conn.Close()
		ch, err = conn.Channel()
	}
	if err == nil {
		err = ch.Confirm(false)
	}
	ready.Done()
	if err != nil {
		p.err = err
		return
	}
	<-start
	type inflight struct {
		seq int
		dc  *amqp.DeferredConfirmation
	}
	var win []inflight
	settle := func(f inflight) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		ack, err := f.dc.WaitContext(ctx)
		switch {
		case err != nil:
			if p.err == nil {
				p.err = fmt.Errorf("seq %d: no confirm and no connection loss in 30 s", f.seq)
			}
		case ack:
			p.confirmed[f.seq] = true
		default:
			p.nacked++
		}
	}
	for seq := 1; seq <= crashMaxSeq; seq++ {
		if len(win) == crashWindow {
			settle(win[0])
			win = win[1:]
		}
		ex, key := crashRoute(seq)
		p.sent = seq
		p.confirmed = append(p.confirmed, false)
		dc, err := ch.PublishWithDeferredConfirm(ex, key, false, false, amqp.Publishing{
			DeliveryMode: amqp.Persistent,
			Headers:      amqp.Table{"crash-pub": int32(p.id), "crash-seq": int64(seq)},
			Body:         crashBody(iter, p.id, seq),
		})
		if err != nil {
			break // killed
		}
		win = append(win, inflight{seq, dc})
	}
	for _, f := range win {
		settle(f)
	}
}

// crashConsumer consumes a queue until the kill, holding the last
// crashHold deliveries unacknowledged. Read once it has stopped.
type crashConsumer struct {
	queue            string
	allowRedelivered bool            // after a restart: what was delivered before comes back so
	order            [][2]int        // (pub, seq) delivered, in order
	delivered        map[[2]int]bool // delivered before the kill
	acked            map[[2]int]bool // and the ack was sent
	bad              []string        // garbage (or redelivered, unless allowed)
	err              error
}

func newCrashConsumer(queue string, allowRedelivered bool) *crashConsumer {
	return &crashConsumer{queue: queue, allowRedelivered: allowRedelivered,
		delivered: map[[2]int]bool{}, acked: map[[2]int]bool{}}
}

// mergeConsumers is what ks together consumed and acknowledged (nil if
// ks is empty).
func mergeConsumers(ks []*crashConsumer) *crashConsumer {
	if len(ks) == 0 {
		return nil
	}
	m := newCrashConsumer(ks[0].queue, true)
	for _, k := range ks {
		for key := range k.delivered {
			m.delivered[key] = true
		}
		for key := range k.acked {
			m.acked[key] = true
		}
	}
	return m
}

// crashHold is how many deliveries the live consumer holds unacknowledged.
const crashHold = 16

func (k *crashConsumer) run(s *server, it int, ready *sync.WaitGroup, start <-chan struct{}) {
	conn, err := dialAMQP(s, "guest", "guest")
	var ch *amqp.Channel
	if err == nil {
		defer conn.Close()
		ch, err = conn.Channel()
	}
	if err == nil {
		err = ch.Qos(4*crashHold, 0, false)
	}
	var dels <-chan amqp.Delivery
	if err == nil {
		dels, err = ch.Consume(k.queue, "crash-live", false, false, false, false, nil)
	}
	ready.Done()
	if err != nil {
		k.err = err
		return
	}
	<-start
	var held []amqp.Delivery
	var keys [][2]int
	for d := range dels { // until the connection dies
		iter, pub, seq, ok := parseCrashBody(d.Body)
		if !ok || iter != it || d.Redelivered && !k.allowRedelivered {
			k.bad = append(k.bad, describeDelivery(d))
		}
		key := [2]int{pub, seq}
		k.order = append(k.order, key)
		k.delivered[key] = true
		held, keys = append(held, d), append(keys, key)
		if len(held) > crashHold {
			if held[0].Ack(false) == nil {
				k.acked[keys[0]] = true
			}
			held, keys = held[1:], keys[1:]
		}
	}
}

// checkLive checks what a consumer got before a kill: messages of this
// iteration, published, routed to its queue, each publisher's in order,
// and not redelivered unless allowed.
func (c *crashRun) checkLive(where string, it int, k *crashConsumer, pubs []*crashPublisher) {
	t := c.t
	if k.err != nil {
		t.Errorf("%s: consumer of %s: %v", where, k.queue, k.err)
	}
	for _, b := range k.bad[:min(len(k.bad), 10)] {
		t.Errorf("%s: before the kill, %s's consumer got garbage or a redelivery: %s", where, k.queue, b)
	}
	last := make([]int, len(pubs))
	for i, key := range k.order {
		pub, seq := key[0], key[1]
		if pub < 0 || pub >= len(pubs) || seq > pubs[pub].sent || !crashRoutesTo(seq, k.queue) {
			t.Errorf("%s: before the kill, %s's consumer got p%d s%d, never published there", where, k.queue, pub, seq)
			return
		}
		if seq <= last[pub] {
			t.Errorf("%s: before the kill, %s's delivery #%d p%d s%d came after s%d", where, k.queue, i, pub, seq, last[pub])
			return
		}
		last[pub] = seq
	}
}

// crashDelivery is what the check needs of one delivery.
type crashDelivery struct {
	body        []byte
	headers     amqp.Table
	mode        uint8
	redelivered bool
}

func describeDelivery(d amqp.Delivery) string {
	b := d.Body
	if len(b) > 48 {
		b = b[:48]
	}
	return fmt.Sprintf("%q (redelivered %v)", b, d.Redelivered)
}

// consume takes every message of queue, acknowledging each: as many as
// the queue reports, then whatever else comes within a short quiet time.
func (c *crashRun) consume(ch *amqp.Channel, queue, where string) []crashDelivery {
	t := c.t
	t.Helper()
	st, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		t.Fatalf("%s: %s after the restart: %v", where, queue, err)
	}
	dels, err := ch.Consume(queue, "crash-check", false, false, false, false, nil)
	if err != nil {
		t.Fatalf("%s: consume %s: %v", where, queue, err)
	}
	var got []crashDelivery
	take := func(d amqp.Delivery) {
		got = append(got, crashDelivery{body: d.Body, headers: d.Headers, mode: d.DeliveryMode, redelivered: d.Redelivered})
		if err := d.Ack(false); err != nil {
			t.Errorf("%s: ack in %s: %v", where, queue, err)
		}
	}
	for {
		quiet := 10 * time.Second // a queue that stalls before its count
		if len(got) >= st.Messages {
			quiet = 300 * time.Millisecond // anything beyond the count
		}
		select {
		case d, ok := <-dels:
			if !ok {
				t.Fatalf("%s: consumer of %s closed: %v", where, queue, ch.IsClosed())
			}
			take(d)
			continue
		case <-time.After(quiet):
		}
		break
	}
	if len(got) < st.Messages {
		t.Errorf("%s: %s reported %d messages after the restart, but only %d were delivered",
			where, queue, st.Messages, len(got))
	}
	if err := ch.Cancel("crash-check", false); err != nil {
		t.Fatalf("%s: cancel: %v", where, err)
	}
	for d := range dels {
		take(d)
	}
	return got
}

// check checks queue's deliveries after the restart of iteration it and
// reports what is wrong, then returns a summary (see checkDeliveries).
func (c *crashRun) check(where string, it int, queue string, got []crashDelivery, pubs []*crashPublisher,
	pre *crashConsumer, cut, intact map[msgKey]bool) string {
	c.t.Helper()
	summary, problems := checkDeliveries(it, queue, got, pubs, pre, cut, intact)
	for _, p := range problems[:min(len(problems), 20)] {
		c.t.Errorf("%s: %s: %s", where, queue, p)
	}
	if len(problems) > 20 {
		c.t.Errorf("%s: %s: %d more problems", where, queue, len(problems)-20)
	}
	return summary
}

// checkDeliveries checks queue's deliveries after the restart of
// iteration it and returns a summary and the problems found. pre is the consumer that took messages from queue
// before the kill, or nil: what it acknowledged may be missing. cut are
// the copies a truncation removed (they may be missing even if
// confirmed); intact those whose records came before the cut (they must be
// there, confirmed or not, unless acknowledged before the kill).
func checkDeliveries(it int, queue string, got []crashDelivery, pubs []*crashPublisher,
	pre *crashConsumer, cut, intact map[msgKey]bool) (string, []string) {
	seen := map[[2]int]int{}
	firstRedelivered := map[[2]int]bool{}
	last := make([]int, len(pubs)) // per publisher, the seq of the last first occurrence
	var problems []string
	report := func(format string, args ...any) {
		problems = append(problems, fmt.Sprintf(format, args...))
	}
	dups := 0
	for i, d := range got {
		iter, pub, seq, ok := parseCrashBody(d.body)
		switch {
		case !ok:
			b := d.body
			if len(b) > 64 {
				b = b[:64]
			}
			report("delivery #%d is garbage (a body that was never published): %q, %d bytes", i, b, len(d.body))
			continue
		case iter < it:
			report("delivery #%d: p%d s%d of iteration %d came back, though it was acknowledged in that iteration (redelivered %v)",
				i, pub, seq, iter, d.redelivered)
			continue
		case iter > it || pub >= len(pubs) || seq > pubs[pub].sent:
			report("delivery #%d: p%d s%d of iteration %d was never published", i, pub, seq, iter)
			continue
		case !crashRoutesTo(seq, queue):
			report("delivery #%d: p%d s%d was not routed to this queue", i, pub, seq)
			continue
		}
		if fmt.Sprint(d.headers["crash-pub"]) != strconv.Itoa(pub) || fmt.Sprint(d.headers["crash-seq"]) != strconv.Itoa(seq) ||
			d.mode != amqp.Persistent {
			report("delivery #%d: p%d s%d has headers %v and delivery mode %d, published with crash-pub %d, crash-seq %d, mode 2",
				i, pub, seq, d.headers, d.mode, pub, seq)
		}
		k := [2]int{pub, seq}
		seen[k]++
		if seen[k] == 1 {
			firstRedelivered[k] = d.redelivered
		}
		if seen[k] > 1 {
			dups++
			if !d.redelivered && pubs[pub].confirmed[seq] {
				report("delivery #%d: p%d s%d (confirmed) delivered %d times, this copy not marked redelivered",
					i, pub, seq, seen[k])
			}
			continue
		}
		if seq < last[pub] {
			report("delivery #%d: p%d s%d comes after p%d s%d: publisher order broken", i, pub, seq, pub, last[pub])
		}
		last[pub] = max(last[pub], seq)
	}
	confirmed, present, unconfirmedPresent, cutMissing := 0, 0, 0, 0
	ackedBack, ackedRedelivered, unackedBack, unackedRedelivered := 0, 0, 0, 0
	if pre != nil {
		for k := range pre.delivered {
			if seen[k] == 0 {
				continue
			}
			if pre.acked[k] {
				ackedBack++
				if firstRedelivered[k] {
					ackedRedelivered++
				}
			} else {
				unackedBack++
				if firstRedelivered[k] {
					unackedRedelivered++
				}
			}
			if !firstRedelivered[k] {
				// The store marks every message recovered after a crash
				// redelivered (broker/store/doc.go, "After a crash").
				report("p%d s%d was delivered before the kill and came back not marked redelivered", k[0], k[1])
			}
		}
	}
	for _, p := range pubs {
		var lost, lostIntact []int
		for seq := 1; seq <= p.sent; seq++ {
			if !crashRoutesTo(seq, queue) {
				continue
			}
			k := msgKey{queue, p.id, seq}
			n := seen[[2]int{p.id, seq}]
			if p.confirmed[seq] {
				confirmed++
			}
			if n > 0 {
				present++
				if !p.confirmed[seq] {
					unconfirmedPresent++
				}
				continue
			}
			switch {
			case pre != nil && pre.acked[[2]int{p.id, seq}]:
				// acknowledged before the kill: gone or back, either is right
			case intact[k]:
				lostIntact = append(lostIntact, seq)
			case cut[k]:
				cutMissing++
			case p.confirmed[seq]:
				lost = append(lost, seq)
			}
		}
		if len(lost) > 0 {
			report("LOST %d confirmed messages of publisher %d (of %d sent): seq %s (ranges step 3)", len(lost), p.id, p.sent, seqRanges(lost, 3))
		}
		if len(lostIntact) > 0 {
			report("%d messages of publisher %d whose records were whole, before the cut, were not recovered: seq %s (ranges step 3)",
				len(lostIntact), p.id, seqRanges(lostIntact, 3))
		}
	}
	s := fmt.Sprintf("%s: %d delivered, %d of %d confirmed there, %d unconfirmed there, %d duplicates",
		queue, len(got), present-unconfirmedPresent, confirmed, unconfirmedPresent, dups)
	if cut != nil {
		s += fmt.Sprintf(", %d cut off", cutMissing)
	}
	if pre != nil {
		s += fmt.Sprintf(" (before a kill: %d consumed, %d acknowledged, of which %d came back, %d marked redelivered; "+
			"of the %d not acknowledged %d came back, %d marked redelivered)", len(pre.delivered), len(pre.acked), ackedBack,
			ackedRedelivered, len(pre.delivered)-len(pre.acked), unackedBack, unackedRedelivered)
	}
	return s, problems
}

// newestSegment returns the path of the newest segment file, or "".
func (c *crashRun) newestSegment() string {
	segs, _ := storeFiles(c.t, c.storeDir)
	if len(segs) == 0 {
		return ""
	}
	return segs[len(segs)-1]
}

// appendGarbage appends a partial copy of the last record (if partial) or
// random bytes to the newest segment file, as a crash in the middle of a write leaves
// it. The store must truncate it (a torn tail: no later write follows) and
// lose nothing confirmed. It returns what it did, "" if there was no
// segment.
func (c *crashRun) appendGarbage(rng *rand.Rand, partial bool) string {
	t := c.t
	path := c.newestSegment()
	if path == "" {
		t.Logf("no segment file to tear")
		return ""
	}
	recs, _, err := readSegment(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var junk []byte
	what := ""
	if len(recs) > 0 && partial {
		r := recs[len(recs)-1]
		n := 1 + rng.IntN(r.size-1)
		junk = data[r.off : r.off+n : r.off+n]
		what = fmt.Sprintf("%d bytes of a copy of its last record appended", n)
	} else {
		junk = make([]byte, 1+rng.IntN(512))
		for i := range junk {
			junk[i] = byte(rng.Uint32())
		}
		what = fmt.Sprintf("%d random bytes appended", len(junk))
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(junk); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf(", %s: %s (%d records, %d bytes before)", filepath.Base(path), what, len(recs), len(data))
}

// truncateMidRecord cuts the newest segment file inside one of its
// records, as a lost tail would. The store must truncate the partial
// record with a warning and keep the records before it. It returns what
// it did ("" if there was no record to cut), the message copies cut off
// and those before the cut (of this iteration's checked queues).
func (c *crashRun) truncateMidRecord(rng *rand.Rand, it int) (string, map[msgKey]bool, map[msgKey]bool) {
	t := c.t
	path := c.newestSegment()
	if path == "" {
		t.Logf("no segment file to truncate")
		return "", nil, nil
	}
	recs, end, err := readSegment(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if len(recs) == 0 {
		t.Logf("%s has no whole record to cut", path)
		return "", nil, nil
	}
	k := rng.IntN(len(recs))
	r := recs[k]
	at := r.off + 1 + rng.IntN(r.size-1)
	cut, intact := map[msgKey]bool{}, map[msgKey]bool{}
	for i, r := range recs {
		iter, pub, seq, ok := parseCrashBody(r.body)
		_, name, _ := strings.Cut(r.queue, "\x00")
		if !ok || iter != it || name == crashFence {
			continue
		}
		if i < k {
			intact[msgKey{name, pub, seq}] = true
		} else {
			cut[msgKey{name, pub, seq}] = true
		}
	}
	if err := os.Truncate(path, int64(at)); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf(", %s cut at %d (of %d) inside record %d of %d: %d copies cut off", filepath.Base(path), at, end, k,
		len(recs), len(cut)), cut, intact
}

// TestCrashCorruptSegment: damage that is not a torn tail — a bad record in
// a segment that is not the last, or in the last one before a later write
// — is never dropped silently: broker/store's Open fails with a
// CorruptError naming the file, so substrate must refuse to start and say
// which file. Once the file is repaired, it starts and every message is
// there, in order.
func TestCrashCorruptSegment(t *testing.T) {
	s := newServer(t)
	s.proc = start(t, nil, s.args()...)
	s.waitReady(30 * time.Second)
	storeDir := filepath.Join(s.dataDir, "broker")
	// publish sends messages from..to to crash.classic, each waiting for its
	// confirm: each is a write of its own (its record flagged as the first
	// of a write).
	publish := func(from, to int) {
		t.Helper()
		conn, err := dialAMQP(s, "guest", "guest")
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ch, err := conn.Channel()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ch.QueueDeclare(crashClassic, true, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
		if err := ch.Confirm(false); err != nil {
			t.Fatal(err)
		}
		for seq := from; seq <= to; seq++ {
			dc, err := ch.PublishWithDeferredConfirm("", crashClassic, false, false, amqp.Publishing{
				DeliveryMode: amqp.Persistent, Body: crashBody(0, 0, seq)})
			if err != nil {
				t.Fatal(err)
			}
			if !dc.Wait() {
				t.Fatalf("seq %d not confirmed", seq)
			}
		}
	}
	publish(1, 60)
	s.stop(syscall.SIGKILL)
	s.restart(t)
	publish(61, 120) // in a new segment: the first one is no longer the last
	s.stop(syscall.SIGKILL)

	segs, _ := storeFiles(t, storeDir)
	if len(segs) != 2 {
		t.Fatalf("want 2 segment files after two runs, have %v", segs)
	}
	// flip damages one byte in the body of record k of path and returns
	// the repair.
	flip := func(path string, k int) func() {
		t.Helper()
		recs, _, err := readSegment(path)
		if err != nil || len(recs) <= k {
			t.Fatalf("%s: %d records, %v", path, len(recs), err)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		at := recs[k].off + recs[k].size - 1 // last body byte
		data[at] ^= 0x55
		if err := os.WriteFile(path, data, 0o640); err != nil {
			t.Fatal(err)
		}
		return func() {
			data[at] ^= 0x55
			if err := os.WriteFile(path, data, 0o640); err != nil {
				t.Fatal(err)
			}
		}
	}
	refuses := func(what, path string) {
		t.Helper()
		p := start(t, nil, s.args()...)
		select {
		case <-p.ready:
			t.Errorf("%s: substrate started (confirmed data dropped silently?):\n%s", what, p.output())
			p.stop(syscall.SIGKILL)
		case <-p.exited:
			out := p.output()
			if code := p.cmd.ProcessState.ExitCode(); code == 0 {
				t.Errorf("%s: exit status 0", what)
			}
			if !strings.Contains(out, filepath.Base(path)) || !strings.Contains(out, "corrupt") {
				t.Errorf("%s: the error does not say corrupt and name %s:\n%s", what, filepath.Base(path), out)
			}
			t.Logf("%s: refused to start: %s", what, strings.Join(logLines(out, "corrupt"), " | "))
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: neither ready nor exited after 30 s:\n%s", what, p.output())
		}
	}
	repair := flip(segs[0], 30)
	refuses("a bad record in a segment that is not the last", segs[0])
	repair()
	repair = flip(segs[1], 20)
	refuses("a bad record in the last segment with later writes after it", segs[1])
	repair()

	s.restart(t)
	if lines := logLines(s.output(), "level=ERROR"); len(lines) > 0 {
		t.Errorf("after the repair, substrate logged errors:\n%s", strings.Join(lines, "\n"))
	}
	conn, err := dialAMQP(s, "guest", "guest")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	for want := 1; want <= 120; want++ {
		d, ok, err := ch.Get(crashClassic, true)
		if err != nil || !ok {
			t.Fatalf("after the repair: message %d missing (%v)", want, err)
		}
		if iter, pub, seq, good := parseCrashBody(d.Body); !good || iter != 0 || pub != 0 || seq != want {
			t.Fatalf("after the repair: got %s, want seq %d", describeDelivery(d), want)
		}
	}
	if d, ok, _ := ch.Get(crashClassic, true); ok {
		t.Fatalf("after the repair: an extra message %s", describeDelivery(d))
	}
}
