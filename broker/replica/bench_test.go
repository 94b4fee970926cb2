package replica

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkAppendCommit is one publisher: Append a 1 KiB message and wait
// for its Commit, with a proposer that applies at once (the Log's own
// cost: encoding, batching, applying, completing).
func BenchmarkAppendCommit(b *testing.B) {
	p := &applyProposer{sm: NewStateMachine()}
	l := NewLog(p.sm, p)
	defer l.Close()
	m := msg("q", 1, 1024)
	b.SetBytes(1024)
	b.ReportAllocs()
	for b.Loop() {
		id, c, err := l.Append(m)
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Wait(); err != nil {
			b.Fatal(err)
		}
		l.Ack(id)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkAppendCommitParallel is many publishers (GOMAXPROCS x 8), each
// waiting for its Commit: group commit puts many appends in one entry.
func BenchmarkAppendCommitParallel(b *testing.B) {
	p := &applyProposer{sm: NewStateMachine()}
	l := NewLog(p.sm, p)
	defer l.Close()
	b.SetBytes(1024)
	b.ReportAllocs()
	b.SetParallelism(8)
	var n atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		m := msg("q", 1, 1024)
		for pb.Next() {
			id, c, err := l.Append(m)
			if err != nil {
				b.Error(err)
				return
			}
			if err := c.Wait(); err != nil {
				b.Error(err)
				return
			}
			l.Ack(id)
			n.Add(1)
		}
	})
	b.ReportMetric(float64(n.Load())/b.Elapsed().Seconds(), "msgs/s")
	b.ReportMetric(float64(n.Load())/float64(max(p.index.Load(), 1)), "msgs/entry")
}

// applyProposer applies each entry at once and keeps nothing else.
type applyProposer struct {
	sm    *StateMachine
	index atomic.Uint64
}

func (p *applyProposer) Propose(data []byte, done func(error)) error {
	p.sm.Apply(p.index.Add(1), data)
	done(nil)
	return nil
}

// BenchmarkAppendCommitRaftLatency is 64 publishers (GOMAXPROCS x 32)
// with a proposer that answers each entry 1 ms after it was proposed (a
// Raft round trip with WAL fsyncs): the Log puts what arrives meanwhile in
// the next entry. inflight=1 is NewLog's; more lets entries overlap, as
// Raft can pipeline them.
func BenchmarkAppendCommitRaftLatency(b *testing.B) {
	for _, inflight := range []int{1, 2, 4} {
		b.Run(fmt.Sprintf("inflight=%d", inflight), func(b *testing.B) {
			p := &slowProposer{sm: NewStateMachine(), delay: time.Millisecond}
			l := newLog(p.sm, p, inflight)
			defer l.Close()
			b.SetBytes(1024)
			b.SetParallelism(32)
			var n atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				m := msg("q", 1, 1024)
				for pb.Next() {
					id, c, err := l.Append(m)
					if err != nil {
						b.Error(err)
						return
					}
					if err := c.Wait(); err != nil {
						b.Error(err)
						return
					}
					l.Ack(id)
					n.Add(1)
				}
			})
			b.ReportMetric(float64(n.Load())/b.Elapsed().Seconds(), "msgs/s")
			b.ReportMetric(float64(n.Load())/float64(max(p.index.Load(), 1)), "msgs/entry")
		})
	}
}

// slowProposer answers each entry delay after it was proposed, on its
// own goroutine.
type slowProposer struct {
	sm    *StateMachine
	delay time.Duration
	index atomic.Uint64
}

func (p *slowProposer) Propose(data []byte, done func(error)) error {
	go func() {
		time.Sleep(p.delay) // the simulated commit latency, not a synchronization
		p.sm.Apply(p.index.Add(1), data)
		done(nil)
	}()
	return nil
}
