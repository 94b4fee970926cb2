package cache

import (
	"strconv"

	"substrate/internal/faults"
)

// Fault-injection sites (internal/faults). A test arms one with a marker;
// a command whose key contains it then panics where it is executed, and
// the panic must close only that client.
const (
	// SiteConn is a text or meta command (TCP, unix socket or UDP);
	// subject: its key, or a get's keys joined by spaces.
	SiteConn = "memcached.conn"
	// SiteBinary is a binary-protocol request (TCP, unix socket or
	// UDP); subject: its key.
	SiteBinary = "memcached.binary"
	// SiteMeta is a meta command (mg, md, ma, me) with its key's shard
	// locked; subject: the key. It proves that a panic there releases
	// the shard.
	SiteMeta = "memcached.meta"
	// SiteTLS is the TLS handshake, once the ClientHello is read;
	// subject: the client's SNI server name.
	SiteTLS = "memcached.tls"
)

// point is faults.Point for a command's keys; it converts them to a
// string only when some site is armed, so the hot path does not allocate.
func point(site string, key []byte, keys [][]byte) {
	if faults.Armed() == nil {
		return
	}
	subject := string(key)
	for i, k := range keys {
		if i > 0 || subject != "" {
			subject += " "
		}
		subject += string(k)
	}
	faults.Point(site, subject)
}

// recoverDatagram is deferred around one UDP datagram: a panic drops that
// datagram (UDP has no connection to close), is logged and counted, and
// the socket's reader goes on with fresh per-datagram state.
func (u *udpConn) recoverDatagram() {
	v := recover()
	if v == nil {
		return
	}
	peer := "udp"
	if u.peer != nil {
		peer = "udp:" + u.peer.String()
	}
	faults.Handle(u.conn.s.log, faults.Memcached, peer, v, func(any) {
		u.conn.releaseShard()
		u.seg.Reset()
		u.conn.w.Reset(&u.seg)
		u.conn.p = Parser{MaxItemSize: u.conn.s.parseMaxItem()}
		u.bin = binConn{}
	})
}

// memlimitCapReply is cache_memlimit's answer when the request exceeds
// Config.MaxMemoryLimit (substrate serve: the cache's share of the
// process's memory budget), in the style of memcached's MEMLIMIT_* lines.
func memlimitCapReply(max int64) string {
	return "CLIENT_ERROR cannot set maxbytes to more than " + strconv.FormatInt(max>>20, 10) + "m (the cache's share of substrate's memory)"
}

// lockShard locks sh for a command whose critical section unlocks by
// hand (the meta commands, which write their reply after unlocking): the
// conn remembers it, so that a panic contained to this connection can
// release it (releaseShard) instead of leaving the shard locked for every
// other client.
func (c *conn) lockShard(sh *shard, key []byte) {
	sh.mu.Lock()
	c.held = sh
	point(SiteMeta, key, nil)
}

func (c *conn) unlockShard(sh *shard) {
	c.held = nil
	sh.mu.Unlock()
}

// releaseShard unlocks the shard a panicking command held, if any. It
// runs on the goroutine that locked it.
func (c *conn) releaseShard() {
	if sh := c.held; sh != nil {
		c.held = nil
		sh.mu.Unlock()
	}
}
