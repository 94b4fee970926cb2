package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"substrate/broker"
	"substrate/broker/replica"
	"substrate/broker/store"
	"substrate/internal/faults"
	"substrate/internal/netutil"
	"substrate/internal/raftnode"

	"go.etcd.io/etcd/client/pkg/v3/transport"
)

// Config configures a Node.
type Config struct {
	Members []Member // the broker nodes of ETCD_INITIAL_CLUSTER (Members): the group a new Dir bootstraps
	Self    uint64   // this node's ID among Members (its raft ID, unless Dir or Join says otherwise)
	Dir     string   // the Raft log and snapshots (DATA/broker-raft)

	// Etcd, when set, is the etcd cluster whose membership the group
	// follows (reconcile.go) and whose cluster ID it uses; nil: the
	// membership stays what it is (tests).
	Etcd Etcd
	// Join: etcd joined a running cluster (ETCD_INITIAL_CLUSTER_STATE=
	// existing). Without a Raft log in Dir the node does not bootstrap:
	// its raft ID is its etcd member ID and it waits for the leader to
	// add it. Needs Etcd.
	Join bool

	// AMQPAddrs and AMQPSAddrs are this node's client addresses (port 0
	// allowed in tests), bound by Start. The node serves their
	// connections with its broker while it leads and forwards them to the
	// leader otherwise. TLS is AMQPS's configuration.
	AMQPAddrs, AMQPSAddrs []string
	TLS                   *tls.Config
	// MaxConnections is RabbitMQ's connection_max for this node: each
	// listener stops accepting while that many of the connections it
	// accepted are open, whether this node serves them or forwards them
	// (so the limit is per node, as on a RabbitMQ cluster); further
	// clients wait in the listen backlog. 0: no limit.
	MaxConnections int

	// PeerListener is bound to this member's peer address; nil: the node
	// binds it (Member.PeerURL's host and port).
	PeerListener net.Listener
	// PeerTLS, when not nil, secures the peer port with etcd's peer TLS
	// settings (ETCD_PEER_*: certificate, key, trusted CA, client
	// certificate auth, allowed CN and hostname, CRL, auto TLS), read at
	// Start (etcd fills in auto TLS and its cipher and version settings
	// when it starts): Raft, forwarded connections and the status
	// endpoint then run over TLS, and member peer URLs are https.
	PeerTLS func() (transport.TLSInfo, error)

	// NewBroker builds the broker of one leadership term over log (not
	// started; its Config.External set, Config.Log = log, Config.Fence =
	// fence: the term's leader lease). Start and Shutdown are the node's.
	NewBroker func(log store.Log, fence broker.Fence) (*broker.Server, error)
	// OnBroker is told the active broker when it changes (nil: this node
	// does not lead). It runs on the node's role goroutine.
	OnBroker func(*broker.Server)

	Logger *slog.Logger

	// Raft timing; zero: raftnode's defaults (100 ms ticks, election after
	// 10 ticks, a snapshot every 10,000 entries).
	TickInterval    time.Duration
	ElectionTicks   int
	SnapshotEntries uint64
}

// Node is one broker node of a cluster: a lifecycle.Service standing in
// for the broker in `substrate serve` when etcd's initial cluster has more
// than one member.
type Node struct {
	cfg  Config
	log  *slog.Logger
	self Member

	sm   *replica.StateMachine
	raft *raftnode.Node
	pmux *peerMux     // the peer port, split between Raft and peer
	peer *http.Server // the node's own /substrate/ endpoints

	active atomic.Pointer[broker.Server] // the broker while this node leads (and it has started)
	leader atomic.Uint64                 // the leader this node knows of; 0: none
	selfID atomic.Uint64                 // this node's raft ID (final once Start returned)
	// peerURLOf overrides brokerPeerURL (tests, whose nodes have ports
	// of their own).
	peerURLOf func(etcdPeerURL string) (string, bool)

	chMu    sync.Mutex
	changed chan struct{} // closed and replaced when active or leader changes

	cur     *broker.Server // role goroutine only
	curTerm uint64

	pxMu    sync.Mutex
	proxies map[net.Conn]struct{} // both ends of every forwarded connection

	lns      []net.Listener // AMQPAddrs, then AMQPSAddrs
	nTLS     int
	stopc    chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup

	leaderChanges atomic.Uint64

	peerTLS      *tls.Config                 // the client side of peer TLS (Config.PeerTLS); nil: plain
	statusClient atomic.Pointer[http.Client] // ClusterStatus's, over peerTLS when set (made by Start)
}

// How long a client connection waits for a leader before it is closed,
// and how long dialing the leader may take.
const (
	leaderWait   = 10 * time.Second
	forwardDial  = 2 * time.Second
	forwardRetry = 50 * time.Millisecond // after a leader's 503
	forwardPath  = "/substrate/amqp-forward"
	statusPath   = "/substrate/status"
	// statusTimeout bounds one member's answer to ClusterStatus.
	statusTimeout = time.Second
)

// New checks cfg and returns a Node that has not started.
func New(cfg Config) (*Node, error) {
	if cfg.NewBroker == nil {
		return nil, errors.New("cluster: no broker constructor")
	}
	if cfg.Dir == "" {
		return nil, errors.New("cluster: no directory for the Raft log")
	}
	if cfg.PeerTLS != nil { // the members' peer URLs say https
		ms := slices.Clone(cfg.Members)
		for i := range ms {
			ms[i].PeerURL = "https://" + ms[i].PeerAddr()
		}
		cfg.Members = ms
	}
	n := &Node{cfg: cfg, log: cfg.Logger, changed: make(chan struct{}), proxies: map[net.Conn]struct{}{}, stopc: make(chan struct{})}
	if n.log == nil {
		n.log = slog.New(slog.DiscardHandler)
	}
	found := false
	for _, m := range cfg.Members {
		if m.ID == cfg.Self {
			n.self, found = m, true
		}
	}
	if !found {
		return nil, fmt.Errorf("cluster: node %d is not a member", cfg.Self)
	}
	if cfg.Join && cfg.Etcd == nil {
		return nil, errors.New("cluster: joining a running cluster needs its etcd membership")
	}
	n.selfID.Store(cfg.Self)
	if len(cfg.AMQPSAddrs) > 0 && cfg.TLS == nil {
		return nil, errors.New("cluster: AMQPS listeners without a TLS configuration")
	}
	return n, nil
}

// Name returns "amqp": the node is the broker service of `serve`.
func (n *Node) Name() string { return "amqp" }

// Start starts Raft on the peer address and serves the client listeners.
// It returns at once: the broker starts when this node is elected.
func (n *Node) Start(ctx context.Context) error {
	var lc net.ListenConfig
	fail := func(err error) error {
		for _, l := range n.lns {
			l.Close()
		}
		n.lns = nil
		return err
	}
	for i, a := range append(append([]string{}, n.cfg.AMQPAddrs...), n.cfg.AMQPSAddrs...) {
		ln, err := lc.Listen(ctx, "tcp", a)
		if err != nil {
			what := "amqp"
			if i >= len(n.cfg.AMQPAddrs) {
				what = "amqps"
			}
			return fail(fmt.Errorf("cluster: listen %s (%s): %w", a, what, err))
		}
		n.lns = append(n.lns, ln)
	}
	n.nTLS = len(n.cfg.AMQPSAddrs)
	pl := n.cfg.PeerListener
	if pl == nil {
		var err error
		if pl, err = lc.Listen(ctx, "tcp", n.self.PeerAddr()); err != nil {
			return fail(fmt.Errorf("cluster: broker peer port: %w", err))
		}
	}
	var raftTLS *transport.TLSInfo
	if n.cfg.PeerTLS != nil {
		info, err := n.cfg.PeerTLS()
		var tl net.Listener
		if err == nil {
			tl, err = transport.NewTLSListener(pl, &info)
		}
		if err == nil {
			n.peerTLS, err = info.ClientConfig()
		}
		if err != nil {
			pl.Close()
			return fail(fmt.Errorf("cluster: broker peer port TLS (etcd's peer TLS settings): %w", err))
		}
		pl, raftTLS = tl, &info
	}
	sc := &http.Client{Timeout: statusTimeout}
	if n.peerTLS != nil {
		sc.Transport = &http.Transport{TLSClientConfig: n.peerTLS}
	}
	n.statusClient.Store(sc)
	id, join, clusterID, err := n.raftIdentity()
	if err != nil {
		pl.Close()
		return fail(err)
	}
	n.selfID.Store(id)
	peers, names := map[uint64]string{}, map[uint64]string{}
	if !join {
		for _, m := range n.cfg.Members {
			peers[m.ID], names[m.ID] = m.PeerURL, m.Name
		}
	}
	peers[id] = n.self.PeerURL
	n.sm = replica.NewStateMachine()
	mux := http.NewServeMux()
	mux.HandleFunc(forwardPath, n.contained(n.serveForwarded))
	mux.HandleFunc(statusPath, n.contained(n.serveStatus))
	n.pmux = newPeerMux(pl, n.log)
	n.peer = ownServer(mux, n.log)
	rn, err := raftnode.Start(raftnode.Config{
		ID: id, Peers: peers, Names: names, Join: join, ClusterID: clusterID, Dir: n.cfg.Dir, Listener: n.pmux.raft, TLS: raftTLS,
		TickInterval: n.cfg.TickInterval, ElectionTicks: n.cfg.ElectionTicks, SnapshotEntries: n.cfg.SnapshotEntries,
		Logger: n.log,
	}, n.sm)
	if err != nil {
		pl.Close()
		return fail(fmt.Errorf("cluster: raft: %w", err))
	}
	n.raft = rn
	n.pmux.wg.Add(1)
	go n.pmux.run()
	go n.peer.Serve(n.pmux.own)
	n.wg.Add(1)
	go n.roles()
	if n.cfg.Etcd != nil {
		n.wg.Add(1)
		go n.follow()
	}
	for i, ln := range n.lns {
		n.wg.Add(1)
		go n.accept(ln, i >= len(n.lns)-n.nTLS)
	}
	n.log.Info("amqp cluster node started", "node", n.self.Name, "id", id, "peer", n.self.PeerURL, "members", len(n.Members()), "joining", join && len(n.Members()) == 0)
	return nil
}

// Shutdown stops accepting, shuts down the broker if this node leads
// (clients get 320 CONNECTION_FORCED and reconnect to another node),
// closes forwarded connections and stops Raft.
func (n *Node) Shutdown(ctx context.Context) error {
	first := false
	n.stopOnce.Do(func() { first = true })
	if !first {
		return nil
	}
	close(n.stopc)
	for _, ln := range n.lns {
		ln.Close()
	}
	n.notify()
	n.pxMu.Lock()
	for c := range n.proxies {
		c.Close()
	}
	n.pxMu.Unlock()
	done := make(chan struct{})
	go func() { n.wg.Wait(); close(done) }() // the role goroutine ends first: it owns cur
	var err error
	select {
	case <-done:
		if n.cur != nil {
			err = n.deactivate(ctx)
		}
	case <-ctx.Done():
		// The role goroutine is still starting a broker (it owns cur):
		// stopping Raft below ends its term, and the broker with it.
		err = ctx.Err()
	}
	if n.raft != nil {
		err = errors.Join(err, n.raft.Stop())
		n.peer.Close() // hijacked connections are the broker's, closed with it
		n.pmux.close()
	}
	return err
}

// Addrs returns the bound client addresses: AMQP, then AMQPS.
func (n *Node) Addrs() []net.Addr {
	out := make([]net.Addr, len(n.lns))
	for i, l := range n.lns {
		out[i] = l.Addr()
	}
	return out
}

// TLSAddrs returns the bound AMQPS addresses.
func (n *Node) TLSAddrs() []net.Addr { return n.Addrs()[len(n.lns)-n.nTLS:] }

// Err reports a failure of the running node (never: a listener that fails
// is logged and a broker that fails to start is retried).
func (n *Node) Err() <-chan error { return nil }

// Broker returns the active broker, nil while this node does not lead.
func (n *Node) Broker() *broker.Server { return n.active.Load() }

// Leader returns the member this node knows as leader (ok false: none).
func (n *Node) Leader() (Member, bool) {
	id := n.leader.Load()
	for _, m := range n.Members() {
		if m.ID == id {
			return m, true
		}
	}
	return Member{}, false
}

// LeaderChanges counts the changes of leader this node has seen.
func (n *Node) LeaderChanges() uint64 { return n.leaderChanges.Load() }

// Members returns the group's members: its live member table once
// started (Config.Members before).
func (n *Node) Members() []Member {
	if n.raft == nil {
		return n.cfg.Members
	}
	rms := n.raft.Members()
	ms := make([]Member, 0, len(rms))
	for _, rm := range rms {
		ms = append(ms, n.member(rm))
	}
	return ms
}

// member is a member table's entry as a Member: its host is its peer
// URL's, its AMQP port this node's (the same on every node).
func (n *Node) member(rm raftnode.Member) Member {
	m := Member{ID: rm.ID, Name: rm.Name, PeerURL: rm.URL, EtcdID: rm.Tag, Learner: rm.Learner}
	if u, err := url.Parse(rm.URL); err == nil {
		m.Host = u.Hostname()
	}
	if m.Name == "" {
		m.Name = strconv.FormatUint(rm.ID, 10) // a member known by its raft ID only (briefly, while joining)
	}
	if _, port, err := net.SplitHostPort(n.self.AMQPAddr); err == nil && m.Host != "" {
		m.AMQPAddr = net.JoinHostPort(m.Host, port)
	}
	return m
}

// raftIdentity is this node's raft ID, whether it joins a running group
// and the group's cluster ID (0: derived from the members; without Etcd).
// The ID is the one recorded in Dir; without a record, the bootstrap's
// (a log from before the record, or a new Dir), or with Join and no log,
// the etcd member ID.
func (n *Node) raftIdentity() (id uint64, join bool, clusterID uint64, err error) {
	var etcdID uint64
	if n.cfg.Etcd != nil {
		if etcdID, clusterID, err = n.cfg.Etcd.Local(); err != nil {
			return 0, false, 0, fmt.Errorf("cluster: etcd member: %w", err)
		}
	}
	rec, joined, err := raftnode.LocalID(n.cfg.Dir)
	switch {
	case err != nil:
		return 0, false, 0, fmt.Errorf("cluster: %w", err)
	case rec != 0:
		return rec, joined, clusterID, nil
	case raftnode.HasLog(n.cfg.Dir) || !n.cfg.Join:
		return n.cfg.Self, false, clusterID, nil
	}
	return etcdID, true, clusterID, nil
}

// PeerUpSince returns since when this node has been connected to the
// member named name over the broker peer port without a break (zero:
// not connected, or this node itself, or not started).
func (n *Node) PeerUpSince(name string) time.Time {
	if n.raft == nil {
		return time.Time{}
	}
	for _, m := range n.Members() {
		if m.Name == name && m.ID != n.selfID.Load() {
			return n.raft.ActiveSince(m.ID)
		}
	}
	return time.Time{}
}

// Self returns this node (its ID is its raft ID once Start returned).
func (n *Node) Self() Member {
	m := n.self
	m.ID = n.selfID.Load()
	return m
}

func (n *Node) notify() {
	n.chMu.Lock()
	close(n.changed)
	n.changed = make(chan struct{})
	n.chMu.Unlock()
}

func (n *Node) changes() <-chan struct{} {
	n.chMu.Lock()
	defer n.chMu.Unlock()
	return n.changed
}

func (n *Node) stopping() bool {
	select {
	case <-n.stopc:
		return true
	default:
		return false
	}
}

// roles follows Raft's role changes: the broker runs while this node is
// a ready leader and stops as soon as it is not (or its term changed).
func (n *Node) roles() {
	defer n.wg.Done()
	for {
		select {
		case <-n.stopc:
			return
		case r, ok := <-n.raft.Roles():
			if !ok {
				return
			}
			n.role(r)
		}
	}
}

func (n *Node) role(r raftnode.Role) {
	defer faults.Recover(n.log, faults.AMQP, "cluster roles", nil)
	if old := n.leader.Swap(r.Leader); old != r.Leader {
		n.leaderChanges.Add(1)
		if m, ok := n.Leader(); ok {
			n.log.Info("amqp cluster leader", "leader", m.Name, "term", r.Term, "self", r.IsLeader)
		} else if r.Leader != 0 { // a joining node, before the leader sent it the member table
			n.log.Info("amqp cluster leader not in this node's member table yet", "leader_id", r.Leader, "term", r.Term)
		} else {
			n.log.Warn("amqp cluster has no leader", "term", r.Term)
		}
	}
	if n.cur != nil && (!r.IsLeader || r.Term != n.curTerm) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := n.deactivate(ctx); err != nil {
			n.log.Warn("amqp broker of an ended term stopped with an error", "err", err)
		}
		cancel()
	}
	if r.IsLeader && r.Ready && n.cur == nil {
		n.activate(r.Term)
	}
	n.notify()
}

// activate starts the broker of term over the replicated log, retrying
// while this node still leads in that term (the definitions are in etcd,
// which may still be electing too).
func (n *Node) activate(term uint64) {
	var bo netutil.AcceptBackoff
	for !n.stopping() {
		st := n.raft.Status()
		if !st.IsLeader || st.Term != term {
			return
		}
		b, err := n.startBroker(term)
		if err == nil {
			n.cur, n.curTerm = b, term
			n.active.Store(b)
			if n.cfg.OnBroker != nil {
				n.cfg.OnBroker(b)
			}
			n.log.Info("amqp broker active on this node", "term", term, "messages", n.sm.Len())
			return
		}
		d, _ := bo.Next()
		n.log.Error("amqp broker could not start on the new leader; retrying", "term", term, "err", err, "retry_in", d)
		select {
		case <-time.After(d):
		case <-n.stopc:
		}
	}
}

func (n *Node) startBroker(term uint64) (*broker.Server, error) {
	l := replica.NewLog(n.sm, n.raft) // every message it recovers comes back redelivered: the last leader may have delivered it
	b, err := n.cfg.NewBroker(l, n.raft.Lease(term))
	if err != nil {
		l.Close()
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.Start(ctx); err != nil {
		b.Shutdown(ctx)
		// A Start that failed before opening its store (the definitions'
		// etcd read, during etcd's own election) leaves the Log to us; its
		// goroutine leaked once per retry. Close is idempotent.
		l.Close()
		return nil, err
	}
	return b, nil
}

// deactivate stops the active broker: its clients get 320 and reconnect;
// commits still pending fail (their publishers get no confirm and publish
// again).
func (n *Node) deactivate(ctx context.Context) error {
	b := n.cur
	n.cur, n.curTerm = nil, 0
	n.active.Store(nil)
	if n.cfg.OnBroker != nil {
		n.cfg.OnBroker(nil)
	}
	n.log.Info("amqp broker stopping on this node: it no longer leads")
	return b.Shutdown(ctx)
}

// accept serves one client listener until Shutdown.
func (n *Node) accept(ln net.Listener, isTLS bool) {
	defer n.wg.Done()
	var bo netutil.AcceptBackoff
	var slots chan struct{}
	if n.cfg.MaxConnections > 0 {
		slots = make(chan struct{}, n.cfg.MaxConnections)
	}
	for {
		if slots != nil && !n.takeSlot(ln, slots) {
			return
		}
		nc, err := ln.Accept()
		if err != nil {
			if slots != nil {
				<-slots
			}
			if n.stopping() {
				return
			}
			if !netutil.TemporaryAccept(err) {
				n.log.Error("amqp: accept failed; this listener stops", "listener", ln.Addr().String(), "err", err)
				return
			}
			d, first := bo.Next()
			if first {
				n.log.Warn("amqp: accept failing, backing off until it recovers", "listener", ln.Addr().String(), "err", err)
			}
			select {
			case <-time.After(d):
			case <-n.stopc:
				return
			}
			continue
		}
		bo.Reset()
		release := func() {}
		if slots != nil {
			var once sync.Once
			release = func() { once.Do(func() { <-slots }) }
		}
		n.wg.Add(1)
		go n.handle(nc, isTLS, release)
	}
}

// takeSlot waits for a free connection_max slot of ln (as the broker's
// own listeners do); false when the node is stopping.
func (n *Node) takeSlot(ln net.Listener, slots chan struct{}) bool {
	return netutil.TakeSlot(slots, n.stopc, func() {
		n.log.Warn("amqp: connection_max reached, not accepting until a connection closes",
			"listener", ln.Addr().String(), "connection_max", cap(slots))
	})
}

// handle gives a client connection to the active broker, or forwards it
// to the leader; with no leader it waits for one (an election takes
// about a second) and closes the connection after leaderWait.
func (n *Node) handle(nc net.Conn, isTLS bool, release func()) {
	defer n.wg.Done()
	served := false // the broker releases the slot when the connection ends
	defer func() {
		if !served {
			release()
		}
	}()
	defer faults.Recover(n.log, faults.AMQP, nc.RemoteAddr().String(), func(any) { nc.Close() })
	deadline := time.NewTimer(leaderWait)
	defer deadline.Stop()
	retry := time.NewTimer(forwardRetry)
	defer retry.Stop()
	for {
		ch := n.changes()
		if b := n.active.Load(); b != nil {
			if isTLS {
				nc = tls.Server(nc, n.cfg.TLS)
			}
			served = true
			b.ServeRelease(nc, release)
			return
		}
		var again <-chan time.Time // set after the leader could not take it yet
		if m, ok := n.Leader(); ok && m.ID != n.selfID.Load() {
			if !n.forward(nc, m, isTLS) {
				return
			}
			// The leader is elected but its broker not started yet
			// (503), or it cannot be reached (dead, and not yet
			// replaced): wait a moment, or for news of another leader,
			// and ask again, the client waiting for connection.start
			// meanwhile.
			retry.Reset(forwardRetry)
			again = retry.C
		} else if !ok && n.leader.Load() != 0 {
			// A joining node knows who leads before it has the member
			// table (the leader's snapshot or log brings it, with no
			// role change): look again in a moment.
			retry.Reset(forwardRetry)
			again = retry.C
		}
		select {
		case <-again:
		case <-ch:
		case <-deadline.C:
			n.log.Warn("amqp: no broker leader to serve a client; closing it", "peer", nc.RemoteAddr().String())
			nc.Close()
			return
		case <-n.stopc:
			nc.Close()
			return
		}
	}
}

// track registers (or with add false forgets) both ends of a forwarded
// connection; false when the node is stopping.
func (n *Node) track(add bool, cs ...net.Conn) bool {
	n.pxMu.Lock()
	defer n.pxMu.Unlock()
	if add && n.stopping() {
		return false
	}
	for _, c := range cs {
		if add {
			n.proxies[c] = struct{}{}
		} else {
			delete(n.proxies, c)
		}
	}
	return true
}

// contained recovers a panic of a peer endpoint's handler as every
// goroutine serving a peer does (logged and counted for amqp; net/http
// would only drop the connection, uncounted).
func (n *Node) contained(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		defer faults.Recover(n.log, faults.AMQP, "peer "+r.RemoteAddr+" "+r.URL.Path, nil)
		h(w, r)
	}
}

// relay copies client→peer and peerIn→client (peerIn reads peer, with
// what was buffered of it) until either direction ends, then closes both.
func relay(log *slog.Logger, client, peer net.Conn, peerIn io.Reader) {
	done := make(chan struct{}, 2)
	cp := func(dst net.Conn, src io.Reader) {
		defer func() { done <- struct{}{} }()
		defer faults.Recover(log, faults.AMQP, client.RemoteAddr().String(), nil)
		io.Copy(dst, src)
	}
	go cp(peer, client)
	go cp(client, peerIn)
	<-done
	client.Close()
	peer.Close()
	<-done
}

// ForwardedConnections returns how many client connections this node
// forwards to the leader now.
func (n *Node) ForwardedConnections() int {
	n.pxMu.Lock()
	defer n.pxMu.Unlock()
	return len(n.proxies) / 2
}
