package cluster

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// Forwarded connections. A follower hands a client connection to the
// leader over the leader's broker peer port: an HTTP/1.1 upgrade
// (forwardPath) naming the client's address, then the client's bytes
// both ways. The leader answers 101 only while its broker is active
// (503 otherwise: the follower closes the client, which reconnects),
// so a connection is forwarded at most once and never in a loop between
// nodes that disagree about who leads. The broker sees the client's own
// address, so loopback-only users (guest) and logs work as they would on
// the node the client dialled. The peer port is trusted as etcd's peer
// port and RabbitMQ's 25672 are: only the controllers may reach it.

// forward relays nc to the leader m. It returns true, with nc still
// open, when the leader cannot take it yet: its broker not started (503)
// or its peer port unreachable (it may have just died: this node will
// know of a new leader within moments); the caller may try again, the
// client waiting for connection.start meanwhile. Otherwise nc is relayed
// or closed.
func (n *Node) forward(nc net.Conn, m Member, isTLS bool) (retry bool) {
	d := net.Dialer{Timeout: forwardDial}
	if ip := net.ParseIP(n.self.Host); ip != nil {
		d.LocalAddr = &net.TCPAddr{IP: ip} // the leader checks it
	}
	pc, err := d.Dial("tcp", m.PeerAddr())
	if err == nil && n.peerTLS != nil {
		pc, err = n.peerHandshake(pc, m)
	}
	if err != nil {
		n.log.Debug("amqp: cannot reach the leader to forward a client yet", "leader", m.Name, "peer", nc.RemoteAddr().String(), "err", err)
		return true
	}
	if !n.track(true, nc, pc) {
		nc.Close()
		pc.Close()
		return false
	}
	defer n.track(false, nc, pc)
	tlsHeader := ""
	if isTLS {
		tlsHeader = "X-Substrate-TLS: 1\r\n"
	}
	pc.SetDeadline(time.Now().Add(forwardDial))
	if _, err := fmt.Fprintf(pc, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: amqp\r\nX-Forwarded-For: %s\r\n%s\r\n",
		forwardPath, m.Host, nc.RemoteAddr().String(), tlsHeader); err != nil {
		nc.Close()
		pc.Close()
		return false
	}
	br := bufio.NewReader(pc)
	resp, err := http.ReadResponse(br, nil)
	if err == nil && resp.StatusCode == http.StatusServiceUnavailable {
		pc.Close()
		return true
	}
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		status := ""
		if resp != nil {
			status = resp.Status
		}
		n.log.Warn("amqp: the leader refused a forwarded client; closing it", "leader", m.Name, "peer", nc.RemoteAddr().String(), "status", status, "err", err)
		nc.Close()
		pc.Close()
		return false
	}
	pc.SetDeadline(time.Time{})
	relay(n.log, nc, pc, br)
	return false
}

// bufConn is a connection whose first bytes were read into a buffer.
type bufConn struct {
	net.Conn
	r      io.Reader
	remote net.Addr
}

func (c *bufConn) Read(p []byte) (int, error) { return c.r.Read(p) }
func (c *bufConn) RemoteAddr() net.Addr       { return c.remote }

// serveForwarded takes a client connection a follower forwards, while
// this node's broker is active.
func (n *Node) serveForwarded(w http.ResponseWriter, r *http.Request) {
	b := n.active.Load()
	if b == nil {
		http.Error(w, "this node is not the broker leader", http.StatusServiceUnavailable)
		return
	}
	if !n.fromMember(r.RemoteAddr) {
		n.log.Warn("amqp: refused a forwarded connection from outside the cluster", "from", r.RemoteAddr)
		http.Error(w, "only cluster members forward connections", http.StatusForbidden)
		return
	}
	isTLS := r.Header.Get("X-Substrate-TLS") == "1"
	if isTLS && n.cfg.TLS == nil {
		http.Error(w, "AMQPS is not configured on the leader", http.StatusServiceUnavailable)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "cannot take over the connection", http.StatusInternalServerError)
		return
	}
	nc, brw, err := hj.Hijack()
	if err != nil {
		return
	}
	nc.SetDeadline(time.Time{})
	if _, err := io.WriteString(nc, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: amqp\r\n\r\n"); err != nil {
		nc.Close()
		return
	}
	var remote net.Addr = nc.RemoteAddr()
	if a, err := net.ResolveTCPAddr("tcp", r.Header.Get("X-Forwarded-For")); err == nil {
		remote = a
	}
	var c net.Conn = &bufConn{Conn: nc, r: brw.Reader, remote: remote}
	if isTLS {
		c = tls.Server(c, n.cfg.TLS)
	}
	b.Serve(c)
}

// fromMember reports whether addr (host:port) is a member's address.
func (n *Node) fromMember(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return false
	}
	for _, m := range n.Members() {
		if mip := net.ParseIP(m.Host); mip != nil {
			if mip.Equal(ip) {
				return true
			}
			continue
		}
		ips, _ := net.LookupIP(m.Host) // a member named by host name
		for _, mip := range ips {
			if mip.Equal(ip) {
				return true
			}
		}
	}
	return false
}

// NodeStatus is one node's view of the broker's Raft group.
type NodeStatus struct {
	Name          string `json:"name"`
	ID            uint64 `json:"id"`
	Reachable     bool   `json:"reachable"`
	Leader        string `json:"leader"`
	IsLeader      bool   `json:"is_leader"`
	Active        bool   `json:"active"` // its broker serves clients
	Term          uint64 `json:"term"`
	Commit        uint64 `json:"commit_index"`
	Applied       uint64 `json:"applied_index"`
	SnapshotIndex uint64 `json:"snapshot_index"`
	Messages      int    `json:"messages"` // live replicated messages
	Forwarded     int    `json:"forwarded_connections"`
	Learner       bool   `json:"learner,omitempty"` // a member being added: it receives the log, does not vote yet
	// Progress: on the leader, each member's replication as the leader
	// sees it (raftnode.Progress's one-line form), by name.
	Progress map[string]string `json:"progress,omitempty"`
	Err      string            `json:"error,omitempty"`
}

// LocalStatus returns this node's status.
func (n *Node) LocalStatus() NodeStatus {
	self := n.selfID.Load()
	st := NodeStatus{Name: n.self.Name, ID: self, Reachable: true, Active: n.active.Load() != nil, Forwarded: n.ForwardedConnections()}
	if n.raft == nil {
		return st
	}
	rs := n.raft.Status()
	st.IsLeader, st.Term, st.Commit, st.Applied, st.SnapshotIndex = rs.IsLeader, rs.Term, rs.Commit, rs.Applied, rs.SnapshotIndex
	for _, m := range n.Members() {
		if m.ID == self {
			st.Learner = m.Learner
		}
		if m.ID == rs.Leader {
			st.Leader = m.Name
		}
		if pr, ok := rs.Progress[m.ID]; ok && m.ID != self {
			if st.Progress == nil {
				st.Progress = make(map[string]string, len(rs.Progress))
			}
			st.Progress[m.Name] = pr.String()
		}
	}
	st.Messages = n.sm.Len()
	return st
}

func (n *Node) serveStatus(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(n.LocalStatus())
}

// ClusterStatus asks every member for its status (over its peer port,
// within a second); an unreachable one is reported as such.
func (n *Node) ClusterStatus() []NodeStatus {
	ms := n.Members()
	out := make([]NodeStatus, len(ms))
	done := make(chan struct{}, len(out))
	cl := n.statusClient.Load()
	if cl == nil { // not started: no peer TLS yet either
		cl = &http.Client{Timeout: statusTimeout}
	}
	for i, m := range ms {
		go func() {
			defer func() { done <- struct{}{} }()
			if m.ID == n.selfID.Load() {
				out[i] = n.LocalStatus()
				return
			}
			out[i] = NodeStatus{Name: m.Name, ID: m.ID, Learner: m.Learner}
			resp, err := cl.Get(m.PeerURL + statusPath)
			if err != nil {
				out[i].Err = err.Error()
				return
			}
			defer resp.Body.Close()
			var st NodeStatus
			if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&st); err != nil {
				out[i].Err = err.Error()
				return
			}
			out[i] = st
		}()
	}
	for range out {
		<-done
	}
	return out
}

// peerHandshake runs the TLS handshake of a connection to member m's peer
// port (etcd's peer TLS settings: its certificate, CA and, with
// ETCD_PEER_AUTO_TLS, no verification, as etcd's own peer client).
func (n *Node) peerHandshake(c net.Conn, m Member) (net.Conn, error) {
	cfg := n.peerTLS.Clone()
	if cfg.ServerName == "" {
		cfg.ServerName = m.Host
	}
	tc := tls.Client(c, cfg)
	tc.SetDeadline(time.Now().Add(forwardDial))
	if err := tc.Handshake(); err != nil {
		c.Close()
		return nil, err
	}
	tc.SetDeadline(time.Time{})
	return tc, nil
}
