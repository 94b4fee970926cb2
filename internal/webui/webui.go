// Package webui is substrate's dashboard at / on the management HTTP port:
// one page of plain HTML, CSS and JavaScript, embedded in the binary
// (assets/), that polls JSON every few seconds and draws what an operator
// checks first: the health of each service, active alarms, the broker's
// connections (by connection_name) and queues (depth, consumers, message
// rates over the last minutes), the cache's hit ratio, memory and
// evictions, the etcd members, leader and database size, and, on a node
// of a broker cluster (docs/cluster.md), each broker node's Raft role,
// term and indexes.
//
// Where the numbers come from:
//
//   - broker: RabbitMQ's management API (/api/overview, /api/queues,
//     /api/connections; internal/mgmtapi), so the page and rabbitmqadmin
//     or a monitoring check never disagree;
//   - everything that is substrate's own (health, alarms, cache, etcd,
//     the broker cluster):
//     GET /substrate/status, served here (status.go).
//
// Message rates and depths over time are sampled by the page itself at
// each poll and kept in the tab's sessionStorage (10 minutes), so a reload
// keeps the charts; the server keeps no history for the page.
//
// Login: as RabbitMQ's management UI, the page shows its own login form
// and sends the credentials as HTTP basic auth with every request (kept in
// sessionStorage, gone when the tab closes); the status endpoint answers
// 401 without WWW-Authenticate, so browsers do not raise their own
// prompt over the form. The broker's users log in (guest/guest from
// loopback by default) when the broker runs; without it there is no user
// database and the status endpoint is open, as /metrics is.
//
// The package starts no goroutine and holds no lock of its own; each
// request reads its sources on the request's goroutine.
package webui

import (
	"context"
	"embed"
	"io/fs"
	"net/http"
	"time"

	"substrate/cache"
	"substrate/kvstore"
)

//go:embed assets
var assets embed.FS

// Config says where the page's figures come from. A nil source is a
// service this process does not run: the page shows it as disabled.
type Config struct {
	Version  string   // "substrate 0.1.0 (go1.26)"
	Services []string // the services this process runs (--services), in start order

	// Health checks each enabled service (cmd/substrate/health.go). nil:
	// the page shows running services as running, unchecked.
	Health func(ctx context.Context) []Check

	// Alarms are the active resource alarms outside etcd (the broker's
	// memory and disk alarms); etcd's own come with Etcd.
	Alarms func() []Alarm

	Cache func() cache.Stats             // nil: memcached not running
	Etcd  func() (kvstore.Status, error) // nil: etcd not running

	// Cluster returns every node of the broker's Raft group as this node
	// sees it (asking each over its peer port; the call bounds its own
	// wait). nil: the broker is not clustered, the page shows no cluster.
	Cluster func() []ClusterNode

	// Authenticate checks a request's basic auth as the management API
	// does (user, password, loopback rule for guest, a tag that grants
	// the management UI) and returns the user's name. nil: no broker, no
	// user database: the status endpoint is open, as /metrics is.
	Authenticate func(r *http.Request) (user string, err error)

	Now func() time.Time // nil: time.Now
}

// Check is the health of one service.
type Check struct {
	Service string `json:"service"`
	OK      bool   `json:"ok"`
	Detail  string `json:"detail,omitempty"` // why it failed, or what was checked
}

// Alarm is one active resource alarm.
type Alarm struct {
	Service  string `json:"service"`  // "amqp", "etcd"
	Resource string `json:"resource"` // "memory", "disk", "NOSPACE"
	Detail   string `json:"detail,omitempty"`
}

// ClusterNode is one node of the broker cluster.
type ClusterNode struct {
	Name      string // "rabbit@ctl1", as rabbitmqctl cluster_status names it
	Self      bool   // the node serving this page
	Reachable bool   // it answered on its peer port; nothing below is known otherwise
	Leader    bool   // the Raft leader
	Active    bool   // its broker serves clients (the leader's; the others forward)
	Term      uint64 // Raft term
	Commit    uint64 // Raft commit index
	Applied   uint64 // Raft applied index
	Forwarded int    // AMQP connections it forwards to the leader
	Err       string // why it could not be asked
	Learner   bool   // a member being added: it receives the log, does not vote yet
}

// Handler serves the page, its assets and the status JSON.
type Handler struct {
	cfg     Config
	started time.Time
	static  http.Handler
}

// New returns the handler; started is when the process started (the
// page's uptime).
func New(cfg Config, started time.Time) *Handler {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	sub, err := fs.Sub(assets, "assets")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	return &Handler{cfg: cfg, started: started, static: http.FileServerFS(sub)}
}

// Register mounts the page on mux: / (the page), /ui/ (its scripts and
// styles) and /substrate/status.
func (h *Handler) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /{$}", h.page)
	mux.Handle("GET /ui/", http.StripPrefix("/ui", h.assetHeaders(h.static)))
	mux.HandleFunc("GET /substrate/status", h.status)
}

func (h *Handler) page(w http.ResponseWriter, r *http.Request) {
	b, err := assets.ReadFile("assets/index.html")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	securityHeaders(w)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	w.Write(b)
}

func (h *Handler) assetHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/" || r.URL.Path == "/index.html" { // the page lives at /, not as a listing
			http.NotFound(w, r)
			return
		}
		securityHeaders(w)
		w.Header().Set("Cache-Control", "no-cache")
		next.ServeHTTP(w, r)
	})
}

// securityHeaders: the page loads nothing from elsewhere and runs no
// inline script, so a policy that says so costs nothing.
func securityHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
}
