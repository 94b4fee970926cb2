package broker

import (
	"sync"
	"sync/atomic"

	"substrate/broker/amqp"
	"substrate/broker/store"
	"substrate/internal/faults"
)

// confirms is a channel's publisher-confirm state (confirm.select).
//
// The reader goroutine registers each publish. A publish that needs
// nothing is acked with the others when the reader's input runs dry, or
// before its next socket read once confirmBatch publishes wait
// (conn.flushConfirms, conn.Read), one basic.ack with multiple set
// covering them. A
// persistent message that went to the message store waits for its
// Commit: the flush stops below it, and the committer runs the flush
// again when the commit is done, so basic.ack never covers a message
// before the fsync that makes it durable. A refused publish gets a
// basic.nack, in tag order with the acks around it.
//
// Commits of one store complete in append order, so one hook per
// (channel, commit) is enough: when it runs, every earlier commit is done.
type confirms struct {
	// published is the tag of the last publish routed. The reader adds a
	// plain publish without mu (the flush may ack it at once); one that
	// waits is added under mu together with its wait.
	published atomic.Uint64

	mu        sync.Mutex
	closed    bool          // channel closed or closing: send nothing more
	confirmed uint64        // last tag acked or nacked to the client
	waits     []confirmWait // publishes the plain ack must not cover, by tag
	hooked    *store.Commit // the last commit this channel hooked a flush on
}

// confirmWait is a publish that is nacked, or acked only after commit.
type confirmWait struct {
	tag    uint64
	commit *store.Commit // nil for a nack
}

func (cf *confirms) close() {
	cf.mu.Lock()
	cf.closed = true
	cf.waits, cf.hooked = nil, nil
	cf.mu.Unlock()
}

// confirmPublish registers a routed publish: refused (nack), waiting for
// commit, or neither.
func (ch *channel) confirmPublish(nack bool, commit *store.Commit) {
	cf := &ch.conf
	if commit != nil {
		select {
		case <-commit.Done():
			if commit.Err() != nil {
				nack = true
			}
			commit = nil
		default:
		}
	}
	hook := false
	if nack || commit != nil {
		cf.mu.Lock()
		tag := cf.published.Add(1)
		if nack {
			cf.waits = append(cf.waits, confirmWait{tag: tag})
		} else {
			cf.waits = append(cf.waits, confirmWait{tag: tag, commit: commit})
			if cf.hooked != commit {
				cf.hooked, hook = commit, true
			}
		}
		cf.mu.Unlock()
	} else {
		cf.published.Add(1)
	}
	if hook {
		c := ch.c
		commit.AfterFunc(func(error) {
			// On the store's committer: a panic must not end the
			// committer (every publisher's confirms wait on it). It
			// closes only this connection, with 541.
			defer faults.Recover(c.srv.log, faults.AMQP, c.peer, c.internalErrorFrom)
			faults.Point("amqp.confirm", c.subject())
			ch.flushConfirms(nil)
		})
	}
	if nack {
		// RabbitMQ refuses at once; earlier publishes are acked first.
		ch.flushConfirms(&ch.c.fl)
		return
	}
	ch.c.unflushed++
	if !ch.dirty {
		ch.dirty = true
		ch.c.dirty = append(ch.c.dirty, ch)
	}
}

// flushConfirms sends what is owed: acks up to the first publish still
// waiting for its commit, nacks in their place. Called by the reader,
// with its flusher (the reader writes them before it reads again), and
// by the store's committer, with nil.
func (ch *channel) flushConfirms(fl *flusher) {
	cf := &ch.conf
	cf.mu.Lock()
	defer cf.mu.Unlock()
	if cf.closed {
		return
	}
	out := &ch.c.out
	ack := func(upto uint64) {
		if upto > cf.confirmed {
			out.methodFor(ch.id, &amqp.BasicAck{DeliveryTag: upto, Multiple: upto-cf.confirmed > 1}, fl)
			ch.stats.add(statConfirm, upto-cf.confirmed)
			cf.confirmed = upto
		}
	}
	for len(cf.waits) > 0 {
		w := cf.waits[0]
		if w.commit != nil {
			select {
			case <-w.commit.Done():
			default:
				ack(w.tag - 1)
				return
			}
		}
		if w.commit == nil || w.commit.Err() != nil {
			ack(w.tag - 1)
			out.methodFor(ch.id, &amqp.BasicNack{DeliveryTag: w.tag}, fl)
			cf.confirmed = w.tag
		}
		cf.waits[0] = confirmWait{}
		cf.waits = cf.waits[1:]
	}
	cf.waits = nil
	ack(cf.published.Load())
}
