//go:build linux

package cache

import (
	"io"
	"net"
	"syscall"

	"substrate/internal/netutil"
)

// rawIO reads and writes a plain TCP or unix-socket connection with raw
// read(2) and write(2) calls made through syscall.RawConn, so the Go
// runtime's poller still parks the goroutine when the socket would block
// (and deadlines, Close and Shutdown work as for net.Conn), but the calls
// themselves skip the runtime's entersyscall/exitsyscall. On loopback a
// write runs the receiver's TCP stack too and easily outlasts the 20 µs
// after which the runtime's monitor hands a P that is "in a system call"
// to another thread; with one such handoff (a futex wake-up and a thread
// switch) for every other request, and the monitor polling every 20 µs
// because of them, a profile of the token load showed about a fifth of
// the server's CPU in scheduling. The socket is non-blocking, so these
// calls never wait.
//
// A rawIO belongs to its connection's serve goroutine.
type rawIO struct {
	rc   syscall.RawConn
	b    []byte // the buffer of the call in progress
	n    int
	err  error
	rd   func(fd uintptr) bool // bound once, so a call does not allocate
	wr   func(fd uintptr) bool
	eof  bool
	werr error // sticky: the first write error
}

// newRawIO returns a rawIO for nc, or nil when nc is not a plain socket
// (TLS, net.Pipe in tests).
func newRawIO(nc net.Conn) *rawIO {
	switch nc.(type) {
	case *net.TCPConn, *net.UnixConn:
	default:
		return nil
	}
	rc, err := nc.(syscall.Conn).SyscallConn()
	if err != nil {
		return nil
	}
	r := &rawIO{rc: rc}
	r.rd = r.readFD
	r.wr = r.writeFD
	return r
}

func (r *rawIO) readFD(fd uintptr) bool {
	for {
		n, e := netutil.RawRead(fd, r.b)
		switch e {
		case 0:
			r.n = n
			r.eof = n == 0
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false // wait until readable, then call again
		}
		r.err = e
		return true
	}
}

func (r *rawIO) writeFD(fd uintptr) bool {
	for r.n < len(r.b) {
		p := r.b[r.n:]
		n, e := netutil.RawWrite(fd, p)
		switch e {
		case 0:
			r.n += n
			continue
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false // wait until writable
		}
		r.err = e
		return true
	}
	return true
}

// Read reads once into b, as net.Conn's Read.
func (r *rawIO) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	r.b, r.n, r.err, r.eof = b, 0, nil, false
	err := r.rc.Read(r.rd)
	n := r.n
	r.b = nil
	switch {
	case err != nil:
		return n, err
	case r.err != nil:
		return n, &net.OpError{Op: "read", Err: r.err}
	case r.eof:
		return 0, io.EOF
	}
	return n, nil
}

// Write writes all of b, as net.Conn's Write.
func (r *rawIO) Write(b []byte) (int, error) {
	if r.werr != nil {
		return 0, r.werr
	}
	if len(b) == 0 {
		return 0, nil
	}
	r.b, r.n, r.err = b, 0, nil
	err := r.rc.Write(r.wr)
	n := r.n
	r.b = nil
	if err == nil && r.err != nil {
		err = &net.OpError{Op: "write", Err: r.err}
	}
	if err != nil {
		r.werr = err
	}
	return n, err
}
