package logging

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"go.uber.org/zap"
)

func TestParseLevel(t *testing.T) {
	for in, want := range map[string]slog.Level{"debug": slog.LevelDebug, "INFO": slog.LevelInfo, "warning": slog.LevelWarn, "error": slog.LevelError} {
		got, err := ParseLevel(in)
		if err != nil || got != want {
			t.Errorf("ParseLevel(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := ParseLevel("loud"); err == nil || !strings.Contains(err.Error(), `"loud"`) {
		t.Errorf("ParseLevel(loud) error = %v", err)
	}
}

func TestZapBridgeLevelsFieldsAndQuieting(t *testing.T) {
	var buf bytes.Buffer
	h := slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})
	q := NewQuieter("Running http and grpc server on single port")
	lg := Zap(h, slog.LevelWarn, q).Named("etcd").With(zap.String("member", "m1"))

	lg.Info("chatty")
	lg.Warn("Running http and grpc server on single port. This is not recommended")
	lg.Warn("disk is slow", zap.Int("ms", 120), zap.Error(errors.New("boom")))
	q.Closing()
	lg.Error("setting up serving from embedded etcd failed")

	out := buf.String()
	if strings.Contains(out, "chatty") || strings.Contains(out, "single port") || strings.Contains(out, "setting up serving") {
		t.Fatalf("entries below the level or demoted ones leaked:\n%s", out)
	}
	for _, want := range []string{"level=WARN", `msg="disk is slow"`, "logger=etcd", "member=m1", "ms=120", "error=boom"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "\n"); n != 1 {
		t.Errorf("got %d lines, want 1:\n%s", n, out)
	}
}
