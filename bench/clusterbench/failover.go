package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"substrate/internal/rabbitmqtest"
)

// foResult is what runFailover measured.
type foResult struct {
	leadMs, followMs float64 // -1: no post-kill publish confirmed by foDeadline
	reconns, lost    int64
	nacks            int64
	nackNote         string // when the nacks came
	problems         string
}

// runFailover runs two failover publishers on queue, one starting on
// leadAddrs[0] (the leader), one on follAddrs[0] (another node), each
// reconnecting through the rest of its list in turn; once both have had
// confirms for foSteady it calls kill and measures, per publisher, kill ->
// the first confirm of a publish made at or after the kill.
func runFailover(ctx context.Context, leadAddrs, follAddrs []string, queue string, kill func()) (foResult, error) {
	res := foResult{leadMs: -1, followMs: -1}
	pa, pb := newFoPublisher(leadAddrs, queue), newFoPublisher(follAddrs, queue)
	var wg sync.WaitGroup
	wg.Go(pa.run)
	wg.Go(pb.run)
	defer func() {
		pa.stop()
		pb.stop()
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second): // a dial or declare still bounded by its own timeout
		}
	}()
	for _, p := range []*foPublisher{pa, pb} {
		select {
		case <-p.steady:
		case <-ctx.Done():
			return res, ctx.Err()
		case <-time.After(setupTimeout):
			last, _ := p.lastErr.Load().(string)
			return res, fmt.Errorf("no confirm through %s within %v before the kill (last error: %s)", p.addrs[0], setupTimeout, last)
		}
	}
	sleepCtx(ctx, foSteady)
	t := time.Now()
	pa.killedAt.Store(&t)
	pb.killedAt.Store(&t)
	kill()
	deadline := time.After(foDeadline)
	for i, p := range []*foPublisher{pa, pb} {
		select {
		case <-p.after:
			ms := float64(p.firstOK.Sub(t)) / float64(time.Millisecond)
			if i == 0 {
				res.leadMs = ms
			} else {
				res.followMs = ms
			}
		case <-deadline:
			last, _ := p.lastErr.Load().(string)
			res.problems += fmt.Sprintf("publisher starting on %s: no post-kill publish confirmed within %v (last error: %s); ", p.addrs[0], foDeadline, last)
		case <-ctx.Done():
			return res, ctx.Err()
		}
	}
	for _, p := range []*foPublisher{pa, pb} {
		res.reconns += p.reconns.Load()
		res.lost += p.lost.Load()
		if n := p.nacks.Load(); n > 0 {
			res.nacks += n
			p.nackMu.Lock()
			res.nackNote += fmt.Sprintf("publisher starting on %s: %d nack(s) from %+.0f ms to %+.0f ms after the kill; ", p.addrs[0], n,
				float64(p.nackSpan[0].Sub(t))/float64(time.Millisecond), float64(p.nackSpan[1].Sub(t))/float64(time.Millisecond))
			p.nackMu.Unlock()
		}
	}
	return res, nil
}

// rotate returns addrs of nodes first, first+1, ... (mod n).
func rotate(addr func(int) string, first int) []string {
	var s []string
	for k := range hosts {
		s = append(s, addr((first+k)%len(hosts)))
	}
	return s
}

// declareQueue declares quorum queue q through addr (its leader lands on
// that node) or, with del, deletes it.
func declareQueue(addr, q string, del bool) error {
	c, err := dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	return withTimeout(c, setupTimeout, func() error {
		ch, err := c.Channel()
		if err != nil {
			return err
		}
		if del {
			_, err = ch.QueueDelete(q, false, false, false)
		} else {
			_, err = ch.QueueDeclare(q, true, false, false, false, quorumArgs)
		}
		return err
	})
}

func (fo *failover) fill(r foResult) {
	fo.LeadMs, fo.FollMs, fo.Reconns, fo.Lost, fo.Nacks, fo.NackNote, fo.Problems = r.leadMs, r.followMs, r.reconns, r.lost, r.nacks, r.nackNote, r.problems
	fo.Load1 = load1()
}

// slowFailover (ms) is the failover past which the report shows the
// surviving nodes' log lines from the kill on.
const slowFailover = 1000

// failoverSubstrate kills the node whose broker is active, then restarts
// it from its data dir and waits until it is ready again.
func failoverSubstrate(ctx context.Context, sc *substrateCluster) (failover, error) {
	var fo failover
	l, err := sc.leader(ctx, 30*time.Second, -1)
	if err != nil {
		return fo, err
	}
	fo.Killed = sc.nodes[l].host
	if lead, err := sc.etcdLeads(l); err == nil {
		fo.EtcdLeader = map[bool]string{true: "yes", false: "no"}[lead]
	}
	q := "clusterbench.fo." + rabbitmqtest.RandomHex(4)
	if err := declareQueue(sc.addr(l), q, false); err != nil {
		return fo, fmt.Errorf("queue.declare: %w", err)
	}
	var newLeader int
	var killed time.Time
	res, err := runFailover(ctx, rotate(sc.addr, l), rotate(sc.addr, l+1), q, func() {
		killed = time.Now()
		sc.kill(l)
	})
	fo.fill(res)
	if res.leadMs > slowFailover || res.followMs > slowFailover || res.leadMs < 0 || res.followMs < 0 {
		fo.Trace = sc.logsSince(killed, l)
	}
	if err != nil {
		return fo, err
	}
	if newLeader, err = sc.leader(ctx, 30*time.Second, l); err != nil {
		return fo, err
	}
	fo.NewLeader = sc.nodes[newLeader].host
	if err := sc.restart(ctx, l); err != nil {
		return fo, fmt.Errorf("restarting %s: %w", sc.nodes[l].name, err)
	}
	if err := declareQueue(sc.addr(newLeader), q, true); err != nil {
		fo.Problems += "queue.delete: " + err.Error()
	}
	return fo, nil
}

// failoverRabbit declares the queue through node r%3 and kills its leader
// node (as rabbitmq-queues quorum_status reports it), then restarts that node
// and waits until the queue has a member online on all three nodes again.
func failoverRabbit(ctx context.Context, rc *rabbitCluster, r int) (failover, error) {
	var fo failover
	d := r % len(hosts)
	q := "clusterbench.fo." + rabbitmqtest.RandomHex(4)
	if err := declareQueue(rc.addr(d), q, false); err != nil {
		return fo, fmt.Errorf("queue.declare: %w", err)
	}
	st, err := rc.waitOnline(ctx, d, q)
	if err != nil {
		return fo, err
	}
	l := rc.nodeIndex(st.Leader)
	if l < 0 {
		return fo, fmt.Errorf("queue %s: leader %q is none of %v", q, st.Leader, rc.nodeNames())
	}
	fo.Killed = rc.nodes[l].host
	res, err := runFailover(ctx, rotate(rc.addr, l), rotate(rc.addr, l+1), q, func() {
		rc.kill(l)
	})
	fo.fill(res)
	if err != nil {
		return fo, err
	}
	other := (l + 1) % len(hosts)
	if st, err := rc.queue(ctx, other, q); err == nil {
		if i := rc.nodeIndex(st.Leader); i >= 0 {
			fo.NewLeader = rc.nodes[i].host
		}
	}
	if err := rc.boot(ctx, rc.nodes[l]); err != nil {
		return fo, fmt.Errorf("restarting %s: %w\n%s", rc.nodes[l].node, err, rabbitmqtest.LastLines(rc.nodes[l].logs(), 20))
	}
	if _, err := rc.waitOnline(ctx, other, q); err != nil {
		return fo, err
	}
	if err := declareQueue(rc.addr(other), q, true); err != nil {
		fo.Problems += "queue.delete: " + err.Error()
	}
	return fo, nil
}

// waitOnline polls (through node i) until quorum queue q has a member
// online on every node, for at most 90 s.
func (rc *rabbitCluster) waitOnline(ctx context.Context, i int, q string) (queueStatus, error) {
	deadline := time.Now().Add(90 * time.Second)
	for {
		st, err := rc.queue(ctx, i, q)
		if err == nil && len(st.Online) == len(rc.nodes) && st.Leader != "" {
			return st, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return st, fmt.Errorf("queue %s not online on all nodes within 90 s: %+v, %v", q, st, err)
		}
		sleepCtx(ctx, 500*time.Millisecond)
	}
}
