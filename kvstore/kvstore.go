package kvstore

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"go.etcd.io/etcd/server/v3/embed"

	"substrate/internal/logging"
	"substrate/internal/preflight"
)

// Store is the embedded etcd member.
type Store struct {
	cfg   Config
	ec    *embed.Config
	quiet *logging.Quieter

	etcd     *embed.Etcd
	reserved *reserved
	local    atomic.Pointer[clientv3.KV] // Store.KV's way in, once started
	errc     chan error
	stopping chan struct{}
	wg       sync.WaitGroup
	stopOnce sync.Once
	stopErr  error
	// closeOnce guards etcd.Close, which Start (giving up) and Shutdown
	// may both reach.
	closeOnce sync.Once
}

// New builds and validates the member's configuration. It neither binds nor
// connects, so a configuration error is reported before anything listens.
func New(cfg Config) (*Store, error) {
	if cfg.Logger == nil {
		cfg.Logger = logging.Discard()
	}
	quiet := logging.NewQuieter(harmlessWarnings...)
	ec, err := buildEmbed(cfg, cfg.Logger, quiet)
	if err != nil {
		return nil, err
	}
	for what, f := range map[string]string{"etcd client key file": ec.ClientTLSInfo.KeyFile, "etcd peer key file": ec.PeerTLSInfo.KeyFile} {
		if w := preflight.SecretFile(what, f); f != "" && w != "" {
			cfg.Logger.Warn(w)
		}
	}
	r := newReserved(ReservedPrefix, cfg.Logger)
	ec.GRPCAdditionalServerOptions = append(ec.GRPCAdditionalServerOptions, r.options()...)
	return &Store{cfg: cfg, ec: ec, quiet: quiet, reserved: r, errc: make(chan error, 1), stopping: make(chan struct{})}, nil
}

// Name is the service name used by --services.
func (s *Store) Name() string { return "etcd" }

// EtcdConfig is the validated etcd configuration the member will run with.
func (s *Store) EtcdConfig() *embed.Config { return s.ec }

// Ports lists the addresses the member will listen on.
func (s *Store) Ports() []preflight.Port {
	var ports []preflight.Port
	for _, u := range s.ec.ListenClientUrls {
		ports = append(ports, preflight.Port{What: "etcd client port", Addr: u.Host})
	}
	for _, u := range s.ec.ListenPeerUrls {
		ports = append(ports, preflight.Port{What: "etcd peer port", Addr: u.Host})
	}
	return ports
}

// Start starts the member and returns once it has joined its cluster and
// serves clients. A member of a new multi-member cluster waits here for a
// quorum of its peers.
//
// Start returns ctx's error as soon as ctx is done, even while etcd waits
// for quorum or for its database file lock: a member that has not
// started is then closed in the background (closing one that waits for
// quorum is given abandonWait before Start returns), and Shutdown, if
// called, waits for that close.
func (s *Store) Start(ctx context.Context) error {
	if err := preflight.WritableDir(s.ec.Dir); err != nil {
		return err
	}
	type result struct {
		e   *embed.Etcd
		err error
	}
	started := make(chan result, 1)
	go func() {
		e, err := embed.StartEtcd(s.ec)
		started <- result{e, err}
	}()
	var e *embed.Etcd
	select {
	case r := <-started:
		if r.err != nil {
			return r.err
		}
		e = r.e
	case <-ctx.Done():
		// StartEtcd cannot be interrupted (it may be waiting for the
		// bbolt file lock): close what it returns, if it ever does.
		// Shutdown waits for this (within its context).
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			// Not through closeOnce: Shutdown's close has usually
			// spent it (on a nil s.etcd) by the time StartEtcd
			// returns, which left this member running after
			// Shutdown. No one else ever sees r.e.
			if r := <-started; r.e != nil {
				s.quiet.Closing()
				r.e.Close()
			}
		}()
		return ctx.Err()
	}
	s.etcd = e
	s.reserved.started(e.Server)
	kv := newLocalKV(e.Server)
	s.local.Store(&kv)
	slow := time.NewTimer(3 * time.Second)
	defer slow.Stop()
	for {
		select {
		case <-e.Server.ReadyNotify():
			s.wg.Add(1)
			go s.watch()
			if gcTunable() {
				s.wg.Add(1)
				go s.tuneGC()
			}
			return nil
		case <-slow.C:
			s.cfg.Logger.Warn("etcd member is waiting for its cluster to reach quorum", "member", s.ec.Name, "initial-cluster", s.ec.InitialCluster)
		case err := <-e.Err():
			s.closeWithin(abandonWait)
			return err
		case <-e.Server.StopNotify():
			s.closeWithin(abandonWait)
			return errors.New("etcd server stopped while starting")
		case <-ctx.Done():
			s.closeWithin(abandonWait)
			return ctx.Err()
		}
	}
}

// abandonWait bounds how long a Start that gives up waits for the member
// to close before returning anyway.
const abandonWait = 2 * time.Second

// closeWithin closes a member that is not ready, waiting at most d (the
// close goes on in the background). The server is stopped first: etcd's
// Close waits for the client servers, which start only once the member
// is ready or stopping, so Close alone never returns for a member still
// waiting for quorum.
func (s *Store) closeWithin(d time.Duration) {
	done := make(chan struct{})
	go func() {
		s.quiet.Closing()
		s.etcd.Server.HardStop()
		s.close()
		close(done)
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		s.cfg.Logger.Warn("etcd member did not close in time; leaving it", "after", d)
	}
}

// watch reports a failure of the running member (a listener error, or the
// server stopping because this member was removed from the cluster).
func (s *Store) watch() {
	defer s.wg.Done()
	var err error
	select {
	case err = <-s.etcd.Err():
	case <-s.etcd.Server.StopNotify():
		err = errors.New("etcd server stopped (was this member removed from the cluster?)")
	case <-s.stopping:
		return
	}
	select {
	case <-s.stopping:
	default:
		s.errc <- err
	}
}

// Err reports a failure of the running member.
func (s *Store) Err() <-chan error { return s.errc }

// ClientURLs are the addresses the member actually listens on for clients,
// as http://host:port (useful when a port was 0).
func (s *Store) ClientURLs() []string {
	if s.etcd == nil {
		return nil
	}
	var out []string
	for _, l := range s.etcd.Clients {
		out = append(out, "http://"+l.Addr().String())
	}
	return out
}

// Shutdown stops the member: it stops accepting clients, hands leadership to
// another member if it leads a cluster, and waits for etcd's goroutines.
// It is idempotent.
func (s *Store) Shutdown(ctx context.Context) error {
	s.stopOnce.Do(func() {
		close(s.stopping)
		done := make(chan struct{})
		go func() {
			s.close()
			s.wg.Wait()
			close(done)
		}()
		select {
		case <-done:
		case <-ctx.Done():
			s.stopErr = fmt.Errorf("etcd did not stop in time: %w", ctx.Err())
		}
	})
	return s.stopErr
}

func (s *Store) close() {
	s.closeOnce.Do(func() {
		if s.etcd != nil {
			s.quiet.Closing()
			s.etcd.Close() // a second Close panics
		}
	})
}

// userHandlers are served on every client listener before etcd's own mux.
func userHandlers() map[string]http.Handler {
	return map[string]http.Handler{
		// python3-etcd3gw 2.0.0 (Debian) calls the gateway at /v3alpha/,
		// which etcd dropped in 3.5; etcd itself still rewrites /v3beta/.
		"/v3alpha/": aliasOf("/v3alpha/", "/v3/"),
		// expvar and pprof are registered on Go's default mux by etcd's
		// imports, and etcd serves /debug/vars itself: none of it here.
		"/debug/": http.NotFoundHandler(),
	}
}

// aliasOf serves requests under from as if they had been made under to, by
// the same server, so streaming responses (watch) behave as on /v3/.
func aliasOf(from, to string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		srv, ok := r.Context().Value(http.ServerContextKey).(*http.Server)
		if !ok || srv.Handler == nil {
			http.NotFound(w, r)
			return
		}
		r2 := r.Clone(r.Context())
		r2.URL.Path = to + strings.TrimPrefix(r.URL.Path, from)
		r2.URL.RawPath = ""
		r2.RequestURI = r2.URL.RequestURI()
		srv.Handler.ServeHTTP(w, r2)
	})
}

// Endpoints are addresses at which a client in this process or on this
// machine reaches the member: its client listen URLs, with an unspecified
// address (0.0.0.0, ::) replaced by loopback.
func (s *Store) Endpoints() []string {
	var out []string
	for _, u := range s.ec.ListenClientUrls {
		host, port, err := net.SplitHostPort(u.Host)
		if err != nil {
			continue
		}
		if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
			host = "127.0.0.1"
		}
		out = append(out, u.Scheme+"://"+net.JoinHostPort(host, port))
	}
	return out
}
