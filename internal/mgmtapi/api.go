// Package mgmtapi is RabbitMQ 3.10's management HTTP API (the /api/ of
// the rabbitmq_management plugin) over substrate's broker, so that
// rabbitmqadmin, monitoring checks and dashboards work unchanged: the same
// paths, the same JSON keys and value types, the same error bodies and
// status codes, HTTP basic auth against the broker's users with the
// management tags (management, policymaker, monitoring, administrator)
// granting what they grant in RabbitMQ.
//
// Declaring, deleting, binding, purging, publishing and getting go over a
// direct connection (broker.Server.DirectConn) opened as the requesting
// user, as RabbitMQ's plugin does, so the user's permissions and the
// broker's error texts apply.
//
// # What is approximated
//
// The keys and value types are RabbitMQ's (TestShapes checks them against
// recordings of RabbitMQ 3.10.8); some values stand in for what an Erlang
// node has and substrate has not:
//
//   - reductions, garbage_collection (Erlang's defaults), run_queue,
//     context_switches, io_*, mnesia_*, msg_store_*, queue_index_* are 0;
//   - proc_used is goroutines, gc_num and gc_bytes_reclaimed are Go's GC,
//     mem_used is the broker's accounted memory (its alarm's figure);
//     erlang_version is Go's version;
//   - backing_queue_status, messages_ram and consumer_utilisation (1 with
//     consumers, else 0) are derived from the queue's counts;
//   - channel idle_since is when the sampler last saw its counters move;
//   - exchanges have no message_stats (no per-exchange counters), nodes
//     no config_files, definitions no global_parameters, extensions is [];
//   - properties_key of a binding with arguments hashes them with FNV,
//     not Erlang's phash2 (clients take it from listings).
//
// # Goroutines
//
// One sampler goroutine (started by Start, stopped by Stop) reads the
// broker's monotonic counters every Config.SampleInterval (RabbitMQ's
// collect_statistics_interval, 5 s) and keeps the last two samples; the
// *_details.rate of a counter is its difference over their interval.
// Handlers run on net/http's goroutines and take only sampler.mu (to read
// the samples), never while calling the broker.
package mgmtapi

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"substrate/broker"
	"substrate/internal/faults"
	"substrate/internal/logging"
)

// Version is the RabbitMQ version the API presents itself as (rabbitmqadmin
// and dashboards read rabbitmq_version and management_version).
const Version = "3.10.8"

// Listener is one listening port, for overview's listeners and the
// port-listener health check.
type Listener struct {
	Protocol string // "amqp", "amqp/ssl", "http", "https", "clustering"
	Addr     net.Addr
}

// Config of the API.
type Config struct {
	Broker *broker.Server
	// Node is the node name shown as "node" and "name" of /api/nodes
	// (default DefaultNode()).
	Node string
	// ClusterName is overview's cluster_name (default: the broker's
	// cluster_name server property, "substrate@" + host name).
	ClusterName string
	// Listeners returns the ports the process listens on (called per
	// request; nil: none shown).
	Listeners func() []Listener
	Logger    *slog.Logger
	// SampleInterval is how often message counters are sampled for rates
	// (default 5 s, RabbitMQ's collect_statistics_interval).
	SampleInterval time.Duration
	// DataDir is shown as the node's db_dir.
	DataDir string
	// ProductVersion is substrate's version, overview's product_version
	// (product_name is "substrate", as RabbitMQ's product.name setting
	// would show it); default "dev".
	ProductVersion string
}

// DefaultNode is RabbitMQ's default node name on this host: "rabbit@"
// and the short host name.
func DefaultNode() string {
	h, _ := os.Hostname()
	if i := strings.IndexByte(h, '.'); i > 0 {
		h = h[:i]
	}
	return "rabbit@" + h
}

// API serves /api/.
type API struct {
	cfg     Config
	b       *broker.Server
	log     *slog.Logger
	routes  []route
	sampler *sampler
	started time.Time

	running  atomic.Bool
	stopOnce sync.Once
	stopc    chan struct{}
	done     chan struct{}
}

// New returns the API for cfg. The sampler starts with Start.
func New(cfg Config) *API {
	if cfg.Node == "" {
		cfg.Node = DefaultNode()
	}
	if cfg.ClusterName == "" {
		h, _ := os.Hostname()
		cfg.ClusterName = "substrate@" + h
	}
	if cfg.ProductVersion == "" {
		cfg.ProductVersion = "dev"
	}
	if cfg.SampleInterval <= 0 {
		cfg.SampleInterval = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = logging.Discard()
	}
	a := &API{cfg: cfg, b: cfg.Broker, log: cfg.Logger, started: time.Now(),
		stopc: make(chan struct{}), done: make(chan struct{})}
	a.sampler = newSampler()
	a.routes = a.table()
	return a
}

// Start starts the sampler goroutine; it takes a first sample at once.
func (a *API) Start() {
	a.started = time.Now()
	a.sampler.take(a.collect())
	a.running.Store(true)
	go a.sample()
}

// Stop stops the sampler and waits for it; it is idempotent and may be
// called without Start.
func (a *API) Stop() {
	a.stopOnce.Do(func() { close(a.stopc) })
	if a.running.Load() {
		<-a.done
	}
}

func (a *API) sample() {
	defer close(a.done)
	t := time.NewTicker(a.cfg.SampleInterval)
	defer t.Stop()
	for {
		select {
		case <-a.stopc:
			return
		case <-t.C:
			a.sampleOnce()
		}
	}
}

// sampleOnce takes one sample; a panic skips it (logged and counted) and
// the sampler goes on.
func (a *API) sampleOnce() {
	defer faults.Recover(a.log, faults.HTTP, "mgmtapi sampler", nil)
	a.sampler.take(a.collect())
}

// ---- routing ----

// access is what a route requires of the user (rabbit_mgmt_util's
// is_authorized_* checks).
type access int

const (
	accMgmt    access = iota // any management tag
	accVHost                 // management, and access to the {vhost} in the path
	accMonitor               // monitoring or administrator
	accAdmin                 // administrator
	accPolicy                // policymaker or administrator, and access to {vhost}
)

type handler func(w http.ResponseWriter, r *http.Request, rq *request)

type route struct {
	method  string
	segs    []string // literal segments, "{name}" for variables
	acc     access
	handler handler
}

// request is one authenticated request: its user and path variables.
type request struct {
	user   broker.User
	pass   string
	vars   map[string]string
	params url.Values
}

func (rq *request) v(name string) string { return rq.vars[name] }

// ServeHTTP routes r. The path is split on "/" before unescaping, so that
// %2F (the default vhost "/") stays inside its segment, as RabbitMQ reads
// it.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	raw := r.URL.EscapedPath()
	raw = strings.TrimPrefix(raw, "/api")
	raw = strings.TrimPrefix(raw, "/")
	raw = strings.TrimSuffix(raw, "/")
	var segs []string
	if raw != "" {
		for _, s := range strings.Split(raw, "/") {
			u, err := url.PathUnescape(s)
			if err != nil {
				notFound(w)
				return
			}
			segs = append(segs, u)
		}
	}
	method := r.Method
	if method == http.MethodHead {
		method = http.MethodGet
	}
	var allowed []string
	for i := range a.routes {
		rt := &a.routes[i]
		vars, ok := rt.match(segs)
		if !ok {
			continue
		}
		if rt.method != method {
			allowed = append(allowed, rt.method)
			continue
		}
		rq, ok := a.authenticate(w, r, rt.acc, vars)
		if !ok {
			return
		}
		rt.handler(w, r, rq)
		return
	}
	if len(allowed) > 0 {
		w.Header().Set("Allow", strings.Join(append(allowed, "HEAD", "OPTIONS"), ", "))
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	notFound(w)
}

func (rt *route) match(segs []string) (map[string]string, bool) {
	if len(segs) != len(rt.segs) {
		return nil, false
	}
	var vars map[string]string
	for i, p := range rt.segs {
		if strings.HasPrefix(p, "{") {
			if vars == nil {
				vars = map[string]string{}
			}
			vars[p[1:len(p)-1]] = segs[i]
			continue
		}
		if p != segs[i] {
			return nil, false
		}
	}
	return vars, true
}

func (a *API) add(rs *[]route, method, path string, acc access, h handler) {
	*rs = append(*rs, route{method: method, segs: strings.Split(strings.Trim(path, "/"), "/"), acc: acc, handler: h})
}

// table lists the API's routes.
func (a *API) table() []route {
	var rs []route
	add := func(m, p string, acc access, h handler) { a.add(&rs, m, p, acc, h) }
	const G, P, D, O = http.MethodGet, http.MethodPut, http.MethodDelete, http.MethodPost

	add(G, "overview", accMgmt, a.overview)
	add(G, "cluster-name", accMgmt, a.clusterName)
	add(G, "nodes", accMonitor, a.nodes)
	add(G, "nodes/{node}", accMonitor, a.node)
	add(G, "extensions", accMgmt, a.extensions)
	add(G, "whoami", accMgmt, a.whoami)

	add(G, "connections", accMgmt, a.connections)
	add(G, "connections/{name}", accMgmt, a.connection)
	add(D, "connections/{name}", accMgmt, a.closeConnection)
	add(G, "connections/{name}/channels", accMgmt, a.connectionChannels)
	add(G, "vhosts/{vhost}/connections", accVHost, a.connections)
	add(G, "channels", accMgmt, a.channels)
	add(G, "vhosts/{vhost}/channels", accVHost, a.channels)
	add(G, "channels/{name}", accMgmt, a.channel)
	add(G, "consumers", accMgmt, a.consumers)
	add(G, "consumers/{vhost}", accVHost, a.consumers)

	add(G, "exchanges", accMgmt, a.exchanges)
	add(G, "exchanges/{vhost}", accVHost, a.exchanges)
	add(G, "exchanges/{vhost}/{name}", accVHost, a.exchange)
	add(P, "exchanges/{vhost}/{name}", accVHost, a.putExchange)
	add(D, "exchanges/{vhost}/{name}", accVHost, a.deleteExchange)
	add(G, "exchanges/{vhost}/{name}/bindings/source", accVHost, a.exchangeBindings("source"))
	add(G, "exchanges/{vhost}/{name}/bindings/destination", accVHost, a.exchangeBindings("destination"))
	add(O, "exchanges/{vhost}/{name}/publish", accVHost, a.publish)

	add(G, "queues", accMgmt, a.queues)
	add(G, "queues/{vhost}", accVHost, a.queues)
	add(G, "queues/{vhost}/{name}", accVHost, a.queue)
	add(P, "queues/{vhost}/{name}", accVHost, a.putQueue)
	add(D, "queues/{vhost}/{name}", accVHost, a.deleteQueue)
	add(D, "queues/{vhost}/{name}/contents", accVHost, a.purgeQueue)
	add(O, "queues/{vhost}/{name}/get", accVHost, a.getMessages)
	add(G, "queues/{vhost}/{name}/bindings", accVHost, a.queueBindings)

	add(G, "bindings", accMgmt, a.bindings)
	add(G, "bindings/{vhost}", accVHost, a.bindings)
	for _, t := range []string{"q", "e"} {
		add(G, "bindings/{vhost}/e/{source}/"+t+"/{destination}", accVHost, a.bindingsBetween(t))
		add(O, "bindings/{vhost}/e/{source}/"+t+"/{destination}", accVHost, a.bind(t))
		add(G, "bindings/{vhost}/e/{source}/"+t+"/{destination}/{props}", accVHost, a.binding(t))
		add(D, "bindings/{vhost}/e/{source}/"+t+"/{destination}/{props}", accVHost, a.unbind(t))
	}

	add(G, "vhosts", accMgmt, a.vhosts)
	add(G, "vhosts/{vhost}", accVHost, a.vhost)
	add(P, "vhosts/{vhost}", accAdmin, a.putVHost)
	add(D, "vhosts/{vhost}", accAdmin, a.deleteVHost)
	add(G, "vhosts/{vhost}/permissions", accAdmin, a.vhostPermissions)

	add(G, "users", accAdmin, a.users)
	add(G, "users/without-permissions", accAdmin, a.usersWithoutPermissions)
	add(G, "users/{user}", accAdmin, a.user)
	add(P, "users/{user}", accAdmin, a.putUser)
	add(D, "users/{user}", accAdmin, a.deleteUser)
	add(G, "users/{user}/permissions", accAdmin, a.userPermissions)

	add(G, "permissions", accAdmin, a.permissions)
	add(G, "permissions/{vhost}/{user}", accAdmin, a.permission)
	add(P, "permissions/{vhost}/{user}", accAdmin, a.putPermission)
	add(D, "permissions/{vhost}/{user}", accAdmin, a.deletePermission)

	a.policyRoutes(add)

	a.definitionRoutes(add)
	a.limitRoutes(add)
	a.parameterRoutes(add)

	add(G, "health/checks/alarms", accMgmt, a.checkAlarms)
	add(G, "health/checks/local-alarms", accMgmt, a.checkAlarms)
	add(G, "health/checks/port-listener/{port}", accMgmt, a.checkPortListener)
	add(G, "health/checks/protocol-listener/{protocol}", accMgmt, a.checkProtocolListener)
	add(G, "health/checks/virtual-hosts", accMgmt, a.checkVirtualHosts)
	// One node: stopping it leaves no mirror unsynchronised and no
	// quorum queue short of members elsewhere, as RabbitMQ answers alone.
	add(G, "health/checks/node-is-mirror-sync-critical", accMgmt, a.checkOK)
	add(G, "health/checks/node-is-quorum-critical", accMgmt, a.checkOK)
	add(G, "aliveness-test/{vhost}", accVHost, a.aliveness)
	return rs
}

// ---- replies ----

// writeJSON writes v as RabbitMQ does: 200, application/json,
// cache-control: no-cache.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"internal_error","reason":"`+err.Error()+`"}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-cache")
	h.Set("Vary", "accept, accept-encoding, origin")
	w.WriteHeader(status)
	w.Write(b)
}

// writeError writes RabbitMQ's error body {"error":..., "reason":...}.
func writeError(w http.ResponseWriter, status int, errName string, reason any) {
	writeJSON(w, status, map[string]any{"error": errName, "reason": reason})
}

func notFound(w http.ResponseWriter) {
	writeError(w, http.StatusNotFound, "Object Not Found", "Not Found")
}

func badRequest(w http.ResponseWriter, reason any) {
	writeError(w, http.StatusBadRequest, "bad_request", reason)
}

// created answers a PUT or POST that made something: 201 with no body;
// 204 when it existed.
func noContent(w http.ResponseWriter, created bool) {
	if created {
		w.WriteHeader(http.StatusCreated)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// ctx is the context of a broker call made for r.
func ctx(r *http.Request) context.Context { return r.Context() }
