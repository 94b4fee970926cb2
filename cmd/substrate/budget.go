package main

import (
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"strings"
)

// The memory budget of `substrate serve`: one process, divided on
// purpose. Each service has a share, Go's memory limit is their sum, and
// a configuration whose shares exceed the machine (or the cgroup) does
// not start.
//
//   - amqp: --amqp-memory-high-watermark (the broker's own memory; past
//     it publishers are blocked).
//   - memcached: the cache's -m, plus a quarter for its index and
//     allocation rounding (a cache full of small items holds up to about
//     1.25 × -m of heap). cache_memlimit cannot raise it under serve.
//   - etcd: a fixed etcdMemoryShare. etcd's database is mmapped (page
//     cache, not Go heap); its heap is the Raft log tail, watchers and
//     request buffers, which stay well under this for an OpenStack
//     controller's keys.
//   - overhead: runtime, goroutine stacks, the management server and
//     the ctl socket.
const (
	etcdMemoryShare     = 256 << 20
	processMemoryShare  = 64 << 20
	cacheOverheadFactor = 4 // the cache's share is -m + -m/cacheOverheadFactor
)

type memoryShare struct {
	name, what string // service, and where its figure comes from
	bytes      uint64
}

type memoryBudget []memoryShare

func (b memoryBudget) total() uint64 {
	var t uint64
	for _, s := range b {
		t += s.bytes
	}
	return t
}

func (b memoryBudget) String() string {
	parts := make([]string, len(b))
	for i, s := range b {
		parts[i] = fmt.Sprintf("%s %s (%s)", s.name, formatBytes(s.bytes), s.what)
	}
	return strings.Join(parts, " + ")
}

// serveBudget is the budget of the enabled services. watermark 0 (the
// memory alarm off) leaves the broker unbounded: the budget then has no
// total and ok is false.
func serveBudget(enabled map[string]bool, watermark, cacheBytes uint64) (b memoryBudget, ok bool) {
	ok = true
	if enabled["amqp"] {
		if watermark == 0 {
			ok = false
		}
		b = append(b, memoryShare{"amqp", "--amqp-memory-high-watermark", watermark})
	}
	if enabled["memcached"] {
		b = append(b, memoryShare{"memcached", fmt.Sprintf("-m %dMiB + %d%%", cacheBytes>>20, 100/cacheOverheadFactor), cacheBytes + cacheBytes/cacheOverheadFactor})
	}
	if enabled["etcd"] {
		b = append(b, memoryShare{"etcd", "fixed", etcdMemoryShare})
	}
	b = append(b, memoryShare{"process", "runtime and the rest", processMemoryShare})
	return b, ok
}

// checkBudget refuses a budget larger than machine (0: unknown, no check).
func checkBudget(b memoryBudget, machine uint64) error {
	if machine == 0 || b.total() <= machine {
		return nil
	}
	return fmt.Errorf("memory budget %s = %s exceeds the %s this process may use (machine or cgroup); lower --amqp-memory-high-watermark or the cache's -m",
		b, formatBytes(b.total()), formatBytes(machine))
}

// applyBudget sets Go's memory limit to the budget's total, so the
// garbage collector works harder before the process outgrows its shares,
// unless GOMEMLIMIT is set (the operator's figure wins) or the broker is
// unbounded.
func applyBudget(b memoryBudget, ok bool, log *slog.Logger) {
	if v := os.Getenv("GOMEMLIMIT"); v != "" {
		log.Info("memory budget", "shares", b.String(), "go_memory_limit", "GOMEMLIMIT="+v)
		return
	}
	if !ok {
		log.Info("memory budget: no Go memory limit, the AMQP memory alarm is off", "shares", b.String())
		return
	}
	debug.SetMemoryLimit(int64(b.total()))
	log.Info("memory budget", "shares", b.String(), "go_memory_limit", formatBytes(b.total()))
}

// formatBytes writes n in the largest binary unit that keeps one decimal.
func formatBytes(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1fGiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1fMiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1fKiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%dB", n)
}
