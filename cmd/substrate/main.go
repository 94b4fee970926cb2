// Command substrate runs the control-plane services an OpenStack controller
// needs (etcd, and in time the AMQP broker and the memcached-compatible
// cache) in one process. See README.md and DESIGN.md for the command line.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"syscall"
	"time"

	"go.etcd.io/etcd/api/v3/version"

	"substrate/internal/ctl"
)

// version is set at build time (make build: -X main.version=...).
var buildVersion = ""

func main() {
	sigc := make(chan os.Signal, 2)
	signal.Notify(sigc, syscall.SIGINT, syscall.SIGTERM)
	ctx, stop := context.WithCancel(context.Background())
	go handleSignals(sigc, stop, os.Stderr, os.Exit, stopGrace)
	os.Exit(run(ctx, os.Args, os.Stdout, os.Stderr))
}

// stopGrace bounds the whole stop after the first signal: startup gives
// up within seconds and shutdown within 10 s (runServices), so this only
// catches a stop that hangs anyway.
const stopGrace = 15 * time.Second

// handleSignals calls stop at the first signal (graceful shutdown) and
// exit(1) at the second, for an operator who does not want to wait, or
// once grace has passed since the first.
func handleSignals(sigc <-chan os.Signal, stop func(), stderr io.Writer, exit func(int), grace time.Duration) {
	<-sigc
	stop()
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case sig := <-sigc:
		fmt.Fprintf(stderr, "substrate: second signal (%v), exiting at once\n", sig)
	case <-t.C:
		fmt.Fprintf(stderr, "substrate: still running %v after the stop signal, exiting at once\n", grace)
	}
	exit(1)
}

// usageError marks a command-line mistake: exit status 2, as flag does.
type usageError struct{ error }

const usage = `usage:
  substrate serve [flags]          run the services (substrate serve -h lists the flags)
  substrate etcd [etcd's flags]    run only the kvstore, as the etcd daemon would
  substrate memcached [flags]      run only the cache, with memcached 1.6's flags
  substrate ctl COMMAND ARGS...    rabbitmqctl's commands against a running serve (--data-dir DIR)
  substrate rabbitmq-diagnostics COMMAND ARGS...  rabbitmq-diagnostics' commands (so are the rabbitmqctl and rabbitmq-diagnostics symlinks)
  substrate certs --host NAMES     write a lab CA, server and client certificates (--dir DIR) and print how to use them
  substrate version
`

// run executes one command line and returns the exit status. ctx is
// cancelled when the process is asked to shut down.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmd, rest := "", args[1:]
	switch filepath.Base(args[0]) {
	case "etcd", "memcached": // installed as, or linked to, etcd or memcached
		cmd = filepath.Base(args[0])
	case "rabbitmqctl", "rabbitmq-diagnostics": // installed as, or linked to, RabbitMQ's CLI tools
		cmd = filepath.Base(args[0])
	default:
		if len(rest) == 0 {
			fmt.Fprint(stderr, usage)
			return 2
		}
		cmd, rest = rest[0], rest[1:]
	}
	var err error
	switch cmd {
	case "serve":
		err = serve(ctx, rest, stdout, stderr)
	case "etcd":
		err = etcd(ctx, rest, stdout, stderr)
	case "memcached":
		err = memcached(ctx, rest, stdout, stderr)
	case "ctl", "rabbitmqctl":
		err = ctlCommand(ctl.ToolCtl, rest, os.Stdin, stdout, stderr)
	case "rabbitmq-diagnostics":
		err = ctlCommand(ctl.ToolDiag, rest, os.Stdin, stdout, stderr)
	case "certs":
		err = certsCommand(rest, stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, versionString())
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		err = usageError{fmt.Errorf("unknown command %q\n%s", cmd, usage)}
	}
	if err == nil {
		return 0
	}
	var ee exitError
	if errors.As(err, &ee) {
		if ee.msg != "" {
			fmt.Fprintln(stderr, ee.msg)
		}
		return ee.code
	}
	fmt.Fprintf(stderr, "substrate %s: %v\n", cmd, err)
	if errors.As(err, &usageError{}) {
		return 2
	}
	return 1
}

func versionString() string {
	v := buildVersion
	if v == "" {
		v = "dev"
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, s := range bi.Settings {
				if s.Key == "vcs.revision" && len(s.Value) >= 12 {
					v = "dev-" + s.Value[:12]
				}
			}
		}
	}
	return fmt.Sprintf("substrate %s (etcd %s, %s %s/%s)", v, version.Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
