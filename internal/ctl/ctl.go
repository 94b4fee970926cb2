// Package ctl is `substrate ctl`: rabbitmqctl's and rabbitmq-diagnostics'
// commands, output and exit codes (RabbitMQ 3.10.8's, checked against
// goldens recorded from it: golden_test.go), run against the broker of a
// running `substrate serve`.
//
// The client sends the command line (a Request: tool, words, stdin) over
// a unix socket in the data directory (DATA/ctl.sock, mode 0600: whoever
// may read the data may administer the broker, as with rabbitmqctl's
// Erlang cookie); the server runs it and returns the output and exit
// code. Parsing and formatting happen on the server side, in Exec, which
// tests call directly; the client (cmd/substrate/ctl.go) does only what
// rabbitmqctl does locally: files for definitions, wait's pid file,
// retrying await_startup, and the answer when no server is there.
//
// Files: ctl.go (options, the older commands), lists.go (connections,
// channels, consumers, policies), diagnostics.go (status, health checks,
// definitions), format.go (--formatter), help.go and help_data.go
// (help texts), transport.go (socket).
package ctl

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

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
	CloseConnectionByID(id uint64, reason string) error
	Channels() []broker.ChannelInfo
	Consumers() []broker.ConsumerInfo
	SetPolicy(ctx context.Context, p broker.Policy) error
	SetOperatorPolicy(ctx context.Context, p broker.Policy) error
	ClearPolicy(ctx context.Context, vhost, name string) error
	ClearOperatorPolicy(ctx context.Context, vhost, name string) error
	Policies(vhost string) []broker.Policy
	OperatorPolicies(vhost string) []broker.Policy
	ExportDefinitions() broker.RabbitDefinitions
	ImportDefinitions(ctx context.Context, d broker.RabbitDefinitions) error
	MemoryAlarm() bool
	DiskAlarm() bool
	MemoryUsed() uint64
	MemoryHighWatermark() uint64
	DiskFree() uint64
	DiskFreeLimit() uint64
	Addrs() []net.Addr
	TLSAddrs() []net.Addr
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
	// Unreachable: the server did not answer (set by Call).
	Unreachable bool `json:"-"`
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
	args  string   // usage after the name
	min   int      // positional arguments
	max   int      // -1: any
	vhost bool     // takes -p/--vhost
	flags []string // command options that take a value (--priority)
	bools []string // command options without one (--global)
	run   func(c *call) (banner, out string, err error)
}

// cmdError is a failed command: rabbitmqctl prints "Error:\n" + msg, or
// msg alone when raw.
type cmdError struct {
	code int
	msg  string
	raw  bool
}

func (e *cmdError) Error() string { return e.msg }

var commands = map[string]command{
	"add_user": {args: "<username> <password>", min: 2, max: 2, run: func(c *call) (string, string, error) {
		ctx, b, a := c.ctx, c.b, c.args
		banner := fmt.Sprintf("Adding user %q ...", a[0])
		if a[0] == "" {
			return "", "", &cmdError{code: ExitUsage, msg: "user cannot be an empty string"}
		}
		if exists(b, a[0]) {
			return banner, "", &cmdError{code: ExitSoftware, msg: fmt.Sprintf("User %q already exists", a[0])}
		}
		if err := b.AddUser(ctx, a[0], a[1]); err != nil {
			return banner, "", err
		}
		return banner, "Done. Don't forget to grant the user permissions to some virtual hosts! See 'rabbitmqctl help set_permissions' to learn more.", nil
	}},
	"reload_certificates": {args: "", min: 0, max: 0, run: func(c *call) (string, string, error) {
		b := c.b
		banner := "Reloading the TLS certificate, key and CA files ..."
		r, ok := b.(CertReloader)
		if !ok {
			return banner, "", &cmdError{code: ExitUnavail, msg: "TLS is not enabled"}
		}
		out, err := r.ReloadCertificates()
		if err != nil {
			return banner, "", &cmdError{code: ExitSoftware, msg: err.Error()}
		}
		return banner, out, nil
	}},
	"delete_user": {args: "<username>", min: 1, max: 1, run: func(c *call) (string, string, error) {
		ctx, b, a := c.ctx, c.b, c.args
		banner := fmt.Sprintf("Deleting user %q ...", a[0])
		if !exists(b, a[0]) {
			return banner, "", noUser(a[0])
		}
		return banner, "", b.DeleteUser(ctx, a[0])
	}},
	"change_password": {args: "<username> <password>", min: 2, max: 2, run: func(c *call) (string, string, error) {
		ctx, b, a := c.ctx, c.b, c.args
		banner := fmt.Sprintf("Changing password for user %q ...", a[0])
		if !exists(b, a[0]) {
			return banner, "", noUser(a[0])
		}
		return banner, "", b.ChangePassword(ctx, a[0], a[1])
	}},
	"set_user_tags": {args: "<username> <tag> [...]", min: 1, max: -1, run: func(c *call) (string, string, error) {
		ctx, b, a := c.ctx, c.b, c.args
		banner := fmt.Sprintf("Setting tags for user %q to [%s] ...", a[0], strings.Join(a[1:], ", "))
		if !exists(b, a[0]) {
			return banner, "", noUser(a[0])
		}
		return banner, "", b.SetUserTags(ctx, a[0], a[1:])
	}},
	"list_users": {run: func(c *call) (string, string, error) {
		l := listing{cols: []string{"user", "tags"}}
		for _, u := range c.b.Users() {
			tags := cell{text: "[" + strings.Join(u.Tags, ", ") + "]", json: u.Tags, pretty: strings.Join(u.Tags, ", ")}
			if u.Tags == nil {
				tags.json = []string{}
			}
			l.rows = append(l.rows, []cell{str(u.Name), tags})
		}
		return "Listing users ...", c.render(l), nil
	}},
	"add_vhost": {args: "<vhost>", min: 1, max: 1, run: func(c *call) (string, string, error) {
		ctx, b, a := c.ctx, c.b, c.args
		return fmt.Sprintf("Adding vhost %q ...", a[0]), "", b.AddVHost(ctx, a[0])
	}},
	"delete_vhost": {args: "<vhost>", min: 1, max: 1, run: func(c *call) (string, string, error) {
		ctx, b, a := c.ctx, c.b, c.args
		banner := fmt.Sprintf("Deleting vhost %q ...", a[0])
		if !slices.Contains(b.VHosts(), a[0]) {
			return banner, "", noVHost(a[0])
		}
		return banner, "", b.DeleteVHost(ctx, a[0])
	}},
	"list_vhosts": {run: func(c *call) (string, string, error) {
		b := c.b
		rows := [][]string{{"name"}}
		for _, v := range b.VHosts() {
			rows = append(rows, []string{v})
		}
		return "Listing vhosts ...", c.table(rows, false), nil
	}},
	"set_vhost_limits": {args: "<definition>", min: 1, max: 1, vhost: true, run: func(c *call) (string, string, error) {
		ctx, b, vhost, a := c.ctx, c.b, c.vhost, c.args
		banner := fmt.Sprintf(`Setting vhost limits to "%s" for vhost "%s" ...`, a[0], vhost)
		l, err := parseLimits(a[0])
		if err != nil {
			return banner, "", err
		}
		if !slices.Contains(b.VHosts(), vhost) {
			return banner, "", &cmdError{code: ExitDataErr, msg: fmt.Sprintf("Virtual host '%s' does not exist", vhost)}
		}
		return banner, "", b.SetVHostLimits(ctx, vhost, l)
	}},
	"clear_vhost_limits": {vhost: true, run: func(c *call) (string, string, error) {
		ctx, b, vhost := c.ctx, c.b, c.vhost
		banner := fmt.Sprintf("Clearing vhost %q limits ...", vhost)
		if _, ok := b.VHostLimits()[vhost]; !ok {
			return banner, "", &cmdError{code: ExitUnavail, msg: "Parameter does not exist"}
		}
		return banner, "", b.ClearVHostLimits(ctx, vhost)
	}},
	"list_vhost_limits": {args: "[--global]", vhost: true, bools: []string{"global"}, run: func(c *call) (string, string, error) {
		b, vhost := c.b, c.vhost
		all := b.VHostLimits()
		if _, global := c.flags["global"]; global {
			rows := [][]string{{"vhost", "limits"}}
			for _, v := range b.VHosts() {
				if l, ok := all[v]; ok {
					rows = append(rows, []string{v, limitsJSON(l)})
				}
			}
			return "Listing limits for all vhosts ...", c.table(rows, false), nil
		}
		banner := fmt.Sprintf("Listing limits for vhost %q ...", vhost)
		if l, ok := all[vhost]; ok {
			return banner, limitsJSON(l), nil
		}
		return banner, "\n", nil
	}},
	"set_permissions": {args: "<username> <conf> <write> <read>", min: 4, max: 4, vhost: true, run: func(c *call) (string, string, error) {
		ctx, b, vhost, a := c.ctx, c.b, c.vhost, c.args
		banner := fmt.Sprintf("Setting permissions for user %q in vhost %q ...", a[0], vhost)
		switch {
		case !exists(b, a[0]):
			return banner, "", noUser(a[0])
		case !slices.Contains(b.VHosts(), vhost):
			return banner, "", noVHost(vhost)
		}
		return banner, "", b.SetPermissions(ctx, broker.Permission{User: a[0], VHost: vhost, Configure: a[1], Write: a[2], Read: a[3]})
	}},
	"clear_permissions": {args: "<username>", min: 1, max: 1, vhost: true, run: func(c *call) (string, string, error) {
		ctx, b, vhost, a := c.ctx, c.b, c.vhost, c.args
		banner := fmt.Sprintf("Clearing permissions for user %q in vhost %q ...", a[0], vhost)
		if !exists(b, a[0]) {
			return banner, "", noUser(a[0])
		}
		return banner, "", b.ClearPermissions(ctx, a[0], vhost)
	}},
	"list_permissions": {vhost: true, run: func(c *call) (string, string, error) {
		b, vhost := c.b, c.vhost
		rows := [][]string{{"user", "configure", "write", "read"}}
		for _, p := range b.Permissions(vhost) {
			rows = append(rows, []string{p.User, p.Configure, p.Write, p.Read})
		}
		return fmt.Sprintf("Listing permissions for vhost %q ...", vhost), c.table(rows, false), nil
	}},
	"list_user_permissions": {args: "<username>", min: 1, max: 1, run: func(c *call) (string, string, error) {
		b, a := c.b, c.args
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
		return banner, c.table(rows, false), nil
	}},
	// --online and --local list every queue (one node, always online),
	// --offline none.
	"list_queues": {args: "[<column> ...]", max: -1, vhost: true, bools: []string{"online", "offline", "local"}, run: func(c *call) (string, string, error) {
		qs := c.b.Queues(c.vhost)
		if _, offline := c.flags["offline"]; offline {
			qs = nil
		}
		l, err := infoList(c, queueKeys, []string{"name", "messages"}, qs)
		if err != nil {
			return "", "", err
		}
		return fmt.Sprintf("Timeout: %.1f seconds ...\nListing queues for vhost %s ...", float64(c.timeoutMS(60*time.Second))/1000, c.vhost), c.render(l), nil
	}},
	"list_exchanges": {vhost: true, run: func(c *call) (string, string, error) {
		b, vhost := c.b, c.vhost
		rows := [][]string{{"name", "type"}}
		for _, e := range b.Exchanges(vhost) {
			rows = append(rows, []string{e.Name, e.Type})
		}
		return fmt.Sprintf("Listing exchanges for vhost %s ...", vhost), c.table(rows, true), nil
	}},
	"list_bindings": {vhost: true, run: func(c *call) (string, string, error) {
		l := listing{cols: []string{"source_name", "source_kind", "destination_name", "destination_kind", "routing_key", "arguments"}, stream: true}
		// RabbitMQ lists the default exchange's implicit binding of each
		// queue first.
		for _, q := range c.b.Queues(c.vhost) {
			l.rows = append(l.rows, []cell{str(""), str("exchange"), str(q.Name), str("queue"), str(q.Name), tableCell(nil)})
		}
		for _, x := range c.b.Bindings(c.vhost) {
			if x.Source == "" {
				continue // in case the broker lists them too
			}
			l.rows = append(l.rows, []cell{str(x.Source), str("exchange"), str(x.Destination), str(x.DestinationType), str(x.RoutingKey), tableCell(x.Arguments)})
		}
		return fmt.Sprintf("Listing bindings for vhost %s...", c.vhost), c.render(l), nil
	}},
	"close_all_connections": {args: "<explanation>", min: 1, max: 1, run: func(c *call) (string, string, error) {
		b, a := c.b, c.args
		n := b.CloseAllConnections(a[0])
		return "Closing all connections", fmt.Sprintf("Closed %d connections", n), nil
	}},
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
		return nil, &cmdError{code: ExitUnavail, msg: "JSON decoding error. Reason: badarg"}
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
			return nil, &cmdError{code: ExitUnavail, msg: fmt.Sprintf("Validation failed\n\n%s should be a number, actually was %s\n", k, was)}
		}
		l[k] = v
	}
	if len(unknown) > 0 {
		return nil, &cmdError{code: ExitUnavail, msg: fmt.Sprintf("Validation failed\n\nUnrecognised terms [%s] in limits\n", strings.Join(unknown, ","))}
	}
	return l, nil
}

// limitsJSON prints limits as list_vhost_limits does.
func limitsJSON(l broker.VHostLimits) string {
	b, _ := json.Marshal(map[string]int64(l))
	return string(b)
}

func noUser(name string) error {
	return &cmdError{code: ExitNoUser, msg: fmt.Sprintf("User %q does not exist", name)}
}
func noVHost(name string) error {
	return &cmdError{code: ExitDataErr, msg: fmt.Sprintf("Virtual host %q does not exist", name)}
}

// table renders rows of text (the header first) in the command line's
// format; stream as in listing.
func (c *call) table(rows [][]string, stream bool) string {
	l := listing{cols: rows[0], stream: stream}
	for _, r := range rows[1:] {
		cells := make([]cell, len(r))
		for i, t := range r {
			cells[i] = str(t)
		}
		l.rows = append(l.rows, cells)
	}
	return c.render(l)
}

// Request is one command line as the client sends it.
type Request struct {
	Tool  string   `json:"tool"` // ToolCtl (default) or ToolDiag
	Argv  []string `json:"argv"` // without the program name
	Stdin []byte   `json:"stdin,omitempty"`
}

// call is one command being run.
type call struct {
	ctx     context.Context
	b       Broker
	node    Node // nil: the process facts are unknown (status says so)
	tool    string
	name    string
	vhost   string
	args    []string          // positional, after the command name
	flags   map[string]string // command options given (--priority), "" for those without a value
	opts    opts
	timeout time.Duration // -t/--timeout, or the command's default
	stdin   []byte
	argv    []string // as given, for "Arguments given"
	raw     bool     // out is printed as is (export_definitions -)
}

// render prints l in the command line's format.
func (c *call) render(l listing) string { return l.render(c.opts) }

// Run executes one rabbitmqctl command line (without the program name)
// against b, with no process facts (status and listeners say less).
func Run(ctx context.Context, b Broker, argv []string) Result {
	return Exec(ctx, b, nil, Request{Tool: ToolCtl, Argv: argv})
}

// global options of every command: those that take a value, and switches.
var (
	globalValued = map[string]string{"-n": "node", "--node": "node", "-t": "timeout", "--timeout": "timeout",
		"-p": "vhost", "--vhost": "vhost", "--formatter": "formatter"}
	globalSwitch = map[string]string{"-q": "quiet", "--quiet": "quiet", "-s": "silent", "--silent": "silent",
		"-l": "longnames", "--longnames": "longnames", "--no-table-headers": "no-table-headers", "-?": "help", "--help": "help"}
)

// Exec executes one command line of req.Tool: rabbitmqctl's or
// rabbitmq-diagnostics' commands, options, output and exit codes.
func Exec(ctx context.Context, b Broker, node Node, req Request) Result {
	tool := req.Tool
	if tool != ToolDiag {
		tool = ToolCtl
	}
	argv := req.Argv
	// The command is the first word that is no option nor an option's
	// value; options may come before or after it, as rabbitmqctl allows.
	name := ""
	for i := 0; i < len(argv); i++ {
		a := argv[i]
		if _, ok := globalValued[a]; ok {
			i++
			continue
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			name = a
			break
		}
		if cmdValued(a) {
			i++
		}
	}
	if b == nil && !withoutBroker[name] {
		return notLeader(node)
	}
	c := &call{ctx: ctx, b: b, node: node, tool: tool, name: name, vhost: "/", flags: map[string]string{}, stdin: req.Stdin, argv: argv}
	cmd, known := commands[name]
	if name != "" && (!known || !toolHas(tool, name)) {
		return Result{Stderr: fmt.Sprintf("\nCommand '%s' not found. \n%s", name, helpListing(tool, true)), Code: ExitUsage}
	}
	help := false
	seenName := false
	for i := 0; i < len(argv); i++ {
		a := argv[i]
		key, val, hasVal := a, "", false
		if strings.HasPrefix(a, "--") {
			key, val, hasVal = strings.Cut(a, "=")
		}
		if a == name && !seenName {
			seenName = true
			continue
		}
		next := func() (string, bool) {
			if hasVal {
				return val, true
			}
			if i+1 >= len(argv) {
				return "", false
			}
			i++
			return argv[i], true
		}
		if g, ok := globalValued[key]; ok {
			v, ok := next()
			if !ok {
				return c.argError("Invalid options for this command:\n" + key + " : ")
			}
			switch g {
			case "vhost":
				c.vhost = v
			case "formatter":
				switch v {
				case fmtJSON, fmtCSV, fmtTable, fmtPretty:
					c.opts.formatter = v
				default:
					return Result{Stderr: fmt.Sprintf("Error: unsupported formatter %q: substrate supports json, csv, table and pretty_table\n", v), Code: ExitUsage}
				}
			case "timeout":
				n, err := strconv.ParseFloat(v, 64)
				if err != nil || n < 0 {
					return c.argError("invalid timeout " + v)
				}
				c.timeout = time.Duration(n * float64(time.Second))
			case "node":
				// One node per substrate: its own name reaches it
				// (bare "rabbit" gets the host appended, as rabbitmqctl
				// does; the full host name is --longnames' form); any
				// other is a node that does not answer here.
				if !isThisNode(v) {
					return Result{Stderr: unreachableNode(v, fmt.Sprintf("%s:\n  * this substrate is node %s: one node per substrate\n\n", v, NodeName())),
						Code: ExitUnavailable}
				}
			}
			continue
		}
		if g, ok := globalSwitch[key]; ok {
			switch g {
			case "quiet":
				c.opts.quiet = true
			case "silent":
				c.opts.quiet, c.opts.silent = true, true
			case "no-table-headers":
				c.opts.noHeaders = true
			case "help":
				help = true
			}
			continue
		}
		if strings.HasPrefix(a, "-") && a != "-" && len(a) > 1 {
			k := strings.TrimLeft(key, "-")
			if key == "-P" {
				k = "pid"
			}
			switch {
			case slices.Contains(cmd.flags, k):
				v, ok := next()
				if !ok {
					return c.argError("Invalid options for this command:\n" + key + " : ")
				}
				c.flags[k] = v
			case slices.Contains(cmd.bools, k):
				c.flags[k] = ""
			default:
				return c.argError("Invalid options for this command:\n" + key + " : ")
			}
			continue
		}
		c.args = append(c.args, a)
	}
	if name == "" {
		if help {
			return Result{Stdout: helpListing(tool, true)}
		}
		return Result{Stderr: helpListing(tool, true), Code: ExitUsage}
	}
	if help {
		return Result{Stdout: helpPage(tool, name)}
	}
	switch {
	case len(c.args) < cmd.min:
		return c.argError("not enough arguments.")
	case cmd.max >= 0 && len(c.args) > cmd.max:
		return c.argError("too many arguments.")
	}
	banner, out, err := cmd.run(c)
	var res Result
	if banner != "" && !c.opts.quiet && c.opts.formatter != fmtJSON && c.opts.formatter != fmtCSV {
		res.Stdout = banner + "\n"
	}
	if ae, ok := err.(argErr); ok {
		return c.argError(string(ae))
	}
	if err != nil {
		var ce *cmdError
		if !errors.As(err, &ce) {
			ce = &cmdError{code: ExitSoftware, msg: err.Error()}
		}
		res.Stderr = "Error:\n" + ce.msg + "\n"
		if ce.raw {
			res.Stderr = ce.msg
		}
		res.Code = ce.code
		return res
	}
	if out != "" && !c.raw && !strings.HasSuffix(out, "\n") {
		out += "\n"
	}
	res.Stdout += out
	return res
}

// cmdValued reports whether a is an option of some command that takes a
// value, so that its value is not taken for the command name.
func cmdValued(a string) bool {
	k := strings.TrimLeft(a, "-")
	if a == "-P" {
		return true
	}
	for _, c := range commands {
		if slices.Contains(c.flags, k) {
			return true
		}
	}
	return false
}

// argErr is an error a command finds in its arguments: Exec answers it
// as argError does.
type argErr string

func (e argErr) Error() string { return string(e) }

// badKeys refuses unknown info keys of a list command.
func badKeys(bad []string) error {
	return argErr(fmt.Sprintf("Info key(s) %s are not supported", strings.Join(bad, ",")))
}

// argError is rabbitmqctl's answer to arguments it refuses (exit code 64).
func (c *call) argError(msg string) Result {
	s := fmt.Sprintf("Error (argument validation): %s\nArguments given:\n\t%s\n", msg, strings.Join(c.argv, " "))
	if c.name != "" {
		s += fmt.Sprintf("\n%s\n\n%s\n", hdr("Usage"), usageLine(c.tool, c.name))
	}
	return Result{Stderr: s, Code: ExitUsage}
}

func names() []string {
	out := make([]string, 0, len(commands))
	for n := range commands {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
