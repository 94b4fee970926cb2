// Package faults contains a panic to the peer or task it came from.
//
// substrate runs three services in one process, so a panic on one
// connection must not end the other two services. Every goroutine that
// serves a peer, or runs on a peer's behalf (timers, commit hooks,
// handlers), defers Recover at its top:
//
//	defer faults.Recover(log, faults.AMQP, c.peer, func(v any) { c.internalError(v) })
//
// Recover logs one ERROR line with the panic value, the peer and the
// stack, counts it in Panics (exported on /metrics as
// substrate_panics_total{service}), and calls the site's cleanup, which
// closes only that peer (AMQP: connection.close 541 INTERNAL_ERROR). The
// cleanup must not re-panic; if it does, the second panic is logged and
// swallowed too.
//
// # Injection
//
// Tests prove each site by panicking there on purpose. A site calls
// Point(site, subject) where a peer's input is handled; subject is what
// that peer sent (a queue or routing key, a cache key, a URL path, a ctl
// command). Point panics when the site is armed with a marker that
// subject contains. Arm does that from a Go test in the same process; a
// binary built with -tags faultinject also reads SUBSTRATE_TEST_FAULTS
// ("site=marker,site=marker") at start, for tests that drive
// bin/substrate. Production builds have no way to arm a site: Point is
// one atomic load and a return.
package faults

import (
	"fmt"
	"log/slog"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Service names used as the label of substrate_panics_total.
const (
	AMQP      = "amqp"
	Memcached = "memcached"
	Etcd      = "etcd"
	HTTP      = "http"
	Ctl       = "ctl"
	Redis     = "redis"
)

var counts sync.Map // service -> *atomic.Uint64

func counter(service string) *atomic.Uint64 {
	if v, ok := counts.Load(service); ok {
		return v.(*atomic.Uint64)
	}
	v, _ := counts.LoadOrStore(service, new(atomic.Uint64))
	return v.(*atomic.Uint64)
}

// Panics returns how many panics have been recovered per service since
// the process started.
func Panics() map[string]uint64 {
	out := map[string]uint64{}
	counts.Range(func(k, v any) bool {
		out[k.(string)] = v.(*atomic.Uint64).Load()
		return true
	})
	return out
}

// Count returns the panics recovered for one service.
func Count(service string) uint64 { return counter(service).Load() }

// Recover must be deferred directly (defer faults.Recover(...)). If the
// goroutine is panicking it logs the panic with peer and stack, counts it
// for service and calls cleanup (when not nil) with the panic value.
// log may be nil.
func Recover(log *slog.Logger, service, peer string, cleanup func(v any)) {
	v := recover()
	if v == nil {
		return
	}
	Handle(log, service, peer, v, cleanup)
}

// Handle is Recover's body for sites that called recover themselves
// (net/http's handler wrapper, say).
func Handle(log *slog.Logger, service, peer string, v any, cleanup func(v any)) {
	counter(service).Add(1)
	if log != nil {
		if ok, suppressed := logs.allow(service, time.Now()); ok {
			args := []any{"peer", peer, "panic", fmt.Sprint(v), "stack", string(debug.Stack())}
			if suppressed > 0 {
				args = append(args, "suppressed_since_last", suppressed)
			}
			log.Error(service+": panic recovered; closing only this peer", args...)
		}
	}
	if cleanup == nil {
		return
	}
	defer func() {
		if v2 := recover(); v2 != nil && log != nil {
			log.Error(service+": panic in panic cleanup", "peer", peer, "panic", fmt.Sprint(v2))
		}
	}()
	cleanup(v)
}

// A client that can trigger a panic at will must not be able to flood the
// log with stacks: per service, at most logBurst panics are logged in each
// logWindow; the others are only counted, and the next logged line says
// how many were not.
const (
	logBurst  = 20
	logWindow = 10 * time.Second
)

type logBudget struct {
	mu sync.Mutex
	by map[string]*budget
}

type budget struct {
	start      time.Time
	n          int
	suppressed uint64
}

var logs = logBudget{by: map[string]*budget{}}

func (l *logBudget) allow(service string, now time.Time) (ok bool, suppressed uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.by[service]
	if b == nil {
		b = &budget{}
		l.by[service] = b
	}
	if now.Sub(b.start) >= logWindow {
		b.start, b.n = now, 0
	}
	if b.n >= logBurst {
		b.suppressed++
		return false, 0
	}
	b.n++
	suppressed, b.suppressed = b.suppressed, 0
	return true, suppressed
}

// ResetLogBudget lets the next panics of every service be logged again.
// For tests that check a panic's log line.
func ResetLogBudget() {
	logs.mu.Lock()
	defer logs.mu.Unlock()
	logs.by = map[string]*budget{}
}

// Go runs f on a new goroutine that recovers its own panic (logged and
// counted for service; cleanup may be nil).
func Go(log *slog.Logger, service, peer string, f func(), cleanup func(v any)) {
	go func() {
		defer Recover(log, service, peer, cleanup)
		f()
	}()
}

// Injected is the value Point panics with.
type Injected struct{ Site, Subject string }

func (i Injected) String() string {
	return "faults: injected panic at " + i.Site + " (" + i.Subject + ")"
}

var armed atomic.Pointer[map[string]string] // site -> marker

// Point panics with Injected when site is armed and subject contains the
// site's marker. A no-op unless a test armed it.
func Point(site, subject string) {
	m := armed.Load()
	if m == nil {
		return
	}
	if marker, ok := (*m)[site]; ok && strings.Contains(subject, marker) {
		panic(Injected{Site: site, Subject: subject})
	}
}

var armMu sync.Mutex

// Arm makes Point(site, subject) panic for subjects containing marker
// until the returned function is called. For tests.
func Arm(site, marker string) (disarm func()) {
	armMu.Lock()
	defer armMu.Unlock()
	next := map[string]string{}
	if m := armed.Load(); m != nil {
		for k, v := range *m {
			next[k] = v
		}
	}
	next[site] = marker
	armed.Store(&next)
	return func() {
		armMu.Lock()
		defer armMu.Unlock()
		cur := map[string]string{}
		if m := armed.Load(); m != nil {
			for k, v := range *m {
				if k != site {
					cur[k] = v
				}
			}
		}
		if len(cur) == 0 {
			armed.Store(nil)
		} else {
			armed.Store(&cur)
		}
	}
}

// ArmSpec arms every "site=marker" pair of a comma-separated spec.
func ArmSpec(spec string) error {
	for _, part := range strings.Split(spec, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		site, marker, ok := strings.Cut(part, "=")
		if !ok || site == "" || marker == "" {
			return fmt.Errorf("faults: %q is not site=marker", part)
		}
		Arm(site, marker)
	}
	return nil
}

// Armed lists the armed sites, sorted. For logs and tests.
func Armed() []string {
	m := armed.Load()
	if m == nil {
		return nil
	}
	out := make([]string, 0, len(*m))
	for k := range *m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
