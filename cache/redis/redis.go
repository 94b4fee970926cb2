// Package redis serves the Redis protocol (RESP) from
// github.com/alicebob/miniredis/v2, so that tooz's redis:// driver and
// dogpile.cache's redis backend work in labs and CI without a Redis daemon.
//
// It is for labs, not production: data lives in memory only, with no
// persistence, replication, memory limit or eviction, and miniredis is a
// test double with Redis's command semantics, not Redis's performance.
// Key expiry follows the wall clock to within TickInterval.
package redis

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/alicebob/miniredis/v2/server"

	"substrate/internal/faults"
	"substrate/internal/preflight"
)

// TickInterval is how often expiring keys are checked against the clock
// (miniredis only moves time forward when told to).
const TickInterval = 100 * time.Millisecond

// Config of the Redis endpoint.
type Config struct {
	Addrs  []string     // host:port to listen on
	Logger *slog.Logger // nil: discard
}

// Server is the Redis endpoint.
type Server struct {
	cfg       Config
	m         *miniredis.Miniredis
	listeners []net.Listener
	inCmd     sync.Map // *server.Peer -> struct{}: guard's own Dispatch in progress
	stop      chan struct{}
	wg        sync.WaitGroup
	once      sync.Once
}

// New returns a server for cfg; it does not listen yet.
func New(cfg Config) (*Server, error) {
	if len(cfg.Addrs) == 0 {
		return nil, errors.New("redis: no listen address")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg, stop: make(chan struct{})}, nil
}

// Name is the service name used by --services.
func (s *Server) Name() string { return "redis" }

// Err never reports: miniredis keeps no state that can fail.
func (s *Server) Err() <-chan error { return nil }

// Ports lists the addresses the server will listen on.
func (s *Server) Ports() []preflight.Port {
	ports := make([]preflight.Port, len(s.cfg.Addrs))
	for i, a := range s.cfg.Addrs {
		ports[i] = preflight.Port{What: "redis port", Addr: a}
	}
	return ports
}

// Start listens on every address; all of them serve one keyspace.
func (s *Server) Start(ctx context.Context) error {
	s.m = miniredis.NewMiniRedis()
	// miniredis starts without a listener of its own (Dial does that; its
	// pipe is closed at once): every connection comes through accept, which
	// puts respConn in front of miniredis's reader.
	c, err := s.m.Dial()
	if err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	c.Close()
	s.m.Server().SetPreHook(s.guard)
	for _, a := range s.cfg.Addrs {
		l, err := (&net.ListenConfig{}).Listen(ctx, "tcp", a)
		if err != nil {
			s.Shutdown(context.Background())
			return fmt.Errorf("redis port: %w", err)
		}
		s.listeners = append(s.listeners, l)
		s.wg.Add(1)
		go s.accept(l)
	}
	s.m.SetTime(time.Now())
	s.wg.Add(1)
	go s.clock()
	s.cfg.Logger.Info("redis endpoint for labs (miniredis, memory only)", "listen", s.cfg.Addrs)
	return nil
}

// SiteCommand is the fault-injection site of a Redis command
// (internal/faults); subject: the command and its arguments, joined by
// spaces.
const SiteCommand = "redis.command"

// guard runs every command inside a recover: miniredis serves each peer
// on a goroutine of its own without one, so a panic in a command would
// end the process. It is miniredis's pre-command hook and dispatches the
// command itself (the nested call runs it unwrapped). A panic answers
// that client with an error and closes its connection, logged once and
// counted for "redis". miniredis's commands take its one lock without
// defer, so guard releases it after such a panic (releaseAfterPanic):
// otherwise every other Redis client, and Shutdown, would wait forever
// (found by FuzzConn: KEYS with a pattern that is not UTF-8).
func (s *Server) guard(peer *server.Peer, cmd string, args ...string) (done bool) {
	if _, nested := s.inCmd.Load(peer); nested {
		return false
	}
	s.inCmd.Store(peer, struct{}{})
	defer s.inCmd.Delete(peer)
	line := strings.Join(append([]string{cmd}, args...), " ")
	defer func() {
		if v := recover(); v != nil {
			done = true // miniredis must not run the command again
			s.releaseAfterPanic(debug.Stack())
			faults.Handle(s.cfg.Logger, faults.Redis, "redis peer", v, func(any) {
				peer.WriteError("ERR substrate: internal error; closing the connection")
				peer.Close()
			})
		}
	}()
	faults.Point(SiteCommand, line)
	s.m.Server().Dispatch(peer, append([]string{cmd}, args...))
	return true
}

// releaseAfterPanic unlocks miniredis's lock if the command that
// panicked (stack: its goroutine's, taken while panicking) held it.
// miniredis takes it without defer only in withTx, around a command's
// body; EXEC, WATCH and blocking commands take it with defer, so it was
// released as the panic unwound (EXEC runs queued bodies without withTx).
// Left open: a panic inside withTx before it locks (getCtx, inTx) while
// another client holds the lock; that code only reads a map.
func (s *Server) releaseAfterPanic(stack []byte) {
	if !bytes.Contains(stack, []byte("miniredis/v2.withTx(")) || bytes.Contains(stack, []byte(").cmdExec(")) {
		return
	}
	s.m.TryLock() // fails: the panicking command holds it
	s.m.Unlock()
}

// accept hands connections from a listener to miniredis's server, which
// then owns and closes them, behind respConn (resp.go).
func (s *Server) accept(l net.Listener) {
	defer s.wg.Done()
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		s.serve(c)
	}
}

// serve hands one client connection to miniredis.
func (s *Server) serve(c net.Conn) { s.m.Server().ServeConn(newRESPConn(c)) }

// clock moves miniredis's time with the wall clock, so TTLs expire.
func (s *Server) clock() {
	defer s.wg.Done()
	t := time.NewTicker(TickInterval)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-s.stop:
			return
		case now := <-t.C:
			s.m.FastForward(now.Sub(last))
			s.m.SetTime(now)
			last = now
		}
	}
}

// Shutdown closes every listener and connection; it is idempotent.
func (s *Server) Shutdown(context.Context) error {
	s.once.Do(func() {
		close(s.stop)
		for _, l := range s.listeners {
			l.Close()
		}
		if s.m != nil {
			s.m.Close()
		}
		s.wg.Wait()
	})
	return nil
}
