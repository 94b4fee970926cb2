package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/user"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"substrate/cache"
	"substrate/internal/lifecycle"
	"substrate/internal/logging"
	"substrate/internal/memcachedcli"
	"substrate/internal/preflight"
)

// cacheService adapts cache.Server to the lifecycle's Service.
type cacheService struct {
	*cache.Server
	addrs []string
}

func (cacheService) Name() string      { return "memcached" }
func (cacheService) Err() <-chan error { return nil }

func (c cacheService) Ports() []preflight.Port {
	ports := make([]preflight.Port, len(c.addrs))
	for i, a := range c.addrs {
		ports[i] = preflight.Port{What: "memcached port", Addr: a}
	}
	return ports
}

// exitError ends the process with code after printing msg exactly (no
// "substrate ..." prefix), as memcached prints its own errors.
type exitError struct {
	msg  string
	code int
}

func (e exitError) Error() string { return e.msg }

// cacheConfig builds the cache's configuration from memcached's options.
// Without -l, memcached listens on every interface; serve passes its --host
// addresses as defaultHosts instead.
func cacheConfig(ctx context.Context, o memcachedcli.Options, defaultHosts []string, defaultPort int) (cache.Config, error) {
	cfg := cache.NewConfig()
	cfg.Protocol = o.Protocol
	limit := o.MaxBytes()
	if limit > math.MaxInt64 {
		limit = math.MaxInt64
	}
	cfg.MemoryLimit = int64(limit)
	cfg.MaxConns = o.MaxConns
	cfg.MaxItemSize = o.MaxItemSize
	cfg.NoEvict = o.NoEvict
	cfg.NoCAS = o.DisableCAS
	cfg.NoFlushAll = o.NoFlushAll
	cfg.NoDumping = o.NoDumping
	cfg.NoWatch = o.NoWatch
	cfg.Backlog = o.Backlog
	cfg.Verbosity = o.Verbosity
	if o.UnixMask&^0o777 == 0 {
		cfg.UnixMask = os.FileMode(o.UnixMask) // stats settings umask, even without -s
	}
	cfg.Addrs = nil
	cfg.TLS = tlsConfig(o)
	if cfg.TLS == nil {
		cfg.TLSSettings = tlsSettings(o)
	}
	if o.SASL {
		// memcached built with its password-file SASL reads this variable.
		cfg.SASL = true
		cfg.SASLPasswordFile = os.Getenv("MEMCACHED_SASL_PWDB")
		if cfg.SASLPasswordFile == "" {
			return cfg, errors.New("-S: set MEMCACHED_SASL_PWDB to a file of user:password lines")
		}
	}
	if o.UnixSocket != "" {
		// As memcached: a unix socket replaces the TCP and UDP listeners.
		cfg.UnixSocket = o.UnixSocket
		cfg.UnixMask = os.FileMode(o.UnixMask)
		return cfg, cfg.Validate()
	}
	if o.Inter == "" && defaultHosts != nil {
		port := defaultPort
		if o.PortSet {
			port = o.Port
		}
		cfg.Addrs = preflight.Addrs(defaultHosts, port)
		if o.UDPPort != 0 {
			cfg.UDPAddrs = preflight.Addrs(defaultHosts, o.UDPPort)
		}
		return cfg, cfg.Validate()
	}
	las, err := o.ListenAddrs()
	if err != nil {
		return cfg, err
	}
	for _, la := range las {
		if la.Protocol != "" {
			// A "tag[...]:" prefix only matters to memcached's proxy,
			// which Debian's build lacks, as substrate does: it is honoured
			// by having no effect. A per-listener protocol is not.
			return cfg, &memcachedcli.UnsupportedError{Option: "-l " + la.Item,
				Why: "a listener's own protocol (proto[" + la.Protocol + "]:); use -B for all of them"}
		}
		ips := []string{""} // "" or "*": every interface
		if la.Host != "" && la.Host != "*" {
			if ips, err = preflight.Hosts(ctx, la.Host); err != nil {
				return cfg, fmt.Errorf("-l %s: %w", la.Item, err)
			}
		}
		for _, a := range preflight.Addrs(ips, la.Port) {
			switch {
			case la.NoTLS:
				if !slices.Contains(cfg.NoTLSAddrs, a) {
					cfg.NoTLSAddrs = append(cfg.NoTLSAddrs, a)
				}
			case !slices.Contains(cfg.Addrs, a):
				cfg.Addrs = append(cfg.Addrs, a)
			}
		}
		if o.UDPPort != 0 {
			for _, a := range preflight.Addrs(ips, o.UDPPort) {
				if !slices.Contains(cfg.UDPAddrs, a) {
					cfg.UDPAddrs = append(cfg.UDPAddrs, a)
				}
			}
		}
	}
	return cfg, cfg.Validate()
}

// tlsConfig is the cache's TLS configuration for -Z and the -o ssl_*
// suboptions, or nil without -Z.
func tlsConfig(o memcachedcli.Options) *cache.TLSConfig {
	if !o.TLS {
		return nil
	}
	return tlsSettings(o)
}

// tlsSettings is the -o ssl_* suboptions as a TLS configuration, with or
// without -Z.
func tlsSettings(o memcachedcli.Options) *cache.TLSConfig {
	e := o.Ext
	tc := cache.NewTLSConfig(e.SSLChainCert, e.SSLKey)
	tc.KeyFormat = e.SSLKeyFormat
	tc.CACert = e.SSLCACert
	tc.VerifyMode = e.SSLVerifyMode
	tc.MinVersion = e.SSLMinVersion
	tc.Ciphers = e.SSLCiphers
	tc.WbufSize = int(e.SSLWbufSize)
	tc.SessionCache = e.SSLSessionCache
	tc.KernelTLS = e.SSLKernelTLS
	return tc
}

// tlsExit turns a certificate-loading failure into memcached's exit: its
// message ends in "\r\n" and the status is EX_USAGE.
func tlsExit(err error) error {
	var te *cache.TLSError
	if errors.As(err, &te) {
		return exitError{te.Msg + "\r", memcachedcli.ExitUsage}
	}
	return err
}

// memcached runs only the cache with memcached 1.6.18's command line, so an
// existing memcached unit (Debian's, RDO's) can point at substrate.
func memcached(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	t0 := time.Now()
	o, err := memcachedcli.Parse(args)
	for _, w := range o.Warnings {
		fmt.Fprintln(stderr, w)
	}
	var merr *memcachedcli.Error
	switch {
	case errors.Is(err, memcachedcli.ErrHelp):
		fmt.Fprint(stdout, memcachedcli.Usage())
		return nil
	case errors.Is(err, memcachedcli.ErrVersion):
		fmt.Fprintln(stdout, memcachedcli.Version)
		return nil
	case errors.Is(err, memcachedcli.ErrLicense):
		fmt.Fprint(stdout, memcachedcli.License())
		return nil
	case errors.As(err, &merr):
		return exitError{merr.Msg, merr.Code}
	case err != nil:
		return err
	}
	if _, err := o.Check(memcachedcli.Standalone); err != nil {
		return err
	}
	// memcached loads its certificates before checking privileges.
	if tc := tlsConfig(o); tc != nil {
		if err := tc.Check(); err != nil {
			return tlsExit(err)
		}
	}
	if err := o.CheckPrivileges(os.Geteuid()); errors.As(err, &merr) {
		return exitError{merr.Msg, merr.Code}
	}
	level := slog.LevelInfo // the ready and shutdown lines
	if o.Verbosity > 0 {
		level = slog.LevelDebug
	}
	log := logging.New(stderr, level)
	cfg, err := cacheConfig(ctx, o, nil, 0)
	if err != nil {
		return err
	}
	cfg.Logger = log
	// memcached -t (default 4): the process is the cache, so it runs
	// that many worker threads, event loops on threads of their own;
	// GOMAXPROCS leaves a P over for everything else (accepts, TLS and
	// unix-socket connections, the GC), as the loops' threads hold theirs
	// while they wait.
	cfg.Threads = o.Threads
	runtime.GOMAXPROCS(max(runtime.NumCPU(), o.Threads+1))
	if o.LockMemory {
		lockMemory(stderr)
	}
	if o.Coredumps {
		if err := enableCoredumps(); err != nil {
			return err
		}
	}
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	if o.Shutdown {
		// memcached -A: the shutdown command ends the process (exit 0)
		// as a signal does.
		cfg.OnShutdown = func(bool) { stop() }
	}
	warnCacheSecrets(log, cfg)
	limitHeap(o.MaxBytes())
	srv, err := cache.New(cfg)
	if err != nil {
		return tlsExit(err)
	}
	svc := cacheService{srv, cfg.Addrs}
	if err := preflight.Ports(svc.Ports()); err != nil {
		return err
	}
	if o.PidFile != "" {
		if err := os.WriteFile(o.PidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
			return fmt.Errorf("Could not open the pid file %s for writing: %w", o.PidFile, err)
		}
		defer func() {
			// After -u the directory may not let the user remove it;
			// memcached then says so too.
			if err := os.Remove(o.PidFile); err != nil {
				log.Warn("Could not remove the pid file "+o.PidFile, "err", err)
			}
		}()
	}
	return runServices(ctx, log, t0, []lifecycle.Service{svc}, svc.Ports(), func() error {
		return dropPrivileges(o.User, o.UnixSocket, o.PidFile)
	})
}

// limitHeap gives the Go runtime a soft memory limit of 1.5 × -m plus
// 16 MiB, so the garbage collector reclaims evicted items before the heap
// grows to twice the live items, as GOGC alone allows (writing 76 MB into
// -m 16 grew RSS by 40 MB without it, 32 MB with it). The margin stays
// above the live heap of a cache full of tiny items (allocation size
// classes, item records and the index make it up to about 1.25 × -m), so
// the collector never runs back to back; below the limit GOGC applies
// unchanged. GOMEMLIMIT in the environment wins.
func limitHeap(maxBytes uint64) {
	if os.Getenv("GOMEMLIMIT") != "" || maxBytes > 1<<50 {
		return
	}
	debug.SetMemoryLimit(int64(maxBytes + maxBytes/2 + 16<<20))
}

// dropPrivileges switches to user after the listeners are bound, as
// memcached does with -u when started as root. memcached drops them before
// creating its unix socket and pid file, so they belong to the user: files
// (the -s socket, the -P pid file; "" skipped) are given to the user first,
// so that its clients can connect and it can remove them at exit (when
// their directory lets it, as for memcached).
func dropPrivileges(name string, files ...string) error {
	if os.Geteuid() != 0 || name == "" || name == "root" {
		return nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		return fmt.Errorf("can't find the user %s to switch to", name)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	for _, f := range files {
		if f == "" {
			continue
		}
		if err := os.Lchown(f, uid, gid); err != nil {
			return fmt.Errorf("failed to give %s to user %s: %w", f, name, err)
		}
	}
	if err := syscall.Setgroups(nil); err != nil {
		return fmt.Errorf("failed to drop supplementary groups: %w", err)
	}
	if err := syscall.Setgid(gid); err != nil {
		return fmt.Errorf("failed to assume identity of user %s: %w", name, err)
	}
	if err := syscall.Setuid(uid); err != nil {
		return fmt.Errorf("failed to assume identity of user %s: %w", name, err)
	}
	return nil
}

// checkServeCacheOptions refuses the memcached options substrate serve does
// not support and logs one line for each it does not apply (see
// memcachedcli.Options.Check).
func checkServeCacheOptions(o memcachedcli.Options, log *slog.Logger) error {
	notApplied, err := o.Check(memcachedcli.Serve)
	for _, line := range notApplied {
		log.Warn(line)
	}
	return err
}

// lockMemory is memcached -k: lock the process's pages in memory, or warn
// and go on as memcached does.
func lockMemory(stderr io.Writer) {
	if err := unix.Mlockall(unix.MCL_CURRENT | unix.MCL_FUTURE); err != nil {
		fmt.Fprintf(stderr, "warning: -k invalid, mlockall() failed: %s\n", err)
	}
}

// enableCoredumps is memcached -r: raise the core file limit to
// unlimited (or at least to its hard limit) and fail with memcached's
// message if cores are still off; a fatal Go error then dumps core.
func enableCoredumps() error {
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_CORE, &old); err == nil {
		inf := unix.Rlimit{Cur: unix.RLIM_INFINITY, Max: unix.RLIM_INFINITY}
		if unix.Setrlimit(unix.RLIMIT_CORE, &inf) != nil {
			_ = unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{Cur: old.Max, Max: old.Max})
		}
	}
	var cur unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_CORE, &cur); err != nil || cur.Cur == 0 {
		return exitError{"failed to ensure corefile creation", memcachedcli.ExitOSErr}
	}
	debug.SetTraceback("crash")
	return nil
}

// splitOptions splits a memcached-options value into words.
func splitOptions(s string) []string { return strings.Fields(s) }

// warnCacheSecrets warns once about each secret file of the cache (the
// SASL password file, -Z's ssl_key) that group or others can read.
func warnCacheSecrets(log *slog.Logger, cfg cache.Config) {
	if cfg.SASLPasswordFile != "" {
		if w := preflight.SecretFile("SASL password file", cfg.SASLPasswordFile); w != "" {
			log.Warn(w)
		}
	}
	if cfg.TLS != nil && cfg.TLS.Key != "" {
		if w := preflight.SecretFile("memcached ssl_key", cfg.TLS.Key); w != "" {
			log.Warn(w)
		}
	}
}
