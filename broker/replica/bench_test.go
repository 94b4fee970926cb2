package replica

import (
	"sync/atomic"
	"testing"
)

// BenchmarkAppendCommit is one publisher: Append a 1 KiB message and wait
// for its Commit, with a proposer that applies at once (the Log's own
// cost: encoding, batching, applying, completing).
func BenchmarkAppendCommit(b *testing.B) {
	p := &syncProposer{sms: []*StateMachine{NewStateMachine()}}
	l := NewLog(p.sms[0], p)
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
	p := &syncProposer{sms: []*StateMachine{NewStateMachine()}}
	l := NewLog(p.sms[0], p)
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
	b.ReportMetric(float64(n.Load())/float64(max(p.numEntries(), 1)), "msgs/entry")
}
