package cluster

import (
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// Member is one broker node of the cluster. Members computes those of
// ETCD_INITIAL_CLUSTER, which bootstrap the group; Node.Members is the
// group's live member table.
type Member struct {
	ID       uint64 // Raft ID: the member's position in name order, from 1
	Name     string // its etcd member name (ETCD_NAME)
	Host     string // the host of its etcd peer URL
	PeerURL  string // its broker peer endpoint, http://HOST:BROKER_PEER_PORT (https:// with peer TLS): Raft and forwarded connections
	AMQPAddr string // HOST:AMQP_PORT
	// EtcdID is its etcd member ID once the leader matched it (0 before:
	// a member of the initial cluster, by name); Learner: it receives the
	// log but does not vote yet (a member being added).
	EtcdID  uint64
	Learner bool
}

// Members derives the broker cluster from etcd's initial cluster
// (ETCD_INITIAL_CLUSTER, "name=peerURL,..."): one member per etcd member
// name, on the host of its (first) peer URL, with the broker's ports,
// which are the same on every node. Every node computes the same IDs
// because they follow the names' order. It returns the members and this
// node's ID (the member named self).
func Members(initialCluster, self string, peerPort, amqpPort int) ([]Member, uint64, error) {
	hosts := map[string]string{}
	var names []string
	for _, part := range strings.Split(initialCluster, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, raw, ok := strings.Cut(part, "=")
		if !ok || name == "" {
			return nil, 0, fmt.Errorf("initial cluster %q: %q is not name=URL", initialCluster, part)
		}
		u, err := url.Parse(raw)
		if err != nil || u.Hostname() == "" {
			return nil, 0, fmt.Errorf("initial cluster %q: member %s: peer URL %q has no host", initialCluster, name, raw)
		}
		if _, dup := hosts[name]; dup {
			continue // a second peer URL of the same member: the first one names its host
		}
		hosts[name] = u.Hostname()
		names = append(names, name)
	}
	if len(names) == 0 {
		return nil, 0, fmt.Errorf("initial cluster %q names no member", initialCluster)
	}
	slices.Sort(names)
	var ms []Member
	var selfID uint64
	seen := map[string]string{}
	for i, name := range names {
		h := hosts[name]
		if other, ok := seen[h]; ok {
			return nil, 0, fmt.Errorf("initial cluster: members %s and %s share the host %s: broker nodes use the same ports on every host, so each needs its own address", other, name, h)
		}
		seen[h] = name
		m := Member{ID: uint64(i + 1), Name: name, Host: h,
			PeerURL:  "http://" + net.JoinHostPort(h, strconv.Itoa(peerPort)),
			AMQPAddr: net.JoinHostPort(h, strconv.Itoa(amqpPort))}
		ms = append(ms, m)
		if name == self {
			selfID = m.ID
		}
	}
	if selfID == 0 {
		return nil, 0, fmt.Errorf("initial cluster %q does not name this member (%s)", initialCluster, self)
	}
	return ms, selfID, nil
}

// PeerAddr is the host:port of the member's peer endpoint.
func (m Member) PeerAddr() string {
	if u, err := url.Parse(m.PeerURL); err == nil && u.Host != "" {
		return u.Host
	}
	return m.PeerURL
}
