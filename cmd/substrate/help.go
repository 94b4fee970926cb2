package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"substrate/internal/config"
)

// errHelp is returned by a command that printed its help: exit status 0.
var errHelp = errors.New("help printed")

// defaultConfigFile is where the packages install the config file; their
// unit passes it to serve with --config.
const defaultConfigFile = "/etc/substrate/substrate.yaml"

// writeServeHelp writes `substrate serve --help`: what serve does, where
// each setting comes from, every flag with its environment variable, and
// the other variables serve reads.
func writeServeHelp(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintf(w, `Usage: substrate serve [flags]

Runs etcd, the AMQP 0-9-1 broker (for RabbitMQ's clients), the memcached
cache and the management HTTP server in one process until SIGTERM or SIGINT.

Each setting comes from, first to last: the command-line flag; the
environment variable SUBSTRATE_<FLAG> (the flag's name in upper case, '-'
as '_'); the YAML config file named by --config or SUBSTRATE_CONFIG, whose
keys are the flag names; the default shown. The packages install a
commented config file, %s, and their systemd
unit passes it. An unknown key or a bad value stops startup with one line.

Flags:
`, defaultConfigFile)
	fs.VisitAll(func(f *flag.Flag) {
		name, usage := flag.UnquoteUsage(f)
		fmt.Fprintf(w, "  --%s", f.Name)
		if name != "" {
			fmt.Fprintf(w, " %s", name)
		}
		fmt.Fprintf(w, "\n        %s", strings.ReplaceAll(usage, "\n", "\n        "))
		if f.DefValue != "" && f.DefValue != "0" {
			fmt.Fprintf(w, " (default %q)", f.DefValue)
		}
		fmt.Fprintf(w, "\n        env %s", config.EnvName("SUBSTRATE", f.Name))
		if f.Name != "config" {
			fmt.Fprintf(w, ", config key %s", f.Name)
		}
		fmt.Fprintln(w)
	})
	fmt.Fprint(w, `
Also read from the environment:
  JOURNAL_STREAM  set by systemd when stderr goes to the journal: log lines
                  then start with their syslog priority (<3> error, <4>
                  warning, <6> info, <7> debug) and carry no time of their own
  NOTIFY_SOCKET   set by systemd for Type=notify units: READY=1 is sent once
                  every listener accepts, STOPPING=1 at shutdown
  WATCHDOG_USEC   set by systemd with WatchdogSec: WATCHDOG=1 is sent at half
                  that period while every service passes its health check
  GOMEMLIMIT      Go's memory limit; when set, serve does not set its own
                  from the memory budget

Documentation: README.md, docs/operations.md (in /usr/share/doc/substrate
when installed from a package).
`)
}
