package logging

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"substrate/internal/testkit"
)

// TestFatalEntryRunsEmergencyStopFirst: a zap Fatal or Panic entry from
// etcd's logger runs the registered emergency stop, after the entry is
// logged and before zap exits or panics; other levels do not.
func TestFatalEntryRunsEmergencyStopFirst(t *testing.T) {
	var out testkit.Buffer
	h := slog.NewTextHandler(&out, nil)
	var runs []string
	var mu sync.Mutex
	unregister := OnFatal(func(ctx context.Context) {
		mu.Lock()
		defer mu.Unlock()
		runs = append(runs, "stop after: "+out.String())
	})
	defer unregister()
	// Goexit in place of os.Exit, so the test survives zap's fatal action.
	lg := Zap(h, slog.LevelInfo, nil).WithOptions(zap.WithFatalHook(zapcore.WriteThenGoexit)).Named("etcd")

	lg.Error("not fatal")
	lg.DPanic("not fatal either in production mode")
	done := make(chan bool)
	go func() {
		defer close(done)
		lg.Fatal("failed to open backend", zap.String("path", "/x"))
		done <- true // not reached: zap's fatal action ran
	}()
	if <-done {
		t.Fatal("Fatal returned")
	}
	mu.Lock()
	if len(runs) != 1 || !strings.Contains(runs[0], "failed to open backend") {
		t.Fatalf("emergency stop runs %q, want one after the fatal line", runs)
	}
	mu.Unlock()

	// A second fatal entry (another etcd goroutine) does not run it again.
	func() {
		defer func() {
			if v := recover(); v == nil {
				t.Error("Panic did not panic")
			}
		}()
		lg.Panic("raft: unexpected state")
	}()
	mu.Lock()
	defer mu.Unlock()
	if len(runs) != 1 {
		t.Errorf("emergency stop ran %d times", len(runs))
	}
}

// TestEmergencyStopIsBounded: a stop that hangs does not keep the process
// from exiting past EmergencyTimeout.
func TestEmergencyStopIsBounded(t *testing.T) {
	old := EmergencyTimeout
	EmergencyTimeout = 100 * time.Millisecond
	defer func() { EmergencyTimeout = old }()
	release := make(chan struct{})
	defer close(release)
	gotCtx := make(chan context.Context, 1)
	defer OnFatal(func(ctx context.Context) {
		gotCtx <- ctx
		<-release
	})()
	lg := Zap(slog.DiscardHandler, slog.LevelInfo, nil)
	t0 := time.Now()
	func() {
		defer func() { recover() }()
		lg.Panic("boom")
	}()
	if d := time.Since(t0); d > 2*time.Second {
		t.Errorf("fatal entry held for %v", d)
	}
	select {
	case ctx := <-gotCtx:
		if _, ok := ctx.Deadline(); !ok {
			t.Error("emergency stop got no deadline")
		}
	default:
		t.Error("emergency stop did not run")
	}
}
