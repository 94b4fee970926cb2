package ctl

import (
	"fmt"
	"strings"
)

// A cluster of substrate nodes (issue 13): the broker runs on the Raft
// leader only. cluster_status lists every node and the Raft group's
// state; on a node that does not lead, commands that need the broker
// say which node does.

// ClusterMember is one node as cluster_status shows it.
type ClusterMember struct {
	Node    string // rabbit@ and its member name
	Running bool   // it answered
	Leader  bool   // it is the Raft leader
	Active  bool   // its broker serves clients
	Term    uint64
	Commit  uint64 // Raft commit index
	Applied uint64 // Raft applied index
	Err     string // why it did not answer
	Learner bool   // a member being added: it receives the log, does not vote yet
}

// ClusterView is the cluster as this node sees it.
type ClusterView struct {
	Self    string // this node's name
	Leader  string // "" while there is none
	Members []ClusterMember
}

// Clustered is a Node (see WithNode) that belongs to a cluster; its
// ClusterView asks every member.
type Clustered interface {
	ClusterView() *ClusterView
}

// clusterView returns the cluster, nil when the node is not clustered.
func (c *call) clusterView() *ClusterView {
	if cn, ok := c.node.(Clustered); ok {
		return cn.ClusterView()
	}
	return nil
}

// commands that answer on a node whose broker does not run (it does not
// lead its cluster).
var withoutBroker = map[string]bool{"help": true, "version": true, "ping": true, "await_startup": true, "wait": true,
	"cluster_status": true, "check_running": true, "server_version": true, "": true}

// notLeader is the error of a broker command on a node that does not lead.
func notLeader(node Node) Result {
	leader := "no node (an election is under way; try again in a few seconds)"
	if cn, ok := node.(Clustered); ok {
		if v := cn.ClusterView(); v != nil && v.Leader != "" {
			leader = v.Leader
		}
	}
	return Result{Stderr: fmt.Sprintf("Error:\nthis node does not run the broker: in a substrate cluster it runs on the Raft leader, now %s. Run the command there (rabbitmqctl on that host).\n", leader), Code: ExitUnavail}
}

// raftLines is cluster_status's section on the broker's Raft group.
func raftLines(v *ClusterView) string {
	var lines []string
	for _, m := range v.Members {
		if !m.Running {
			lines = append(lines, fmt.Sprintf("Node: %s, state: unreachable (%s)", m.Node, m.Err))
			continue
		}
		role := "follower"
		if m.Leader {
			role = "leader"
		} else if m.Learner {
			role = "learner"
		}
		lines = append(lines, fmt.Sprintf("Node: %s, role: %s, broker: %s, term: %d, commit index: %d, applied index: %d",
			m.Node, role, map[bool]string{true: "active", false: "standby"}[m.Active], m.Term, m.Commit, m.Applied))
	}
	leader := v.Leader
	if leader == "" {
		leader = "(none)"
	}
	return "Leader: " + leader + "\n" + strings.Join(lines, "\n")
}

func raftJSON(v *ClusterView) map[string]any {
	nodes := []map[string]any{}
	for _, m := range v.Members {
		n := map[string]any{"node": m.Node, "running": m.Running, "leader": m.Leader, "broker_active": m.Active,
			"term": m.Term, "commit_index": m.Commit, "applied_index": m.Applied}
		if m.Err != "" {
			n["error"] = m.Err
		}
		if m.Learner {
			n["learner"] = true
		}
		nodes = append(nodes, n)
	}
	return map[string]any{"leader": v.Leader, "nodes": nodes}
}
