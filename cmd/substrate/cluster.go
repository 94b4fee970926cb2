package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"path/filepath"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/etcd/client/pkg/v3/transport"

	"substrate/broker"
	"substrate/broker/etcddefs"
	"substrate/broker/store"
	"substrate/internal/cluster"
	"substrate/internal/ctl"
	"substrate/internal/faults"
	"substrate/internal/mgmtapi"
	"substrate/internal/preflight"
	"substrate/kvstore"
)

// A substrate cluster (issue 13; docs/cluster.md): when etcd's initial
// cluster names more than one member, the broker runs as one node of a
// Raft group (internal/cluster) on --broker-peer-port: active on the
// leader, forwarding AMQP connections and management API requests to it
// on the others.

// clusterMembers returns the broker cluster of kv's etcd configuration:
// nil when it has a single member (the broker runs alone).
func clusterMembers(f serveFlags, kv *kvstore.Store) ([]cluster.Member, uint64, error) {
	ec := kv.EtcdConfig()
	ms, self, err := cluster.Members(ec.InitialCluster, ec.Name, f.brokerPeerPort, f.amqpPort)
	if err != nil {
		return nil, 0, fmt.Errorf("broker cluster: %w", err)
	}
	if len(ms) < 2 {
		return nil, 0, nil
	}
	return ms, self, nil
}

// etcdMembership is the running etcd member's view of its cluster, which
// the broker's Raft group follows.
type etcdMembership struct{ kv *kvstore.Store }

func (e etcdMembership) Members() ([]cluster.EtcdMember, error) {
	st, err := e.kv.Status()
	if err != nil {
		return nil, err
	}
	out := make([]cluster.EtcdMember, 0, len(st.Members))
	for _, m := range st.Members {
		out = append(out, cluster.EtcdMember{ID: m.ID, Name: m.Name, PeerURLs: m.PeerURLs, Learner: m.IsLearner})
	}
	return out, nil
}

func (e etcdMembership) Local() (member, clusterID uint64, err error) {
	st, err := e.kv.Status()
	return st.ID, st.ClusterID, err
}

// peerTLS is etcd's peer TLS for the broker peer port, nil without it:
// the broker's peers are etcd's, with the same certificates and checks,
// as the running member completed them (auto TLS certificates, cipher
// suites, TLS versions).
func peerTLS(kv *kvstore.Store) func() (transport.TLSInfo, error) {
	ec := kv.EtcdConfig()
	if ec.PeerTLSInfo.Empty() && !ec.PeerAutoTLS {
		return nil
	}
	return kv.PeerTLSInfo
}

// clusterService is the broker of a cluster node and what the other
// services see of it.
type clusterService struct {
	*cluster.Node
	api      atomic.Pointer[mgmtapi.API] // the active broker's management API
	httpPort int
	newAPI   func(*broker.Server) *mgmtapi.API
	log      *slog.Logger
	kv       *kvstore.Store
	handOff  context.CancelFunc // ends handOffEtcd while this node's broker is active
	defs     broker.Definitions // the broker's definitions in etcd (logins during an election)
}

// serveCluster builds the cluster node that stands in for the broker.
func serveCluster(f serveFlags, hosts []string, kv *kvstore.Store, members []cluster.Member, self uint64, watermark, diskFreeLimit uint64, log *slog.Logger) (*clusterService, error) {
	cs := &clusterService{httpPort: f.httpPort, log: log, kv: kv,
		defs: etcddefs.New(kv.KV(), kvstore.ReservedPrefix).WithLogger(log.With("service", "amqp"))}
	cfg := cluster.Config{
		Members:   members,
		Self:      self,
		Dir:       filepath.Join(f.dataDir, "broker-raft"),
		AMQPAddrs: preflight.Addrs(hosts, f.amqpPort),
		PeerTLS:   peerTLS(kv),
		Etcd:      etcdMembership{kv}, // the group follows etcd's membership (docs/cluster.md, "Replacing a controller")
		Join:      kv.EtcdConfig().ClusterState == "existing",
		// connection_max counts what this node's listeners accepted,
		// served here or forwarded: per node, as on a RabbitMQ cluster.
		MaxConnections: f.amqpMaxConnections,
		Logger:         log.With("service", "amqp"),
		NewBroker: func(l store.Log, fence broker.Fence) (*broker.Server, error) {
			bc, _ := brokerConfig(f, hosts, kv, watermark, diskFreeLimit, log)
			bc.Addrs, bc.TLSAddrs, bc.External, bc.Log, bc.Fence = nil, nil, true, l, fence
			bc.MaxConnections = 0                                 // the node's listeners count (cluster.Config.MaxConnections)
			bc.StoreDir = filepath.Join(f.dataDir, "broker-raft") // the disk alarm's filesystem
			return broker.New(bc)
		},
		OnBroker: cs.onBroker,
		// Failover is what clients wait for: 50 ms heartbeats and an
		// election after 0.5 to 1 s without one (etcd's defaults are twice
		// that; on a LAN either is many round trips).
		TickInterval: 50 * time.Millisecond, ElectionTicks: 10,
		SnapshotEntries: uint64(f.brokerSnapshotEntries),
	}
	if f.tls != nil {
		cfg.AMQPSAddrs, cfg.TLS = preflight.Addrs(hosts, f.amqpsPort), f.tls.ServerConfig()
	}
	n, err := cluster.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("amqp: %w", err)
	}
	cs.Node = n
	clusterMetrics.Store(n)
	return cs, nil
}

// onBroker follows the active broker: metrics and the management API
// read it while this node leads.
func (cs *clusterService) onBroker(b *broker.Server) {
	brokerMetrics.Store(b)
	if cs.handOff != nil {
		cs.handOff()
		cs.handOff = nil
	}
	if b != nil && cs.kv != nil {
		ctx, cancel := context.WithCancel(context.Background())
		cs.handOff = cancel
		go cs.handOffEtcd(ctx)
	}
	if b == nil {
		if old := cs.api.Swap(nil); old != nil {
			old.Stop()
		}
		return
	}
	if cs.newAPI != nil {
		a := cs.newAPI(b)
		a.Start()
		if old := cs.api.Swap(a); old != nil {
			old.Stop()
		}
	}
}

// handOffEtcd keeps etcd's leadership off the broker leader's node while
// this node's broker is active (checked each handOffEvery): a node that
// led both would, when it dies, make the next broker leader wait for
// etcd's election before it can read its definitions (docs/cluster.md,
// "Failover").
func (cs *clusterService) handOffEtcd(ctx context.Context) {
	defer faults.Recover(cs.log, faults.AMQP, "etcd leadership hand-off", nil)
	t := time.NewTicker(handOffEvery)
	defer t.Stop()
	for {
		if to, err := cs.kv.HandOffLeadership(ctx, time.Second, cs.settled); to != 0 {
			cs.log.Info("etcd leadership handed to another member: this node leads the broker", "etcd_leader", strconv.FormatUint(to, 16))
		} else if err != nil && ctx.Err() == nil {
			cs.log.Warn("etcd leadership stays on the broker leader's node: no other member took it", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// handOffEvery is how often the broker leader checks that it does not
// lead etcd too; settledFor is how long a member must have been connected
// to this node to take etcd's leadership.
const (
	handOffEvery = time.Second
	settledFor   = time.Second
)

// settled says whether the member named name has been connected to this
// node's broker peer port for settledFor: etcd's leadership goes only to
// such a member, never to one that died or is still starting (a member
// that had just restarted took it once and could not commit for 7 s). A
// member's broker node starts only once its etcd member is ready, so
// a broker peer connection says its etcd is up; the second guards
// against a connection that flaps. Longer would keep etcd's leadership
// on the broker leader after quick successive failures (every survivor
// freshly reconnected), which is what the hand-off is there to avoid.
func (cs *clusterService) settled(name string) bool {
	t := cs.PeerUpSince(name)
	return !t.IsZero() && time.Since(t) >= settledFor
}

// ctlBroker returns the active broker as ctl sees it, or a nil interface
// while this node does not lead.
func (cs *clusterService) ctlBroker(tls ctlBroker) func() ctl.Broker {
	return func() ctl.Broker {
		b := cs.Broker()
		if b == nil {
			return nil
		}
		tls.Server = b
		return clusterCtlBroker{tls, cs.Node}
	}
}

// clusterCtlBroker reports the node's client listeners (the broker of a
// cluster node binds none itself).
type clusterCtlBroker struct {
	ctlBroker
	n *cluster.Node
}

func (b clusterCtlBroker) Addrs() []net.Addr    { return b.n.Addrs() }
func (b clusterCtlBroker) TLSAddrs() []net.Addr { return b.n.TLSAddrs() }

// forwardedHeader marks a management request a follower forwarded, so
// that it is never forwarded again.
const forwardedHeader = "X-Substrate-Forwarded"

// clusterAPI is the management API of a cluster node (mgmt.Config.API).
type clusterAPI struct{ cs *clusterService }

// ServeHTTP serves the management API with the active broker, or
// forwards the request to the leader's --http-port.
func (ca clusterAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	cs := ca.cs
	if a := cs.api.Load(); a != nil {
		a.ServeHTTP(w, r)
		return
	}
	m, ok := cs.Leader()
	if !ok || m.ID == cs.Self().ID || r.Header.Get(forwardedHeader) != "" {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, `{"error":"service_unavailable","reason":"no broker leader yet: an election is under way"}`)
		return
	}
	target := net.JoinHostPort(m.Host, strconv.Itoa(cs.httpPort))
	p := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme, pr.Out.URL.Host = "http", target
			pr.Out.Header.Set(forwardedHeader, cs.Self().Name)
			pr.SetXForwarded()
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			cs.log.Warn("http: cannot forward a management request to the broker leader", "leader", m.Name, "err", err)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadGateway)
			fmt.Fprintln(w, `{"error":"bad_gateway","reason":"the broker leader did not answer"}`)
		},
	}
	p.ServeHTTP(w, r)
}

// Start and Stop make the service mgmt.Config.API: each term's API
// starts with its broker (onBroker).
func (ca clusterAPI) Start() {}
func (ca clusterAPI) Stop() {
	if old := ca.cs.api.Swap(nil); old != nil {
		old.Stop()
	}
}

// check is /healthz's amqp check on a cluster node: the active broker's
// own check on the leader; elsewhere, a known leader whose peer port
// answers (clients are forwarded there).
func (cs *clusterService) check() serviceCheck {
	return serviceCheck{"amqp", func(ctx context.Context) error {
		if b := cs.Broker(); b != nil {
			return brokerCheck(clusterAddrs{b, cs.Node}).check(ctx)
		}
		m, ok := cs.Leader()
		if !ok {
			return degradedError{errors.New("no broker leader: an election is under way, or fewer than a majority of the nodes are up")}
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", m.PeerAddr())
		if err != nil {
			return degradedError{fmt.Errorf("the broker leader %s does not answer on its peer port: %w", m.Name, err)}
		}
		c.Close()
		return nil
	}}
}

// clusterAddrs is the active broker with the node's listeners.
type clusterAddrs struct {
	*broker.Server
	n *cluster.Node
}

func (b clusterAddrs) Addrs() []net.Addr    { return b.n.Addrs() }
func (b clusterAddrs) TLSAddrs() []net.Addr { return b.n.TLSAddrs() }

// ctlClusterNode is ctl's view of the process in a cluster.
type ctlClusterNode struct {
	*ctlNode
	n *cluster.Node
}

// ClusterView implements ctl.Clustered.
func (c ctlClusterNode) ClusterView() *ctl.ClusterView {
	v := &ctl.ClusterView{Self: "rabbit@" + c.n.Self().Name}
	if m, ok := c.n.Leader(); ok {
		v.Leader = "rabbit@" + m.Name
	}
	for _, st := range c.n.ClusterStatus() {
		v.Members = append(v.Members, ctl.ClusterMember{Node: "rabbit@" + st.Name, Running: st.Reachable, Leader: st.IsLeader,
			Active: st.Active, Term: st.Term, Commit: st.Commit, Applied: st.Applied, Err: st.Err, Learner: st.Learner})
	}
	return v
}

// clusterMetrics is the cluster node the Raft metrics describe.
var clusterMetrics atomic.Pointer[cluster.Node]

func init() {
	stat := func(f func(st cluster.NodeStatus, n *cluster.Node) float64) func() float64 {
		return func() float64 {
			if n := clusterMetrics.Load(); n != nil {
				return f(n.LocalStatus(), n)
			}
			return 0
		}
	}
	gauge := func(name, help string, f func(st cluster.NodeStatus, n *cluster.Node) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, stat(f))
	}
	b2f := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	prometheus.MustRegister(
		gauge("substrate_broker_raft_term", "Current Raft term of the broker's group (0 without a cluster).",
			func(st cluster.NodeStatus, _ *cluster.Node) float64 { return float64(st.Term) }),
		gauge("substrate_broker_raft_commit_index", "Highest Raft log index this node knows committed.",
			func(st cluster.NodeStatus, _ *cluster.Node) float64 { return float64(st.Commit) }),
		gauge("substrate_broker_raft_applied_index", "Highest Raft log index applied to this node's replicated message store.",
			func(st cluster.NodeStatus, _ *cluster.Node) float64 { return float64(st.Applied) }),
		gauge("substrate_broker_raft_snapshot_index", "Raft log index of this node's latest snapshot.",
			func(st cluster.NodeStatus, _ *cluster.Node) float64 { return float64(st.SnapshotIndex) }),
		gauge("substrate_broker_raft_is_leader", "1 if this node is the Raft leader (its broker serves clients).",
			func(st cluster.NodeStatus, _ *cluster.Node) float64 { return b2f(st.IsLeader) }),
		gauge("substrate_broker_raft_broker_active", "1 while this node's broker serves clients.",
			func(st cluster.NodeStatus, _ *cluster.Node) float64 { return b2f(st.Active) }),
		gauge("substrate_broker_raft_replicated_messages", "Live persistent messages in this node's copy of the replicated store.",
			func(st cluster.NodeStatus, _ *cluster.Node) float64 { return float64(st.Messages) }),
		gauge("substrate_broker_raft_forwarded_connections", "AMQP connections this node forwards to the leader.",
			func(st cluster.NodeStatus, _ *cluster.Node) float64 { return float64(st.Forwarded) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "substrate_broker_raft_leader_changes_total", Help: "Changes of the Raft leader this node has seen."},
			stat(func(_ cluster.NodeStatus, n *cluster.Node) float64 { return float64(n.LeaderChanges()) })),
	)
}

// localLogin checks a UI login against the users in etcd when no leader
// answers (an election): the rules of the leader's (uiLogin), on the
// definitions the next leader will load.
func (cs *clusterService) localLogin(r *http.Request) (string, error) {
	if cs.defs == nil {
		return "", errors.New("No broker leader yet: an election is under way")
	}
	return uiLoginWith(func(name, password string, peer net.Addr) (broker.User, error) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		set, err := cs.defs.Load(ctx)
		if err != nil {
			return broker.User{}, err
		}
		for _, u := range set.Users {
			if u.Name == name {
				return broker.CheckUserLogin(u, true, password, peer)
			}
		}
		return broker.CheckUserLogin(broker.User{}, false, password, peer)
	}, r)
}

// leaderLogin checks a UI login on a node that does not lead: the
// leader's management API answers /api/whoami for the same credentials
// (password, guest's loopback rule, tags), and the user needs a tag
// that grants the UI, as uiLogin requires on the leader.
func (cs *clusterService) leaderLogin(r *http.Request) (string, error) {
	if _, _, ok := r.BasicAuth(); !ok {
		return "", errors.New("Not logged in")
	}
	m, ok := cs.Leader()
	if !ok || m.ID == cs.Self().ID {
		return cs.localLogin(r) // an election is under way
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+net.JoinHostPort(m.Host, strconv.Itoa(cs.httpPort))+"/api/whoami", nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", r.Header.Get("Authorization"))
	req.Header.Set(forwardedHeader, cs.Self().Name)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return cs.localLogin(r) // the leader just died, or is cut off
	}
	defer resp.Body.Close()
	var who struct {
		Name   string   `json:"name"`
		Tags   []string `json:"tags"`
		Reason string   `json:"reason"`
	}
	json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&who)
	if resp.StatusCode != http.StatusOK {
		if who.Reason != "" {
			return "", errors.New(who.Reason)
		}
		return "", errors.New("Login failed")
	}
	if !slices.ContainsFunc(who.Tags, func(t string) bool { return slices.Contains(uiTags, t) }) {
		return "", errors.New("Not management user")
	}
	return who.Name, nil
}
