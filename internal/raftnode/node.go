package raftnode

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/client/pkg/v3/types"
	"go.etcd.io/etcd/server/v3/etcdserver/api/rafthttp"
	"go.etcd.io/etcd/server/v3/etcdserver/api/snap"
	stats "go.etcd.io/etcd/server/v3/etcdserver/api/v2stats"
	"go.etcd.io/etcd/server/v3/storage/wal"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"

	"substrate/internal/logging"
)

// StateMachine is what the log is applied to. Apply, Snapshot and Restore
// are called from the node's one apply goroutine, never concurrently.
type StateMachine interface {
	// Apply applies one committed normal entry's data (never an empty or
	// conf-change entry) at index.
	Apply(index uint64, data []byte)
	// Snapshot returns the state as of the last applied index.
	Snapshot() ([]byte, error)
	// Restore replaces the state with a snapshot's data (at start-up from
	// the local snapshot, or one received from the leader).
	Restore(data []byte) error
}

// Config describes one member. Zero durations and counts take the
// defaults below.
type Config struct {
	ID       uint64            // this node, 1..n
	Peers    map[uint64]string // every member incl. this one: ID -> peer URL "http://127.0.0.11:25672"
	Dir      string            // WAL (Dir/wal) and snapshots (Dir/snap)
	Listener net.Listener      // optional: already bound peer listener (TLS already terminated when TLS is set); nil: listen on Peers[ID]'s host:port
	// TLS, when not nil, is etcd's peer TLS for this group: the transport
	// dials peers with it and a listener the node binds itself serves
	// it. Peer URLs are then https.
	TLS *transport.TLSInfo

	// Names optionally names Peers' members in the member table (the
	// bootstrap's conf changes carry each member's record).
	Names map[uint64]string
	// Join: with no WAL in Dir, the node does not bootstrap a group: it
	// waits for a group's leader to add it (ChangeMember) and learns the
	// members from it; Peers then holds this node's URL only. A node
	// with a WAL restarts as always.
	Join bool
	// ClusterID is the group's rafthttp cluster ID, which every member
	// must share; 0: derived from Peers (a group whose members all
	// bootstrap it). Required with Join.
	ClusterID uint64

	TickInterval    time.Duration // default 100ms
	ElectionTicks   int           // default 10 (1 s); heartbeat 1 tick
	SnapshotEntries uint64        // applied entries between snapshots (default 10000)
	Logger          *slog.Logger  // nil: discard
}

// Defaults.
const (
	DefaultTickInterval    = 100 * time.Millisecond
	DefaultElectionTicks   = 10
	DefaultSnapshotEntries = 10000

	// catchUpEntries is how many applied entries the in-memory log keeps
	// behind a snapshot, so that a follower a little behind gets entries,
	// not a snapshot. Never more than SnapshotEntries.
	catchUpEntries = 1000

	maxSizePerMsg   = 1 << 20
	maxInflightMsgs = 256

	// keepFiles is how many old .wal and .snap files are kept (etcd's
	// default --max-wals / --max-snapshots).
	keepFiles = 5
)

// Errors a done callback (and Propose) reports.
var (
	ErrNotLeader      = errors.New("raftnode: not the leader")
	ErrStopped        = errors.New("raftnode: node stopped")
	ErrLeadershipLost = errors.New("raftnode: leadership lost before the entry was applied")
)

// Role is the node's place in the group. Ready is true only for a leader
// that has applied an entry of its own term, hence every entry before it.
type Role struct {
	Term, Leader    uint64
	IsLeader, Ready bool
}

// Status is a point-in-time view of the node.
type Status struct {
	ID, Term, Leader, Commit, Applied, SnapshotIndex uint64
	IsLeader                                         bool
	Progress                                         map[uint64]Progress // leader only: each voter's replication state
	// Members is the member table, by ID.
	Members []Member
}

// Progress is the leader's view of one voter's replication (raft's
// tracker.Progress, without its in-flight window).
type Progress struct {
	Match, Next uint64
	// State is "StateProbe", "StateReplicate" or "StateSnapshot"; while
	// it is StateSnapshot, PendingSnapshot is the index being sent.
	State           string
	PendingSnapshot uint64
	// Active: heard from within the election timeout; Paused: no more
	// appends until it answers.
	Active, Paused bool
}

// String is the one-line form status pages print.
func (p Progress) String() string {
	s := fmt.Sprintf("%s match=%d next=%d", strings.TrimPrefix(p.State, "State"), p.Match, p.Next)
	if p.PendingSnapshot != 0 {
		s += fmt.Sprintf(" snapshot=%d", p.PendingSnapshot)
	}
	if p.Paused {
		s += " paused"
	}
	if !p.Active {
		s += " inactive"
	}
	return s
}

// Validate reports the first problem with c, after defaults are applied.
func (c *Config) Validate() error {
	if c.ID == 0 {
		return errors.New("raftnode: ID must be at least 1")
	}
	if _, ok := c.Peers[c.ID]; !ok {
		return fmt.Errorf("raftnode: Peers has no URL for this node's ID %d", c.ID)
	}
	for id, u := range c.Peers {
		if id == 0 {
			return errors.New("raftnode: peer ID 0 is not allowed")
		}
		scheme := "http"
		if c.TLS != nil {
			scheme = "https"
		}
		pu, err := url.Parse(u)
		if err != nil || pu.Scheme != scheme || pu.Host == "" || pu.Port() == "" {
			return fmt.Errorf("raftnode: peer %d: URL %q is not %s://host:port", id, u, scheme)
		}
	}
	if c.Dir == "" {
		return errors.New("raftnode: Dir is required")
	}
	if c.Join && c.ClusterID == 0 {
		return errors.New("raftnode: Join needs the group's ClusterID")
	}
	if c.TickInterval < 0 || c.ElectionTicks < 0 {
		return errors.New("raftnode: TickInterval and ElectionTicks must not be negative")
	}
	if c.ElectionTicks != 0 && c.ElectionTicks < 3 {
		return errors.New("raftnode: ElectionTicks must be at least 3 (heartbeat is 1 tick)")
	}
	return nil
}

func (c *Config) setDefaults() {
	if c.TickInterval == 0 {
		c.TickInterval = DefaultTickInterval
	}
	if c.ElectionTicks == 0 {
		c.ElectionTicks = DefaultElectionTicks
	}
	if c.SnapshotEntries == 0 {
		c.SnapshotEntries = DefaultSnapshotEntries
	}
	if c.Logger == nil {
		c.Logger = logging.Discard()
	}
}

// clusterID is derived from the membership, so that nodes configured with
// different member lists refuse each other's messages (rafthttp checks it).
func clusterID(peers map[uint64]string) types.ID {
	ids := make([]uint64, 0, len(peers))
	for id := range peers {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	h := fnv.New64a()
	for _, id := range ids {
		fmt.Fprintf(h, "%d=%s\n", id, peers[id])
	}
	return types.ID(h.Sum64())
}

type proposal struct {
	data []byte
	done func(error)
	term uint64 // the term the node led when Propose accepted it
}

type report struct {
	id          uint64
	unreachable bool
	snap        raft.SnapshotStatus
}

// Node is one running member. Its methods are safe for concurrent use.
type Node struct {
	cfg   Config
	log   *slog.Logger
	quiet *logging.Quieter
	zl    *zap.Logger
	sm    StateMachine

	// run's alone (see doc.go).
	rn          *raft.RawNode
	storage     *raft.MemoryStorage
	wal         *wal.WAL
	snapshotter *snap.Snapshotter
	pending     map[uint64]func(error) // sequence -> done, this term's proposals
	completed   []func(error)          // applied in this Ready, done not yet called
	pendingTerm uint64
	seq         uint64
	applied     uint64
	appliedTerm uint64
	snapIndex   uint64
	confState   *raftpb.ConfState
	members     map[uint64]Member // the member table (members.go)
	removed     map[uint64]bool   // IDs removed from the group, never used again
	tpeers      map[uint64]string // the transport's peers: ID -> URL
	conf        *confPending      // this leader's membership change in flight
	snapNow     bool              // a conf change was applied: snapshot now
	role        Role
	leaseSeq    uint64
	leaseReads  map[uint64]time.Duration // lease ReadIndex requests awaiting a quorum: seq -> t0

	lease atomic.Pointer[leaseState] // the current lease (lease.go); loop writes, anyone reads

	transport *rafthttp.Transport
	srv       *http.Server
	ln        net.Listener
	serveDone chan struct{}
	handlers  atomic.Int64 // peer HTTP handlers running

	recvc    chan *raftpb.Message
	reportc  chan report
	gone     goneLeader // leaderGone's last campaign (loop only)
	lastTick time.Time  // when the loop last ticked (loop only; slow.go)
	wakec    chan struct{}
	stopc    chan struct{} // closed by Stop
	exiting  chan struct{} // closed when run starts shutting down
	donec    chan struct{} // closed when run has released everything
	stopMu   sync.Once
	roles    chan Role

	mu         sync.Mutex
	queue      []proposal
	cqueue     []confReq // ChangeMember's requests
	stopped    bool
	status     Status
	pubMembers []Member        // the member table as the loop last published it
	pubRemoved map[uint64]bool // removed IDs, as published (replaced, never modified)
	// restores counts snapshots received from the leader and restored
	// (tests tell a snapshot catch-up from WAL replay by it).
	restores int
}

// Start opens (or creates) Dir, starts the peer transport and the raft
// loop. With a WAL in Dir/wal the node restarts: sm is restored from the
// newest snapshot and raft replays the later committed entries through
// sm.Apply; otherwise the group is bootstrapped with every Peers member.
// When Start fails, Config.Listener is left open (it is the caller's);
// once it succeeded, Stop closes it.
func Start(cfg Config, sm StateMachine) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	peers := make(map[uint64]string, len(cfg.Peers))
	for id, u := range cfg.Peers {
		peers[id] = u
	}
	cfg.Peers = peers
	n := &Node{
		cfg:        cfg,
		log:        cfg.Logger.With("raft_id", cfg.ID),
		quiet:      logging.NewQuieter(),
		sm:         sm,
		pending:    map[uint64]func(error){},
		recvc:      make(chan *raftpb.Message, 256),
		reportc:    make(chan report, 64),
		wakec:      make(chan struct{}, 1),
		stopc:      make(chan struct{}),
		exiting:    make(chan struct{}),
		donec:      make(chan struct{}),
		serveDone:  make(chan struct{}),
		roles:      make(chan Role, 64),
		leaseReads: map[uint64]time.Duration{},
	}
	n.lease.Store(&leaseState{renewed: make(chan struct{})})
	n.zl = logging.Zap(n.log.Handler(), slog.LevelWarn, n.quiet).Named("raft")
	n.seq = randomSeq()

	restart, err := n.openStorage()
	if err != nil {
		return nil, err
	}
	rc := &raft.Config{
		ID:                        cfg.ID,
		ElectionTick:              cfg.ElectionTicks,
		HeartbeatTick:             1,
		Storage:                   n.storage,
		Applied:                   n.applied,
		MaxSizePerMsg:             maxSizePerMsg,
		MaxInflightMsgs:           maxInflightMsgs,
		MaxUncommittedEntriesSize: 1 << 30,
		CheckQuorum:               true,
		PreVote:                   true,
		DisableProposalForwarding: true,
		Logger:                    raftLogger{n.log},
	}
	n.rn, err = raft.NewRawNode(rc)
	if err == nil && !restart && !cfg.Join {
		var rp []raft.Peer
		if rp, err = n.bootstrapPeers(); err == nil {
			err = n.rn.Bootstrap(rp)
		}
	}
	if err != nil {
		n.wal.Close()
		return nil, fmt.Errorf("raftnode: %w", err)
	}

	if err := n.startTransport(); err != nil {
		n.wal.Close()
		return nil, err
	}
	n.publishStatus()
	go n.serve()
	go n.run()
	return n, nil
}

func (n *Node) startTransport() error {
	ln := n.cfg.Listener
	if ln == nil {
		u, _ := url.Parse(n.cfg.Peers[n.cfg.ID])
		var err error
		ln, err = net.Listen("tcp", u.Host)
		if err != nil {
			return fmt.Errorf("raftnode: peer listener: %w", err)
		}
		if n.cfg.TLS != nil {
			if ln, err = transport.NewTLSListener(ln, n.cfg.TLS); err != nil {
				return fmt.Errorf("raftnode: peer listener TLS: %w", err)
			}
		}
	}
	id := strconv.FormatUint(n.cfg.ID, 10)
	cid := types.ID(n.cfg.ClusterID)
	if cid == 0 {
		cid = clusterID(n.cfg.Peers)
	}
	n.transport = &rafthttp.Transport{
		Logger:      n.zl,
		ID:          types.ID(n.cfg.ID),
		URLs:        types.MustNewURLs([]string{n.cfg.Peers[n.cfg.ID]}),
		ClusterID:   cid,
		Raft:        transportRaft{n},
		Snapshotter: n.snapshotter,
		ServerStats: stats.NewServerStats(id, id),
		LeaderStats: stats.NewLeaderStats(n.zl, id),
		ErrorC:      make(chan error, 1),
	}
	if n.cfg.TLS != nil {
		n.transport.TLSInfo = *n.cfg.TLS
	}
	if err := n.transport.Start(); err != nil {
		if n.cfg.Listener == nil {
			ln.Close()
		}
		return fmt.Errorf("raftnode: transport: %w", err)
	}
	n.membersChanged() // the transport's peers are the table's members
	n.ln = newTimeoutListener(ln)
	n.srv = &http.Server{
		Handler:           n.countHandlers(n.transport.Handler()),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(n.log.Handler(), slog.LevelDebug),
	}
	return nil
}

func (n *Node) serve() {
	defer close(n.serveDone)
	defer recoverRaft(n.log, n.cfg.Peers[n.cfg.ID], nil)
	if err := n.srv.Serve(n.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		n.log.Error("raftnode: peer listener failed", "err", err)
	}
}

// Propose appends data to the log if this node is the leader. done is
// called exactly once in every case: with nil after the entry is committed
// and applied here (after sm.Apply returned), or with an error when it may
// not be (ErrNotLeader, ErrStopped, ErrLeadershipLost). ErrLeadershipLost
// and ErrStopped mean "unknown": the entry may still be committed and
// applied by the group.
//
// When Propose returns an error (ErrNotLeader on a follower, ErrStopped)
// it has already called done with that same error, on the caller's
// goroutine. Otherwise done runs later on the apply goroutine and must be
// quick; it may call Propose.
func (n *Node) Propose(data []byte, done func(error)) error {
	return n.enqueue(done, func(done func(error), term uint64) {
		n.queue = append(n.queue, proposal{data: data, done: done, term: term})
	})
}

// enqueue is Propose's and ChangeMember's common part: on a running
// leader it calls add (under mu, with the term) and wakes the loop;
// otherwise it calls done with the error and returns it.
func (n *Node) enqueue(done func(error), add func(done func(error), term uint64)) error {
	if done == nil {
		done = func(error) {}
	}
	n.mu.Lock()
	var err error
	switch {
	case n.stopped:
		err = ErrStopped
	case !n.status.IsLeader:
		err = ErrNotLeader
	default:
		add(done, n.status.Term)
	}
	n.mu.Unlock()
	if err != nil {
		done(err)
		return err
	}
	select {
	case n.wakec <- struct{}{}:
	default:
	}
	return nil
}

// Status returns the node's state as of its last loop iteration
// (every Ready and every tick refresh it; Applied includes an entry
// before its done runs).
func (n *Node) Status() Status {
	n.mu.Lock()
	defer n.mu.Unlock()
	s := n.status
	s.Members = slices.Clone(n.pubMembers)
	s.Progress = maps.Clone(n.status.Progress)
	return s
}

// ActiveSince returns since when the transport has been connected to
// peer id without a break; zero while it is not.
func (n *Node) ActiveSince(id uint64) time.Time { return n.transport.ActiveSince(types.ID(id)) }

// Roles delivers every role change, in order; the latest matters. If the
// reader falls behind, the oldest undelivered roles are dropped, never the
// latest. The channel is closed after the node stopped (its last role is
// a non-leader one).
func (n *Node) Roles() <-chan Role { return n.roles }

// Stop stops the node: the loop ends, pending proposals fail with
// ErrStopped, the transport, the peer listener and the WAL close. It
// waits for every goroutine the node started and is idempotent. It must
// not be called from a done callback (it would wait for itself).
func (n *Node) Stop() error {
	n.stopMu.Do(func() { close(n.stopc) })
	<-n.donec
	return nil
}

// transportRaft is what rafthttp calls: it hands everything to run.
type transportRaft struct{ n *Node }

func (t transportRaft) Process(ctx context.Context, m *raftpb.Message) error {
	if t.IsIDRemoved(m.GetFrom()) {
		return removedError{}
	}
	select {
	case t.n.recvc <- m:
		return nil
	case <-t.n.exiting:
		// Dropped, as if lost on the wire: an error would make rafthttp's
		// handler panic (its way of cutting a stream).
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// IsIDRemoved: rafthttp refuses streams from removed members (410),
// which stops them, as etcd's removed members stop.
func (t transportRaft) IsIDRemoved(id uint64) bool {
	t.n.mu.Lock()
	defer t.n.mu.Unlock()
	return t.n.pubRemoved[id]
}

func (t transportRaft) ReportUnreachable(id uint64) {
	t.n.sendReport(report{id: id, unreachable: true})
}

func (t transportRaft) ReportSnapshot(id uint64, status raft.SnapshotStatus) {
	t.n.sendReport(report{id: id, snap: status})
}

func (n *Node) sendReport(r report) {
	if r.unreachable {
		// Unreachable reports are hints repeated on every failure: drop
		// one rather than block a sender.
		select {
		case n.reportc <- r:
		case <-n.exiting:
		default:
		}
		return
	}
	select {
	case n.reportc <- r:
	case <-n.exiting:
	}
}
