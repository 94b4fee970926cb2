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
	"sync"
	"sync/atomic"
	"time"

	"substrate/broker/amqp"
	"substrate/internal/faults"
	"substrate/internal/logging"
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
)

// outbound is a connection's queue of encoded frames. Producers (the
// reader, queues delivering from other goroutines) append under mu; the
// writer swaps the buffer out and writes it in one syscall, so frames
// produced while it writes are coalesced into the next write.
type outbound struct {
	mu      sync.Mutex
	buf     []byte
	dead    bool // writer gone: drop appends
	pending atomic.Int64
	signal  chan struct{} // capacity 1: "there is something to write"
	drained *sync.Cond    // broadcast when the writer took the buffer
	log     *slog.Logger
	mem     *atomic.Int64 // the broker's outbound bytes (memAccount.outbound); nil: not counted
	acct    int64         // bytes of buf counted in mem (under mu)
	writing int64         // bytes the writer took and counts until written (writer only)
}

func (o *outbound) init() {
	o.signal = make(chan struct{}, 1)
	o.drained = sync.NewCond(&o.mu)
}

// appendLocked is called with mu held after appending to buf.
func (o *outbound) kick() {
	o.pending.Store(int64(len(o.buf)))
	if d := int64(len(o.buf)) - o.acct; d != 0 && o.mem != nil {
		o.acct += d
		o.mem.Add(d)
	}
	select {
	case o.signal <- struct{}{}:
	default:
	}
}

func (o *outbound) method(ch uint16, m amqp.Method) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.dead {
		return
	}
	o.appendMethodLocked(ch, m)
	o.kick()
}

// appendMethodLocked encodes m. Encoding fails only for a shortstr over
// 255 bytes, which our inputs (client shortstrs, cut reply texts) never
// are; a failure drops the frame rather than the process.
func (o *outbound) appendMethodLocked(ch uint16, m amqp.Method) bool {
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
	o.mu.Lock()
	defer o.mu.Unlock()
	o.contentLocked(ch, m, msg, frameMax)
}

func (o *outbound) contentLocked(ch uint16, m amqp.Method, msg *message, frameMax uint32) {
	if o.dead {
		return
	}
	if !o.appendMethodLocked(ch, m) {
		return
	}
	o.buf = amqp.AppendHeaderFrameRaw(o.buf, ch, amqp.ClassBasic, uint64(len(msg.body)), msg.props)
	o.buf = amqp.AppendBodyFrames(o.buf, ch, msg.body, frameMax)
	o.kick()
}

func (o *outbound) writable() bool { return o.pending.Load() < outSoftLimit }

// waitBelow blocks while more than limit bytes wait to be written.
func (o *outbound) waitBelow(limit int) {
	o.mu.Lock()
	for !o.dead && len(o.buf) > limit {
		o.drained.Wait()
	}
	o.mu.Unlock()
}

// conn is one client connection. The reader goroutine (serve) owns the
// handshake state and the channels map; the writer goroutine (writeLoop)
// owns the socket's write side.
type conn struct {
	srv     *Server
	nc      net.Conn
	name    string // "peer -> local", as RabbitMQ names connections
	peer    string
	peerKey string // the peer's IP: its key in the log limiter
	fr      *amqp.FrameReader
	out     outbound
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
	hbInterval    atomic.Int64 // writer: heartbeat after hbInterval/2 idle (ns)

	mu        sync.Mutex // guards the fields below
	user      string
	vh        *vhost
	props     amqp.Table
	open      bool
	exclusive map[*Queue]struct{}
	gone      bool // torn down: no new exclusive queues

	closing    atomic.Bool // we sent connection.close; waiting for close-ok
	closeTimer *time.Timer

	channels  map[uint16]*channel // reader-owned
	nchannels atomic.Int32
	login     string     // the user that passed authentication; reader-owned
	dirty     []*channel // channels with confirms to send; reader-owned
	published bool       // the last frame completed a publish; reader-owned

	consMu    sync.Mutex
	consumers map[*consumer]struct{} // for backpressure wake-ups
	throttled atomic.Bool

	stopWriter     chan struct{}
	stopWriterOnce sync.Once
	writerDone     chan struct{}
	forgetOnce     sync.Once
}

func newConn(s *Server, nc net.Conn) *conn {
	c := &conn{srv: s, nc: nc, channels: map[uint16]*channel{},
		stopWriter: make(chan struct{}), writerDone: make(chan struct{})}
	c.peer = nc.RemoteAddr().String()
	c.peerKey = logging.PeerKey(nc.RemoteAddr())
	c.name = c.peer + " -> " + nc.LocalAddr().String()
	c.label.Store(&c.peer)
	c.out.init()
	c.out.log = s.log
	c.out.mem = &s.mem.outbound
	c.fr = amqp.NewFrameReader(readerFunc(c.read))
	return c
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// read reads the socket, pushing the heartbeat deadline on each read: any
// frame counts as activity.
func (c *conn) read(p []byte) (int, error) {
	if t := c.hbTimeout.Load(); t > 0 {
		c.nc.SetReadDeadline(time.Now().Add(time.Duration(t)))
	}
	return c.nc.Read(p)
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

func (c *conn) info() (ConnectionInfo, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.open {
		return ConnectionInfo{}, false
	}
	return ConnectionInfo{Name: c.name, User: c.user, VHost: c.vh.name, Peer: c.peer,
		Channels: int(c.nchannels.Load()), ClientProperties: copyArgs(c.props)}, true
}

// logf logs a line about this connection, rate-limited per peer IP.
func (c *conn) logf(level slog.Level, msg string, args ...any) {
	c.srv.peers.Log(c.peerKey, level, msg, append([]any{"conn", c.name}, args...)...)
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
		defer faults.Recover(c.srv.log, faults.AMQP, c.peer, func(any) { c.nc.Close() })
		faults.Point("amqp.close-timer", c.subject())
		c.nc.Close()
	})
	c.mu.Unlock()
}

// ---- writer ----

func (c *conn) writeLoop() {
	defer c.srv.wg.Done()
	defer close(c.writerDone)
	defer faults.Recover(c.srv.log, faults.AMQP, c.peer, c.writerPanicked)
	var spare []byte
	var hb *time.Timer
	var hbC <-chan time.Time
	lastWrite := time.Now()
	failed := false
	for {
		stop := false
		select {
		case <-c.out.signal:
		case <-hbC:
		case <-c.stopWriter:
			stop = true
		}
		iv := time.Duration(c.hbInterval.Load())
		heartbeat := iv > 0 && time.Since(lastWrite) >= iv/2 && !stop
		buf := c.out.take(spare[:0], heartbeat, stop)
		if len(buf) > 0 && !failed {
			faults.Point("amqp.writer", c.subject())
			if stop {
				c.nc.SetWriteDeadline(time.Now().Add(time.Second))
			}
			if _, err := c.nc.Write(buf); err != nil {
				failed = true
				c.nc.Close() // the reader sees the error and tears down
			}
			lastWrite = time.Now()
		}
		if c.out.mem != nil {
			c.out.mem.Add(-c.out.writing)
		}
		c.out.writing = 0
		if cap(buf) > 16<<10 {
			buf = nil // don't keep a large buffer on an idle connection
		}
		spare = buf
		if stop {
			if hb != nil {
				hb.Stop()
			}
			return
		}
		if c.throttled.Load() && c.out.writable() {
			c.throttled.Store(false)
			c.wakeConsumers()
		}
		if iv > 0 {
			next := iv/2 - time.Since(lastWrite)
			if hb == nil {
				hb = time.NewTimer(max(next, time.Millisecond))
				hbC = hb.C
			} else {
				hb.Reset(max(next, time.Millisecond))
			}
		}
	}
}

// take swaps the outbound buffer for spare and returns what was queued,
// with a heartbeat frame if asked and nothing else is; with stop, later
// appends are dropped.
func (o *outbound) take(spare []byte, heartbeat, stop bool) []byte {
	o.mu.Lock()
	defer o.mu.Unlock()
	if heartbeat && len(o.buf) == 0 {
		o.buf = amqp.AppendHeartbeat(o.buf)
	}
	buf := o.buf
	o.buf = spare
	o.pending.Store(0)
	o.writing += o.acct // counted until written (writeLoop)
	o.acct = 0
	if stop {
		o.dead = true
	}
	o.drained.Broadcast()
	return buf
}

// writerPanicked is the cleanup after a panic on the writer: nothing more
// is queued, the client gets connection.close 541 written directly (the
// writer is gone), and the socket closes after the grace unless the
// reader sees close-ok first and tears the connection down.
func (c *conn) writerPanicked(any) {
	c.out.take(nil, false, true)
	if c.closing.CompareAndSwap(false, true) {
		if b, err := amqp.AppendMethodFrame(nil, 0, internalErr.CloseMethod()); err == nil {
			c.nc.SetWriteDeadline(time.Now().Add(time.Second))
			c.nc.Write(b)
		}
		c.mu.Lock()
		c.closeTimer = time.AfterFunc(closeGrace, func() { c.nc.Close() })
		c.mu.Unlock()
		return
	}
	c.nc.Close()
}

func (c *conn) addConsumer(cs *consumer) {
	c.consMu.Lock()
	if c.consumers == nil {
		c.consumers = map[*consumer]struct{}{}
	}
	c.consumers[cs] = struct{}{}
	c.consMu.Unlock()
}

func (c *conn) removeConsumer(cs *consumer) {
	c.consMu.Lock()
	delete(c.consumers, cs)
	c.consMu.Unlock()
}

// wakeConsumers lets the queues of this connection's consumers deliver
// again after backpressure.
func (c *conn) wakeConsumers() {
	c.consMu.Lock()
	qs := make(map[*Queue]struct{}, len(c.consumers))
	for cs := range c.consumers {
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
	if c.exclusive == nil {
		c.exclusive = map[*Queue]struct{}{}
	}
	c.exclusive[q] = struct{}{}
	return true
}

func (c *conn) removeExclusive(q *Queue) {
	c.mu.Lock()
	delete(c.exclusive, q)
	c.mu.Unlock()
}

// ---- reader ----

// errClosed ends the reader loop without an error to report.
var errClosed = errors.New("connection closed")

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

func (c *conn) serve() {
	defer c.srv.wg.Done()
	defer c.safeTeardown()
	defer faults.Recover(c.srv.log, faults.AMQP, c.peer, c.recovered)
	c.nc.SetReadDeadline(time.Now().Add(handshakeTimeout))
	if !c.tlsHandshake() {
		return
	}
	if err := c.fr.ReadProtocolHeader(); err != nil {
		if errors.Is(err, amqp.ErrProtocolHeader) {
			c.out.mu.Lock()
			c.out.buf = append(c.out.buf, amqp.ProtocolHeader...)
			c.out.kick()
			c.out.mu.Unlock()
		}
		return
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
		return
	}
	err := c.loop()
	var ae *amqp.Error
	if errors.As(err, &ae) {
		c.logf(slog.LevelWarn, "amqp: closing connection", "code", ae.Code, "text", ae.Text)
		// As in RabbitMQ the channels end now (consumers cancelled,
		// unacked messages requeued), not when close-ok arrives.
		c.flushConfirms()
		c.closeChannels()
		c.closeWith(ae, closeGrace)
		c.awaitCloseOk()
	} else if err != nil && err != errClosed && !c.closing.Load() {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() && c.hbTimeout.Load() > 0 {
			c.logf(slog.LevelWarn, "amqp: missed heartbeats from client, closing", "timeout", time.Duration(c.hbInterval.Load()))
		} else if err != io.EOF {
			c.logf(slog.LevelInfo, "amqp: connection ended", "err", err)
		}
	}
}

// awaitCloseOk reads until connection.close-ok (or close) arrives, the
// socket fails or the close timer fires; everything else is ignored.
func (c *conn) awaitCloseOk() {
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
	c.user, c.vh, c.props, c.open = user, vh, so.ClientProperties, true
	c.mu.Unlock()
	c.out.method(0, &amqp.ConnectionOpenOk{})
	c.logf(slog.LevelInfo, "amqp: connection opened", "user", user, "vhost", op.VirtualHost)
	// Heartbeats: the client's tune-ok value is final.
	c.nc.SetReadDeadline(time.Time{})
	if to.Heartbeat > 0 {
		iv := time.Duration(to.Heartbeat) * time.Second
		c.hbInterval.Store(int64(iv))
		c.hbTimeout.Store(int64(2 * iv))
		c.out.kick0()
	}
	return nil
}

// kick0 wakes the writer so it picks up a new heartbeat interval.
func (o *outbound) kick0() {
	select {
	case o.signal <- struct{}{}:
	default:
	}
}

// loop processes frames after the handshake until the connection ends.
func (c *conn) loop() error {
	for {
		if c.fr.Buffered() == 0 {
			c.flushConfirms()
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
		if len(f.Payload) > 32<<10 && c.fr.Buffered() == 0 {
			// Drop the reader's grown buffer after a large frame, so an idle
			// connection stays small.
			c.fr = amqp.NewFrameReader(readerFunc(c.read))
			c.fr.SetFrameMax(c.frameMax)
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
			c.out.method(0, &amqp.ConnectionCloseOk{})
			return errClosed
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
				c.out.method(ch.id, &amqp.ChannelCloseOk{})
				c.dropChannel(ch)
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
		if cls == amqp.ClassChannel && mth == amqp.MethodChannelCloseOk {
			return nil // a late close-ok for a channel already gone, as RabbitMQ
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
	c.channels[f.Channel] = ch
	c.nchannels.Store(int32(len(c.channels)))
	c.out.method(f.Channel, &amqp.ChannelOpenOk{})
	return nil
}

func (c *conn) dropChannel(ch *channel) {
	delete(c.channels, ch.id)
	c.nchannels.Store(int32(len(c.channels)))
}

// flushConfirms sends the publisher confirms owed on every channel.
func (c *conn) flushConfirms() {
	for _, ch := range c.dirty {
		ch.dirty = false
		ch.flushConfirms()
	}
	c.dirty = c.dirty[:0]
}

// safeTeardown is teardown for a reader that may have panicked: if
// teardown itself panics half-way, the writer still stops, the socket
// closes and the server forgets the connection, so Shutdown does not
// wait for it.
func (c *conn) safeTeardown() {
	defer faults.Recover(c.srv.log, faults.AMQP, c.peer, func(any) {
		c.stopWriterOnce.Do(func() { close(c.stopWriter) })
		c.nc.Close()
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
	for q := range ex {
		_, cs, _ := q.vh.deleteQueue(q, nil, 0, 0)
		notifyCancelled(cs)
	}
	c.stopWriterOnce.Do(func() { close(c.stopWriter) })
	<-c.writerDone
	c.mu.Lock()
	if c.closeTimer != nil {
		c.closeTimer.Stop()
	}
	c.mu.Unlock()
	c.nc.Close()
	c.forget()
	if c.open {
		c.logf(slog.LevelInfo, "amqp: connection closed")
	}
}

// closeChannels ends every channel (reader goroutine only).
func (c *conn) closeChannels() {
	for _, ch := range c.channels {
		ch.teardown()
	}
	c.channels = nil
	c.nchannels.Store(0)
}

// randomName is RabbitMQ's rabbit_guid:binary(gen_secure(), Prefix):
// prefix, "-", 22 characters of URL-safe base64.
func randomName(prefix string) string {
	var b [16]byte
	rand.Read(b[:])
	return prefix + "-" + base64.RawURLEncoding.EncodeToString(b[:])
}
