package raftnode

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"

	"go.etcd.io/etcd/client/pkg/v3/fileutil"
	"go.etcd.io/etcd/client/pkg/v3/types"
	"go.etcd.io/etcd/server/v3/storage/wal"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// The member table (doc.go, "Membership"): what every node knows of each
// member of the group, beyond the raft ID raft itself keeps. It changes
// only by conf change entries, whose Context carries the member's record
// (confContext), and is part of every snapshot this package writes
// (snapHeader), so a node rebuilds it on restart from its snapshot and
// its WAL, and a node that catches up from the leader's snapshot gets it
// whole.

// Member is one member of the group.
type Member struct {
	ID   uint64 `json:"id"`             // raft ID
	URL  string `json:"url,omitempty"`  // peer URL ("" while unknown: a member bootstrapped by an older version, until its record is updated)
	Name string `json:"name,omitempty"` // the application's name for it
	// Tag is the application's identity of the member (substrate: its
	// etcd member ID); 0 while unknown.
	Tag uint64 `json:"tag,omitempty"`
	// Learner: it receives the log but does not vote (not persisted: raft's
	// ConfState says it).
	Learner bool `json:"-"`
}

// MemberChange is what ChangeMember does.
type MemberChange int

// Membership changes.
const (
	// AddLearner adds a new member as a learner: it receives the log (a
	// snapshot first when the log was compacted past what it has) and
	// does not count for quorum.
	AddLearner MemberChange = iota + 1
	// Promote makes a learner a voter.
	Promote
	// Remove removes a member; its messages are refused from then on
	// (its ID is never used again). The leader cannot remove itself.
	Remove
	// Update replaces a member's record (URL, Name, Tag); the voters do
	// not change.
	Update
)

func (c MemberChange) String() string {
	switch c {
	case AddLearner:
		return "add learner"
	case Promote:
		return "promote"
	case Remove:
		return "remove"
	case Update:
		return "update"
	}
	return fmt.Sprintf("MemberChange(%d)", int(c))
}

// Errors of ChangeMember's done.
var (
	// ErrChangePending: a membership change is still being applied, or
	// this leader has not applied every entry of earlier terms yet (raft
	// takes one change at a time); try again later.
	ErrChangePending = errors.New("raftnode: a membership change is in progress")
	// ErrChangeRefused: the change does not apply to the current table
	// (an ID in use or removed before, not a learner, the leader itself).
	ErrChangeRefused = errors.New("raftnode: membership change refused")
	// ErrChangeTimeout: the change was not applied within confTimeout
	// election timeouts; it may still be.
	ErrChangeTimeout = errors.New("raftnode: membership change not applied in time")
)

// confTimeoutElections bounds how long a proposed change may take to
// apply, in election timeouts: raft may drop a conf change silently
// (it turns it into an empty entry when it thinks another is pending).
const confTimeoutElections = 20

// confContext is a conf change's Context: the member's record, and who
// proposed it (Node, Seq) so that the proposer can complete it.
type confContext struct {
	Member Member `json:"member"`
	Node   uint64 `json:"node,omitempty"`
	Seq    uint64 `json:"seq,omitempty"`
}

type confReq struct {
	op   MemberChange
	m    Member
	done func(error)
	term uint64
}

type confPending struct {
	seq   uint64
	done  func(error)
	ticks int // left before ErrChangeTimeout
}

// ChangeMember proposes one change of the group's membership (leader
// only; one at a time). done is called exactly once: nil once the change
// is applied here, or an error (ErrNotLeader, ErrLeadershipLost,
// ErrStopped, ErrChangePending, ErrChangeRefused, ErrChangeTimeout).
// For Promote and Remove only m.ID matters; for AddLearner m needs its
// ID and URL. As Propose, it returns an error after calling done with it
// when it fails at once, and done otherwise runs on the raft loop.
func (n *Node) ChangeMember(op MemberChange, m Member, done func(error)) error {
	return n.enqueue(done, func(done func(error), term uint64) {
		n.cqueue = append(n.cqueue, confReq{op: op, m: m, done: done, term: term})
	})
}

// Members returns the member table, by ID.
func (n *Node) Members() []Member {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.pubMembers)
}

// proposeConfQueued hands queued membership changes to raft (loop only).
func (n *Node) proposeConfQueued() {
	n.mu.Lock()
	q := n.cqueue
	n.cqueue = nil
	n.mu.Unlock()
	for _, r := range q {
		if err := n.proposeConf(r); err != nil {
			n.finish(r.done, err)
		}
	}
}

func (n *Node) proposeConf(r confReq) error {
	bs := n.rn.BasicStatus()
	switch {
	case bs.RaftState != raft.StateLeader || bs.GetTerm() != r.term:
		return ErrLeadershipLost
	case n.conf != nil || n.appliedTerm != bs.GetTerm():
		return ErrChangePending
	}
	cur, ok := n.members[r.m.ID]
	var typ raftpb.ConfChangeType
	rec := cur
	switch r.op {
	case AddLearner:
		switch {
		case r.m.ID == 0 || r.m.URL == "":
			return fmt.Errorf("%w: a new member needs an ID and a URL", ErrChangeRefused)
		case ok || slices.Contains(n.confState.GetVoters(), r.m.ID) || slices.Contains(n.confState.GetLearners(), r.m.ID):
			return fmt.Errorf("%w: ID %d is a member already", ErrChangeRefused, r.m.ID)
		case n.removed[r.m.ID]:
			return fmt.Errorf("%w: ID %d was removed before", ErrChangeRefused, r.m.ID)
		}
		typ, rec = raftpb.ConfChangeAddLearnerNode, r.m
	case Promote:
		if !slices.Contains(n.confState.GetLearners(), r.m.ID) {
			return fmt.Errorf("%w: %d is not a learner", ErrChangeRefused, r.m.ID)
		}
		typ = raftpb.ConfChangeAddNode
	case Remove:
		switch {
		case !ok && !slices.Contains(n.confState.GetVoters(), r.m.ID) && !slices.Contains(n.confState.GetLearners(), r.m.ID):
			return fmt.Errorf("%w: %d is not a member", ErrChangeRefused, r.m.ID)
		case r.m.ID == n.cfg.ID:
			return fmt.Errorf("%w: the leader does not remove itself (another leader must)", ErrChangeRefused)
		}
		typ = raftpb.ConfChangeRemoveNode
		if !ok {
			rec = Member{ID: r.m.ID}
		}
	case Update:
		if !ok {
			return fmt.Errorf("%w: %d is not a member", ErrChangeRefused, r.m.ID)
		}
		typ, rec = raftpb.ConfChangeUpdateNode, r.m
	default:
		return fmt.Errorf("%w: unknown change %d", ErrChangeRefused, r.op)
	}
	rec.Learner = false
	n.seq++
	ctx, err := json.Marshal(confContext{Member: rec, Node: n.cfg.ID, Seq: n.seq})
	if err != nil {
		return err
	}
	cc := &raftpb.ConfChange{Type: typ.Enum(), NodeId: new(r.m.ID), Context: ctx}
	if err := n.rn.ProposeConfChange(cc); err != nil {
		return ErrLeadershipLost // ErrProposalDropped: a leadership transfer
	}
	n.conf = &confPending{seq: n.seq, done: r.done, ticks: confTimeoutElections * n.cfg.ElectionTicks}
	n.pendingTerm = bs.GetTerm()
	n.log.Info("raftnode: membership change proposed", "change", r.op.String(), "member", r.m.ID, "name", rec.Name, "url", rec.URL)
	return nil
}

// confTick times out a change raft dropped (loop only, each tick).
func (n *Node) confTick() {
	if n.conf == nil {
		return
	}
	if n.conf.ticks--; n.conf.ticks <= 0 {
		done := n.conf.done
		n.conf = nil
		n.finish(done, ErrChangeTimeout)
	}
}

// failConf fails the pending change (loop only).
func (n *Node) failConf(err error) {
	if n.conf != nil {
		done := n.conf.done
		n.conf = nil
		n.finish(done, err)
	}
}

// applyConfEntry applies one committed conf change entry to raft and to
// the member table (loop only).
func (n *Node) applyConfEntry(e *raftpb.Entry) {
	var cc raftpb.ConfChangeI
	var changes []*raftpb.ConfChangeSingle
	var ctx []byte
	switch e.GetType() {
	case raftpb.EntryConfChange:
		var c raftpb.ConfChange
		if err := proto.Unmarshal(e.GetData(), &c); err != nil {
			panic(fmt.Errorf("raftnode: conf change at %d: %w", e.GetIndex(), err))
		}
		cc, ctx = &c, c.GetContext()
		changes = []*raftpb.ConfChangeSingle{{Type: c.Type, NodeId: c.NodeId}}
	default:
		var c raftpb.ConfChangeV2
		if err := proto.Unmarshal(e.GetData(), &c); err != nil {
			panic(fmt.Errorf("raftnode: conf change at %d: %w", e.GetIndex(), err))
		}
		cc, ctx, changes = &c, c.GetContext(), c.GetChanges()
	}
	if n.removed[n.cfg.ID] {
		return // this node was removed: it applies nothing more
	}
	n.confState = n.rn.ApplyConfChange(cc)
	var rec *confContext
	if len(ctx) > 0 {
		var c confContext
		if err := json.Unmarshal(ctx, &c); err == nil {
			rec = &c
		} else {
			n.log.Warn("raftnode: conf change with an unreadable member record", "index", e.GetIndex(), "err", err)
		}
	}
	for _, ch := range changes {
		id := ch.GetNodeId()
		if id == 0 {
			continue
		}
		switch ch.GetType() {
		case raftpb.ConfChangeAddNode, raftpb.ConfChangeAddLearnerNode, raftpb.ConfChangeUpdateNode:
			m, ok := n.members[id]
			if rec != nil && rec.Member.ID == id {
				m = rec.Member
			} else if !ok {
				m = Member{ID: id}
			}
			n.members[id] = m
			n.log.Info("raftnode: member", "change", ch.GetType().String(), "id", id, "name", m.Name, "url", m.URL, "index", e.GetIndex())
		case raftpb.ConfChangeRemoveNode:
			delete(n.members, id)
			n.removed[id] = true
			n.log.Info("raftnode: member removed", "id", id, "index", e.GetIndex())
			if id == n.cfg.ID {
				n.log.Warn("raftnode: this node was removed from the group; it stops")
			}
		}
	}
	// A snapshot right away (maybeSnapshot): the leader sends a member
	// that needs one the newest snapshot, and raft refuses a snapshot
	// whose configuration lacks the receiver, so a learner just added
	// must not be offered one from before its addition. (Not for the
	// bootstrap's changes, at term 1.)
	if e.GetTerm() > 1 {
		n.snapNow = true
	}
	if rec != nil && rec.Node == n.cfg.ID && n.conf != nil && rec.Seq == n.conf.seq {
		n.completed = append(n.completed, n.conf.done)
		n.conf = nil
	}
	n.membersChanged()
}

// membersChanged marks learners, publishes the table and brings the
// transport's peers in line with it (loop only, and Start).
func (n *Node) membersChanged() {
	learners := n.confState.GetLearners()
	for id, m := range n.members {
		m.Learner = slices.Contains(learners, id)
		n.members[id] = m
	}
	list, removed := n.sortedMembers(), maps.Clone(n.removed)
	n.mu.Lock()
	n.pubMembers, n.pubRemoved = list, removed
	n.mu.Unlock()
	if n.transport == nil {
		return
	}
	for id, m := range n.members {
		if id == n.cfg.ID || m.URL == "" {
			continue
		}
		if u, ok := n.tpeers[id]; !ok {
			n.transport.AddPeer(types.ID(id), []string{m.URL})
		} else if u != m.URL {
			n.transport.UpdatePeer(types.ID(id), []string{m.URL})
		}
		n.tpeers[id] = m.URL
	}
	for id := range n.tpeers {
		if m, ok := n.members[id]; !ok || m.URL == "" {
			n.transport.RemovePeer(types.ID(id))
			delete(n.tpeers, id)
		}
	}
}

// sortedMembers is the member table by ID (loop only).
func (n *Node) sortedMembers() []Member {
	return slices.SortedFunc(maps.Values(n.members), func(a, b Member) int { return cmp.Compare(a.ID, b.ID) })
}

// isVoter reports whether this node votes in the current configuration
// (loop only).
func (n *Node) isVoter() bool {
	return slices.Contains(n.confState.GetVoters(), n.cfg.ID) || slices.Contains(n.confState.GetVotersOutgoing(), n.cfg.ID)
}

// bootstrapPeers is the bootstrap's members with their records.
func (n *Node) bootstrapPeers() ([]raft.Peer, error) {
	rp := make([]raft.Peer, 0, len(n.cfg.Peers))
	for id, u := range n.cfg.Peers {
		ctx, err := json.Marshal(confContext{Member: Member{ID: id, URL: u, Name: n.cfg.Names[id]}})
		if err != nil {
			return nil, err
		}
		rp = append(rp, raft.Peer{ID: id, Context: ctx})
	}
	slices.SortFunc(rp, func(a, b raft.Peer) int { return cmp.Compare(a.ID, b.ID) })
	return rp, nil
}

// seedMembers is the table before the snapshot and the log are read:
// the bootstrap's members (Peers, Names) for a node that bootstrapped,
// nothing for one that joined.
func (n *Node) seedMembers(joined bool) {
	n.members, n.removed, n.tpeers = map[uint64]Member{}, map[uint64]bool{}, map[uint64]string{}
	if joined {
		return
	}
	for id, u := range n.cfg.Peers {
		n.members[id] = Member{ID: id, URL: u, Name: n.cfg.Names[id]}
	}
}

// A snapshot's data is a header with the member table, then the
// StateMachine's data. Snapshots without the header (written before the
// table existed) are the state machine's data alone.
var snapMagic = []byte("RNMB\x01")

type snapTable struct {
	Members []Member `json:"members"`
	Removed []uint64 `json:"removed,omitempty"`
}

// encodeSnap prefixes sm's data with the member table (loop only).
func (n *Node) encodeSnap(data []byte) ([]byte, error) {
	hdr, err := json.Marshal(snapTable{Members: n.sortedMembers(), Removed: slices.Sorted(maps.Keys(n.removed))})
	if err != nil {
		return nil, err
	}
	b := make([]byte, 0, len(snapMagic)+4+len(hdr)+len(data))
	b = append(b, snapMagic...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(hdr)))
	b = append(b, hdr...)
	return append(b, data...), nil
}

// decodeSnap splits a snapshot's data: the table (nil without a header)
// and the state machine's data.
func decodeSnap(b []byte) (*snapTable, []byte, error) {
	if !bytes.HasPrefix(b, snapMagic) {
		return nil, b, nil
	}
	rest := b[len(snapMagic):]
	if len(rest) < 4 {
		return nil, nil, errors.New("raftnode: snapshot member table truncated")
	}
	l := binary.BigEndian.Uint32(rest)
	rest = rest[4:]
	if uint64(l) > uint64(len(rest)) {
		return nil, nil, errors.New("raftnode: snapshot member table truncated")
	}
	var t snapTable
	if err := json.Unmarshal(rest[:l], &t); err != nil {
		return nil, nil, fmt.Errorf("raftnode: snapshot member table: %w", err)
	}
	return &t, rest[l:], nil
}

// restoreTable installs a snapshot's table (loop only, and Start).
func (n *Node) restoreTable(t *snapTable) {
	if t == nil {
		return
	}
	n.members, n.removed = map[uint64]Member{}, map[uint64]bool{}
	for _, m := range t.Members {
		n.members[m.ID] = m
	}
	for _, id := range t.Removed {
		n.removed[id] = true
	}
}

// The identity file: Dir/member.json records the raft ID the WAL
// belongs to and whether the node joined a running group (then its table
// comes from the leader only). Written before the WAL is created.
const idFile = "member.json"

type identity struct {
	ID     uint64 `json:"id"`
	Joined bool   `json:"joined,omitempty"`
}

// LocalID returns the raft ID recorded in dir and whether that node
// joined a running group (id 0: none recorded: no log, or one written
// before the record existed, whose ID is the bootstrap's).
func LocalID(dir string) (id uint64, joined bool, err error) {
	b, err := os.ReadFile(filepath.Join(dir, idFile))
	if errors.Is(err, os.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("raftnode: %w", err)
	}
	var v identity
	if err := json.Unmarshal(b, &v); err != nil || v.ID == 0 {
		return 0, false, fmt.Errorf("raftnode: %s: not a member record (%v)", filepath.Join(dir, idFile), err)
	}
	return v.ID, v.Joined, nil
}

// HasLog reports whether dir holds a Raft log (a node started there before).
func HasLog(dir string) bool { return wal.Exist(filepath.Join(dir, "wal")) }

func writeIdentity(dir string, v identity) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	p := filepath.Join(dir, idFile)
	tmp := p + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, fileutil.PrivateFileMode)
	if err != nil {
		return err
	}
	if _, err = f.Write(b); err == nil {
		err = fileutil.Fsync(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, p)
	}
	if err == nil {
		var d *os.File
		if d, err = os.Open(dir); err == nil {
			err = fileutil.Fsync(d)
			d.Close()
		}
	}
	if err != nil {
		return fmt.Errorf("raftnode: write %s: %w", p, err)
	}
	return nil
}

// removedError answers a removed member's pipeline messages with 403,
// which rafthttp's sender takes as "this member was removed" (rafthttp's
// writerToResponse, as etcd's server answers).
type removedError struct{}

func (removedError) Error() string { return "raftnode: message from a removed member" }
func (removedError) WriteTo(w http.ResponseWriter) {
	http.Error(w, "cannot process message from removed member", http.StatusForbidden)
}
