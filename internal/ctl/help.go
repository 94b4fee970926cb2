package ctl

import (
	"fmt"
	"slices"
	"strings"
)

// Help texts as rabbitmqctl and rabbitmq-diagnostics 3.10 print them:
// `help` lists the commands substrate answers by RabbitMQ's categories,
// `help COMMAND` (and `COMMAND --help`) prints its usage, arguments and
// doc guides. The words are RabbitMQ's (help_data.go); the layout is
// built here, and the tests compare both with RabbitMQ's output.

// Tool names, as the binary is called through its symlinks.
const (
	ToolCtl  = "rabbitmqctl"
	ToolDiag = "rabbitmq-diagnostics"
)

// helpArg is one entry of a help page's "Arguments and Options".
type helpArg struct{ name, text string }

// helpEntry is one command's help.
type helpEntry struct {
	usage  string // after the command name, starting with a space ("" if none)
	desc   string // the page's description; the listing drops its last "."
	args   []helpArg
	guides []string
}

// categories orders the listing of `help`, as RabbitMQ groups commands.
var categories = []struct {
	name string
	cmds []string
}{
	{"Help", []string{"help", "version"}},
	{"Nodes", []string{"await_startup", "wait"}},
	{"Cluster", []string{"cluster_status"}},
	{"Users", []string{"add_user", "authenticate_user", "change_password", "delete_user", "list_users", "set_user_tags"}},
	{"Access Control", []string{"clear_permissions", "list_permissions", "list_user_permissions", "list_vhosts", "set_permissions"}},
	{"Monitoring, observability and health checks", []string{"alarms", "check_alarms", "check_local_alarms", "check_port_connectivity", "check_running", "check_virtual_hosts",
		"list_bindings", "list_channels", "list_connections", "list_consumers", "list_exchanges", "list_queues", "listeners", "ping", "server_version", "status"}},
	{"Policies", []string{"clear_operator_policy", "clear_policy", "list_operator_policies", "list_policies", "set_operator_policy", "set_policy"}},
	{"Virtual hosts", []string{"add_vhost", "clear_vhost_limits", "delete_vhost", "list_vhost_limits", "set_vhost_limits"}},
	{"Definitions", []string{"export_definitions", "import_definitions"}},
	{"Operations", []string{"close_all_connections", "close_connection", "reload_certificates"}},
}

func hdr(s string) string { return bold + s + plain }

// helpPage is `TOOL help NAME`.
func helpPage(tool, name string) string {
	h := helpData[name]
	var b strings.Builder
	fmt.Fprintf(&b, "\n%s\n\n%s [--node <node>] [--longnames] [--quiet] %s%s\n\n%s\n\n\n", hdr("Usage"), tool, name, h.usage, h.desc)
	if len(h.args) > 0 {
		b.WriteString(hdr("Arguments and Options") + "\n\n")
		for _, a := range h.args {
			b.WriteString(a.name + "\n")
			for _, l := range strings.Split(a.text, "\n") {
				b.WriteString("\t" + l + "\n")
			}
			b.WriteString("\n")
		}
		b.WriteString("\n")
	}
	if len(h.guides) > 0 {
		b.WriteString(hdr("Relevant Doc Guides") + "\n\n")
		for _, g := range h.guides {
			if g == "" { // RabbitMQ's lists have blank entries
				b.WriteString("\n")
				continue
			}
			b.WriteString(" * " + g + "\n")
		}
		b.WriteString("\n\n")
	}
	b.WriteString(hdr("General Options") + generalOptions)
	return b.String()
}

// usageLine is the usage of one command, as argument errors print it.
func usageLine(tool, name string) string {
	return fmt.Sprintf("%s [--node <node>] [--longnames] [--quiet] %s%s", tool, name, helpData[name].usage)
}

// helpListing is `TOOL help`: the commands of tool by category.
func helpListing(tool string, withUsage bool) string {
	var b strings.Builder
	if withUsage {
		fmt.Fprintf(&b, "\n%s\n\n%s [--node <node>] [--timeout <timeout>] [--longnames] [--quiet] <command> [<command options>]\n\nAvailable commands:\n", hdr("Usage"), tool)
	}
	// RabbitMQ pads names to its longest command name plus two:
	// list_node_auth_attempt_stats (28) for rabbitmqctl,
	// check_if_node_is_mirror_sync_critical (37) for diagnostics.
	width := 28
	if tool == ToolDiag {
		width = 37
	}
	for _, c := range categories {
		var names []string
		for _, n := range c.cmds {
			if toolHas(tool, n) {
				names = append(names, n)
			}
		}
		if len(names) == 0 {
			continue
		}
		fmt.Fprintf(&b, "\n%s:\n\n", hdr(c.name))
		for _, n := range names {
			fmt.Fprintf(&b, "   %-*s  %s\n", width, n, strings.TrimSuffix(helpData[n].desc, "."))
		}
	}
	fmt.Fprintf(&b, "\nUse '%s help <command>' to learn more about a specific command\n", tool)
	return b.String()
}

// diagCommands are the commands rabbitmq-diagnostics answers (it has no
// commands that change anything).
var diagCommands = []string{"alarms", "check_alarms", "check_local_alarms", "check_port_connectivity", "check_running",
	"check_virtual_hosts", "cluster_status", "help", "list_bindings", "list_channels", "list_connections", "list_consumers",
	"list_exchanges", "list_operator_policies", "list_permissions", "list_policies", "list_queues", "list_user_permissions",
	"list_users", "list_vhost_limits", "list_vhosts", "listeners", "ping", "server_version", "status", "version", "wait"}

// ctlOnlyNot are diagnostics commands rabbitmqctl does not have.
var ctlOnlyNot = []string{"alarms", "check_alarms", "check_local_alarms", "check_port_connectivity", "check_running",
	"check_virtual_hosts", "listeners", "server_version"}

// toolHas reports whether tool answers command name.
func toolHas(tool, name string) bool {
	if _, ok := helpData[name]; !ok {
		if _, ok := commands[name]; !ok {
			return false
		}
	}
	if tool == ToolDiag {
		return slices.Contains(diagCommands, name)
	}
	return !slices.Contains(ctlOnlyNot, name)
}
