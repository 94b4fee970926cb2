package cache

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"substrate/internal/faults"
	"substrate/internal/testkit"
)

// serveBytes runs one connection of s on a socket pair, sends data,
// half-closes and returns what the server wrote before closing. The
// target fails if a panic was contained (faults would hide the bug) or
// the connection does not end within 10 s of the client's EOF.
func serveBytes(t *testing.T, s *Server, data []byte) []byte {
	before := faults.Count(faults.Memcached)
	cl, sv := testkit.SocketPair(t)
	defer cl.Close()
	c := newConn(s, sv, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 11211})
	served := make(chan struct{})
	go func() {
		defer close(served)
		c.serve()
	}()
	var out bytes.Buffer
	read := make(chan struct{})
	go func() {
		defer close(read)
		io.Copy(&out, cl)
	}()
	go func() {
		cl.Write(data) // fails once the server closed: fine
		cl.CloseWrite()
	}()
	select {
	case <-served:
	case <-time.After(10 * time.Second):
		t.Fatalf("connection still served 10 s after the client's EOF; input %q", data)
	}
	<-read
	if n := faults.Count(faults.Memcached) - before; n != 0 {
		t.Fatalf("%d panics contained while serving %q", n, data)
	}
	return out.Bytes()
}

func fuzzCacheServer(t testing.TB, mod func(*Config)) *Server {
	cfg := NewConfig()
	cfg.Addrs = []string{"127.0.0.1:0"}
	cfg.MemoryLimit = 8 << 20
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// FuzzConn: a connection in the default (auto) protocol mode executing
// whatever arrives (text, meta and binary commands) against a real store
// never panics and ends when the client does.
func FuzzConn(f *testing.F) {
	for _, s := range []string{
		"set k 1 0 1\r\nv\r\nget k\r\ngets k\r\nmn\r\n",
		"ms k 2 T0 F5 I\r\nhi\r\nmg k v f t c k O123 q\r\nmg k s v N30 R10 h l\r\nmn\r\n",
		"ms k 1 MA N0\r\nx\r\nms k 1 MP\r\ny\r\nms k 1 ME\r\nz\r\nms k 1 C1 q\r\nw\r\nmn\r\n",
		"ma n N0 J13 D7 MI\r\nma n MD D100 v\r\nma n q\r\nmd n q I T30\r\nmg n v\r\nmd n C99\r\nmn\r\n",
		"me k\r\nmg missing k O1 q\r\nmg " + strings.Repeat("k", 250) + " v\r\nmg YmFzZTY0 b v\r\nms YmFzZTY0 1 b\r\nv\r\n",
		"ms k S100 T-1\r\n" + strings.Repeat("x", 100) + "\r\nmg k E5\r\nma k\r\n",
		"incr n 1\r\ndecr n 1\r\nadd n 0 0 2\r\n10\r\nincr n 18446744073709551615\r\ntouch n 10\r\ngat 0 n\r\ngats 0 n\r\n",
		"append k 0 0 1\r\na\r\nprepend k 0 0 1\r\nb\r\ncas k 0 0 1 99\r\nc\r\nreplace k 0 0 1 noreply\r\nd\r\n",
		"delete k\r\nflush_all 0\r\nflush_all noreply\r\nverbosity 1\r\nversion\r\nstats\r\nstats settings\r\nstats items\r\nstats slabs\r\nstats conns\r\nstats detail on\r\nstats reset\r\n",
		"cache_memlimit 100\r\nlru_crawler metadump all\r\nshutdown\r\nmisbehave\r\nquit\r\n",
		"set k 0 0 4294967295\r\n",
		"set k 0 0 -1\r\nget " + strings.Repeat("k ", 200) + "\r\n",
		binReq(BinSet, "k", setExtras(1, 0), "v", 1, 0) + binReq(BinGetK, "k", "", "", 2, 0) +
			binReq(BinIncrement, "n", arithExtras(1, 5, 0), "", 3, 0) + binReq(BinStat, "", "", "", 4, 0) +
			binReq(BinNoop, "", "", "", 5, 0),
		binReq(BinSetQ, "k", setExtras(0, 0), "v", 1, 0) + binReq(BinQuit, "", "", "", 2, 0),
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		serveBytes(t, fuzzCacheServer(t, nil), data)
	})
}

// FuzzSASLConn: with SASL on, arbitrary binary input never panics, and
// nothing reaches the store (no item, no byte used) unless the input holds
// a valid PLAIN credential: no sequence of frames skips authentication.
func FuzzSASLConn(f *testing.F) {
	for _, tc := range saslTranscripts {
		f.Add([]byte(tc.req))
	}
	f.Add([]byte(binReq(BinSet, "k", setExtras(1, 0), "v", 1, 0) + authOK))
	f.Add([]byte(binReq(BinSASLAuth, "PLAIN", "", "\x00user\x00secre", 1, 0) + binReq(BinSet, "k", setExtras(1, 0), "v", 2, 0)))
	f.Add([]byte(binReq(BinSASLAuth, "PLAIN", "", "", 1, 0) + binReq(BinSetQ, "k", setExtras(1, 0), "v", 2, 0) +
		binReq(BinIncrement, "n", arithExtras(1, 5, 0), "", 3, 0)))
	pwdb := writePasswordFile(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		s := fuzzCacheServer(t, func(c *Config) { c.SASL, c.SASLPasswordFile = true, pwdb })
		out := serveBytes(t, s, data)
		if bytes.Contains(data, []byte("user\x00secret")) || bytes.Contains(data, []byte("other\x00pass2")) {
			return
		}
		if tot := s.store.totals(); tot.totalItems != 0 || tot.bytes != 0 {
			t.Fatalf("no credential in %q, yet the store holds %d items, %d bytes", data, tot.totalItems, tot.bytes)
		}
		if bytes.Contains(out, []byte("Authenticated")) {
			t.Fatalf("no credential in %q, yet authenticated: %q", data, out)
		}
	})
}

// FuzzCheckPlain: the SASL PLAIN check accepts exactly
// "authzid NUL authcid NUL passwd" with authzid empty or the user itself
// and the user's password from the file (which may contain NUL).
func FuzzCheckPlain(f *testing.F) {
	creds := credentials{"user": []byte("secret"), "other": []byte("pass2"), "nul": []byte("a\x00b")}
	for _, s := range []string{plain("", "user", "secret"), plain("user", "user", "secret"), plain("other", "user", "secret"),
		plain("", "user", "secre"), plain("", "", "secret"), "\x00user", "", "\x00\x00", plain("", "nul", "a\x00b"),
		plain("", "user", "secret\x00")} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		parts := strings.SplitN(string(msg), "\x00", 3)
		want := len(parts) == 3 && parts[1] != "" && (parts[0] == "" || parts[0] == parts[1])
		if want {
			p, ok := creds[parts[1]]
			want = ok && string(p) == parts[2]
		}
		if got := creds.checkPlain(msg); got != want {
			t.Fatalf("checkPlain(%q) = %v, want %v", msg, got, want)
		}
	})
}

// packetConn is a net.PacketConn that hands out queued datagrams, then
// reports through drained that the reader came back for more (every
// datagram is handled), and blocks until Close.
type packetConn struct {
	mu      sync.Mutex
	in      [][]byte
	out     [][]byte
	drained chan struct{}
	closed  chan struct{}
	once    sync.Once
}

var fuzzPeer = &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}

func (p *packetConn) ReadFrom(b []byte) (int, net.Addr, error) {
	p.mu.Lock()
	if len(p.in) > 0 {
		d := p.in[0]
		p.in = p.in[1:]
		p.mu.Unlock()
		return copy(b, d), fuzzPeer, nil
	}
	p.mu.Unlock()
	p.once.Do(func() { close(p.drained) })
	<-p.closed
	return 0, nil, net.ErrClosed
}

func (p *packetConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.out = append(p.out, bytes.Clone(b))
	return len(b), nil
}

func (p *packetConn) Close() error { close(p.closed); return nil }
func (p *packetConn) LocalAddr() net.Addr {
	return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 11211}
}
func (p *packetConn) SetDeadline(time.Time) error      { return nil }
func (p *packetConn) SetReadDeadline(time.Time) error  { return nil }
func (p *packetConn) SetWriteDeadline(time.Time) error { return nil }

// FuzzUDP: two datagrams (frame header and request) on one UDP socket:
// handling never panics (a contained panic fails the target), and every
// reply carries the 8-byte frame header with the request's ID, a
// sequence number below the datagram count (or a bare header with count
// 0), zero reserved bytes, and fits a datagram.
func FuzzUDP(f *testing.F) {
	frame := func(rid uint16, payload string) []byte { return []byte(udpFrame(rid, 0, 1, payload)) }
	f.Add(frame(1, "set k 0 0 1\r\nv\r\n"), frame(2, "get k k k\r\n"))
	f.Add(frame(3, "ms k 1\r\nv\r\nmg k v\r\nmn\r\n"), frame(4, "gets k\r\n"))
	f.Add(frame(5, "set big 0 0 3000\r\n"+strings.Repeat("x", 3000)+"\r\n"), frame(6, "get big\r\nstats\r\n"))
	f.Add(frame(7, "set k 0 0 10\r\nab"), frame(8, "cdefghij\r\n"))
	f.Add(frame(9, binReq(BinSet, "k", setExtras(0, 0), "v", 1, 0)+binReq(BinGetQ, "k", "", "", 2, 0)+binReq(BinGetQ, "m", "", "", 3, 0)),
		frame(10, binReq(BinStat, "", "", "", 1, 0)))
	f.Add([]byte(udpFrame(11, 1, 2, "get k\r\n")), []byte("\x00\x01"))
	f.Add(frame(12, "quit\r\nget k\r\n"), frame(13, "\x80"))
	f.Fuzz(func(t *testing.T, d1, d2 []byte) {
		s := fuzzCacheServer(t, func(c *Config) { c.UDPAddrs = []string{"127.0.0.1:0"} })
		pc := &packetConn{in: [][]byte{d1, d2}, drained: make(chan struct{}), closed: make(chan struct{})}
		before := faults.Count(faults.Memcached)
		s.wg.Add(1)
		go s.serveUDP(pc)
		select {
		case <-pc.drained:
		case <-time.After(10 * time.Second):
			t.Fatalf("datagrams %q %q not handled within 10 s", d1, d2)
		}
		pc.Close()
		s.wg.Wait()
		if n := faults.Count(faults.Memcached) - before; n != 0 {
			t.Fatalf("%d panics contained handling %q %q", n, d1, d2)
		}
		rids := map[uint16]bool{}
		for _, d := range [][]byte{d1, d2} {
			if len(d) >= 2 {
				rids[binary.BigEndian.Uint16(d)] = true
			}
		}
		for _, o := range pc.out {
			if len(o) < udpHeaderLen || len(o) > udpMaxPayload {
				t.Fatalf("reply of %d bytes", len(o))
			}
			rid, seq, total := binary.BigEndian.Uint16(o), binary.BigEndian.Uint16(o[2:]), binary.BigEndian.Uint16(o[4:])
			if !rids[rid] || o[6] != 0 || o[7] != 0 || (total == 0 && len(o) != udpHeaderLen) || (total != 0 && seq >= total) {
				t.Fatalf("bad reply header % x for requests %q %q", o[:udpHeaderLen], d1, d2)
			}
		}
	})
}
