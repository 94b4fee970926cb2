// Package lifecycle starts substrate's subsystems in order and stops them in
// reverse order. Every subsystem has the same shape: it is built by its
// package's New(cfg), Start(ctx) returns once all its listeners accept,
// Shutdown(ctx) is idempotent and waits for every goroutine it started.
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Service is one subsystem.
type Service interface {
	// Name is the service name as --services spells it.
	Name() string
	// Start returns once every listener of the service accepts.
	Start(ctx context.Context) error
	// Shutdown stops the service; it is idempotent.
	Shutdown(ctx context.Context) error
	// Err reports a failure of the running service (nil channel: never).
	Err() <-chan error
}

// Group runs services in the order given.
type Group struct {
	log      *slog.Logger
	services []Service
	mu       sync.Mutex // guards started against Emergency, which any goroutine may call
	started  []Service
}

// NewGroup returns a group of services, started in the order given.
func NewGroup(log *slog.Logger, services ...Service) *Group {
	return &Group{log: log, services: services}
}

// Start starts each service in order. If one fails, those already started
// are shut down in reverse order and the error is returned.
func (g *Group) Start(ctx context.Context) error {
	for _, s := range g.services {
		t0 := time.Now()
		if err := s.Start(ctx); err != nil {
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = g.Shutdown(sctx)
			return fmt.Errorf("%s: %w", s.Name(), err)
		}
		g.log.Debug("service started", "service", s.Name(), "took", time.Since(t0).Round(time.Millisecond))
		g.mu.Lock()
		g.started = append(g.started, s)
		g.mu.Unlock()
	}
	return nil
}

// Wait blocks until ctx is done (nil result) or a running service fails.
func (g *Group) Wait(ctx context.Context) error {
	failed := make(chan error, len(g.started))
	stop := make(chan struct{})
	defer close(stop)
	for _, s := range g.started {
		ch := s.Err()
		if ch == nil {
			continue
		}
		go func(name string) {
			select {
			case err, ok := <-ch:
				if !ok || err == nil {
					err = errors.New("stopped unexpectedly")
				}
				failed <- fmt.Errorf("%s: %w", name, err)
			case <-stop:
			}
		}(s.Name())
	}
	select {
	case <-ctx.Done():
		return nil
	case err := <-failed:
		return err
	}
}

// Shutdown stops the started services in reverse order and returns their
// errors joined.
func (g *Group) Shutdown(ctx context.Context) error {
	var errs []error
	g.mu.Lock()
	started := g.started
	g.mu.Unlock()
	for i := len(started) - 1; i >= 0; i-- {
		s := started[i]
		t0 := time.Now()
		if err := s.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.Name(), err))
		}
		g.log.Debug("service stopped", "service", s.Name(), "took", time.Since(t0).Round(time.Millisecond))
	}
	g.mu.Lock()
	g.started = nil
	g.mu.Unlock()
	return errors.Join(errs...)
}

// Emergency shuts down the started services except the one named
// failing, in reverse order, from any goroutine: the process is about to
// end because failing cannot go on (etcd logged a fatal error), and the
// others must stop in order first. Shutdown's idempotence makes a later
// or concurrent Shutdown harmless.
func (g *Group) Emergency(ctx context.Context, failing string) error {
	g.mu.Lock()
	started := append([]Service(nil), g.started...)
	g.mu.Unlock()
	var errs []error
	for i := len(started) - 1; i >= 0; i-- {
		s := started[i]
		if s.Name() == failing {
			continue
		}
		if err := s.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.Name(), err))
		}
	}
	return errors.Join(errs...)
}
