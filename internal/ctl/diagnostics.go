package ctl

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"substrate/broker"
)

// Node commands (status, cluster_status, ping, version, await_startup,
// authenticate_user, definitions) and rabbitmq-diagnostics' checks.

// RabbitMQVersion is the RabbitMQ release whose behaviour substrate
// follows; version and server_version print it, as tools compare it.
const RabbitMQVersion = "3.10.8"

// Node is what the serving process knows beyond the broker: status,
// cluster_status, listeners and check_port_connectivity ask it.
// cmd/substrate implements it.
type Node interface {
	NodeInfo() NodeInfo
}

// NodeInfo describes the serving process.
type NodeInfo struct {
	Version    string    // substrate's version line
	StartedAt  time.Time // process start
	DataDir    string
	ConfigFile string     // "" if none
	Listeners  []Listener // besides the broker's AMQP and AMQPS ones
}

// Listener is one listening socket, as `listeners` prints it.
type Listener struct {
	Interface string `json:"interface"`
	Port      int    `json:"port"`
	Protocol  string `json:"protocol"` // RabbitMQ's names: amqp, amqp/ssl, http, https; substrate's own: etcd, etcd-peer, memcached
	Purpose   string `json:"purpose"`
}

// NodeName is the node name substrate answers as, RabbitMQ's default:
// rabbit@ and the short host name.
func NodeName() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		h = "localhost"
	}
	h, _, _ = strings.Cut(h, ".")
	return "rabbit@" + h
}

// isThisNode reports whether -n NODE names this node: rabbit@ and the
// short host name, "rabbit" alone, or rabbit@ and the full host name.
func isThisNode(n string) bool {
	if n == NodeName() || n == "rabbit" {
		return true
	}
	h, err := os.Hostname()
	return err == nil && n == "rabbit@"+h
}

// listeners returns the broker's listeners and the process's others.
func (c *call) listeners() []Listener {
	var ls []Listener
	add := func(addrs []net.Addr, proto, purpose string) {
		for _, a := range addrs {
			if ta, ok := a.(*net.TCPAddr); ok {
				ls = append(ls, Listener{Interface: ta.IP.String(), Port: ta.Port, Protocol: proto, Purpose: purpose})
			}
		}
	}
	if c.b != nil {
		add(c.b.Addrs(), "amqp", "AMQP 0-9-1 and AMQP 1.0")
		add(c.b.TLSAddrs(), "amqp/ssl", "AMQP 0-9-1 and AMQP 1.0 over TLS")
	}
	if c.node != nil {
		ls = append(ls, c.node.NodeInfo().Listeners...)
	}
	return ls
}

func (c *call) listenerLines(withNode bool) string {
	var b strings.Builder
	for _, l := range c.listeners() {
		if withNode {
			fmt.Fprintf(&b, "Node: %s, interface: %s, port: %d, protocol: %s, purpose: %s\n", NodeName(), l.Interface, l.Port, l.Protocol, l.Purpose)
		} else {
			fmt.Fprintf(&b, "Interface: %s, port: %d, protocol: %s, purpose: %s\n", l.Interface, l.Port, l.Protocol, l.Purpose)
		}
	}
	return b.String()
}

type jsonListener struct {
	Interface string `json:"interface"`
	Node      string `json:"node"`
	Port      int    `json:"port"`
	Protocol  string `json:"protocol"`
	Purpose   string `json:"purpose"`
}

func (c *call) jsonListeners() []jsonListener {
	out := []jsonListener{}
	for _, l := range c.listeners() {
		out = append(out, jsonListener{l.Interface, NodeName(), l.Port, l.Protocol, l.Purpose})
	}
	return out
}

// alarms are the resource alarms in effect, as RabbitMQ words them.
func (c *call) alarms() []string {
	var out []string
	if c.b == nil { // a cluster node that does not lead: no broker, no alarms of its own
		return nil
	}
	if c.b.DiskAlarm() {
		out = append(out, "Free disk space alarm on node "+NodeName())
	}
	if c.b.MemoryAlarm() {
		out = append(out, "Memory alarm on node "+NodeName())
	}
	return out
}

func jsonLine(v any) string {
	b, _ := marshal(v)
	return string(b) + "\n"
}

func (c *call) json() bool { return c.opts.formatter == fmtJSON }

func (c *call) timeoutMS(def time.Duration) int64 {
	if c.timeout > 0 {
		return c.timeout.Milliseconds()
	}
	return def.Milliseconds()
}

func (c *call) uptime() int64 {
	if c.node == nil {
		return 0
	}
	return int64(time.Since(c.node.NodeInfo().StartedAt).Seconds())
}

func section(name, body string) string { return hdr(name) + "\n\n" + body }

// status is `status`: RabbitMQ's sections and keys, with substrate's facts.
func (c *call) status() (string, string, error) {
	banner := fmt.Sprintf("Status of node %s ...", NodeName())
	var info NodeInfo
	if c.node != nil {
		info = c.node.NodeInfo()
	}
	unit := "gb"
	if u, ok := c.flags["unit"]; ok {
		unit = strings.ToLower(u)
	}
	if unit != "gb" && unit != "mb" && unit != "bytes" {
		return "", "", argErr(fmt.Sprintf("unit %q is not one of bytes, mb, gb", unit))
	}
	mem := func(n uint64) string { return inUnit(n, unit) }
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	conns, vhosts := len(c.b.Connections()), c.b.VHosts()
	queues := 0
	for _, v := range vhosts {
		queues += len(c.b.Queues(v))
	}
	used := c.b.MemoryUsed()
	if used == 0 {
		used = ms.Sys
	}
	config := []string{}
	if info.ConfigFile != "" {
		config = append(config, info.ConfigFile)
	}
	alarms := c.alarms()
	if c.json() {
		m := map[string]any{
			"active_plugins": []string{}, "alarms": orEmpty(alarms), "config_files": config,
			"crypto_lib_version": "Go crypto/tls (" + runtime.Version() + ")", "data_directory": info.DataDir,
			"disk_free": c.b.DiskFree(), "disk_free_limit": c.b.DiskFreeLimit(), "enabled_plugin_file": "",
			"erlang_version": info.Version, "file_descriptors": map[string]any{"sockets_limit": 0, "sockets_used": conns, "total_limit": 0, "total_used": 0},
			"is_under_maintenance": false, "listeners": c.jsonListeners(), "log_files": []string{"<stdout>"},
			"memory":       map[string]any{"strategy": "rss", "total": map[string]any{"rss": used, "allocated": ms.Sys, "erlang": used}},
			"net_ticktime": 60, "os": "Linux", "pid": os.Getpid(), "processes": map[string]any{"limit": 0, "used": runtime.NumGoroutine()},
			"product_name": "substrate", "product_version": info.Version, "rabbitmq_version": RabbitMQVersion,
			"raft_data_directory": info.DataDir, "release_series_support_status": "supported", "run_queue": 0,
			"totals": map[string]any{"virtual_host_count": len(vhosts), "connection_count": conns, "queue_count": queues},
			"uptime": c.uptime(), "vm_memory_calculation_strategy": "rss", "vm_memory_high_watermark_limit": c.b.MemoryHighWatermark(),
			"vm_memory_high_watermark_setting": map[string]any{"absolute": c.b.MemoryHighWatermark()},
		}
		return "", jsonLine(m), nil
	}
	var s []string
	s = append(s, section("Runtime", fmt.Sprintf("OS PID: %d\nOS: Linux\nUptime (seconds): %d\nIs under maintenance?: false\nRabbitMQ version: %s\n"+
		"RabbitMQ release series support status: supported\nNode name: %s\nErlang configuration: %s\nCrypto library: Go crypto/tls (%s)\n"+
		"Erlang processes: %d used, %d limit\nScheduler run queue: 0\nCluster heartbeat timeout (net_ticktime): 60",
		os.Getpid(), c.uptime(), RabbitMQVersion, NodeName(), info.Version, runtime.Version(), runtime.NumGoroutine(), 0)))
	s = append(s, section("Plugins", "Enabled plugin file: \nEnabled plugins:\n"))
	s = append(s, section("Data directory", fmt.Sprintf("Node data directory: %s\nRaft data directory: %s", info.DataDir, info.DataDir)))
	s = append(s, section("Config files", bullet(config)))
	s = append(s, section("Log file(s)", bullet([]string{"<stdout>"})))
	s = append(s, section("Alarms", noneOr(alarms)))
	wm := "Memory high watermark setting: off"
	if c.b.MemoryHighWatermark() > 0 {
		wm = fmt.Sprintf("Memory high watermark setting: %s, computed to: %s", mem(c.b.MemoryHighWatermark()), mem(c.b.MemoryHighWatermark()))
	}
	s = append(s, section("Memory", fmt.Sprintf("Total memory used: %s\nCalculation strategy: rss\n%s\n\ngo_heap: %s\ngo_other: %s",
		mem(used), wm, mem(ms.HeapAlloc), mem(ms.Sys-ms.HeapAlloc))))
	s = append(s, section("File Descriptors", fmt.Sprintf("Total: %d, limit: %d\nSockets: %d, limit: %d", conns, 0, conns, 0)))
	s = append(s, section("Free Disk Space", fmt.Sprintf("Low free disk space watermark: %s\nFree disk space: %s", mem(c.b.DiskFreeLimit()), mem(c.b.DiskFree()))))
	s = append(s, section("Totals", fmt.Sprintf("Connection count: %d\nQueue count: %d\nVirtual host count: %d", conns, queues, len(vhosts))))
	s = append(s, section("Listeners", strings.TrimSuffix(c.listenerLines(false), "\n")))
	return banner, strings.Join(s, "\n\n") + "\n", nil
}

func bullet(items []string) string {
	var b strings.Builder
	for i, it := range items {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(" * " + it)
	}
	return b.String()
}

func noneOr(lines []string) string {
	if len(lines) == 0 {
		return "(none)"
	}
	return strings.Join(lines, "\n")
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// featureFlags are the RabbitMQ 3.10 feature flags whose behaviour
// substrate has.
var featureFlags = []string{"classic_mirrored_queue_version", "implicit_default_bindings", "maintenance_mode_status", "quorum_queue", "user_limits", "virtual_host_metadata"}

func clusterName() string {
	h, _ := os.Hostname()
	return "substrate@" + h
}

func (c *call) clusterStatus() (string, string, error) {
	node := NodeName()
	alarms := c.alarms()
	disk, running := []string{node}, []string{node}
	v := c.clusterView() // asks every member: once per command
	if v != nil {
		node = v.Self
		disk, running = nil, nil
		for _, m := range v.Members {
			disk = append(disk, m.Node)
			if m.Running {
				running = append(running, m.Node)
			}
		}
	}
	if c.json() {
		ff := []map[string]any{}
		for _, f := range featureFlags {
			ff = append(ff, map[string]any{"name": f, "state": "enabled", "provided_by": "rabbit", "stability": "stable", "desc": "", "doc_url": ""})
		}
		versions := map[string]any{}
		for _, n := range running {
			versions[n] = map[string]any{"erlang_version": runtime.Version(), "rabbitmq_name": "RabbitMQ", "rabbitmq_version": RabbitMQVersion}
		}
		m := map[string]any{"alarms": orEmpty(alarms), "cluster_name": clusterName(), "disk_nodes": disk, "feature_flags": ff,
			"listeners": map[string]any{node: c.jsonListeners()}, "maintenance_status": map[string]any{node: "not under maintenance"},
			"partitions": map[string]any{}, "ram_nodes": []string{}, "running_nodes": running,
			"versions": versions}
		if v != nil {
			m["raft"] = raftJSON(v)
		}
		return "", jsonLine(m), nil
	}
	var flags []string
	for _, f := range featureFlags {
		flags = append(flags, "Flag: "+f+", state: enabled")
	}
	var versions []string
	for _, n := range running {
		versions = append(versions, fmt.Sprintf("%s: RabbitMQ %s on Erlang %s", n, RabbitMQVersion, runtime.Version()))
	}
	s := []string{
		section("Basics", "Cluster name: "+clusterName()),
		section("Disk Nodes", strings.Join(disk, "\n")),
		section("Running Nodes", strings.Join(running, "\n")),
		section("Versions", strings.Join(versions, "\n")),
		section("Maintenance status", "Node: "+node+", status: not under maintenance"),
		section("Alarms", noneOr(alarms)),
		section("Network Partitions", "(none)"),
		section("Listeners", strings.TrimSuffix(c.listenerLines(true), "\n")),
		section("Feature flags", strings.Join(flags, "\n")),
	}
	if v != nil {
		s = append(s, section("Broker Raft group", raftLines(v)))
	}
	return fmt.Sprintf("Cluster status of node %s ...", node), strings.Join(s, "\n\n") + "\n", nil
}

// checkPorts connects to every listener, as check_port_connectivity does.
func (c *call) checkPorts() (string, string, error) {
	node := NodeName()
	banner := fmt.Sprintf("Testing TCP connections to all active listeners on node %s ...", node)
	var ok, failed []string
	for _, l := range c.listeners() {
		host := l.Interface
		if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
			host = "127.0.0.1"
			if ip.To4() == nil {
				host = "::1"
			}
		}
		conn, err := net.DialTimeout("tcp", net.JoinHostPort(host, strconv.Itoa(l.Port)), 5*time.Second)
		if err != nil {
			failed = append(failed, strconv.Itoa(l.Port))
			continue
		}
		conn.Close()
		ok = append(ok, strconv.Itoa(l.Port))
	}
	if len(failed) > 0 {
		msg := fmt.Sprintf("Connection to ports %s on node %s has failed", strings.Join(failed, ", "), node)
		if c.json() {
			return "", "", &cmdError{code: ExitUnavail, msg: jsonLine(map[string]any{"result": "error", "node": node, "message": msg}), raw: true}
		}
		return banner, "", &cmdError{code: ExitUnavail, msg: msg}
	}
	if c.json() {
		return "", jsonLine(map[string]any{"listeners": c.jsonListeners(), "node": node, "result": "ok"}), nil
	}
	return banner, fmt.Sprintf("Successfully connected to ports %s on node %s.", strings.Join(ok, ", "), node), nil
}

func (c *call) checkAlarms(local bool) (string, string, error) {
	node := NodeName()
	banner := fmt.Sprintf("Asking node %s to report any local resource alarms ...", node)
	alarms := c.alarms()
	if len(alarms) == 0 {
		if c.json() {
			return "", jsonLine(map[string]any{"result": "ok"}), nil
		}
		if local {
			return banner, fmt.Sprintf("Node %s reported no local alarms", node), nil
		}
		return banner, fmt.Sprintf("Node %s reported no alarms, local or clusterwide", node), nil
	}
	if c.json() {
		m := map[string]any{"local": alarms, "message": fmt.Sprintf("Node %s reported local alarms", node), "result": "error"}
		if !local {
			m["global"] = []string{}
			m["message"] = fmt.Sprintf("Node %s reported alarms", node)
		}
		return "", "", &cmdError{code: ExitUnavail, msg: jsonLine(m), raw: true}
	}
	if local {
		return banner, "", &cmdError{code: ExitUnavail, msg: strings.Join(alarms, "\n")}
	}
	return banner, "", &cmdError{code: ExitUnavail, msg: strings.Join(alarms, "\n") + "\n", raw: true}
}

func init() {
	node := NodeName
	commands["help"] = command{max: 1, bools: []string{"list-commands"}, run: func(c *call) (string, string, error) {
		if len(c.args) == 0 {
			if _, ok := c.flags["list-commands"]; ok {
				return "", helpListing(c.tool, false), nil
			}
			return "", helpListing(c.tool, true), nil
		}
		if !toolHas(c.tool, c.args[0]) {
			return "", "", &cmdError{code: ExitUsage, msg: fmt.Sprintf("\nCommand '%s' not found.", c.args[0])}
		}
		return "", helpPage(c.tool, c.args[0]), nil
	}}
	commands["version"] = command{run: func(c *call) (string, string, error) {
		if c.json() {
			return "", jsonLine(map[string]any{"node": node(), "result": "ok", "value": map[string]string{"version": RabbitMQVersion}}), nil
		}
		return "", RabbitMQVersion, nil
	}}
	commands["server_version"] = command{run: func(c *call) (string, string, error) {
		if c.json() {
			return "", jsonLine(map[string]any{"result": "ok", "value": RabbitMQVersion}), nil
		}
		return fmt.Sprintf("Asking node %s for its RabbitMQ version...", node()), RabbitMQVersion, nil
	}}
	commands["ping"] = command{run: func(c *call) (string, string, error) {
		return fmt.Sprintf("Will ping %s. This only checks if the OS process is running and registered with epmd. Timeout: %d ms.", node(), c.timeoutMS(60*time.Second)), "Ping succeeded", nil
	}}
	// await_startup: the client waits for the socket; a broker that
	// answers has started (the ctl server starts after it).
	commands["await_startup"] = command{run: func(c *call) (string, string, error) { return "", "", nil }}
	// wait PIDFILE runs in the client (cmd/substrate), which watches the
	// pid file and the process; here it only refuses a missing pid file.
	commands["wait"] = command{max: 1, flags: []string{"pid"}, run: func(c *call) (string, string, error) {
		if _, ok := c.flags["pid"]; !ok && len(c.args) == 0 {
			return "", "", argErr(`"No pid or pidfile specified"`)
		}
		return "", "", nil
	}}
	commands["status"] = command{flags: []string{"unit"}, run: func(c *call) (string, string, error) { return c.status() }}
	commands["cluster_status"] = command{run: func(c *call) (string, string, error) { return c.clusterStatus() }}
	commands["check_running"] = command{run: func(c *call) (string, string, error) {
		msg := fmt.Sprintf("RabbitMQ on node %s is fully booted and running", node())
		if c.json() {
			return "", jsonLine(map[string]string{"message": msg}), nil
		}
		return fmt.Sprintf("Checking if RabbitMQ is running on node %s ...", node()), msg, nil
	}}
	commands["check_local_alarms"] = command{run: func(c *call) (string, string, error) { return c.checkAlarms(true) }}
	commands["check_alarms"] = command{run: func(c *call) (string, string, error) { return c.checkAlarms(false) }}
	commands["alarms"] = command{run: func(c *call) (string, string, error) {
		alarms := c.alarms()
		if c.json() {
			if len(alarms) == 0 {
				return "", jsonLine(map[string]any{"alarms": []string{}, "node": node(), "result": "ok"}), nil
			}
			return "", jsonLine(map[string]any{"global": []string{}, "local": alarms, "message": fmt.Sprintf("Node %s reported alarms", node()), "result": "ok"}), nil
		}
		banner := fmt.Sprintf("Asking node %s to report any known resource alarms ...", node())
		if len(alarms) == 0 {
			return banner, fmt.Sprintf("Node %s reported no alarms, local or clusterwide", node()), nil
		}
		return banner, strings.Join(alarms, "\n"), nil
	}}
	commands["check_port_connectivity"] = command{run: func(c *call) (string, string, error) { return c.checkPorts() }}
	commands["check_virtual_hosts"] = command{run: func(c *call) (string, string, error) {
		if c.json() {
			return "", jsonLine(map[string]string{"result": "ok"}), nil
		}
		return fmt.Sprintf("Checking if all vhosts are running on node %s ...", node()), fmt.Sprintf("Node %s reported all vhosts as running", node()), nil
	}}
	commands["listeners"] = command{run: func(c *call) (string, string, error) {
		if c.json() {
			return "", jsonLine(map[string]any{"listeners": c.jsonListeners(), "node": node(), "result": "ok"}), nil
		}
		return fmt.Sprintf("Asking node %s to report its protocol listeners ...", node()), c.listenerLines(false), nil
	}}
	commands["authenticate_user"] = command{min: 1, max: 2, run: func(c *call) (string, string, error) {
		banner := fmt.Sprintf("Authenticating user %q ...", c.args[0])
		pw := ""
		if len(c.args) == 2 {
			pw = c.args[1]
		} else {
			// rabbitmqctl prompts even when stdin is not a terminal.
			banner += "\nPassword: "
			pw, _, _ = strings.Cut(string(c.stdin), "\n")
			if pw == "" {
				return banner, "", &cmdError{code: ExitSoftware, msg: "Password is not provided via argument or stdin"}
			}
		}
		for _, u := range c.b.Users() {
			if u.Name == c.args[0] && u.CheckPassword(pw) {
				return banner, "Success", nil
			}
		}
		return banner, "", &cmdError{code: ExitDataErr, msg: fmt.Sprintf("Error: failed to authenticate user %q\nuser '%s' - invalid credentials", c.args[0], c.args[0])}
	}}
	commands["export_definitions"] = command{min: 1, max: 1, flags: []string{"format"}, run: func(c *call) (string, string, error) {
		if f, ok := c.flags["format"]; ok && f != "json" {
			return "", "", argErr(fmt.Sprintf("format %q is not supported: substrate exports json", f))
		}
		d := c.b.ExportDefinitions()
		// RabbitMQ 3.10 names a product only when configured to; tools
		// compare exports with its.
		d.ProductName, d.ProductVersion = "", ""
		defs, err := marshal(d)
		if err != nil {
			return "", "", err
		}
		// The client writes the file; "-" is stdout, without a newline.
		c.raw = true
		if c.args[0] == "-" {
			return "", string(defs), nil
		}
		return fmt.Sprintf("Exporting definitions in JSON to a file at %q ...", c.args[0]), string(defs), nil
	}}
	commands["import_definitions"] = command{max: 1, flags: []string{"format"}, bools: []string{"skip-if-unchanged"}, run: func(c *call) (string, string, error) {
		if f, ok := c.flags["format"]; ok && f != "json" {
			return "", "", argErr(fmt.Sprintf("format %q is not supported: substrate imports json", f))
		}
		banner := "Importing definitions in JSON from standard input ..."
		if len(c.args) == 1 && c.args[0] != "-" {
			banner = fmt.Sprintf("Importing definitions in JSON from a file at %q ...", c.args[0])
		}
		var d broker.RabbitDefinitions
		dec := json.NewDecoder(bytes.NewReader(c.stdin))
		if err := dec.Decode(&d); err != nil {
			return banner, "", &cmdError{code: ExitDataErr, msg: "Failed to decode input JSON: " + err.Error()}
		}
		if err := c.b.ImportDefinitions(c.ctx, d); err != nil {
			return banner, "", &cmdError{code: ExitDataErr, msg: err.Error()}
		}
		if c.opts.quiet {
			return "", "", nil
		}
		return banner, "Successfully started definition import. This process is asynchronous and can take some time.", nil
	}}
}
