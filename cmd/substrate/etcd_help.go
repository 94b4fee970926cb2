package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"

	"go.etcd.io/etcd/api/v3/version"
	"go.etcd.io/etcd/pkg/v3/flags"
	"go.etcd.io/etcd/server/v3/embed"
)

// etcdHelpOrVersion answers `substrate etcd -h|--help` and `--version` as
// etcd does: help is the usage on stderr and the flags on stdout, version
// four lines on stdout, exit 0 either way. It reports whether it answered;
// any other command line is left to kvstore, which also reports its
// mistakes.
func etcdHelpOrVersion(args []string, stdout, stderr io.Writer) bool {
	fs := etcdFlagSet()
	printVersion := fs.Bool("version", false, "Print the version and exit.")
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(stderr, etcdUsage+"\n") // etcd Println()s its usage, which ends in a newline
		writeEtcdFlags(stdout, fs)
		return true
	case err == nil && *printVersion:
		fmt.Fprintf(stdout, "etcd Version: %s\n", version.Version)
		fmt.Fprintf(stdout, "Git SHA: %s\n", version.GitSHA)
		fmt.Fprintf(stdout, "Go Version: %s\n", runtime.Version())
		fmt.Fprintf(stdout, "Go OS/Arch: %s/%s\n", runtime.GOOS, runtime.GOARCH)
		return true
	}
	return false
}

// etcdFlagSet is the flag table `substrate etcd` takes: etcd's own
// (embed.Config.AddFlags) plus --initial-cluster-state, as kvstore parses
// it.
func etcdFlagSet() *flag.FlagSet {
	fs := flag.NewFlagSet("etcd", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	embed.NewConfig().AddFlags(fs)
	fs.Var(flags.NewSelectiveStringValue(embed.ClusterStateFlagNew, embed.ClusterStateFlagExisting),
		"initial-cluster-state", "Initial cluster state ('new' or 'existing').")
	return fs
}

const etcdUsage = `Usage:

  etcd [flags]
    Start an etcd server.

  etcd --version
    Show the version of etcd.

  etcd -h | --help
    Show the help information about etcd.

  This etcd is substrate's embedded member (substrate etcd, or substrate
  installed as etcd). It takes etcd's flags and ETCD_* variables; the
  gateway and grpc-proxy commands and --config-file are not provided.
`

// etcdSections orders the flag list in etcd's sections; etcdSection says
// which one a flag belongs to.
var etcdSections = []string{"Member", "Clustering", "Security", "Auth", "Profiling and Monitoring", "Logging", "Distributed tracing", "Features", "Experimental feature", "Unsafe feature"}

func etcdSection(name string) string {
	has := func(subs ...string) bool {
		return slices.ContainsFunc(subs, func(s string) bool { return strings.Contains(name, s) })
	}
	if i := slices.Index(etcdFirst, name); i >= 0 && i < slices.Index(etcdFirst, "initial-advertise-peer-urls") {
		return "Member"
	}
	switch {
	case name == "force-new-cluster" || name == "unsafe-no-fsync":
		return "Unsafe feature"
	case has("distributed-tracing"):
		return "Distributed tracing"
	case strings.HasPrefix(name, "experimental-"):
		return "Experimental feature"
	case name == "feature-gates":
		return "Features"
	case has("auth-token", "bcrypt", "auth-"):
		return "Auth"
	case has("cert", "key-file", "ca-file", "cipher", "tls", "crl", "allowed-cn", "allowed-hostname", "cors", "host-whitelist"):
		return "Security"
	case has("log", "logger"):
		return "Logging"
	case has("pprof", "metrics"):
		return "Profiling and Monitoring"
	case has("initial-", "advertise-", "discovery", "strict-reconfig-check", "pre-vote", "auto-compaction", "v2", "peer"):
		return "Clustering"
	}
	return "Member"
}

// etcdFirst are the flags etcd's help lists first, in its order; the rest
// follow in alphabetical order (a flag.FlagSet forgets the order flags
// were added in).
var etcdFirst = []string{"name", "data-dir", "wal-dir", "snapshot-count", "heartbeat-interval", "election-timeout",
	"initial-election-tick-advance", "listen-peer-urls", "listen-client-urls", "max-snapshots", "max-wals", "quota-backend-bytes",
	"initial-advertise-peer-urls", "initial-cluster", "initial-cluster-state", "initial-cluster-token", "advertise-client-urls"}

func etcdRank(name string) int {
	if i := slices.Index(etcdFirst, name); i >= 0 {
		return i
	}
	return len(etcdFirst)
}

// writeEtcdFlags writes the flags as etcd's help lists them:
// "  --name 'default'" then the description, indented by four.
func writeEtcdFlags(w io.Writer, fs *flag.FlagSet) {
	bySection := map[string][]*flag.Flag{}
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name == "version" {
			return // in the usage, as in etcd's help
		}
		s := etcdSection(f.Name)
		bySection[s] = append(bySection[s], f)
	})
	for _, s := range etcdSections {
		if len(bySection[s]) == 0 {
			continue
		}
		slices.SortStableFunc(bySection[s], func(a, b *flag.Flag) int {
			return etcdRank(a.Name) - etcdRank(b.Name)
		})
		fmt.Fprintf(w, "\n%s:\n", s)
		for _, f := range bySection[s] {
			def := f.DefValue
			if f.Name == "data-dir" && def == "" {
				def = "${name}.etcd" // what etcd (and substrate etcd) uses
			}
			fmt.Fprintf(w, "  --%s '%s'\n    %s\n", f.Name, def, strings.ReplaceAll(f.Usage, "\n", "\n    "))
		}
	}
}
