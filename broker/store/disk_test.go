package store

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// TestGroupCommit: 1,000 appends from 50 goroutines share far fewer than
// 1,000 fsyncs, and every Commit completes only after the sync covering its
// message (checked on Done and in AfterFunc).
func TestGroupCommit(t *testing.T) {
	r := newSyncRec()
	r.delay = time.Millisecond // a disk with some latency
	s := mustOpen(t, testConfig(t.TempDir(), r))
	defer s.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 2000)
	checkCovered := func(id ID, when string) {
		path, _, end := s.location(id)
		if got := r.synced(path); got < end {
			errs <- fmt.Errorf("%s: message %d ends at %d of %s, sync covered only %d", when, id, end, path, got)
		}
	}
	for g := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				id, c, err := s.Append(msg("q", g*100+i, 100))
				if err != nil {
					errs <- err
					return
				}
				done := make(chan struct{})
				c.AfterFunc(func(err error) {
					if err == nil {
						checkCovered(id, "AfterFunc")
					}
					close(done)
				})
				if err := c.Wait(); err != nil {
					errs <- err
					return
				}
				checkCovered(id, "Done")
				<-done
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	n := r.count()
	t.Logf("1000 appends, %d fsyncs", n)
	if n >= 250 {
		t.Fatalf("%d fsyncs for 1000 appends: not grouped", n)
	}
	if s.Len() != 1000 {
		t.Fatalf("Len = %d", s.Len())
	}
}

// TestBatchDelay: with MaxBatchDelay the committer waits on the injected
// clock, unless MaxBatchBytes is reached first; a pending message can be
// read before it is written.
func TestBatchDelay(t *testing.T) {
	clk := newFakeClock()
	r := newSyncRec()
	cfg := testConfig(t.TempDir(), r)
	cfg.Clock, cfg.MaxBatchDelay, cfg.MaxBatchBytes = clk, 10*time.Millisecond, 4096
	s := mustOpen(t, cfg)
	defer s.Close()
	id1, c1, _ := s.Append(msg("q", 1, 100))
	id2, c2, _ := s.Append(msg("q", 2, 100))
	if c1 != c2 {
		t.Fatal("appends in one batch do not share a Commit")
	}
	waitFor(t, func() bool { return clk.numWaiters() == 1 })
	if m, err := s.Read(id2); err != nil || m.Body[0] != 2 {
		t.Fatalf("Read pending = %v, %v", m, err)
	}
	clk.Advance(9 * time.Millisecond)
	select {
	case <-c1.Done():
		t.Fatal("committed before the delay")
	case <-time.After(20 * time.Millisecond):
	}
	if r.count() != 0 {
		t.Fatal("synced before the delay")
	}
	clk.Advance(time.Millisecond)
	waitAll(t, c1)
	if r.count() == 0 {
		t.Fatal("done without a sync")
	}
	if m, err := s.Read(id1); err != nil || m.Body[0] != 1 {
		t.Fatalf("Read = %v, %v", m, err)
	}
	// A full batch goes at once, without the clock: the first append waits
	// for the delay, the second fills the batch.
	_, c3, _ := s.Append(msg("q", 3, 3000))
	_, c4, _ := s.Append(msg("q", 4, 3000))
	if c3 != c4 {
		t.Fatal("committed before the delay or the batch size")
	}
	waitAll(t, c3)
	_, c5, _ := s.Append(msg("q", 5, 5000)) // alone larger than a batch
	waitAll(t, c5)
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestSyncFailure: a failed fsync fails the Commit that covered it, and
// is not sticky: while syncs fail every commit fails, once they work again
// appends commit, in a new segment, and a reopen finds every confirmed
// message, none of the failed ones (their records were cut) and no acked
// one.
func TestSyncFailure(t *testing.T) {
	r := newSyncRec()
	dir := t.TempDir()
	cfg := testConfig(dir, r)
	s := mustOpen(t, cfg)
	id1, c, _ := s.Append(msg("q", 1, 10))
	waitAll(t, c)
	boom := errors.New("boom")
	setFail := func(err error) {
		r.mu.Lock()
		r.fail = err
		r.mu.Unlock()
	}
	setFail(boom)
	id2, c, _ := s.Append(msg("q", 2, 10))
	if err := c.Wait(); !errors.Is(err, boom) {
		t.Fatalf("Commit error = %v", err)
	}
	if err := s.Ack(id1); err != nil { // recorded while the disk fails
		t.Fatal(err)
	}
	id3, c, err := s.Append(msg("q", 3, 10))
	if err != nil {
		t.Fatalf("Append after a failure = %v: the failure must not be sticky", err)
	}
	if err := c.Wait(); !errors.Is(err, boom) {
		t.Fatalf("Commit while syncs fail = %v", err)
	}
	setFail(nil)
	id4, c, err := s.Append(msg("q", 4, 10))
	if err != nil {
		t.Fatal(err)
	}
	waitAll(t, c)
	if m, err := s.Read(id4); err != nil || m.Body[0] != 4 {
		t.Fatalf("Read after recovery = %v, %v", m, err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	s = mustOpen(t, cfg)
	defer s.Close()
	got := map[ID]bool{}
	for _, e := range recovered(t, s) {
		got[e.ID] = true
	}
	if got[id1] || got[id2] || got[id3] || !got[id4] || len(got) != 1 {
		t.Fatalf("recovered %v; want only %d (acked %d, failed %d %d)", got, id4, id1, id2, id3)
	}
}

// TestAckDeletesSegments: acking a segment's messages removes its files, and
// acking everything brings disk use back to (almost) nothing.
func TestAckDeletesSegments(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir, nil)
	cfg.SegmentSize = 4096
	s := mustOpen(t, cfg)
	var ids []ID
	var cs []*Commit
	for i := range 400 {
		id, c, err := s.Append(msg(fmt.Sprint("q", i%4), i, 200))
		if err != nil {
			t.Fatal(err)
		}
		ids, cs = append(ids, id), append(cs, c)
	}
	waitAll(t, cs...)
	full := dirBytes(t, dir)
	first, _, _ := s.location(ids[0])
	t.Logf("%d segments, %d bytes", len(listFiles(t, dir)), full)
	if full < 400*200 {
		t.Fatalf("only %d bytes on disk", full)
	}
	// Ack the first segment's messages: its file goes.
	for _, id := range ids {
		if p, _, _ := s.location(id); p != first {
			break
		}
		s.Ack(id)
	}
	_, c, _ := s.Append(msg("q", 0, 1)) // a commit cycle after the acks
	waitAll(t, c)
	if _, err := os.Stat(first); !os.IsNotExist(err) {
		t.Fatalf("fully acknowledged %s still there: %v", first, err)
	}
	if _, _, err := s.DropQueue("q"); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		s.Ack(id)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if n := dirBytes(t, dir); n > cfg.SegmentSize+1024 {
		t.Fatalf("%d bytes left after acking everything (was %d)", n, full)
	}
	s = mustOpen(t, cfg) // the last segment is sealed and empty: removed
	_, c, _ = s.Append(msg("q", 0, 0))
	waitAll(t, c)
	s.Ack(1 << 30)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if n := dirBytes(t, dir); n > 100 {
		t.Fatalf("%d bytes left, files %v", n, listFiles(t, dir))
	}
}

// TestCrash: the process dies without Close (pending appends never
// written), then the machine loses what was not synced. Every confirmed
// message comes back, no acked one whose ack preceded a later confirm.
func TestCrash(t *testing.T) {
	for _, powerLoss := range []bool{false, true} {
		t.Run(fmt.Sprint("powerLoss=", powerLoss), func(t *testing.T) {
			dir := t.TempDir()
			r := newSyncRec()
			cfg := testConfig(dir, r)
			cfg.SegmentSize = 8192
			s := mustOpen(t, cfg)
			confirmed := map[ID]bool{}
			var mu sync.Mutex
			var wg sync.WaitGroup
			for g := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range 50 {
						id, c, err := s.Append(msg(fmt.Sprint("q", g), i, 50+i))
						if err != nil {
							t.Error(err)
							return
						}
						if c.Wait() == nil {
							mu.Lock()
							confirmed[id] = true
							mu.Unlock()
						}
					}
				}()
			}
			wg.Wait()
			acked := map[ID]bool{}
			for id := range confirmed {
				if id%3 == 0 {
					s.Ack(id)
					acked[id] = true
				} else if id%3 == 1 {
					s.Delivered(id)
				}
			}
			_, c, _ := s.Append(msg("late", 0, 10)) // covers the acks above
			waitAll(t, c)
			// In flight at the crash: written, but the fsync never happens.
			r.mu.Lock()
			r.fail = errors.New("crashed before fsync")
			r.mu.Unlock()
			for i := range 20 {
				s.Append(msg("lost", i, 100))
			}
			s.crash()
			if powerLoss {
				r.powerLoss(t, dir)
			}
			r.mu.Lock()
			r.fail = nil // restarted: the disk works (Open syncs what it recovered)
			r.mu.Unlock()
			s = mustOpen(t, cfg)
			defer s.Close()
			got := map[ID]Entry{}
			for _, e := range recovered(t, s) {
				got[e.ID] = e
			}
			for id := range confirmed {
				e, ok := got[id]
				switch {
				case acked[id] && ok:
					t.Fatalf("acked %d came back", id)
				case !acked[id] && !ok:
					t.Fatalf("confirmed %d lost", id)
				case ok && !e.Redelivered:
					// After a crash any message may have been handed out
					// without its delivery record reaching the disk.
					t.Fatalf("%d not redelivered after a crash", id)
				}
				if ok {
					if _, err := s.Read(id); err != nil {
						t.Fatal(err)
					}
				}
			}
			for id, e := range got {
				if !confirmed[id] && e.Queue != "late" && e.Queue != "lost" {
					t.Fatalf("unknown message %d %+v", id, e)
				}
			}
		})
	}
}

// buildLog writes n messages, one commit each (so each record starts a
// write), closes, and returns the directory and every record's extent in
// the last segment.
func buildLog(t *testing.T, n int, segSize int64) (string, Config, []ID) {
	t.Helper()
	dir := t.TempDir()
	cfg := testConfig(dir, nil)
	cfg.SegmentSize = segSize
	s := mustOpen(t, cfg)
	var ids []ID
	for i := range n {
		id, c, err := s.Append(msg("q", i, 30+i%17))
		if err != nil {
			t.Fatal(err)
		}
		waitAll(t, c)
		ids = append(ids, id)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return dir, cfg, ids
}

// extents decodes a segment file into record [start, end) offsets.
func extents(t *testing.T, path string) [][2]int64 {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var ex [][2]int64
	for off := fileHeaderSize; off < len(data); {
		_, _, n, err := decodeRecord(data[off:])
		if err != nil {
			t.Fatalf("%s at %d: %v", path, off, err)
		}
		ex = append(ex, [2]int64{int64(off), int64(off + n)})
		off += n
	}
	return ex
}

func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	for _, name := range listFiles(t, src) {
		b, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, name), b, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

func segFiles(t *testing.T, dir string) []string {
	var segs []string
	for _, n := range listFiles(t, dir) {
		if filepath.Ext(n) == ".seg" {
			segs = append(segs, filepath.Join(dir, n))
		}
	}
	return segs
}

// reopenIDs opens dir and returns the recovered IDs; the store is closed.
func reopenIDs(t *testing.T, cfg Config, dir string) ([]ID, error) {
	t.Helper()
	cfg.Dir = dir
	s, err := Open(cfg)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	var ids []ID
	for _, e := range recovered(t, s) {
		if _, err := s.Read(e.ID); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, e.ID)
	}
	return ids, nil
}

// TestTornTail cuts the last segment at every byte of its last record and
// at random offsets: recovery keeps exactly the whole records before the
// cut and truncates the file there.
func TestTornTail(t *testing.T) {
	src, cfg, ids := buildLog(t, 120, 4096)
	segs := segFiles(t, src)
	if len(segs) < 2 {
		t.Fatalf("want several segments, got %d", len(segs))
	}
	last := segs[len(segs)-1]
	ex := extents(t, last)
	before := len(ids) - len(ex) // messages in earlier segments
	try := func(cut int64) {
		t.Helper()
		dir := copyDir(t, src)
		path := filepath.Join(dir, filepath.Base(last))
		if err := os.Truncate(path, cut); err != nil {
			t.Fatal(err)
		}
		whole := 0
		for _, e := range ex {
			if e[1] <= cut {
				whole++
			}
		}
		got, err := reopenIDs(t, cfg, dir)
		if err != nil {
			t.Fatalf("cut at %d: %v", cut, err)
		}
		want := ids[:before+whole]
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("cut at %d: recovered %d messages, want %d", cut, len(got), len(want))
		}
		fi, err := os.Stat(path)
		switch {
		case cut < fileHeaderSize:
			if !os.IsNotExist(err) {
				t.Fatalf("cut at %d: torn empty segment kept", cut)
			}
		case whole == 0:
			if !os.IsNotExist(err) {
				t.Fatalf("cut at %d: segment without messages kept", cut)
			}
		case err != nil:
			t.Fatal(err)
		case fi.Size() != ex[whole-1][1]:
			t.Fatalf("cut at %d: file is %d bytes, want %d", cut, fi.Size(), ex[whole-1][1])
		}
	}
	lastRec := ex[len(ex)-1]
	for cut := lastRec[0]; cut < lastRec[1]; cut++ {
		try(cut)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 40 {
		try(rng.Int64N(lastRec[1]))
	}
}

// TestBitFlipTail: a damaged last record is a torn tail.
func TestBitFlipTail(t *testing.T) {
	src, cfg, ids := buildLog(t, 20, 1<<20)
	last := segFiles(t, src)[0]
	ex := extents(t, last)
	rec := ex[len(ex)-1]
	for _, at := range []int64{rec[0], rec[0] + 5, rec[0] + 8, rec[0] + 12, rec[1] - 1} {
		dir := copyDir(t, src)
		path := filepath.Join(dir, filepath.Base(last))
		flip(t, path, at)
		got, err := reopenIDs(t, cfg, dir)
		if err != nil {
			t.Fatalf("flip at %d: %v", at, err)
		}
		if fmt.Sprint(got) != fmt.Sprint(ids[:len(ids)-1]) {
			t.Fatalf("flip at %d: recovered %v", at, got)
		}
		if fi, _ := os.Stat(path); fi.Size() != rec[0] {
			t.Fatalf("flip at %d: size %d, want %d", at, fi.Size(), rec[0])
		}
	}
}

// TestBitFlipMiddle: damage before later synced writes is an error naming
// the file and offset, in an earlier segment or in the last one.
func TestBitFlipMiddle(t *testing.T) {
	src, cfg, _ := buildLog(t, 120, 4096)
	segs := segFiles(t, src)
	for _, seg := range []string{segs[0], segs[len(segs)-1]} {
		ex := extents(t, seg)
		at := ex[1][0] + 20
		dir := copyDir(t, src)
		path := filepath.Join(dir, filepath.Base(seg))
		flip(t, path, at)
		_, err := reopenIDs(t, cfg, dir)
		var ce *CorruptError
		if !errors.As(err, &ce) || ce.File != path || ce.Offset != ex[1][0] {
			t.Fatalf("flip in %s: err = %v, want CorruptError at %d", path, err, ex[1][0])
		}
		t.Log(err)
	}
}

func flip(t *testing.T, path string, at int64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[at] ^= 0x10
	if err := os.WriteFile(path, b, 0o640); err != nil {
		t.Fatal(err)
	}
}

// TestTornAckFile: a damaged ack file tail loses acks, never messages.
func TestTornAckFile(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir, nil)
	s := mustOpen(t, cfg)
	var ids []ID
	for i := range 10 {
		id, c, _ := s.Append(msg("q", i, 10))
		waitAll(t, c)
		ids = append(ids, id)
	}
	for _, id := range ids[:4] {
		s.Ack(id)
		_, c, _ := s.Append(msg("x", 0, 1)) // one ack record per cycle
		waitAll(t, c)
	}
	s.Close()
	var ack string
	for _, n := range listFiles(t, dir) {
		if filepath.Ext(n) == ".ack" {
			ack = filepath.Join(dir, n)
		}
	}
	fi, err := os.Stat(ack)
	if err != nil {
		t.Fatal(err)
	}
	os.Truncate(ack, fi.Size()-3)
	got, err := reopenIDs(t, cfg, dir)
	if err != nil {
		t.Fatal(err)
	}
	if got[0] != ids[3] {
		t.Fatalf("recovered %v: want the last ack lost, the others kept", got)
	}
}

func TestOpenLocked(t *testing.T) {
	cfg := testConfig(t.TempDir(), nil)
	s := mustOpen(t, cfg)
	defer s.Close()
	if _, err := Open(cfg); err == nil {
		t.Fatal("second Open of one directory succeeded")
	}
}

// BenchmarkAppendSync measures durable appends on this machine's disk:
// publishers each append a 1 KiB message and wait for its Commit, as a
// publisher waiting for a confirm does.
func BenchmarkAppendSync(b *testing.B) {
	for _, pubs := range []int{1, 64} {
		b.Run(fmt.Sprint("publishers=", pubs), func(b *testing.B) {
			r := newSyncRec()
			s := mustOpen(b, testConfig(b.TempDir(), r))
			defer s.Close()
			m := msg("q", 0, 1024)
			b.SetBytes(1024)
			var next sync.WaitGroup
			work := make(chan struct{}, b.N)
			for range b.N {
				work <- struct{}{}
			}
			close(work)
			b.ResetTimer()
			start := time.Now()
			for range pubs {
				next.Go(func() {
					for range work {
						_, c, err := s.Append(m)
						if err == nil {
							err = c.Wait()
						}
						if err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			next.Wait()
			sec := time.Since(start).Seconds()
			b.ReportMetric(float64(b.N)/sec, "appends/s")
			b.ReportMetric(float64(r.count())/sec, "fsyncs/s")
		})
	}
}

// TestConcurrentReadAck runs appenders, readers and ackers together on
// small segments, so Reads race with segment removal (run with -race).
func TestConcurrentReadAck(t *testing.T) {
	cfg := testConfig(t.TempDir(), nil)
	cfg.SegmentSize = 4096
	s := mustOpen(t, cfg)
	defer s.Close()
	ids := make(chan ID, 4096)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 300 {
				id, c, err := s.Append(msg("q", g*1000+i, 100))
				if err != nil {
					t.Error(err)
					return
				}
				if i%50 == 0 {
					c.Wait()
				}
				ids <- id
			}
		})
	}
	done := make(chan struct{})
	var rw sync.WaitGroup
	for range 3 {
		rw.Go(func() {
			for {
				select {
				case id := <-ids:
					m, err := s.Read(id)
					if err != nil && !errors.Is(err, ErrNotFound) {
						t.Error(err)
						return
					}
					if err == nil && len(m.Body) != 100 {
						t.Errorf("Read(%d): body %d bytes", id, len(m.Body))
					}
					if err := s.Ack(id); err != nil {
						t.Error(err)
						return
					}
				case <-done:
					return
				}
			}
		})
	}
	wg.Wait()
	waitFor(t, func() bool { return len(ids) == 0 && s.Len() == 0 })
	close(done)
	rw.Wait()
}

// blockingSync is a SyncFile hook that holds every fsync until released.
type blockingSync struct {
	entered chan struct{}
	release chan struct{}
}

func newBlockingSync() *blockingSync {
	return &blockingSync{entered: make(chan struct{}, 100), release: make(chan struct{})}
}

func (b *blockingSync) sync(f File) error {
	b.entered <- struct{}{}
	<-b.release
	return nil
}

// TestReadInflightAndBackpressure: while an fsync hangs, the batch being
// written is readable, and appenders stop at MaxPendingBytes.
func TestReadInflightAndBackpressure(t *testing.T) {
	bs := newBlockingSync()
	cfg := testConfig(t.TempDir(), nil)
	cfg.SyncFile, cfg.MaxBatchBytes, cfg.MaxPendingBytes = bs.sync, 4096, 8192
	s := mustOpen(t, cfg)
	id, c, _ := s.Append(msg("q", 7, 100))
	<-bs.entered // the committer is syncing id's batch
	if p := s.Stats().Pending; p < 100 {
		t.Fatalf("Stats.Pending = %d while a 100-byte message is being written", p)
	}
	if m, err := s.Read(id); err != nil || m.Body[0] != 7 {
		t.Fatalf("Read inflight = %v, %v", m, err)
	}
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for i := range 20 {
			if _, _, err := s.Append(msg("q", i, 1000)); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	select {
	case <-finished:
		t.Fatal("20 KB appended while 8 KB may wait")
	case <-time.After(50 * time.Millisecond):
	}
	select {
	case <-c.Done():
		t.Fatal("committed before its fsync returned")
	default:
	}
	close(bs.release)
	<-finished
	waitAll(t, c)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestTornHeader: a last segment whose header is damaged is a torn first
// write if nothing was written after it, damage otherwise.
func TestTornHeader(t *testing.T) {
	// One write: three messages in one batch.
	dir := t.TempDir()
	cfg := testConfig(dir, nil)
	cfg.MaxBatchDelay, cfg.Clock = time.Hour, newFakeClock()
	s := mustOpen(t, cfg)
	for i := range 3 {
		s.Append(msg("q", i, 10))
	}
	s.Close() // flushes the one batch
	cfg.MaxBatchDelay, cfg.Clock = 0, nil
	path := segFiles(t, dir)[0]
	if n := len(extents(t, path)); n != 3 {
		t.Fatalf("%d records", n)
	}
	zeroHeader(t, path)
	if ids, err := reopenIDs(t, cfg, dir); err != nil || len(ids) != 0 {
		t.Fatalf("torn first write: %v, %v", ids, err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatal("torn segment kept")
	}

	// Later writes follow: the header was synced before them.
	src, cfg2, _ := buildLog(t, 5, 1<<20)
	path = segFiles(t, src)[0]
	zeroHeader(t, path)
	_, err := reopenIDs(t, cfg2, src)
	var ce *CorruptError
	if !errors.As(err, &ce) || ce.File != path || ce.Offset != 0 {
		t.Fatalf("err = %v, want CorruptError at 0", err)
	}
}

func zeroHeader(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(make([]byte, fileHeaderSize), 0); err != nil {
		t.Fatal(err)
	}
}

// TestRedeliveredAfterCleanAndUncleanStop: after Close only recorded
// deliveries mark a message redelivered; after a crash every recovered
// message is, while messages appended since Open are not.
func TestRedeliveredAfterCleanAndUncleanStop(t *testing.T) {
	dir := t.TempDir()
	cfg := NewConfig(dir)
	s := mustOpen(t, cfg)
	var ids []ID
	for i := 0; i < 3; i++ {
		id, c, err := s.Append(&Message{Queue: "q", Body: []byte{byte(i)}})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Wait(); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if err := s.Delivered(ids[1]); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	flags := func(s *Disk) map[ID]bool {
		m := map[ID]bool{}
		for _, e := range recovered(t, s) {
			m[e.ID] = e.Redelivered
		}
		return m
	}
	s = mustOpen(t, cfg)
	if got := flags(s); got[ids[0]] || !got[ids[1]] || got[ids[2]] {
		t.Fatalf("after a clean stop: %v, want only %d redelivered", got, ids[1])
	}
	s.crash()
	s = mustOpen(t, cfg)
	id, c, err := s.Append(&Message{Queue: "q", Body: []byte("new")})
	if err != nil || c.Wait() != nil {
		t.Fatal(err)
	}
	got := flags(s)
	if !got[ids[0]] || !got[ids[1]] || !got[ids[2]] || got[id] {
		t.Fatalf("after a crash: %v, want the 3 recovered redelivered and %d not", got, id)
	}
	s.Close()
}

// TestDropQueueDurableAtCommit: once DropQueue's commit is done, a crash
// does not bring the queue's messages back.
func TestDropQueueDurableAtCommit(t *testing.T) {
	cfg := NewConfig(t.TempDir())
	s := mustOpen(t, cfg)
	for i := 0; i < 5; i++ {
		_, c, err := s.Append(&Message{Queue: "gone", Body: []byte{byte(i)}})
		if err != nil || c.Wait() != nil {
			t.Fatal(err)
		}
	}
	_, c, err := s.Append(&Message{Queue: "kept", Body: []byte("k")})
	if err != nil || c.Wait() != nil {
		t.Fatal(err)
	}
	n, c, err := s.DropQueue("gone")
	if err != nil || n != 5 || c == nil {
		t.Fatalf("DropQueue = %d, %v, %v", n, c, err)
	}
	if err := c.Wait(); err != nil {
		t.Fatal(err)
	}
	s.crash()
	s = mustOpen(t, cfg)
	defer s.Close()
	for _, e := range recovered(t, s) {
		if e.Queue != "kept" {
			t.Fatalf("dropped queue's message %d came back after a crash", e.ID)
		}
	}
	if s.Len() != 1 {
		t.Fatalf("%d live, want 1", s.Len())
	}
}

// TestReadHead covers the head read's cases: a head that fits in
// headRead, one that does not (long properties), a record shorter than
// headRead, and a record still waiting for the committer.
func TestReadHead(t *testing.T) {
	cfg := NewConfig(t.TempDir())
	cfg.MaxBatchDelay = time.Hour // keep the appends pending until the clock moves
	clk := newFakeClock()
	cfg.Clock = clk
	s := mustOpen(t, cfg)
	defer s.Close()
	long := bytes.Repeat([]byte("p"), 2*headRead)
	msgs := []*Message{
		{Queue: "q", Exchange: "x", RoutingKey: "rk", Props: []byte{1, 2, 3}, Body: bytes.Repeat([]byte("b"), 4*headRead)},
		{Queue: "q", Exchange: "x", RoutingKey: "rk", Props: long, Body: []byte("body")},
		{Queue: "q", Body: []byte("tiny")},
	}
	for _, pending := range []bool{true, false} {
		var ids []ID
		var last *Commit
		for _, m := range msgs {
			id, c, err := s.Append(m)
			if err != nil {
				t.Fatal(err)
			}
			ids, last = append(ids, id), c
		}
		if !pending {
			for clk.numWaiters() == 0 {
				time.Sleep(time.Millisecond)
			}
			clk.Advance(time.Hour)
			if err := last.Wait(); err != nil {
				t.Fatal(err)
			}
		}
		for i, id := range ids {
			h, n, err := s.ReadHead(id)
			if err != nil {
				t.Fatalf("pending %v, message %d: %v", pending, i, err)
			}
			m := msgs[i]
			if h.Exchange != m.Exchange || h.RoutingKey != m.RoutingKey || !bytes.Equal(h.Props, m.Props) || h.Body != nil || n != len(m.Body) {
				t.Fatalf("pending %v, message %d: ReadHead = %+v, %d", pending, i, h, n)
			}
		}
	}
}

// TestPurgeFreesTail: acknowledging every message of the tail segment
// removes it once it holds emptyTailRotate bytes, so a purge gives the
// disk space back (the disk alarm can clear) without waiting for the
// segment to fill.
func TestPurgeFreesTail(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir, nil)
	s := mustOpen(t, cfg)
	defer s.Close()
	var ids []ID
	var c *Commit
	for i := range 300 {
		var id ID
		id, c, _ = s.Append(msg("q", i, 10_000))
		ids = append(ids, id)
	}
	waitAll(t, c)
	if n := dirBytes(t, dir); n < 3_000_000 {
		t.Fatalf("%d bytes on disk", n)
	}
	if _, c, _ = s.DropQueue("q"); c == nil {
		t.Fatal("nothing dropped")
	}
	waitAll(t, c)
	if n := dirBytes(t, dir); n > 4096 {
		t.Fatalf("%d bytes left after dropping every message (files %v)", n, listFiles(t, dir))
	}
	id, c, _ := s.Append(msg("q", 1, 10)) // writing goes on in a new segment
	waitAll(t, c)
	if m, err := s.Read(id); err != nil || m.Body[0] != 1 {
		t.Fatalf("Read = %v, %v", m, err)
	}
}
