// Package mgmt is substrate's management HTTP service (port 15672 by
// default): Prometheus metrics for every subsystem, a health check, and a
// plain-text status page, and RabbitMQ's management API under /api/
// (Config.API, internal/mgmtapi).
//
// It serves its own mux: importing etcd registers pprof and expvar handlers
// on http.DefaultServeMux, which must never be reachable.
package mgmt

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"substrate/internal/faults"
	"substrate/internal/logging"
	"substrate/internal/preflight"
)

// Config of the management service.
type Config struct {
	Addrs    []string     // host:port to listen on
	Version  string       // first line of the status page
	Services []string     // names of the services this process runs
	Logger   *slog.Logger // nil: discard

	// TLSAddrs are the HTTPS addresses (RabbitMQ's management.ssl,
	// port 15671), served with TLS; the same handlers as Addrs.
	TLSAddrs []string
	TLS      *tls.Config // required with TLSAddrs (tlsutil.Store.ServerConfig)

	// API, when set, serves RabbitMQ's management API (internal/mgmtapi)
	// at /api and below, outside the mux (whose path cleaning would undo
	// %2F, the default vhost); started and stopped with the server.
	API interface {
		http.Handler
		Start()
		Stop()
	}

	// UI, when set, serves / (the dashboard, internal/webui) and the
	// paths it registers; nil: / is the plain-text status.
	UI interface{ Register(mux *http.ServeMux) }

	// Health checks the services for /healthz: one line per failing
	// service, none when all are healthy (then 200 "ok"; else 503 with
	// the lines). nil: always healthy.
	Health func(ctx context.Context) []string
	// PerObjectMetrics is served on /metrics/per-object (RabbitMQ's
	// per-queue, per-channel and per-connection metrics); nil: 404.
	PerObjectMetrics prometheus.Gatherer
}

// Server is the management HTTP service.
type Server struct {
	cfg     Config
	started time.Time
	srv     *http.Server
	lns     []net.Listener
	wg      sync.WaitGroup
	errc    chan error
	once    sync.Once
	stopErr error
}

// New returns a server for cfg; it does not listen yet.
func New(cfg Config) (*Server, error) {
	if len(cfg.Addrs) == 0 && len(cfg.TLSAddrs) == 0 {
		return nil, errors.New("mgmt: no listen address")
	}
	if len(cfg.TLSAddrs) > 0 && cfg.TLS == nil {
		return nil, errors.New("mgmt: HTTPS addresses without a TLS configuration")
	}
	if cfg.Logger == nil {
		cfg.Logger = logging.Discard()
	}
	s := &Server{cfg: cfg, errc: make(chan error, len(cfg.Addrs))}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.Handler())
	mux.HandleFunc("GET /healthz", s.healthz)
	if cfg.PerObjectMetrics != nil {
		mux.Handle("GET /metrics/per-object", promhttp.HandlerFor(cfg.PerObjectMetrics, promhttp.HandlerOpts{}))
	}
	if cfg.UI != nil {
		cfg.UI.Register(mux)
	} else {
		mux.HandleFunc("GET /{$}", s.status)
	}
	var h http.Handler = mux
	if cfg.API != nil {
		h = withAPI(cfg.API, mux)
	}
	s.srv = &http.Server{Handler: recoverPanics(cfg.Logger, h), ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: log.New(serverErrors{logging.NewLimiter(cfg.Logger, "http", 10, time.Second)}, "", 0)}
	return s, nil
}

// withAPI sends /api and the paths below it to api, the rest to mux.
func withAPI(api, mux http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := r.URL.Path; p == "/api" || strings.HasPrefix(p, "/api/") {
			api.ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// serverErrors takes net/http's own error lines (a failed TLS handshake:
// "http: TLS handshake error from 127.0.0.1:40000: remote error: tls: bad
// certificate") into the log, rate-limited per peer IP.
type serverErrors struct{ l *logging.Limiter }

func (e serverErrors) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	key := "http"
	peer := ""
	if _, rest, ok := strings.Cut(line, " from "); ok {
		if hp, _, ok := strings.Cut(rest, ": "); ok {
			peer = hp
			key = logging.PeerKeyString(hp)
		}
	}
	msg := "http: server error"
	if strings.Contains(line, "TLS handshake error") {
		msg = "http: TLS handshake failed"
	}
	e.l.Log(key, slog.LevelWarn, msg, "peer", peer, "err", line)
	return len(p), nil
}

// SiteHandler is the fault-injection site of every request
// (internal/faults); subject: the request's path.
const SiteHandler = "http.handler"

// recoverPanics answers a request whose handler panics with 500 (when no
// reply has started; otherwise the reply is cut short), logs the panic
// once with the peer and counts it for "http". net/http would recover
// too, but only by dropping the connection and without counting it.
func recoverPanics(log *slog.Logger, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v == http.ErrAbortHandler { // net/http's way to abort a reply on purpose
				panic(v)
			}
			faults.Handle(log, faults.HTTP, r.RemoteAddr+" "+r.Method+" "+r.URL.Path, v, nil)
			http.Error(w, "500 internal server error", http.StatusInternalServerError)
		}()
		faults.Point(SiteHandler, r.URL.Path)
		h.ServeHTTP(w, r)
	})
}

// healthz answers 200 "ok" when every service is healthy, else 503 with
// one line per failing service (Config.Health).
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	var failed []string
	if s.cfg.Health != nil {
		failed = s.cfg.Health(r.Context())
	}
	if len(failed) == 0 {
		fmt.Fprintln(w, "ok")
		return
	}
	w.WriteHeader(http.StatusServiceUnavailable)
	for _, l := range failed {
		fmt.Fprintln(w, l)
	}
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "%s\nup %s\nservices:", s.cfg.Version, time.Since(s.started).Round(time.Second))
	for _, name := range s.cfg.Services {
		fmt.Fprintf(w, " %s", name)
	}
	fmt.Fprintln(w)
}

// Name is the service name used by --services.
func (s *Server) Name() string { return "http" }

// Ports lists the addresses the server will listen on.
func (s *Server) Ports() []preflight.Port {
	var ports []preflight.Port
	for _, a := range s.cfg.Addrs {
		ports = append(ports, preflight.Port{What: "http port", Addr: a})
	}
	for _, a := range s.cfg.TLSAddrs {
		ports = append(ports, preflight.Port{What: "https port", Addr: a})
	}
	return ports
}

// Start binds every address and serves; it returns once all accept.
func (s *Server) Start(ctx context.Context) error {
	s.started = time.Now()
	for _, a := range s.cfg.Addrs {
		l, err := (&net.ListenConfig{}).Listen(ctx, "tcp", a)
		if err != nil {
			for _, l := range s.lns {
				l.Close()
			}
			return fmt.Errorf("http port: %w", err)
		}
		s.lns = append(s.lns, l)
	}
	for _, a := range s.cfg.TLSAddrs {
		l, err := (&net.ListenConfig{}).Listen(ctx, "tcp", a)
		if err != nil {
			for _, l := range s.lns {
				l.Close()
			}
			return fmt.Errorf("https port: %w", err)
		}
		s.lns = append(s.lns, tls.NewListener(l, s.cfg.TLS))
	}
	if s.cfg.API != nil {
		s.cfg.API.Start()
	}
	for _, l := range s.lns {
		s.wg.Add(1)
		go func(l net.Listener) {
			defer s.wg.Done()
			if err := s.srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
				s.errc <- err
			}
		}(l)
	}
	return nil
}

// Addrs are the bound addresses (after Start): Config.Addrs, then
// Config.TLSAddrs.
func (s *Server) Addrs() []net.Addr {
	out := make([]net.Addr, len(s.lns))
	for i, l := range s.lns {
		out[i] = l.Addr()
	}
	return out
}

// Err reports a failure of a listener.
func (s *Server) Err() <-chan error { return s.errc }

// Shutdown stops the server gracefully; it is idempotent.
func (s *Server) Shutdown(ctx context.Context) error {
	s.once.Do(func() {
		s.stopErr = s.srv.Shutdown(ctx)
		s.wg.Wait()
		if s.cfg.API != nil {
			s.cfg.API.Stop()
		}
	})
	return s.stopErr
}
