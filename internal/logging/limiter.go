package logging

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"time"
)

// Limiter rate-limits log lines per key, where the key is the peer a line
// is about (PeerKey: its IP address, so a reconnect storm from one host is
// one key). Each key may log Burst lines per Period; the lines it loses
// are counted, and once its period is over one line reports them:
//
//	level=WARN msg="amqp: log lines suppressed" peer=10.0.0.7 count=1834 period=1s
//
// at the level of the most severe line lost. A flood from one peer
// therefore costs one report a period, and does not silence the lines
// about other peers. The number of keys tracked is bounded (MaxKeys):
// when a flood of distinct peers fills the table, further peers share one
// bucket reported as peer="other".
//
// Reports are written by the next Log or Allow call after the period, or
// by a timer armed when the first line of a period is dropped, so a
// flood that stops still gets its report. A Limiter needs no Close: the
// timer exists only while there are drops to report.
type Limiter struct {
	log     *slog.Logger
	name    string
	burst   int
	period  time.Duration
	maxKeys int
	now     func() time.Time // tests

	mu       sync.Mutex
	keys     map[string]*bucket
	other    bucket // keys that found the table full
	swept    time.Time
	timer    *time.Timer // armed while drops wait for their report
	timerDue bool
}

type bucket struct {
	start    time.Time
	count    int        // lines let through this period
	dropped  int        // lines lost this period
	severest slog.Level // of the lines lost
}

// OtherPeers is the key reported for peers that found the table full.
const OtherPeers = "other"

// DefaultMaxKeys bounds the keys a Limiter tracks.
const DefaultMaxKeys = 1024

// NewLimiter returns a limiter that lets each key log burst lines per
// period through log. name prefixes the report ("amqp", "memcached").
func NewLimiter(log *slog.Logger, name string, burst int, period time.Duration) *Limiter {
	if log == nil {
		log = Discard()
	}
	return &Limiter{log: log, name: name, burst: max(burst, 1), period: period,
		maxKeys: DefaultMaxKeys, now: time.Now, keys: map[string]*bucket{}}
}

// PeerKey returns the key for a remote address: the IP without the port
// ("unix" for a unix socket peer, the string itself if it has no port).
func PeerKey(addr net.Addr) string {
	if addr == nil {
		return ""
	}
	switch a := addr.(type) {
	case *net.TCPAddr:
		return a.IP.String()
	case *net.UDPAddr:
		return a.IP.String()
	case *net.UnixAddr:
		return "unix"
	}
	return PeerKeyString(addr.String())
}

// PeerKeyString is PeerKey for an address already in "host:port" form.
func PeerKeyString(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return hostport
}

// Log writes the line if key still has budget in this period.
func (l *Limiter) Log(key string, level slog.Level, msg string, args ...any) {
	if l.Allow(key, level) {
		l.log.Log(context.Background(), level, msg, args...)
	}
}

// Allow reports whether a line at level about key may be written now, and
// counts it either way. Lines below the logger's level cost nothing.
func (l *Limiter) Allow(key string, level slog.Level) bool {
	if !l.log.Enabled(context.Background(), level) {
		return false
	}
	l.mu.Lock()
	now := l.now()
	var reports []report
	if now.Sub(l.swept) >= l.period {
		reports = l.sweepLocked(now)
	}
	b := l.bucketLocked(key, now)
	if now.Sub(b.start) >= l.period {
		if b.dropped > 0 {
			reports = append(reports, report{key: l.keyOf(b, key), n: b.dropped, level: b.severest})
		}
		*b = bucket{start: now}
	}
	ok := b.count < l.burst
	if ok {
		b.count++
	} else {
		if b.dropped == 0 || level > b.severest {
			b.severest = level
		}
		b.dropped++
		l.armLocked()
	}
	l.mu.Unlock()
	l.write(reports)
	return ok
}

type report struct {
	key   string
	n     int
	level slog.Level
}

func (l *Limiter) keyOf(b *bucket, key string) string {
	if b == &l.other {
		return OtherPeers
	}
	return key
}

// bucketLocked finds or makes key's bucket; a full table sends new keys
// to the shared one.
func (l *Limiter) bucketLocked(key string, now time.Time) *bucket {
	if b, ok := l.keys[key]; ok {
		return b
	}
	if len(l.keys) >= l.maxKeys {
		return &l.other
	}
	b := &bucket{start: now}
	l.keys[key] = b
	return b
}

// sweepLocked collects the reports of every bucket whose period is over
// and forgets those buckets, so the table holds only recent peers.
func (l *Limiter) sweepLocked(now time.Time) []report {
	l.swept = now
	var out []report
	for k, b := range l.keys {
		if now.Sub(b.start) < l.period {
			continue
		}
		if b.dropped > 0 {
			out = append(out, report{key: k, n: b.dropped, level: b.severest})
		}
		delete(l.keys, k)
	}
	if now.Sub(l.other.start) >= l.period {
		if l.other.dropped > 0 {
			out = append(out, report{key: OtherPeers, n: l.other.dropped, level: l.other.severest})
		}
		l.other = bucket{start: now}
	}
	return out
}

// armLocked makes sure a report is written for drops even if no further
// line comes.
func (l *Limiter) armLocked() {
	if l.timerDue {
		return
	}
	l.timerDue = true
	d := l.period + l.period/10
	if l.timer == nil {
		l.timer = time.AfterFunc(d, l.flush)
	} else {
		l.timer.Reset(d)
	}
}

// flush writes the reports whose period is over; it re-arms while drops
// of a current period remain.
func (l *Limiter) flush() {
	l.mu.Lock()
	l.timerDue = false
	reports := l.sweepLocked(l.now())
	pending := l.other.dropped > 0
	for _, b := range l.keys {
		pending = pending || b.dropped > 0
	}
	if pending {
		l.armLocked()
	}
	l.mu.Unlock()
	l.write(reports)
}

func (l *Limiter) write(reports []report) {
	for _, r := range reports {
		l.log.Log(context.Background(), r.level, l.name+": log lines suppressed",
			"peer", r.key, "count", r.n, "period", l.period)
	}
}

// Keys returns how many peers the limiter tracks now. For tests and
// metrics.
func (l *Limiter) Keys() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.keys)
}
