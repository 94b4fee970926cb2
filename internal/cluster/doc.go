// Package cluster runs substrate's broker as one node of a three-controller
// cluster (docs/cluster.md): the members come from etcd's initial cluster
// (Members), the nodes form a Raft group (internal/raftnode) over the
// replicated message store (broker/replica), and the leader runs the
// broker of its term while the others forward AMQP connections to it over
// the broker peer port (forward.go, peer.go).
//
// Goroutines of a Node: the role goroutine (roles) follows Raft's role
// changes and alone starts and stops the term's broker (cur, curTerm);
// one accept loop per client listener, and one handle goroutine per
// accepted connection until it is given to the broker or relayed (two
// copy goroutines per relayed connection); the peer port's accept loop
// (peerMux.run), a classifier per new peer connection, and the node's
// own HTTP server for /substrate/ (forwarded connections, status). The
// goroutines that serve one peer (handle, the copies, the classifier)
// recover their own panics and close only that peer (internal/faults);
// net/http recovers its handlers'.
package cluster
