package broker

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"substrate/broker/amqp"
)

// RabbitMQ's definitions file (rabbitmqctl export_definitions and
// import_definitions, GET and POST /api/definitions), in RabbitMQ 3.10's
// shape: each object's keys in its order (alphabetical), lists that are
// empty written as [].
//
// Export holds what RabbitMQ 3.10 exports: users, vhosts, permissions,
// policies, vhost limits and operator policies (as parameters), and the queues, exchanges and bindings that are not exclusive,
// internal, predefined (amq.*) or the default exchange; substrate has no
// topic permissions and no global parameters.
//
// Import takes such a file, or a deployment tool's (kolla-ansible's and
// openstack-ansible's definitions.json: users with a "password" or a
// "password_hash", tags as a list or "a,b"), checks all of it first and
// refuses, with nothing changed, what substrate cannot honour: an unknown
// hashing algorithm (sha256, sha512 and md5 are RabbitMQ's), user limits, topic
// permissions, parameters other than vhost-limits and operator_policy,
// global parameters other than cluster_name and internal_cluster_id
// (RabbitMQ's own bookkeeping, which substrate has no use for and
// ignores). An operator policy's definition may be an object or, as
// RabbitMQ 3.10 exports it, a list of [key, value] pairs (which its own
// import refuses: "definition must be a dictionary"; substrate exports
// an object, so that RabbitMQ can import substrate's export). Then, in RabbitMQ's order, it creates or replaces users,
// vhosts, permissions, vhost limits, operator policies, policies,
// queues, exchanges and bindings (an existing queue or exchange must be
// equivalent, as on declare).

// RabbitDefinitions is a definitions file.
type RabbitDefinitions struct {
	Bindings         []RabbitBinding         `json:"bindings"`
	Exchanges        []RabbitExchange        `json:"exchanges"`
	GlobalParameters []RabbitGlobalParameter `json:"global_parameters"`
	Parameters       []RabbitParameter       `json:"parameters"`
	Permissions      []RabbitPermission      `json:"permissions"`
	Policies         []Policy                `json:"policies"`
	ProductName      string                  `json:"product_name,omitempty"`
	ProductVersion   string                  `json:"product_version,omitempty"`
	Queues           []RabbitQueue           `json:"queues"`
	RabbitVersion    string                  `json:"rabbit_version,omitempty"`
	RabbitMQVersion  string                  `json:"rabbitmq_version,omitempty"`
	TopicPermissions []RabbitTopicPermission `json:"topic_permissions"`
	Users            []RabbitUser            `json:"users"`
	VHosts           []RabbitVHost           `json:"vhosts"`
}

// RabbitUser is a user. Password, which RabbitMQ's export never writes,
// is the plain password deployment tools may give instead of a hash.
type RabbitUser struct {
	HashingAlgorithm string         `json:"hashing_algorithm,omitempty"`
	Limits           map[string]any `json:"limits"`
	Name             string         `json:"name"`
	Password         string         `json:"password,omitempty"`
	PasswordHash     string         `json:"password_hash"`
	Tags             RabbitTags     `json:"tags"`
}

// RabbitTags are a user's tags: a list, or (older files, deployment
// tools) one comma-separated string.
type RabbitTags []string

// UnmarshalJSON accepts ["a","b"] and "a,b".
func (t *RabbitTags) UnmarshalJSON(b []byte) error {
	var s string
	if json.Unmarshal(b, &s) == nil {
		*t = nil
		for _, x := range strings.Split(s, ",") {
			if x = strings.TrimSpace(x); x != "" {
				*t = append(*t, x)
			}
		}
		return nil
	}
	var l []string
	if err := json.Unmarshal(b, &l); err != nil {
		return fmt.Errorf("tags: %w", err)
	}
	*t = l
	return nil
}

// MarshalJSON writes a list, [] when empty.
func (t RabbitTags) MarshalJSON() ([]byte, error) {
	if t == nil {
		return []byte("[]"), nil
	}
	return json.Marshal([]string(t))
}

// RabbitVHost is a vhost. Limits is informational, as RabbitMQ writes it
// ([["max-connections",10]]); import takes the limits from the
// vhost-limits parameters.
type RabbitVHost struct {
	Limits   any            `json:"limits,omitempty"`
	Metadata map[string]any `json:"metadata,omitempty"`
	Name     string         `json:"name"`
}

// RabbitPermission is a user's permissions on a vhost.
type RabbitPermission struct {
	Configure string `json:"configure"`
	Read      string `json:"read"`
	User      string `json:"user"`
	VHost     string `json:"vhost"`
	Write     string `json:"write"`
}

// RabbitTopicPermission is a topic permission (not supported).
type RabbitTopicPermission struct {
	Exchange string `json:"exchange"`
	Read     string `json:"read"`
	User     string `json:"user"`
	VHost    string `json:"vhost"`
	Write    string `json:"write"`
}

// RabbitParameter is a runtime parameter of a vhost: component
// "vhost-limits" (name "limits") or "operator_policy".
type RabbitParameter struct {
	Component string `json:"component"`
	Name      string `json:"name"`
	Value     any    `json:"value"`
	VHost     string `json:"vhost"`
}

// RabbitGlobalParameter is a global runtime parameter.
type RabbitGlobalParameter struct {
	Name  string `json:"name"`
	Value any    `json:"value"`
}

// RabbitQueue is a queue.
type RabbitQueue struct {
	Arguments  map[string]any `json:"arguments"`
	AutoDelete bool           `json:"auto_delete"`
	Durable    bool           `json:"durable"`
	Name       string         `json:"name"`
	Type       string         `json:"type,omitempty"`
	VHost      string         `json:"vhost"`
}

// RabbitExchange is an exchange. RabbitMQ 3.10 never exports internal
// ones; Internal is read on import.
type RabbitExchange struct {
	Arguments  map[string]any `json:"arguments"`
	AutoDelete bool           `json:"auto_delete"`
	Durable    bool           `json:"durable"`
	Internal   bool           `json:"internal,omitempty"`
	Name       string         `json:"name"`
	Type       string         `json:"type"`
	VHost      string         `json:"vhost"`
}

// RabbitBinding is a binding.
type RabbitBinding struct {
	Arguments       map[string]any `json:"arguments"`
	Destination     string         `json:"destination"`
	DestinationType string         `json:"destination_type"`
	RoutingKey      string         `json:"routing_key"`
	Source          string         `json:"source"`
	VHost           string         `json:"vhost"`
}

// The version RabbitMQ's definitions carry: the RabbitMQ substrate
// behaves as.
const rabbitVersion = "3.10.8"

func emptyArgs(m map[string]any) map[string]any {
	if m == nil {
		return map[string]any{}
	}
	return m
}

// ExportDefinitions returns the broker's definitions as RabbitMQ 3.10's
// export_definitions writes them.
func (s *Server) ExportDefinitions() RabbitDefinitions {
	d := RabbitDefinitions{
		RabbitVersion: rabbitVersion, RabbitMQVersion: rabbitVersion, ProductName: "substrate", ProductVersion: "0.1.0",
		Users: []RabbitUser{}, VHosts: []RabbitVHost{}, Permissions: []RabbitPermission{}, TopicPermissions: []RabbitTopicPermission{},
		Parameters: []RabbitParameter{}, GlobalParameters: []RabbitGlobalParameter{}, Policies: []Policy{},
		Queues: []RabbitQueue{}, Exchanges: []RabbitExchange{}, Bindings: []RabbitBinding{},
	}
	for _, u := range s.Users() {
		hash := ""
		if len(u.PasswordHash) > 0 {
			hash = u.EncodedHash()
		}
		d.Users = append(d.Users, RabbitUser{Name: u.Name, PasswordHash: hash, HashingAlgorithm: u.HashingAlgorithm(),
			Tags: append(RabbitTags{}, u.Tags...), Limits: map[string]any{}})
	}
	limits := s.VHostLimits()
	for _, name := range s.VHosts() {
		pairs := [][]any{}
		if l := limits[name]; len(l) > 0 {
			keys := make([]string, 0, len(l))
			for k := range l {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			value := map[string]any{}
			for _, k := range keys {
				pairs = append(pairs, []any{k, l[k]})
				value[k] = l[k]
			}
			d.Parameters = append(d.Parameters, RabbitParameter{Component: "vhost-limits", Name: "limits", Value: value, VHost: name})
		}
		d.VHosts = append(d.VHosts, RabbitVHost{Name: name, Limits: pairs, Metadata: map[string]any{"description": "", "tags": []string{}}})
	}
	for _, p := range s.Permissions("") {
		d.Permissions = append(d.Permissions, RabbitPermission{Configure: p.Configure, Read: p.Read, User: p.User, VHost: p.VHost, Write: p.Write})
	}
	for _, p := range s.OperatorPolicies("") {
		d.Parameters = append(d.Parameters, RabbitParameter{Component: "operator_policy", Name: p.Name, VHost: p.VHost,
			Value: map[string]any{"apply-to": p.ApplyTo, "definition": p.Definition, "pattern": p.Pattern, "priority": p.Priority}})
	}
	d.Policies = append(d.Policies, s.Policies("")...)
	for _, vh := range s.VHosts() {
		exclusive := map[string]bool{}
		for _, q := range s.Queues(vh) {
			if q.Exclusive {
				exclusive[q.Name] = true
				continue
			}
			d.Queues = append(d.Queues, RabbitQueue{Name: q.Name, VHost: vh, Durable: q.Durable, AutoDelete: q.AutoDelete,
				Type: q.Type, Arguments: emptyArgs(q.Arguments)})
		}
		for _, x := range s.Exchanges(vh) {
			if x.Name == "" || x.Internal || strings.HasPrefix(x.Name, "amq.") {
				continue
			}
			d.Exchanges = append(d.Exchanges, RabbitExchange{Name: x.Name, VHost: vh, Type: x.Type, Durable: x.Durable,
				AutoDelete: x.AutoDelete, Arguments: emptyArgs(x.Arguments)})
		}
		for _, b := range s.Bindings(vh) {
			if b.DestinationType == "queue" && exclusive[b.Destination] {
				continue
			}
			d.Bindings = append(d.Bindings, RabbitBinding{Source: b.Source, VHost: vh, Destination: b.Destination,
				DestinationType: b.DestinationType, RoutingKey: b.RoutingKey, Arguments: emptyArgs(b.Arguments)})
		}
	}
	return d
}

// importedUser is a checked user of an import.
type importedUser struct {
	u       User
	hashSet bool
}

// ImportDefinitions loads a definitions file (see RabbitDefinitions): it
// checks everything first and changes nothing if any part is refused;
// then it applies the parts in RabbitMQ's order and stops at the first
// failure (as RabbitMQ, which also applies what came before).
func (s *Server) ImportDefinitions(ctx context.Context, d RabbitDefinitions) error {
	// ---- check ----
	var users []User
	for _, ru := range d.Users {
		if ru.Name == "" {
			return errors.New("broker: import: a user without a name")
		}
		algo := ru.HashingAlgorithm
		if algo == "" {
			algo = HashSHA256 // RabbitMQ's default
		}
		want, ok := hashLen[algo]
		if !ok {
			return fmt.Errorf("broker: import: user %q: unknown hashing algorithm %s", ru.Name, ru.HashingAlgorithm)
		}
		if len(ru.Limits) > 0 {
			return fmt.Errorf("broker: import: user %q: user limits are not supported", ru.Name)
		}
		u := User{Name: ru.Name, Tags: append([]string(nil), ru.Tags...)}
		switch {
		case ru.PasswordHash != "":
			h, err := base64.StdEncoding.DecodeString(ru.PasswordHash)
			if err != nil {
				return fmt.Errorf("broker: import: user %q: {:not_base64, %q}", ru.Name, ru.PasswordHash)
			}
			if len(h) != want {
				return fmt.Errorf("broker: import: user %q: password_hash is %d bytes, not a %s hash (%d)", ru.Name, len(h), algo, want)
			}
			u.PasswordHash = h
		case ru.Password != "":
			u.PasswordHash = HashPassword(ru.Password)
		}
		users = append(users, u)
	}
	for _, v := range d.VHosts {
		if v.Name == "" {
			return errors.New("broker: import: a vhost without a name")
		}
	}
	for _, p := range d.Permissions {
		if _, err := compilePerm(Permission{User: p.User, VHost: p.VHost, Configure: p.Configure, Write: p.Write, Read: p.Read}); err != nil {
			return fmt.Errorf("broker: import: %w", err)
		}
	}
	if len(d.TopicPermissions) > 0 {
		return errors.New("broker: import: topic permissions are not supported")
	}
	type limitSet struct {
		vhost string
		l     VHostLimits
	}
	var limits []limitSet
	var opPolicies []Policy
	for _, p := range d.Parameters {
		switch p.Component {
		case "vhost-limits":
			m, ok := p.Value.(map[string]any)
			if !ok {
				return fmt.Errorf("broker: import: vhost-limits of %q: value is not an object", p.VHost)
			}
			l := VHostLimits{}
			for k, v := range m {
				n, ok := policyInt(normalizeValue(v))
				if !ok {
					return fmt.Errorf("broker: import: vhost-limits of %q: %s is not an integer", p.VHost, k)
				}
				l[k] = n
			}
			if err := l.Validate(); err != nil {
				return fmt.Errorf("broker: import: vhost-limits of %q: %w", p.VHost, err)
			}
			limits = append(limits, limitSet{p.VHost, l})
		case "operator_policy":
			op, err := operatorPolicyParameter(p)
			if err != nil {
				return err
			}
			opPolicies = append(opPolicies, op)
		default:
			return fmt.Errorf("broker: import: parameters of component %q are not supported", p.Component)
		}
	}
	for _, g := range d.GlobalParameters {
		if g.Name != "cluster_name" && g.Name != "internal_cluster_id" {
			return fmt.Errorf("broker: import: global parameter %q is not supported", g.Name)
		}
	}
	policies := make([]Policy, len(d.Policies))
	for i, p := range d.Policies {
		p = clonePolicy(p)
		for k, v := range p.Definition {
			p.Definition[k] = normalizeValue(v)
		}
		if p.ApplyTo == "" {
			p.ApplyTo = ApplyToAll
		}
		if err := p.Validate(); err != nil {
			return fmt.Errorf("broker: import: policy %q in vhost %q: %w", p.Name, p.VHost, err)
		}
		policies[i] = p
	}
	for _, x := range d.Exchanges {
		if !validKind(x.Type) {
			return fmt.Errorf("broker: import: exchange %q in vhost %q: unknown type %q", x.Name, x.VHost, x.Type)
		}
	}
	for _, b := range d.Bindings {
		if b.DestinationType != "queue" && b.DestinationType != "exchange" {
			return fmt.Errorf("broker: import: binding from %q: destination_type %q", b.Source, b.DestinationType)
		}
	}

	// ---- apply ----
	for _, u := range users {
		if err := s.putUser(ctx, u); err != nil {
			return fmt.Errorf("broker: import: user %q: %w", u.Name, err)
		}
	}
	for _, v := range d.VHosts {
		if err := s.AddVHost(ctx, v.Name); err != nil && !errors.Is(err, ErrExists) {
			return fmt.Errorf("broker: import: %w", err)
		}
	}
	for _, p := range d.Permissions {
		if err := s.SetPermissions(ctx, Permission{User: p.User, VHost: p.VHost, Configure: p.Configure, Write: p.Write, Read: p.Read}); err != nil {
			return fmt.Errorf("broker: import: permission of %q on %q: %w", p.User, p.VHost, err)
		}
	}
	for _, l := range limits {
		if err := s.SetVHostLimits(ctx, l.vhost, l.l); err != nil {
			return fmt.Errorf("broker: import: %w", err)
		}
	}
	for _, p := range opPolicies {
		if err := s.SetOperatorPolicy(ctx, p); err != nil {
			return fmt.Errorf("broker: import: operator policy %q in vhost %q: %w", p.Name, p.VHost, err)
		}
	}
	for _, p := range policies {
		if err := s.SetPolicy(ctx, p); err != nil {
			return fmt.Errorf("broker: import: policy %q in vhost %q: %w", p.Name, p.VHost, err)
		}
	}
	for _, q := range d.Queues {
		vh := s.vhost(q.VHost)
		if vh == nil {
			return fmt.Errorf("broker: import: queue %q: vhost %q: %w", q.Name, q.VHost, ErrNotFound)
		}
		args := normalizeArgs(q.Arguments)
		if q.Type != "" && q.Type != "classic" {
			if _, ok := args["x-queue-type"]; !ok {
				if args == nil {
					args = amqp.Table{}
				}
				args["x-queue-type"] = q.Type
			}
		}
		if _, err := vh.declareQueue(&amqp.QueueDeclare{Queue: q.Name, Durable: q.Durable, AutoDelete: q.AutoDelete, Arguments: args}, nil); err != nil {
			return fmt.Errorf("broker: import: %s", err.Text)
		}
	}
	for _, x := range d.Exchanges {
		vh := s.vhost(x.VHost)
		if vh == nil {
			return fmt.Errorf("broker: import: exchange %q: vhost %q: %w", x.Name, x.VHost, ErrNotFound)
		}
		if x.Name == "" || strings.HasPrefix(x.Name, "amq.") && vh.exchange(x.Name) != nil {
			continue // predefined
		}
		err := vh.declareExchange(&amqp.ExchangeDeclare{Exchange: x.Name, Type: x.Type, Durable: x.Durable, AutoDelete: x.AutoDelete,
			Internal: x.Internal, Arguments: normalizeArgs(x.Arguments)})
		if err != nil {
			return fmt.Errorf("broker: import: %s", err.Text)
		}
	}
	for _, b := range d.Bindings {
		vh := s.vhost(b.VHost)
		if vh == nil {
			return fmt.Errorf("broker: import: binding: vhost %q: %w", b.VHost, ErrNotFound)
		}
		if err := vh.bind(b.Source, b.DestinationType, b.Destination, b.RoutingKey, normalizeArgs(b.Arguments), nil, amqp.ClassQueue, amqp.MethodQueueBind); err != nil {
			return fmt.Errorf("broker: import: %s", err.Text)
		}
	}
	return nil
}

// operatorPolicyParameter reads an operator policy from its parameter
// form: value {"apply-to","definition","pattern","priority"}, the
// definition an object or RabbitMQ's list of [key, value] pairs.
func operatorPolicyParameter(p RabbitParameter) (Policy, error) {
	bad := func(what string) (Policy, error) {
		return Policy{}, fmt.Errorf("broker: import: operator policy %q in vhost %q: %s", p.Name, p.VHost, what)
	}
	m, ok := p.Value.(map[string]any)
	if !ok {
		return bad("value is not an object")
	}
	op := Policy{VHost: p.VHost, Name: p.Name, Operator: true, ApplyTo: ApplyToAll, Definition: map[string]any{}}
	if s, ok := m["pattern"].(string); ok {
		op.Pattern = s
	}
	if s, ok := m["apply-to"].(string); ok {
		op.ApplyTo = s
	}
	if v, ok := m["priority"]; ok {
		n, isInt := policyInt(normalizeValue(v))
		if !isInt {
			return bad("priority is not an integer")
		}
		op.Priority = int(n)
	}
	switch def := m["definition"].(type) {
	case map[string]any:
		for k, v := range def {
			op.Definition[k] = normalizeValue(v)
		}
	case []any:
		for _, e := range def {
			pair, ok := e.([]any)
			if !ok || len(pair) != 2 {
				return bad("definition is not a list of [key, value] pairs")
			}
			k, ok := pair[0].(string)
			if !ok {
				return bad("definition is not a list of [key, value] pairs")
			}
			op.Definition[k] = normalizeValue(pair[1])
		}
	default:
		return bad("no definition")
	}
	if err := op.Validate(); err != nil {
		return Policy{}, fmt.Errorf("broker: import: operator policy %q in vhost %q: %w", p.Name, p.VHost, err)
	}
	return op, nil
}

// putUser creates or replaces a user (import).
func (s *Server) putUser(ctx context.Context, u User) error {
	s.adminMu.Lock()
	defer s.adminMu.Unlock()
	if err := s.defs.PutUser(ctx, u); err != nil {
		return err
	}
	s.authMu.Lock()
	s.users[u.Name] = u
	s.authMu.Unlock()
	return nil
}
