package cluster

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
	"go.etcd.io/etcd/client/pkg/v3/transport"

	"substrate/broker"
	"substrate/broker/store"
	"substrate/internal/tlsutil"
)

// testCluster is three in-process nodes on 127.0.0.11-13 sharing one
// in-memory definitions store (etcd's role in production).
type testCluster struct {
	t         *testing.T
	members   []Member
	dirs      []string
	amqp      []string // each node's client address
	nodes     []*Node
	defs      broker.Definitions
	maxConn   int                               // Config.MaxConnections of every node
	watermark uint64                            // the brokers' MemoryHighWatermark; 0: the default
	peerTLS   func() (transport.TLSInfo, error) // Config.PeerTLS of every node
	etcd      *fakeEtcd                         // Config.Etcd of every node (reconcile_test.go); nil: none
}

func newTestCluster(t *testing.T, mod ...func(*testCluster)) *testCluster {
	tc := &testCluster{t: t, defs: broker.NewMemDefinitions()}
	for _, m := range mod {
		m(tc)
	}
	base := t.TempDir()
	for i := 1; i <= 3; i++ {
		host := fmt.Sprintf("127.0.0.%d", 10+i)
		peer := freeAddr(t, host)
		tc.members = append(tc.members, Member{ID: uint64(i), Name: fmt.Sprintf("ctl%d", i), Host: host, PeerURL: "http://" + peer})
		tc.amqp = append(tc.amqp, freeAddr(t, host))
		tc.dirs = append(tc.dirs, filepath.Join(base, fmt.Sprintf("ctl%d", i)))
	}
	tc.nodes = make([]*Node, 3)
	for i := range tc.nodes {
		tc.start(i)
	}
	t.Cleanup(func() {
		for i := range tc.nodes {
			tc.stop(i)
		}
	})
	return tc
}

// freeAddr returns host:port with a port free now.
func freeAddr(t *testing.T, host string) string {
	ln, err := net.Listen("tcp", host+":0")
	if err != nil {
		t.Skipf("cannot listen on %s (loopback 127/8 needed): %v", host, err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func (tc *testCluster) start(i int) {
	tc.t.Helper()
	tc.startNode(i, tc.members, uint64(i+1), false)
}

// startNode starts node i with members as its initial cluster (self its
// position there), joining a running group with join.
func (tc *testCluster) startNode(i int, members []Member, self uint64, join bool) {
	tc.t.Helper()
	cfg := Config{
		Members: members, Self: self, Dir: tc.dirs[i], Join: join,
		AMQPAddrs:      []string{tc.amqp[i]},
		MaxConnections: tc.maxConn,
		PeerTLS:        tc.peerTLS,
		TickInterval:   20 * time.Millisecond, ElectionTicks: 10, SnapshotEntries: 200,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).With("node", i+1),
		NewBroker: func(l store.Log, fence broker.Fence) (*broker.Server, error) {
			cfg := broker.NewConfig()
			cfg.Addrs, cfg.External, cfg.Log, cfg.Definitions, cfg.Fence = nil, true, l, tc.defs, fence
			if tc.watermark != 0 {
				cfg.MemoryHighWatermark = tc.watermark
			}
			return broker.New(cfg)
		},
	}
	if tc.etcd != nil {
		cfg.Etcd = tc.etcd.member(members[self-1])
	}
	n, err := New(cfg)
	if err != nil {
		tc.t.Fatal(err)
	}
	if tc.etcd != nil {
		n.peerURLOf = tc.etcd.peerURL
	}
	if err := n.Start(context.Background()); err != nil {
		tc.t.Fatal(err)
	}
	tc.nodes[i] = n
}

func (tc *testCluster) stop(i int) {
	if tc.nodes[i] == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := tc.nodes[i].Shutdown(ctx); err != nil {
		tc.t.Logf("shutdown ctl%d: %v", i+1, err)
	}
	tc.nodes[i] = nil
}

// leader waits for a node whose broker is active and returns its index.
func (tc *testCluster) leader(d time.Duration) int {
	tc.t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		for i, n := range tc.nodes {
			if n != nil && n.Broker() != nil {
				return i
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	tc.t.Fatalf("no active broker within %v", d)
	return -1
}

func amqpURL(addr string) string { return "amqp://guest:guest@" + addr + "/" }

// dialAny connects through node i, retrying while it has no leader to
// forward to.
func dialAny(t *testing.T, addr string, d time.Duration) *amqp091.Connection {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		c, err := amqp091.Dial(amqpURL(addr))
		if err == nil {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("dial %s: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// publishConfirmed publishes n persistent messages to queue through c
// with confirms, and returns how many were acked.
func publishConfirmed(t *testing.T, c *amqp091.Connection, queue string, from, n int) int {
	t.Helper()
	ch, err := c.Channel()
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	conf := ch.NotifyPublish(make(chan amqp091.Confirmation, n))
	for i := from; i < from+n; i++ {
		if err := ch.Publish("", queue, false, false, amqp091.Publishing{DeliveryMode: 2, Body: fmt.Appendf(nil, "m%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	acked := 0
	timeout := time.After(20 * time.Second)
	for range n {
		select {
		case cf := <-conf:
			if cf.Ack {
				acked++
			}
		case <-timeout:
			t.Fatalf("confirms: %d of %d after 20 s", acked, n)
		}
	}
	return acked
}

func TestClusterForwardsAndFailsOver(t *testing.T) {
	tc := newTestCluster(t)
	l := tc.leader(10 * time.Second)
	f := (l + 1) % 3
	// A client of a follower is forwarded to the leader.
	c := dialAny(t, tc.amqp[f], 10*time.Second)
	ch, err := c.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("kept", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if got := tc.nodes[f].ForwardedConnections(); got != 1 {
		t.Fatalf("follower forwards %d connections, want 1", got)
	}
	const n = 500
	if acked := publishConfirmed(t, c, "kept", 0, n); acked != n {
		t.Fatalf("%d of %d confirmed", acked, n)
	}
	// Every node applied them.
	deadline := time.Now().Add(10 * time.Second)
	for _, nd := range tc.nodes {
		for nd.LocalStatus().Messages != n {
			if time.Now().After(deadline) {
				t.Fatalf("%s holds %d replicated messages, want %d", nd.Self().Name, nd.LocalStatus().Messages, n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	closed := c.NotifyClose(make(chan *amqp091.Error, 1))

	// Kill the leader: a new one within 5 s; the client's connection ends.
	stopped := time.Now()
	tc.stop(l)
	// Clients of the followers the moment the leader is gone (before
	// they know it: its peer port refuses) wait for the new leader
	// rather than being turned away.
	for i := range tc.nodes {
		if i == l {
			continue
		}
		ec, err := amqp091.DialConfig("amqp://guest:guest@"+tc.amqp[i]+"/", amqp091.Config{Dial: amqp091.DefaultDial(10 * time.Second)})
		if err != nil {
			t.Errorf("a client of ctl%d right after the leader stopped: %v", i+1, err)
			continue
		}
		ec.Close()
	}
	nl := tc.leader(5 * time.Second)
	t.Logf("new leader ctl%d after %v", nl+1, time.Since(stopped).Round(time.Millisecond))
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the forwarded connection outlived its leader")
	}
	// Every confirmed message is there, marked redelivered.
	other := 3 - l - nl // the surviving follower: forwarded again
	c2 := dialAny(t, tc.amqp[other], 10*time.Second)
	defer c2.Close()
	ch2, err := c2.Channel()
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		m, ok, err := ch2.Get("kept", false)
		if err != nil || !ok {
			t.Fatalf("message %d: ok=%v err=%v", i, ok, err)
		}
		if want := fmt.Sprintf("m%d", i); string(m.Body) != want || !m.Redelivered {
			t.Fatalf("message %d: %q redelivered=%v, want %q redelivered", i, m.Body, m.Redelivered, want)
		}
		if i < n/2 {
			m.Ack(false)
		}
	}
	ch2.Close()
	// The old leader restarts and catches up (acks included).
	tc.start(l)
	want := n - n/2
	deadline = time.Now().Add(15 * time.Second)
	for tc.nodes[l].LocalStatus().Messages != want || tc.nodes[l].LocalStatus().Applied < tc.nodes[nl].LocalStatus().Applied {
		if time.Now().After(deadline) {
			t.Fatalf("restarted ctl%d: %+v; leader: %+v", l+1, tc.nodes[l].LocalStatus(), tc.nodes[nl].LocalStatus())
		}
		time.Sleep(20 * time.Millisecond)
	}
	st := tc.nodes[l].ClusterStatus()
	for _, s := range st {
		if !s.Reachable || s.Term == 0 {
			t.Fatalf("cluster status: %+v", st)
		}
	}
}

// TestForwardOnlyFromMembers: the leader refuses a forwarded connection
// from an address that is no member's, so nobody who reaches the peer
// port can claim a loopback address for guest.
func TestForwardOnlyFromMembers(t *testing.T) {
	tc := newTestCluster(t)
	l := tc.leader(10 * time.Second)
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.99")}}
	pc, err := d.Dial("tcp", tc.members[l].PeerAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	pc.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(pc, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: amqp\r\nX-Forwarded-For: 127.0.0.1:1\r\n\r\n", forwardPath)
	resp, err := http.ReadResponse(bufio.NewReader(pc), nil)
	if err != nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("forward from 127.0.0.99: %v %v", resp, err)
	}
}

// TestConnectionMaxPerNode: with connection_max each node's listener
// stops accepting while that many of its own connections are open,
// served there (the leader) or forwarded (a follower); the next client
// waits in the backlog and is served once one closes.
func TestConnectionMaxPerNode(t *testing.T) {
	tc := newTestCluster(t, func(tc *testCluster) { tc.maxConn = 2 })
	l := tc.leader(10 * time.Second)
	for _, i := range []int{l, (l + 1) % 3} {
		a := dialAny(t, tc.amqp[i], 10*time.Second)
		b := dialAny(t, tc.amqp[i], 10*time.Second)
		third := make(chan *amqp091.Connection, 1)
		go func() {
			c, err := amqp091.DialConfig(amqpURL(tc.amqp[i]), amqp091.Config{Dial: amqp091.DefaultDial(10 * time.Second)})
			if err != nil {
				t.Errorf("ctl%d: the third client: %v", i+1, err)
				c = nil
			}
			third <- c
		}()
		select {
		case c := <-third:
			if c != nil {
				c.Close()
			}
			t.Fatalf("ctl%d served a third connection with connection_max 2", i+1)
		case <-time.After(500 * time.Millisecond): // it waits, unaccepted
		}
		a.Close()
		select {
		case c := <-third:
			if c == nil {
				t.FailNow()
			}
			c.Close()
		case <-time.After(10 * time.Second):
			t.Fatalf("ctl%d: the waiting client was not served after a connection closed", i+1)
		}
		b.Close()
	}
}

// TestReplicatedMessagesCountInMemoryAlarm: every node keeps the live
// replicated messages in memory, so the leader's memory alarm counts
// them (the broker's share of the one budget): a backlog past the
// watermark blocks publishers although each queue keeps only 1 MiB of
// bodies itself.
func TestReplicatedMessagesCountInMemoryAlarm(t *testing.T) {
	const watermark = 4 << 20
	tc := newTestCluster(t, func(tc *testCluster) { tc.watermark = watermark })
	// A leader change (an election on a slow machine: these nodes tick
	// every 20 ms) closes the connection: the publisher reconnects to
	// the new leader and goes on, as the messages stay replicated.
	var (
		l        int
		c        *amqp091.Connection
		sock     net.Conn
		ch       *amqp091.Channel
		blocked  chan amqp091.Blocking
		confirms chan amqp091.Confirmation
	)
	connect := func() {
		l = tc.leader(10 * time.Second)
		var err error
		c, err = amqp091.DialConfig(amqpURL(tc.amqp[l]), amqp091.Config{Dial: func(network, addr string) (net.Conn, error) {
			nc, err := net.DialTimeout(network, addr, 5*time.Second)
			sock = nc
			return nc, err
		}})
		if err == nil {
			blocked = c.NotifyBlocked(make(chan amqp091.Blocking, 4))
			ch, err = c.Channel()
		}
		if err == nil {
			err = ch.Confirm(false)
		}
		if err == nil {
			confirms = ch.NotifyPublish(make(chan amqp091.Confirmation, 256))
			_, err = ch.QueueDeclare("deep", true, false, false, false, nil)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	connect()
	// A blocked connection is not read: close its socket first, or
	// amqp091's Close waits for a close-ok that never comes.
	defer func() { sock.Close(); c.Close() }()
	body := make([]byte, 64<<10)
	deadline := time.After(30 * time.Second)
	reconnects := 0
	for sent := 0; ; sent++ {
		if sent*len(body) > 4*watermark {
			t.Fatalf("%d MiB published and confirmed, no connection.blocked (watermark %d MiB); the broker counts %d bytes",
				sent*len(body)>>20, watermark>>20, tc.nodes[l].Broker().MemoryUsed())
		}
		if err := ch.Publish("", "deep", false, false, amqp091.Publishing{DeliveryMode: 2, Body: body}); err != nil {
			if reconnects++; reconnects > 3 {
				t.Fatal(err)
			}
			t.Logf("publish: %v; reconnecting to the leader", err)
			sock.Close()
			c.Close()
			connect()
			continue
		}
		select {
		case b, open := <-blocked:
			if !open {
				continue // closed with the connection: the next publish reconnects
			}
			if !b.Active || b.Reason != "low on memory" {
				t.Fatalf("blocked: %+v", b)
			}
			t.Logf("blocked after %d MiB with %d bytes counted (watermark %d)", (sent+1)*len(body)>>20, tc.nodes[l].Broker().MemoryUsed(), watermark)
			return
		case <-confirms: // one at a time: each is replicated before the next
			// (a nack, or the channel closing, when a slow machine's
			// election ended the term under it: the next publish sees it)
		case <-deadline:
			t.Fatalf("no confirm nor connection.blocked within 30 s (%d published)", sent+1)
		}
	}
}

// TestPeerTLS: with etcd's peer TLS settings the peer port speaks only
// TLS with client certificates: the three nodes elect and replicate over
// it, a follower's client is forwarded over it, and a connection without
// a client certificate (or without TLS) gets nothing.
func TestPeerTLS(t *testing.T) {
	lab, err := tlsutil.WriteLab(t.TempDir(), []string{"127.0.0.11", "127.0.0.12", "127.0.0.13"}, "client")
	if err != nil {
		t.Fatal(err)
	}
	info := transport.TLSInfo{CertFile: lab.Server, KeyFile: lab.ServerKey, TrustedCAFile: lab.CA, ClientCertAuth: true}
	tc := newTestCluster(t, func(tc *testCluster) { tc.peerTLS = func() (transport.TLSInfo, error) { return info, nil } })
	l := tc.leader(10 * time.Second)
	f := (l + 1) % 3
	if !strings.HasPrefix(tc.nodes[f].Members()[l].PeerURL, "https://") {
		t.Fatalf("peer URL %s", tc.nodes[f].Members()[l].PeerURL)
	}
	c := dialAny(t, tc.amqp[f], 10*time.Second)
	defer c.Close()
	const n = 50
	if acked := publishConfirmed(t, c, "over-tls", 0, n); acked != n {
		t.Fatalf("%d of %d confirmed", acked, n)
	}
	if got := tc.nodes[f].ForwardedConnections(); got != 1 {
		t.Fatalf("follower forwards %d connections, want 1", got)
	}
	// The status endpoint answers members over TLS (cluster_status).
	// (Each query has a second; a loaded machine under -race may need
	// another try for the handshakes.)
	var bad string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		bad = ""
		for _, st := range tc.nodes[f].ClusterStatus() {
			if st.Err != "" {
				bad = st.Name + ": " + st.Err
			}
		}
		if bad == "" || time.Now().After(deadline) {
			break
		}
	}
	if bad != "" {
		t.Fatalf("status over TLS: %s", bad)
	}

	// Without a client certificate, or without TLS: nothing.
	peer := tc.members[l].PeerAddr()
	pool := x509.NewCertPool()
	ca, _ := os.ReadFile(lab.CA)
	pool.AppendCertsFromPEM(ca)
	host, _, _ := net.SplitHostPort(peer)
	tconn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", peer, &tls.Config{RootCAs: pool, ServerName: host})
	if err == nil {
		// TLS 1.3 reports a refused client certificate on the first read.
		tconn.SetDeadline(time.Now().Add(2 * time.Second))
		fmt.Fprintf(tconn, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", statusPath)
		_, err = tconn.Read(make([]byte, 1))
		tconn.Close()
	}
	if err == nil {
		t.Fatal("the peer port answered a client without a certificate")
	}
	pc, err := net.DialTimeout("tcp", peer, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	pc.SetDeadline(time.Now().Add(2 * time.Second))
	fmt.Fprintf(pc, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", statusPath)
	if b, err := io.ReadAll(pc); strings.Contains(string(b), "HTTP/1.1 200") {
		t.Fatalf("the peer port answered plain HTTP: %q (%v)", b, err)
	}
}

// TestPeerUpSince: a node knows since when each other member has been
// connected to it (the etcd leadership hand-off goes only to a member up
// for a while); a stopped member is not.
func TestPeerUpSince(t *testing.T) {
	tc := newTestCluster(t)
	l := tc.leader(10 * time.Second)
	f := (l + 1) % 3
	other := (l + 2) % 3
	waitUp := func(name string) time.Time {
		var since time.Time
		deadline := time.Now().Add(10 * time.Second)
		for since = tc.nodes[l].PeerUpSince(name); since.IsZero(); since = tc.nodes[l].PeerUpSince(name) {
			if time.Now().After(deadline) {
				t.Fatalf("ctl%d never connected to %s", l+1, name)
			}
			time.Sleep(10 * time.Millisecond)
		}
		return since
	}
	if since := waitUp(tc.members[f].Name); time.Since(since) > time.Minute {
		t.Fatalf("up since %v", since)
	}
	if !tc.nodes[l].PeerUpSince(tc.members[l].Name).IsZero() {
		t.Fatal("a node is up since some time to itself")
	}
	waitUp(tc.members[other].Name)
	tc.stop(other)
	deadline := time.Now().Add(10 * time.Second)
	for !tc.nodes[l].PeerUpSince(tc.members[other].Name).IsZero() {
		if time.Now().After(deadline) {
			t.Fatalf("ctl%d still counts the stopped ctl%d as connected", l+1, other+1)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
