package cluster

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"time"

	"substrate/internal/faults"
	"substrate/internal/raftnode"
)

// The broker's Raft group follows etcd's membership (doc.go,
// "Membership"). While this node leads, every reconcileEvery it compares
// the group's member table with etcd's member list and makes at most one
// change, waiting for it to apply before the next round:
//
//  1. a member of the table whose etcd member ID is not known yet (a
//     member of the initial cluster) gets it, matched by name, and a
//     member whose etcd peer URL moved to another host (etcdctl member
//     update) gets the new address (Updates);
//  2. a member whose etcd member is gone is removed (never the leader
//     itself: that waits for another leader);
//  3. a started etcd member (it has a name) missing from the group is
//     added as a learner, with its etcd member ID as raft ID;
//  4. a learner whose etcd member is a voter and whose log is within
//     promoteLag entries of the commit index is promoted.
//
// One change a round also spaces the voter changes more than a lease
// apart (internal/raftnode/lease.go: a lease counts on a quorum of the
// configuration it was granted in, which two consecutive configurations
// always share).

// EtcdMember is one member of etcd's member list.
type EtcdMember struct {
	ID       uint64
	Name     string // "" while it has not started (etcdctl member add, before its first start)
	PeerURLs []string
	Learner  bool // an etcd learner (etcdctl member add --learner)
}

// Etcd is the etcd cluster the broker's group follows.
type Etcd interface {
	// Members returns etcd's member list.
	Members() ([]EtcdMember, error)
	// Local returns this node's etcd member ID and the etcd cluster's ID
	// (the Raft group's cluster ID: every member, joined or not, knows it).
	Local() (member, cluster uint64, err error)
}

const (
	reconcileEvery = time.Second
	// promoteLag is how far behind the commit index a learner may be to
	// be promoted: near enough to vote on what comes next at once.
	promoteLag = 100
)

// change is one membership change of a reconcile round.
type change struct {
	op  raftnode.MemberChange
	m   raftnode.Member
	why string
}

// plan returns the next change that brings group (the member table, with
// the leader's status st) closer to etcd's list, ok false when there is
// none. warn says why something etcd asks for cannot be done (logged by
// the caller). peerURL gives a new member's broker peer URL from its etcd
// peer URL.
func plan(group []raftnode.Member, etcd []EtcdMember, st raftnode.Status, peerURL func(etcdPeerURL string) (string, bool)) (c change, ok bool, warn string) {
	if len(etcd) == 0 {
		return change{}, false, ""
	}
	byID := map[uint64]EtcdMember{}
	byName := map[string]EtcdMember{}
	for _, e := range etcd {
		byID[e.ID] = e
		if e.Name != "" {
			byName[e.Name] = e
		}
	}
	tagged := map[uint64]bool{}
	inGroup := map[uint64]bool{}
	for _, g := range group {
		inGroup[g.ID] = true
		if g.Tag != 0 {
			tagged[g.Tag] = true
		}
	}
	// 1. Record the etcd member IDs of the initial members, by name.
	for _, g := range group {
		if g.Tag != 0 || g.Name == "" {
			continue
		}
		if e, found := byName[g.Name]; found && !tagged[e.ID] {
			m := g
			m.Tag, m.Learner = e.ID, false
			return change{raftnode.Update, m, fmt.Sprintf("member %s (raft %d) is etcd member %x", g.Name, g.ID, e.ID)}, true, ""
		}
	}
	// ... and follow a member's etcd peer URL (etcdctl member update).
	for _, g := range group {
		e, found := byID[g.Tag]
		if g.Tag == 0 || !found || len(e.PeerURLs) == 0 {
			continue
		}
		if slices.ContainsFunc(e.PeerURLs, func(pu string) bool { u, _ := peerURL(pu); return u == g.URL }) {
			continue // one of its peer URLs still names its host
		}
		if u, okURL := peerURL(e.PeerURLs[0]); okURL {
			m := g
			m.URL, m.Learner = u, false
			return change{raftnode.Update, m, fmt.Sprintf("member %s's etcd peer URL is %s: its broker address is now %s", g.Name, e.PeerURLs[0], u)}, true, ""
		}
	}
	// 2. Remove the members whose etcd member is gone.
	voters := 0
	for _, g := range group {
		if !g.Learner {
			voters++
		}
	}
	for _, g := range group {
		gone := false
		if g.Tag != 0 {
			_, found := byID[g.Tag]
			gone = !found
		} else if g.Name != "" {
			_, found := byName[g.Name]
			gone = !found && !unnamedMembers(etcd) // an unstarted member may be it: wait until every member has a name
		}
		if !gone {
			continue
		}
		if g.ID == st.ID {
			warn = fmt.Sprintf("etcd member %s (%x) is gone but its broker node leads the Raft group; another leader will remove it", g.Name, g.Tag)
			continue
		}
		if !g.Learner && voters <= 1 {
			warn = fmt.Sprintf("etcd member %s is gone but its broker node is the group's last voter", g.Name)
			continue
		}
		return change{raftnode.Remove, g, fmt.Sprintf("etcd member %s (%x) is gone: removing raft member %d", g.Name, g.Tag, g.ID)}, true, warn
	}
	// 3. Add the started etcd members missing from the group, as learners.
	for _, e := range sortedEtcd(etcd) {
		if e.Name == "" || tagged[e.ID] {
			continue
		}
		if inGroup[e.ID] {
			warn = fmt.Sprintf("etcd member %s: its ID %x is a broker raft ID already; remove it and add it again (etcdctl member remove/add)", e.Name, e.ID)
			continue
		}
		if slices.ContainsFunc(group, func(g raftnode.Member) bool { return g.Name == e.Name }) {
			continue // step 1 records it, or the old member of that name is removed first
		}
		if len(e.PeerURLs) == 0 {
			continue
		}
		u, okURL := peerURL(e.PeerURLs[0])
		if !okURL {
			warn = fmt.Sprintf("etcd member %s: no host in its peer URL %q", e.Name, e.PeerURLs[0])
			continue
		}
		if i := slices.IndexFunc(group, func(g raftnode.Member) bool { return g.URL == u }); i >= 0 {
			warn = fmt.Sprintf("etcd member %s: its broker address %s is member %s's; broker nodes use the same ports on every host, so each needs its own address", e.Name, u, group[i].Name)
			continue
		}
		m := raftnode.Member{ID: e.ID, URL: u, Name: e.Name, Tag: e.ID}
		return change{raftnode.AddLearner, m, fmt.Sprintf("etcd member %s (%x) joined: adding it as a learner", e.Name, e.ID)}, true, warn
	}
	// 4. Promote the learners that caught up.
	for _, g := range group {
		if !g.Learner {
			continue
		}
		if e, found := byID[g.Tag]; !found || e.Learner {
			continue
		}
		pr, found := st.Progress[g.ID]
		if !found || pr.State != "StateReplicate" || pr.Match+promoteLag < st.Commit {
			continue
		}
		return change{raftnode.Promote, g, fmt.Sprintf("learner %s caught up (match %d, commit %d): promoting it to voter", g.Name, pr.Match, st.Commit)}, true, warn
	}
	return change{}, false, warn
}

func unnamedMembers(etcd []EtcdMember) bool {
	return slices.ContainsFunc(etcd, func(e EtcdMember) bool { return e.Name == "" })
}

func sortedEtcd(etcd []EtcdMember) []EtcdMember {
	s := slices.Clone(etcd)
	slices.SortFunc(s, func(a, b EtcdMember) int { return cmp.Compare(a.ID, b.ID) })
	return s
}

// brokerPeerURL is a member's broker peer URL from its etcd peer URL:
// the same host, this node's scheme and broker peer port.
func (n *Node) brokerPeerURL(etcdPeerURL string) (string, bool) {
	u, err := url.Parse(etcdPeerURL)
	if err != nil || u.Hostname() == "" {
		return "", false
	}
	self, err := url.Parse(n.self.PeerURL)
	if err != nil {
		return "", false
	}
	return self.Scheme + "://" + net.JoinHostPort(u.Hostname(), self.Port()), true
}

// notAddedWarn: a joining node not in the group's member table after
// this long says so, and again every notAddedWarn.
var notAddedWarn = 30 * time.Second

// added reports whether this node is in the group's member table.
func (n *Node) added() bool {
	return slices.ContainsFunc(n.Members(), func(m Member) bool { return m.ID == n.selfID.Load() })
}

// follow reconciles the group with etcd every reconcileEvery while this
// node leads (one goroutine per Node, with Config.Etcd); on a node that
// joined, it also says when the group has not added it for a while.
func (n *Node) follow() {
	defer n.wg.Done()
	// A timer from the end of each round: a change applied is followed
	// by a full reconcileEvery before the next is proposed (the lease's
	// spacing, see above).
	every := reconcileEvery
	if et := time.Duration(n.cfg.ElectionTicks) * n.cfg.TickInterval; et > every {
		every = et // longer than any lease (Raft timing set slower than substrate's)
	}
	t := time.NewTimer(every)
	defer t.Stop()
	lastWarn := ""
	started, warnedJoin := time.Now(), time.Time{}
	for {
		select {
		case <-n.stopc:
			return
		case <-t.C:
		}
		if n.cfg.Join && time.Since(started) >= notAddedWarn && time.Since(warnedJoin) >= notAddedWarn && !n.added() {
			warnedJoin = time.Now()
			n.log.Warn("amqp cluster: this node joined etcd's cluster but the broker's Raft group has not added it yet: a broker leader adds a started etcd member within seconds; a cluster created with one member (ETCD_INITIAL_CLUSTER naming one) runs its broker alone and never will (docs/cluster.md, Limits)",
				"waiting", time.Since(started).Round(time.Second))
		}
		w := n.reconcile()
		t.Reset(every)
		if w != lastWarn {
			if w != "" {
				n.log.Warn("amqp cluster: broker Raft group membership: " + w)
			}
			lastWarn = w
		}
	}
}

// reconcile runs one round: at most one change, waited for.
func (n *Node) reconcile() (warn string) {
	defer faults.Recover(n.log, faults.AMQP, "cluster membership", nil)
	st := n.raft.Status()
	if !st.IsLeader {
		return ""
	}
	etcd, err := n.cfg.Etcd.Members()
	if err != nil {
		return "" // etcd not answering (its own election): next round
	}
	peerURL := n.brokerPeerURL
	if n.peerURLOf != nil {
		peerURL = n.peerURLOf
	}
	c, ok, warn := plan(st.Members, etcd, st, peerURL)
	if !ok {
		return warn
	}
	n.log.Info("amqp cluster: broker Raft group membership: " + c.why)
	res := make(chan error, 1)
	n.raft.ChangeMember(c.op, c.m, func(err error) { res <- err })
	select {
	case err := <-res:
		if errors.Is(err, raftnode.ErrChangePending) {
			return warn // a new leader before its first entry applied, or a change still applying: next round
		}
		if err != nil {
			return fmt.Sprintf("%s %s (raft %d) failed: %v", c.op, c.m.Name, c.m.ID, err)
		}
	case <-n.stopc:
	}
	return warn
}
