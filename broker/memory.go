package broker

import (
	"runtime"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"time"

	"substrate/broker/amqp"
)

var (
	blockedMethod   = amqp.ConnectionBlocked{Reason: memBlockedReason}
	unblockedMethod = amqp.ConnectionUnblocked{}
)

// The memory alarm, as RabbitMQ's vm_memory_high_watermark: when the
// process's memory in use goes above Config.MemoryHighWatermark, every
// connection that publishes is blocked. After the publish that finds the
// alarm on, the broker sends connection.blocked ("low on memory") if the
// client has the connection.blocked capability and stops reading its
// socket; consumers go on, so queues drain. When memory falls below the
// watermark again, the broker sends connection.unblocked and reads again.
// Connections that only consume are never blocked. While a connection is
// blocked its client's heartbeats are not read, and the heartbeat timeout
// is paused with them (RabbitMQ pauses its heartbeat monitor too).
//
// Memory in use is the Go heap's live bytes at the last collection plus
// what was allocated since (runtime/metrics), sampled every
// memCheckInterval; while the alarm is on, a collection is forced every
// second so that freed messages are seen even when nothing allocates.

const (
	memCheckInterval = 100 * time.Millisecond
	memBlockedReason = "low on memory"
)

// alarm is the server's memory alarm state.
type alarm struct {
	active  atomic.Bool // on, for the publish path's lock-free check
	mu      sync.Mutex
	on      bool
	cleared chan struct{} // closed when the alarm goes off; new one each time it goes on
}

func (a *alarm) set(on bool) (changed bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.on == on {
		return false
	}
	a.on = on
	a.active.Store(on)
	if on {
		a.cleared = make(chan struct{})
	} else {
		close(a.cleared)
	}
	return true
}

// state returns whether the alarm is on and, if so, a channel closed when
// it goes off.
func (a *alarm) state() (bool, <-chan struct{}) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.on, a.cleared
}

// heapInUse returns the bytes of heap objects, live or not yet swept.
func heapInUse() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}} // in every Go since 1.16
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// watchMemory runs the alarm until Shutdown.
func (s *Server) watchMemory() {
	defer s.wg.Done()
	usage := s.cfg.memUsage
	if usage == nil {
		usage = heapInUse
	}
	t := time.NewTicker(memCheckInterval)
	defer t.Stop()
	var lastGC time.Time
	for {
		select {
		case <-s.stopc:
			s.alarm.set(false) // let blocked readers go to read their close-ok
			return
		case <-t.C:
		}
		on, _ := s.alarm.state()
		if on && time.Since(lastGC) >= time.Second && s.cfg.memUsage == nil {
			runtime.GC()
			lastGC = time.Now()
		}
		used := usage()
		high := used > s.cfg.MemoryHighWatermark
		if s.alarm.set(high) {
			if high {
				s.log.Warn("amqp memory alarm set: publishers are blocked", "used", used, "watermark", s.cfg.MemoryHighWatermark)
			} else {
				s.log.Info("amqp memory alarm cleared", "used", used, "watermark", s.cfg.MemoryHighWatermark)
			}
		}
	}
}

// BlockedConnections returns how many connections the memory alarm
// holds.
func (s *Server) BlockedConnections() int { return int(s.blocked.Load()) }

// MemoryHighWatermark returns the alarm's threshold in bytes (0: off).
func (s *Server) MemoryHighWatermark() uint64 { return s.cfg.MemoryHighWatermark }

// MemoryAlarm reports whether the memory alarm is on.
func (s *Server) MemoryAlarm() bool {
	on, _ := s.alarm.state()
	return on
}

// throttle blocks the reader of a connection that just published while
// the memory alarm is on, until it clears (or the server stops or the
// connection's writer ends).
func (c *conn) throttle() {
	if !c.srv.alarm.active.Load() {
		return
	}
	on, cleared := c.srv.alarm.state()
	if !on {
		return
	}
	c.flushConfirms()
	if c.blockedNotify {
		c.out.method(0, &blockedMethod)
	}
	c.srv.blocked.Add(1)
	select {
	case <-cleared:
	case <-c.srv.stopc:
	case <-c.writerDone:
	}
	c.srv.blocked.Add(-1)
	if c.blockedNotify {
		c.out.method(0, &unblockedMethod)
	}
}
