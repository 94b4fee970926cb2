package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"substrate/internal/config"
	"substrate/internal/ctl"
	"substrate/internal/preflight"
)

// ctlCommand runs `substrate ctl ...` (also installed as rabbitmqctl and
// rabbitmq-diagnostics, tool naming which): rabbitmqctl's commands
// against the broker of the `substrate serve` whose data directory is
// --data-dir, SUBSTRATE_DATA_DIR, the data-dir of --config,
// SUBSTRATE_CONFIG or /etc/substrate/substrate.yaml, or ./substrate-data,
// in that order.
//
// The client does what rabbitmqctl does on its own side: it reads
// import_definitions' file (or stdin) and writes export_definitions',
// waits for the server to answer in await_startup and wait, and reads
// authenticate_user's password from stdin when it is not given.
func ctlCommand(tool string, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	dataDir, cfgFile := "", os.Getenv("SUBSTRATE_CONFIG")
	var rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "--") || (name != "data-dir" && name != "config") {
			rest = append(rest, a)
			continue
		}
		if !hasVal {
			if i+1 >= len(args) {
				return usageError{fmt.Errorf("--%s needs a value", name)}
			}
			i++
			val = args[i]
		}
		if name == "data-dir" {
			dataDir = val
		} else {
			cfgFile = val
		}
	}
	if dataDir == "" {
		dataDir = os.Getenv("SUBSTRATE_DATA_DIR")
	}
	if dataDir == "" && cfgFile == "" {
		if _, err := os.Stat(defaultConfigFile); err == nil {
			cfgFile = defaultConfigFile
		}
	}
	if dataDir == "" && cfgFile != "" {
		values, err := config.ReadFile(cfgFile)
		if err != nil {
			return fmt.Errorf("config file: %w", err)
		}
		dataDir = values["data-dir"]
	}
	if dataDir == "" {
		dataDir = "substrate-data"
	}
	req := ctl.Request{Tool: tool, Argv: rest}
	cmd, pos, timeout := ctlWords(rest)
	var exportTo string
	switch cmd {
	case "import_definitions":
		var err error
		if len(pos) == 0 || pos[0] == "-" {
			req.Stdin, err = io.ReadAll(stdin)
		} else {
			req.Stdin, err = os.ReadFile(pos[0])
		}
		if err != nil {
			return exitError{fmt.Sprintf("Error:\n%v", err), ctl.ExitDataErr}
		}
	case "export_definitions":
		if len(pos) == 1 && pos[0] != "-" {
			exportTo = pos[0]
		}
	case "authenticate_user":
		if len(pos) == 1 { // one line: the password, as rabbitmqctl reads it
			line, _ := bufio.NewReader(io.LimitReader(stdin, 4096)).ReadString('\n')
			req.Stdin = []byte(line)
		}
	case "wait":
		return ctlWait(dataDir, req, pos, timeout, stdout)
	}
	if timeout == 0 {
		timeout = 60 * time.Second
		if cmd == "await_startup" {
			timeout = 300 * time.Second
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout+5*time.Second)
	defer cancel()
	res := ctl.Call(ctx, dataDir, req)
	for cmd == "await_startup" && res.Unreachable && ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
		res = ctl.Call(ctx, dataDir, req)
	}
	if res.Unreachable {
		res = unreachableAs(cmd, tool, rest, res, timeout)
	}
	if exportTo != "" && res.Code == 0 {
		banner, defs := "", res.Stdout
		if strings.HasPrefix(defs, "Exporting") {
			banner, defs, _ = strings.Cut(defs, "\n")
			banner += "\n"
		}
		if err := os.WriteFile(exportTo, []byte(defs), 0o600); err != nil {
			return exitError{fmt.Sprintf("Error:\n%v", err), ctl.ExitDataErr}
		}
		res.Stdout = banner
	}
	fmt.Fprint(stdout, res.Stdout)
	if res.Code != 0 {
		return exitError{strings.TrimSuffix(res.Stderr, "\n"), res.Code}
	}
	fmt.Fprint(stderr, res.Stderr)
	return nil
}

// ctlWords finds the command name, its positional arguments and
// --timeout in a command line (the server parses it again, fully).
func ctlWords(argv []string) (cmd string, pos []string, timeout time.Duration) {
	valued := map[string]bool{"-n": true, "--node": true, "-t": true, "--timeout": true, "-p": true, "--vhost": true,
		"--formatter": true, "--priority": true, "--apply-to": true, "--format": true, "--unit": true, "--pid": true, "-P": true}
	for i := 0; i < len(argv); i++ {
		a := argv[i]
		k, v, hasVal := strings.Cut(a, "=")
		if valued[k] {
			if !hasVal && i+1 < len(argv) {
				i++
				v = argv[i]
			}
			if k == "-t" || k == "--timeout" {
				if n, err := strconv.ParseFloat(v, 64); err == nil && n > 0 {
					timeout = time.Duration(n * float64(time.Second))
				}
			}
			if k == "--pid" || k == "-P" {
				pos = append(pos, "--pid="+v)
			}
			continue
		}
		if strings.HasPrefix(a, "-") && a != "-" {
			continue
		}
		if cmd == "" {
			cmd = a
		} else {
			pos = append(pos, a)
		}
	}
	return cmd, pos, timeout
}

// unreachableAs words a server that did not answer as rabbitmqctl does
// for the command: ping and check_running print their banner first.
func unreachableAs(cmd, tool string, argv []string, res ctl.Result, timeout time.Duration) ctl.Result {
	node := ctl.NodeName()
	quiet := false
	for _, a := range argv {
		quiet = quiet || a == "-q" || a == "--quiet" || a == "-s" || a == "--silent"
	}
	banner := func(s string) string {
		if quiet {
			return ""
		}
		return s + "\n"
	}
	switch cmd {
	case "ping":
		return ctl.Result{Stdout: banner(fmt.Sprintf("Will ping %s. This only checks if the OS process is running and registered with epmd. Timeout: %d ms.", node, timeout.Milliseconds())),
			Stderr: fmt.Sprintf("Error:\nFailed to connect and authenticate to %s in %d ms\n", node, timeout.Milliseconds()), Code: ctl.ExitUnavailable}
	case "check_running":
		res.Stdout = banner(fmt.Sprintf("Checking if RabbitMQ is running on node %s ...", node))
	}
	return res
}

// ctlWait is `wait PIDFILE` (or --pid PID): it waits for the pid file to
// appear, for that process to run, and for the server to answer, as
// rabbitmqctl wait does; exit code 75 (EX_TEMPFAIL) when time runs out.
func ctlWait(dataDir string, req ctl.Request, pos []string, timeout time.Duration, stdout io.Writer) error {
	node := ctl.NodeName()
	pidfile, pid := "", 0
	for _, p := range pos {
		if v, ok := strings.CutPrefix(p, "--pid="); ok {
			pid, _ = strconv.Atoi(v)
		} else if pidfile == "" {
			pidfile = p
		}
	}
	if pidfile == "" && pid == 0 {
		res := ctl.Call(context.Background(), dataDir, req) // the server words the argument error
		if res.Unreachable {
			return exitError{"Error (argument validation): \"No pid or pidfile specified\"", ctl.ExitUsage}
		}
		fmt.Fprint(stdout, res.Stdout)
		return exitError{strings.TrimSuffix(res.Stderr, "\n"), res.Code}
	}
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	deadline := time.Now().Add(timeout)
	timedOut := exitError{fmt.Sprintf("Error: operation wait on node %s timed out. Timeout value used: %d", node, timeout.Milliseconds()), 75}
	poll := func(ok func() bool) bool {
		for !ok() {
			if time.Now().After(deadline) {
				return false
			}
			time.Sleep(100 * time.Millisecond)
		}
		return true
	}
	if pid == 0 {
		fmt.Fprintf(stdout, "Waiting for pid file '%s' to appear\n", pidfile)
		if !poll(func() bool {
			b, err := os.ReadFile(pidfile)
			if err != nil {
				return false
			}
			pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
			return err == nil && pid > 0
		}) {
			return timedOut
		}
		fmt.Fprintf(stdout, "pid is %d\n", pid)
	}
	alive := func() bool { return syscall.Kill(pid, 0) == nil || errors.Is(syscall.Kill(pid, 0), syscall.EPERM) }
	fmt.Fprintf(stdout, "Waiting for erlang distribution on node '%s' while OS process '%d' is running\n", node, pid)
	fmt.Fprintf(stdout, "Waiting for applications 'rabbit_and_plugins' to start on node '%s'\n", node)
	up := poll(func() bool {
		if !alive() {
			return true // poll stops; checked below
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return !ctl.Call(ctx, dataDir, ctl.Request{Argv: []string{"await_startup"}}).Unreachable
	})
	if !alive() {
		return exitError{fmt.Sprintf("Error:\nprocess_not_running (OS process %d is gone)", pid), ctl.ExitUnavailable}
	}
	if !up {
		return timedOut
	}
	fmt.Fprintf(stdout, "Applications 'rabbit_and_plugins' are running on node '%s'\n", node)
	return nil
}

// ctlNode is the serving process as status, cluster_status, listeners and
// check_port_connectivity report it (ctl.Node). serve sets ports once
// every service has said where it listens, before the ctl socket opens.
type ctlNode struct {
	started time.Time
	dataDir string
	config  string
	ports   []preflight.Port
}

// listenerNames maps serve's port descriptions to RabbitMQ's listener
// protocols and purposes (substrate's own for etcd, memcached, redis).
// The broker reports its AMQP and AMQPS listeners itself.
var listenerNames = map[string][2]string{
	"http port":        {"http", "HTTP API"},
	"https port":       {"https", "HTTP API over TLS (HTTPS)"},
	"etcd client port": {"etcd", "etcd client API (gRPC and HTTP)"},
	"etcd peer port":   {"etcd/peer", "etcd peer communication"},
	"memcached port":   {"memcached", "memcached text and binary protocol"},
	"redis port":       {"redis", "Redis protocol"},
}

// NodeInfo implements ctl.Node.
func (n *ctlNode) NodeInfo() ctl.NodeInfo {
	info := ctl.NodeInfo{Version: versionString(), StartedAt: n.started, DataDir: n.dataDir, ConfigFile: n.config}
	for _, p := range n.ports {
		name, ok := listenerNames[p.What]
		if !ok {
			continue
		}
		host, port, err := net.SplitHostPort(p.Addr)
		if err != nil {
			continue
		}
		if host == "" {
			host = "::"
		}
		pn, _ := strconv.Atoi(port)
		info.Listeners = append(info.Listeners, ctl.Listener{Interface: host, Port: pn, Protocol: name[0], Purpose: name[1]})
	}
	return info
}
