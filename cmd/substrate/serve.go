package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"substrate/broker"
	"substrate/broker/etcddefs"
	"substrate/cache"
	"substrate/cache/redis"
	"substrate/internal/cluster"
	"substrate/internal/config"
	"substrate/internal/ctl"
	"substrate/internal/lifecycle"
	"substrate/internal/logging"
	"substrate/internal/memcachedcli"
	"substrate/internal/mgmt"
	"substrate/internal/mgmtapi"
	"substrate/internal/preflight"
	"substrate/internal/tlsutil"
	"substrate/kvstore"
)

// knownServices are the names --services accepts, in start order.
var knownServices = []string{"etcd", "amqp", "memcached", "redis", "http"}

// defaultServices run when --services is not given. redis is for labs and
// off unless asked for (--services ...,redis or --redis-port N).
var defaultServices = []string{"etcd", "amqp", "memcached", "http"}

// serveFlags are the flags of `substrate serve` (DESIGN.md's contract).
type serveFlags struct {
	config, dataDir, host, services string
	amqpPort, memcachedPort         int
	etcdClientPort, etcdPeerPort    int
	httpPort, redisPort             int
	etcdConfig, memcachedConfig     string
	memcachedOptions                string
	logLevel, etcdLogLevel          string
	logFormat                       string
	amqpMemoryHighWatermark         string
	amqpDiskFreeLimit               string
	amqpMaxConnections              int
	amqpsPort, httpsPort            int
	brokerPeerPort                  int
	brokerSnapshotEntries           int
	tlsCert, tlsKey, tlsCA          string
	tlsClientAuth                   string

	tls *tlsutil.Store // loaded from tlsCert, tlsKey, tlsCA; nil without TLS
}

func (f *serveFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.config, "config", "", "YAML config `file`; its keys are these flag names")
	fs.StringVar(&f.dataDir, "data-dir", "substrate-data", "data `directory` (etcd in DIR/etcd)")
	fs.StringVar(&f.host, "host", "127.0.0.1,::1", "comma-separated `addresses` or host names to listen on")
	fs.StringVar(&f.services, "services", strings.Join(defaultServices, ","), "comma-separated services to run: "+strings.Join(knownServices, ","))
	fs.IntVar(&f.amqpPort, "amqp-port", 5672, "AMQP 0-9-1 `port`")
	fs.IntVar(&f.memcachedPort, "memcached-port", 11211, "memcached `port`")
	fs.IntVar(&f.etcdClientPort, "etcd-client-port", 2379, "etcd client `port` (gRPC and JSON gateway)")
	fs.IntVar(&f.etcdPeerPort, "etcd-peer-port", 2380, "etcd peer `port`")
	fs.IntVar(&f.httpPort, "http-port", 15672, "management HTTP `port`")
	fs.IntVar(&f.brokerPeerPort, "broker-peer-port", 25672, "broker cluster `port` (Raft and forwarded clients; RabbitMQ's inter-node port), used when etcd's initial cluster names more than one member")
	fs.IntVar(&f.brokerSnapshotEntries, "broker-snapshot-entries", 10000, "in a cluster, Raft log `entries` between snapshots of the replicated message store (a follower further behind catches up from a snapshot)")
	fs.IntVar(&f.redisPort, "redis-port", 0, "serve Redis (miniredis, for labs) on this `port`; 0: off, or 6379 when --services names redis")
	fs.StringVar(&f.etcdConfig, "etcd-config", "", "etcd.conf `file` of ETCD_*=\"value\" lines, applied as etcd would")
	fs.StringVar(&f.memcachedConfig, "memcached-config", "", "/etc/sysconfig/memcached-style `file` (PORT USER MAXCONN CACHESIZE OPTIONS)")
	fs.StringVar(&f.memcachedOptions, "memcached-options", "", "memcached 1.6 `flags` for the cache, e.g. \"-m 1024 -c 4096\" (after --memcached-config's)")
	fs.StringVar(&f.amqpMemoryHighWatermark, "amqp-memory-high-watermark", "0.4",
		"memory alarm `threshold`: a fraction of memory (RabbitMQ's vm_memory_high_watermark) or an amount such as 512MiB; 0: off")
	fs.StringVar(&f.amqpDiskFreeLimit, "amqp-disk-free-limit", "50MB",
		"disk alarm `threshold`: free space on the data directory's filesystem below which publishers are blocked (RabbitMQ's disk_free_limit): an amount such as 1GB, or a multiple of memory such as 1.0; 0: off")
	fs.IntVar(&f.amqpMaxConnections, "amqp-max-connections", 0, "AMQP connections accepted at once (RabbitMQ's connection_max); 0: unlimited")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "PEM certificate chain `file` of the server: turns on AMQPS (--amqps-port) and management HTTPS (--https-port)")
	fs.StringVar(&f.tlsKey, "tls-key", "", "PEM private key `file` of --tls-cert")
	fs.StringVar(&f.tlsCA, "tls-ca", "", "PEM `file` of the CAs client certificates must chain to")
	fs.StringVar(&f.tlsClientAuth, "tls-client-auth", "none", "client certificates: none, request (verified when sent; EXTERNAL login) or require")
	fs.IntVar(&f.amqpsPort, "amqps-port", defaultAMQPSPort, "AMQP 0-9-1 over TLS `port` (with --tls-cert)")
	fs.IntVar(&f.httpsPort, "https-port", defaultHTTPSPort, "management HTTPS `port` (with --tls-cert)")
	fs.StringVar(&f.logLevel, "log-level", "info", "substrate's log `level`: debug, info, warn, error")
	fs.StringVar(&f.etcdLogLevel, "etcd-log-level", "warn", "log `level` of the embedded etcd's own lines")
	fs.StringVar(&f.logFormat, "log-format", "text", "log line `format`: text (logfmt) or json (one object a line, for log shippers)")
}

// parseServe applies the command line, then SUBSTRATE_* variables, then
// the config file, over the defaults. Warnings are returned for logging
// once the logger exists. -h or --help writes the help to stdout and
// returns errHelp.
func parseServe(args []string, env map[string]string, stdout io.Writer) (serveFlags, []string, error) {
	var f serveFlags
	fs := flag.NewFlagSet("substrate serve", flag.ContinueOnError)
	f.register(fs)
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			writeServeHelp(stdout, fs)
			return f, nil, errHelp
		}
		return f, nil, usageError{err}
	}
	if fs.NArg() > 0 {
		return f, nil, usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	set := config.Explicit(fs)
	res, err := config.ApplyEnv(fs, "SUBSTRATE", env, set)
	if err != nil {
		return f, nil, err
	}
	var warnings []string
	for _, k := range res.Unknown {
		if strings.HasPrefix(k, "SUBSTRATE_TEST_") { // test hooks (SUBSTRATE_TEST_FAULTS), not settings
			continue
		}
		warnings = append(warnings, "ignoring unknown environment variable "+k)
	}
	if f.config != "" {
		values, err := config.ReadFile(f.config)
		if err != nil {
			return f, nil, fmt.Errorf("config file: %w", err)
		}
		if err := config.ApplyFile(fs, f.config, values, set, "config"); err != nil {
			return f, nil, fmt.Errorf("config file %w", err)
		}
	}
	return f, warnings, nil
}

// selectServices checks --services and says which services will run.
func selectServices(list string) (map[string]bool, error) {
	run := map[string]bool{}
	for _, name := range strings.Split(list, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		if !slices.Contains(knownServices, name) {
			return nil, fmt.Errorf("--services: unknown service %q (known: %s)", name, strings.Join(knownServices, ", "))
		}
		run[name] = true
	}
	if len(run) == 0 {
		return nil, fmt.Errorf("--services: no service named (known: %s)", strings.Join(knownServices, ", "))
	}
	return run, nil
}

func serve(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	t0 := time.Now()
	f, warnings, err := parseServe(args, config.Environ("SUBSTRATE"), stdout)
	if errors.Is(err, errHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	level, err := logging.ParseLevel(f.logLevel)
	if err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	etcdLevel, err := logging.ParseLevel(f.etcdLogLevel)
	if err != nil {
		return fmt.Errorf("--etcd-log-level: %w", err)
	}
	machine := totalMemory()
	watermark, err := parseWatermark(f.amqpMemoryHighWatermark, machine)
	if err != nil {
		return fmt.Errorf("--amqp-memory-high-watermark: %w", err)
	}
	diskFreeLimit, err := parseDiskFreeLimit(f.amqpDiskFreeLimit, machine)
	if err != nil {
		return fmt.Errorf("--amqp-disk-free-limit: %w", err)
	}
	if f.brokerSnapshotEntries < 100 {
		return fmt.Errorf("--broker-snapshot-entries: %d is below 100", f.brokerSnapshotEntries)
	}
	if f.brokerPeerPort < 1 || f.brokerPeerPort > 65535 {
		return fmt.Errorf("--broker-peer-port: %d is not a port", f.brokerPeerPort)
	}
	if f.amqpMaxConnections < 0 {
		return fmt.Errorf("--amqp-max-connections: %d is negative (0: unlimited)", f.amqpMaxConnections)
	}
	logFormat, err := logging.ParseFormat(f.logFormat)
	if err != nil {
		return fmt.Errorf("--log-format: %w", err)
	}
	log := logging.NewFormat(stderr, level, logFormat)
	for _, w := range warnings {
		log.Warn(w)
	}
	enabled, err := selectServices(f.services)
	if err != nil {
		return err
	}
	if f.tls, err = loadTLS(f, log); err != nil {
		return err
	}
	defer watchSIGHUP(f.tls, log)()
	switch {
	case f.redisPort != 0:
		enabled["redis"] = true
	case enabled["redis"]:
		f.redisPort = 6379
	}

	hosts, err := preflight.Hosts(ctx, f.host)
	if err != nil {
		return fmt.Errorf("--host: %w", err)
	}
	if err := preflight.WritableDir(f.dataDir); err != nil {
		return err
	}
	if w := preflight.DirPermission(f.dataDir); w != "" {
		log.Warn(w) // as etcd does for its data directory
	}
	// One instance per data directory, decided before anything binds.
	lock, err := preflight.LockDir(f.dataDir)
	if err != nil {
		return err
	}
	defer lock.Unlock()

	var services []lifecycle.Service
	checks := &health{log: log.With("service", "health")} // /healthz and the systemd watchdog
	var ports []preflight.Port
	var kv *kvstore.Store
	if enabled["etcd"] {
		kc := kvstore.NewConfig()
		kc.DataDir = filepath.Join(f.dataDir, "etcd")
		kc.Hosts = hosts
		kc.ClientPort, kc.PeerPort = f.etcdClientPort, f.etcdPeerPort
		kc.Logger = log.With("service", "etcd")
		kc.LogLevel = etcdLevel
		if f.etcdConfig != "" {
			if kc.Vars, err = kvstore.ReadEnvFile(f.etcdConfig); err != nil {
				return fmt.Errorf("--etcd-config: %w", err)
			}
		}
		kv, err = kvstore.New(kc)
		if err != nil {
			if f.etcdConfig != "" {
				return fmt.Errorf("--etcd-config %s: %w", f.etcdConfig, err)
			}
			return fmt.Errorf("etcd: %w", err)
		}
		// etcd's own directory too (it may lie outside DATA through
		// --etcd-config), so that `substrate etcd` on it is refused.
		if dir := kv.EtcdConfig().Dir; filepath.Clean(dir) != filepath.Clean(f.dataDir) {
			etcdLock, err := preflight.LockDir(dir)
			if err != nil {
				return err
			}
			defer etcdLock.Unlock()
		}
		services = append(services, kv)
		checks.checks = append(checks.checks, etcdCheck(kv.KV()))
		ports = append(ports, kv.Ports()...)
	}
	var brk *broker.Server  // nil: amqp not running, or a cluster node (clu)
	var clu *clusterService // the broker of a cluster node

	var ctlNodeInfo *ctlNode // what ctl's status and listeners report
	if enabled["amqp"] {
		var members []cluster.Member
		var self uint64
		if kv != nil {
			if members, self, err = clusterMembers(f, kv); err != nil {
				return err
			}
		}
		ctlNodeInfo = &ctlNode{started: t0, dataDir: f.dataDir, config: f.config}
		brokerIdentity.Store(newIdentity(f.dataDir, f.amqpMaxConnections))
		if members != nil {
			if clu, err = serveCluster(f, hosts, kv, members, self, watermark, diskFreeLimit, log); err != nil {
				return err
			}
			cs := ctl.NewServer(f.dataDir, nil).WithBroker(clu.ctlBroker(ctlBroker{store: f.tls, log: log})).
				WithLogger(log.With("service", "ctl")).WithNode(ctlClusterNode{ctlNodeInfo, clu.Node})
			services = append(services, clu, cs)
			checks.checks = append(checks.checks, clu.check())
			ports = append(ports, preflight.Port{What: "broker peer port", Addr: clu.Self().PeerAddr()})
		} else {
			b, closeDefs, err := serveBroker(f, hosts, kv, watermark, diskFreeLimit, log)
			if err != nil {
				return err
			}
			defer closeDefs()
			brk = b
			services = append(services, b, ctl.NewServer(f.dataDir, ctlBroker{b, f.tls, log}).WithLogger(log.With("service", "ctl")).WithNode(ctlNodeInfo))
			checks.checks = append(checks.checks, brokerCheck(b))
		}
		for _, a := range preflight.Addrs(hosts, f.amqpPort) {
			ports = append(ports, preflight.Port{What: "amqp port", Addr: a})
		}
		if f.tls != nil {
			for _, a := range preflight.Addrs(hosts, f.amqpsPort) {
				ports = append(ports, preflight.Port{What: "amqps port", Addr: a})
			}
		}
	}
	var cacheBytes uint64
	var cacheSrv *cache.Server // nil: memcached not running
	if enabled["memcached"] {
		svc, limit, err := serveCache(ctx, f, hosts, log.With("service", "memcached"))
		if err != nil {
			return err
		}
		cacheBytes = uint64(limit)
		cacheSrv = svc.Server
		services = append(services, svc)
		checks.checks = append(checks.checks, cacheCheck(svc.Server))
		cacheMetrics.Store(svc.Server)
		ports = append(ports, svc.Ports()...)
	}
	if enabled["redis"] {
		r, err := redis.New(redis.Config{Addrs: preflight.Addrs(hosts, f.redisPort), Logger: log.With("service", "redis")})
		if err != nil {
			return err
		}
		services = append(services, r)
		ports = append(ports, r.Ports()...)
	}
	if enabled["http"] {
		var names []string
		for _, n := range knownServices {
			if enabled[n] {
				names = append(names, n)
			}
		}
		mc := mgmt.Config{
			Addrs:    preflight.Addrs(hosts, f.httpPort),
			Version:  versionString(),
			Services: names,
			Logger:   log.With("service", "http"),
			UI:       newWebUI(t0, names, checks, kv, currentBroker(brk, clu), cacheSrv, clu),

			Health:           checks.Failures,
			PerObjectMetrics: perObjectMetrics,
		}
		if f.tls != nil {
			mc.TLSAddrs, mc.TLS = preflight.Addrs(hosts, f.httpsPort), f.tls.ServerConfig()
		}
		var m *mgmt.Server
		if brk != nil {
			mc.API = newMgmtAPI(brk, brk, f.dataDir, len(mc.Addrs), log.With("service", "http"), func() *mgmt.Server { return m })
		}
		if clu != nil {
			nHTTP := len(mc.Addrs)
			clu.newAPI = func(b *broker.Server) *mgmtapi.API {
				return newMgmtAPI(b, clu.Node, f.dataDir, nHTTP, log.With("service", "http"), func() *mgmt.Server { return m })
			}
			mc.API = clusterAPI{clu}
		}
		m, err := mgmt.New(mc)
		if err != nil {
			return err
		}
		services = append(services, m)
		ports = append(ports, m.Ports()...)
	}
	budget, bounded := serveBudget(enabled, watermark, cacheBytes)
	if err := checkBudget(budget, machine); err != nil {
		return err
	}
	if err := preflight.Ports(ports); err != nil {
		return err
	}
	applyBudget(budget, bounded, log)
	if ctlNodeInfo != nil {
		ctlNodeInfo.ports = ports // for ctl's listeners; set before the ctl socket opens
	}
	// The systemd watchdog (WatchdogSec) hears from us while every
	// service answers (health.Unresponsive); it stops with serve.
	wctx, stopWatchdog := context.WithCancel(ctx)
	var watchdogs sync.WaitGroup
	defer func() {
		stopWatchdog()
		watchdogs.Wait()
	}()
	return runServices(ctx, log, t0, services, ports, func() error {
		watchdogs.Go(func() { watchdog(wctx, log, checks) })
		return nil
	})
}

// serveBroker builds the AMQP broker. Its definitions (users, vhosts,
// permissions, durable entities) live in etcd when this process runs etcd,
// under kvstore.ReservedPrefix, which clients of etcd's client port can
// neither see nor write; the broker reaches them in process
// (kvstore.Store.KV: no dial, no TLS, etcd auth passed as root), and
// persistent messages in DATA/broker; otherwise all in memory, lost at
// exit. The returned func releases what the definitions hold once the
// broker has stopped.
func serveBroker(f serveFlags, hosts []string, kv *kvstore.Store, watermark, diskFreeLimit uint64, log *slog.Logger) (*broker.Server, func(), error) {
	cfg, closeDefs := brokerConfig(f, hosts, kv, watermark, diskFreeLimit, log)
	if kv == nil {
		log.Warn("amqp runs without etcd: users, vhosts, permissions, durable entities and persistent messages are kept in memory and lost at exit")
	}
	b, err := broker.New(cfg)
	if err != nil {
		closeDefs()
		return nil, nil, fmt.Errorf("amqp: %w", err)
	}
	brokerMetrics.Store(b)
	return b, closeDefs, nil
}

// currentBroker returns the broker running now, or nil when amqp does not
// run at all.
func currentBroker(b *broker.Server, clu *clusterService) func() *broker.Server {
	switch {
	case clu != nil:
		return clu.Broker
	case b != nil:
		return func() *broker.Server { return b }
	}
	return nil
}

// brokerConfig is the broker's configuration from serve's flags.
func brokerConfig(f serveFlags, hosts []string, kv *kvstore.Store, watermark, diskFreeLimit uint64, log *slog.Logger) (broker.Config, func()) {
	cfg := broker.NewConfig()
	cfg.MemoryHighWatermark = watermark
	cfg.DiskFreeLimit = diskFreeLimit
	cfg.MaxConnections = f.amqpMaxConnections
	cfg.Addrs = preflight.Addrs(hosts, f.amqpPort)
	if f.tls != nil {
		cfg.TLSAddrs, cfg.TLS = preflight.Addrs(hosts, f.amqpsPort), f.tls.ServerConfig()
	}
	cfg.Logger = log.With("service", "amqp")
	closeDefs := func() {}
	if kv != nil {
		cfg.Definitions = etcddefs.New(kv.KV(), kvstore.ReservedPrefix).WithLogger(cfg.Logger)
		cfg.StoreDir = filepath.Join(f.dataDir, "broker")
	}
	return cfg, closeDefs
}

// serveCache builds the memcached service from --memcached-config (an
// /etc/sysconfig/memcached file) and --memcached-options, as memcached
// would run with them; without -l there, it listens on --host. It also
// returns the cache's -m in bytes, its share of the memory budget, past
// which cache_memlimit cannot raise it.
func serveCache(ctx context.Context, f serveFlags, hosts []string, log *slog.Logger) (cacheService, int64, error) {
	var args []string
	if f.memcachedConfig != "" {
		var err error
		if args, err = memcachedcli.ParseSysconfig(f.memcachedConfig); err != nil {
			return cacheService{}, 0, fmt.Errorf("--memcached-config: %w", err)
		}
	}
	args = append(args, splitOptions(f.memcachedOptions)...)
	o, err := memcachedcli.Parse(args)
	var merr *memcachedcli.Error
	if errors.As(err, &merr) {
		return cacheService{}, 0, fmt.Errorf("memcached options %q: %s", strings.Join(args, " "), strings.ReplaceAll(merr.Msg, "\n", "; "))
	} else if err != nil {
		return cacheService{}, 0, fmt.Errorf("memcached options %q: %w", strings.Join(args, " "), err)
	}
	for _, w := range o.Warnings {
		log.Warn(w)
	}
	if err := checkServeCacheOptions(o, log); err != nil {
		return cacheService{}, 0, fmt.Errorf("memcached options %q: %w", strings.Join(args, " "), err)
	}
	cfg, err := cacheConfig(ctx, o, hosts, f.memcachedPort)
	if err != nil {
		return cacheService{}, 0, fmt.Errorf("memcached: %w", err)
	}
	cfg.Logger = log
	cfg.MaxMemoryLimit = cfg.MemoryLimit
	warnCacheSecrets(log, cfg)
	srv, err := cache.New(cfg)
	if err != nil {
		return cacheService{}, 0, err
	}
	return cacheService{srv, cfg.Addrs}, cfg.MemoryLimit, nil
}

// runServices starts services in order, logs the ready line, waits for a
// signal or a failure, and shuts down in reverse order within 10 s.
// afterStart, if not nil, runs once every service has started, before the
// ready line (memcached drops root privileges there).
func runServices(ctx context.Context, log *slog.Logger, t0 time.Time, services []lifecycle.Service, ports []preflight.Port, afterStart func() error) error {
	g := lifecycle.NewGroup(log, services...)
	// etcd's fatal paths (a zap Fatal or Panic entry, then os.Exit or a
	// panic) first stop the other services in order: the broker's store
	// flushed and marked clean, listeners closed.
	defer logging.OnFatal(func(ctx context.Context) {
		log.Error("etcd failed fatally; stopping the other services before the process exits")
		if err := g.Emergency(ctx, "etcd"); err != nil {
			log.Error("emergency stop", "err", err)
		}
		log.Info("emergency stop finished")
	})()
	if err := g.Start(ctx); err != nil {
		if ctx.Err() != nil {
			log.Info("stopped before startup finished")
			return nil
		}
		return err
	}
	if afterStart != nil {
		if err := afterStart(); err != nil {
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			return errors.Join(err, g.Shutdown(sctx))
		}
	}
	var names, addrs []string
	for _, s := range services {
		names = append(names, s.Name())
	}
	for _, p := range ports {
		addrs = append(addrs, p.Addr)
	}
	log.Info("substrate ready", "took", time.Since(t0).Round(time.Millisecond), "services", strings.Join(names, ","), "listen", strings.Join(addrs, ","))
	// systemd units of type notify (Debian's etcd.service is one) wait for
	// this; without NOTIFY_SOCKET it does nothing.
	if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		log.Warn("systemd notification failed", "err", err)
	}

	failure := g.Wait(ctx)
	if failure != nil {
		log.Error("service failed; shutting down", "err", failure)
	} else {
		log.Info("shutting down")
	}
	daemon.SdNotify(false, daemon.SdNotifyStopping)
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	t1 := time.Now()
	err := g.Shutdown(sctx)
	log.Info("stopped", "took", time.Since(t1).Round(time.Millisecond))
	return errors.Join(failure, err)
}
