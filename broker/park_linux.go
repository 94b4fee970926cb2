//go:build linux

package broker

import (
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"substrate/internal/faults"
)

// idleParkAfter is how long a reader waits for input before it parks:
// long enough that a connection in use (an RPC client between calls, a
// consumer between messages) keeps its goroutine, short enough that the
// thousands of connections an OpenStack cloud keeps open, idle between
// heartbeats, hold none.
const idleParkAfter = time.Second

// parker holds the readers of idle connections (broker/doc.go, "Idle
// connections"): a connection whose reader found nothing to read for
// Server.parkAfter, at a frame boundary, is registered here (epoll,
// one-shot) and its reader goroutine ends; when the socket becomes
// readable, or its heartbeat deadline comes, or something closes it
// (conn.closeSocket), a new reader goroutine resumes it where it stopped
// (conn.resume). One goroutine waits for all of them, on Go's poller
// (the epoll descriptor is itself readable while it has events).
//
// c.parked, c.sockClosed and c.parkTimer are guarded by mu; so is every
// registration in the epoll set, so that no descriptor is added after
// its socket was closed, nor removed after it was (a closed descriptor's
// number may already be another socket's).
type parker struct {
	epf    *os.File
	eprc   syscall.RawConn
	epfd   int
	events []unix.EpollEvent // run's

	mu     sync.Mutex
	conns  map[uint64]*conn // parked, by id (the events' data)
	closed bool

	done chan struct{} // closed when run ends
}

func newParker() (*parker, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return nil, os.NewSyscallError("fcntl", err)
	}
	p := &parker{epfd: epfd, epf: os.NewFile(uintptr(epfd), "amqp-idle"), events: make([]unix.EpollEvent, 64),
		conns: map[uint64]*conn{}, done: make(chan struct{})}
	if p.eprc, err = p.epf.SyscallConn(); err != nil {
		p.epf.Close()
		return nil, err
	}
	go p.run()
	return p, nil
}

// run resumes the connections whose sockets became readable, until close.
func (p *parker) run() {
	defer close(p.done)
	p.eprc.Read(func(fd uintptr) bool {
		for {
			n, err := unix.EpollWait(int(fd), p.events, 0)
			if err == unix.EINTR {
				continue
			}
			if err != nil || n == 0 {
				return false // wait until the epoll descriptor is readable again
			}
			for _, ev := range p.events[:n] {
				p.wake(p.lookup(uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32))
			}
		}
	})
}

// count is how many connections are parked.
func (p *parker) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

func (p *parker) lookup(id uint64) *conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.conns[id]
}

// park registers c's socket and arms its heartbeat timer (wait > 0);
// false if it cannot be parked (its socket is closed, the parker is
// closing, or epoll refused), and its reader must go on reading.
func (p *parker) park(c *conn, wait time.Duration) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c.sockClosed || p.closed {
		return false
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT,
		Fd: int32(uint32(c.id)), Pad: int32(uint32(c.id >> 32))}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, c.fd, &ev); err != nil {
		return false
	}
	c.parked = true
	p.conns[c.id] = c
	if wait > 0 {
		if c.parkTimer == nil {
			c.parkTimer = time.AfterFunc(wait, func() { p.wake(c) })
		} else {
			c.parkTimer.Reset(wait)
		}
	}
	return true
}

// wake resumes c if it is parked (a stale event or timer finds it
// running, and does nothing). It runs on the parker's goroutine, which
// serves every parked connection, or on c's heartbeat timer: a panic here
// is c's alone (broker/doc.go, site amqp.park-wake). c gets
// connection.close 541 and its reader is resumed to wait for close-ok,
// as after a panic on its reader.
func (p *parker) wake(c *conn) {
	if c == nil {
		return
	}
	defer faults.Recover(c.srv.log, faults.AMQP, c.peer, func(any) {
		c.internalErrorFrom(nil)
		if p.take(c) {
			go c.resume()
		}
	})
	faults.Point("amqp.park-wake", c.subject())
	if p.take(c) {
		go c.resume()
	}
}

// take unregisters c if it is parked; true if the caller must then
// resume it.
func (p *parker) take(c *conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.takeLocked(c)
}

// takeLocked unregisters c if it is parked; true if the caller must then
// resume it. c's socket is open (closeSocket takes before closing).
func (p *parker) takeLocked(c *conn) bool {
	if !c.parked {
		return false
	}
	c.parked = false
	delete(p.conns, c.id)
	unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, c.fd, nil)
	if c.parkTimer != nil {
		c.parkTimer.Stop()
	}
	return true
}

// closeSocket closes c's socket; true if c was parked and the caller
// must resume it (its reader then finds the socket closed).
func (p *parker) closeSocket(c *conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	resume := p.takeLocked(c)
	c.sockClosed = true
	c.nc.Close()
	return resume
}

// close ends run; no connection parks after it. Shutdown calls it once
// no connection is left (a parked one holds Server.wg).
func (p *parker) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.epf.Close()
	<-p.done
}
