package raftnode

import (
	"net"
	"time"

	"go.etcd.io/etcd/server/v3/etcdserver/api/rafthttp"
)

// timeoutListener gives every accepted peer connection rafthttp's read and
// write timeouts, as etcd's own peer listener has (transport.WithTimeout):
// a frozen peer (SIGSTOP, a partition) then fails a stream write after a
// few seconds instead of blocking its writer for as long as it is frozen.
type timeoutListener struct {
	net.Listener
	rd, wr time.Duration
}

func newTimeoutListener(ln net.Listener) net.Listener {
	return &timeoutListener{Listener: ln, rd: rafthttp.ConnReadTimeout, wr: rafthttp.ConnWriteTimeout}
}

func (l *timeoutListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &timeoutConn{Conn: c, rd: l.rd, wr: l.wr}, nil
}

type timeoutConn struct {
	net.Conn
	rd, wr time.Duration
}

func (c *timeoutConn) Write(b []byte) (int, error) {
	if err := c.SetWriteDeadline(time.Now().Add(c.wr)); err != nil {
		return 0, err
	}
	return c.Conn.Write(b)
}

func (c *timeoutConn) Read(b []byte) (int, error) {
	if err := c.SetReadDeadline(time.Now().Add(c.rd)); err != nil {
		return 0, err
	}
	return c.Conn.Read(b)
}
