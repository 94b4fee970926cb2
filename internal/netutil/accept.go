// Package netutil holds what substrate's accept loops share: how they
// wait out a temporary accept error (out of file descriptors) instead of
// spinning on it or giving up.
package netutil

import (
	"errors"
	"net"
	"syscall"
	"time"
)

// AcceptBackoff is an accept loop's sleep after temporary errors, as
// net/http's Server does it: 5 ms, doubling, at most 1 s. An episode is
// the run of failures between two successful accepts; a loop logs its
// first failure and its end, not every retry.
type AcceptBackoff struct {
	delay    time.Duration
	failures int
	since    time.Time
}

// Next returns the sleep after one more failure, and whether this failure
// starts an episode.
func (b *AcceptBackoff) Next() (d time.Duration, first bool) {
	first = b.failures == 0
	if first {
		b.since = time.Now()
	}
	b.failures++
	b.delay = min(max(2*b.delay, 5*time.Millisecond), time.Second)
	return b.delay, first
}

// Reset ends an episode after a successful accept and returns how many
// failures it had (0 if none) and how long it lasted.
func (b *AcceptBackoff) Reset() (failures int, lasted time.Duration) {
	if b.failures == 0 {
		return 0, 0
	}
	failures, lasted = b.failures, time.Since(b.since)
	*b = AcceptBackoff{}
	return failures, lasted
}

// TemporaryAccept reports whether an accept error is likely to pass: out
// of file descriptors (EMFILE, ENFILE) or buffers, an aborted connection,
// a timeout. What net.Error's deprecated Temporary reported, which
// net/http's Server still relies on.
func TemporaryAccept(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED, syscall.EINTR} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// TakeSlot takes one of slots, a listener's connection_max semaphore
// (RabbitMQ's ranch max_connections: at the limit the listener stops
// accepting and clients wait in the backlog). When every slot is taken it
// calls full once and waits for one to be given back; it returns false
// when stop closes first.
func TakeSlot(slots chan struct{}, stop <-chan struct{}, full func()) bool {
	select {
	case slots <- struct{}{}:
		return true
	default:
	}
	full()
	select {
	case slots <- struct{}{}:
		return true
	case <-stop:
		return false
	}
}
