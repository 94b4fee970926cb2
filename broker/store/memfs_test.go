package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// crashModel is what a crash-loop test knows about the store: the
// messages whose Commit completed without error (confirmed) and the acks
// a later completed Commit covers (durable).
type crashModel struct {
	mu        sync.Mutex
	live      map[ID]bool // confirmed (or recovered) and not durably acked
	ackedDone map[ID]bool // durably acked: must never come back
}

// body encodes (publisher, seq) so a recovery can check each publisher's
// order.
func crashBody(pub, seq int) []byte {
	b := make([]byte, 16+seq%200)
	binary.LittleEndian.PutUint64(b, uint64(pub))
	binary.LittleEndian.PutUint64(b[8:], uint64(seq))
	return b
}

// TestMemFSCrashLoop runs the crash loop on MemFS, whose simulated crash
// drops every byte not fsynced and every directory entry not synced (a
// SIGKILL keeps them, so it cannot catch a confirm sent before its
// fsync). Each round: open and recover, check, then publishers append with
// confirms and an acker acks, with write and fsync failures (ENOSPC, EIO)
// injected in some rounds, until a crash at a random moment. Checked after
// every crash: Open succeeds (a failed write never leaves damage that
// recovery refuses), no confirmed message is lost, no durably acked one
// comes back, and each publisher's messages come back in its order.
func TestMemFSCrashLoop(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("SUBSTRATE_CRASH_SEED"); v != "" { // to rerun a failure (timing still varies)
		var err error
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("SUBSTRATE_CRASH_SEED: %v", err)
		}
	}
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 7))
	fsys := NewMemFS()
	cfg := NewConfig("/data/broker")
	cfg.FS = fsys
	cfg.SegmentSize = 8192
	model := &crashModel{live: map[ID]bool{}, ackedDone: map[ID]bool{}}
	rounds := 40
	if testing.Short() {
		rounds = 15
	}
	var faults, failedCommits atomic.Int64
	for round := range rounds {
		// A crash ends the fault: Open must succeed on a working disk
		// (on a failing one it may fail, which is not under test here).
		fsys.SetFault(nil)
		s, err := Open(cfg)
		if err != nil {
			t.Fatalf("round %d: Open after a crash: %v (files %v)", round, err, fsys)
		}
		checkRecovered(t, round, s, model)

		// Faults in every third round: a share of writes, fsyncs and
		// truncations fail, as on a full or failing disk.
		if round%3 == 2 {
			var frng sync.Mutex
			fr := rand.New(rand.NewPCG(seed, uint64(round)))
			fsys.SetFault(func(op, path string) error {
				frng.Lock()
				defer frng.Unlock()
				if (op == "write" || op == "sync" || op == "truncate" || op == "syncdir") && fr.IntN(4) == 0 {
					faults.Add(1)
					if fr.IntN(2) == 0 {
						return syscall.ENOSPC
					}
					return syscall.EIO
				}
				return nil
			})
		}

		stop := make(chan struct{})
		var wg sync.WaitGroup
		for p := range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for seq := round * 100000; ; seq++ {
					select {
					case <-stop:
						return
					default:
					}
					id, c, err := s.Append(&Message{Queue: fmt.Sprint("q", p), Body: crashBody(p, seq)})
					if err != nil {
						return // closed by the crash
					}
					if c.Wait() != nil {
						failedCommits.Add(1)
						continue
					}
					model.mu.Lock()
					model.live[id] = true
					model.mu.Unlock()
				}
			}()
		}
		wg.Add(1)
		go func() { // the acker: acks some live messages, then a commit covers them
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				model.mu.Lock()
				var ids []ID
				for id := range model.live {
					if len(ids) == 5 {
						break
					}
					ids = append(ids, id)
				}
				model.mu.Unlock()
				var acked []ID
				model.mu.Lock()
				for _, id := range ids {
					// Acked: it may or may not come back until a later
					// commit covers the ack.
					delete(model.live, id)
					if s.Ack(id) == nil {
						acked = append(acked, id)
					}
				}
				model.mu.Unlock()
				_, c, err := s.Append(&Message{Queue: "marker", Body: []byte{1}})
				if err != nil {
					return
				}
				if c.Wait() != nil {
					continue
				}
				model.mu.Lock()
				for _, id := range acked {
					model.ackedDone[id] = true
				}
				model.mu.Unlock()
			}
		}()
		d := time.Duration(5+rng.IntN(40)) * time.Millisecond // the crash comes at a random moment
		if round%3 == 2 {
			d += 100 * time.Millisecond // time for failures and recoveries
		}
		time.Sleep(d)
		fsys.Crash() // what was not synced is gone
		s.crash()    // the process is gone
		close(stop)
		wg.Wait()
	}
	fsys.SetFault(nil)
	s := mustOpenFS(t, cfg)
	checkRecovered(t, rounds, s, model)
	s.Close()
	t.Logf("%d rounds, %d faults injected, %d commits failed, %d live, %d acked", rounds, faults.Load(), failedCommits.Load(),
		len(model.live), len(model.ackedDone))
	if failedCommits.Load() == 0 {
		t.Error("no commit failed: the fault rounds tested nothing")
	}
}

func mustOpenFS(t *testing.T, cfg Config) *Disk {
	t.Helper()
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// checkRecovered compares a reopened store with the model, then makes
// every recovered message live (it is durable now).
func checkRecovered(t *testing.T, round int, s *Disk, m *crashModel) {
	t.Helper()
	got := map[ID]bool{}
	lastSeq := map[uint64]uint64{}
	err := s.Recover(func(e Entry) error {
		got[e.ID] = true
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for id := range got { // Recover's fn must not call the store: read after
		msg, err := s.Read(id)
		if err != nil {
			t.Fatalf("round %d: read %d: %v", round, id, err)
		}
		_ = msg
	}
	// Order: recovered in append order, each publisher's sequence rises.
	var order []ID
	s.Recover(func(e Entry) error { order = append(order, e.ID); return nil })
	for _, id := range order {
		msg, _ := s.Read(id)
		if msg.Queue == "marker" || len(msg.Body) < 16 {
			continue
		}
		pub, seq := binary.LittleEndian.Uint64(msg.Body), binary.LittleEndian.Uint64(msg.Body[8:])
		if last, ok := lastSeq[pub]; ok && seq <= last {
			t.Fatalf("round %d: publisher %d: seq %d after %d", round, pub, seq, last)
		}
		lastSeq[pub] = seq
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for id := range m.live {
		if !got[id] {
			t.Fatalf("round %d: confirmed message %d lost", round, id)
		}
	}
	for id := range m.ackedDone {
		if got[id] {
			t.Fatalf("round %d: acked message %d came back", round, id)
		}
	}
	for id := range got {
		m.live[id] = true // durable now, whatever it was before
	}
}

// TestMemFSNoSpace: with writes failing ENOSPC, commits fail (the broker
// nacks) and acks made meanwhile are kept; once space returns the store
// goes on in a new segment, and after a crash that loses everything not
// synced no confirmed message is lost and no acked one returns.
func TestMemFSNoSpace(t *testing.T) {
	fsys := NewMemFS()
	cfg := NewConfig("/data/broker")
	cfg.FS = fsys
	s := mustOpenFS(t, cfg)
	var confirmed []ID
	for i := range 10 {
		id, c, _ := s.Append(msg("q", i, 100))
		waitAll(t, c)
		confirmed = append(confirmed, id)
	}
	segsBefore := s.Stats().Segments
	var full atomic.Bool
	full.Store(true)
	fsys.SetFault(func(op, path string) error {
		if full.Load() && op == "write" {
			return syscall.ENOSPC
		}
		return nil
	})
	var failed []ID
	for i := range 5 {
		id, c, err := s.Append(msg("q", 100+i, 100))
		if err != nil {
			t.Fatalf("Append while the disk is full: %v (must not be sticky)", err)
		}
		if err := c.Wait(); !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("commit on a full disk = %v, want ENOSPC", err)
		}
		failed = append(failed, id)
	}
	for _, id := range confirmed[:5] { // acked while the disk is full
		if err := s.Ack(id); err != nil {
			t.Fatal(err)
		}
	}
	full.Store(false)
	var later []ID
	var c *Commit
	for i := range 5 {
		var id ID
		var err error
		id, c, err = s.Append(msg("q", 200+i, 100))
		if err != nil {
			t.Fatal(err)
		}
		later = append(later, id)
	}
	waitAll(t, c)
	if n := s.Stats().Segments; n <= segsBefore {
		t.Errorf("segments %d -> %d: writing should go on in a new segment", segsBefore, n)
	}
	fsys.Crash()
	s.crash()
	s = mustOpenFS(t, cfg)
	defer s.Close()
	got := map[ID]bool{}
	for _, e := range recovered(t, s) {
		got[e.ID] = true
	}
	for _, id := range confirmed[:5] {
		if got[id] {
			t.Errorf("message %d acked during the failure came back", id)
		}
	}
	for _, id := range append(confirmed[5:], later...) {
		if !got[id] {
			t.Errorf("confirmed message %d lost", id)
		}
	}
	for _, id := range failed {
		if got[id] {
			t.Errorf("message %d whose write failed came back (its torn record should be cut)", id)
		}
	}
}

// TestMemFSDropsUnsynced checks the test double itself: a crash keeps
// synced bytes and synced directory entries only.
func TestMemFSDropsUnsynced(t *testing.T) {
	fsys := NewMemFS()
	fsys.MkdirAll("/d")
	f, _ := fsys.OpenFile("/d/a", os.O_RDWR|os.O_CREATE)
	f.WriteAt([]byte("synced"), 0)
	f.Sync()
	d, _ := fsys.OpenDir("/d")
	d.Sync()
	f.WriteAt([]byte("-lost"), 6)
	g, _ := fsys.OpenFile("/d/b", os.O_RDWR|os.O_CREATE) // its entry is never synced
	g.WriteAt([]byte("x"), 0)
	g.Sync()
	fsys.Crash()
	if b, err := fsys.ReadFile("/d/a"); err != nil || string(b) != "synced" {
		t.Fatalf("a = %q, %v", b, err)
	}
	if _, err := fsys.ReadFile("/d/b"); err == nil {
		t.Fatal("b survived without a directory sync")
	}
	if _, err := f.WriteAt([]byte("z"), 0); !errors.Is(err, ErrCrashed) {
		t.Fatalf("write through a handle from before the crash = %v", err)
	}
}

// TestMemFSRecoveredIsDurable: what Open recovers must survive a later
// power loss. A process crash (not a power loss) leaves in the page cache
// a segment whose write went through but whose fsync failed, and whose
// directory entry was never synced; Open recovers its message, so the
// message is the broker's from then on (it is in a queue, maybe
// delivered). A power loss before the store next syncs the directory
// must not take it back. Found by the crash loop: its crashed store, still
// running, created such a segment after MemFS.Crash, the next Open
// recovered it, and a fault round that never synced the directory lost
// it at the following crash.
func TestMemFSRecoveredIsDurable(t *testing.T) {
	fsys := NewMemFS()
	cfg := NewConfig("/data/broker")
	cfg.FS = fsys
	cfg.Clock = newFakeClock() // never advanced: the retry that would repair segment 2 waits
	s := mustOpenFS(t, cfg)
	id1, c, _ := s.Append(msg("q", 1, 100))
	waitAll(t, c) // segment 1, synced, its entry synced
	s.crash()
	s = mustOpenFS(t, cfg) // writes go on in segment 2
	seg2 := s.segPath(2)
	fsys.SetFault(func(op, path string) error {
		if op == "sync" && path == seg2 {
			return syscall.EIO
		}
		return nil
	})
	id2, c, _ := s.Append(msg("q", 2, 100))
	if err := c.Wait(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("commit with a failing fsync = %v", err)
	}
	s.crash() // a process crash: segment 2 stays, unsynced, before its repair
	fsys.SetFault(nil)
	if _, err := fsys.ReadFile(seg2); err != nil {
		t.Fatalf("segment 2 should still be there after a process crash: %v", err)
	}

	s = mustOpenFS(t, cfg)
	got := map[ID]bool{}
	for _, e := range recovered(t, s) {
		got[e.ID] = true
	}
	if !got[id1] || !got[id2] {
		t.Fatalf("recovered %v, want %d and %d (the page cache still held %d)", got, id1, id2, id2)
	}
	fsys.Crash() // power loss before the store synced anything else
	s.crash()
	s = mustOpenFS(t, cfg)
	defer s.Close()
	got = map[ID]bool{}
	for _, e := range recovered(t, s) {
		got[e.ID] = true
	}
	if !got[id1] || !got[id2] {
		t.Errorf("after a power loss: recovered %v, want %d and %d: Open had recovered %d, so it must have made it durable",
			got, id1, id2, id2)
	}
}

// TestMemFSAckFileEntrySynced: when the directory sync after an ack file's
// creation fails, the retry (which finds the file open) must still sync
// the directory before a later Commit completes: acks made before a
// completed Commit are durable, so a power loss must not bring m1 back.
func TestMemFSAckFileEntrySynced(t *testing.T) {
	fsys := NewMemFS()
	clk := newFakeClock()
	cfg := NewConfig("/data/broker")
	cfg.FS, cfg.Clock = fsys, clk
	s := mustOpenFS(t, cfg)
	id1, c, _ := s.Append(msg("q", 1, 100))
	waitAll(t, c)
	var fail atomic.Bool
	var failed atomic.Int64
	fail.Store(true)
	fsys.SetFault(func(op, path string) error {
		if op == "syncdir" && fail.Load() {
			failed.Add(1)
			return syscall.EIO
		}
		return nil
	})
	if err := s.Ack(id1); err != nil { // the ack file is created, its entry not synced
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for failed.Load() == 0 { // the ack file is written and synced, the directory sync failed
		if time.Now().After(deadline) {
			t.Fatal("the ack was never written")
		}
		time.Sleep(time.Millisecond)
	}
	fail.Store(false)
	_, c, _ = s.Append(msg("q", 2, 100)) // same segment: creates no file
	for done := false; !done; {
		clk.Advance(time.Second) // the retry delay
		select {
		case <-c.Done():
			done = true
		case <-time.After(time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("commit after the failure never completed")
		}
	}
	if err := c.Err(); err != nil {
		t.Fatalf("commit after the disk recovered: %v", err)
	}
	fsys.Crash() // power loss
	s.crash()
	s = mustOpenFS(t, cfg)
	defer s.Close()
	for _, e := range recovered(t, s) {
		if e.ID == id1 {
			t.Fatalf("message %d, acked before a completed Commit, came back: its ack file's entry was never synced", id1)
		}
	}
}
