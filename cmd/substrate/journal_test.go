package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestServeUnderJournald runs serve in a child process (this test binary,
// TestHelperServeJournal) whose stderr is a file named by JOURNAL_STREAM,
// as systemd sets it for a unit whose output goes to the journal: every
// line starts with its syslog priority and carries no time.
func TestServeUnderJournald(t *testing.T) {
	journal, err := os.Create(filepath.Join(t.TempDir(), "journal"))
	if err != nil {
		t.Fatal(err)
	}
	defer journal.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(journal.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	args := []string{"serve", "--host", "127.0.0.1", "--data-dir", filepath.Join(t.TempDir(), "data"), "--services", "memcached",
		"--memcached-port", strconv.Itoa(freePort(t)), "--amqp-memory-high-watermark", "0",
		"--log-level", "debug"}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHelperServeJournal$")
	cmd.Env = append(os.Environ(), "SUBSTRATE_TEST_JOURNAL_ARGS="+strings.Join(args, "\x1f"),
		fmt.Sprintf("JOURNAL_STREAM=%d:%d", st.Dev, st.Ino))
	cmd.Stderr = journal
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	read := func() string {
		data, _ := os.ReadFile(journal.Name())
		return string(data)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(read(), "substrate ready") {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("not ready in 30 s:\n%s", read())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("serve: %v\n%s", err, read())
	}
	out := strings.TrimSpace(read())
	var ready, stopped bool
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "=== RUN") || strings.HasPrefix(line, "---") || line == "PASS" {
			continue // the test framework's own lines, should it write any here
		}
		if len(line) < 4 || line[0] != '<' || !strings.Contains("<3><4><6><7>", line[:3]) {
			t.Errorf("line without a syslog priority: %q", line)
		}
		if strings.Contains(line, "time=") {
			t.Errorf("line with its own time under journald: %q", line)
		}
		ready = ready || strings.HasPrefix(line, `<6>level=INFO msg="substrate ready"`)
		stopped = stopped || strings.HasPrefix(line, "<6>level=INFO msg=stopped")
	}
	if !ready || !stopped {
		t.Errorf("want the ready and stopped lines at priority 6:\n%s", out)
	}
}

// TestHelperServeJournal is the child of TestServeUnderJournald.
func TestHelperServeJournal(t *testing.T) {
	spec := os.Getenv("SUBSTRATE_TEST_JOURNAL_ARGS")
	if spec == "" {
		t.Skip("helper process only")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if code := run(ctx, append([]string{"substrate"}, strings.Split(spec, "\x1f")...), os.Stdout, os.Stderr); code != 0 {
		t.Fatalf("serve exited %d", code)
	}
}
