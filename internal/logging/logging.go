// Package logging builds substrate's process logger (log/slog, text lines on
// stderr) and the zap logger that embedded etcd insists on, bridged onto the
// same slog handler so that every line of the process has one format.
package logging

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// ParseLevel reads a level name as operators write it: debug, info, warn
// (or warning), error.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "debug":
		return slog.LevelDebug, nil
	case "info", "":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("unknown log level %q (want debug, info, warn or error)", s)
}

// New returns a logger that writes logfmt-style text lines to w, dropping
// records below level. Under journald (see Journald) each line starts with
// its syslog priority and carries no time of its own.
func New(w io.Writer, level slog.Level) *slog.Logger {
	return NewFormat(w, level, FormatText)
}

// Format names a log line format: FormatText or FormatJSON.
type Format string

const (
	// FormatText is logfmt: time=… level=… msg=… key=value.
	FormatText Format = "text"
	// FormatJSON is one JSON object a line, for log shippers.
	FormatJSON Format = "json"
)

// ParseFormat reads --log-format: text or json.
func ParseFormat(s string) (Format, error) {
	switch f := Format(strings.ToLower(strings.TrimSpace(s))); f {
	case FormatText, FormatJSON:
		return f, nil
	case "":
		return FormatText, nil
	}
	return "", fmt.Errorf("unknown log format %q (want text or json)", s)
}

// NewFormat returns a logger that writes lines of format f to w, dropping
// records below level. When w is the stream journald reads (Journald), each
// line starts with its syslog priority (<3> error, <4> warning, <6> info,
// <7> debug), which journald takes as the entry's priority and strips, and
// the time is left out: journald stamps every entry itself.
func NewFormat(w io.Writer, level slog.Level, f Format) *slog.Logger {
	journal := Journald(w)
	opts := &slog.HandlerOptions{Level: level}
	if journal {
		opts.ReplaceAttr = dropTime
	}
	var h slog.Handler
	if journal {
		h = newPriorityHandler(w, func(buf io.Writer) slog.Handler { return newHandler(buf, f, opts) })
	} else {
		h = newHandler(w, f, opts)
	}
	return slog.New(h)
}

func newHandler(w io.Writer, f Format, opts *slog.HandlerOptions) slog.Handler {
	if f == FormatJSON {
		return slog.NewJSONHandler(w, opts)
	}
	return slog.NewTextHandler(w, opts)
}

// Discard returns a logger that writes nothing.
func Discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// Quieter demotes zap entries that are noise to an operator: a fixed list of
// harmless startup warnings, and, once Closing has been called, the error
// lines etcd writes about its own listeners being closed during a normal
// shutdown. Demoted entries are logged at debug level, not dropped.
type Quieter struct {
	closing  atomic.Bool
	harmless []string
}

// NewQuieter returns a Quieter that demotes entries whose message starts
// with one of harmless.
func NewQuieter(harmless ...string) *Quieter { return &Quieter{harmless: harmless} }

// Closing marks the start of an orderly shutdown.
func (q *Quieter) Closing() { q.closing.Store(true) }

func (q *Quieter) level(ent zapcore.Entry) zapcore.Level {
	if q == nil {
		return ent.Level
	}
	if q.closing.Load() && ent.Level >= zapcore.WarnLevel && ent.Level <= zapcore.ErrorLevel {
		return zapcore.DebugLevel
	}
	if ent.Level == zapcore.WarnLevel {
		for _, h := range q.harmless {
			if strings.HasPrefix(ent.Message, h) {
				return zapcore.DebugLevel
			}
		}
	}
	return ent.Level
}

// Zap returns a zap logger whose entries at or above level go to h, as slog
// records with the zap fields as attributes. q may be nil.
func Zap(h slog.Handler, level slog.Level, q *Quieter) *zap.Logger {
	return zap.New(&zapCore{h: h, min: level, q: q})
}

type zapCore struct {
	h   slog.Handler
	min slog.Level
	q   *Quieter
	// fields added by With, already encoded.
	attrs []slog.Attr
}

func slogLevel(l zapcore.Level) slog.Level {
	switch {
	case l <= zapcore.DebugLevel:
		return slog.LevelDebug
	case l == zapcore.InfoLevel:
		return slog.LevelInfo
	case l == zapcore.WarnLevel:
		return slog.LevelWarn
	case l == zapcore.ErrorLevel:
		return slog.LevelError
	}
	return slog.LevelError + 4
}

func (c *zapCore) Enabled(l zapcore.Level) bool {
	// Demotion can only lower a level, so an entry that is not enabled
	// before demotion is never enabled after it.
	return slogLevel(l) >= c.min
}

func (c *zapCore) With(fields []zapcore.Field) zapcore.Core {
	cp := *c
	cp.attrs = append(append([]slog.Attr(nil), c.attrs...), encodeFields(fields)...)
	return &cp
}

func (c *zapCore) Check(ent zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	ent.Level = c.q.level(ent)
	if slogLevel(ent.Level) < c.min {
		return ce
	}
	return ce.AddCore(ent, c)
}

func (c *zapCore) Write(ent zapcore.Entry, fields []zapcore.Field) error {
	r := slog.NewRecord(ent.Time, slogLevel(ent.Level), ent.Message, 0)
	if ent.LoggerName != "" {
		r.AddAttrs(slog.String("logger", ent.LoggerName))
	}
	r.AddAttrs(c.attrs...)
	r.AddAttrs(encodeFields(fields)...)
	err := c.h.Handle(context.Background(), r)
	if fatal(ent.Level) {
		// zap panics or exits once this returns: stop the rest of the
		// process in order first (see fatal.go).
		runEmergency()
	}
	return err
}

func (c *zapCore) Sync() error { return nil }

func encodeFields(fields []zapcore.Field) []slog.Attr {
	if len(fields) == 0 {
		return nil
	}
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range fields {
		f.AddTo(enc)
	}
	attrs := make([]slog.Attr, 0, len(enc.Fields))
	// Keep the order the fields were given in.
	seen := make(map[string]bool, len(fields))
	for _, f := range fields {
		if v, ok := enc.Fields[f.Key]; ok && !seen[f.Key] {
			seen[f.Key] = true
			attrs = append(attrs, slog.Any(f.Key, v))
		}
	}
	return attrs
}
