package raftnode

import (
	"context"
	"fmt"
	"log/slog"

	"substrate/internal/faults"
)

// service labels this package's recovered panics in
// substrate_panics_total.
const service = "raft"

// recoverRaft is faults.Recover for this package's goroutines.
func recoverRaft(log *slog.Logger, peer string, cleanup func(any)) {
	if v := recover(); v != nil {
		faults.Handle(log, service, peer, v, cleanup)
	}
}

// raftLogger routes go.etcd.io/raft's log to slog. raft's Info lines (a
// few per peer per election) go to debug: the node logs one info line of
// its own per role change. Fatal and Panic panic; the loop's recovery
// stops the node rather than the process.
type raftLogger struct{ l *slog.Logger }

func (r raftLogger) out(level slog.Level, msg string) {
	if r.l.Enabled(context.Background(), level) {
		r.l.Log(context.Background(), level, "raft: "+msg)
	}
}

func (r raftLogger) Debug(v ...any)              { r.out(slog.LevelDebug, fmt.Sprint(v...)) }
func (r raftLogger) Debugf(f string, v ...any)   { r.out(slog.LevelDebug, fmt.Sprintf(f, v...)) }
func (r raftLogger) Info(v ...any)               { r.out(slog.LevelDebug, fmt.Sprint(v...)) }
func (r raftLogger) Infof(f string, v ...any)    { r.out(slog.LevelDebug, fmt.Sprintf(f, v...)) }
func (r raftLogger) Warning(v ...any)            { r.out(slog.LevelWarn, fmt.Sprint(v...)) }
func (r raftLogger) Warningf(f string, v ...any) { r.out(slog.LevelWarn, fmt.Sprintf(f, v...)) }
func (r raftLogger) Error(v ...any)              { r.out(slog.LevelError, fmt.Sprint(v...)) }
func (r raftLogger) Errorf(f string, v ...any)   { r.out(slog.LevelError, fmt.Sprintf(f, v...)) }
func (r raftLogger) Fatal(v ...any)              { r.fatal(fmt.Sprint(v...)) }
func (r raftLogger) Fatalf(f string, v ...any)   { r.fatal(fmt.Sprintf(f, v...)) }
func (r raftLogger) Panic(v ...any)              { r.fatal(fmt.Sprint(v...)) }
func (r raftLogger) Panicf(f string, v ...any)   { r.fatal(fmt.Sprintf(f, v...)) }
func (r raftLogger) fatal(msg string)            { panic("raft: " + msg) }
