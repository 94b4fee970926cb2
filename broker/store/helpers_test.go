package store

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is a Clock the test advances by hand.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []fakeWaiter
}

type fakeWaiter struct {
	at time.Time
	ch chan time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.now
		return ch
	}
	c.waiters = append(c.waiters, fakeWaiter{c.now.Add(d), ch})
	return ch
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	keep := c.waiters[:0]
	for _, w := range c.waiters {
		if !w.at.After(c.now) {
			w.ch <- c.now
		} else {
			keep = append(keep, w)
		}
	}
	c.waiters = keep
}

func (c *fakeClock) numWaiters() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.waiters)
}

// syncRec is a SyncFile hook: it counts fsyncs and remembers, per file, the
// size each last sync covered (recorded after the sync returns).
type syncRec struct {
	mu    sync.Mutex
	n     int
	size  map[string]int64
	fail  error
	delay time.Duration
	real  bool
}

func newSyncRec() *syncRec { return &syncRec{size: map[string]int64{}, real: true} }

func (r *syncRec) sync(f File) error {
	size, err := f.Size()
	if err != nil {
		return err
	}
	r.mu.Lock()
	fail, delay := r.fail, r.delay
	r.mu.Unlock()
	if fail != nil {
		return fail
	}
	if delay > 0 {
		time.Sleep(delay)
	}
	if r.real {
		if err := f.Sync(); err != nil {
			return err
		}
	}
	r.mu.Lock()
	r.n++
	r.size[f.Name()] = size
	r.mu.Unlock()
	return nil
}

func (r *syncRec) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n
}

func (r *syncRec) synced(path string) int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.size[path]
}

// powerLoss cuts every segment and ack file back to what its last sync
// covered, as if the machine lost power.
func (r *syncRec) powerLoss(t *testing.T, dir string) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, name := range listFiles(t, dir) {
		p := filepath.Join(dir, name)
		if err := os.Truncate(p, r.size[p]); err != nil {
			t.Fatal(err)
		}
	}
}

func listFiles(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, de := range des {
		if n := de.Name(); strings.HasSuffix(n, ".seg") || strings.HasSuffix(n, ".ack") {
			names = append(names, n)
		}
	}
	return names
}

func dirBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	for _, name := range listFiles(t, dir) {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		n += fi.Size()
	}
	return n
}

// location returns the file and the end offset of id's record.
func (s *Disk) location(id ID) (string, int64, int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g, e := s.findLocked(id)
	if e == nil {
		return "", 0, 0
	}
	return g.path, int64(e.off), int64(e.off) + int64(e.size)
}

func testConfig(dir string, r *syncRec) Config {
	cfg := NewConfig(dir)
	if r != nil {
		cfg.SyncFile = r.sync
	}
	return cfg
}

func mustOpen(t testing.TB, cfg Config) *Disk {
	t.Helper()
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func msg(queue string, i int, bodySize int) *Message {
	body := make([]byte, bodySize)
	for k := range body {
		body[k] = byte(i + k)
	}
	return &Message{Queue: queue, Exchange: "ex", RoutingKey: "rk." + queue, Props: []byte{0x80, 0x00, byte(i)}, Body: body}
}

func recovered(t *testing.T, l Log) []Entry {
	t.Helper()
	var es []Entry
	if err := l.Recover(func(e Entry) error { es = append(es, e); return nil }); err != nil {
		t.Fatal(err)
	}
	return es
}

func waitAll(t testing.TB, cs ...*Commit) {
	t.Helper()
	for _, c := range cs {
		if err := c.Wait(); err != nil {
			t.Fatal(err)
		}
	}
}
