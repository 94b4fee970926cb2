package broker

import (
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
	"time"

	"substrate/broker/amqp"
	"substrate/broker/store"
)

// Persistence. A durable, non-exclusive queue keeps in the server's
// message store (Config.StoreDir) every persistent message (delivery_mode
// 2) routed to it; a quorum queue keeps every message, as RabbitMQ's
// quorum queues do. Transient messages and other queues never touch it.
// A message routed to several such queues is stored once per queue, each
// copy with its own store ID (entry.sid), so each queue acknowledges its
// own.
//
// The queue talks to the store under its lock, so the store's append
// order is the queue's order: Append on publish, Delivered when a
// consumer gets a message (a restart then marks it redelivered), Ack when
// it leaves the queue for good (acked, rejected, expired, dropped,
// purged, dead-lettered), DropQueue when the queue is deleted. A requeue
// needs no record. On Start every live message returns to its queue in
// order (recoverMessages).

// storeKey is a queue's name in the message store.
func storeKey(vhost, queue string) string { return vhost + "\x00" + queue }

// splitStoreKey undoes storeKey.
func splitStoreKey(key string) (vhost, queue string, ok bool) {
	return strings.Cut(key, "\x00")
}

// storeLocked appends e's message to the store if the queue keeps it
// there, setting e.sid. It returns the commit to wait for.
func (q *Queue) storeLocked(e *entry) (*store.Commit, error) {
	if q.log == nil || !e.m.persistent && !q.quorum {
		return nil, nil
	}
	m := e.m
	id, c, err := q.log.Append(&store.Message{Queue: q.key, Exchange: m.exchange, RoutingKey: m.routingKey,
		Props: m.props, Body: m.body})
	if err != nil {
		q.vh.srv.lim.Log(slog.LevelError, "amqp: message store refused a message", "vhost", q.vh.name, "queue", q.name, "err", err)
		return nil, err
	}
	e.sid = id
	return c, nil
}

// forgetLocked records that e left the queue for good.
func (q *Queue) forgetLocked(e entry) {
	if e.sid == 0 || q.log == nil {
		return
	}
	q.storeFailed("ack", q.log.Ack(e.sid))
}

// storeFailed logs err from the message store, unless the message or the
// store is already gone (a settle after a queue.delete, or at shutdown).
func (q *Queue) storeFailed(what string, err error) {
	if err != nil && !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrClosed) {
		q.vh.srv.lim.Log(slog.LevelError, "amqp: message store "+what+" failed", "vhost", q.vh.name, "queue", q.name, "err", err)
	}
}

// deliveredLocked records a delivery of e: with no-ack the message is
// gone; otherwise it is recovered as redelivered after a restart.
func (q *Queue) deliveredLocked(e entry, noAck bool) {
	if e.sid == 0 || q.log == nil {
		return
	}
	if noAck {
		q.forgetLocked(e)
		return
	}
	q.storeFailed("delivery record", q.log.Delivered(e.sid))
}

// dropStoredLocked removes every stored message of a deleted queue,
// unacknowledged deliveries included, and returns the commit that makes
// it durable (nil if there was nothing stored).
func (q *Queue) dropStoredLocked() *store.Commit {
	if q.log == nil {
		return nil
	}
	_, c, err := q.log.DropQueue(q.key)
	q.storeFailed("drop", err)
	return c
}

// pageBytes is how many bytes of stored message bodies a queue keeps in
// memory; messages beyond are paged out and read back when delivered, so
// a deep backlog of persistent messages costs memory for its index only.
const pageBytes = 1 << 20

// pageLocked drops e's body from memory if e is stored and the queue
// already holds pageBytes of bodies ahead of it.
func (q *Queue) pageLocked(e *entry) {
	if e.sid != 0 && q.msgs.resident() >= pageBytes {
		e.m = nil
	}
}

// messageLocked returns e's message, reading it back from the store if it
// is paged out. A message the store cannot read is dropped (logged).
func (q *Queue) messageLocked(e entry) (*message, bool) {
	if e.m != nil {
		return e.m, true
	}
	sm, err := q.log.Read(e.sid)
	if err != nil {
		q.unreadableLocked(e.sid, err)
		return nil, false
	}
	return messageFromStore(sm), true
}

// unreadableLocked drops a stored message the store cannot read back.
// The store checked every record's checksum when it opened or wrote it,
// so this is a disk that failed since.
func (q *Queue) unreadableLocked(id store.ID, err error) {
	q.vh.srv.lim.Log(slog.LevelError, "amqp: cannot read a stored message; it is dropped", "vhost", q.vh.name, "queue", q.name, "err", err)
	q.forgetLocked(entry{sid: id})
}

// recoverLocked puts a message the store recovered at the tail of the
// queue. Bodies beyond what the queue keeps in memory stay on disk: for
// those only the names and properties are read. Its TTL counts from now:
// the store keeps no publish time. It reports whether the message could
// be read.
func (q *Queue) recoverLocked(se store.Entry, now int64) bool {
	headOnly := q.msgs.resident() >= pageBytes
	var sm *store.Message
	var size int
	var err error
	if headOnly {
		sm, size, err = q.log.ReadHead(se.ID)
	} else if sm, err = q.log.Read(se.ID); err == nil {
		size = len(sm.Body)
	}
	if err != nil {
		q.unreadableLocked(se.ID, err)
		return false
	}
	m := messageFromStore(sm)
	e := entry{m: m, size: uint32(size), prio: m.priority, sid: se.ID, redelivered: se.Redelivered}
	if q.quorum {
		// Every delivery of a live message ended in a return (a requeue,
		// a closed channel or the crash).
		e.returns = int32(min(se.Deliveries, 1<<31-1))
		if q.deliveryLimit >= 0 && int64(e.returns) > q.deliveryLimit {
			q.dropLocked(e, reasonDeliveryLimit)
			return true
		}
	}
	q.setExpiry(&e, now)
	if headOnly {
		e.m = nil
	} else {
		q.pageLocked(&e)
	}
	q.msgs.push(e)
	return true
}

// messageFromStore rebuilds a message read back from the store.
func messageFromStore(sm *store.Message) *message {
	m := &message{exchange: sm.Exchange, routingKey: sm.RoutingKey, props: sm.Props, body: sm.Body, ttl: -1}
	if m.body == nil {
		m.body = []byte{}
	}
	if p, err := amqp.DecodeProperties(sm.Props); err == nil {
		m.priority = p.Priority
		m.persistent = p.DeliveryMode == 2
		if p.Has(amqp.FlagExpiration) {
			if ttl, err := parseExpiration(p.Expiration); err == nil {
				m.ttl = ttl
			}
		}
	}
	return m
}

// openStore opens the message store in Config.StoreDir.
func (s *Server) openStore() error {
	if s.cfg.Log != nil {
		s.store = s.cfg.Log
		return nil
	}
	if s.cfg.StoreDir == "" {
		return nil
	}
	sc := store.NewConfig(s.cfg.StoreDir)
	sc.Logger = s.log
	if s.cfg.storeTweak != nil {
		s.cfg.storeTweak(&sc)
	}
	st, err := store.Open(sc)
	if err != nil {
		return fmt.Errorf("broker: message store: %w", err)
	}
	s.store = st
	return nil
}

// recoverMessages puts every live message of the store back in its queue,
// in order; messages of queues that no longer exist are dropped.
func (s *Server) recoverMessages() error {
	if s.store == nil {
		return nil
	}
	start := time.Now()
	var ents []store.Entry
	if err := s.store.Recover(func(e store.Entry) error {
		ents = append(ents, e)
		return nil
	}); err != nil {
		return fmt.Errorf("broker: message store: %w", err)
	}
	orphans := map[string]int{}
	now := time.Now().UnixNano()
	restored := 0
	for _, e := range ents {
		var q *Queue
		if vname, qname, ok := splitStoreKey(e.Queue); ok {
			if vh := s.vhost(vname); vh != nil {
				q = vh.queue(qname)
			}
		}
		if q == nil || q.log == nil || q.key != e.Queue {
			orphans[e.Queue]++
			continue
		}
		q.mu.Lock()
		if q.recoverLocked(e, now) {
			restored++
		}
		q.unlock()
	}
	for key, n := range orphans {
		vname, qname, _ := splitStoreKey(key)
		s.log.Warn("amqp: dropping stored messages of a queue that no longer exists", "vhost", vname, "queue", qname, "messages", n)
		if _, _, err := s.store.DropQueue(key); err != nil {
			return fmt.Errorf("broker: message store: %w", err)
		}
	}
	s.vhMu.RLock()
	for _, vh := range s.vhosts {
		vh.mu.RLock()
		for _, q := range vh.queues {
			q.mu.Lock()
			q.armTTLLocked()
			q.mu.Unlock()
		}
		vh.mu.RUnlock()
	}
	s.vhMu.RUnlock()
	if restored > 0 || len(orphans) > 0 {
		s.log.Info("amqp messages recovered", "messages", restored, "took", time.Since(start).Round(time.Millisecond))
	}
	if len(ents) > 100_000 {
		// Recovery read every record's head and built a list of all of
		// them; hand that memory back now rather than at the scavenger's
		// pace, so a restart with a deep backlog does not start bloated.
		ents = nil
		debug.FreeOSMemory()
	}
	return nil
}

// StoreStats returns the message store's counters (zero without one).
func (s *Server) StoreStats() store.Stats {
	if s.store == nil {
		return store.Stats{}
	}
	return s.store.Stats()
}

// closeStore syncs and closes the message store.
func (s *Server) closeStore() error {
	if s.store == nil {
		return nil
	}
	if err := s.store.Close(); err != nil {
		return fmt.Errorf("broker: message store: %w", err)
	}
	return nil
}
