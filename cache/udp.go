package cache

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
)

// memcached's UDP framing: every datagram starts with an 8-byte header of
// request id, sequence number, datagram count and a reserved zero, all
// 16-bit big-endian. A reply is sent per response object (one per
// command; for get, one per hit with END on the last) as a run of
// datagrams of at most 1400 bytes, sequence numbers counting from 0.
const (
	udpHeaderLen  = 8
	udpMaxPayload = 1400
	udpDataSize   = udpMaxPayload - udpHeaderLen
	udpReadSize   = 64 << 10
)

func (s *Server) listenUDP(ctx context.Context) ([]net.PacketConn, error) {
	var lc net.ListenConfig
	var pcs []net.PacketConn
	for _, a := range s.cfg.UDPAddrs {
		pc, err := lc.ListenPacket(ctx, "udp", a)
		if err != nil {
			for _, pc := range pcs {
				pc.Close()
			}
			return nil, fmt.Errorf("cache: listen udp %s: %w", a, err)
		}
		pcs = append(pcs, pc)
	}
	return pcs, nil
}

// startUDP starts one reader goroutine per UDP socket. Called with s.mu
// held.
func (s *Server) startUDP(pcs []net.PacketConn) {
	s.udp = pcs
	for _, pc := range pcs {
		s.wg.Add(1)
		go s.serveUDP(pc)
		s.log.Info("cache listening", "udp", pc.LocalAddr().String())
	}
}

// UDPAddrs returns the bound UDP addresses (after Start).
func (s *Server) UDPAddrs() []net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]net.Addr, len(s.udp))
	for i, pc := range s.udp {
		out[i] = pc.LocalAddr()
	}
	return out
}

// udpConn is the per-socket state of a UDP listener: a connection whose
// replies are collected per response object instead of streamed.
type udpConn struct {
	conn
	seg  bytes.Buffer // replies of the current command
	out  []byte       // datagram being built
	pc   net.PacketConn
	peer net.Addr
	rid  uint16
	bin  binConn // binary-protocol state, reset for every datagram
}

func (s *Server) serveUDP(pc net.PacketConn) {
	defer s.wg.Done()
	u := &udpConn{pc: pc}
	u.conn.s = s
	u.conn.st = &s.stats
	u.conn.listen = pc.LocalAddr()
	u.conn.p.MaxItemSize = s.parseMaxItem()
	u.conn.w = bufio.NewWriterSize(&u.seg, writeBufSize)
	buf := make([]byte, udpReadSize)
	for {
		n, peer, err := pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		s.stats.bytesRead.Add(uint64(n))
		d := buf[:n]
		// memcached ignores datagrams with no payload and drops
		// multi-datagram requests.
		if n <= udpHeaderLen || d[4] != 0 || d[5] != 1 {
			continue
		}
		u.peer = peer
		u.rid = binary.BigEndian.Uint16(d)
		u.safeDatagram(d[udpHeaderLen:])
	}
}

// safeDatagram executes one datagram; a panic drops only that datagram.
func (u *udpConn) safeDatagram(b []byte) {
	defer u.recoverDatagram()
	u.datagram(b)
}

// datagram executes every complete text command in one request datagram.
// An incomplete command at the end is dropped (memcached keeps it for the
// next datagram of the same socket, whoever sends it).
func (u *udpConn) datagram(b []byte) {
	c := &u.conn
	if c.s.binaryFirst(b[0]) {
		u.binaryDatagram(b)
		return
	}
	for len(b) > 0 {
		cmd, n, err := c.p.Parse(b)
		if err == ErrIncomplete {
			return
		}
		var closeConn bool
		if err == nil && (cmd.Op == OpGet || cmd.Op == OpGets || cmd.Op == OpGat || cmd.Op == OpGats) {
			u.get(cmd)
		} else {
			closeConn = c.exec(cmd, err)
			u.send()
		}
		if closeConn || n+cmd.Swallow >= len(b) {
			return
		}
		b = b[n+cmd.Swallow:]
	}
}

// get answers a retrieval command as memcached does over UDP: one
// response object per hit, END appended to the last.
func (u *udpConn) get(cmd *Command) {
	c := &u.conn
	keys := cmd.Keys
	one := *cmd
	var last []byte
	point(SiteConn, nil, keys)
	for i := range keys {
		one.Keys = keys[i : i+1]
		c.getKeys(&one, false)
		c.w.Flush()
		if u.seg.Len() == 0 {
			continue
		}
		if last != nil {
			u.sendBytes(last)
		}
		last = append(last[:0], u.seg.Bytes()...)
		u.seg.Reset()
	}
	u.sendBytes(append(last, "END\r\n"...))
}

// send transmits the replies written for one command.
func (u *udpConn) send() {
	u.conn.w.Flush()
	u.sendBytes(u.seg.Bytes())
	u.seg.Reset()
}

func (u *udpConn) sendBytes(b []byte) {
	if len(b) == 0 {
		return
	}
	total := min((len(b)+udpDataSize-1)/udpDataSize, 0xffff)
	for seq := 0; len(b) > 0 && seq < total; seq++ {
		chunk := b[:min(len(b), udpDataSize)]
		b = b[len(chunk):]
		u.out = binary.BigEndian.AppendUint16(u.out[:0], u.rid)
		u.out = binary.BigEndian.AppendUint16(u.out, uint16(seq))
		u.out = binary.BigEndian.AppendUint16(u.out, uint16(total))
		u.out = append(u.out, 0, 0)
		u.out = append(u.out, chunk...)
		if _, err := u.pc.WriteTo(u.out, u.peer); err != nil {
			return
		}
		u.conn.s.stats.bytesWritten.Add(uint64(len(u.out)))
	}
}

// binaryDatagram executes the binary requests of one datagram as
// memcached 1.6.18 does over UDP (checked on the wire):
//   - each request's response is one response object, sent as its own run
//     of datagrams (a stat reply is one object);
//   - a request that answers nothing (a quiet command that succeeded, a
//     getq miss) leaves an empty object: if no datagram has been sent for
//     this request datagram yet, one carrying only the frame header with a
//     datagram count of 0 is sent; later empty objects send nothing;
//   - quit, and errors that close a TCP connection, drop the rest of the
//     datagram, as does an incomplete request at its end.
func (u *udpConn) binaryDatagram(b []byte) {
	c := &u.conn
	bc := &u.bin
	bc.p = BinaryParser{MaxItemSize: c.s.parseMaxItem()}
	bc.saslStarted = false
	sent := false
	for len(b) > 0 {
		req, n, err := bc.p.Parse(b)
		if err == ErrIncomplete {
			return
		}
		if be, ok := err.(*BinaryError); ok && be.Silent {
			return
		}
		c.lastCmd.Store(c.s.clk.now())
		closeConn := c.execBinary(bc, req, err)
		c.w.Flush()
		out := u.seg.Bytes()
		switch {
		case len(out) > 0:
			u.sendBytes(out)
			sent = true
		case !sent:
			u.sendEmpty()
			sent = true
		}
		u.seg.Reset()
		if closeConn {
			return
		}
		if be, ok := err.(*BinaryError); ok && be.Swallow > 0 {
			n += be.Swallow
		}
		if n >= len(b) {
			return
		}
		b = b[n:]
	}
}

// sendEmpty sends a datagram with only the frame header and a datagram
// count of 0, memcached's answer to a request with an empty response.
func (u *udpConn) sendEmpty() {
	u.out = binary.BigEndian.AppendUint16(u.out[:0], u.rid)
	u.out = append(u.out, 0, 0, 0, 0, 0, 0)
	if _, err := u.pc.WriteTo(u.out, u.peer); err == nil {
		u.conn.s.stats.bytesWritten.Add(uint64(len(u.out)))
	}
}
