package raftnode

import (
	"bytes"
	"net"
	"runtime"
	"strings"
	"testing"
)

func TestConfigValidate(t *testing.T) {
	peers := map[uint64]string{1: "http://127.0.0.11:25672", 2: "http://127.0.0.12:25672"}
	good := Config{ID: 1, Peers: peers, Dir: "/x"}
	if err := good.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	for _, tc := range []struct {
		name string
		mod  func(c *Config)
		want string
	}{
		{"no ID", func(c *Config) { c.ID = 0 }, "ID must be"},
		{"ID not a peer", func(c *Config) { c.ID = 3 }, "no URL for this node"},
		{"peer 0", func(c *Config) { c.Peers = map[uint64]string{0: "http://a:1", 1: "http://b:1"} }, "peer ID 0"},
		{"https", func(c *Config) { c.Peers = map[uint64]string{1: "https://b:1"} }, "not http://host:port"},
		{"no port", func(c *Config) { c.Peers = map[uint64]string{1: "http://b"} }, "not http://host:port"},
		{"garbage", func(c *Config) { c.Peers = map[uint64]string{1: "::"} }, "not http://host:port"},
		{"no Dir", func(c *Config) { c.Dir = "" }, "Dir is required"},
		{"negative tick", func(c *Config) { c.TickInterval = -1 }, "must not be negative"},
		{"short election", func(c *Config) { c.ElectionTicks = 2 }, "at least 3"},
		{"join without cluster ID", func(c *Config) { c.Join = true }, "ClusterID"},
	} {
		c := good
		tc.mod(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Validate() = %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestEnvelope(t *testing.T) {
	for _, data := range [][]byte{nil, {}, []byte("x"), bytes.Repeat([]byte{0xff}, 1000)} {
		b := encodeEnvelope(7, 1<<63+5, data)
		node, seq, got, ok := decodeEnvelope(b)
		if !ok || node != 7 || seq != 1<<63+5 || !bytes.Equal(got, data) {
			t.Errorf("round trip of %d bytes: %d %d %q %v", len(data), node, seq, got, ok)
		}
	}
	for _, b := range [][]byte{nil, {envelopeV1}, bytes.Repeat([]byte{0}, envelopeLen), append([]byte{2}, make([]byte, 16)...)} {
		if _, _, _, ok := decodeEnvelope(b); ok {
			t.Errorf("decodeEnvelope(%x) accepted", b)
		}
	}
	if randomSeq() == randomSeq() {
		t.Error("two random sequence starts are equal")
	}
}

// TestRolesCoalesce: a reader that does not read never blocks the loop;
// when it reads, it gets the roles in order and the latest last.
func TestRolesCoalesce(t *testing.T) {
	n := &Node{roles: make(chan Role, 4)}
	for term := uint64(1); term <= 100; term++ {
		n.emitRole(Role{Term: term, Leader: 1, IsLeader: true, Ready: term == 100})
	}
	close(n.roles)
	var got []Role
	for r := range n.Roles() {
		got = append(got, r)
	}
	if len(got) == 0 || got[len(got)-1] != (Role{Term: 100, Leader: 1, IsLeader: true, Ready: true}) {
		t.Fatalf("roles %v: want the Ready leader of term 100 last", got)
	}
	for i := 1; i < len(got); i++ {
		if got[i].Term <= got[i-1].Term {
			t.Fatalf("roles out of order: %v", got)
		}
	}
}

// TestStartRefuses: a bad Config, and a Dir whose WAL another running node
// holds, are refused at Start with an error (no goroutine left).
func TestStartRefuses(t *testing.T) {
	base := runtime.NumGoroutine()
	if _, err := Start(Config{ID: 1, Dir: t.TempDir()}, &testSM{}); err == nil {
		t.Fatal("Start without Peers succeeded")
	}
	ln, err := net.Listen("tcp", "127.0.0.11:0")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	peers := map[uint64]string{1: "http://" + ln.Addr().String()}
	n, err := Start(Config{ID: 1, Peers: peers, Dir: dir, Listener: ln, TickInterval: testTick}, &testSM{})
	if err != nil {
		t.Fatal(err)
	}
	ln2, err := net.Listen("tcp", "127.0.0.11:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln2.Close()
	if n2, err := Start(Config{ID: 1, Peers: peers, Dir: dir, Listener: ln2, TickInterval: testTick}, &testSM{}); err == nil {
		n2.Stop()
		t.Fatal("a second node on the same Dir started")
	} else {
		t.Logf("second Start on the same Dir: %v", err)
	}
	// A one-member group elects itself and applies.
	waitFor(t, electionWait, "single node leads", func() bool { return n.Status().IsLeader })
	proposeWait(t, n, []byte("solo"))
	n.Stop()
	ln2.Close()
	noLeak(t, base)
}

// proposeWait proposes data on n and waits for its done; any error fails
// the test.
func proposeWait(t *testing.T, n *Node, data []byte) {
	t.Helper()
	done := make(chan error, 1)
	if err := n.Propose(data, func(err error) { done <- err }); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
