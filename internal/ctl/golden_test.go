package ctl

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"net"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"substrate/internal/rabbitmqtest"
)

// The goldens in testdata/rabbitmq-cli.json are RabbitMQ 3.10.8's own
// rabbitmqctl and rabbitmq-diagnostics output (stdout, stderr, exit code)
// for the command lines in goldenCases, recorded with
//
//	go test ./internal/ctl -run TestCLIMatchesRabbitMQ -update
//
// which starts a private RabbitMQ (internal/rabbitmqtest) and refuses to
// record from anything else. The normal run replays each command line on
// substrate after the same fixture and compares, after the substitutions
// of normalize.
var update = flag.Bool("update", false, "record testdata/rabbitmq-cli.json from a private RabbitMQ 3.10.8 (fails if it cannot start one)")

const goldenFile = "testdata/rabbitmq-cli.json"

// goldenCase is one command line. Compare modes: "" exact (after
// normalize); "subset": substrate's lines appear in RabbitMQ's, in order
// (help listings: substrate lists only the commands it has);
// "structure": the section headers and keys of status-like output;
// "jsonkeys": the keys of a JSON document (status, definitions), whose
// values are each node's own; "setup-alarms": recorded on RabbitMQ, not
// compared (it raises RabbitMQ's alarms; substrate's are forced on).
type goldenCase struct {
	Tool  string   `json:"tool"`
	Argv  []string `json:"argv"`
	Stdin string   `json:"stdin,omitempty"`
	Mode  string   `json:"mode,omitempty"`
}

type goldenResult struct {
	goldenCase
	Stdout string `json:"stdout"`
	Stderr string `json:"stderr"`
	Code   int    `json:"code"`
}

type goldenFileT struct {
	Node     string         `json:"node"`      // RabbitMQ's node name
	AMQPPort int            `json:"amqp_port"` // its AMQP listener
	DistPort int            `json:"dist_port"` // its Erlang distribution listener (no counterpart in substrate)
	Peers    []int          `json:"peers"`     // the fixture connections' local ports
	Results  []goldenResult `json:"results"`
}

func ctlc(argv ...string) goldenCase  { return goldenCase{Tool: ToolCtl, Argv: argv} }
func diagc(argv ...string) goldenCase { return goldenCase{Tool: ToolDiag, Argv: argv} }
func with(c goldenCase, mode string) goldenCase {
	c.Mode = mode
	return c
}

// goldenCases run in order after the fixture (fixtureConns); later ones
// see what earlier ones changed.
var goldenCases = []goldenCase{
	ctlc("version"), ctlc("-q", "version"), ctlc("--formatter", "json", "version"),
	ctlc("ping"), ctlc("-q", "ping"), diagc("ping"),
	ctlc("await_startup"),
	with(ctlc("status"), "structure"), with(diagc("status"), "structure"), with(ctlc("cluster_status"), "structure"),
	with(ctlc("help"), "subset"), with(diagc("help"), "subset"), with(ctlc("nosuchcmd"), "subset"),
	ctlc("help", "list_connections"), ctlc("help", "set_policy"), ctlc("help", "export_definitions"),
	ctlc("help", "status"), ctlc("help", "wait"), diagc("help", "ping"), diagc("help", "check_port_connectivity"),
	ctlc("help", "nosuchcmd"), ctlc("list_users", "--help"), ctlc("status", "extra"), ctlc("list_users", "--foo"),
	ctlc("authenticate_user", "guest", "guest"), ctlc("authenticate_user", "guest", "bad"),
	ctlc("wait"),
	ctlc("list_connections"), ctlc("-q", "list_connections"), ctlc("-s", "list_connections"), ctlc("--no-table-headers", "list_connections"),
	ctlc("list_connections", "name", "client_properties", "channels", "user", "peer_host", "peer_port", "state"),
	ctlc("--formatter", "json", "list_connections", "name", "client_properties", "channels"),
	ctlc("--formatter", "csv", "list_connections"), ctlc("--formatter", "pretty_table", "list_connections"),
	ctlc("list_connections", "pid", "auth_mechanism", "protocol", "host", "port", "timeout", "frame_max", "channel_max", "ssl", "vhost"),
	ctlc("--formatter", "json", "list_connections", "ssl", "vhost", "pid", "protocol"),
	ctlc("list_connections", "name", "nosuch", "other"), ctlc("list_connections", "connection_name"),
	ctlc("list_channels"), ctlc("list_channels", "name", "connection", "number", "user", "vhost", "prefetch_count", "consumer_count", "messages_unacknowledged", "confirm", "transactional", "global_prefetch_count"),
	ctlc("--formatter", "json", "list_channels", "name", "number"), ctlc("--formatter", "pretty_table", "list_channels"),
	ctlc("list_consumers"), ctlc("list_consumers", "queue_name", "channel_pid", "consumer_tag", "ack_required", "prefetch_count", "active", "activity_status", "arguments"),
	ctlc("--formatter", "json", "list_consumers"), ctlc("--formatter", "csv", "list_consumers"),
	ctlc("list_consumers", "-p", "nosuch"), ctlc("--formatter", "json", "list_consumers", "-p", "nosuch"),
	ctlc("list_policies"), ctlc("--formatter", "json", "list_policies"), ctlc("--formatter", "csv", "list_policies"),
	ctlc("set_policy", "ha-all", "^", `{"ha-mode":"all"}`),
	ctlc("set_policy", "--priority", "5", "--apply-to", "queues", "ttl", "^q", `{"message-ttl":60000,"max-length":10}`),
	ctlc("list_policies"), ctlc("--formatter", "json", "list_policies"), ctlc("-s", "list_policies"),
	ctlc("set_policy", "bad", "^", `{"nosuch":1}`), ctlc("set_policy", "bad", "^", "notjson"),
	ctlc("set_policy", "--apply-to", "foo", "bad", "^", `{"message-ttl":1}`), ctlc("set_policy", "-p", "nosuch", "bad", "^", `{"message-ttl":1}`),
	ctlc("set_policy", "x"), ctlc("clear_policy", "nosuch"), ctlc("clear_policy", "ha-all"),
	ctlc("set_operator_policy", "op", "^", `{"max-length":100}`), ctlc("list_operator_policies"),
	ctlc("clear_operator_policy", "op"), ctlc("clear_operator_policy", "op"), ctlc("list_policies", "-p", "nosuch"),
	ctlc("set_vhost_limits", `{"max-connections":10}`), ctlc("list_vhost_limits"),
	diagc("check_running"), diagc("-q", "check_running"), diagc("--formatter", "json", "check_running"),
	diagc("check_local_alarms"), diagc("--formatter", "json", "check_local_alarms"),
	diagc("check_alarms"), diagc("check_port_connectivity"), diagc("--formatter", "json", "check_port_connectivity"),
	diagc("check_virtual_hosts"), diagc("--formatter", "json", "check_virtual_hosts"),
	diagc("listeners"), diagc("-q", "listeners"), diagc("--formatter", "json", "listeners"),
	diagc("alarms"), diagc("--formatter", "json", "alarms"),
	diagc("server_version"), diagc("-q", "server_version"), diagc("--formatter", "json", "server_version"),
	with(diagc("nosuch"), "subset"),
	with(ctlc("--formatter", "json", "status"), "jsonkeys"), with(ctlc("--formatter", "json", "cluster_status"), "jsonkeys"),
	with(ctlc("export_definitions", "-"), "jsonkeys"),
	{Tool: ToolCtl, Argv: []string{"import_definitions"}, Stdin: `{"vhosts":[{"name":"imported"}],"permissions":[{"user":"guest","vhost":"imported","configure":".*","write":".*","read":".*"}]}`},
	{Tool: ToolCtl, Argv: []string{"authenticate_user", "guest"}, Stdin: "guest\n"},
	ctlc("list_vhost_limits", "--global"), ctlc("list_queues", "--local"), ctlc("--formatter", "json", "list_users"),
	ctlc("list_users", "-p"), ctlc("list_permissions", "-p", "imported"), ctlc("--formatter", "csv", "list_permissions", "-p", "imported"),
	// Resource alarms: RabbitMQ's are raised with these two commands;
	// substrate's broker reports both alarms from here on (see alarmed).
	with(ctlc("set_vm_memory_high_watermark", "0.00001"), "setup-alarms"), with(ctlc("set_disk_free_limit", "100000GB"), "setup-alarms"),
	diagc("check_local_alarms"), diagc("--formatter", "json", "check_local_alarms"),
	diagc("check_alarms"), diagc("--formatter", "json", "check_alarms"),
	diagc("alarms"), diagc("--formatter", "json", "alarms"),
	with(ctlc("cluster_status"), "structure"), with(ctlc("status"), "structure"),
}

// Every help page substrate prints: each command's, as both tools.
func init() {
	goldenCases = append(goldenCases, with(ctlc(), "subset"), ctlc("close_connection", "nosuch-name", "bye"),
		ctlc("list_connections", "user,peer_port"), with(ctlc("status", "--unit", "mb"), "structure"),
		ctlc("list_queues", "name", "durable", "auto_delete", "exclusive", "arguments", "policy", "messages", "messages_ready", "messages_unacknowledged", "consumers", "state", "type"),
		ctlc("--formatter", "json", "list_queues", "name", "messages", "arguments", "durable", "policy"),
		ctlc("list_queues", "-p", "imported"), ctlc("--formatter", "json", "list_queues", "-p", "imported"),
		ctlc("list_queues", "name", "consumer_capacity", "consumer_utilisation", "disk_reads", "exclusive_consumer_pid", "head_message_timestamp",
			"leader", "members", "messages_ram", "messages_ready_ram", "messages_unacknowledged_ram", "owner_pid", "slave_pids", "synchronised_slave_pids"),
		ctlc("list_bindings"), ctlc("--formatter", "json", "list_bindings"), ctlc("list_bindings", "-p", "imported"))
	for _, name := range slices.Sorted(maps.Keys(helpData)) {
		if name == "reload_certificates" { // substrate's own
			continue
		}
		for _, tool := range []string{ToolCtl, ToolDiag} {
			if toolHas(tool, name) && (tool == ToolCtl || !toolHas(ToolCtl, name)) {
				goldenCases = append(goldenCases, goldenCase{Tool: tool, Argv: []string{"help", name}})
			}
		}
	}
}

// alarmed is the broker with both resource alarms on, as RabbitMQ's after
// the setup-alarms cases (the broker's alarms have tests of their own:
// broker/memory_test.go, broker/disk_alarm_test.go).
type alarmed struct{ Broker }

func (alarmed) MemoryAlarm() bool { return true }
func (alarmed) DiskAlarm() bool   { return true }

// fixtureConns opens the connections, channels and consumers the list
// cases show: one named connection (connection_name) with a consumer
// (prefetch 10, x-priority 5) and a confirm channel, and one plain one.
// It returns the connections' local ports.
func fixtureConns(t *testing.T, addr string) []int {
	t.Helper()
	c1, err := amqp091.DialConfig("amqp://guest:guest@"+addr+"/", amqp091.Config{Properties: amqp091.Table{"connection_name": "nova-compute:1234:abc", "product": "oslo"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c1.Close() })
	ch, err := c1.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Qos(10, 0, false); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("q1", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.Consume("q1", "ctag1", false, false, false, false, amqp091.Table{"x-priority": int32(5)}); err != nil {
		t.Fatal(err)
	}
	ch2, err := c1.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := ch2.Confirm(false); err != nil {
		t.Fatal(err)
	}
	c2, err := amqp091.Dial("amqp://guest:guest@" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c2.Close() })
	if _, err := c2.Channel(); err != nil {
		t.Fatal(err)
	}
	return []int{c1.LocalAddr().(*net.TCPAddr).Port, c2.LocalAddr().(*net.TCPAddr).Port}
}

func TestCLIMatchesRabbitMQ(t *testing.T) {
	if *update {
		record(t)
		return
	}
	raw, err := os.ReadFile(goldenFile)
	if err != nil {
		t.Fatal(err)
	}
	var g goldenFileT
	if err := json.Unmarshal(raw, &g); err != nil {
		t.Fatal(err)
	}
	b := startBroker(t)
	addr := b.Addrs()[0].(*net.TCPAddr)
	peers := fixtureConns(t, addr.String())
	// The broker's listings catch up with the fixture at once, but the
	// consumer's registration is asynchronous to the client: wait for it.
	deadline := time.Now().Add(5 * time.Second)
	for len(b.Consumers()) == 0 || len(b.Channels()) < 3 {
		if time.Now().After(deadline) {
			t.Fatal("fixture's consumer and channels never listed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	ours := normalizer{node: NodeName(), amqp: addr.Port, peers: peers}
	theirs := normalizer{node: g.Node, amqp: g.AMQPPort, dist: g.DistPort, peers: g.Peers}
	ctx := context.Background()
	var target Broker = b
	for _, want := range g.Results {
		if want.Mode == "setup-alarms" {
			target = alarmed{b}
			continue
		}
		got := Exec(ctx, target, nil, Request{Tool: want.Tool, Argv: want.Argv, Stdin: []byte(want.Stdin)})
		name := want.Tool + " " + strings.Join(want.Argv, " ")
		if got.Code != want.Code {
			t.Errorf("%s: exit code %d, RabbitMQ's %d\nstdout %q\nstderr %q", name, got.Code, want.Code, got.Stdout, got.Stderr)
			continue
		}
		for _, s := range []struct{ what, got, want string }{{"stdout", got.Stdout, want.Stdout}, {"stderr", got.Stderr, want.Stderr}} {
			g, w := ours.apply(s.got), theirs.apply(s.want)
			if msg := compare(want.Mode, g, w); msg != "" {
				t.Errorf("%s: %s differs from RabbitMQ's (%s):\n got %q\nwant %q", name, s.what, msg, g, w)
			}
		}
	}
}

// record runs goldenCases on a private RabbitMQ and writes goldenFile.
func record(t *testing.T) {
	if why := rabbitmqtest.Available(); why != "" {
		t.Fatalf("-update records from RabbitMQ only, and it cannot run here: %s", why)
	}
	ctx := context.Background()
	r, err := rabbitmqtest.Start(ctx, rabbitmqtest.Options{Name: "ctlgolden", LogLevel: "warning", Poll: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Stop()
	g := goldenFileT{Node: r.Node, AMQPPort: r.Port}
	g.Peers = fixtureConns(t, r.Addr)
	// Let RabbitMQ's listings (emitted asynchronously) catch up.
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, _, _, err := r.CLI(ctx, rabbitmqtest.CtlScript, nil, "-q", "list_consumers")
		if err == nil && strings.Contains(out, "ctag1") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("RabbitMQ never listed the fixture's consumer")
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, c := range goldenCases {
		script := rabbitmqtest.CtlScript
		if c.Tool == ToolDiag {
			script = rabbitmqtest.DiagScript
		}
		out, errOut, code, err := r.CLI(ctx, script, strings.NewReader(c.Stdin), c.Argv...)
		if err != nil {
			t.Fatalf("%v: %v", c.Argv, err)
		}
		g.Results = append(g.Results, goldenResult{goldenCase: c, Stdout: out, Stderr: errOut, Code: code})
		if m := regexp.MustCompile(`port: (\d+), protocol: clustering`).FindStringSubmatch(out); m != nil {
			g.DistPort, _ = strconv.Atoi(m[1])
		}
	}
	b, _ := json.MarshalIndent(g, "", " ")
	if err := os.WriteFile(goldenFile, append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}

// normalizer is the narrow set of substitutions that make the two
// targets' output comparable:
//
//   - the node name (RabbitMQ's private one, substrate's rabbit@host)
//     becomes NODE, and "-n NODE " (which the recording passes) goes from
//     "Arguments given";
//   - Erlang pids (<NODE.N.N.N>, #PID<N.N.N>) become <PID> and #PID<>;
//   - the AMQP port becomes AMQP_PORT, the fixture connections' local
//     ports PEER1 and PEER2;
//   - RabbitMQ's clustering listener (Erlang distribution, which
//     substrate has not) is dropped, from listener lists and the ports
//     check_port_connectivity names;
//   - in pretty_table's box drawing, runs of q (the rule) and of spaces
//     (the padding) count as one: pids differ in length;
//   - on lines with client properties ("capabilities"), the elements of
//     each list are sorted: amqp091-go sends its properties in Go map
//     order, so RabbitMQ's order is random.
type normalizer struct {
	node       string
	amqp, dist int
	peers      []int
}

var (
	pidRE     = regexp.MustCompile(`<NODE\.\d+\.\d+\.\d+>`)
	jsonPidRE = regexp.MustCompile(`#PID<\d+\.\d+\.\d+>`)
	shortPid  = regexp.MustCompile(`<\d+\.\d+\.\d+>`)
	prettyRE  = regexp.MustCompile(`(q|\x{20})+`)
)

func (n normalizer) apply(s string) string {
	s = strings.ReplaceAll(s, n.node, "NODE")
	s = strings.ReplaceAll(s, "\t-n NODE ", "\t")
	s = pidRE.ReplaceAllString(s, "<PID>")
	s = jsonPidRE.ReplaceAllString(s, "#PID<>")
	s = shortPid.ReplaceAllString(s, "<PID>")
	port := func(p int, as string) {
		if p != 0 {
			s = regexp.MustCompile(`\b`+strconv.Itoa(p)+`\b`).ReplaceAllString(s, as)
		}
	}
	port(n.amqp, "AMQP_PORT")
	port(n.dist, "DIST_PORT")
	for i, p := range n.peers {
		port(p, fmt.Sprintf("PEER%d", i+1))
	}
	var lines []string
	for _, l := range strings.SplitAfter(s, "\n") {
		if strings.Contains(l, "protocol: clustering") {
			continue
		}
		l = strings.ReplaceAll(strings.ReplaceAll(l, "DIST_PORT, ", ""), ", DIST_PORT", "")
		if strings.Contains(l, decOn) {
			l = prettyRE.ReplaceAllString(l, "$1")
		}
		if strings.Contains(l, "capabilities") {
			l = sortLists(l)
		}
		lines = append(lines, l)
	}
	s = strings.Join(lines, "")
	// JSON listener lists
	s = regexp.MustCompile(`\{"interface":"[^"]*","node":"NODE","port":DIST_PORT,"protocol":"clustering","purpose":"[^"]*"\},?`).ReplaceAllString(s, "")
	return s
}

// sortLists sorts the comma-separated elements of every [...] in s,
// innermost first, leaving strings alone.
func sortLists(s string) string {
	var out strings.Builder
	var stack []*[]string // elements of open lists
	var cur []*strings.Builder
	inStr := false
	write := func(r string) {
		if len(cur) == 0 {
			out.WriteString(r)
		} else {
			cur[len(cur)-1].WriteString(r)
		}
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if inStr {
			write(string(ch))
			if ch == '\\' && i+1 < len(s) {
				i++
				write(string(s[i]))
			} else if ch == '"' {
				inStr = false
			}
			continue
		}
		switch ch {
		case '"':
			inStr = true
			write(`"`)
		case '[':
			stack = append(stack, &[]string{})
			cur = append(cur, &strings.Builder{})
		case ',':
			if len(cur) > 0 && depthOK(cur) {
				*stack[len(stack)-1] = append(*stack[len(stack)-1], cur[len(cur)-1].String())
				cur[len(cur)-1] = &strings.Builder{}
			} else {
				write(",")
			}
		case ']':
			if len(cur) == 0 {
				write("]")
				continue
			}
			elems := append(*stack[len(stack)-1], cur[len(cur)-1].String())
			stack, cur = stack[:len(stack)-1], cur[:len(cur)-1]
			slices.Sort(elems)
			write("[" + strings.Join(elems, ",") + "]")
		default:
			write(string(ch))
		}
	}
	return out.String()
}

// depthOK: a comma inside {...} of the current list element is not a
// list separator.
func depthOK(cur []*strings.Builder) bool {
	e := cur[len(cur)-1].String()
	return strings.Count(e, "{")-strings.Count(e, "}") == 0
}

// compare returns why got does not match want in mode, or "".
func compare(mode, got, want string) string {
	switch mode {
	case "subset":
		wl := strings.Split(want, "\n")
		j := 0
		for _, l := range strings.Split(got, "\n") {
			if strings.HasPrefix(l, "   reload_certificates ") { // substrate's own command
				continue
			}
			for j < len(wl) && wl[j] != l {
				j++
			}
			if j == len(wl) {
				return fmt.Sprintf("line %q is not among RabbitMQ's, in order", l)
			}
			j++
		}
		return ""
	case "jsonkeys":
		if g, w := jsonKeys(got), jsonKeys(want); !slices.Equal(g, w) {
			return fmt.Sprintf("JSON keys %q, RabbitMQ's %q", g, w)
		}
		return ""
	case "structure":
		if g, w := structure(got), structure(want); !slices.Equal(g, w) {
			return fmt.Sprintf("structure %q, RabbitMQ's %q", g, w)
		}
		return ""
	}
	if got != want {
		return "text"
	}
	return ""
}

// jsonKeys are the sorted top-level keys of a JSON object, and those of
// the objects in its top-level arrays as "key.sub" (status, definitions).
func jsonKeys(s string) []string {
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		return []string{"not a JSON object: " + err.Error()}
	}
	var keys []string
	for k, v := range m {
		keys = append(keys, k)
		if arr, ok := v.([]any); ok && len(arr) > 0 {
			if o, ok := arr[0].(map[string]any); ok {
				for sub := range o {
					keys = append(keys, k+"."+sub)
				}
			}
		}
	}
	slices.Sort(keys)
	return keys
}

// breakdownRE matches status' memory breakdown lines, whose categories are
// the runtime's (Erlang's or Go's).
var breakdownRE = regexp.MustCompile(`^\S+: [\d.]+ (?:gb|mb|bytes)(?: \([\d.]+ %\))?$`)

// structure is the section headers and keys of status-like output.
func structure(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		switch {
		case strings.HasPrefix(l, bold):
			out = append(out, l)
		case breakdownRE.MatchString(l), strings.HasPrefix(l, "Flag: "):
		case strings.Contains(l, ": "):
			k, _, _ := strings.Cut(l, ": ")
			out = append(out, k)
		}
	}
	return out
}
