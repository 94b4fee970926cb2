package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"substrate/internal/faults"
)

// ExitUnavailable is rabbitmqctl's code when it cannot reach the node.
const ExitUnavailable = 69

// Server answers ctl clients on the unix socket of a data directory.
type Server struct {
	path string
	b    Broker
	bfn  func() Broker // WithBroker
	node Node
	log  *slog.Logger
	srv  *http.Server
	ln   net.Listener
	wg   sync.WaitGroup
	errc chan error
	once sync.Once
}

// NewServer returns a ctl server for the broker of the process whose data
// directory is dataDir.
func NewServer(dataDir string, b Broker) *Server {
	s := &Server{path: SocketPath(dataDir), b: b, log: slog.New(slog.DiscardHandler), errc: make(chan error, 1)}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /run", s.run)
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	return s
}

// SiteRun is the fault-injection site of a ctl command (internal/faults);
// subject: the command line, words joined by spaces.
const SiteRun = "ctl.run"

// WithLogger sets the logger of panics recovered while running a command
// (default: discard) and returns s.
func (s *Server) WithLogger(log *slog.Logger) *Server {
	s.log = log
	return s
}

// WithBroker makes each command run against fn's broker, nil while this
// node's broker does not run (a cluster node that does not lead: the
// commands that need it say which node does), and returns s.
func (s *Server) WithBroker(fn func() Broker) *Server {
	s.bfn = fn
	return s
}

// WithNode sets what status, listeners and the like report of the
// serving process, and returns s.
func (s *Server) WithNode(n Node) *Server {
	s.node = n
	return s
}

func (s *Server) run(w http.ResponseWriter, r *http.Request) {
	// A Request, or a bare array: a rabbitmqctl command line.
	var raw json.RawMessage
	if err := json.NewDecoder(r.Body).Decode(&raw); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var req Request
	var err error
	switch t := bytes.TrimLeft(raw, " \t\r\n"); {
	case len(t) > 0 && t[0] == '[':
		err = json.Unmarshal(raw, &req.Argv)
	case len(t) > 0 && t[0] == '{':
		err = json.Unmarshal(raw, &req)
	default:
		err = errors.New("ctl: a request is a JSON array (the command line) or object (Request)")
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(s.runSafely(r.Context(), req))
}

// runSafely runs one command; a panic in it answers this request with an
// error (code 70, as rabbitmqctl's internal errors) and the server goes
// on serving others.
func (s *Server) runSafely(ctx context.Context, req Request) (res Result) {
	line := strings.Join(Redact(req.Argv), " ")
	defer func() {
		if v := recover(); v != nil {
			faults.Handle(s.log, faults.Ctl, "ctl: "+line, v, nil)
			res = Result{Stderr: fmt.Sprintf("Error:\ninternal error in substrate while running %q: %v\n", line, v), Code: ExitSoftware}
		}
	}()
	faults.Point(SiteRun, line)
	b := s.b
	if s.bfn != nil {
		b = s.bfn() // a nil interface (never a typed nil) while no broker runs
	}
	return Exec(ctx, b, s.node, req)
}

// secretArg is, for each command that takes a password, the password's
// position among the command's arguments.
var secretArg = map[string]int{"add_user": 1, "change_password": 1, "authenticate_user": 1}

// Redact returns argv with passwords replaced, for a log line or an error
// that may reach one.
func Redact(argv []string) []string {
	out := slices.Clone(argv)
	for i, w := range out {
		if pos, ok := secretArg[w]; ok {
			if j := i + 1 + pos; j < len(out) {
				out[j] = "[redacted]"
			}
			break
		}
	}
	return out
}

// Name is the service name in logs.
func (s *Server) Name() string { return "ctl" }

// Err reports a listener failure.
func (s *Server) Err() <-chan error { return s.errc }

// Start listens on the socket (mode 0600). A socket file left by a process
// that is gone is replaced; one that answers means another substrate uses
// this data directory, which is an error.
//
// The socket is never reachable by others, not even for an instant: it is
// bound in a new directory of mode 0700 beside its final path, made 0600
// there, and renamed into place (umask is per process, so setting it
// around Listen would race with every other file this process creates).
func (s *Server) Start(ctx context.Context) error {
	if c, err := net.DialTimeout("unix", s.path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("ctl socket %s is in use: is another substrate running on this data directory?", s.path)
	}
	ln, err := listenPrivate(ctx, s.path)
	if err != nil {
		return fmt.Errorf("ctl socket: %w", err)
	}
	s.ln = ln
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			s.errc <- err
		}
	}()
	return nil
}

// listenPrivate listens on a unix socket at path that only this user can
// connect to from the moment it exists.
func listenPrivate(ctx context.Context, path string) (net.Listener, error) {
	dir, err := os.MkdirTemp(filepath.Dir(path), ".ctl-") // mode 0700
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	tmp := filepath.Join(dir, "s")
	ln, err := (&net.ListenConfig{}).Listen(ctx, "unix", tmp)
	if err != nil {
		return nil, err
	}
	// The listener must not unlink the temporary name at Close: the file
	// has moved; Shutdown removes it by its final name.
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	os.Remove(path) // a socket left by a process that is gone
	if err := os.Rename(tmp, path); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// Shutdown stops serving and removes the socket; it is idempotent.
func (s *Server) Shutdown(ctx context.Context) error {
	var err error
	s.once.Do(func() {
		err = s.srv.Shutdown(ctx)
		s.wg.Wait()
		if s.ln != nil {
			os.Remove(s.path)
		}
	})
	return err
}

// Call runs req on the substrate whose data directory is dataDir. A
// substrate that cannot be reached is ErrUnreachable's Result, with
// Unreachable set.
func Call(ctx context.Context, dataDir string, req Request) Result {
	path := SocketPath(dataDir)
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", path)
		},
	}}
	body, _ := json.Marshal(req)
	hreq, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://substrate/run", bytes.NewReader(body))
	resp, err := client.Do(hreq)
	if err != nil {
		return Result{Stderr: unreachable(path, dataDir, err), Code: ExitUnavailable, Unreachable: true}
	}
	defer resp.Body.Close()
	var res Result
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&res) != nil {
		return Result{Stderr: fmt.Sprintf("Error: substrate answered %s\n", resp.Status), Code: ExitSoftware}
	}
	return res
}

// unreachable is rabbitmqctl's answer when the node does not answer, with
// substrate's diagnostics.
func unreachable(path, dataDir string, err error) string {
	node := NodeName()
	return unreachableNode(node, fmt.Sprintf(`%s:
  * substrate's control socket %s: %v
  * is `+"`substrate serve`"+` running with the amqp service and --data-dir %s?
    (ctl finds the data directory from --data-dir, SUBSTRATE_DATA_DIR,
    --config or SUBSTRATE_CONFIG, or /etc/substrate/substrate.yaml)
  * suggestion: start the node

`, node, path, err, dataDir))
}

// unreachableNode is rabbitmqctl's answer when node does not answer;
// details end its DIAGNOSTICS.
func unreachableNode(node, details string) string {
	return fmt.Sprintf(`Error: unable to perform an operation on node '%s'. Please see diagnostics information and suggestions below.

Most common reasons for this are:

 * Target node is unreachable (e.g. due to hostname resolution, TCP connection or firewall issues)
 * CLI tool fails to authenticate with the server (e.g. due to CLI tool's Erlang cookie not matching that of the server)
 * Target node is not running

In addition to the diagnostics info below:

 * See the CLI, clustering and networking guides on https://rabbitmq.com/documentation.html to learn more
 * Consult server logs on node %s
 * If target node is configured to use long node names, don't forget to use --longnames with CLI tools

DIAGNOSTICS
===========

attempted to contact: [%s]

%s`, node, node, node, details)
}
