package broker

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"substrate/broker/amqp"
	"substrate/internal/faults"
	"substrate/internal/logging"
	"substrate/internal/netutil"
)

const (
	handshakeTimeout = 10 * time.Second // RabbitMQ's handshake_timeout
	closeGrace       = 2 * time.Second  // wait for close-ok after our connection.close
	maxBodySize      = 128 << 20        // RabbitMQ 3.10's max_message_size
	// outSoftLimit: above this many unsent bytes a connection takes no new
	// deliveries (consumers wait; publishers are never blocked by it).
	outSoftLimit = 1 << 20
	// outHardLimit: above this the reader stops reading the socket until
	// the writer catches up (TCP backpressure on a client that does not
	// read its replies).
	outHardLimit = 4 << 20
	// confirmBatch: a streaming publisher gets its confirms at least
	// every this many publishes (conn.Read). More than a windowed
	// publisher keeps in flight (amqpbench: 200), whose confirms go out
	// when it waits for them and the input runs dry: each flush in the
	// middle of its window would be one more write and one more wake-up
	// of its client.
	confirmBatch = 256
)

// outbound is a connection's queue of encoded frames. Producers (the
// reader, queues delivering from other goroutines, the heartbeat timer)
// append under mu. A writer goroutine runs only while there is something
// to write: the first append to an idle connection starts one (kick); it
// swaps the buffer out and writes it in one syscall, so frames produced
// while it writes are coalesced into the next write, and it ends when it
// finds the buffer empty. At most one runs at a time (running).
type outbound struct {
	mu      sync.Mutex
	buf     []byte   // the chunk being appended to
	full    [][]byte // earlier chunks, in order (a large output: see reserve)
	fullN   int      // bytes in full
	spare   []byte   // the writer's other buffer, kept while it runs
	running bool     // a writer goroutine is on
	stop    bool     // teardown: write what is queued, then end
	dead    bool     // no more output: appends are dropped
	pending atomic.Int64
	drained *sync.Cond    // broadcast when the writer took the buffer or ended
	done    chan struct{} // closed when dead and no writer runs (conn.writerDone)
	start   func()        // starts a writer goroutine; called with mu held
	log     *slog.Logger
	mem     *atomic.Int64 // the broker's outbound bytes (memAccount.outbound); nil: not counted
	acct    int64         // bytes of buf counted in mem (under mu)
	writing int64         // bytes the writer took and counts until written (under mu)
	// owner is the connection; flushedBy the flusher that last took it
	// on (see kickFor), under mu.
	owner     *conn
	flushedBy *flusher
}

func (o *outbound) init(done chan struct{}, start func()) {
	o.drained = sync.NewCond(&o.mu)
	o.done, o.start = done, start
}

// kick is called with mu held after appending to buf: it counts the new
// bytes and starts a writer if none runs.
func (o *outbound) kick() {
	o.count()
	if !o.running && !o.dead && o.size() > 0 {
		o.running = true
		o.start()
	}
}

// count counts the bytes appended to buf (under mu).
func (o *outbound) count() {
	n := int64(o.size())
	o.pending.Store(n)
	if d := n - o.acct; d != 0 && o.mem != nil {
		o.acct += d
		o.mem.Add(d)
	}
}

// inlineMax is the most a flusher lets wait on an idle connection: past
// it a writer starts at once, so a long read batch still writes on
// another goroutine while it goes on.
const inlineMax = 32 << 10

// kickFor is kick for output a reader appends while it handles its
// input: with fl (that reader's flusher) and no writer running, the
// connection joins fl and is written by that reader, inline, when it has
// no more buffered input (conn.flushOut), together with what else it
// queued for it meanwhile; no goroutine starts and none wakes. With fl
// nil, on a connection that cannot be written inline, or past inlineMax,
// it is kick.
func (o *outbound) kickFor(fl *flusher) {
	if fl == nil || o.owner == nil || o.owner.raw == nil || o.size() > inlineMax {
		o.kick()
		return
	}
	o.count()
	if !o.running && !o.dead && o.size() > 0 && o.flushedBy != fl {
		o.flushedBy = fl
		fl.conns = append(fl.conns, o.owner)
	}
}

func (o *outbound) method(ch uint16, m amqp.Method) { o.methodFor(ch, m, nil) }

// methodFor appends m; fl as for kickFor.
func (o *outbound) methodFor(ch uint16, m amqp.Method, fl *flusher) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.dead {
		return
	}
	o.appendMethodLocked(ch, m)
	o.kickFor(fl)
}

// appendMethodLocked encodes m. Encoding fails only for a shortstr over
// 255 bytes, which our inputs (client shortstrs, cut reply texts) never
// are; a failure drops the frame rather than the process.
func (o *outbound) appendMethodLocked(ch uint16, m amqp.Method) bool {
	o.reserve(methodReserve)
	var err error
	if o.buf, err = amqp.AppendMethodFrame(o.buf, ch, m); err != nil {
		o.log.Error("amqp: cannot encode frame", "method", m.Name(), "err", err)
		return false
	}
	return true
}

// content appends a content method with its header and body frames,
// contiguously.
func (o *outbound) content(ch uint16, m amqp.Method, msg *message, frameMax uint32) {
	o.contentFor(ch, m, msg, frameMax, nil)
}

// contentFor is content; fl as for kickFor.
func (o *outbound) contentFor(ch uint16, m amqp.Method, msg *message, frameMax uint32, fl *flusher) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.dead {
		return
	}
	// One allocation for an idle connection's buffer (it keeps none),
	// not one per frame as it grows.
	o.reserve(methodReserve + 2*amqp.FrameOverhead + 14 + len(msg.props) + len(msg.body) + amqp.FrameOverhead*(len(msg.body)/int(max(frameMax, amqp.FrameMinSize))))
	if !o.appendMethodLocked(ch, m) {
		return
	}
	o.buf = amqp.AppendHeaderFrameRaw(o.buf, ch, amqp.ClassBasic, uint64(len(msg.body)), msg.props)
	o.buf = amqp.AppendBodyFrames(o.buf, ch, msg.body, frameMax)
	o.kickFor(fl)
}

// methodReserve is room for a method frame: most are shorter (basic.ack
// 21 bytes, basic.deliver 30 plus its consumer tag, exchange and routing
// key).
const methodReserve = 160

// size is the bytes queued (under mu).
func (o *outbound) size() int { return o.fullN + len(o.buf) }

// reserve makes room for n more bytes (under mu). Buffers come in two
// pooled sizes: an idle connection has none and takes an outBufSize one
// (outBufs); one that needs more moves once to a chunkSize one (chunks);
// past a full chunk, the next chunk is a new pooled one (o.full), and the
// writer writes the chunks with one writev. So a reader's batch of
// deliveries to one connection allocates nothing, and a consumer that
// falls behind never has its megabyte of output copied as it grows.
func (o *outbound) reserve(n int) {
	if o.buf == nil && n <= outBufSize {
		o.buf = outBufs.Get().(*[outBufSize]byte)[:0]
	}
	if cap(o.buf)-len(o.buf) >= n {
		return
	}
	if len(o.buf)+n <= chunkSize {
		nb := append(chunks.Get().(*[chunkSize]byte)[:0], o.buf...)
		putOutBuf(o.buf)
		o.buf = nb
		return
	}
	if len(o.buf) > 0 {
		o.full = append(o.full, o.buf)
		o.fullN += len(o.buf)
	} else {
		putOutBuf(o.buf)
	}
	if n <= chunkSize {
		o.buf = chunks.Get().(*[chunkSize]byte)[:0]
	} else {
		o.buf = make([]byte, 0, n) // a large message's own
	}
}

// Output buffers (see reserve) go back to their pools (putOutBuf) when a
// connection's output ends or a writer is done with them; a running
// writer keeps one spare, up to spareMax. Buffers grown by copying and
// dropped after each write made the broker allocate about three bytes
// for each byte it sent: at 20,000 queues, where each collection marks
// a large heap, the collector took a fifth of the server's CPU.
const (
	outBufSize = 4 << 10
	chunkSize  = 64 << 10
	spareMax   = chunkSize
)

var (
	outBufs = sync.Pool{New: func() any { return new([outBufSize]byte) }}
	chunks  = sync.Pool{New: func() any { return new([chunkSize]byte) }}
)

// putOutBuf gives b's array back to its pool if it came from one (or has
// its size). The caller keeps no reference to it.
func putOutBuf(b []byte) {
	switch cap(b) {
	case outBufSize:
		outBufs.Put((*[outBufSize]byte)(b[:outBufSize]))
	case chunkSize:
		chunks.Put((*[chunkSize]byte)(b[:chunkSize]))
	}
}

// putOutBufs is putOutBuf for each of bs.
func putOutBufs(bs [][]byte) {
	for i, b := range bs {
		putOutBuf(b)
		bs[i] = nil
	}
}

func (o *outbound) writable() bool { return o.pending.Load() < outSoftLimit }

// waitBelow blocks while more than limit bytes wait to be written.
func (o *outbound) waitBelow(limit int) {
	o.mu.Lock()
	for !o.dead && o.size() > limit {
		o.drained.Wait()
	}
	o.mu.Unlock()
}

// conn is one client connection. The reader goroutine (serve) owns the
// handshake state and the channels map; a writer goroutine (writeLoop),
// running while there is output, owns the socket's write side.
type conn struct {
	srv     *Server
	nc      net.Conn
	id      uint64 // unique in this server's run (ConnectionInfo.ID)
	created int64  // when it was accepted, Unix ns (ConnectionInfo.ConnectedAt)
	name    string // "peer -> local", as RabbitMQ names connections
	peer    string
	peerKey string // the peer's IP: its key in the log limiter
	fr      *amqp.FrameReader
	out     outbound
	// raw is the plain socket's descriptor for inline writes (writeNow);
	// nil for TLS and piped connections, which always use a writer.
	raw      syscall.RawConn
	rawWrite func(fd uintptr) bool // c.writeRaw, bound once
	wb       []byte                // tryWrite's state, owned by whoever runs the output
	wn       int
	werr     error
	rawRead  func(fd uintptr) bool // c.readRaw, bound once; nil without raw
	rb       []byte                // Read's state, reader-owned
	rn       int
	rerr     syscall.Errno
	// Parking an idle reader (park_linux.go): fd is the plain socket's
	// descriptor; parkAfter (reader-owned) is how long Read waits at a
	// frame boundary before the reader parks, 0 while it must not
	// (handshake, closing, no parker); lastRecv (reader-owned) is when
	// input last arrived, Unix ns. parked, sockClosed and parkTimer are
	// the parker's, under its mu.
	fd         int
	parkAfter  time.Duration
	lastRecv   int64
	parked     bool
	sockClosed bool
	parkTimer  *time.Timer
	// fl is the reader's flusher: the connections (this one included) it
	// queued output for and writes before it reads again. Reader-owned.
	fl flusher
	// label is what the client calls this connection (its
	// connection_name property), else the peer address: the subject of
	// the connection-wide fault injection points.
	label atomic.Pointer[string]
	// release gives back the listener's connection_max slot (nil without
	// a limit); countedIn is the vhost whose max-connections counts us.
	release   func()
	countedIn *vhost

	// Negotiated in the handshake, then read-only.
	frameMax      uint32
	channelMax    uint16
	cancelNotify  bool
	authFailure   bool         // client has authentication_failure_close
	blockedNotify bool         // client has connection.blocked
	hbTimeout     atomic.Int64 // reader: close after this long with nothing received (ns)
	dlFor         int64        // pushDeadline's state, reader-owned: the timeout and when
	dlSet         time.Time    // the read deadline was last set for it
	hbInterval    atomic.Int64 // heartbeat after hbInterval/2 without output (ns)
	hb            *time.Timer  // runs sendHeartbeat; set and stopped under out.mu
	lastWrite     atomic.Int64 // when the last write ended (Unix ns)
	net           netCounters  // traffic (stats.go)
	blocked       atomic.Bool  // waiting in throttle: RabbitMQ's state "blocked"

	mu        sync.Mutex // guards the fields below
	user      string
	vh        *vhost
	props     []byte // the client's properties as sent (a field table's body), decoded by info
	heartbeat uint16 // negotiated heartbeat, seconds
	mechanism uint8  // the SASL mechanism it logged in with, an index of authMechanisms
	open      bool
	exclusive []*Queue // a slice, not a map: usually empty or one, and idle connections are many
	gone      bool     // torn down: no new exclusive queues

	closing    atomic.Bool // we sent connection.close; waiting for close-ok
	closeTimer *time.Timer

	// channels is written by the reader only, under mu; the reader
	// reads it without the lock, other goroutines (Channels, Overview)
	// under it. mu also guards retired, the message counters of the
	// channels that ended (nil until one does: idle connections are many).
	channels  map[uint16]*channel
	retired   *statValues
	nchannels atomic.Int32
	login     string     // the user that passed authentication; reader-owned
	dirty     []*channel // channels with confirms to send; reader-owned
	// unflushed counts the publishes registered for a confirm since the
	// last flush (reader-owned): Read flushes at confirmBatch.
	unflushed int
	published bool // the last frame completed a publish; reader-owned

	consMu    sync.Mutex
	consumers []*consumer // for backpressure wake-ups
	throttled atomic.Bool

	// writerDone closes when output has ended (teardown, a failed write,
	// a writer's panic): a reader blocked by an alarm stops waiting.
	writerDone chan struct{}
	forgetOnce sync.Once
}

func newConn(s *Server, nc net.Conn) *conn {
	c := &conn{srv: s, nc: nc, channels: map[uint16]*channel{}, writerDone: make(chan struct{}),
		id: s.connSeq.Add(1), created: time.Now().UnixNano()}
	c.lastWrite.Store(time.Now().UnixNano())
	c.peer = nc.RemoteAddr().String()
	c.peerKey = logging.PeerKey(nc.RemoteAddr())
	c.name = c.peer + " -> " + nc.LocalAddr().String()
	c.label.Store(&c.peer)
	c.out.init(c.writerDone, c.startWriter)
	c.out.owner = c
	c.out.log = s.log
	switch t := nc.(type) { // these types exactly: a wrapper's Write must not be bypassed
	case *net.TCPConn:
		c.raw, _ = t.SyscallConn()
	case *net.UnixConn:
		c.raw, _ = t.SyscallConn()
	}
	if c.raw != nil {
		c.rawWrite = c.writeRaw
		c.rawRead = c.readRaw
		c.raw.Control(func(fd uintptr) { c.fd = int(fd) })
	}
	c.out.mem = &s.mem.outbound
	c.fr = amqp.NewFrameReader(c)
	return c
}

// Read reads the socket for the frame reader, pushing the heartbeat
// deadline on each read: any frame counts as activity. Output the reader
// queued (flushOut) is written first, and so are the confirms owed once
// confirmBatch publishes wait for them: loop sends confirms when the
// input runs dry, which a publisher streaming faster than the broker
// reads never lets happen (and a read that ends in mid-frame, as most do
// under load, does not show), so without this it would get none until
// it paused.
func (c *conn) Read(p []byte) (int, error) {
	if c.unflushed >= confirmBatch {
		c.flushConfirms()
	}
	c.flushOut()
	if c.parkAfter > 0 {
		return c.readParking(p)
	}
	if t := c.hbTimeout.Load(); t > 0 {
		c.pushDeadline(time.Now(), t)
	}
	var n int
	var err error
	if c.rawRead != nil {
		n, err = c.readNow(p)
	} else {
		n, err = c.nc.Read(p)
	}
	if n > 0 {
		c.net.recvOct.Add(uint64(n))
		c.net.recvCnt.Add(1)
	}
	return n, err
}

// readParking is Read for a reader that parks when idle: its read
// deadline is parkAfter away (the heartbeat timeout, if shorter). When it
// passes with nothing read at a frame boundary, Read returns
// amqp.ErrIdle and the reader parks (serve); in the middle of a frame it
// reads on. The heartbeat timeout counts from the last input, whatever
// the deadline: a silent client is closed as by pushDeadline.
func (c *conn) readParking(p []byte) (int, error) {
	t := c.hbTimeout.Load()
	d := int64(c.parkAfter)
	if t > 0 {
		d = min(d, t)
	}
	for {
		now := time.Now()
		if t > 0 && now.UnixNano() >= c.silentAt(t) {
			// Resumed by the heartbeat timer, or a deadline passed.
			return 0, c.readError(os.ErrDeadlineExceeded)
		}
		c.pushDeadline(now, d)
		n, err := c.readNow(p)
		if n > 0 {
			c.lastRecv = time.Now().UnixNano()
			c.net.recvOct.Add(uint64(n))
			c.net.recvCnt.Add(1)
			return n, nil
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return 0, err
		}
		if c.fr.Buffered() == 0 && (t == 0 || time.Now().UnixNano() < c.silentAt(t)) {
			return 0, amqp.ErrIdle
		}
		c.dlFor = 0 // the deadline passed: set the next one
	}
}

// readError is err as net.Conn's Read reports it.
func (c *conn) readError(err error) error {
	return &net.OpError{Op: "read", Net: c.nc.LocalAddr().Network(), Source: c.nc.LocalAddr(), Addr: c.nc.RemoteAddr(), Err: err}
}

// silentAt is when a client whose heartbeat timeout is t (ns) has been
// silent too long, Unix ns: t and t/16 after its last input, the latest
// a waiting reader's deadline (pushDeadline) would close it.
func (c *conn) silentAt(t int64) int64 { return c.lastRecv + t + t/16 }

// park hands the idle reader's connection to the parker; false if it
// cannot be parked, and the reader reads on. After true the reader must
// not touch the connection again: it may already have been resumed.
func (c *conn) park() bool {
	if c.srv.parker == nil {
		return false
	}
	c.fr.Release()
	var wait time.Duration
	if t := c.hbTimeout.Load(); t > 0 {
		wait = max(time.Duration(c.silentAt(t)-time.Now().UnixNano()), 0)
	}
	c.dlFor = 0 // the resumed reader sets its deadline afresh
	return c.srv.parker.park(c, wait)
}

// stopParking ends parking for a reader about to wait for the end of
// its connection, and with it the deadline readParking set: from here a
// deadline is the heartbeat's alone, as for a reader that never parks.
func (c *conn) stopParking() {
	if c.parkAfter > 0 {
		c.parkAfter, c.dlFor = 0, 0
		c.nc.SetReadDeadline(time.Time{})
	}
}

// closeSocket closes the socket; a parked reader is resumed to find it
// closed and tear the connection down. Every close of a connection's
// socket but its reader's own goes through it.
func (c *conn) closeSocket() {
	if c.srv.parker == nil || c.raw == nil { // never parked; a TLS close may write
		c.nc.Close()
		return
	}
	if c.srv.parker.closeSocket(c) {
		go c.resume()
	}
}

// pushDeadline moves the read deadline to at least t (ns) from now
// (the caller's clock reading). A deadline is a runtime timer to move, so
// it is moved only when it has come t/16 closer: a silent client is
// closed between t and t*17/16 after the last read, never earlier.
// Reader-owned.
func (c *conn) pushDeadline(now time.Time, t int64) {
	if t == c.dlFor && now.Sub(c.dlSet) < time.Duration(t/16) {
		return
	}
	c.dlFor, c.dlSet = t, now
	c.nc.SetReadDeadline(now.Add(time.Duration(t + t/16)))
}

// readNow is Read on a plain socket: the read system call is made raw
// (netutil.RawRead), without telling the scheduler (the socket is
// non-blocking, so the call never waits), and an empty socket parks the
// reader in the poller as
// net.Conn's Read does. A call the scheduler is told about costs more
// than the read itself on a small host: a P handed off when the call
// runs long, and the scheduler's monitor thread woken from its sleep
// (runtime.entersyscall); an RPC round trip makes about eight of them
// (broker/doc.go, "System calls").
func (c *conn) readNow(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.rb, c.rn, c.rerr = p, 0, 0
	err := c.raw.Read(c.rawRead)
	n, errno := c.rn, c.rerr
	c.rb = nil
	if err != nil {
		// Closed, or the heartbeat deadline: as net.Conn's Read says it.
		var oe *net.OpError
		if errors.As(err, &oe) {
			oe.Op = "read"
		}
		return 0, err
	}
	if errno != 0 {
		return 0, c.readError(os.NewSyscallError("read", errno))
	}
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

// readRaw is rawRead: one read of c.rb; false (wait for the socket) when
// it has nothing yet.
func (c *conn) readRaw(fd uintptr) bool {
	for {
		n, e := netutil.RawRead(fd, c.rb)
		switch e {
		case 0:
			c.rn = n
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		default:
			c.rerr = e
			return true
		}
	}
}

func (c *conn) userName() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.user
}

func (c *conn) vhostName() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.vh == nil {
		return ""
	}
	return c.vh.name
}

// clientProperties decodes the client's properties (for the admin API).
func (c *conn) clientProperties() amqp.Table {
	t, err := amqp.DecodeTableBody(c.props)
	if err != nil {
		return nil
	}
	return t
}

// logf logs a line about this connection, rate-limited per peer IP,
// with the client's connection_name when it sent one.
func (c *conn) logf(level slog.Level, msg string, args ...any) {
	pre := []any{"conn", c.name}
	if l := c.label.Load(); l != &c.peer {
		pre = append(pre, "connection_name", *l)
	}
	c.srv.peers.Log(c.peerKey, level, msg, append(pre, args...)...)
}

// subject is the connection-wide fault injection subject (label).
func (c *conn) subject() string { return *c.label.Load() }

// internalErr is how RabbitMQ closes a connection whose process crashed:
// 541 INTERNAL_ERROR.
var internalErr = amqp.Error{Code: amqp.InternalError, Text: "INTERNAL_ERROR", Connection: true}

// recovered is the cleanup after a panic on the reader: the client gets
// connection.close 541, the channels end (unacked messages requeued) as
// for any connection error, and the reader waits for close-ok; teardown
// (deferred in serve) does the rest. Each step may fail on state the
// panic left half-done; faults.Handle swallows a second panic and
// teardown still runs.
func (c *conn) recovered(any) {
	c.closeWith(&internalErr, closeGrace)
	c.closeChannels()
	c.flushOut()
	c.awaitCloseOk()
}

// internalErrorFrom closes the connection with 541 after a panic on
// another goroutine working for it (a commit hook); its reader tears it
// down once the client answers close-ok or the grace ends.
func (c *conn) internalErrorFrom(any) { c.closeWith(&internalErr, closeGrace) }

// forceClose sends connection.close and closes the socket after grace if
// the client has not answered close-ok by then. Safe from any goroutine.
func (c *conn) forceClose(code uint16, text string, grace time.Duration) {
	if len(text) > 255 {
		text = text[:252] + "..." // a shortstr, as RabbitMQ cuts reply texts
	}
	c.closeWith(&amqp.Error{Code: code, Text: text, Connection: true}, grace)
}

func (c *conn) closeWith(e *amqp.Error, grace time.Duration) {
	if !c.closing.CompareAndSwap(false, true) {
		return
	}
	ce := *e
	ce.Connection = true // a soft code (403 at login) still closes the connection here
	c.out.method(0, ce.CloseMethod())
	c.mu.Lock()
	c.closeTimer = time.AfterFunc(grace, func() {
		defer faults.Recover(c.srv.log, faults.AMQP, c.peer, func(any) { c.closeSocket() })
		faults.Point("amqp.close-timer", c.subject())
		c.closeSocket()
	})
	c.mu.Unlock()
}

// ---- writer ----

// startWriter starts a writer goroutine (outbound.start, under out.mu).
// The reader is alive when it is called (a writer starts only before
// teardown marks the output dead), so Server.wg is above zero.
func (c *conn) startWriter() {
	c.srv.wg.Add(1)
	go c.writeLoop()
}

// writeLoop writes what is queued until it finds nothing more, then ends;
// the next append starts another.
func (c *conn) writeLoop() {
	defer c.srv.wg.Done()
	defer faults.Recover(c.srv.log, faults.AMQP, c.peer, c.writerPanicked)
	for {
		head, buf, stop := c.out.take()
		if buf == nil {
			return
		}
		faults.Point("amqp.writer", c.subject())
		if f := c.srv.cfg.Fence; f != nil && !f.Held() && !f.Wait() {
			c.out.fail() // a deposed leader's broker: nothing more goes out
			c.closeSocket()
			return
		}
		if stop {
			c.nc.SetWriteDeadline(time.Now().Add(time.Second))
		}
		var n int64
		var err error
		if head == nil {
			var m int
			m, err = c.nc.Write(buf)
			n = int64(m)
		} else {
			bs := make(net.Buffers, 0, len(head)+1) // WriteTo consumes it; head keeps the chunks
			bs = append(append(bs, head...), buf)
			n, err = bs.WriteTo(c.nc)
		}
		c.net.sendOct.Add(uint64(n))
		c.net.sendCnt.Add(1)
		c.lastWrite.Store(time.Now().UnixNano())
		if err != nil {
			c.out.fail()
			c.closeSocket() // the reader sees the error and tears down
			return
		}
		c.out.written(head, buf)
		if c.throttled.Load() && c.out.writable() {
			c.throttled.Store(false)
			c.wakeConsumers()
		}
	}
}

// take swaps the outbound buffer for the spare one and returns what was
// queued (the full chunks, if any, then the buffer), and whether teardown
// asked to stop (then nothing more is accepted). With nothing queued it
// ends the writer's run and returns a nil buf; the connection keeps no
// buffer while idle.
func (o *outbound) take() (head [][]byte, buf []byte, stop bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	defer o.drained.Broadcast()
	if o.size() == 0 || o.dead {
		putOutBuf(o.buf)
		putOutBuf(o.spare)
		o.buf, o.spare = nil, nil
		o.running = false
		if o.stop {
			o.endLocked()
		}
		return nil, nil, false
	}
	head, buf = o.full, o.buf
	if buf == nil {
		buf = []byte{} // not nil: there is output (in head)
	}
	o.full, o.fullN = nil, 0
	o.buf = o.spare[:0]
	o.spare = nil
	o.pending.Store(0)
	o.writing += o.acct // counted until written
	o.acct = 0
	if o.stop {
		o.dead = true
	}
	return head, buf, o.stop
}

// written gives back the writer's buffers after a write.
func (o *outbound) written(head [][]byte, buf []byte) {
	putOutBufs(head)
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.mem != nil {
		o.mem.Add(-o.writing)
	}
	o.writing = 0
	if cap(buf) <= spareMax && !o.dead { // don't keep a large buffer
		o.spare = buf[:0]
	} else {
		putOutBuf(buf)
	}
}

// flusher is a reader's list of connections it queued output for
// without starting their writers (outbound.kickFor). Reader-owned.
type flusher struct {
	conns []*conn
}

// flushOut writes what this reader queued: each connection it touched,
// this one last, inline (writeNow). The reader calls it before every
// read of its socket (conn.Read), and before anything else that may
// block it, so output never waits for input.
func (c *conn) flushOut() {
	fl := &c.fl
	if len(fl.conns) == 0 {
		return
	}
	own := false
	for i, oc := range fl.conns {
		fl.conns[i] = nil
		if oc == c {
			own = true
		} else {
			oc.writeNow(fl)
		}
	}
	fl.conns = fl.conns[:0]
	if own {
		c.writeNow(fl)
	}
}

// writeNow writes the connection's queued output on the calling goroutine
// when no writer runs: a flush as the writer's, with one non-blocking
// write. What the socket does not take at once (a consumer that does
// not read), and what is appended meanwhile, goes to a writer. While a
// fault is armed, or the Fence is not held, it starts a writer instead,
// so those keep their single place (writeLoop).
func (c *conn) writeNow(fl *flusher) {
	o := &c.out
	o.mu.Lock()
	if o.flushedBy == fl {
		o.flushedBy = nil
	}
	if o.running || o.dead || o.stop || o.size() == 0 {
		o.mu.Unlock()
		return
	}
	o.running = true
	if c.raw == nil || len(o.full) > 0 || faults.Armed() != nil || c.srv.cfg.Fence != nil && !c.srv.cfg.Fence.Held() {
		o.start()
		o.mu.Unlock()
		return
	}
	buf := o.buf
	o.buf = o.spare[:0]
	o.spare = nil
	o.pending.Store(0)
	o.writing += o.acct
	o.acct = 0
	o.mu.Unlock()

	n, err := c.tryWrite(buf)
	if n > 0 {
		c.net.sendOct.Add(uint64(n))
		c.net.sendCnt.Add(1)
		c.lastWrite.Store(time.Now().UnixNano())
	}
	if err != nil {
		c.out.fail()
		c.closeSocket() // the reader sees the error and tears down
		return
	}
	o.mu.Lock()
	if n < len(buf) {
		// The rest goes first, to a writer.
		rest := append([]byte(nil), buf[n:]...)
		putOutBuf(buf)
		o.full = append([][]byte{rest}, o.full...)
		o.fullN += len(rest)
		if o.mem != nil {
			o.mem.Add(-o.writing)
		}
		o.writing = 0
		o.count()
		o.start()
		o.mu.Unlock()
		return
	}
	if o.mem != nil {
		o.mem.Add(-o.writing)
	}
	o.writing = 0
	switch {
	case o.size() > 0 && !o.dead:
		if cap(buf) <= spareMax {
			o.spare = buf[:0]
		} else {
			putOutBuf(buf)
		}
		o.start() // appended while we wrote
	default:
		putOutBuf(buf)
		putOutBuf(o.buf)
		o.buf, o.spare = nil, nil // an idle connection keeps no buffer
		o.running = false
		if o.stop {
			o.endLocked()
		}
	}
	o.drained.Broadcast()
	o.mu.Unlock()
	if c.throttled.Load() && c.out.writable() {
		c.throttled.Store(false)
		c.wakeConsumers()
	}
}

// tryWrite writes b to the socket without waiting: it returns what the
// socket took, and an error other than EAGAIN. Only the goroutine that
// set out.running calls it, so the state it shares with rawWrite (wb,
// wn, werr) needs no lock, and rawWrite is bound once (newConn): a
// closure here would be two allocations per write.
func (c *conn) tryWrite(b []byte) (int, error) {
	c.wb, c.wn, c.werr = b, 0, nil
	err := c.raw.Write(c.rawWrite)
	n, werr := c.wn, c.werr
	c.wb, c.werr = nil, nil
	if err != nil {
		return n, err
	}
	return n, werr
}

// writeRaw is rawWrite: it writes c.wb from c.wn on, until done or the
// socket is full, and never waits for the socket (a writer does).
func (c *conn) writeRaw(fd uintptr) bool {
	for c.wn < len(c.wb) {
		m, e := netutil.RawWrite(fd, c.wb[c.wn:])
		if e == syscall.EINTR {
			continue
		}
		if e != 0 {
			if e != syscall.EAGAIN {
				c.werr = e
			}
			break
		}
		c.wn += m
	}
	return true
}

// fail ends output after a failed write (or a panicking writer): what is
// queued is dropped and later appends too.
func (o *outbound) fail() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.dead = true
	o.running = false
	o.endLocked()
	o.drained.Broadcast()
}

// endLocked marks the output dead with no writer running: the bytes still
// counted are given back and writerDone closes.
func (o *outbound) endLocked() {
	o.dead = true
	if o.mem != nil {
		o.mem.Add(-o.acct - o.writing)
	}
	o.acct, o.writing = 0, 0
	o.buf, o.spare = nil, nil
	o.full, o.fullN = nil, 0
	o.pending.Store(0)
	select {
	case <-o.done:
	default:
		close(o.done)
	}
}

// shut is teardown's end of the output: what is queued is written (by the
// running writer, or one started for it, with a write deadline of a
// second), then output ends; it returns once no writer runs.
func (c *conn) shut() {
	o := &c.out
	c.nc.SetWriteDeadline(time.Now().Add(time.Second)) // a writer blocked on a client that does not read
	o.mu.Lock()
	defer o.mu.Unlock()
	o.stop = true
	if c.hb != nil {
		c.hb.Stop()
	}
	if !o.running {
		if o.dead || o.size() == 0 {
			o.endLocked()
			return
		}
		o.running = true
		o.start()
	}
	for o.running {
		o.drained.Wait()
	}
}

// sendHeartbeat runs on the heartbeat timer every heartbeat/2: it queues
// a heartbeat frame if nothing was written for that long and nothing is
// queued, and re-arms itself.
func (c *conn) sendHeartbeat() {
	defer faults.Recover(c.srv.log, faults.AMQP, c.peer, func(any) { c.closeSocket() })
	half := time.Duration(c.hbInterval.Load()) / 2
	o := &c.out
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.dead || o.stop {
		return
	}
	next := half - time.Duration(time.Now().UnixNano()-c.lastWrite.Load())
	if next <= 0 {
		if o.size() == 0 {
			o.buf = amqp.AppendHeartbeat(o.buf)
			o.kick()
		}
		next = half
	}
	c.hb.Reset(next)
}

// startHeartbeats arms the heartbeat timer (from the handshake, once).
func (c *conn) startHeartbeats(iv time.Duration) {
	c.hbInterval.Store(int64(iv))
	c.hbTimeout.Store(int64(2 * iv))
	c.out.mu.Lock()
	defer c.out.mu.Unlock()
	if c.out.dead || c.out.stop {
		return
	}
	c.hb = time.AfterFunc(iv/2, c.sendHeartbeat)
}

// writerPanicked is the cleanup after a panic on the writer: nothing more
// is queued, the client gets connection.close 541 written directly (the
// writer is gone), and the socket closes after the grace unless the
// reader sees close-ok first and tears the connection down.
func (c *conn) writerPanicked(any) {
	c.out.fail()
	if c.closing.CompareAndSwap(false, true) {
		if b, err := amqp.AppendMethodFrame(nil, 0, internalErr.CloseMethod()); err == nil {
			c.nc.SetWriteDeadline(time.Now().Add(time.Second))
			c.nc.Write(b)
		}
		c.mu.Lock()
		c.closeTimer = time.AfterFunc(closeGrace, func() { c.closeSocket() })
		c.mu.Unlock()
		return
	}
	c.closeSocket()
}

func (c *conn) addConsumer(cs *consumer) {
	c.consMu.Lock()
	c.consumers = append(c.consumers, cs)
	c.consMu.Unlock()
}

func (c *conn) removeConsumer(cs *consumer) {
	c.consMu.Lock()
	c.consumers = removeOne(c.consumers, cs)
	c.consMu.Unlock()
}

// removeOne removes v from s (order is not kept), dropping the array
// once it is empty.
func removeOne[T comparable](s []T, v T) []T {
	for i, x := range s {
		if x == v {
			last := len(s) - 1
			s[i] = s[last]
			var zero T
			s[last] = zero
			s = s[:last]
			break
		}
	}
	if len(s) == 0 {
		return nil
	}
	return s
}

// wakeConsumers lets the queues of this connection's consumers deliver
// again after backpressure.
func (c *conn) wakeConsumers() {
	c.consMu.Lock()
	qs := make(map[*Queue]struct{}, len(c.consumers))
	for _, cs := range c.consumers {
		qs[cs.q] = struct{}{}
	}
	c.consMu.Unlock()
	for q := range qs {
		q.Dispatch()
	}
}

// ---- exclusive queues ----

func (c *conn) addExclusive(q *Queue) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gone {
		return false
	}
	if !slices.Contains(c.exclusive, q) {
		c.exclusive = append(c.exclusive, q)
	}
	return true
}

func (c *conn) removeExclusive(q *Queue) {
	c.mu.Lock()
	c.exclusive = removeOne(c.exclusive, q)
	c.mu.Unlock()
}

// ---- reader ----

// errClosed ends the reader loop without an error to report;
// errClientClosed too, after close-ok to the client's connection.close.
var (
	errClosed       = errors.New("connection closed")
	errClientClosed = errors.New("connection closed by the client")
)

// handshakeError is a failure before connection.open that RabbitMQ
// answers by closing the socket without a connection.close.
type handshakeError struct {
	err    error
	logged bool // already logged where it happened (a refused login)
}

func (e *handshakeError) Error() string { return e.err.Error() }

func silent(format string, args ...any) error {
	return &handshakeError{err: fmt.Errorf(format, args...)}
}

// serve is the reader goroutine. Its own stack frame (run's) stays small
// (the handshake and the error reporting are functions of their own): a
// reader that waits for input (not parked: TLS, or busy within the last
// second) waits in loop below it, and a stack whose waiting depth is
// small shrinks to 4 KB at the next collection.
func (c *conn) serve() { c.run(true) }

// resume is a parked connection's new reader goroutine (parker).
func (c *conn) resume() { c.run(false) }

// run reads and executes frames (after the handshake, if first) until
// the connection ends, then tears it down, or until the reader parks:
// then it ends and leaves the connection, and its count in Server.wg, to
// the reader that resumes it.
func (c *conn) run(first bool) {
	parked := false
	defer c.endRun(&parked)
	defer faults.Recover(c.srv.log, faults.AMQP, c.peer, c.recovered)
	if first && !c.begin() {
		return
	}
	for {
		err := c.loop()
		if err == amqp.ErrIdle {
			if parked = c.park(); parked {
				return
			}
			continue
		}
		c.ended(err)
		return
	}
}

func (c *conn) endRun(parked *bool) {
	if *parked {
		return
	}
	c.safeTeardown()
	c.srv.wg.Done()
}

// begin runs the TLS handshake, reads the protocol header and runs the
// AMQP handshake; false: the connection did not open (what failed was
// answered and logged).
func (c *conn) begin() bool {
	c.nc.SetReadDeadline(time.Now().Add(handshakeTimeout))
	if !c.tlsHandshake() {
		return false
	}
	if err := c.fr.ReadProtocolHeader(); err != nil {
		if errors.Is(err, amqp.ErrProtocolHeader) {
			c.out.mu.Lock()
			c.out.buf = append(c.out.buf, amqp.ProtocolHeader...)
			c.out.kick()
			c.out.mu.Unlock()
		}
		return false
	}
	if err := c.handshake(); err != nil {
		var ae *amqp.Error
		var he *handshakeError
		switch {
		case errors.As(err, &he):
			// RabbitMQ sends nothing for a failed handshake: it logs,
			// waits a little (against connection floods) and closes.
			if !he.logged {
				c.logf(slog.LevelWarn, "amqp: handshake failed", "err", he.err)
			}
			c.srv.sleep(c.srv.silentCloseDelay)
		case errors.As(err, &ae):
			if ae.Code != amqp.AccessRefused { // authenticate logged the refused login
				c.logf(slog.LevelWarn, "amqp: connection refused", "peer", c.peer, "user", c.login, "code", ae.Code, "text", ae.Text)
			}
			c.closeWith(ae, closeGrace)
			c.awaitCloseOk()
		}
		return false
	}
	return true
}

// ended reports why loop ended and, for a connection error, closes the
// connection as RabbitMQ does.
func (c *conn) ended(err error) {
	c.stopParking()
	c.flushOut() // what the reader queued for others goes before any wait here
	var ae *amqp.Error
	if errors.As(err, &ae) {
		c.logf(slog.LevelWarn, "amqp: closing connection", "code", ae.Code, "text", ae.Text)
		// As in RabbitMQ the channels end now (consumers cancelled,
		// unacked messages requeued), not when close-ok arrives.
		c.flushConfirms()
		c.closeChannels()
		c.closeWith(ae, closeGrace)
		c.awaitCloseOk()
	} else if err == errClientClosed {
		c.awaitClientClose()
	} else if err != nil && err != errClosed && !c.closing.Load() {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() && c.hbTimeout.Load() > 0 {
			c.logf(slog.LevelWarn, "amqp: missed heartbeats from client, closing", "timeout", time.Duration(c.hbInterval.Load()))
		} else if err != io.EOF {
			c.logf(slog.LevelInfo, "amqp: connection ended", "err", err)
		}
	}
}

// awaitClientClose waits, after close-ok to the client's close, for the
// client to close the socket (within closeGrace), as RabbitMQ does: a
// server that closes first makes clients that read after close-ok (such
// as amqp091-go) report a clean close as an error ("EOF", 501).
func (c *conn) awaitClientClose() {
	c.nc.SetReadDeadline(time.Now().Add(closeGrace))
	var b [64]byte
	for {
		if _, err := c.nc.Read(b[:]); err != nil {
			return
		}
	}
}

// awaitCloseOk reads until connection.close-ok (or close) arrives, the
// socket fails or the close timer fires; everything else is ignored.
func (c *conn) awaitCloseOk() {
	c.stopParking()
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			return
		}
		if f.Type == amqp.FrameMethod && f.Channel == 0 {
			cls, mth, _ := amqp.MethodIDs(f.Payload)
			if cls == amqp.ClassConnection && (mth == amqp.MethodConnectionCloseOk || mth == amqp.MethodConnectionClose) {
				return
			}
		}
	}
}

// readMethod0 reads the next method during the handshake.
func (c *conn) readMethod0() (amqp.Method, error) {
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			return nil, err
		}
		if f.Type == amqp.FrameHeartbeat {
			continue
		}
		if f.Type != amqp.FrameMethod || f.Channel != 0 {
			return nil, amqp.NewError(amqp.UnexpectedFrame, 0, 0, "type %d on channel %d during the connection handshake", f.Type, f.Channel)
		}
		m, err := amqp.DecodeMethod(f.Payload)
		if err != nil {
			return nil, err
		}
		if cl, ok := m.(*amqp.ConnectionClose); ok {
			_ = cl
			c.out.method(0, &amqp.ConnectionCloseOk{})
			return nil, errClosed
		}
		return m, nil
	}
}

func serverProperties() amqp.Table {
	host, _ := os.Hostname()
	return amqp.Table{
		"product":      "substrate",
		"version":      "0.1.0",
		"platform":     "Go " + runtime.Version(),
		"information":  "AMQP 0-9-1 broker compatible with RabbitMQ 3.10",
		"cluster_name": "substrate@" + host,
		"capabilities": amqp.Table{
			"publisher_confirms":           true,
			"exchange_exchange_bindings":   true,
			"basic.nack":                   true,
			"consumer_cancel_notify":       true,
			"connection.blocked":           true,
			"authentication_failure_close": true,
			"per_consumer_qos":             true,
		},
	}
}

func (c *conn) handshake() error {
	c.out.method(0, &amqp.ConnectionStart{VersionMajor: 0, VersionMinor: 9, ServerProperties: serverProperties(),
		Mechanisms: c.mechanisms(), Locales: "en_US"})
	m, err := c.readMethod0()
	if err != nil {
		return err
	}
	so, ok := m.(*amqp.ConnectionStartOk)
	if !ok {
		return silent("expected connection.start-ok, got %s", m.Name())
	}
	if caps, ok := so.ClientProperties["capabilities"].(amqp.Table); ok {
		c.cancelNotify, _ = caps["consumer_cancel_notify"].(bool)
		c.authFailure, _ = caps["authentication_failure_close"].(bool)
		c.blockedNotify, _ = caps["connection.blocked"].(bool)
	}
	if n, _ := so.ClientProperties["connection_name"].(string); n != "" {
		c.label.Store(&n)
	}
	user, err := c.authenticate(so)
	if err != nil {
		return err
	}
	c.login = user
	hbSec := uint16(c.srv.cfg.Heartbeat / time.Second)
	c.out.method(0, &amqp.ConnectionTune{ChannelMax: c.srv.cfg.ChannelMax, FrameMax: c.srv.cfg.FrameMax, Heartbeat: hbSec})
	if m, err = c.readMethod0(); err != nil {
		return err
	}
	to, ok := m.(*amqp.ConnectionTuneOk)
	if !ok {
		return silent("expected connection.tune-ok, got %s", m.Name())
	}
	// As RabbitMQ 3.10: 0 (no limit) is refused when we proposed a limit.
	sfm, scm := c.srv.cfg.FrameMax, c.srv.cfg.ChannelMax
	switch {
	case to.FrameMax != 0 && to.FrameMax < amqp.FrameMinSize:
		return silent("negotiated frame_max = %d is lower than the minimum allowed value (%d)", to.FrameMax, amqp.FrameMinSize)
	case sfm != 0 && (to.FrameMax == 0 || to.FrameMax > sfm):
		return silent("negotiated frame_max = %d is higher than the maximum allowed value (%d)", to.FrameMax, sfm)
	case scm != 0 && (to.ChannelMax == 0 || to.ChannelMax > scm):
		return silent("negotiated channel_max = %d is higher than the maximum allowed value (%d)", to.ChannelMax, scm)
	}
	c.frameMax = to.FrameMax
	if c.frameMax == 0 {
		c.frameMax = sfm
	}
	c.fr.SetFrameMax(c.frameMax)
	c.channelMax = to.ChannelMax
	if m, err = c.readMethod0(); err != nil {
		return err
	}
	op, ok := m.(*amqp.ConnectionOpen)
	if !ok {
		return silent("expected connection.open, got %s", m.Name())
	}
	const ocls, omth = amqp.ClassConnection, amqp.MethodConnectionOpen
	vh := c.srv.vhost(op.VirtualHost)
	if vh == nil {
		return amqp.NewError(amqp.NotAllowed, ocls, omth, "vhost %s not found", op.VirtualHost)
	}
	// As rabbit_reader: the vhost's connection limit before access.
	if err := vh.admitConn(user); err != nil {
		return err
	}
	c.countedIn = vh
	if c.srv.perm(user, op.VirtualHost) == nil {
		return amqp.NewError(amqp.NotAllowed, ocls, omth, "access to vhost '%s' refused for user '%s'", op.VirtualHost, user)
	}
	c.mu.Lock()
	props, err := amqp.AppendTableBody(nil, so.ClientProperties)
	if err != nil {
		props = nil // not expected: it was decoded from the wire
	}
	c.user, c.vh, c.props, c.open = user, vh, props, true
	c.mechanism, c.heartbeat = mechanismIndex(so.Mechanism), to.Heartbeat
	c.mu.Unlock()
	c.srv.churn.connCreated.Add(1)
	c.out.method(0, &amqp.ConnectionOpenOk{})
	c.logf(slog.LevelInfo, "amqp: connection opened", "user", user, "vhost", op.VirtualHost)
	// Heartbeats: the client's tune-ok value is final.
	c.nc.SetReadDeadline(time.Time{})
	if to.Heartbeat > 0 {
		c.startHeartbeats(time.Duration(to.Heartbeat) * time.Second)
	}
	if c.raw != nil && c.srv.parker != nil {
		c.lastRecv = time.Now().UnixNano()
		c.parkAfter = c.srv.parkAfter
	}
	return nil
}

// loop processes frames after the handshake until the connection ends.
func (c *conn) loop() error {
	for {
		if c.fr.Buffered() == 0 {
			c.flushConfirms()
			c.flushOut()
			c.out.waitBelow(outHardLimit)
		}
		f, err := c.fr.ReadFrame()
		if err != nil {
			return err
		}
		if c.closing.Load() {
			if f.Type == amqp.FrameMethod && f.Channel == 0 {
				cls, mth, _ := amqp.MethodIDs(f.Payload)
				if cls == amqp.ClassConnection && (mth == amqp.MethodConnectionCloseOk || mth == amqp.MethodConnectionClose) {
					return errClosed
				}
			}
			continue
		}
		if err := c.frame(f); err != nil {
			return err
		}
		if c.published {
			c.published = false
			c.throttle()
		}
	}
}

func (c *conn) frame(f amqp.Frame) error {
	switch f.Type {
	case amqp.FrameHeartbeat:
		return nil
	}
	if f.Type == amqp.FrameMethod && faults.Armed() != nil {
		// The subject is the whole method: its name and its arguments
		// (queue names, routing keys) as the client sent them.
		cls, mth, _ := amqp.MethodIDs(f.Payload)
		faults.Point("amqp.reader", amqp.MethodName(cls, mth)+" "+string(f.Payload))
	}
	if f.Channel == 0 {
		c.flushOut()
		if f.Type != amqp.FrameMethod {
			return amqp.NewError(amqp.UnexpectedFrame, 0, 0, "type %d on channel 0", f.Type)
		}
		m, err := amqp.DecodeMethod(f.Payload)
		if err != nil {
			return err
		}
		switch m.(type) {
		case *amqp.ConnectionClose:
			c.flushConfirms()
			c.closeChannels() // as RabbitMQ: the channels end before close-ok
			c.out.method(0, &amqp.ConnectionCloseOk{})
			return errClientClosed
		case *amqp.ConnectionCloseOk:
			return errClosed
		case *amqp.ConnectionBlocked, *amqp.ConnectionUnblocked:
			return nil
		}
		return amqp.NewError(amqp.ChannelError, m.ClassID(), m.MethodID(), "unexpected method in connection state running")
	}
	ch := c.channels[f.Channel]
	if ch == nil {
		return c.openChannel(f)
	}
	if ch.closing {
		// After our channel.close, only close-ok (or a crossing close)
		// matters.
		if f.Type == amqp.FrameMethod {
			cls, mth, _ := amqp.MethodIDs(f.Payload)
			if cls == amqp.ClassChannel && mth == amqp.MethodChannelCloseOk {
				c.dropChannel(ch)
			} else if cls == amqp.ClassChannel && mth == amqp.MethodChannelClose {
				// Closes crossed: answer, and keep waiting for the
				// close-ok of ours, as RabbitMQ does.
				c.out.method(ch.id, &amqp.ChannelCloseOk{})
			}
		}
		return nil
	}
	complete, err := ch.seq.Frame(f)
	if err != nil {
		return err
	}
	var herr *amqp.Error
	switch f.Type {
	case amqp.FrameMethod:
		herr = ch.method(f.Payload, complete)
	case amqp.FrameHeader:
		herr = ch.header(f.Payload, complete)
	case amqp.FrameBody:
		herr = ch.body(f.Payload, complete)
	}
	if herr == nil {
		return nil
	}
	if herr.Connection {
		return herr
	}
	c.channelError(ch, herr)
	return nil
}

func (c *conn) channelError(ch *channel, e *amqp.Error) {
	c.flushConfirms()
	ch.closing = true
	ch.conf.close()
	ch.seq.Reset()
	ch.teardown()
	c.out.method(ch.id, e.CloseMethod())
}

func (c *conn) openChannel(f amqp.Frame) error {
	if f.Type != amqp.FrameMethod {
		return amqp.NewError(amqp.ChannelError, 0, 0, "expected 'channel.open'")
	}
	cls, mth, err := amqp.MethodIDs(f.Payload)
	if err != nil {
		return err
	}
	if cls != amqp.ClassChannel || mth != amqp.MethodChannelOpen {
		if amqp.MethodName(cls, mth) == "" {
			return amqp.UnknownMethodError(cls, mth)
		}
		if cls == amqp.ClassConnection {
			return amqp.NewError(amqp.CommandInvalid, cls, mth, "unimplemented method")
		}
		return amqp.NewError(amqp.ChannelError, cls, mth, "expected 'channel.open'")
	}
	var m amqp.ChannelOpen
	if err := m.DecodeArgs(f.Payload[4:]); err != nil {
		return err
	}
	if n := len(c.channels); c.channelMax != 0 && n >= int(c.channelMax) {
		return amqp.NewError(amqp.NotAllowed, 0, 0, "number of channels opened (%d) has reached the negotiated channel_max (%d)", n, c.channelMax)
	}
	ch := newChannel(c, f.Channel)
	c.mu.Lock()
	c.channels[f.Channel] = ch
	c.mu.Unlock()
	c.nchannels.Store(int32(len(c.channels)))
	c.srv.churn.chCreated.Add(1)
	c.out.method(f.Channel, &amqp.ChannelOpenOk{})
	return nil
}

// dropChannel forgets a channel that ended, keeping its counters in
// retired.
func (c *conn) dropChannel(ch *channel) {
	c.mu.Lock()
	c.retire(ch)
	delete(c.channels, ch.id)
	c.mu.Unlock()
	c.nchannels.Store(int32(len(c.channels)))
	c.srv.churn.chClosed.Add(1)
}

// flushConfirms sends the publisher confirms owed on every channel.
func (c *conn) flushConfirms() {
	c.unflushed = 0
	for _, ch := range c.dirty {
		ch.dirty = false
		ch.flushConfirms(&c.fl)
	}
	c.dirty = c.dirty[:0]
}

// safeTeardown is teardown for a reader that may have panicked: if
// teardown itself panics half-way, the writer still stops, the socket
// closes and the server forgets the connection, so Shutdown does not
// wait for it.
func (c *conn) safeTeardown() {
	defer faults.Recover(c.srv.log, faults.AMQP, c.peer, func(any) {
		c.out.fail()
		c.closeSocket()
		c.forget()
	})
	c.teardown()
}

// forget removes the connection from the server and from its limits.
func (c *conn) forget() {
	c.forgetOnce.Do(func() {
		c.srv.removeConn(c)
		if c.countedIn != nil {
			c.countedIn.conns.Add(-1)
		}
		if c.release != nil {
			c.release()
		}
	})
}

// teardown runs when the reader ends: channels close (requeueing their
// unacked messages), exclusive queues go, the writer flushes and stops.
func (c *conn) teardown() {
	c.closing.Store(true)
	c.closeChannels()
	c.mu.Lock()
	c.gone = true
	ex := c.exclusive
	c.exclusive = nil
	c.mu.Unlock()
	for _, q := range ex {
		_, cs, _ := q.vh.deleteQueue(q, nil, 0, 0)
		notifyCancelled(cs)
	}
	c.shut()
	c.mu.Lock()
	if c.closeTimer != nil {
		c.closeTimer.Stop()
	}
	c.mu.Unlock()
	c.closeSocket()
	c.forget()
	if c.open {
		c.srv.churn.connClosed.Add(1)
		c.logf(slog.LevelInfo, "amqp: connection closed")
	}
}

// closeChannels ends every channel (reader goroutine only).
func (c *conn) closeChannels() {
	for _, ch := range c.channels {
		ch.teardown()
	}
	c.mu.Lock()
	for _, ch := range c.channels {
		c.retire(ch)
	}
	n := len(c.channels)
	c.channels = nil
	c.mu.Unlock()
	c.nchannels.Store(0)
	c.srv.churn.chClosed.Add(uint64(n))
}

// totals returns the message counters of every channel this connection
// had (the closed ones' and the live ones'), and its traffic.
func (c *conn) totals() (v statValues, n NetStats) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.retired != nil {
		v = *c.retired
	}
	for _, ch := range c.channels {
		cv := ch.counters()
		v.addAll(&cv)
	}
	return v, c.netStats()
}

// retire keeps the counters of a channel that ends (under mu).
func (c *conn) retire(ch *channel) {
	if c.retired == nil {
		c.retired = new(statValues)
	}
	v := ch.counters()
	c.retired.addAll(&v)
}

func (c *conn) netStats() NetStats { return c.net.load() }

// randomName is RabbitMQ's rabbit_guid:binary(gen_secure(), Prefix):
// prefix, "-", 22 characters of URL-safe base64.
func randomName(prefix string) string {
	var b [16]byte
	rand.Read(b[:])
	return prefix + "-" + base64.RawURLEncoding.EncodeToString(b[:])
}
