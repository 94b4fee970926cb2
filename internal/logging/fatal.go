package logging

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap/zapcore"
)

// EmergencyTimeout bounds the emergency stop run before a fatal zap entry
// ends the process.
var EmergencyTimeout = 5 * time.Second

// A zap entry at Panic or Fatal level (etcd logs them on unrecoverable
// storage or Raft errors) is followed by zap's panic or os.Exit, in the
// middle of whatever the other services of the process are doing. Before
// that, the Zap core runs the emergency stop registered with OnFatal: the
// orderly shutdown of everything else (the broker's store flushed, its
// CLEAN mark written, listeners closed), bounded by EmergencyTimeout.

type emergency struct {
	f    func(ctx context.Context)
	once sync.Once
	done chan struct{}
}

var (
	emergencyMu  sync.Mutex
	emergencyCur *emergency
)

// OnFatal registers f as the process's emergency stop, replacing any
// earlier one, until the returned function is called. f must not wait
// for the goroutine that logged the fatal entry (etcd's own shutdown
// would): it gets a context that ends after EmergencyTimeout.
func OnFatal(f func(ctx context.Context)) (unregister func()) {
	e := &emergency{f: f, done: make(chan struct{})}
	emergencyMu.Lock()
	emergencyCur = e
	emergencyMu.Unlock()
	return func() {
		emergencyMu.Lock()
		if emergencyCur == e {
			emergencyCur = nil
		}
		emergencyMu.Unlock()
	}
}

// runEmergency runs the registered emergency stop once; a concurrent or
// later fatal entry waits for that same run. It returns after at most
// EmergencyTimeout whether or not the stop finished.
func runEmergency() {
	emergencyMu.Lock()
	e := emergencyCur
	emergencyMu.Unlock()
	if e == nil {
		return
	}
	timeout := EmergencyTimeout
	e.once.Do(func() {
		go func() {
			defer close(e.done)
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			e.f(ctx)
		}()
	})
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-e.done:
	case <-t.C:
	}
}

// fatal reports whether zap ends the process (or panics) after an entry
// at level l. DPanic panics only in zap's development mode, which etcd's
// logger is not.
func fatal(l zapcore.Level) bool { return l >= zapcore.PanicLevel }
