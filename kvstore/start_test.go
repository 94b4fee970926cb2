package kvstore

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// TestStartGivesUpOnCancelWhileWaitingForQuorum: a member of a
// three-member cluster whose peers never come waits for quorum; cancelling
// Start's context ends the wait within the bound.
func TestStartGivesUpOnCancelWhileWaitingForQuorum(t *testing.T) {
	cfg := NewConfig()
	cfg.Name = "a"
	cfg.DataDir = filepath.Join(t.TempDir(), "etcd")
	cfg.Hosts = []string{"127.0.0.1"}
	cfg.ClientPort, cfg.PeerPort = freePort(t), freePort(t)
	cfg.Vars = map[string]string{
		"ETCD_INITIAL_CLUSTER": fmt.Sprintf("a=http://127.0.0.1:%d,b=http://127.0.0.1:%d,c=http://127.0.0.1:%d", cfg.PeerPort, freePort(t), freePort(t)),
		"ETCD_UNSAFE_NO_FSYNC": "true",
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Start(ctx) }()
	select {
	case err := <-errc:
		t.Fatalf("Start returned without quorum: %v", err)
	case <-time.After(time.Second): // still waiting, as it must
	}
	t0 := time.Now()
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Start: %v", err)
		}
	case <-time.After(abandonWait + 2*time.Second):
		t.Fatal("Start did not return after cancel")
	}
	if d := time.Since(t0); d > time.Second {
		t.Errorf("Start returned %v after cancel", d)
	}
	// etcd's goroutines must be gone before the next test builds a member
	// (etcd's flag table writes package variables they read).
	sctx, scancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer scancel()
	if err := s.Shutdown(sctx); err != nil {
		t.Error(err)
	}
}

// TestStartGivesUpOnCancelWhileWaitingForTheDatabase: a second member on
// a data directory whose database another member holds blocks in etcd
// (bbolt waits for its file lock); cancelling Start returns at once.
func TestStartGivesUpOnCancelWhileWaitingForTheDatabase(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "etcd")
	member := func() *Store {
		cfg := NewConfig()
		cfg.Name = "t1"
		cfg.DataDir = dir
		cfg.Hosts = []string{"127.0.0.1"}
		cfg.ClientPort, cfg.PeerPort = freePort(t), freePort(t)
		cfg.Vars = map[string]string{"ETCD_UNSAFE_NO_FSYNC": "true"}
		s, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	first := member()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := first.Start(ctx); err != nil {
		t.Fatal(err)
	}
	second := member()
	defer func() {
		// The first member lets go of the database, then the second
		// finishes starting in the background and is closed: Shutdown
		// waits for that.
		if err := first.Shutdown(ctx); err != nil {
			t.Error(err)
		}
		if err := second.Shutdown(ctx); err != nil {
			t.Error(err)
		}
	}()

	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	errc := make(chan error, 1)
	go func() { errc <- second.Start(ctx2) }()
	select {
	case err := <-errc:
		// etcd may also refuse at once (a WAL lock); either way Start
		// did not hang.
		t.Logf("second member refused at once: %v", err)
		return
	case <-time.After(time.Second):
	}
	t0 := time.Now()
	cancel2()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Start: %v", err)
		}
		if d := time.Since(t0); d > time.Second {
			t.Errorf("Start returned %v after cancel", d)
		}
	case <-time.After(abandonWait + 2*time.Second):
		t.Fatal("Start did not return after cancel")
	}
}
