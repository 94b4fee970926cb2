package ctl

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"substrate/internal/faults"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestPanicAnswersOnlyThatRequest: a command that panics gets an error
// answer; the server logs it once, counts it and answers the next one.
func TestPanicAnswersOnlyThatRequest(t *testing.T) {
	b := startBroker(t)
	dir := t.TempDir()
	var logs lockedBuffer
	s := NewServer(dir, b).WithLogger(slog.New(slog.NewTextHandler(&logs, nil)))
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())
	defer faults.Arm(SiteRun, "boom-user")()
	before := faults.Count(faults.Ctl)

	res := Call(context.Background(), dir, []string{"add_user", "boom-user", "p"})
	if res.Code != ExitSoftware || !strings.Contains(res.Stderr, "internal error") || !strings.Contains(res.Stderr, "add_user boom-user p") {
		t.Fatalf("panicking command: %+v", res)
	}
	if got := faults.Count(faults.Ctl) - before; got != 1 {
		t.Errorf("ctl panics counted: %d, want 1", got)
	}
	if n := strings.Count(logs.String(), "level=ERROR"); n != 1 || !strings.Contains(logs.String(), SiteRun) {
		t.Errorf("want one ERROR line naming %s:\n%s", SiteRun, logs.String())
	}
	res = Call(context.Background(), dir, []string{"add_user", "alice", "p"})
	if res.Code != 0 || !strings.HasPrefix(res.Stdout, `Adding user "alice" ...`) {
		t.Fatalf("next command: %+v", res)
	}
}
