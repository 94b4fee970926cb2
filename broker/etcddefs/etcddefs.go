// Package etcddefs keeps the broker's definitions (users, vhosts,
// permissions, durable exchanges, queues and bindings, policies) in etcd, through
// etcd's client API, so that the same code serves the embedded member and
// an external etcd cluster, and several controllers see one set of
// definitions.
//
// Layout, under a prefix (default "/substrate/broker/"), each name
// path-escaped so that vhost "/" and names with '/' stay one component:
//
//	users/NAME                     JSON user
//	vhosts/NAME                    JSON vhost
//	permissions/VHOST/USER         JSON permission
//	exchanges/VHOST/NAME           JSON exchange
//	queues/VHOST/NAME              JSON queue
//	bindings/VHOST/SHA256(key)     JSON binding
//	policies/VHOST/NAME            JSON policy (RabbitMQ's shape)
//	operator-policies/VHOST/NAME   JSON operator policy
//
// Arguments are stored as AMQP field tables (base64 in the JSON), so their
// AMQP types survive a restart. A delete and its cascade are one etcd
// transaction.
//
// Under substrate serve the prefix is kvstore.ReservedPrefix, which no
// client of the etcd client port can read or write, and the store talks
// to the member in process (kvstore.Store.KV). A record that does not
// decode (bad JSON, bad arguments, a permission whose regular expression
// does not compile) is logged with its key and left out of Load: one bad
// record never stops the broker from starting.
package etcddefs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"

	"substrate/broker"
	"substrate/broker/amqp"
)

// DefaultPrefix is where definitions live unless told otherwise.
const DefaultPrefix = "/substrate/broker/"

// Store implements broker.Definitions on etcd.
type Store struct {
	c      clientv3.KV
	prefix string
	log    *slog.Logger

	mu     sync.Mutex
	warned map[string]int64 // bad record key -> mod revision already logged
}

// New returns a store using c (a *clientv3.Client, or the embedded
// member's kvstore.Store.KV) under prefix ("" = DefaultPrefix). The
// caller owns c.
func New(c clientv3.KV, prefix string) *Store {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return &Store{c: c, prefix: prefix, log: slog.New(slog.DiscardHandler)}
}

// WithLogger sets where records that do not decode are reported.
func (s *Store) WithLogger(log *slog.Logger) *Store {
	if log != nil {
		s.log = log
	}
	return s
}

var _ broker.Definitions = (*Store)(nil)

func (s *Store) key(kind string, parts ...string) string {
	var b strings.Builder
	b.WriteString(s.prefix)
	b.WriteString(kind)
	for _, p := range parts {
		b.WriteByte('/')
		b.WriteString(url.PathEscape(p))
	}
	return b.String()
}

// stored forms: arguments as AMQP tables.
type exchangeJSON struct {
	broker.ExchangeDef
	Arguments []byte `json:"arguments"`
}
type queueJSON struct {
	broker.QueueDef
	Arguments []byte `json:"arguments"`
}
type bindingJSON struct {
	broker.BindingDef
	Arguments []byte `json:"arguments"`
}

func encodeArgs(args map[string]any) ([]byte, error) {
	if len(args) == 0 {
		return nil, nil
	}
	return amqp.AppendTable(nil, amqp.Table(args))
}

func decodeArgs(b []byte) (map[string]any, error) {
	if len(b) == 0 {
		return nil, nil
	}
	t, _, err := amqp.ReadTable(b)
	if err != nil {
		return nil, err
	}
	return map[string]any(t), nil
}

func (s *Store) put(ctx context.Context, key string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("etcddefs: %s: %w", key, err)
	}
	if _, err := s.c.Put(ctx, key, string(data)); err != nil {
		return fmt.Errorf("etcddefs: put %s: %w", key, err)
	}
	return nil
}

// deleteAll deletes keys and prefixes in one transaction.
func (s *Store) deleteAll(ctx context.Context, keys []string, prefixes []string) error {
	var ops []clientv3.Op
	for _, k := range keys {
		ops = append(ops, clientv3.OpDelete(k))
	}
	for _, p := range prefixes {
		ops = append(ops, clientv3.OpDelete(p, clientv3.WithPrefix()))
	}
	if _, err := s.c.Txn(ctx).Then(ops...).Commit(); err != nil {
		return fmt.Errorf("etcddefs: delete: %w", err)
	}
	return nil
}

// list returns the values under kind/parts.../.
func (s *Store) list(ctx context.Context, kind string, parts ...string) ([][]byte, []string, error) {
	r, err := s.listRecords(ctx, kind, parts...)
	return r.vals, r.keys, err
}

func (s *Store) listRecords(ctx context.Context, kind string, parts ...string) (records, error) {
	p := s.key(kind, parts...) + "/"
	resp, err := s.c.Get(ctx, p, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return records{}, fmt.Errorf("etcddefs: list %s: %w", p, err)
	}
	r := records{make([][]byte, len(resp.Kvs)), make([]string, len(resp.Kvs)), make([]int64, len(resp.Kvs))}
	for i, kv := range resp.Kvs {
		r.vals[i], r.keys[i], r.revs[i] = kv.Value, string(kv.Key), kv.ModRevision
	}
	return r, nil
}

// skip logs a record that does not decode, once per version of it (Load
// runs more than once at start).
func (s *Store) skip(key string, rev int64, err error) {
	s.mu.Lock()
	seen := s.warned[key] == rev
	if !seen {
		if s.warned == nil {
			s.warned = make(map[string]int64)
		}
		s.warned[key] = rev
	}
	s.mu.Unlock()
	if !seen {
		s.log.Warn("skipping a broker definition that does not decode", "key", key, "err", err)
	}
}

// decodeAll decodes each record; one that does not decode, or that conv
// rejects, is logged with its key and skipped.
func decodeAll[T any](s *Store, rec records, conv func(*T) error) []T {
	out := make([]T, 0, len(rec.vals))
	for i, v := range rec.vals {
		var x T
		err := json.Unmarshal(v, &x)
		if err == nil && conv != nil {
			err = conv(&x)
		}
		if err != nil {
			s.skip(rec.keys[i], rec.revs[i], err)
			continue
		}
		out = append(out, x)
	}
	return out
}

type records struct {
	vals [][]byte
	keys []string
	revs []int64
}

// Load implements broker.Definitions.
func (s *Store) Load(ctx context.Context) (*broker.DefinitionSet, error) {
	var set broker.DefinitionSet
	var err error
	get := func(kind string) records {
		if err != nil {
			return records{}
		}
		var r records
		r, err = s.listRecords(ctx, kind)
		return r
	}
	users, vhosts, perms := get("users"), get("vhosts"), get("permissions")
	exs, qs, bs := get("exchanges"), get("queues"), get("bindings")
	pols, opPols := get("policies"), get("operator-policies")
	if err != nil {
		return nil, err
	}
	set.Users = decodeAll[broker.User](s, users, nil)
	set.VHosts = decodeAll[broker.VHost](s, vhosts, nil)
	set.Permissions = decodeAll(s, perms, func(p *broker.Permission) error { return p.Validate() })
	for _, e := range decodeAll(s, exs, func(e *exchangeJSON) (err error) { e.ExchangeDef.Arguments, err = decodeArgs(e.Arguments); return }) {
		set.Exchanges = append(set.Exchanges, e.ExchangeDef)
	}
	for _, q := range decodeAll(s, qs, func(q *queueJSON) (err error) { q.QueueDef.Arguments, err = decodeArgs(q.Arguments); return }) {
		set.Queues = append(set.Queues, q.QueueDef)
	}
	for _, b := range decodeAll(s, bs, func(b *bindingJSON) (err error) { b.BindingDef.Arguments, err = decodeArgs(b.Arguments); return }) {
		set.Bindings = append(set.Bindings, b.BindingDef)
	}
	set.Policies = decodeAll[broker.Policy](s, pols, nil)
	set.Policies = append(set.Policies, decodeAll(s, opPols, func(p *broker.Policy) error { p.Operator = true; return nil })...)
	return &set, nil
}

// PutUser implements broker.Definitions.
func (s *Store) PutUser(ctx context.Context, u broker.User) error {
	return s.put(ctx, s.key("users", u.Name), u)
}

// DeleteUser implements broker.Definitions; the user's permissions go too.
func (s *Store) DeleteUser(ctx context.Context, name string) error {
	vals, keys, err := s.list(ctx, "permissions")
	if err != nil {
		return err
	}
	del := []string{s.key("users", name)}
	for i, v := range vals {
		var p broker.Permission
		if json.Unmarshal(v, &p) == nil && p.User == name {
			del = append(del, keys[i])
		}
	}
	return s.deleteAll(ctx, del, nil)
}

// PutVHost implements broker.Definitions.
func (s *Store) PutVHost(ctx context.Context, v broker.VHost) error {
	return s.put(ctx, s.key("vhosts", v.Name), v)
}

// DeleteVHost implements broker.Definitions; everything in it goes too.
func (s *Store) DeleteVHost(ctx context.Context, name string) error {
	var prefixes []string
	for _, kind := range []string{"permissions", "exchanges", "queues", "bindings", "policies", "operator-policies"} {
		prefixes = append(prefixes, s.key(kind, name)+"/")
	}
	return s.deleteAll(ctx, []string{s.key("vhosts", name)}, prefixes)
}

// PutPermission implements broker.Definitions.
func (s *Store) PutPermission(ctx context.Context, p broker.Permission) error {
	return s.put(ctx, s.key("permissions", p.VHost, p.User), p)
}

// DeletePermission implements broker.Definitions.
func (s *Store) DeletePermission(ctx context.Context, user, vhost string) error {
	return s.deleteAll(ctx, []string{s.key("permissions", vhost, user)}, nil)
}

// PutExchange implements broker.Definitions.
func (s *Store) PutExchange(ctx context.Context, e broker.ExchangeDef) error {
	args, err := encodeArgs(e.Arguments)
	if err != nil {
		return fmt.Errorf("etcddefs: exchange %q arguments: %w", e.Name, err)
	}
	return s.put(ctx, s.key("exchanges", e.VHost, e.Name), exchangeJSON{e, args})
}

// DeleteExchange implements broker.Definitions; bindings from or to the
// exchange go too.
func (s *Store) DeleteExchange(ctx context.Context, vhost, name string) error {
	return s.deleteWithBindings(ctx, s.key("exchanges", vhost, name), vhost, func(b broker.BindingDef) bool {
		return b.Source == name || b.DestinationType == "exchange" && b.Destination == name
	})
}

// PutQueue implements broker.Definitions.
func (s *Store) PutQueue(ctx context.Context, q broker.QueueDef) error {
	args, err := encodeArgs(q.Arguments)
	if err != nil {
		return fmt.Errorf("etcddefs: queue %q arguments: %w", q.Name, err)
	}
	return s.put(ctx, s.key("queues", q.VHost, q.Name), queueJSON{q, args})
}

// DeleteQueue implements broker.Definitions; bindings to the queue go too.
func (s *Store) DeleteQueue(ctx context.Context, vhost, name string) error {
	return s.deleteWithBindings(ctx, s.key("queues", vhost, name), vhost, func(b broker.BindingDef) bool {
		return b.DestinationType == "queue" && b.Destination == name
	})
}

func (s *Store) deleteWithBindings(ctx context.Context, key, vhost string, match func(broker.BindingDef) bool) error {
	vals, keys, err := s.list(ctx, "bindings", vhost)
	if err != nil {
		return err
	}
	del := []string{key}
	for i, v := range vals {
		var b bindingJSON // arguments are not needed to match
		if json.Unmarshal(v, &b) == nil && match(b.BindingDef) {
			del = append(del, keys[i])
		}
	}
	return s.deleteAll(ctx, del, nil)
}

func (s *Store) bindingKey(b broker.BindingDef) string {
	sum := sha256.Sum256([]byte(b.Key()))
	return s.key("bindings", b.VHost, hex.EncodeToString(sum[:16]))
}

// PutBinding implements broker.Definitions.
func (s *Store) PutBinding(ctx context.Context, b broker.BindingDef) error {
	args, err := encodeArgs(b.Arguments)
	if err != nil {
		return fmt.Errorf("etcddefs: binding arguments: %w", err)
	}
	return s.put(ctx, s.bindingKey(b), bindingJSON{b, args})
}

// DeleteBinding implements broker.Definitions.
func (s *Store) DeleteBinding(ctx context.Context, b broker.BindingDef) error {
	return s.deleteAll(ctx, []string{s.bindingKey(b)}, nil)
}

func policyKind(operator bool) string {
	if operator {
		return "operator-policies"
	}
	return "policies"
}

// PutPolicy implements broker.Definitions.
func (s *Store) PutPolicy(ctx context.Context, p broker.Policy) error {
	return s.put(ctx, s.key(policyKind(p.Operator), p.VHost, p.Name), p)
}

// DeletePolicy implements broker.Definitions.
func (s *Store) DeletePolicy(ctx context.Context, vhost, name string, operator bool) error {
	return s.deleteAll(ctx, []string{s.key(policyKind(operator), vhost, name)}, nil)
}
