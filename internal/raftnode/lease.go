package raftnode

import (
	"encoding/binary"
	"time"

	"go.etcd.io/raft/v3"
)

// A leader lease fences what a leader does outside the log (the broker's
// deliveries from memory): Lease(term).Held() is true only while no other
// node can have been elected. Raft alone does not give that: a leader
// frozen (SIGSTOP, a long pause) or cut off keeps believing it leads until
// it hears a higher term, while the others elect a new leader and go on.
//
// How it holds. With CheckQuorum, a follower that heard the leader less
// than ElectionTicks ticks ago refuses every (pre-)vote (raft's "in lease"
// check). Each tick the leader sends a ReadIndex request stamped with the
// time it was sent (t0); raft answers it (a ReadState) once a quorum
// acknowledged the heartbeat that carries it, so each of that quorum
// heard the leader after t0 and refuses votes until at least ElectionTicks
// ticks after that: (ElectionTicks-1) tick intervals of real time, since
// a ticker never fires early or in bursts. Any new leader needs a vote
// from a member of that quorum (two majorities meet), and none of them
// votes, or campaigns itself, before then, so none can exist before
// t0 + (ElectionTicks-1) intervals. The lease ends half a tick before that (leaseDuration), the
// margin for the clocks' rates.
//
// What it assumes. The failure detector (leaderGone) makes a follower
// forget its leader early, which breaks that follower's promise; it fires
// only once the follower's transport lost every connection with the
// leader: the leader process died (its sockets closed), or the connection
// was idle past rafthttp's 5 s timeouts, long after any lease based on it
// ended. A process paused between Held and the write it guards (a few
// instructions) can still act late; that window is every lease's.
//
// Membership changes. raft counts a ReadIndex's acknowledgements in the
// leader's configuration at the time; single-step changes (members.go)
// keep the majorities of two consecutive configurations overlapping, so
// a lease granted in one still meets every majority of the next. It may
// not meet those of the one after, so voter changes must be more than a
// lease apart: internal/cluster makes at most one change a second
// (leaseDuration is less than ElectionTicks ticks).
type leaseState struct {
	term     uint64
	leader   bool          // this node leads in term
	until    time.Duration // since epoch (monotonic); zero: not held
	renewed  chan struct{} // closed when a newer state replaces this one
	stopping bool
}

// epoch is the base of the lease's monotonic times.
var epoch = time.Now()

func monoNow() time.Duration { return time.Since(epoch) }

// maxLeaseReads bounds the ReadIndex requests awaiting a quorum (a
// partitioned leader sends one a tick until CheckQuorum deposes it).
const maxLeaseReads = 64

// leaseDuration is how long after t0 a quorum's acknowledgement keeps the
// lease (see leaseState).
func (c *Config) leaseDuration() time.Duration {
	return time.Duration(c.ElectionTicks-1)*c.TickInterval - c.TickInterval/2
}

// renewLease asks the quorum to confirm this leader (loop only, each
// tick): a ReadIndex whose context is the time it was sent.
func (n *Node) renewLease() {
	if n.rn.BasicStatus().RaftState != raft.StateLeader {
		return
	}
	if len(n.leaseReads) >= maxLeaseReads {
		return
	}
	n.leaseSeq++
	n.leaseReads[n.leaseSeq] = monoNow()
	var ctx [9]byte
	ctx[0] = 'L'
	binary.BigEndian.PutUint64(ctx[1:], n.leaseSeq)
	n.rn.ReadIndex(ctx[:])
}

// leaseReadStates extends the lease with the quorum's answers (loop only,
// each Ready).
func (n *Node) leaseReadStates(rss []raft.ReadState) {
	best := time.Duration(0)
	for _, rs := range rss {
		if len(rs.RequestCtx) != 9 || rs.RequestCtx[0] != 'L' {
			continue
		}
		seq := binary.BigEndian.Uint64(rs.RequestCtx[1:])
		t0, ok := n.leaseReads[seq]
		if !ok {
			continue
		}
		// Answers come in request order: every older request is
		// answered (or was dropped by raft) by now.
		for s := range n.leaseReads {
			if s <= seq {
				delete(n.leaseReads, s)
			}
		}
		best = max(best, t0+n.cfg.leaseDuration())
	}
	if best == 0 {
		return
	}
	bs := n.rn.BasicStatus()
	if bs.RaftState != raft.StateLeader {
		return
	}
	cur := n.lease.Load()
	if cur.term == bs.GetTerm() && cur.leader && cur.until >= best {
		return
	}
	n.setLease(&leaseState{term: bs.GetTerm(), leader: true, until: best})
}

// leaseRole resets the lease when the role changes (loop only): a new
// term or a lost leadership ends it at once; a leader starts unleased.
func (n *Node) leaseRole(r Role) {
	cur := n.lease.Load()
	if cur.term == r.Term && cur.leader == r.IsLeader {
		return
	}
	clear(n.leaseReads)
	n.setLease(&leaseState{term: r.Term, leader: r.IsLeader})
}

func (n *Node) setLease(s *leaseState) {
	s.renewed = make(chan struct{})
	old := n.lease.Swap(s)
	close(old.renewed)
}

// Lease is the fence of one leadership term (Node.Lease).
type Lease struct {
	n    *Node
	term uint64
}

// Lease returns the fence of this node's leadership in term.
func (n *Node) Lease(term uint64) *Lease { return &Lease{n: n, term: term} }

// Held reports whether this node leads in the lease's term and no other
// node can have been elected yet. It is cheap (an atomic load and a
// clock read).
func (l *Lease) Held() bool {
	s := l.n.lease.Load()
	return s.term == l.term && s.leader && monoNow() < s.until
}

// Wait blocks until Held is true (it returns true) or can never be again
// (false): the node no longer leads in the term, or it stopped.
func (l *Lease) Wait() bool {
	for {
		s := l.n.lease.Load()
		if s.stopping || s.term > l.term || (s.term == l.term && !s.leader) {
			return false
		}
		if s.term == l.term && monoNow() < s.until {
			return true
		}
		<-s.renewed // the next renewal, role change or stop
	}
}

// stopLease ends every lease for good (shutdown).
func (n *Node) stopLease() {
	n.setLease(&leaseState{term: n.lease.Load().term, stopping: true})
}
