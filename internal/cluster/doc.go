// Package cluster runs substrate's broker as one node of a three-controller
// cluster (docs/cluster.md): the members come from etcd's initial cluster
// (Members), the nodes form a Raft group (internal/raftnode) over the
// replicated message store (broker/replica), and the leader runs the
// broker of its term while the others forward AMQP connections to it over
// the broker peer port (forward.go, peer.go).
//
// # Membership
//
// The group's membership is etcd's. A new Dir bootstraps the group of
// ETCD_INITIAL_CLUSTER's members, raft IDs 1..n by name (so Dirs made
// before membership changes existed keep working). From then on the
// live member table is raftnode's (Node.Members: name, host, peer URL,
// etcd member ID, learner), which everything reads: forwarding to the
// leader, the leader's check that a forwarded connection comes from a
// member, ClusterStatus (cluster_status, the status endpoint, the
// dashboard), metrics, PeerUpSince (the etcd hand-off's eligibility).
// While a node leads, follow (reconcile.go) brings the table in line
// with etcd's member list, one conf change a second: it records the
// etcd member IDs of the initial members (matched by name, once, so a
// later member reusing a name is told apart by ID) and follows a
// member's peer URL host (etcdctl member update), removes members
// whose etcd member is gone (never itself: another leader will), adds a
// started etcd member as a learner with its etcd member ID as raft ID
// (unique and never reused by etcd; an ID that is a raft ID already is
// refused and logged), and promotes a learner whose log is within
// promoteLag entries of the commit index. A node whose etcd joined a
// running cluster (Config.Join, ETCD_INITIAL_CLUSTER_STATE=existing)
// with no Raft log in Dir starts without bootstrapping, as raft ID its
// etcd member ID, and waits to be added; a node with a log restarts as
// recorded in Dir (raftnode's member.json), whatever the state flag
// says. The Raft group's rafthttp cluster ID is etcd's cluster ID, which
// a joining member knows too.
//
// Locks: Members reads raftnode's published table (under raftnode's
// leaf Node.mu) on every call; this package keeps no copy. The raft ID
// is an atomic (selfID), final once Start returned.
//
// Goroutines of a Node: the role goroutine (roles) follows Raft's role
// changes and alone starts and stops the term's broker (cur, curTerm);
// the membership goroutine (follow, with Config.Etcd; it acts only while
// the node leads);
// one accept loop per client listener, and one handle goroutine per
// accepted connection until it is given to the broker or relayed (two
// copy goroutines per relayed connection); the peer port's accept loop
// (peerMux.run), a classifier per new peer connection, and the node's
// own HTTP server for /substrate/ (forwarded connections, status). The
// goroutines that serve one peer (handle, the copies, the classifier)
// recover their own panics and close only that peer (internal/faults);
// net/http recovers its handlers'.
package cluster
