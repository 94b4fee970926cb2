package ctl

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"substrate/internal/faults"
	"substrate/internal/testkit"
)

// TestPanicAnswersOnlyThatRequest: a command that panics gets an error
// answer; the server logs it once, counts it and answers the next one.
func TestPanicAnswersOnlyThatRequest(t *testing.T) {
	b := startBroker(t)
	dir := t.TempDir()
	var logs testkit.Buffer
	s := NewServer(dir, b).WithLogger(slog.New(slog.NewTextHandler(&logs, nil)))
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())
	defer faults.Arm(SiteRun, "boom-user")()
	before := faults.Count(faults.Ctl)

	res := Call(context.Background(), dir, Request{Argv: []string{"add_user", "boom-user", "s3cret-pw"}})
	if res.Code != ExitSoftware || !strings.Contains(res.Stderr, "internal error") || !strings.Contains(res.Stderr, "add_user boom-user [redacted]") {
		t.Fatalf("panicking command: %+v", res)
	}
	if got := faults.Count(faults.Ctl) - before; got != 1 {
		t.Errorf("ctl panics counted: %d, want 1", got)
	}
	if n := strings.Count(logs.String(), "level=ERROR"); n != 1 || !strings.Contains(logs.String(), SiteRun) {
		t.Errorf("want one ERROR line naming %s:\n%s", SiteRun, logs.String())
	}
	if strings.Contains(logs.String(), "s3cret-pw") || strings.Contains(res.Stderr, "s3cret-pw") {
		t.Errorf("the password is in the log or the answer:\n%s\n%s", logs.String(), res.Stderr)
	}
	res = Call(context.Background(), dir, Request{Argv: []string{"add_user", "alice", "p"}})
	if res.Code != 0 || !strings.HasPrefix(res.Stdout, `Adding user "alice" ...`) {
		t.Fatalf("next command: %+v", res)
	}
}

// TestSocketIsPrivateFromTheStart: the socket is 0600 under its final
// name, no temporary directory is left, and a stale socket is replaced.
func TestSocketIsPrivateFromTheStart(t *testing.T) {
	b := startBroker(t)
	dir := t.TempDir()
	if err := os.WriteFile(SocketPath(dir), nil, 0o666); err != nil { // stale
		t.Fatal(err)
	}
	s := NewServer(dir, b)
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(SocketPath(dir))
	if err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket: %v %v", fi.Mode(), err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".ctl-*")); len(left) != 0 {
		t.Errorf("left behind: %v", left)
	}
	if res := Call(context.Background(), dir, Request{Argv: []string{"list_users"}}); res.Code != 0 {
		t.Fatalf("call: %+v", res)
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(SocketPath(dir)); !os.IsNotExist(err) {
		t.Errorf("socket left after shutdown: %v", err)
	}
}

func TestRedact(t *testing.T) {
	for _, c := range [][2]string{
		{"add_user bob pw", "add_user bob [redacted]"},
		{"-q change_password bob pw", "-q change_password bob [redacted]"},
		{"authenticate_user bob pw", "authenticate_user bob [redacted]"},
		{"add_user bob", "add_user bob"},
		{"list_users", "list_users"},
	} {
		if got := strings.Join(Redact(strings.Fields(c[0])), " "); got != c[1] {
			t.Errorf("Redact(%q) = %q, want %q", c[0], got, c[1])
		}
	}
}
