package cache

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// forEachUDPTarget runs body against our server's and memcached's UDP port.
func forEachUDPTarget(t *testing.T, body func(t *testing.T, addr string)) {
	t.Run("ours", func(t *testing.T) {
		cfg := NewConfig()
		cfg.Addrs = []string{"127.0.0.1:0"}
		cfg.UDPAddrs = []string{"127.0.0.1:0"}
		s, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Shutdown(context.Background()) })
		body(t, s.UDPAddrs()[0].String())
	})
	t.Run("memcached", func(t *testing.T) {
		needMemcached(t)
		port := freeUDPPort(t)
		execMemcached(t, "-u", "nobody", "-l", "127.0.0.1", "-p", strconv.Itoa(freePort(t)), "-U", strconv.Itoa(port), "-t", "1")
		addr := "127.0.0.1:" + strconv.Itoa(port)
		// Ready when a version request is answered.
		deadline := time.Now().Add(5 * time.Second)
		for {
			u := dialUDP(t, addr)
			u.nc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			u.sendRaw(udpFrame(1, 0, 1, "version\r\n"))
			var b [64]byte
			_, err := u.nc.Read(b[:])
			u.nc.Close()
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("memcached UDP not ready")
			}
		}
		body(t, addr)
	})
}

func freeUDPPort(t testing.TB) int {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().(*net.UDPAddr).Port
}

type udpClient struct {
	t  testing.TB
	nc net.Conn
}

func dialUDP(t testing.TB, addr string) *udpClient {
	nc, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &udpClient{t: t, nc: nc}
}

func udpFrame(rid, seq, total uint16, payload string) string {
	var h [8]byte
	binary.BigEndian.PutUint16(h[0:], rid)
	binary.BigEndian.PutUint16(h[2:], seq)
	binary.BigEndian.PutUint16(h[4:], total)
	return string(h[:]) + payload
}

func (u *udpClient) sendRaw(d string) {
	if _, err := u.nc.Write([]byte(d)); err != nil {
		u.t.Fatal(err)
	}
}

// exchange sends the datagram, then a separate "mn" request with id 0xffff,
// and returns the datagrams received before the MN, each as
// "rid/seq/total:payload".
func (u *udpClient) exchange(d string) []string {
	u.t.Helper()
	u.sendRaw(d)
	u.sendRaw(udpFrame(0xffff, 0, 1, "mn\r\n"))
	var out []string
	buf := make([]byte, 65536)
	for {
		u.nc.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, err := u.nc.Read(buf)
		if err != nil {
			u.t.Fatalf("read after %q: %v", out, err)
		}
		b := buf[:n]
		if n < 8 || b[6] != 0 || b[7] != 0 {
			u.t.Fatalf("bad datagram %q", b)
		}
		s := fmt.Sprintf("%d/%d/%d:%s", binary.BigEndian.Uint16(b), binary.BigEndian.Uint16(b[2:]), binary.BigEndian.Uint16(b[4:]), b[8:])
		if s == "65535/0/1:MN\r\n" {
			return out
		}
		out = append(out, s)
	}
}

func TestUDP(t *testing.T) {
	x := strings.Repeat("x", 3000)
	forEachUDPTarget(t, func(t *testing.T, addr string) {
		u := dialUDP(t, addr)
		for _, tc := range []struct {
			name, req string
			want      []string
		}{
			{"sets", udpFrame(1, 0, 1, "set a 0 0 3\r\nabc\r\nset b 0 0 3000\r\n"+x+"\r\n"),
				[]string{"1/0/1:STORED\r\n", "1/0/1:STORED\r\n"}},
			{"multi get split per hit", udpFrame(2, 0, 1, "get a b nope a\r\n"), []string{
				"2/0/1:VALUE a 0 3\r\nabc\r\n",
				"2/0/3:VALUE b 0 3000\r\n" + x[:udpDataSize-len("VALUE b 0 3000\r\n")],
				"2/1/3:" + x[:udpDataSize],
				"2/2/3:" + x[:3000-2*udpDataSize+len("VALUE b 0 3000\r\n")] + "\r\n",
				"2/0/1:VALUE a 0 3\r\nabc\r\nEND\r\n"}},
			{"miss", udpFrame(3, 0, 1, "get nope\r\n"), []string{"3/0/1:END\r\n"}},
			{"two commands", udpFrame(4, 0, 1, "version\r\nversion\r\n"), []string{"4/0/1:VERSION 1.6.18\r\n", "4/0/1:VERSION 1.6.18\r\n"}},
			{"noreply", udpFrame(5, 0, 1, "set c 0 0 1 noreply\r\nx\r\nget c\r\n"), []string{"5/0/1:VALUE c 0 1\r\nx\r\nEND\r\n"}},
			{"incomplete", udpFrame(6, 0, 1, "get a"), nil},
			{"multi-datagram request dropped", udpFrame(7, 0, 2, "version\r\n"), nil},
			{"sequence and reserved ignored", udpFrame(8, 5, 1, "version\r\n")[:6] + "\x00\x09version\r\n", []string{"8/0/1:VERSION 1.6.18\r\n"}},
			{"empty", udpFrame(9, 0, 1, ""), nil},
			{"error", udpFrame(10, 0, 1, "bogus\r\nincr a x\r\n"), []string{"10/0/1:ERROR\r\n", "10/0/1:CLIENT_ERROR invalid numeric delta argument\r\n"}},
		} {
			if got := u.exchange(tc.req); strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Errorf("%s:\n got %q\nwant %q", tc.name, got, tc.want)
			}
		}
		// stats spans datagrams: sequence numbers count up, END last.
		got := u.exchange(udpFrame(11, 0, 1, "stats\r\n"))
		if len(got) < 2 || !strings.HasSuffix(got[len(got)-1], "END\r\n") {
			t.Fatalf("stats: %q", got)
		}
		for i, d := range got {
			if p := fmt.Sprintf("11/%d/%d:", i, len(got)); !strings.HasPrefix(d, p) {
				t.Errorf("stats datagram %d: %.20q, want prefix %q", i, d, p)
			}
		}
	})
}

func TestUDPConfig(t *testing.T) {
	cfg := NewConfig()
	cfg.Addrs = nil
	cfg.UDPAddrs = []string{"127.0.0.1:0"}
	if err := cfg.Validate(); err != nil {
		t.Errorf("UDP only: %v", err)
	}
	cfg.UDPAddrs = []string{"nope"}
	if err := cfg.Validate(); err == nil {
		t.Error("bad UDP address accepted")
	}
}

// maskCAS zeroes the CAS field of a binary response at the start of a
// "rid/seq/total:payload" datagram (the counters of two servers differ).
func maskCAS(ds []string) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		p := strings.IndexByte(d, ':') + 1
		if b := []byte(d[p:]); len(b) >= BinHeaderLen && b[0] == BinResponseMagic {
			copy(b[16:24], make([]byte, 8))
			d = d[:p] + string(b)
		}
		out[i] = d
	}
	return out
}

// TestUDPBinary: the binary protocol over UDP, negotiated per datagram,
// with memcached 1.6.18's framing of quiet and error responses.
func TestUDPBinary(t *testing.T) {
	forEachUDPTarget(t, func(t *testing.T, addr string) {
		u := dialUDP(t, addr)
		d := func(rid uint16, total int, payload string) string {
			return fmt.Sprintf("%d/0/%d:%s", rid, total, payload)
		}
		ex := setExtras(5, 0)
		version := binRes(BinVersion, 0, "", "", "1.6.18", 9, 0)
		for _, tc := range []struct {
			name, req string
			want      []string
		}{
			{"version", binReq(BinVersion, "", "", "", 9, 0), []string{d(1, 1, version)}},
			{"set and get", binReq(BinSet, "k", ex, "hello", 1, 0) + binReq(BinGet, "k", "", "", 2, 0),
				[]string{d(2, 1, binRes(BinSet, 0, "", "", "", 1, 0)), d(2, 1, binRes(BinGet, 0, u32(5), "", "hello", 2, 0))}},
			{"quiet then noop", binReq(BinSetQ, "k2", ex, "v", 1, 0) + binReq(BinNoop, "", "", "", 2, 0),
				[]string{d(3, 0, ""), d(3, 1, binRes(BinNoop, 0, "", "", "", 2, 0))}},
			{"empty responses collapse", binReq(BinSetQ, "k2", ex, "v", 1, 0) + binReq(BinSetQ, "k2", ex, "v", 2, 0) + binReq(BinGetQ, "nope", "", "", 3, 0),
				[]string{d(4, 0, "")}},
			{"empty after a reply sends nothing", binReq(BinGetK, "k", "", "", 1, 0) + binReq(BinSetQ, "k2", ex, "v", 2, 0) + binReq(BinGetK, "k", "", "", 3, 0),
				[]string{d(5, 1, binRes(BinGetK, 0, u32(5), "k", "hello", 1, 0)), d(5, 1, binRes(BinGetK, 0, u32(5), "k", "hello", 3, 0))}},
			// memcached itself only reads on after an error or a noop
			// when the socket's next datagram (the "mn" of exchange)
			// wakes it; we go on at once.
			{"error", binReq(BinDelete, "nope", "", "", 1, 0) + binReq(BinVersion, "", "", "", 9, 0),
				[]string{d(6, 1, binErr(BinDelete, BinStatusKeyNotFound, 1)), d(6, 1, version)}},
			{"getk miss does not", binReq(BinGetK, "nope", "", "", 1, 0) + binReq(BinVersion, "", "", "", 9, 0),
				[]string{d(7, 1, binRes(BinGetK, BinStatusKeyNotFound, "", "nope", "", 1, 0)), d(7, 1, version)}},
			{"noop", binReq(BinNoop, "", "", "", 1, 0) + binReq(BinVersion, "", "", "", 9, 0),
				[]string{d(8, 1, binRes(BinNoop, 0, "", "", "", 1, 0)), d(8, 1, version)}},
			{"quit drops the rest", binReq(BinQuit, "", "", "", 1, 0) + binReq(BinVersion, "", "", "", 9, 0),
				[]string{d(11, 1, binRes(BinQuit, 0, "", "", "", 1, 0))}},
			{"quitq", binReq(BinQuitQ, "", "", "", 1, 0) + binReq(BinVersion, "", "", "", 9, 0),
				[]string{d(12, 0, "")}},
			{"key longer than the body", binReq(BinVersion, "", "", "", 9, 0)[:2] + "\x00\x05" + binReq(BinVersion, "", "", "", 9, 0)[4:] + binReq(BinVersion, "", "", "", 9, 0),
				[]string{d(13, 1, binErr(BinVersion, BinStatusUnknownCommand, 9))}},
			{"incomplete request dropped", binReq(BinVersion, "", "", "", 9, 0) + binReq(BinVersion, "", "", "", 9, 0)[:10],
				[]string{d(9, 1, version)}},
			{"text after binary is not read", binReq(BinVersion, "", "", "", 9, 0) + "version\r\n", []string{d(10, 1, version)}},
		} {
			rid := strings.SplitN(tc.want[0], "/", 2)[0]
			n, _ := strconv.Atoi(rid)
			got := maskCAS(u.exchange(udpFrame(uint16(n), 0, 1, tc.req)))
			if strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Errorf("%s:\n got %q\nwant %q", tc.name, got, tc.want)
			}
		}
		// The next datagram may be text again.
		if got := u.exchange(udpFrame(20, 0, 1, "get k\r\n")); len(got) != 1 || got[0] != "20/0/1:VALUE k 5 5\r\nhello\r\nEND\r\n" {
			t.Errorf("text after a binary datagram: %q", got)
		}
		// A stat reply is one response object spanning datagrams; it does
		// not end the request datagram.
		got := u.exchange(udpFrame(21, 0, 1, binReq(BinStat, "", "", "", 4, 0)+binReq(BinVersion, "", "", "", 9, 0)))
		if len(got) < 3 || got[len(got)-1] != d(21, 1, version) {
			t.Fatalf("stat then version: %d datagrams, last %.40q", len(got), got[len(got)-1])
		}
		for i, g := range got[:len(got)-1] {
			if p := fmt.Sprintf("21/%d/%d:", i, len(got)-1); !strings.HasPrefix(g, p) {
				t.Errorf("stat datagram %d: %.20q, want prefix %q", i, g, p)
			}
		}
	})
}
