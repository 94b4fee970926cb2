package logging

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"go.uber.org/zap"
)

// journalFile returns a file standing for the stream systemd hands a
// service, with JOURNAL_STREAM set to its device and inode as systemd does.
func journalFile(t *testing.T) *os.File {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "journal"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	t.Setenv("JOURNAL_STREAM", fmt.Sprintf("%d:%d", st.Dev, st.Ino))
	return f
}

func readLines(t *testing.T, f *os.File) []string {
	t.Helper()
	data, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
}

func TestJournaldLinesCarryPriorityAndNoTime(t *testing.T) {
	f := journalFile(t)
	log := New(f, slog.LevelDebug).With("service", "amqp")
	log.Debug("d")
	log.Info("i", "k", 1)
	log.Warn("w")
	log.Error("e")
	// etcd's lines through the zap bridge get priorities too; a zap
	// DPanic entry is above error: critical.
	Zap(log.Handler(), slog.LevelDebug, nil).DPanic("fatal-ish", zap.String("x", "y"))

	lines := readLines(t, f)
	want := []string{"<7>", "<6>", "<4>", "<3>", "<2>"}
	if len(lines) != len(want) {
		t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(want), strings.Join(lines, "\n"))
	}
	for i, l := range lines {
		if !strings.HasPrefix(l, want[i]+"level=") {
			t.Errorf("line %d = %q, want prefix %q then level=", i, l, want[i])
		}
		if strings.Contains(l, "time=") {
			t.Errorf("line %d carries its own time under journald: %q", i, l)
		}
		if !strings.Contains(l, "service=amqp") {
			t.Errorf("line %d lost the logger's attributes: %q", i, l)
		}
	}
	if !strings.Contains(lines[1], "k=1") || !strings.Contains(lines[4], "x=y") {
		t.Errorf("attributes missing:\n%s", strings.Join(lines, "\n"))
	}
}

func TestJournaldJSON(t *testing.T) {
	f := journalFile(t)
	NewFormat(f, slog.LevelInfo, FormatJSON).Warn("disk low", "free", 10)
	lines := readLines(t, f)
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "<4>{") {
		t.Fatalf("lines = %q, want one <4>{...}", lines)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[0][3:]), &m); err != nil {
		t.Fatalf("not JSON after the prefix: %v: %q", err, lines[0])
	}
	if _, ok := m["time"]; ok || m["msg"] != "disk low" || m["level"] != "WARN" || m["free"] != float64(10) {
		t.Errorf("record = %v", m)
	}
}

// A JOURNAL_STREAM inherited by a process whose stderr goes elsewhere (a
// file, a pipe, a test buffer) must not change the format.
func TestNotJournald(t *testing.T) {
	journalFile(t) // sets JOURNAL_STREAM to another file
	other, err := os.Create(filepath.Join(t.TempDir(), "other"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	New(other, slog.LevelInfo).Info("hello")
	var buf bytes.Buffer
	New(&buf, slog.LevelInfo).Info("hello")
	for _, l := range []string{readLines(t, other)[0], strings.TrimSpace(buf.String())} {
		if !strings.HasPrefix(l, "time=") {
			t.Errorf("line = %q, want the text format with its time", l)
		}
	}
	t.Setenv("JOURNAL_STREAM", "garbage")
	if Journald(other) {
		t.Error("Journald true for a malformed JOURNAL_STREAM")
	}
}

func TestJSONFormat(t *testing.T) {
	var buf bytes.Buffer
	NewFormat(&buf, slog.LevelInfo, FormatJSON).With("service", "memcached").Info("ready", "port", 11211)
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatalf("%v: %q", err, buf.String())
	}
	for k, v := range map[string]any{"msg": "ready", "level": "INFO", "service": "memcached", "port": float64(11211)} {
		if m[k] != v {
			t.Errorf("%s = %v, want %v (record %v)", k, m[k], v, m)
		}
	}
	if _, ok := m["time"]; !ok {
		t.Errorf("JSON record lacks its time outside journald: %v", m)
	}
}

func TestParseFormat(t *testing.T) {
	for in, want := range map[string]Format{"text": FormatText, "JSON": FormatJSON, "": FormatText} {
		if got, err := ParseFormat(in); err != nil || got != want {
			t.Errorf("ParseFormat(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParseFormat("xml"); err == nil || err.Error() != `unknown log format "xml" (want text or json)` {
		t.Errorf("ParseFormat(xml) error = %v", err)
	}
}

// Lines written from many goroutines stay whole, one prefix each.
func TestJournaldConcurrentLinesStayWhole(t *testing.T) {
	f := journalFile(t)
	log := New(f, slog.LevelInfo)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := log.With("g", g)
			for i := range 50 {
				l.Info("line", "i", i)
			}
		}()
	}
	wg.Wait()
	lines := readLines(t, f)
	if len(lines) != 400 {
		t.Fatalf("got %d lines, want 400", len(lines))
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, "<6>level=INFO msg=line g=") || strings.Count(l, "<6>") != 1 {
			t.Fatalf("mangled line %q", l)
		}
	}
}
