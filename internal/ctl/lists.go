package ctl

import (
	"cmp"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"substrate/broker"
)

// list_connections, list_channels and list_consumers with rabbitmqctl's
// info keys, close_connection, and the policy commands.

// infoKey is one column of a list command.
type infoKey[T any] struct {
	name string
	get  func(node string, x T) cell
}

// pids: RabbitMQ names connections and channels by Erlang process ids
// (<node.N.N.N>); substrate has none, so it makes unique ones of the same
// shape from the connection id and channel number, which close_connection
// accepts too.
func connPid(node string, id uint64) cell {
	return cell{text: fmt.Sprintf("<%s.0.%d.0>", node, id), json: fmt.Sprintf("#PID<0.%d.0>", id), pretty: fmt.Sprintf("<0.%d.0>", id)}
}

func chanPid(node string, conn uint64, ch int) cell {
	return cell{text: fmt.Sprintf("<%s.%d.%d.1>", node, conn, ch), json: fmt.Sprintf("#PID<%d.%d.1>", conn, ch), pretty: fmt.Sprintf("<%d.%d.1>", conn, ch)}
}

var connPidRE = regexp.MustCompile(`^<[^<>]+\.0\.(\d+)\.0>$`)

var connectionKeys = []infoKey[broker.ConnectionInfo]{
	{"auth_mechanism", func(_ string, c broker.ConnectionInfo) cell { return str(c.AuthMechanism) }},
	{"channel_max", func(_ string, c broker.ConnectionInfo) cell { return num(c.ChannelMax) }},
	{"channels", func(_ string, c broker.ConnectionInfo) cell { return num(c.Channels) }},
	{"client_properties", func(_ string, c broker.ConnectionInfo) cell { return tableCell(c.ClientProperties) }},
	{"connected_at", func(_ string, c broker.ConnectionInfo) cell { return num(c.ConnectedAt.UnixMilli()) }},
	{"frame_max", func(_ string, c broker.ConnectionInfo) cell { return num(c.FrameMax) }},
	{"host", func(_ string, c broker.ConnectionInfo) cell { return ipCell(c.Host) }},
	{"name", func(_ string, c broker.ConnectionInfo) cell { return str(c.Name) }},
	{"peer_cert_issuer", func(_ string, c broker.ConnectionInfo) cell { return str("") }},
	{"peer_cert_subject", func(_ string, c broker.ConnectionInfo) cell { return str("") }},
	{"peer_cert_validity", func(_ string, c broker.ConnectionInfo) cell { return str("") }},
	{"peer_host", func(_ string, c broker.ConnectionInfo) cell { return ipCell(c.PeerHost) }},
	{"peer_port", func(_ string, c broker.ConnectionInfo) cell { return num(c.PeerPort) }},
	{"pid", func(node string, c broker.ConnectionInfo) cell { return connPid(node, c.ID) }},
	{"port", func(_ string, c broker.ConnectionInfo) cell { return num(c.Port) }},
	{"protocol", func(_ string, c broker.ConnectionInfo) cell {
		return cell{text: "{0,9,1}", json: []int{0, 9, 1}}
	}},
	{"recv_cnt", func(_ string, c broker.ConnectionInfo) cell { return num(c.RecvCnt) }},
	{"recv_oct", func(_ string, c broker.ConnectionInfo) cell { return num(c.RecvOct) }},
	{"send_cnt", func(_ string, c broker.ConnectionInfo) cell { return num(c.SendCnt) }},
	{"send_oct", func(_ string, c broker.ConnectionInfo) cell { return num(c.SendOct) }},
	{"send_pend", func(_ string, c broker.ConnectionInfo) cell { return num(0) }},
	{"ssl", func(_ string, c broker.ConnectionInfo) cell { return boolean(c.SSL) }},
	{"ssl_cipher", func(_ string, c broker.ConnectionInfo) cell { return str(c.SSLCipher) }},
	{"ssl_hash", func(_ string, c broker.ConnectionInfo) cell { return str("") }},
	{"ssl_key_exchange", func(_ string, c broker.ConnectionInfo) cell { return str("") }},
	{"ssl_protocol", func(_ string, c broker.ConnectionInfo) cell { return str(c.SSLProtocol) }},
	{"state", func(_ string, c broker.ConnectionInfo) cell { return str(c.State) }},
	{"timeout", func(_ string, c broker.ConnectionInfo) cell { return num(c.Timeout) }},
	{"user", func(_ string, c broker.ConnectionInfo) cell { return str(c.User) }},
	{"vhost", func(_ string, c broker.ConnectionInfo) cell { return str(c.VHost) }},
}

// queueKeys are the list_queues info keys substrate answers.
var queueKeys = []infoKey[broker.QueueInfo]{
	{"arguments", func(_ string, q broker.QueueInfo) cell { return tableCell(q.Arguments) }},
	{"auto_delete", func(_ string, q broker.QueueInfo) cell { return boolean(q.AutoDelete) }},
	{"consumers", func(_ string, q broker.QueueInfo) cell { return num(q.Consumers) }},
	{"durable", func(_ string, q broker.QueueInfo) cell { return boolean(q.Durable) }},
	{"exclusive", func(_ string, q broker.QueueInfo) cell { return boolean(q.Exclusive) }},
	{"exclusive_consumer_tag", func(_ string, q broker.QueueInfo) cell { return str(q.ExclusiveConsumerTag) }},
	{"memory", func(_ string, q broker.QueueInfo) cell { return num(q.MemoryBytes) }},
	{"message_bytes", func(_ string, q broker.QueueInfo) cell { return num(q.MessageBytes) }},
	{"message_bytes_persistent", func(_ string, q broker.QueueInfo) cell { return num(q.MessageBytesPersistent) }},
	{"message_bytes_ram", func(_ string, q broker.QueueInfo) cell { return num(q.MessageBytesRAM) }},
	{"message_bytes_ready", func(_ string, q broker.QueueInfo) cell { return num(q.MessageBytesReady) }},
	{"message_bytes_unacknowledged", func(_ string, q broker.QueueInfo) cell { return num(q.MessageBytesUnacknowledged) }},
	{"messages", func(_ string, q broker.QueueInfo) cell { return num(q.Messages) }},
	{"messages_persistent", func(_ string, q broker.QueueInfo) cell { return num(q.MessagesPersistent) }},
	{"messages_ready", func(_ string, q broker.QueueInfo) cell { return num(q.MessagesReady) }},
	{"messages_unacknowledged", func(_ string, q broker.QueueInfo) cell { return num(q.MessagesUnacknowledged) }},
	{"name", func(_ string, q broker.QueueInfo) cell { return str(q.Name) }},
	{"online", func(_ string, q broker.QueueInfo) cell { return boolean(true) }},
	{"policy", func(_ string, q broker.QueueInfo) cell { return str(q.Policy) }},
	{"state", func(_ string, q broker.QueueInfo) cell { return str(cmp.Or(q.State, "running")) }},
	{"type", func(_ string, q broker.QueueInfo) cell { return str(q.Type) }},
	// Keys whose RabbitMQ meaning has a fixed answer in substrate: one
	// node, no paging to disk, no mirrors.
	{"consumer_capacity", func(_ string, q broker.QueueInfo) cell { return capacity(q) }},
	{"consumer_utilisation", func(_ string, q broker.QueueInfo) cell { return capacity(q) }},
	{"disk_reads", func(_ string, q broker.QueueInfo) cell { return num(0) }},
	{"disk_writes", func(_ string, q broker.QueueInfo) cell { return num(q.MessagesPersistent) }},
	{"exclusive_consumer_pid", func(_ string, q broker.QueueInfo) cell { return str("") }},
	{"head_message_timestamp", func(_ string, q broker.QueueInfo) cell { return str("") }},
	// leader and members are a quorum queue's; empty for classic ones.
	{"leader", func(node string, q broker.QueueInfo) cell {
		if q.Type != "quorum" {
			return str("")
		}
		return str(node)
	}},
	{"members", func(node string, q broker.QueueInfo) cell {
		if q.Type != "quorum" {
			return str("")
		}
		return cell{text: "[" + node + "]", json: []string{node}}
	}},
	{"messages_ram", func(_ string, q broker.QueueInfo) cell { return num(q.Messages) }},
	{"messages_ready_ram", func(_ string, q broker.QueueInfo) cell { return num(q.MessagesReady) }},
	{"messages_unacknowledged_ram", func(_ string, q broker.QueueInfo) cell { return num(q.MessagesUnacknowledged) }},
	{"owner_pid", func(_ string, q broker.QueueInfo) cell { return str("") }},
	{"pid", func(node string, q broker.QueueInfo) cell { return str("<" + node + ".queue." + q.Name + ">") }},
	{"slave_pids", func(_ string, q broker.QueueInfo) cell { return str("") }},
	{"synchronised_slave_pids", func(_ string, q broker.QueueInfo) cell { return str("") }},
}

// capacity is consumer_capacity: 1.0 while the queue has consumers that
// can take messages at once (substrate does not measure how often they
// cannot), 0 without consumers.
func capacity(q broker.QueueInfo) cell {
	if q.Consumers > 0 {
		return cell{text: "1.0", json: 1.0}
	}
	return cell{text: "0", json: 0}
}

var channelKeys = []infoKey[broker.ChannelInfo]{
	{"acks_uncommitted", func(_ string, c broker.ChannelInfo) cell { return num(c.AcksUncommitted) }},
	{"confirm", func(_ string, c broker.ChannelInfo) cell { return boolean(c.Confirm) }},
	{"connection", func(node string, c broker.ChannelInfo) cell { return connPid(node, c.ConnectionID) }},
	{"consumer_count", func(_ string, c broker.ChannelInfo) cell { return num(c.ConsumerCount) }},
	{"global_prefetch_count", func(_ string, c broker.ChannelInfo) cell { return num(c.GlobalPrefetchCount) }},
	{"messages_unacknowledged", func(_ string, c broker.ChannelInfo) cell { return num(c.MessagesUnacknowledged) }},
	{"messages_uncommitted", func(_ string, c broker.ChannelInfo) cell { return num(c.MessagesUncommitted) }},
	{"messages_unconfirmed", func(_ string, c broker.ChannelInfo) cell { return num(c.MessagesUnconfirmed) }},
	{"name", func(_ string, c broker.ChannelInfo) cell { return str(c.Name) }},
	{"number", func(_ string, c broker.ChannelInfo) cell { return num(c.Number) }},
	{"pid", func(node string, c broker.ChannelInfo) cell { return chanPid(node, c.ConnectionID, c.Number) }},
	{"prefetch_count", func(_ string, c broker.ChannelInfo) cell { return num(c.PrefetchCount) }},
	{"transactional", func(_ string, c broker.ChannelInfo) cell { return boolean(c.Transactional) }},
	{"user", func(_ string, c broker.ChannelInfo) cell { return str(c.User) }},
	{"vhost", func(_ string, c broker.ChannelInfo) cell { return str(c.VHost) }},
}

var consumerKeys = []infoKey[broker.ConsumerInfo]{
	{"ack_required", func(_ string, c broker.ConsumerInfo) cell { return boolean(c.AckRequired) }},
	{"active", func(_ string, c broker.ConsumerInfo) cell { return boolean(c.Active) }},
	{"activity_status", func(_ string, c broker.ConsumerInfo) cell { return str(c.ActivityStatus) }},
	{"arguments", func(_ string, c broker.ConsumerInfo) cell { return tableCell(c.Arguments) }},
	{"channel_pid", func(node string, c broker.ConsumerInfo) cell { return chanPid(node, c.ConnectionID, c.ChannelNumber) }},
	{"consumer_tag", func(_ string, c broker.ConsumerInfo) cell { return str(c.ConsumerTag) }},
	{"prefetch_count", func(_ string, c broker.ConsumerInfo) cell { return num(c.PrefetchCount) }},
	{"queue_name", func(_ string, c broker.ConsumerInfo) cell { return str(c.Queue) }},
}

// infoList builds a streamed listing of items with the columns asked for
// (or defaults); an unknown column is an argument error naming them all.
func infoList[T any](c *call, keys []infoKey[T], defaults []string, items []T) (listing, error) {
	cols := c.args
	if len(cols) == 0 {
		cols = defaults
	}
	// rabbitmqctl also accepts "name,user" as one word.
	var split []string
	for _, col := range cols {
		for p := range strings.SplitSeq(col, ",") {
			if p != "" {
				split = append(split, p)
			}
		}
	}
	cols = split
	get := make([]func(string, T) cell, len(cols))
	var bad []string
	for i, col := range cols {
		j := slices.IndexFunc(keys, func(k infoKey[T]) bool { return k.name == col })
		if j < 0 {
			bad = append(bad, col)
			continue
		}
		get[i] = keys[j].get
	}
	if len(bad) > 0 {
		return listing{}, badKeys(bad)
	}
	node := NodeName()
	l := listing{cols: cols, stream: true}
	for _, x := range items {
		row := make([]cell, len(cols))
		for i := range cols {
			row[i] = get[i](node, x)
		}
		l.rows = append(l.rows, row)
	}
	return l, nil
}

func keyNames[T any](keys []infoKey[T]) string {
	names := make([]string, len(keys))
	for i, k := range keys {
		names[i] = k.name
	}
	return strings.Join(names, ", ")
}

// policyList is list_policies' and list_operator_policies' listing.
func policyList(ps []broker.Policy) listing {
	l := listing{cols: []string{"vhost", "name", "pattern", "apply-to", "definition", "priority"}}
	for _, p := range ps {
		def, _ := marshal(p.Definition) // keys sorted, as RabbitMQ prints them
		l.rows = append(l.rows, []cell{str(p.VHost), str(p.Name), str(p.Pattern), str(p.ApplyTo), str(string(def)), num(p.Priority)})
	}
	return l
}

func init() {
	commands["list_connections"] = command{args: "[<column> ...]", max: -1, run: func(c *call) (string, string, error) {
		l, err := infoList(c, connectionKeys, []string{"user", "peer_host", "peer_port", "state"}, c.b.Connections())
		if err != nil {
			return "", "", err
		}
		return "Listing connections ...", c.render(l), nil
	}}
	commands["list_channels"] = command{args: "[<column> ...]", max: -1, run: func(c *call) (string, string, error) {
		l, err := infoList(c, channelKeys, []string{"pid", "user", "consumer_count", "messages_unacknowledged"}, c.b.Channels())
		if err != nil {
			return "", "", err
		}
		return "Listing channels ...", c.render(l), nil
	}}
	commands["list_consumers"] = command{args: "[<column> ...]", max: -1, vhost: true, run: func(c *call) (string, string, error) {
		var cs []broker.ConsumerInfo
		for _, x := range c.b.Consumers() {
			if x.VHost == c.vhost {
				cs = append(cs, x)
			}
		}
		l, err := infoList(c, consumerKeys, []string{"queue_name", "channel_pid", "consumer_tag", "ack_required", "prefetch_count", "active", "arguments"}, cs)
		if err != nil {
			return "", "", err
		}
		return fmt.Sprintf("Listing consumers in vhost %s ...", c.vhost), c.render(l), nil
	}}
	commands["close_connection"] = command{args: "<connection name> <explanation>", min: 2, max: 2, run: func(c *call) (string, string, error) {
		banner := fmt.Sprintf("Closing connection %s, reason: %s...", c.args[0], c.args[1])
		// By the pid list_connections shows, as RabbitMQ, or by its name.
		if m := connPidRE.FindStringSubmatch(c.args[0]); m != nil {
			id, _ := strconv.ParseUint(m[1], 10, 64)
			if err := c.b.CloseConnectionByID(id, c.args[1]); err != nil {
				return banner, "", &cmdError{code: ExitUnavail, msg: fmt.Sprintf("Error:\nno connection %s", c.args[0])}
			}
			return banner, "", nil
		}
		if err := c.b.CloseConnection(c.args[0], c.args[1]); err != nil {
			return banner, "", &cmdError{code: ExitUnavail, msg: fmt.Sprintf("Error:\n{:invalid_pid_syntax, %q}", c.args[0])}
		}
		return banner, "", nil
	}}
	setPolicy := func(operator bool) func(c *call) (string, string, error) {
		return func(c *call) (string, string, error) {
			name, pattern, def := c.args[0], c.args[1], c.args[2]
			prio, applyTo := "0", "all"
			if v, ok := c.flags["priority"]; ok {
				prio = v
			}
			if v, ok := c.flags["apply-to"]; ok {
				applyTo = v
			}
			what := "policy"
			if operator {
				what = "operator policy override"
			}
			banner := fmt.Sprintf(`Setting %s "%s" for pattern "%s" to "%s" with priority "%s" for vhost "%s" ...`, what, name, pattern, def, prio, c.vhost)
			n, err := strconv.Atoi(prio)
			if err != nil {
				return banner, "", &cmdError{code: ExitUnavail, msg: fmt.Sprintf("Validation failed\n\npriority must be a number, actually was %q\n", prio)}
			}
			d, err := broker.ParsePolicyDefinition([]byte(def))
			if err != nil {
				return banner, "", &cmdError{code: ExitUnavail, msg: "JSON decoding error. Reason: badarg"}
			}
			if !slices.Contains(c.b.VHosts(), c.vhost) {
				return banner, "", &cmdError{code: ExitDataErr, msg: fmt.Sprintf("Virtual host '%s' does not exist\n", c.vhost), raw: true}
			}
			p := broker.Policy{VHost: c.vhost, Name: name, Pattern: pattern, ApplyTo: applyTo, Definition: d, Priority: n}
			if operator {
				err = c.b.SetOperatorPolicy(c.ctx, p)
			} else {
				err = c.b.SetPolicy(c.ctx, p)
			}
			return banner, "", policyError(err)
		}
	}
	clearPolicy := func(operator bool) func(c *call) (string, string, error) {
		return func(c *call) (string, string, error) {
			what := "policy"
			if operator {
				what = "operator policy"
			}
			banner := fmt.Sprintf("Clearing %s %q on vhost %q ...", what, c.args[0], c.vhost)
			var err error
			if operator {
				err = c.b.ClearOperatorPolicy(c.ctx, c.vhost, c.args[0])
			} else {
				err = c.b.ClearPolicy(c.ctx, c.vhost, c.args[0])
			}
			if errors.Is(err, broker.ErrNotFound) {
				return banner, "", &cmdError{code: ExitUnavail, msg: "Parameter does not exist"}
			}
			return banner, "", err
		}
	}
	listPolicies := func(operator bool) func(c *call) (string, string, error) {
		return func(c *call) (string, string, error) {
			banner := fmt.Sprintf("Listing policies for vhost %q ...", c.vhost)
			ps := c.b.Policies
			if operator {
				banner = fmt.Sprintf("Listing operator policy overrides for vhost %q ...", c.vhost)
				ps = c.b.OperatorPolicies
			}
			if !slices.Contains(c.b.VHosts(), c.vhost) {
				return banner, "", &cmdError{code: ExitDataErr, msg: fmt.Sprintf("Virtual host '%s' does not exist\n", c.vhost), raw: true}
			}
			return banner, c.render(policyList(ps(c.vhost))), nil
		}
	}
	policyFlags := []string{"priority", "apply-to"}
	commands["set_policy"] = command{min: 3, max: 3, vhost: true, flags: policyFlags, run: setPolicy(false)}
	commands["set_operator_policy"] = command{min: 3, max: 3, vhost: true, flags: policyFlags, run: setPolicy(true)}
	commands["clear_policy"] = command{min: 1, max: 1, vhost: true, run: clearPolicy(false)}
	commands["clear_operator_policy"] = command{min: 1, max: 1, vhost: true, run: clearPolicy(true)}
	commands["list_policies"] = command{vhost: true, run: listPolicies(false)}
	commands["list_operator_policies"] = command{vhost: true, run: listPolicies(true)}
}

// policyError turns the broker's refusal of a policy into rabbitmqctl's.
func policyError(err error) error {
	var ve *broker.ValidationError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ve):
		return &cmdError{code: ExitUnavail, msg: "Validation failed\n\n" + ve.Reason + "\n"}
	case errors.Is(err, broker.ErrNotFound):
		return &cmdError{code: ExitDataErr, msg: err.Error()}
	}
	return err
}
