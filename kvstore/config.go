package kvstore

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"go.etcd.io/etcd/pkg/v3/flags"
	"go.etcd.io/etcd/server/v3/embed"

	"substrate/internal/config"
	"substrate/internal/logging"
	"substrate/internal/preflight"
)

// Config describes the embedded etcd member. The fields give substrate's
// defaults; Args and Vars, when present, are applied through etcd's own flag
// table on top of them, exactly as the etcd daemon applies its command line
// and ETCD_* environment.
type Config struct {
	Name       string   // member name; default: the host name
	DataDir    string   // etcd's data directory, DATA/etcd under serve
	Hosts      []string // IP addresses to listen on; the first is advertised
	ClientPort int      // 2379
	PeerPort   int      // 2380

	// EtcdDefaults makes the member start from the etcd daemon's own
	// defaults (name "default", data dir NAME.etcd, localhost URLs,
	// compaction off) instead of the fields above, so that `substrate etcd`
	// behaves as `etcd` would with the same flags and environment.
	EtcdDefaults bool

	// Args are etcd command-line flags (substrate etcd ...).
	Args []string
	// Vars are ETCD_* variables, from an etcd.conf file or the environment.
	// A variable whose flag is also in Args is an error, as in etcd.
	Vars map[string]string

	Logger   *slog.Logger // nil: discard
	LogLevel slog.Level   // etcd's own log lines; default warn
}

// NewConfig returns the defaults: a single member named after this host, on
// loopback, at etcd's ports.
func NewConfig() Config {
	name, err := os.Hostname()
	if err != nil || name == "" {
		name = "substrate"
	}
	return Config{
		Name:       name,
		DataDir:    "substrate-data/etcd",
		Hosts:      []string{"127.0.0.1", "::1"},
		ClientPort: 2379,
		PeerPort:   2380,
		LogLevel:   slog.LevelWarn,
	}
}

// ErrBadFlag marks an error in Config.Args: a flag etcd does not have, a
// stray word, or a flag without its value.
var ErrBadFlag = errors.New("bad etcd flag")

// harmlessWarnings are etcd startup warnings that say nothing an operator
// of substrate can act on: the single port is what etcd3gw needs, and
// substrate does not enable etcd auth.
var harmlessWarnings = []string{
	"Running http and grpc server on single port",
	"simple token is not cryptographically signed",
}

// ReadEnvFile reads an etcd.conf as RDO writes /etc/etcd/etcd.conf and
// Debian /etc/default/etcd: shell-style KEY="value" lines, blank lines and
// # comments, an optional leading "export ".
func ReadEnvFile(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parseEnvFile(path, data)
}

func parseEnvFile(path string, data []byte) (map[string]string, error) {
	vars := make(map[string]string)
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		line = strings.TrimPrefix(line, "export ")
		key, val, ok := strings.Cut(line, "=")
		key = strings.TrimSpace(key)
		if !ok || key == "" || strings.ContainsAny(key, " \t\"'") {
			return nil, fmt.Errorf("%s:%d: want KEY=\"value\", got %q", path, n, line)
		}
		val = strings.TrimSpace(val)
		if len(val) >= 2 && (val[0] == '"' || val[0] == '\'') {
			if val[len(val)-1] != val[0] {
				return nil, fmt.Errorf("%s:%d: unterminated quote in %s", path, n, key)
			}
			val = val[1 : len(val)-1]
		} else if strings.HasPrefix(val, "\"") || strings.HasPrefix(val, "'") {
			return nil, fmt.Errorf("%s:%d: unterminated quote in %s", path, n, key)
		}
		vars[key] = val
	}
	return vars, sc.Err()
}

// buildEmbed turns cfg into a validated etcd configuration. It never binds
// or connects: an etcd.conf naming another machine's address validates
// here and fails only when the member starts.
func buildEmbed(cfg Config, log *slog.Logger, quiet *logging.Quieter) (*embed.Config, error) {
	ec := embed.NewConfig()
	fs := flag.NewFlagSet("etcd", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	ec.AddFlags(fs)
	clusterState := flags.NewSelectiveStringValue(embed.ClusterStateFlagNew, embed.ClusterStateFlagExisting)
	fs.Var(clusterState, "initial-cluster-state", "Initial cluster state ('new' or 'existing').")

	if err := fs.Parse(cfg.Args); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadFlag, err)
	}
	if fs.NArg() != 0 {
		return nil, fmt.Errorf("%w: %q is not a valid flag", ErrBadFlag, fs.Arg(0))
	}
	set := config.Explicit(fs)
	vars := cfg.Vars
	if v, ok := vars["ETCD_VERSION"]; ok {
		// etcd refuses this one variable with a warning.
		log.Warn("cannot set special environment variable", "key", "ETCD_VERSION", "value", v)
		vars = cloneWithout(vars, "ETCD_VERSION")
	}
	res, err := config.ApplyEnv(fs, "ETCD", vars, set)
	if err != nil {
		return nil, err
	}
	if len(res.Shadowed) > 0 {
		return nil, fmt.Errorf("conflicting environment variable %s is shadowed by corresponding command-line flag (either unset environment variable or disable flag)", res.Shadowed[0])
	}
	for _, k := range res.Unknown {
		log.Warn("unrecognized environment variable", "variable", k)
	}

	if cfg.EtcdDefaults {
		if ec.Dir == "" { // as etcdmain does
			ec.Dir = ec.Name + ".etcd"
		}
	} else if err := applySubstrateDefaults(cfg, ec, fs, set); err != nil {
		return nil, err
	}

	// What etcdmain does after parsing (server/etcdmain/config.go,
	// configFromCmdLine), so every flag means what it means to etcd.
	ec.ListenPeerUrls = flags.UniqueURLsFromFlag(fs, "listen-peer-urls")
	ec.AdvertisePeerUrls = flags.UniqueURLsFromFlag(fs, "initial-advertise-peer-urls")
	ec.ListenClientUrls = flags.UniqueURLsFromFlag(fs, "listen-client-urls")
	ec.ListenClientHttpUrls = flags.UniqueURLsFromFlag(fs, "listen-client-http-urls")
	ec.AdvertiseClientUrls = flags.UniqueURLsFromFlag(fs, "advertise-client-urls")
	ec.ListenMetricsUrls = flags.UniqueURLsFromFlag(fs, "listen-metrics-urls")
	ec.DiscoveryCfg.Endpoints = flags.UniqueStringsFromFlag(fs, "discovery-endpoints")
	ec.CORS = flags.UniqueURLsMapFromFlag(fs, "cors")
	ec.HostWhitelist = flags.UniqueStringsMapFromFlag(fs, "host-whitelist")
	ec.ClientTLSInfo.AllowedHostnames = flags.StringsFromFlag(fs, "client-cert-allowed-hostname")
	ec.PeerTLSInfo.AllowedCNs = flags.StringsFromFlag(fs, "peer-cert-allowed-cn")
	ec.PeerTLSInfo.AllowedHostnames = flags.StringsFromFlag(fs, "peer-cert-allowed-hostname")
	ec.CipherSuites = flags.StringsFromFlag(fs, "cipher-suites")
	ec.MaxConcurrentStreams = flags.Uint32FromFlag(fs, "max-concurrent-streams")
	ec.ClusterState = clusterState.String()
	if set["listen-client-urls"] && !set["advertise-client-urls"] {
		ec.AdvertiseClientUrls = nil // etcd then asks for them explicitly
	}
	if !set["initial-cluster"] && ec.DNSCluster == "" && len(ec.DiscoveryCfg.Endpoints) == 0 {
		ec.InitialCluster = ec.InitialClusterFromName(ec.Name)
	}
	for name := range set {
		ec.FlagsExplicitlySet[name] = true
	}

	// Logging goes through substrate's handler. etcd's log-level flag sets
	// the level of etcd's lines; etcd itself must never see "debug", which
	// would also make it serve pprof and x/net/trace on the client port.
	level := cfg.LogLevel
	if set["log-level"] {
		l, err := logging.ParseLevel(ec.LogLevel)
		if err != nil {
			return nil, fmt.Errorf("log-level: %w", err)
		}
		level = l
	}
	ec.LogLevel = "info"
	ec.LogOutputs = []string{embed.StdErrLogOutput}
	if ec.EnablePprof {
		log.Warn("ignoring --enable-pprof: substrate never serves pprof on the etcd client port")
		ec.EnablePprof = false
	}
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(logging.Zap(log.Handler(), level, quiet).Named("etcd"))
	ec.UserHandlers = userHandlers()
	ec.GRPCAdditionalServerOptions = append(ec.GRPCAdditionalServerOptions, recoverOptions(log)...)

	if err := ec.Validate(); err != nil {
		return nil, err
	}
	return ec, nil
}

func cloneWithout(m map[string]string, drop string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		if k != drop {
			out[k] = v
		}
	}
	return out
}

// applySubstrateDefaults puts substrate's defaults (cfg's fields) where
// neither a flag nor a variable spoke.
func applySubstrateDefaults(cfg Config, ec *embed.Config, fs *flag.FlagSet, set map[string]bool) error {
	if len(cfg.Hosts) == 0 {
		return errors.New("no host address to listen on")
	}
	for _, p := range []int{cfg.ClientPort, cfg.PeerPort} {
		if p < 0 || p > 65535 {
			return fmt.Errorf("port %d out of range", p)
		}
	}
	if !set["name"] {
		ec.Name = cfg.Name
	}
	if !set["data-dir"] {
		ec.Dir = cfg.DataDir
	}
	urls := func(hosts []string, port int) string {
		out := preflight.Addrs(hosts, port)
		for i := range out {
			out[i] = "http://" + out[i]
		}
		return strings.Join(out, ",")
	}
	defaults := map[string]string{
		"listen-client-urls":          urls(cfg.Hosts, cfg.ClientPort),
		"listen-peer-urls":            urls(cfg.Hosts, cfg.PeerPort),
		"advertise-client-urls":       urls(cfg.Hosts[:1], cfg.ClientPort),
		"initial-advertise-peer-urls": urls(cfg.Hosts[:1], cfg.PeerPort),
	}
	for name, val := range defaults {
		if !set[name] {
			if err := fs.Set(name, val); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		}
	}
	if !set["auto-compaction-retention"] {
		ec.AutoCompactionRetention = "1h"
	}
	return nil
}
