package replica

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"substrate/broker/store"
)

var errNotLeader = errors.New("test: not leader")

// syncProposer applies every entry to its state machines on the
// proposing goroutine, then answers: a leader whose Raft commits at once.
// With refuse set, Propose returns it at once; with fail set, done gets it
// (the entry applied nowhere).
type syncProposer struct {
	mu      sync.Mutex
	sms     []*StateMachine
	index   uint64
	entries [][]byte
	refuse  error
	fail    error
}

func (p *syncProposer) Propose(data []byte, done func(error)) error {
	p.mu.Lock()
	if p.refuse != nil {
		err := p.refuse
		p.mu.Unlock()
		return err
	}
	if p.fail != nil {
		err := p.fail
		p.mu.Unlock()
		done(err)
		return nil
	}
	p.index++
	p.entries = append(p.entries, bytes.Clone(data))
	for _, sm := range p.sms {
		sm.Apply(p.index, data)
	}
	p.mu.Unlock()
	done(nil)
	return nil
}

func (p *syncProposer) set(refuse, fail error) {
	p.mu.Lock()
	p.refuse, p.fail = refuse, fail
	p.mu.Unlock()
}

func (p *syncProposer) numEntries() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.entries)
}

func (p *syncProposer) entry(i int) []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.entries[i]
}

// asyncProposer is a three-replica group: an apply goroutine applies each
// proposed entry to every state machine in order, then answers done, as
// raftnode does. Entries wait while the gate is held.
type asyncProposer struct {
	sms []*StateMachine
	in  chan proposal

	mu      sync.Mutex
	gate    chan struct{} // nil: open
	entries [][]byte
	index   uint64
	fail    error
	quit    chan struct{}
	done    chan struct{}
}

type proposal struct {
	data []byte
	done func(error)
}

func newAsyncProposer(t testing.TB, n int) *asyncProposer {
	p := &asyncProposer{in: make(chan proposal, 16), quit: make(chan struct{}), done: make(chan struct{})}
	for range n {
		p.sms = append(p.sms, NewStateMachine())
	}
	go p.run()
	t.Cleanup(p.stop)
	return p
}

func (p *asyncProposer) Propose(data []byte, done func(error)) error {
	select {
	case p.in <- proposal{bytes.Clone(data), done}:
		return nil
	case <-p.quit:
		return errNotLeader
	}
}

func (p *asyncProposer) run() {
	defer close(p.done)
	for {
		var pr proposal
		select {
		case pr = <-p.in:
		case <-p.quit:
			return
		}
		p.mu.Lock()
		gate := p.gate
		p.mu.Unlock()
		if gate != nil {
			select {
			case <-gate:
			case <-p.quit:
				pr.done(errNotLeader)
				return
			}
		}
		p.mu.Lock()
		fail := p.fail
		if fail == nil {
			p.index++
			p.entries = append(p.entries, pr.data)
			for _, sm := range p.sms {
				sm.Apply(p.index, pr.data)
			}
		}
		p.mu.Unlock()
		pr.done(fail)
	}
}

// hold makes later entries wait until release.
func (p *asyncProposer) hold() {
	p.mu.Lock()
	p.gate = make(chan struct{})
	p.mu.Unlock()
}

func (p *asyncProposer) release() {
	p.mu.Lock()
	if p.gate != nil {
		close(p.gate)
		p.gate = nil
	}
	p.mu.Unlock()
}

func (p *asyncProposer) stop() {
	select {
	case <-p.quit:
	default:
		close(p.quit)
	}
	<-p.done
}

func (p *asyncProposer) numEntries() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.entries)
}

func (p *asyncProposer) entry(i int) []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.entries[i]
}

// checkEqual fails unless every replica holds the same state.
func (p *asyncProposer) checkEqual(t testing.TB) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	want, err := p.sms[0].Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	for i, sm := range p.sms[1:] {
		got, err := sm.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("replica %d differs from replica 0 (%d vs %d bytes)", i+1, len(got), len(want))
		}
	}
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// settle waits until nothing is queued or in flight in l.
func settle(t testing.TB, l *Log) {
	t.Helper()
	waitFor(t, "the log to drain", func() bool { return l.Stats().Pending == 0 })
}

func msg(queue string, i int, bodySize int) *store.Message {
	body := make([]byte, bodySize)
	for k := range body {
		body[k] = byte(i + k)
	}
	return &store.Message{Queue: queue, Exchange: "ex", RoutingKey: "rk." + queue, Props: []byte{0x80, 0x00, byte(i)}, Body: body}
}

func recovered(t testing.TB, l store.Log) []store.Entry {
	t.Helper()
	var es []store.Entry
	if err := l.Recover(func(e store.Entry) error { es = append(es, e); return nil }); err != nil {
		t.Fatal(err)
	}
	return es
}

func waitAll(t testing.TB, cs ...*store.Commit) {
	t.Helper()
	for _, c := range cs {
		select {
		case <-c.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("commit not done after 10 s")
		}
		if err := c.Err(); err != nil {
			t.Fatal(err)
		}
	}
}

// decoded returns entry data as a readable list of records.
func decoded(t testing.TB, data []byte) []string {
	t.Helper()
	recs, err := decodeBatch(data)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range recs {
		switch r.kind {
		case kindAppend:
			out = append(out, fmt.Sprintf("append %d %s", r.id, r.msg.Queue))
		case kindDelivered:
			out = append(out, fmt.Sprintf("delivered %d", r.id))
		case kindAck:
			out = append(out, fmt.Sprintf("ack %d", r.id))
		case kindDropQueue:
			out = append(out, "drop "+r.queue)
		}
	}
	return out
}
