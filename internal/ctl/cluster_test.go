package ctl

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

type clusterNode struct {
	v     *ClusterView
	calls *int // ClusterView asks every member over the network: count it
}

func (n clusterNode) NodeInfo() NodeInfo { return NodeInfo{Version: "test", StartedAt: time.Now()} }
func (n clusterNode) ClusterView() *ClusterView {
	*n.calls++
	return n.v
}

// TestFollowerWithoutBroker: on a cluster node that does not lead there
// is no broker; broker commands fail with 69 naming the leader, and
// cluster_status lists every member and the Raft group.
func TestFollowerWithoutBroker(t *testing.T) {
	v := &ClusterView{Self: "rabbit@ctl2", Leader: "rabbit@ctl1", Members: []ClusterMember{
		{Node: "rabbit@ctl1", Running: true, Leader: true, Active: true, Term: 4, Commit: 120, Applied: 120},
		{Node: "rabbit@ctl2", Running: true, Term: 4, Commit: 120, Applied: 119},
		{Node: "rabbit@ctl3", Err: "connection refused"},
	}}
	calls := 0
	node := clusterNode{v, &calls}
	ctx := context.Background()
	r := Exec(ctx, nil, node, Request{Tool: ToolCtl, Argv: []string{"list_queues"}})
	if r.Code != ExitUnavail || !strings.Contains(r.Stderr, "rabbit@ctl1") {
		t.Fatalf("list_queues on a follower: %+v", r)
	}
	calls = 0
	r = Exec(ctx, nil, node, Request{Tool: ToolCtl, Argv: []string{"cluster_status"}})
	if r.Code != 0 {
		t.Fatalf("cluster_status: %+v", r)
	}
	if calls != 1 {
		t.Errorf("cluster_status asked the members %d times, want once", calls)
	}
	for _, want := range []string{"Cluster status of node rabbit@ctl2 ...", "Disk Nodes\x1b[0m\n\nrabbit@ctl1\nrabbit@ctl2\nrabbit@ctl3\n",
		"Running Nodes\x1b[0m\n\nrabbit@ctl1\nrabbit@ctl2\n\n", "Leader: rabbit@ctl1",
		"Node: rabbit@ctl1, role: leader, broker: active, term: 4, commit index: 120, applied index: 120",
		"Node: rabbit@ctl2, role: follower, broker: standby, term: 4, commit index: 120, applied index: 119",
		"Node: rabbit@ctl3, state: unreachable (connection refused)"} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("cluster_status lacks %q:\n%s", want, r.Stdout)
		}
	}
	r = Exec(ctx, nil, node, Request{Tool: ToolCtl, Argv: []string{"cluster_status", "--formatter", "json"}})
	var m map[string]any
	if err := json.Unmarshal([]byte(r.Stdout), &m); err != nil {
		t.Fatalf("cluster_status json: %v\n%s", err, r.Stdout)
	}
	raft, _ := m["raft"].(map[string]any)
	if raft["leader"] != "rabbit@ctl1" || len(m["running_nodes"].([]any)) != 2 || len(raft["nodes"].([]any)) != 3 {
		t.Fatalf("cluster_status json: %s", r.Stdout)
	}
	for _, cmd := range []string{"ping", "version", "help"} {
		if r := Exec(ctx, nil, node, Request{Tool: ToolCtl, Argv: []string{cmd}}); r.Code != 0 {
			t.Errorf("%s on a follower: %+v", cmd, r)
		}
	}
}

// TestClusterStatusLearner: a member being added (a Raft learner) shows
// as such in cluster_status, text and JSON.
func TestClusterStatusLearner(t *testing.T) {
	v := &ClusterView{Self: "rabbit@ctl1", Leader: "rabbit@ctl1", Members: []ClusterMember{
		{Node: "rabbit@ctl1", Running: true, Leader: true, Active: true, Term: 4, Commit: 120, Applied: 120},
		{Node: "rabbit@ctl4", Running: true, Learner: true, Term: 4, Commit: 120, Applied: 60},
	}}
	calls := 0
	ctx := context.Background()
	r := Exec(ctx, nil, clusterNode{v, &calls}, Request{Tool: ToolCtl, Argv: []string{"cluster_status"}})
	if want := "Node: rabbit@ctl4, role: learner, broker: standby, term: 4, commit index: 120, applied index: 60"; r.Code != 0 || !strings.Contains(r.Stdout, want) {
		t.Fatalf("cluster_status lacks %q: %+v", want, r)
	}
	r = Exec(ctx, nil, clusterNode{v, &calls}, Request{Tool: ToolCtl, Argv: []string{"cluster_status", "--formatter", "json"}})
	if !strings.Contains(r.Stdout, `"learner":true`) || strings.Count(r.Stdout, `"learner"`) != 1 {
		t.Fatalf("cluster_status json: %s", r.Stdout)
	}
}
