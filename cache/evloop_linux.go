//go:build linux

package cache

import (
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"substrate/internal/faults"
	"substrate/internal/netutil"
)

// Event loops serve the plain TCP connections (not TLS, not the unix
// socket, not UDP): a few goroutines, each waiting in epoll_wait on its own
// epoll descriptor (level-triggered) for many connections, read each ready
// connection once, run every complete command in what arrived (conn.process)
// and write the replies, as memcached's worker threads do. With a goroutine
// per connection, Go's poller only parks a reader after a read that finds
// nothing (EAGAIN), so a client waiting for each reply cost two reads
// per request and a goroutine switch; here it costs one read and one write,
// and one epoll_wait for all the connections that are ready at once.
//
// A loop waits in one of two ways:
//   - On a thread of its own (Config.Threads > 0, the process is the
//     cache: substrate memcached): the loop's goroutine is locked to an OS
//     thread that sleeps in epoll_wait itself, as a memcached worker
//     thread does, and the kernel wakes that thread when one of its
//     connections has data. The goroutine is in a system call while it
//     waits, so its P can be taken by the runtime; with GOMAXPROCS above
//     the number of loops there is always an idle P and the runtime leaves
//     the waiting loops' Ps alone. A loop yields (runtime.Gosched) at most
//     every yieldEvery, before waiting, so the runtime never finds it on
//     one scheduling tick for 10 ms, which would make it take the P and
//     keep sysmon polling every 20 us.
//   - On Go's poller (Config.Threads == 0: the process serves other things
//     too, substrate serve; or GOMAXPROCS is not above Threads): the epoll
//     descriptor is itself on Go's poller, and the goroutine parks like any
//     other while it has no events, so the loops hold no P while idle.
//
// A loop never waits on one client: when a reply cannot be written in
// full (the client does not read), the connection is handed over, in the
// middle of that write, to a goroutine of its own, which blocks on Go's
// poller from then on exactly as a connection served by conn.serve does
// (backpressure: it reads no more commands until the reply is written).
// The goroutine that ran the loop becomes that connection's goroutine and
// starts a new goroutine for the loop. Large values need no such handover:
// a value arrives in several reads into the connection's buffer, grown to
// the parser's need as conn.serve does.
//
// Ownership: a loop's event buffer and every conn it holds belong to the
// goroutine running the loop; its conns map (fd -> conn) to loop.mu, as
// the accept loop adds to it; after a handover, the conn
// belongs to its goroutine and evConn.nc is set and read under Server.mu
// (Shutdown closes it).
type loop struct {
	loopState // lent to the connection being served (conn.servingLoop)

	s      *Server
	epfd   int
	own    bool            // waits on a thread of its own (see above)
	epf    *os.File        // epfd, on Go's poller (wait; nil when own)
	eprc   syscall.RawConn // epf's
	efd    int             // eventfd: Shutdown
	stop   atomic.Bool
	events []unix.EpollEvent
	ready  []*conn     // the connections of the events being served
	closed []*loopConn // closed in this batch: recycled after it

	nready    int
	werr      syscall.Errno
	waitFn    func(uintptr) bool
	woke      time.Duration // clock time (since clock.start) of the last wake-up
	lastYield time.Duration // own: woke at the last Gosched

	mu    sync.Mutex
	conns map[int32]*conn
}

// evConn is the socket of a connection an event loop serves: a descriptor
// of our own (a dup of the accepted one, whose net.Conn is closed so Go's
// poller no longer watches it).
type evConn struct {
	l      *loop
	c      *conn
	lc     *loopConn // c and this evConn
	fd     int
	handed bool          // a goroutine of its own serves the connection now
	nc     net.Conn      // after the handover: the socket, on Go's poller
	raw    io.ReadWriter // nc's rawIO, or nc
	werr   error
}

// loopConn is a connection the loops serve, its conn and evConn in one
// allocation, recycled once its loop has closed it (loopConnPool), as
// memcached reuses its connection structures: with a connection per
// request (cachebench's churn load) allocating and zeroing a new conn
// (about 1.5 KB, with pointers) was a tenth of the server's CPU. A handed
// over connection is not recycled (a goroutine of its own closes it).
type loopConn struct {
	c conn
	e evConn
}

var loopConnPool = sync.Pool{New: func() any { return new(loopConn) }}

// yieldEvery is how often at most a loop on its own thread yields its P,
// below the runtime's 10 ms forced preemption. The loop unlocks its
// thread to yield (waitOwn): at 8 ms, 500 yields a second on four loops,
// each a wake-up of another thread at most, against about 10,000 sleeps a
// second of the loops themselves at 50,000 requests/s.
const yieldEvery = 8 * time.Millisecond

// startLoops starts the event loops (none when epoll is unavailable):
// Config.Threads on threads of their own when GOMAXPROCS leaves a P over,
// else as many on Go's poller (GOMAXPROCS of them without Threads).
func (s *Server) startLoops() error {
	n, own := runtime.GOMAXPROCS(0), false
	if t := s.cfg.Threads; t > 0 {
		n, own = t, t < runtime.GOMAXPROCS(0)
	}
	for range n {
		l, err := newLoop(s, own)
		if err != nil {
			for _, l := range s.loops {
				l.closeFDs()
			}
			s.loops = nil
			return err
		}
		s.loops = append(s.loops, l)
	}
	for _, l := range s.loops {
		s.wg.Add(1)
		go l.run()
	}
	return nil
}

func newLoop(s *Server, own bool) (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, os.NewSyscallError("eventfd", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(efd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, efd, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(efd)
		return nil, os.NewSyscallError("epoll_ctl", err)
	}
	l := &loop{s: s, epfd: epfd, efd: efd, own: own, conns: make(map[int32]*conn), events: make([]unix.EpollEvent, 128)}
	if own {
		return l, nil // epfd stays blocking and off Go's poller
	}
	// The epoll descriptor is itself readable while it has events: Go's
	// poller waits for it (wait), so the loop parks like any goroutine
	// instead of blocking a thread in epoll_wait, which would have the
	// runtime hand the thread's P to another thread every time.
	if err := unix.SetNonblock(epfd, true); err == nil {
		l.epf = os.NewFile(uintptr(epfd), "epoll")
		l.eprc, err = l.epf.SyscallConn()
		if err != nil {
			l.epf.Close()
			unix.Close(efd)
			return nil, err
		}
	} else {
		unix.Close(epfd)
		unix.Close(efd)
		return nil, os.NewSyscallError("fcntl", err)
	}
	l.waitFn = l.pollEvents
	return l, nil
}

func (l *loop) closeFDs() {
	if l.epf != nil {
		l.epf.Close()
	} else {
		unix.Close(l.epfd)
	}
	unix.Close(l.efd)
}

// wait returns the number of ready events in l.events, waiting while
// there are none: on Go's poller, or in epoll_wait on the loop's own
// thread.
func (l *loop) wait() (int, error) {
	if l.own {
		return l.waitOwn()
	}
	l.nready, l.werr = 0, 0
	if err := l.eprc.Read(l.waitFn); err != nil {
		return 0, err
	}
	if l.werr != 0 {
		return 0, os.NewSyscallError("epoll_pwait", l.werr)
	}
	return l.nready, nil
}

// waitOwn waits in epoll_wait on the loop's own thread (one call: a
// non-blocking try first would add a call per batch under load, 0.57
// epoll calls per request against memcached's 0.3).
func (l *loop) waitOwn() (int, error) {
	if l.woke-l.lastYield >= yieldEvery {
		// The clock as of the last wake-up: the batch served since
		// then took microseconds.
		l.lastYield = l.woke
		// Unlocked for the yield: a goroutine locked to its thread
		// yields by handing its P to another thread and sleeping until
		// that thread hands the goroutine back (four thread switches;
		// with four loops, 5% of the server's CPU under memcaslap, the
		// runtime's monitor 2% more); unlocked, its own thread or a
		// woken one takes it from the run queue (2%, monitor 0.5%). It
		// is locked again to whichever thread runs it.
		runtime.UnlockOSThread()
		runtime.Gosched()
		runtime.LockOSThread()
	}
	for {
		n, e := l.epollWait()
		switch e {
		case 0:
			return n, nil
		case syscall.EINTR:
			continue
		}
		return 0, os.NewSyscallError("epoll_pwait", e)
	}
}

// epollWait is a blocking epoll_pwait on the loop's set, as a system
// call (the runtime may take the P while it waits).
func (l *loop) epollWait() (int, syscall.Errno) {
	timeout := -1
	n, _, e := syscall.Syscall6(unix.SYS_EPOLL_PWAIT, uintptr(l.epfd), uintptr(unsafe.Pointer(&l.events[0])), uintptr(len(l.events)), uintptr(timeout), 0, 0)
	return int(n), e
}

// pollEvents is epoll_pwait without waiting; false: nothing ready, park.
func (l *loop) pollEvents(fd uintptr) bool {
	for {
		n, _, e := syscall.RawSyscall6(unix.SYS_EPOLL_PWAIT, fd, uintptr(unsafe.Pointer(&l.events[0])), uintptr(len(l.events)), 0, 0, 0)
		switch e {
		case 0:
			l.nready = int(n)
			return n > 0
		case syscall.EINTR:
			continue
		}
		l.werr = e
		return true
	}
}

// wake makes the loop's wait return (Shutdown).
func (l *loop) wake() {
	var one = [8]byte{1}
	unix.Write(l.efd, one[:])
}

// rawAccepter is a plain TCP listener whose connections the event loops
// serve, accepted with accept4(2) on a duplicate of its descriptor held
// as an *os.File (a listener's RawConn cannot wait): the accept loop
// still parks on Go's poller while nothing is pending, but an accepted
// socket goes straight to a loop's epoll set.
// Accepted by net.TCPListener.Accept, each connection cost four more
// system calls (epoll_ctl in and out of Go's poller, TCP_NODELAY, the
// dup that took it off Go's descriptor, that descriptor's close) and a
// dozen allocations. Accepted sockets inherit from the listener the
// options Go sets on each accepted connection (TCP_NODELAY, keep-alive
// every 15 s; newRawAccepter), as memcached sets them on its listener.
type rawAccepter struct {
	net.Listener          // Addr; Close closes f too
	f            *os.File // the duplicate descriptor, on Go's poller
	rc           syscall.RawConn
	try          func(uintptr) bool // a.accept4, bound once
	fd           int
	sa           unix.Sockaddr
	err          error
	// closed is set by Close before it closes f: the accept that f's
	// closing interrupts fails with the poller's "use of closed file",
	// which is not os.ErrClosed.
	closed atomic.Bool
}

// newRawAccepter returns a rawAccepter for l, or nil when the loops do not
// serve l's connections (no loops, not TCP) or l's descriptor or options
// cannot be had.
func (s *Server) newRawAccepter(l net.Listener) *rawAccepter {
	tl, ok := l.(*net.TCPListener)
	if !ok || len(s.loops) == 0 {
		return nil
	}
	f, err := tl.File() // non-blocking as l's: on Go's poller
	if err != nil {
		return nil
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		// Go's defaults for an accepted connection (net.ListenConfig's
		// KeepAlive of 15 s), inherited by every socket accepted on fd.
		for _, o := range []struct{ level, opt, v int }{
			{unix.IPPROTO_TCP, unix.TCP_NODELAY, 1},
			{unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
			{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 15},
			{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, 15},
		} {
			if serr == nil {
				serr = unix.SetsockoptInt(int(fd), o.level, o.opt, o.v)
			}
		}
	})
	if err != nil || serr != nil {
		f.Close()
		return nil
	}
	a := &rawAccepter{Listener: l, f: f, rc: rc}
	a.try = a.accept4
	return a
}

// Close closes the listener and the duplicate (whose accept returns
// net.ErrClosed).
func (a *rawAccepter) Close() error {
	a.closed.Store(true)
	a.f.Close()
	return a.Listener.Close()
}

func (a *rawAccepter) accept4(fd uintptr) bool {
	for {
		a.fd, a.sa, a.err = unix.Accept4(int(fd), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		switch a.err {
		case unix.EINTR, unix.ECONNABORTED:
			continue
		case unix.EAGAIN:
			return false // park until the listener is readable
		}
		return true
	}
}

// accept returns the next connection's descriptor and peer address; the
// error of a closed listener is net.ErrClosed.
func (a *rawAccepter) accept() (int, net.Addr, error) {
	if err := a.rc.Read(a.try); err != nil {
		if a.closed.Load() || errors.Is(err, os.ErrClosed) {
			err = net.ErrClosed
		}
		return -1, nil, err
	}
	if a.err != nil {
		return -1, nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", a.err)}
	}
	return a.fd, sockaddrTCP(a.sa), nil
}

// sockaddrTCP is sa as a *net.TCPAddr, as net.TCPConn.RemoteAddr.
func sockaddrTCP(sa unix.Sockaddr) net.Addr {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return &net.TCPAddr{IP: net.IP(sa.Addr[:]).To16(), Port: sa.Port}
	case *unix.SockaddrInet6:
		a := &net.TCPAddr{IP: append(net.IP(nil), sa.Addr[:]...), Port: sa.Port}
		if sa.ZoneId != 0 {
			if ifi, err := net.InterfaceByIndex(int(sa.ZoneId)); err == nil {
				a.Zone = ifi.Name
			} else {
				a.Zone = strconv.Itoa(int(sa.ZoneId))
			}
		}
		return a
	}
	return nil
}

// fdConn makes a net.Conn of an accepted descriptor, for the paths that
// serve or refuse a connection with a goroutine (closed server,
// connection limit, a loop that could not take it); fd is closed.
func fdConn(fd int) (net.Conn, error) {
	f := os.NewFile(uintptr(fd), "")
	nc, err := net.FileConn(f)
	f.Close()
	return nc, err
}

// adopt takes an accepted plain TCP connection off Go's poller and gives
// it to the next loop. It is called with Server.mu held (so Shutdown
// cannot have stopped the loops); on error nc is still open and the caller
// serves it with a goroutine.
func (s *Server) adopt(nc net.Conn, listen net.Addr) (*conn, error) {
	tc, ok := nc.(*net.TCPConn)
	if !ok || len(s.loops) == 0 {
		return nil, errors.ErrUnsupported
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil, err
	}
	fd := -1
	var derr error
	if err := rc.Control(func(f uintptr) { fd, derr = unix.FcntlInt(f, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, derr
	}
	c, err := s.adoptFD(fd, nc.RemoteAddr(), listen)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	// The descriptors share one open file, already non-blocking; closing
	// Go's removes it from Go's poller and sends nothing to the peer.
	nc.Close()
	return c, nil
}

// adoptFD gives the accepted non-blocking socket fd to the next loop
// (with Server.mu held, as adopt). On error fd is still open.
func (s *Server) adoptFD(fd int, peer, listen net.Addr) (*conn, error) {
	if len(s.loops) == 0 {
		return nil, errors.ErrUnsupported
	}
	lc := loopConnPool.Get().(*loopConn)
	c, e := &lc.c, &lc.e
	c.init(s, nil, listen)
	c.peer = peer
	e.c, e.lc, e.fd = c, lc, fd
	c.ev = e
	c.in = nil
	s.next++
	l := s.loops[s.next%len(s.loops)]
	e.l = l
	c.st = &l.stats
	c.out = countingWriter{e, &l.stats.bytesWritten}
	l.mu.Lock()
	l.conns[int32(fd)] = c
	l.mu.Unlock()
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(fd)}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		l.mu.Lock()
		delete(l.conns, int32(fd))
		l.mu.Unlock()
		return nil, os.NewSyscallError("epoll_ctl", err)
	}
	return c, nil
}

const (
	evKeep = iota
	evClose
	evHanded
)

// run is the loop: wait, then serve every ready connection.
func (l *loop) run() {
	defer l.s.wg.Done()
	if l.own {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
	}
	for {
		n, err := l.wait()
		if err != nil {
			l.s.log.Error("cache: epoll_wait failed; closing the loop's connections", "err", err)
			l.shutdown()
			return
		}
		l.woke = time.Since(l.s.clk.start)
		l.now = l.s.clk.at(l.woke)
		l.ready = l.ready[:0]
		stop := false
		l.mu.Lock()
		for _, ev := range l.events[:n] {
			if int(ev.Fd) == l.efd {
				stop = true
			} else if c := l.conns[ev.Fd]; c != nil {
				l.ready = append(l.ready, c)
			}
		}
		l.mu.Unlock()
		if stop && l.stop.Load() {
			l.shutdown()
			return
		}
		for i, c := range l.ready {
			l.ready[i] = nil
			if c.ev.fd < 0 {
				continue // closed by an earlier event of this batch
			}
			res := l.serveEvent(c)
			if c.ev.handed {
				// This goroutine is now c's; another runs the loop
				// (handover started it).
				c.serveHanded(res == evClose)
				return
			}
			if res == evClose {
				l.closeConn(c)
			}
		}
		// Recycled only now: a connection closed in this batch may
		// still be in l.ready (fd < 0 above).
		for i, lc := range l.closed {
			*lc = loopConn{}
			loopConnPool.Put(lc)
			l.closed[i] = nil
		}
		l.closed = l.closed[:0]
	}
}

// serveEvent reads what arrived on c once and runs the commands in it. A
// panic closes only this connection.
func (l *loop) serveEvent(c *conn) (res int) {
	defer func() {
		// faults.Recover, with the peer's name made only on a panic.
		if v := recover(); v != nil {
			faults.Handle(l.s.log, faults.Memcached, c.remote(), v, func(any) { c.releaseShard() })
			res = evClose
		}
	}()
	e := c.ev
	c.takeReadBuf()
	c.makeRoom()
	n, errno := rawRead(e.fd, c.buf[c.end:])
	switch {
	case errno == syscall.EAGAIN || errno == syscall.EINTR:
		c.releaseReadBuf()
		return evKeep
	case errno != 0 || n <= 0:
		return evClose
	}
	c.end += n
	l.stats.bytesRead.Add(uint64(n))
	if c.process() || !c.flushIdle() {
		return evClose
	}
	if e.handed {
		return evHanded
	}
	c.releaseReadBuf()
	return evKeep
}

// serveHanded serves a connection handed over by its loop, on this
// goroutine, until it closes (at once with closeNow).
func (c *conn) serveHanded(closeNow bool) {
	s := c.s
	if !closeNow {
		func() {
			defer faults.Recover(s.log, faults.Memcached, c.remote(), func(any) { c.releaseShard() })
			if c.flushIdle() {
				c.serveLoop()
			}
		}()
	}
	c.ev.l.closeConn(c)
}

// closeConn closes c and forgets it.
func (l *loop) closeConn(c *conn) {
	e := c.ev
	if e.handed {
		s := l.s
		s.mu.Lock()
		nc := e.nc
		s.mu.Unlock()
		if nc != nil {
			nc.Close()
		}
	} else if e.fd >= 0 {
		l.mu.Lock()
		delete(l.conns, int32(e.fd))
		l.mu.Unlock()
		unix.Close(e.fd) // the only descriptor of the open file: epoll forgets it
		e.fd = -1
	}
	c.releaseWriter()
	if !e.handed {
		c.start = c.end
		c.releaseReadBuf()
	}
	c.buf = nil
	l.s.mu.Lock()
	delete(l.s.conns, c)
	l.s.mu.Unlock()
	if !e.handed && e.lc != nil {
		l.closed = append(l.closed, e.lc)
	}
}

// shutdown closes every connection the loop holds, and its descriptors
// (Shutdown; the loop's goroutine).
func (l *loop) shutdown() {
	l.mu.Lock()
	cs := make([]*conn, 0, len(l.conns))
	for _, c := range l.conns {
		cs = append(cs, c)
	}
	l.mu.Unlock()
	for _, c := range cs {
		l.closeConn(c)
	}
	l.closeFDs()
}

// stopLoops tells every loop to close its connections and end (Shutdown,
// with Server.mu held: no connection is adopted after this).
func (s *Server) stopLoops() {
	for _, l := range s.loops {
		l.stop.Store(true)
		l.wake()
	}
}

// Write writes all of b: directly while the loop serves the connection;
// when the socket's buffer is full, it hands the connection over to this
// goroutine (handover) and waits on Go's poller like any net.Conn.
func (e *evConn) Write(b []byte) (int, error) {
	if e.werr != nil {
		return 0, e.werr
	}
	done := 0
	for !e.handed && done < len(b) {
		n, errno := rawWrite(e.fd, b[done:])
		switch {
		case errno == syscall.EINTR:
			continue
		case errno == syscall.EAGAIN:
			if herr := e.handover(); herr != nil {
				e.werr = herr
				return done, herr
			}
		case errno != 0:
			e.werr = &net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("write", errno)}
			return done, e.werr
		default:
			done += n
		}
	}
	if done == len(b) {
		return done, nil
	}
	n, err := e.raw.Write(b[done:])
	if err != nil {
		e.werr = err
	}
	return done + n, err
}

// handover takes the connection out of its loop and puts its socket back
// on Go's poller; the goroutine running the loop now serves it alone.
func (e *evConn) handover() error {
	l := e.l
	unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, e.fd, nil)
	l.mu.Lock()
	delete(l.conns, int32(e.fd))
	l.mu.Unlock()
	fd := e.fd
	e.fd = -1
	e.handed = true
	l.s.handovers.Add(1)
	// From here this goroutine serves only this connection: a new one
	// runs the loop (the old one touches no loop state again), on a
	// thread of its own if the loop has one.
	if l.own {
		runtime.UnlockOSThread()
	}
	l.s.wg.Add(1)
	go l.run()
	f := os.NewFile(uintptr(fd), "")
	nc, err := net.FileConn(f) // its own dup, non-blocking, on Go's poller
	f.Close()
	s := l.s
	s.mu.Lock()
	closed := s.closed
	if err == nil {
		e.nc = nc
	}
	s.mu.Unlock()
	if err != nil {
		return err
	}
	if closed {
		nc.Close()
		return net.ErrClosed
	}
	if r := newRawIO(nc); r != nil {
		e.raw = r
	} else {
		e.raw = nc
	}
	e.c.in = e.raw
	return nil
}

// servingLoop is the state of the loop serving c, nil when no loop does
// (a goroutine serves it, or has since its handover).
func (c *conn) servingLoop() *loopState {
	if e := c.ev; e != nil && !e.handed {
		return &e.l.loopState
	}
	return nil
}

// rawRead and rawWrite are netutil.RawRead and RawWrite on the loops'
// int descriptors (see rawIO).
func rawRead(fd int, b []byte) (int, syscall.Errno)  { return netutil.RawRead(uintptr(fd), b) }
func rawWrite(fd int, b []byte) (int, syscall.Errno) { return netutil.RawWrite(uintptr(fd), b) }
