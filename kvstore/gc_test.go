package kvstore

import (
	"context"
	"fmt"
	"runtime/metrics"
	"sync"
	"testing"
	"time"
)

func gogc(t *testing.T) int {
	t.Helper()
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return int(s[0].Value.Uint64())
}

func TestGCPercentFor(t *testing.T) {
	for _, c := range []struct {
		live uint64
		want int
	}{
		{0, maxGCPercent},
		{1 << 20, maxGCPercent},       // 32 MiB over 1 MiB live: 3200%, capped
		{8 << 20, 400},                // 8 MiB live may grow by 32 MiB
		{gcHeadroom, 100},             // never below Go's default
		{256 << 20, 100},              // a large heap already has the headroom
		{gcHeadroom * 100 / 150, 150}, // about 21 MiB live
	} {
		if got := gcPercentFor(c.live); got != c.want {
			t.Errorf("gcPercentFor(%d) = %d, want %d", c.live, got, c.want)
		}
	}
}

// TestGCHeadroomWhileWriting: a member applying writes at the busy rate
// raises GOGC (the heap of a test process is far below gcHeadroom); once
// the writes stop it goes back to 100 within a few ticks, and stays 100
// after Shutdown.
func TestGCHeadroomWhileWriting(t *testing.T) {
	if !gcTunable() {
		t.Skip("GOGC is set in the environment: substrate leaves it alone (as this test would check nothing)")
	}
	if g := gogc(t); g != 100 {
		t.Fatalf("GOGC %d before any member started", g)
	}
	old := gcBusyRate
	gcBusyRate = 50 // reachable under -race on a busy host
	defer func() { gcBusyRate = old }()

	s := startMember(t, "gc", nil)
	kv := s.KV()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				kv.Put(ctx, fmt.Sprintf("gc/%d/%d", w, i%100), "v")
			}
		}()
	}
	raised := waitGOGC(t, 15*time.Second, func(g int) bool { return g > 100 })
	cancel()
	wg.Wait()
	if !raised {
		t.Fatalf("GOGC still %d after 15 s of writes", gogc(t))
	}
	if !waitGOGC(t, 5*time.Second, func(g int) bool { return g == 100 }) {
		t.Fatalf("GOGC still %d 5 s after the writes stopped", gogc(t))
	}

	// Busy again, then Shutdown: back to 100 without waiting for a tick.
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				kv.Put(ctx, fmt.Sprintf("gc/%d/%d", w, i%100), "v")
			}
		}()
	}
	if !waitGOGC(t, 15*time.Second, func(g int) bool { return g > 100 }) {
		t.Fatalf("GOGC still %d after 15 s of writes (second time)", gogc(t))
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	cancel()
	wg.Wait()
	if g := gogc(t); g != 100 {
		t.Errorf("GOGC %d after Shutdown", g)
	}
}

// waitGOGC polls GOGC until ok or the deadline.
func waitGOGC(t *testing.T, d time.Duration, ok func(int) bool) bool {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if ok(gogc(t)) {
			return true
		}
	}
	return false
}
