package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// storeFiles writes a real store (messages in two queues, an ack, a
// delivery) and returns its first segment and ack file: valid seeds.
func storeFiles(f *testing.F) (seg, ack []byte) {
	dir := f.TempDir()
	s, err := Open(NewConfig(dir))
	if err != nil {
		f.Fatal(err)
	}
	var last *Commit
	var ids []ID
	for i := range 4 {
		id, c, err := s.Append(&Message{Queue: fmt.Sprintf("/\x00q%d", i%2), Exchange: "amq.direct", RoutingKey: "k",
			Props: []byte{0x10, 0, 2}, Body: []byte(fmt.Sprint("body ", i)), Deliveries: uint32(i)})
		if err != nil {
			f.Fatal(err)
		}
		ids, last = append(ids, id), c
	}
	if err := last.Wait(); err != nil {
		f.Fatal(err)
	}
	if err := s.Ack(ids[1]); err != nil {
		f.Fatal(err)
	}
	if err := s.Delivered(ids[2]); err != nil {
		f.Fatal(err)
	}
	if err := s.Close(); err != nil {
		f.Fatal(err)
	}
	seg, err = os.ReadFile(filepath.Join(dir, fmt.Sprintf("%020d.seg", 1)))
	if err != nil {
		f.Fatal(err)
	}
	ack, _ = os.ReadFile(filepath.Join(dir, fmt.Sprintf("%020d.ack", 1)))
	return seg, ack
}

// recoverAll opens dir and returns the recovered entries, checking that
// each one reads back; the store is closed again.
func recoverAll(t *testing.T, dir string, appendOne bool) ([]Entry, error) {
	type result struct {
		ents []Entry
		err  error
	}
	done := make(chan result, 1)
	go func() {
		cfg := NewConfig(dir)
		cfg.SyncFile = func(File) error { return nil } // durability is not under test; speed is
		s, err := Open(cfg)
		if err != nil {
			done <- result{err: err}
			return
		}
		defer s.Close()
		var ents []Entry
		if err := s.Recover(func(e Entry) error { ents = append(ents, e); return nil }); err != nil {
			t.Errorf("Recover after a successful Open: %v", err)
		}
		if s.Len() != len(ents) {
			t.Errorf("Len %d, recovered %d", s.Len(), len(ents))
		}
		for _, e := range ents {
			m, err := s.Read(e.ID)
			if err != nil || m.Queue != e.Queue {
				t.Errorf("recovered %+v does not read back: %v %+v", e, err, m)
			}
		}
		if appendOne {
			id, c, err := s.Append(&Message{Queue: "/\x00new", Body: []byte("after recovery")})
			if err == nil {
				err = c.Wait()
			}
			if err != nil {
				t.Errorf("append after recovery: %v", err)
			}
			ents = append(ents, Entry{ID: id, Queue: "/\x00new"})
		}
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		done <- result{ents: ents}
	}()
	select {
	case r := <-done:
		return r.ents, r.err
	case <-time.After(10 * time.Second):
		t.Fatal("recovery did not finish within 10 s")
		return nil, nil
	}
}

// FuzzRecover: a store directory holding arbitrary segment and ack files
// either fails to open with an error or opens; what it recovers reads
// back, takes a new message, and a second open recovers the same IDs
// plus the new one (a first recovery that truncated a torn tail leaves a
// directory that opens cleanly). Never a panic or a hang.
func FuzzRecover(f *testing.F) {
	seg, ack := storeFiles(f)
	f.Add(seg, ack, []byte(nil))
	f.Add(seg, []byte(nil), []byte(nil))
	f.Add(seg[:len(seg)-3], ack, []byte(nil))                      // torn tail
	f.Add(seg, ack[:len(ack)-2], []byte(nil))                      // torn ack
	f.Add(seg[:8], []byte(nil), seg)                               // empty first segment, a second
	f.Add(seg, ack, seg)                                           // the same IDs twice
	f.Add(seg[:5], []byte(nil), []byte(nil))                       // torn header
	f.Add(append(slices.Clone(seg), seg[8:]...), ack, []byte(nil)) // repeated records
	f.Fuzz(func(t *testing.T, seg1, ack1, seg2 []byte) {
		dir := t.TempDir()
		write := func(name string, b []byte) {
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		write(fmt.Sprintf("%020d.seg", 1), seg1)
		if ack1 != nil {
			write(fmt.Sprintf("%020d.ack", 1), ack1)
		}
		if seg2 != nil {
			write(fmt.Sprintf("%020d.seg", 2), seg2)
		}
		first, err := recoverAll(t, dir, true)
		if err != nil {
			var ce *CorruptError
			if !errors.As(err, &ce) && !errors.Is(err, os.ErrNotExist) {
				t.Logf("open: %v", err) // an I/O error is fine too; say which
			}
			return
		}
		second, err := recoverAll(t, dir, false)
		if err != nil {
			t.Fatalf("reopen after a successful recovery: %v", err)
		}
		ids := func(es []Entry) (out []ID) {
			for _, e := range es {
				out = append(out, e.ID)
			}
			return out
		}
		if !slices.Equal(ids(first), ids(second)) {
			t.Fatalf("first recovery (plus one append) %v, second %v", ids(first), ids(second))
		}
	})
}
