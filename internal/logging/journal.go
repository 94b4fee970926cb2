package logging

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// Journald reports whether w is the stream systemd connected to journald:
// systemd sets JOURNAL_STREAM to "DEVICE:INODE" of the stdout/stderr it
// hands a service, and a process whose stderr has that device and inode
// writes to the journal (systemd.exec(5), "$JOURNAL_STREAM"). A variable
// inherited by a child whose stderr was redirected does not match.
func Journald(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	dev, ino, ok := parseJournalStream(os.Getenv("JOURNAL_STREAM"))
	if !ok {
		return false
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	return uint64(st.Dev) == dev && uint64(st.Ino) == ino
}

func parseJournalStream(v string) (dev, ino uint64, ok bool) {
	d, i, found := strings.Cut(v, ":")
	if !found {
		return 0, 0, false
	}
	dev, err1 := strconv.ParseUint(d, 10, 64)
	ino, err2 := strconv.ParseUint(i, 10, 64)
	return dev, ino, err1 == nil && err2 == nil
}

// priority is the syslog priority journald reads from a "<N>" line prefix
// (sd-daemon(3)): 3 error, 4 warning, 6 info, 7 debug; 2 (critical) for
// the levels above error that the zap bridge uses for etcd's fatal lines.
func priority(l slog.Level) byte {
	switch {
	case l > slog.LevelError:
		return '2'
	case l >= slog.LevelError:
		return '3'
	case l >= slog.LevelWarn:
		return '4'
	case l >= slog.LevelInfo:
		return '6'
	}
	return '7'
}

func dropTime(groups []string, a slog.Attr) slog.Attr {
	if a.Key == slog.TimeKey && len(groups) == 0 {
		return slog.Attr{}
	}
	return a
}

// priorityHandler formats each record with an inner handler into a buffer
// and writes it to w behind its "<N>" prefix, in one write, so that lines
// from concurrent goroutines never interleave.
type priorityHandler struct {
	out   *priorityOut
	inner slog.Handler
}

type priorityOut struct {
	mu  sync.Mutex
	w   io.Writer
	buf bytes.Buffer
}

func newPriorityHandler(w io.Writer, build func(io.Writer) slog.Handler) *priorityHandler {
	out := &priorityOut{w: w}
	return &priorityHandler{out: out, inner: build(&out.buf)}
}

func (h *priorityHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

func (h *priorityHandler) Handle(ctx context.Context, r slog.Record) error {
	o := h.out
	o.mu.Lock()
	defer o.mu.Unlock()
	o.buf.Reset()
	o.buf.WriteString("<")
	o.buf.WriteByte(priority(r.Level))
	o.buf.WriteString(">")
	if err := h.inner.Handle(ctx, r); err != nil {
		return err
	}
	_, err := o.w.Write(o.buf.Bytes())
	return err
}

func (h *priorityHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &priorityHandler{out: h.out, inner: h.inner.WithAttrs(attrs)}
}

func (h *priorityHandler) WithGroup(name string) slog.Handler {
	return &priorityHandler{out: h.out, inner: h.inner.WithGroup(name)}
}
