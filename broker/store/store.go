package store

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// ID identifies one stored message (one message in one queue). The store
// assigns IDs in increasing append order; after a restart new IDs are above
// every ID still on disk, so an ID is never confused with an older one.
type ID uint64

// Message is a persistent message in one queue.
type Message struct {
	Queue       string // the queue's key, e.g. vhost + "\x00" + name; chosen by the broker
	Exchange    string
	RoutingKey  string
	Props       []byte // raw AMQP content properties
	Body        []byte
	Redelivered bool   // already redelivered when appended (e.g. moved from another store)
	Deliveries  uint32 // deliveries before this append
}

// Entry describes a live message found by Recover. The message itself is
// read with Read(ID) when it is needed.
type Entry struct {
	ID          ID
	Queue       string
	Redelivered bool   // it was delivered at least once (or appended as redelivered)
	Deliveries  uint32 // deliveries recorded by Delivered, plus Message.Deliveries
	Size        int    // bytes of the stored record, headers included
}

// Log is the broker's persistent message store: an append-only log of
// messages with acknowledgements. Open returns the segment-log
// implementation; NewMemory the in-memory one for tests. All methods are
// safe for concurrent use.
type Log interface {
	// Append stores a copy of m and returns its ID at once. The message is
	// durable when the returned Commit is done with a nil error; a
	// publisher confirm waits for that. Many appends share one Commit.
	Append(m *Message) (ID, *Commit, error)
	// Read returns the message id, reading it back from disk if needed.
	Read(id ID) (*Message, error)
	// ReadHead returns the message id without its body, and the body's
	// length: what a queue needs to keep a paged-out message in order.
	ReadHead(id ID) (*Message, int, error)
	// Delivered records that id was handed to a consumer: after a
	// restart it is recovered as redelivered, its Deliveries one higher.
	// A requeue needs no record of its own: the message stays live and its
	// delivery is already recorded.
	Delivered(id ID) error
	// Ack removes id (acknowledged, rejected, expired, dropped).
	Ack(id ID) error
	// DropQueue removes every live message of queue (queue.delete) and
	// returns how many there were. The removal is durable when the
	// returned Commit is done (nil if there was nothing to remove): a
	// queue redeclared under the same name must not find them after a
	// crash.
	DropQueue(queue string) (int, *Commit, error)
	// Recover calls fn for every live message in append order, so each
	// queue's messages come in their own append order. fn must not call
	// the Log. A non-nil error from fn stops the walk and is returned.
	Recover(fn func(Entry) error) error
	// Len returns the number of live messages.
	Len() int
	// Stats returns counters for monitoring.
	Stats() Stats
	// Close writes and syncs what is pending, completes every Commit and
	// releases the files. Further calls return ErrClosed. Idempotent.
	Close() error
}

// Stats are a Log's counters.
type Stats struct {
	Syncs    uint64 // fsyncs issued since Open
	Live     int    // live messages
	Segments int    // segment files
	Pending  int    // bytes of records in memory waiting for (or in) a write
	// Resident is the bytes of message data the store itself keeps in
	// memory beyond Pending: 0 for this disk store (queues hold what
	// they read back), every live message for the replicated store
	// (broker/replica). The broker's memory alarm counts it.
	Resident int64
}

// Errors.
var (
	ErrClosed   = errors.New("store: closed")
	ErrNotFound = errors.New("store: no such message")
	ErrTooLarge = errors.New("store: message too large")
)

// CorruptError reports damaged data that recovery will not drop silently.
type CorruptError struct {
	File   string
	Offset int64
	Err    error
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("store: corrupt record in %s at offset %d: %v", e.File, e.Offset, e.Err)
}

func (e *CorruptError) Unwrap() error { return e.Err }

// Commit is the durability of a group of appends: Done is closed after
// the fsync that covers all of them (or after a failure, see Err).
type Commit struct {
	done chan struct{}
	mu   sync.Mutex
	fns  []func(error)
	err  error
}

func newCommit() *Commit { return &Commit{done: make(chan struct{})} }

// NewCommit returns a pending Commit for another Log implementation
// (broker/replica); it completes it once with Complete.
func NewCommit() *Commit { return newCommit() }

// Complete completes a Commit made by NewCommit: Done closes, Err returns
// err and the AfterFunc callbacks run on the caller's goroutine. Call it
// exactly once.
func (c *Commit) Complete(err error) { c.complete(err) }

// DoneCommit returns an already complete, successful Commit.
func DoneCommit() *Commit { return doneCommit }

// Done is closed when the commit is complete.
func (c *Commit) Done() <-chan struct{} { return c.done }

// Err returns nil if the appends are durable, the write or sync error
// otherwise (or ErrClosed). It is meaningful once Done is closed.
func (c *Commit) Err() error {
	<-c.done
	return c.err
}

// Wait waits for the commit and returns Err.
func (c *Commit) Wait() error { return c.Err() }

// AfterFunc arranges for f to run once the commit is complete, with its
// error: on the committer goroutine right after the sync, or at once if the
// commit is already complete. f must be quick and must not wait for another
// Commit.
func (c *Commit) AfterFunc(f func(error)) {
	c.mu.Lock()
	select {
	case <-c.done:
		c.mu.Unlock()
		f(c.err)
		return
	default:
	}
	c.fns = append(c.fns, f)
	c.mu.Unlock()
}

func (c *Commit) complete(err error) {
	c.mu.Lock()
	c.err = err
	fns := c.fns
	c.fns = nil
	close(c.done)
	c.mu.Unlock()
	for _, f := range fns {
		f(err)
	}
}

// doneCommit is an already durable commit (the in-memory store's).
var doneCommit = func() *Commit { c := newCommit(); c.complete(nil); return c }()

// Clock is the committer's time source; tests inject a fake one.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Config configures the segment log.
type Config struct {
	// Dir holds the segment and ack files (DATA/broker/ in production).
	Dir string
	// SegmentSize is the size at which a segment is closed and a new one
	// started (a single larger message gets a segment of its own).
	SegmentSize int64
	// MaxBatchDelay is how long the committer may wait after the first
	// pending append before it writes and syncs, to gather more. Zero:
	// write as soon as the previous sync is done (appends that arrive
	// during a sync still share the next one).
	MaxBatchDelay time.Duration
	// MaxBatchBytes ends the wait early when this much is pending.
	MaxBatchBytes int
	// MaxPendingBytes bounds what appenders may queue ahead of the
	// committer; Append blocks beyond it.
	MaxPendingBytes int
	// Clock is the committer's clock; nil is the real one.
	Clock Clock
	// SyncFile makes f durable; nil calls f.Sync(). Tests hook it to count
	// and order fsyncs or to inject failures. It is called for segment and
	// ack files and for the directory.
	SyncFile func(f File) error
	// FS is the file layer; nil is the operating system's (OSFS). Tests
	// use MemFS to fail writes and to lose unsynced bytes at a crash.
	FS FS
	// Logger receives recovery warnings (a truncated tail); nil discards.
	Logger *slog.Logger
}

// Defaults.
const (
	DefaultSegmentSize     = 64 << 20
	DefaultMaxBatchBytes   = 1 << 20
	DefaultMaxPendingBytes = 64 << 20
	maxSegmentSize         = 1 << 30
)

// NewConfig returns the defaults for dir: 64 MiB segments, no added batch
// delay, 1 MiB batches, 64 MiB pending.
func NewConfig(dir string) Config {
	return Config{Dir: dir, SegmentSize: DefaultSegmentSize, MaxBatchBytes: DefaultMaxBatchBytes,
		MaxPendingBytes: DefaultMaxPendingBytes}
}

// Validate checks c.
func (c *Config) Validate() error {
	switch {
	case c.Dir == "":
		return errors.New("store: no directory")
	case c.SegmentSize < 4096 || c.SegmentSize > maxSegmentSize:
		return fmt.Errorf("store: segment size %d outside [4096, %d]", c.SegmentSize, maxSegmentSize)
	case c.MaxBatchDelay < 0:
		return errors.New("store: negative batch delay")
	case c.MaxBatchBytes <= 0:
		return errors.New("store: batch bytes must be positive")
	case c.MaxPendingBytes < c.MaxBatchBytes:
		return errors.New("store: pending bytes below batch bytes")
	}
	return nil
}
