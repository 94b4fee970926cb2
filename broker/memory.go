package broker

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"substrate/broker/amqp"
)

// Resource alarms, as RabbitMQ's: the memory alarm
// (vm_memory_high_watermark, Config.MemoryHighWatermark) and the disk
// alarm (disk_free_limit, Config.DiskFreeLimit, disk.go). While either is
// on, every connection that publishes is blocked: after a content header
// or body frame that finds an alarm on, the broker sends
// connection.blocked if the client has the connection.blocked capability
// and stops reading its socket, so a publisher is stopped before its body
// is read, not only after a complete publish (rabbit_reader's
// publish_received, called for content frames). Consumers go on, so
// queues drain. When every alarm is off again, the broker sends
// connection.unblocked and reads again. Connections that only consume are
// never blocked. While a connection is blocked its client's heartbeats are
// not read, and the heartbeat timeout is paused with them (RabbitMQ pauses
// its heartbeat monitor too).
//
// The reason is RabbitMQ 3.10's (rabbit_reader:blocked_by_message): "low
// on " and the resources on when the connection blocks, joined by " & " in
// Erlang's set order ("low on memory", "low on disk", "low on disk &
// memory"). It is sent once per blocked period: a second resource going
// on while a connection is blocked sends nothing more.
//
// The memory alarm watches the broker's own memory (memAccount), not the
// process's heap: the cache and etcd share the process, and a full cache
// must never block a publisher.

const memCheckInterval = 100 * time.Millisecond

// resource is a bit set of alarm resources.
type resource uint8

const (
	resMemory resource = 1 << iota
	resDisk
)

// blockedReason is the connection.blocked reason for the resources on.
func blockedReason(r resource) string {
	var names []string
	if r&resDisk != 0 { // Erlang's sets:to_list order: disk before memory
		names = append(names, "disk")
	}
	if r&resMemory != 0 {
		names = append(names, "memory")
	}
	return "low on " + strings.Join(names, " & ")
}

var unblockedMethod = amqp.ConnectionUnblocked{}

// alarm is the server's resource alarm state.
type alarm struct {
	active  atomic.Bool // any resource on, for the publish path's lock-free check
	mu      sync.Mutex
	on      resource
	cleared chan struct{} // closed when the last resource goes off; new one each time one goes on
}

// set turns r on or off; changed reports whether r's state changed.
func (a *alarm) set(r resource, on bool) (changed bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	was := a.on
	if on {
		a.on |= r
	} else {
		a.on &^= r
	}
	if a.on == was {
		return false
	}
	a.active.Store(a.on != 0)
	switch {
	case was == 0:
		a.cleared = make(chan struct{})
	case a.on == 0:
		close(a.cleared)
	}
	return true
}

// state returns the resources on and, if any, a channel closed when all
// of them are off.
func (a *alarm) state() (resource, <-chan struct{}) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.on, a.cleared
}

// memAccount counts the bytes the broker itself holds, by kind. Each is
// updated with an atomic add where the bytes come and go, so the publish
// path takes no lock for it.
//
//   - queued: bodies and properties of messages held in memory by queues:
//     ready messages not paged out, and unacknowledged deliveries that
//     keep their body. A message in several queues (a fanout) counts
//     once: message.refs counts its holders.
//   - assembling: body buffers of publishes still arriving on channels
//     (their capacity), and messages held by open transactions.
//   - outbound: connections' output buffers, including the one a writer
//     is writing.
type memAccount struct {
	queued     atomic.Int64
	assembling atomic.Int64
	outbound   atomic.Int64
}

func (m *memAccount) total() uint64 {
	return uint64(max(m.queued.Load()+m.assembling.Load()+m.outbound.Load(), 0))
}

// MemoryUsed returns the bytes the memory alarm compares with the
// watermark: what queues, channels and connection buffers hold (see
// memAccount), and the message store's records waiting to be written
// (up to its MaxPendingBytes), and what the store keeps in memory itself
// (in a cluster, every live replicated message: Stats.Resident). It does
// not include the cache's items or etcd.
func (s *Server) MemoryUsed() uint64 {
	n := s.mem.total()
	if s.store != nil {
		st := s.store.Stats()
		n += uint64(st.Pending) + uint64(max(st.Resident, 0))
	}
	return n
}

// MemoryBreakdown returns MemoryUsed's parts: message bodies held by
// queues, bodies being assembled on channels (and held by open
// transactions), and connections' output buffers.
func (s *Server) MemoryBreakdown() (queued, assembling, outbound uint64) {
	return uint64(max(s.mem.queued.Load(), 0)), uint64(max(s.mem.assembling.Load(), 0)), uint64(max(s.mem.outbound.Load(), 0))
}

// hold counts m as held by one more queue entry or delivery; the first
// holder adds its bytes to the broker's memory.
func (a *memAccount) hold(m *message) {
	if m.refs.Add(1) == 1 {
		a.queued.Add(m.memSize())
	}
}

// release undoes hold.
func (a *memAccount) release(m *message) {
	if m.refs.Add(-1) == 0 {
		a.queued.Add(-m.memSize())
	}
}

// memSize is what a message costs while held: body and properties.
func (m *message) memSize() int64 { return int64(len(m.body) + len(m.props)) }

// watchMemory runs the memory alarm until Shutdown.
func (s *Server) watchMemory() {
	defer s.wg.Done()
	usage := s.cfg.memUsage
	if usage == nil {
		usage = s.MemoryUsed
	}
	t := time.NewTicker(memCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stopc:
			s.alarm.set(resMemory, false) // let blocked readers go to read their close-ok
			return
		case <-t.C:
		}
		used := usage()
		high := used > s.cfg.MemoryHighWatermark
		if s.alarm.set(resMemory, high) {
			if high {
				s.log.Warn("amqp memory alarm set: publishers are blocked", "used", used, "watermark", s.cfg.MemoryHighWatermark)
			} else {
				s.log.Info("amqp memory alarm cleared", "used", used, "watermark", s.cfg.MemoryHighWatermark)
			}
		}
	}
}

// BlockedConnections returns how many connections the resource alarms
// hold.
func (s *Server) BlockedConnections() int { return int(s.blocked.Load()) }

// MemoryHighWatermark returns the alarm's threshold in bytes (0: off).
func (s *Server) MemoryHighWatermark() uint64 { return s.cfg.MemoryHighWatermark }

// MemoryAlarm reports whether the memory alarm is on.
func (s *Server) MemoryAlarm() bool {
	on, _ := s.alarm.state()
	return on&resMemory != 0
}

// throttle blocks the reader of a connection that just received a
// content frame while an alarm is on, until every alarm clears (or the
// server stops or the connection's writer ends).
func (c *conn) throttle() {
	if !c.srv.alarm.active.Load() {
		return
	}
	on, cleared := c.srv.alarm.state()
	if on == 0 {
		return
	}
	c.flushConfirms()
	c.flushOut()
	// Counted before the client hears of it (BlockedConnections).
	c.srv.blocked.Add(1)
	c.blocked.Store(true)
	if c.blockedNotify {
		c.out.method(0, &amqp.ConnectionBlocked{Reason: blockedReason(on)})
	}
	select {
	case <-cleared:
	case <-c.srv.stopc:
	case <-c.writerDone:
	}
	c.blocked.Store(false)
	c.srv.blocked.Add(-1)
	if c.blockedNotify {
		c.out.method(0, &unblockedMethod)
	}
}
