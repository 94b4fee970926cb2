package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// member is one etcd member of a test cluster, on loopback ports.
type member struct {
	name       string
	dir        string
	clientPort int
	peerPort   int
	p          *proc
}

func (m *member) clientURL() string { return fmt.Sprintf("http://127.0.0.1:%d", m.clientPort) }
func (m *member) peerURL() string   { return fmt.Sprintf("http://127.0.0.1:%d", m.peerPort) }

// env is the member's etcd.conf, as the manual install writes it.
func (m *member) env(initialCluster, state string) []string {
	return []string{
		"ETCD_NAME=" + m.name,
		"ETCD_DATA_DIR=" + m.dir,
		"ETCD_LISTEN_CLIENT_URLS=" + m.clientURL(),
		"ETCD_ADVERTISE_CLIENT_URLS=" + m.clientURL(),
		"ETCD_LISTEN_PEER_URLS=" + m.peerURL(),
		"ETCD_INITIAL_ADVERTISE_PEER_URLS=" + m.peerURL(),
		"ETCD_INITIAL_CLUSTER=" + initialCluster,
		"ETCD_INITIAL_CLUSTER_TOKEN=substrate-test",
		"ETCD_INITIAL_CLUSTER_STATE=" + state,
		"ETCD_LOG_LEVEL=warn",
	}
}

// startMember runs the member. Even members go through `substrate etcd`
// with ETCD_* in the environment (an etcd unit file pointed at substrate),
// odd ones through `substrate serve --services etcd --etcd-config FILE`.
func startMember(t *testing.T, i int, m *member, initialCluster, state string) {
	t.Helper()
	env := m.env(initialCluster, state)
	if i%2 == 0 {
		m.p = start(t, env, "etcd")
		return
	}
	conf := filepath.Join(t.TempDir(), m.name+".conf")
	var lines []string
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		lines = append(lines, fmt.Sprintf("%s=%q", k, v))
	}
	if err := os.WriteFile(conf, []byte("#[Member]\n"+strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m.p = start(t, nil, "serve", "--services", "etcd", "--etcd-config", conf, "--data-dir", t.TempDir())
}

// startCluster starts a new three-member cluster, members named
// prefix1..prefix3, and waits until each is ready. It returns the members,
// the ETCD_INITIAL_CLUSTER value and the client endpoints.
func startCluster(t *testing.T, prefix string) (ms []*member, initial string, endpoints []string) {
	t.Helper()
	base := t.TempDir()
	var ic []string
	for i := 1; i <= 3; i++ {
		m := &member{name: fmt.Sprintf("%s%d", prefix, i), dir: filepath.Join(base, fmt.Sprintf("%s%d", prefix, i)), clientPort: freePort(t), peerPort: freePort(t)}
		ms = append(ms, m)
		ic = append(ic, m.name+"="+m.peerURL())
	}
	initial = strings.Join(ic, ",")
	for i, m := range ms {
		startMember(t, i, m, initial, "new")
	}
	for _, m := range ms {
		m.p.waitReady(60 * time.Second)
		endpoints = append(endpoints, m.clientURL())
	}
	return ms, initial, endpoints
}

func TestThreeMemberCluster(t *testing.T) {
	ms, initial, endpoints := startCluster(t, "ctl")
	c := client(t, endpoints...)
	ctx := ctxT(t, 90*time.Second)
	list, err := c.MemberList(ctx)
	if err != nil || len(list.Members) != 3 {
		t.Fatalf("member list: %v %v", list, err)
	}
	if _, err := c.Put(ctx, "cluster-key", "replicated"); err != nil {
		t.Fatal(err)
	}
	for _, m := range ms { // a linearizable read on every member
		mc := client(t, m.clientURL())
		resp, err := mc.Get(ctx, "cluster-key")
		if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "replicated" {
			t.Fatalf("%s: %v %v", m.name, resp, err)
		}
	}

	// Add a fourth member at runtime: learner first, then promote.
	m4 := &member{name: "ctl4", dir: filepath.Join(t.TempDir(), "ctl4"), clientPort: freePort(t), peerPort: freePort(t)}
	add, err := retry(t, func() (*clientv3.MemberAddResponse, error) {
		// refused until the leader has been connected to its peers for a
		// while (etcd's strict reconfiguration check)
		return c.MemberAddAsLearner(ctx, []string{m4.peerURL()})
	})
	if err != nil {
		t.Fatal(err)
	}
	var ic4 []string
	for _, mem := range add.Members {
		name := mem.Name
		if mem.ID == add.Member.ID {
			name = m4.name
		}
		for _, u := range mem.PeerURLs {
			ic4 = append(ic4, name+"="+u)
		}
	}
	startMember(t, 4, m4, strings.Join(ic4, ","), "existing")
	m4.p.waitReady(60 * time.Second)
	if _, err := retry(t, func() (*clientv3.MemberPromoteResponse, error) {
		return c.MemberPromote(ctx, add.Member.ID) // refused while the learner catches up
	}); err != nil {
		t.Fatalf("promote: %v", err)
	}
	list, err = c.MemberList(ctx)
	if err != nil || len(list.Members) != 4 {
		t.Fatalf("member list after add: %v %v", list, err)
	}
	for _, mem := range list.Members {
		if mem.IsLearner {
			t.Fatalf("%s is still a learner", mem.Name)
		}
	}
	c4 := client(t, m4.clientURL())
	if resp, err := c4.Get(ctx, "cluster-key"); err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("new member read: %v %v", resp, err)
	}

	// Restart a member with its data: it rejoins and catches up on what
	// was written while it was down.
	ms[1].p.stop(syscall.SIGTERM)
	if code := ms[1].p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("ctl2 exit status %d:\n%s", code, ms[1].p.output())
	}
	if _, err := c.Put(ctx, "while-down", "caught-up", clientv3.WithPrevKV()); err != nil {
		t.Fatal(err)
	}
	startMember(t, 1, ms[1], initial, "new") // INITIAL_* are ignored with existing data
	ms[1].p.waitReady(60 * time.Second)
	c2 := client(t, ms[1].clientURL())
	resp, err := c2.Get(ctx, "while-down")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "caught-up" {
		t.Fatalf("restarted member: %v %v", resp, err)
	}
	if list, err := c2.MemberList(ctx); err != nil || len(list.Members) != 4 {
		t.Fatalf("member list from the restarted member: %v %v", list, err)
	}
}

// retry calls f every 300 ms until it succeeds or 60 s have passed.
func retry[T any](t *testing.T, f func() (T, error)) (T, error) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		v, err := f()
		if err == nil || time.Now().After(deadline) {
			return v, err
		}
		time.Sleep(300 * time.Millisecond)
	}
}
