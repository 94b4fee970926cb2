package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"

	"substrate/broker"
	"substrate/broker/store"
	"substrate/internal/raftnode"
	"substrate/internal/testkit"
	"substrate/internal/tlsutil"
)

// fakeEtcd is an etcd member list the tests edit as etcdctl member
// add/remove would. Its peer URLs are the members' broker peer URLs
// (the test nodes' ports differ, so peerURL keeps them as they are).
type fakeEtcd struct {
	mu      sync.Mutex
	members []EtcdMember
	ids     map[string]uint64 // name -> etcd ID given at first start
	next    uint64
	https   bool // the nodes run peer TLS: their broker peer URLs are https
}

func newFakeEtcd() *fakeEtcd { return &fakeEtcd{ids: map[string]uint64{}, next: 0xe7cd0001} }

func (f *fakeEtcd) peerURL(u string) (string, bool) {
	if f.https {
		u = "https://" + strings.TrimPrefix(u, "http://")
	}
	return u, u != ""
}

// add adds a member (etcdctl member add, then its first start).
func (f *fakeEtcd) add(name, peerURL string) uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	id := f.next
	f.next++
	f.ids[name] = id
	f.members = append(f.members, EtcdMember{ID: id, Name: name, PeerURLs: []string{peerURL}})
	return id
}

func (f *fakeEtcd) remove(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.members = slices.DeleteFunc(f.members, func(e EtcdMember) bool { return e.Name == name })
}

// member is node m's view: the list, and its own ID; the first start of
// a member of the initial cluster adds it.
func (f *fakeEtcd) member(m Member) Etcd {
	f.mu.Lock()
	_, known := f.ids[m.Name]
	f.mu.Unlock()
	if !known {
		f.add(m.Name, m.PeerURL)
	}
	return fakeEtcdMember{f, m.Name}
}

type fakeEtcdMember struct {
	f    *fakeEtcd
	name string
}

func (e fakeEtcdMember) Members() ([]EtcdMember, error) {
	e.f.mu.Lock()
	defer e.f.mu.Unlock()
	return slices.Clone(e.f.members), nil
}

func (e fakeEtcdMember) Local() (uint64, uint64, error) {
	e.f.mu.Lock()
	defer e.f.mu.Unlock()
	return e.f.ids[e.name], 0xc1a57e5, nil
}

// TestPlan: etcd's list against the group's table gives one change at a
// time, in order: record etcd IDs, remove, add as learner, promote.
func TestPlan(t *testing.T) {
	url := func(h string) string { return "http://" + h + ":25672" }
	peerURL := func(u string) (string, bool) {
		h := strings.TrimSuffix(strings.TrimPrefix(u, "http://"), ":2380")
		return url(h), h != ""
	}
	initial := []raftnode.Member{
		{ID: 1, URL: url("h1"), Name: "ctl1"},
		{ID: 2, URL: url("h2"), Name: "ctl2"},
		{ID: 3, URL: url("h3"), Name: "ctl3"},
	}
	e := func(id uint64, name, host string) EtcdMember {
		return EtcdMember{ID: id, Name: name, PeerURLs: []string{"http://" + host + ":2380"}}
	}
	etcd3 := []EtcdMember{e(0xa1, "ctl1", "h1"), e(0xa2, "ctl2", "h2"), e(0xa3, "ctl3", "h3")}
	tagged := func(ms []raftnode.Member, tags ...uint64) []raftnode.Member {
		out := slices.Clone(ms)
		for i := range tags {
			out[i].Tag = tags[i]
		}
		return out
	}
	leader := raftnode.Status{ID: 1, Commit: 1000, IsLeader: true}
	for _, tc := range []struct {
		name  string
		group []raftnode.Member
		etcd  []EtcdMember
		st    raftnode.Status
		want  string // "op id tag" or ""
		warn  string
	}{
		{"record the first etcd ID", initial, etcd3, leader, "update 1 161", ""},
		{"record the third", tagged(initial, 0xa1, 0xa2), etcd3, leader, "update 3 163", ""},
		{"in step", tagged(initial, 0xa1, 0xa2, 0xa3), etcd3, leader, "", ""},
		{"no list: nothing", tagged(initial, 0xa1, 0xa2, 0xa3), nil, leader, "", ""},
		{"ctl3 removed", tagged(initial, 0xa1, 0xa2, 0xa3), etcd3[:2], leader, "remove 3 163", ""},
		{"ctl3 removed and ctl4 added (not started): remove first", tagged(initial, 0xa1, 0xa2, 0xa3),
			append(slices.Clone(etcd3[:2]), EtcdMember{ID: 0xb4, PeerURLs: []string{"http://h4:2380"}}), leader, "remove 3 163", ""},
		{"ctl4 not started yet: nothing", tagged(initial[:2], 0xa1, 0xa2),
			append(slices.Clone(etcd3[:2]), EtcdMember{ID: 0xb4, PeerURLs: []string{"http://h4:2380"}}), leader, "", ""},
		{"ctl4 started: add it as a learner", tagged(initial[:2], 0xa1, 0xa2),
			append(slices.Clone(etcd3[:2]), e(0xb4, "ctl4", "h4")), leader, "add learner 180 180", ""},
		{"untagged and gone while a member is unnamed: wait", tagged(initial, 0xa1, 0xa2),
			append(slices.Clone(etcd3[:2]), EtcdMember{ID: 0xb4}), leader, "", ""},
		{"untagged, gone, every member named: remove", tagged(initial, 0xa1, 0xa2),
			append(slices.Clone(etcd3[:2]), e(0xb4, "ctl4", "h4")), leader, "remove 3 0", ""},
		{"a new ctl3 after the old one (told apart by etcd ID)", tagged(initial, 0xa1, 0xa2, 0xa3),
			append(slices.Clone(etcd3[:2]), e(0xc3, "ctl3", "h5")), leader, "remove 3 163", ""},
		{"the new ctl3 once the old is gone", tagged(initial[:2], 0xa1, 0xa2),
			append(slices.Clone(etcd3[:2]), e(0xc3, "ctl3", "h5")), leader, "add learner 195 195", ""},
		{"the leader's own member gone: refused", tagged(initial, 0xa1, 0xa2, 0xa3), etcd3[1:], leader, "",
			"another leader will remove it"},
		{"ctl2's etcd peer URL moved (member update)", tagged(initial, 0xa1, 0xa2, 0xa3),
			[]EtcdMember{etcd3[0], e(0xa2, "ctl2", "h7"), etcd3[2]}, leader, "update 2 162", ""},
		{"ctl2 has two peer URLs, one on its host: in step", tagged(initial, 0xa1, 0xa2, 0xa3),
			[]EtcdMember{etcd3[0], {ID: 0xa2, Name: "ctl2", PeerURLs: []string{"http://h0:2380", "http://h2:2380"}}, etcd3[2]}, leader, "", ""},
		{"a new member on a member's host: refused", tagged(initial[:2], 0xa1, 0xa2),
			append(slices.Clone(etcd3[:2]), e(0xb4, "ctl4", "h2")), leader, "", "needs its own address"},
		{"an etcd ID equal to a raft ID: refused", tagged(initial[:2], 0xa1, 0xa2),
			append(slices.Clone(etcd3[:2]), e(2, "ctl9", "h9")), leader, "", "is a broker raft ID already"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, ok, warn := plan(tc.group, tc.etcd, tc.st, peerURL)
			got := ""
			if ok {
				got = fmt.Sprintf("%s %d %d", c.op, c.m.ID, c.m.Tag)
			}
			if got != tc.want || !strings.Contains(warn, tc.warn) || (tc.warn == "" && warn != "") {
				t.Fatalf("plan = %q (%s), warn %q; want %q, warn %q", got, c.why, warn, tc.want, tc.warn)
			}
			if ok && c.op == raftnode.AddLearner && (c.m.URL != url("h"+c.m.Name[3:]) && c.m.URL != url("h5")) {
				t.Fatalf("new member's URL %s", c.m.URL)
			}
		})
	}
	// Promotion: only a learner in Replicate within promoteLag of the
	// commit index, and not an etcd learner.
	group := append(tagged(initial[:2], 0xa1, 0xa2), raftnode.Member{ID: 0xb4, URL: url("h4"), Name: "ctl4", Tag: 0xb4, Learner: true})
	etcd := append(slices.Clone(etcd3[:2]), e(0xb4, "ctl4", "h4"))
	for _, pc := range []struct {
		pr          raftnode.Progress
		etcdLearner bool
		want        bool
	}{
		{raftnode.Progress{State: "StateSnapshot", Match: 0}, false, false},
		{raftnode.Progress{State: "StateReplicate", Match: 1000 - promoteLag - 1}, false, false},
		{raftnode.Progress{State: "StateReplicate", Match: 1000 - promoteLag}, false, true},
		{raftnode.Progress{State: "StateReplicate", Match: 1000}, true, false},
	} {
		st := leader
		st.Progress = map[uint64]raftnode.Progress{0xb4: pc.pr}
		etcd[2].Learner = pc.etcdLearner
		c, ok, _ := plan(group, etcd, st, peerURL)
		if ok != pc.want || (ok && (c.op != raftnode.Promote || c.m.ID != 0xb4)) {
			t.Errorf("%+v etcd learner %v: plan %v %+v, want promote %v", pc.pr, pc.etcdLearner, ok, c, pc.want)
		}
	}
}

// TestClusterFollowsEtcd: three nodes following a fake etcd. A follower
// is stopped for good and removed from etcd: the group drops it. A
// fourth node is added to etcd and started with Join: the leader adds it
// as a learner, it catches up and is promoted; clients of it are
// forwarded. Then the leader stops: the survivor and the new node (whose
// vote is needed) elect a leader, and every confirmed message is there.
func TestClusterFollowsEtcd(t *testing.T) { followsEtcd(t, false) }

// TestClusterFollowsEtcdTLS: the same with etcd's peer TLS on the broker
// peer port (the new member's URL is https too).
func TestClusterFollowsEtcdTLS(t *testing.T) { followsEtcd(t, true) }

func followsEtcd(t *testing.T, withTLS bool) {
	tc := newTestCluster(t, func(tc *testCluster) {
		tc.etcd = newFakeEtcd()
		if withTLS {
			lab, err := tlsutil.WriteLab(t.TempDir(), []string{"127.0.0.11", "127.0.0.12", "127.0.0.13", "127.0.0.14"}, "client")
			if err != nil {
				t.Fatal(err)
			}
			info := transport.TLSInfo{CertFile: lab.Server, KeyFile: lab.ServerKey, TrustedCAFile: lab.CA, ClientCertAuth: true}
			tc.peerTLS = func() (transport.TLSInfo, error) { return info, nil }
			tc.etcd.https = true
		}
	})
	l := tc.leader(10 * time.Second)
	waitMembers := func(i int, what string, cond func([]Member) bool) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for !cond(tc.nodes[i].Members()) {
			if time.Now().After(deadline) {
				t.Fatalf("ctl%d: no %s within 15 s: %+v", i+1, what, tc.nodes[i].Members())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitMembers(l, "etcd IDs recorded", func(ms []Member) bool {
		return len(ms) == 3 && !slices.ContainsFunc(ms, func(m Member) bool { return m.EtcdID == 0 })
	})
	c := dialAny(t, tc.amqp[l], 10*time.Second)
	ch, err := c.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("kept", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	ch.Close()
	const n = 300
	sent := publishConfirmed(t, c, "kept", 0, n) // more than a snapshot's entries
	c.Close()

	victim := (l + 1) % 3
	other := 3 - l - victim
	tc.stop(victim)
	tc.etcd.remove(tc.members[victim].Name)
	names := func(ms []Member) string {
		var s []string
		for _, m := range ms {
			s = append(s, m.Name+map[bool]string{true: "(learner)"}[m.Learner])
		}
		return strings.Join(s, ",")
	}
	waitMembers(l, "removal of "+tc.members[victim].Name, func(ms []Member) bool { return len(ms) == 2 })
	waitMembers(other, "removal of "+tc.members[victim].Name, func(ms []Member) bool { return len(ms) == 2 })

	// ctl4 on 127.0.0.14: etcd member add, then its start with the
	// member list member add prints (the survivors and itself).
	base := t.TempDir()
	c4 := Member{Name: "ctl4", Host: "127.0.0.14", PeerURL: "http://" + freeAddr(t, "127.0.0.14")}
	tc.amqp = append(tc.amqp, freeAddr(t, "127.0.0.14"))
	tc.dirs = append(tc.dirs, filepath.Join(base, "ctl4"))
	tc.nodes = append(tc.nodes, nil)
	tc.etcd.add("ctl4", c4.PeerURL)
	view := []Member{tc.members[l], tc.members[other], c4}
	slices.SortFunc(view, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	self := uint64(0)
	for i := range view {
		view[i].ID = uint64(i + 1)
		if view[i].Name == "ctl4" {
			self = view[i].ID
		}
	}
	tc.startNode(3, view, self, true)
	if id := tc.nodes[3].Self().ID; id != tc.etcd.ids["ctl4"] {
		t.Fatalf("the joining node's raft ID %x, want its etcd ID %x", id, tc.etcd.ids["ctl4"])
	}
	waitMembers(l, "ctl4 a voter", func(ms []Member) bool {
		return names(ms) == names(tc.nodes[l].Members()) && len(ms) == 3 && !ms[2].Learner
	})
	waitMembers(3, "ctl4's table", func(ms []Member) bool { return names(ms) == names(tc.nodes[l].Members()) })
	if u := tc.nodes[l].Members()[2].PeerURL; withTLS != strings.HasPrefix(u, "https://") {
		t.Fatalf("ctl4's peer URL %s (peer TLS %v)", u, withTLS)
	}
	t.Logf("members: %s", names(tc.nodes[l].Members()))
	// A client of ctl4 is forwarded to the leader.
	c = dialAny(t, tc.amqp[3], 10*time.Second)
	sent += publishConfirmed(t, c, "kept", n, 100)
	c.Close()
	var st NodeStatus
	for _, s := range tc.nodes[l].ClusterStatus() {
		if s.Name == "ctl4" {
			st = s
		}
	}
	if !st.Reachable || st.Learner || st.Term == 0 {
		t.Fatalf("ctl4 in the leader's cluster status: %+v", st)
	}

	// The leader stops: the survivor needs ctl4's vote.
	tc.stop(l)
	deadline := time.Now().Add(10 * time.Second)
	nl := -1
	for nl < 0 {
		for _, i := range []int{other, 3} {
			if tc.nodes[i].Broker() != nil {
				nl = i
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no leader among the survivor and ctl4 within 10 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("new leader %s", tc.nodes[nl].Self().Name)
	c = dialAny(t, tc.amqp[other], 10*time.Second)
	defer c.Close()
	ch, err = c.Channel()
	if err != nil {
		t.Fatal(err)
	}
	for i := range sent {
		m, ok, err := ch.Get("kept", true)
		if err != nil || !ok {
			t.Fatalf("message %d of %d: ok=%v err=%v", i, sent, ok, err)
		}
		if want := fmt.Sprintf("m%d", i); string(m.Body) != want {
			t.Fatalf("message %d: %q, want %q", i, m.Body, want)
		}
	}
}

// TestJoinNotAddedWarns: a node that joined etcd's cluster but that no
// broker group adds (here: the other member runs no broker group, as a
// substrate created with one member) says so, instead of waiting
// silently.
func TestJoinNotAddedWarns(t *testing.T) {
	defer func(d time.Duration) { notAddedWarn = d }(notAddedWarn)
	notAddedWarn = 200 * time.Millisecond
	etcd := newFakeEtcd()
	alone := Member{Name: "ctl1", Host: "127.0.0.11", PeerURL: "http://" + freeAddr(t, "127.0.0.11")}
	etcd.add("ctl1", alone.PeerURL) // its broker runs alone: nothing listens there
	self := Member{Name: "ctl2", Host: "127.0.0.12", PeerURL: "http://" + freeAddr(t, "127.0.0.12")}
	alone.ID, self.ID = 1, 2
	var logs testkit.Buffer
	n, err := New(Config{
		Members: []Member{alone, self}, Self: 2, Dir: filepath.Join(t.TempDir(), "ctl2"), Join: true,
		AMQPAddrs:    []string{freeAddr(t, "127.0.0.12")},
		TickInterval: 20 * time.Millisecond, ElectionTicks: 10,
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Etcd:   etcd.member(self),
		NewBroker: func(store.Log, broker.Fence) (*broker.Server, error) {
			return nil, errors.New("a node never added never leads")
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	n.peerURLOf = etcd.peerURL
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer n.Shutdown(context.Background())
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "has not added it yet") {
		if time.Now().After(deadline) {
			t.Fatalf("no warning that the group has not added this node; log:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n.added() {
		t.Fatal("the node says it was added")
	}
}
