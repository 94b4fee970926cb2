// Package ctl is `substrate ctl`: rabbitmqctl's commands, output and exit
// codes, run against the broker of a running `substrate serve`.
//
// The client sends the command line over a unix socket in the data
// directory (DATA/ctl.sock, mode 0600: whoever may read the data may
// administer the broker, as with rabbitmqctl's Erlang cookie); the server
// runs it and returns the output and exit code. All parsing and formatting
// happens on the server side, in Run, which tests call directly.
package ctl

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"substrate/broker"
)

// Broker is what ctl needs of the broker; *broker.Server implements it.
type Broker interface {
	AddUser(ctx context.Context, name, password string) error
	DeleteUser(ctx context.Context, name string) error
	ChangePassword(ctx context.Context, name, password string) error
	SetUserTags(ctx context.Context, name string, tags []string) error
	Users() []broker.User
	AddVHost(ctx context.Context, name string) error
	DeleteVHost(ctx context.Context, name string) error
	VHosts() []string
	SetPermissions(ctx context.Context, p broker.Permission) error
	ClearPermissions(ctx context.Context, user, vhost string) error
	Permissions(vhost string) []broker.Permission
	Queues(vhost string) []broker.QueueInfo
	Exchanges(vhost string) []broker.ExchangeInfo
	Bindings(vhost string) []broker.BindingDef
	Connections() []broker.ConnectionInfo
	CloseConnection(name, reason string) error
	CloseAllConnections(reason string) int
	SetVHostLimits(ctx context.Context, vhost string, l broker.VHostLimits) error
	ClearVHostLimits(ctx context.Context, vhost string) error
	VHostLimits() map[string]broker.VHostLimits
}

// CertReloader is a Broker whose process serves TLS: reload_certificates
// (substrate's own; RabbitMQ re-reads certificates only through
// `rabbitmqctl eval 'ssl:clear_pem_cache().'`) re-reads the files, as
// SIGHUP does, and returns a line describing the certificate now in use.
type CertReloader interface {
	ReloadCertificates() (string, error)
}

// rabbitmqctl's exit codes (sysexits.h).
const (
	ExitOK       = 0
	ExitUsage    = 64
	ExitDataErr  = 65
	ExitNoUser   = 67
	ExitUnavail  = 69 // rabbitmqctl's answer to a definition the node refuses
	ExitSoftware = 70
)

// Result is what a command printed and how it ended.
type Result struct {
	Stdout string `json:"stdout"`
	Stderr string `json:"stderr"`
	Code   int    `json:"code"`
}

// SocketPath is where serve listens for ctl, given its data directory. A
// path too long for a unix socket moves to the temp directory under a
// name derived from the data directory, which both sides compute alike.
func SocketPath(dataDir string) string {
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		abs = dataDir
	}
	p := filepath.Join(abs, "ctl.sock")
	if len(p) < 100 {
		return p
	}
	sum := sha256.Sum256([]byte(abs))
	return filepath.Join(os.TempDir(), "substrate-ctl-"+hex.EncodeToString(sum[:8])+".sock")
}

type command struct {
	args  string // usage after the name
	min   int    // positional arguments
	max   int    // -1: any
	vhost bool   // takes -p/--vhost
	run   func(ctx context.Context, b Broker, vhost string, args []string) (banner, out string, err error)
}

// cmdError is a failed command: rabbitmqctl prints "Error:\n" + msg.
type cmdError struct {
	code int
	msg  string
}

func (e *cmdError) Error() string { return e.msg }

var commands = map[string]command{
	"add_user": {args: "<username> <password>", min: 2, max: 2, run: func(ctx context.Context, b Broker, _ string, a []string) (string, string, error) {
		banner := fmt.Sprintf("Adding user %q ...", a[0])
		if a[0] == "" {
			return "", "", &cmdError{ExitUsage, "user cannot be an empty string"}
		}
		if exists(b, a[0]) {
			return banner, "", &cmdError{ExitSoftware, fmt.Sprintf("User %q already exists", a[0])}
		}
		if err := b.AddUser(ctx, a[0], a[1]); err != nil {
			return banner, "", err
		}
		return banner, "Done. Don't forget to grant the user permissions to some virtual hosts! See 'rabbitmqctl help set_permissions' to learn more.", nil
	}},
	"reload_certificates": {args: "", min: 0, max: 0, run: func(ctx context.Context, b Broker, _ string, _ []string) (string, string, error) {
		banner := "Reloading the TLS certificate, key and CA files ..."
		r, ok := b.(CertReloader)
		if !ok {
			return banner, "", &cmdError{ExitUnavail, "TLS is not enabled"}
		}
		out, err := r.ReloadCertificates()
		if err != nil {
			return banner, "", &cmdError{ExitSoftware, err.Error()}
		}
		return banner, out, nil
	}},
	"delete_user": {args: "<username>", min: 1, max: 1, run: func(ctx context.Context, b Broker, _ string, a []string) (string, string, error) {
		banner := fmt.Sprintf("Deleting user %q ...", a[0])
		if !exists(b, a[0]) {
			return banner, "", noUser(a[0])
		}
		return banner, "", b.DeleteUser(ctx, a[0])
	}},
	"change_password": {args: "<username> <password>", min: 2, max: 2, run: func(ctx context.Context, b Broker, _ string, a []string) (string, string, error) {
		banner := fmt.Sprintf("Changing password for user %q ...", a[0])
		if !exists(b, a[0]) {
			return banner, "", noUser(a[0])
		}
		return banner, "", b.ChangePassword(ctx, a[0], a[1])
	}},
	"set_user_tags": {args: "<username> <tag> [...]", min: 1, max: -1, run: func(ctx context.Context, b Broker, _ string, a []string) (string, string, error) {
		banner := fmt.Sprintf("Setting tags for user %q to [%s] ...", a[0], strings.Join(a[1:], ", "))
		if !exists(b, a[0]) {
			return banner, "", noUser(a[0])
		}
		return banner, "", b.SetUserTags(ctx, a[0], a[1:])
	}},
	"list_users": {run: func(_ context.Context, b Broker, _ string, _ []string) (string, string, error) {
		rows := [][]string{{"user", "tags"}}
		for _, u := range b.Users() {
			rows = append(rows, []string{u.Name, "[" + strings.Join(u.Tags, ", ") + "]"})
		}
		return "Listing users ...", table(rows), nil
	}},
	"add_vhost": {args: "<vhost>", min: 1, max: 1, run: func(ctx context.Context, b Broker, _ string, a []string) (string, string, error) {
		return fmt.Sprintf("Adding vhost %q ...", a[0]), "", b.AddVHost(ctx, a[0])
	}},
	"delete_vhost": {args: "<vhost>", min: 1, max: 1, run: func(ctx context.Context, b Broker, _ string, a []string) (string, string, error) {
		banner := fmt.Sprintf("Deleting vhost %q ...", a[0])
		if !slices.Contains(b.VHosts(), a[0]) {
			return banner, "", noVHost(a[0])
		}
		return banner, "", b.DeleteVHost(ctx, a[0])
	}},
	"list_vhosts": {run: func(_ context.Context, b Broker, _ string, _ []string) (string, string, error) {
		rows := [][]string{{"name"}}
		for _, v := range b.VHosts() {
			rows = append(rows, []string{v})
		}
		return "Listing vhosts ...", table(rows), nil
	}},
	"set_vhost_limits": {args: "<definition>", min: 1, max: 1, vhost: true, run: func(ctx context.Context, b Broker, vhost string, a []string) (string, string, error) {
		banner := fmt.Sprintf("Setting vhost limits to %q for vhost %q ...", a[0], vhost)
		l, err := parseLimits(a[0])
		if err != nil {
			return banner, "", err
		}
		if !slices.Contains(b.VHosts(), vhost) {
			return banner, "", &cmdError{ExitDataErr, fmt.Sprintf("Virtual host '%s' does not exist", vhost)}
		}
		return banner, "", b.SetVHostLimits(ctx, vhost, l)
	}},
	"clear_vhost_limits": {vhost: true, run: func(ctx context.Context, b Broker, vhost string, _ []string) (string, string, error) {
		banner := fmt.Sprintf("Clearing vhost %q limits ...", vhost)
		if _, ok := b.VHostLimits()[vhost]; !ok {
			return banner, "", &cmdError{ExitUnavail, "Parameter does not exist"}
		}
		return banner, "", b.ClearVHostLimits(ctx, vhost)
	}},
	"list_vhost_limits": {args: "[--global]", max: 1, vhost: true, run: func(_ context.Context, b Broker, vhost string, a []string) (string, string, error) {
		all := b.VHostLimits()
		if len(a) == 1 {
			if a[0] != "--global" {
				return "", "", &cmdError{ExitUsage, "invalid option " + a[0]}
			}
			rows := [][]string{{"vhost", "limits"}}
			for _, v := range b.VHosts() {
				if l, ok := all[v]; ok {
					rows = append(rows, []string{v, limitsJSON(l)})
				}
			}
			return "Listing limits for all vhosts ...", table(rows), nil
		}
		banner := fmt.Sprintf("Listing limits for vhost %q ...", vhost)
		if l, ok := all[vhost]; ok {
			return banner, limitsJSON(l), nil
		}
		return banner, "", nil
	}},
	"set_permissions": {args: "<username> <conf> <write> <read>", min: 4, max: 4, vhost: true, run: func(ctx context.Context, b Broker, vhost string, a []string) (string, string, error) {
		banner := fmt.Sprintf("Setting permissions for user %q in vhost %q ...", a[0], vhost)
		switch {
		case !exists(b, a[0]):
			return banner, "", noUser(a[0])
		case !slices.Contains(b.VHosts(), vhost):
			return banner, "", noVHost(vhost)
		}
		return banner, "", b.SetPermissions(ctx, broker.Permission{User: a[0], VHost: vhost, Configure: a[1], Write: a[2], Read: a[3]})
	}},
	"clear_permissions": {args: "<username>", min: 1, max: 1, vhost: true, run: func(ctx context.Context, b Broker, vhost string, a []string) (string, string, error) {
		banner := fmt.Sprintf("Clearing permissions for user %q in vhost %q ...", a[0], vhost)
		if !exists(b, a[0]) {
			return banner, "", noUser(a[0])
		}
		return banner, "", b.ClearPermissions(ctx, a[0], vhost)
	}},
	"list_permissions": {vhost: true, run: func(_ context.Context, b Broker, vhost string, _ []string) (string, string, error) {
		rows := [][]string{{"user", "configure", "write", "read"}}
		for _, p := range b.Permissions(vhost) {
			rows = append(rows, []string{p.User, p.Configure, p.Write, p.Read})
		}
		return fmt.Sprintf("Listing permissions for vhost %q ...", vhost), table(rows), nil
	}},
	"list_user_permissions": {args: "<username>", min: 1, max: 1, run: func(_ context.Context, b Broker, _ string, a []string) (string, string, error) {
		banner := fmt.Sprintf("Listing permissions for user %q ...", a[0])
		if !exists(b, a[0]) {
			return banner, "", noUser(a[0])
		}
		rows := [][]string{{"vhost", "configure", "write", "read"}}
		for _, v := range b.VHosts() {
			for _, p := range b.Permissions(v) {
				if p.User == a[0] {
					rows = append(rows, []string{p.VHost, p.Configure, p.Write, p.Read})
				}
			}
		}
		return banner, table(rows), nil
	}},
	"list_queues": {args: "[<column> ...]", max: -1, vhost: true, run: func(_ context.Context, b Broker, vhost string, a []string) (string, string, error) {
		cols := a
		if len(cols) == 0 {
			cols = []string{"name", "messages"}
		}
		var bad []string
		for _, c := range cols {
			if queueColumns[c] == nil {
				bad = append(bad, c)
			}
		}
		if len(bad) > 0 {
			return "", "", &cmdError{ExitUsage, fmt.Sprintf("Info key(s) %s are not supported", strings.Join(bad, ","))}
		}
		rows := [][]string{cols}
		for _, q := range b.Queues(vhost) {
			row := make([]string, len(cols))
			for i, c := range cols {
				row[i] = queueColumns[c](q)
			}
			rows = append(rows, row)
		}
		return fmt.Sprintf("Timeout: 60.0 seconds ...\nListing queues for vhost %s ...", vhost), table(rows), nil
	}},
	"list_exchanges": {vhost: true, run: func(_ context.Context, b Broker, vhost string, _ []string) (string, string, error) {
		rows := [][]string{{"name", "type"}}
		for _, e := range b.Exchanges(vhost) {
			rows = append(rows, []string{e.Name, e.Type})
		}
		return fmt.Sprintf("Listing exchanges for vhost %s ...", vhost), table(rows), nil
	}},
	"list_bindings": {vhost: true, run: func(_ context.Context, b Broker, vhost string, _ []string) (string, string, error) {
		rows := [][]string{{"source_name", "source_kind", "destination_name", "destination_kind", "routing_key", "arguments"}}
		for _, x := range b.Bindings(vhost) {
			rows = append(rows, []string{x.Source, "exchange", x.Destination, x.DestinationType, x.RoutingKey, fmt.Sprint(args(x.Arguments))})
		}
		return fmt.Sprintf("Listing bindings for vhost %s...", vhost), table(rows), nil
	}},
	"list_connections": {run: func(_ context.Context, b Broker, _ string, _ []string) (string, string, error) {
		rows := [][]string{{"user", "peer_host", "peer_port", "state"}}
		for _, c := range b.Connections() {
			host, port := splitPeer(c.Peer)
			rows = append(rows, []string{c.User, host, port, "running"})
		}
		return "Listing connections ...", table(rows), nil
	}},
	"close_connection": {args: "<connection name> <explanation>", min: 2, max: 2, run: func(_ context.Context, b Broker, _ string, a []string) (string, string, error) {
		return fmt.Sprintf("Closing connection %s, reason: %s...", a[0], a[1]), "", b.CloseConnection(a[0], a[1])
	}},
	"close_all_connections": {args: "<explanation>", min: 1, max: 1, run: func(_ context.Context, b Broker, _ string, a []string) (string, string, error) {
		n := b.CloseAllConnections(a[0])
		return "Closing all connections", fmt.Sprintf("Closed %d connections", n), nil
	}},
}

// queueColumns are the list_queues info items substrate answers, as
// rabbitmqctl prints them.
var queueColumns = map[string]func(q broker.QueueInfo) string{
	"name":                    func(q broker.QueueInfo) string { return q.Name },
	"durable":                 func(q broker.QueueInfo) string { return fmt.Sprint(q.Durable) },
	"auto_delete":             func(q broker.QueueInfo) string { return fmt.Sprint(q.AutoDelete) },
	"exclusive":               func(q broker.QueueInfo) string { return fmt.Sprint(q.Exclusive) },
	"arguments":               func(q broker.QueueInfo) string { return erlangArgs(q.Arguments) },
	"policy":                  func(q broker.QueueInfo) string { return "" },
	"messages":                func(q broker.QueueInfo) string { return fmt.Sprint(q.Messages) },
	"messages_ready":          func(q broker.QueueInfo) string { return fmt.Sprint(q.MessagesReady) },
	"messages_unacknowledged": func(q broker.QueueInfo) string { return fmt.Sprint(q.MessagesUnacknowledged) },
	"consumers":               func(q broker.QueueInfo) string { return fmt.Sprint(q.Consumers) },
	"state":                   func(q broker.QueueInfo) string { return "running" },
	"type":                    func(q broker.QueueInfo) string { return q.Type },
}

// erlangArgs prints queue arguments as rabbitmqctl does:
// [{"x-queue-type","quorum"},{"x-expires",1800000}], keys sorted.
func erlangArgs(m map[string]any) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		v := m[k]
		if s, ok := v.(string); ok {
			v = strconv.Quote(s)
		}
		parts[i] = fmt.Sprintf("{%s,%v}", strconv.Quote(k), v)
	}
	return "[" + strings.Join(parts, ",") + "]"
}

func exists(b Broker, name string) bool {
	for _, u := range b.Users() {
		if u.Name == name {
			return true
		}
	}
	return false
}

// parseLimits reads set_vhost_limits' JSON definition and validates it
// as rabbit_vhost_limit does: known names, integer values.
func parseLimits(def string) (broker.VHostLimits, error) {
	dec := json.NewDecoder(strings.NewReader(def))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil || dec.More() {
		return nil, &cmdError{ExitUnavail, "JSON decoding error. Reason: badarg"}
	}
	var unknown []string
	l := broker.VHostLimits{}
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if k != broker.LimitMaxConnections && k != broker.LimitMaxQueues {
			unknown = append(unknown, fmt.Sprintf("{<<%q>>,%v}", k, m[k]))
			continue
		}
		n, ok := m[k].(json.Number)
		v, err := n.Int64()
		if !ok || err != nil {
			was := fmt.Sprint(m[k])
			if s, isStr := m[k].(string); isStr {
				was = fmt.Sprintf("<<%q>>", s)
			}
			return nil, &cmdError{ExitUnavail, fmt.Sprintf("Validation failed\n\n%s should be a number, actually was %s\n", k, was)}
		}
		l[k] = v
	}
	if len(unknown) > 0 {
		return nil, &cmdError{ExitUnavail, fmt.Sprintf("Validation failed\n\nUnrecognised terms [%s] in limits\n", strings.Join(unknown, ","))}
	}
	return l, nil
}

// limitsJSON prints limits as list_vhost_limits does.
func limitsJSON(l broker.VHostLimits) string {
	b, _ := json.Marshal(map[string]int64(l))
	return string(b)
}

func noUser(name string) error {
	return &cmdError{ExitNoUser, fmt.Sprintf("User %q does not exist", name)}
}
func noVHost(name string) error {
	return &cmdError{ExitDataErr, fmt.Sprintf("Virtual host %q does not exist", name)}
}

// table renders rows as rabbitmqctl does: tab-separated, header first.
func table(rows [][]string) string {
	lines := make([]string, len(rows))
	for i, r := range rows {
		lines[i] = strings.Join(r, "\t")
	}
	return strings.Join(lines, "\n")
}

func args(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k, v := range m {
		out = append(out, fmt.Sprintf("{%s,%v}", k, v))
	}
	sort.Strings(out)
	return out
}

func splitPeer(peer string) (string, string) {
	if i := strings.LastIndex(peer, ":"); i >= 0 {
		return strings.Trim(peer[:i], "[]"), peer[i+1:]
	}
	return peer, ""
}

// Run executes one rabbitmqctl command line (without the program name).
func Run(ctx context.Context, b Broker, argv []string) Result {
	var quiet bool
	vhost := "/"
	var pos []string
	for i := 0; i < len(argv); i++ {
		a := argv[i]
		switch {
		case a == "-q" || a == "--quiet" || a == "-s" || a == "--silent":
			quiet = true
		case a == "-p" || a == "--vhost":
			if i+1 >= len(argv) {
				return usage("option " + a + " needs a value")
			}
			i++
			vhost = argv[i]
		case strings.HasPrefix(a, "--vhost="):
			vhost = strings.TrimPrefix(a, "--vhost=")
		case a == "-n" || a == "--node": // one node: accepted and ignored
			i++
		case a == "--no-table-headers", a == "--longnames":
		case strings.HasPrefix(a, "-") && len(a) > 1 && len(pos) == 0:
			return usage("invalid option " + a)
		default:
			pos = append(pos, a)
		}
	}
	if len(pos) == 0 {
		return usage("no command given")
	}
	name, rest := pos[0], pos[1:]
	c, ok := commands[name]
	if !ok {
		return Result{Stderr: fmt.Sprintf("\nCommand '%s' not found.\n\nUsage: substrate ctl [-p <vhost>] [-q] <command> [<args>]\nCommands: %s\n", name, strings.Join(names(), ", ")), Code: ExitUsage}
	}
	switch {
	case len(rest) < c.min:
		return usageOf(name, c, "not enough arguments.")
	case c.max >= 0 && len(rest) > c.max:
		return usageOf(name, c, "too many arguments.")
	}
	banner, out, err := c.run(ctx, b, vhost, rest)
	var res Result
	if banner != "" && !quiet {
		res.Stdout = banner + "\n"
	}
	if err != nil {
		var ce *cmdError
		if !errors.As(err, &ce) {
			ce = &cmdError{ExitSoftware, err.Error()}
		}
		res.Stderr = "Error:\n" + ce.msg + "\n"
		res.Code = ce.code
		return res
	}
	if out != "" {
		res.Stdout += out + "\n"
	}
	return res
}

func usage(msg string) Result {
	return Result{Stderr: "Error: " + msg + "\nUsage: substrate ctl [-p <vhost>] [-q] <command> [<args>]\n", Code: ExitUsage}
}

func usageOf(name string, c command, msg string) Result {
	opt := ""
	if c.vhost {
		opt = "[--vhost <vhost>] "
	}
	return Result{Stderr: fmt.Sprintf("Error (argument validation): %s\nUsage\n\nrabbitmqctl %s %s%s\n", msg, name, opt, c.args), Code: ExitUsage}
}

func names() []string {
	out := make([]string, 0, len(commands))
	for n := range commands {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
