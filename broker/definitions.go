package broker

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"regexp"
	"sort"
	"sync"
)

// Definitions is where the broker keeps what must survive a restart and,
// once several controllers share one etcd cluster, be seen by every node:
// users, vhosts, permissions, and the durable exchanges, queues and
// bindings. Transient entities (oslo's reply and fanout queues) never come
// here. Implementations: MemDefinitions (tests, and a broker without etcd)
// and broker/etcddefs (the embedded or an external etcd).
//
// Put replaces the entity with the same key; Delete of a missing entity is
// not an error. Calls may block on the network: callers must not hold a
// queue's or exchange's lock while calling.
type Definitions interface {
	// Load returns every stored definition.
	Load(ctx context.Context) (*DefinitionSet, error)

	PutUser(ctx context.Context, u User) error
	DeleteUser(ctx context.Context, name string) error // and the user's permissions
	PutVHost(ctx context.Context, v VHost) error
	DeleteVHost(ctx context.Context, name string) error // and everything in it
	PutPermission(ctx context.Context, p Permission) error
	DeletePermission(ctx context.Context, user, vhost string) error

	PutExchange(ctx context.Context, e ExchangeDef) error
	DeleteExchange(ctx context.Context, vhost, name string) error // and bindings from or to it
	PutQueue(ctx context.Context, q QueueDef) error
	DeleteQueue(ctx context.Context, vhost, name string) error // and bindings to it
	PutBinding(ctx context.Context, b BindingDef) error
	DeleteBinding(ctx context.Context, b BindingDef) error

	// PutPolicy stores a policy, or an operator policy (p.Operator):
	// the two are apart, a name may be used by one of each.
	PutPolicy(ctx context.Context, p Policy) error
	DeletePolicy(ctx context.Context, vhost, name string, operator bool) error
}

// DefinitionSet is everything Definitions holds, each list sorted by key.
type DefinitionSet struct {
	Users       []User
	VHosts      []VHost
	Permissions []Permission
	Exchanges   []ExchangeDef
	Queues      []QueueDef
	Bindings    []BindingDef
	Policies    []Policy // policies, then operator policies (Operator set)
}

// User is a broker user. PasswordHash is RabbitMQ's
// rabbit_password_hashing_sha256 format: a 4-byte salt followed by
// SHA-256(salt ++ password), so definitions exported by rabbitmqctl carry
// over. An empty hash means the user cannot log in with a password.
type User struct {
	Name         string   `json:"name"`
	PasswordHash []byte   `json:"password_hash"`
	Tags         []string `json:"tags"` // administrator, monitoring, management, policymaker
}

// HashPassword returns a salted hash of password in User.PasswordHash's
// format.
func HashPassword(password string) []byte {
	salt := make([]byte, 4)
	if _, err := rand.Read(salt); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return hashWithSalt(salt, password)
}

func hashWithSalt(salt []byte, password string) []byte {
	h := sha256.New()
	h.Write(salt)
	h.Write([]byte(password))
	return h.Sum(append([]byte(nil), salt...))
}

// CheckPassword reports whether password matches the user's hash, in
// constant time.
// A hash imported from RabbitMQ's definitions may also be
// rabbit_password_hashing_sha512's or _md5's (the same salted scheme);
// its length tells which.
func (u User) CheckPassword(password string) bool {
	h := hashFor(len(u.PasswordHash))
	if h == nil {
		return false
	}
	h.Write(u.PasswordHash[:4])
	h.Write([]byte(password))
	want := h.Sum(append([]byte(nil), u.PasswordHash[:4]...))
	return subtle.ConstantTimeCompare(want, u.PasswordHash) == 1
}

// RabbitMQ's password hashing algorithms, as definitions name them.
const (
	HashSHA256 = "rabbit_password_hashing_sha256"
	HashSHA512 = "rabbit_password_hashing_sha512"
	HashMD5    = "rabbit_password_hashing_md5"
)

// hashLen is the length of a salted hash of each algorithm.
var hashLen = map[string]int{HashSHA256: 4 + sha256.Size, HashSHA512: 4 + sha512.Size, HashMD5: 4 + md5.Size}

func hashFor(n int) hash.Hash {
	switch n {
	case 4 + sha256.Size:
		return sha256.New()
	case 4 + sha512.Size:
		return sha512.New()
	case 4 + md5.Size:
		return md5.New()
	}
	return nil
}

// HashingAlgorithm names the algorithm of the user's hash as RabbitMQ's
// definitions do (HashSHA256 for a user without a password).
func (u User) HashingAlgorithm() string {
	for name, n := range hashLen {
		if n == len(u.PasswordHash) {
			return name
		}
	}
	return HashSHA256
}

// EncodedHash is the hash as RabbitMQ's definitions JSON writes it
// (base64).
func (u User) EncodedHash() string { return base64.StdEncoding.EncodeToString(u.PasswordHash) }

// HasTag reports whether the user carries tag.
func (u User) HasTag(tag string) bool {
	for _, t := range u.Tags {
		if t == tag {
			return true
		}
	}
	return false
}

// VHost is a virtual host.
type VHost struct {
	Name string `json:"name"`
	// Limits are RabbitMQ's vhost limits, as `rabbitmqctl
	// set_vhost_limits` writes them: LimitMaxConnections and
	// LimitMaxQueues; a missing or negative one is no limit.
	Limits VHostLimits `json:"limits,omitempty"`
}

// VHostLimits maps a limit's name to its value.
type VHostLimits map[string]int64

// RabbitMQ's vhost limit names.
const (
	LimitMaxConnections = "max-connections"
	LimitMaxQueues      = "max-queues"
)

// get returns the named limit, -1 if none.
func (l VHostLimits) get(name string) int64 {
	if v, ok := l[name]; ok && v >= 0 {
		return v
	}
	return -1
}

// Validate reports a limit RabbitMQ does not know, as
// rabbit_vhost_limit's validation does.
func (l VHostLimits) Validate() error {
	var unknown []string
	for k := range l {
		if k != LimitMaxConnections && k != LimitMaxQueues {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return fmt.Errorf("broker: unrecognised terms %q in limits", unknown)
	}
	return nil
}

func (l VHostLimits) clone() VHostLimits {
	if len(l) == 0 {
		return nil
	}
	out := make(VHostLimits, len(l))
	for k, v := range l {
		out[k] = v
	}
	return out
}

// Permission grants a user configure, write and read rights in a vhost, as
// regular expressions over resource names, matched as RabbitMQ's re:run
// does: unanchored (anchor with ^ and $ to match whole names), "" matches
// nothing. The syntax is Go's RE2, which covers what operators write.
type Permission struct {
	User      string `json:"user"`
	VHost     string `json:"vhost"`
	Configure string `json:"configure"`
	Write     string `json:"write"`
	Read      string `json:"read"`
}

// Validate reports a regular expression that does not compile, naming the
// field. Definitions' Load leaves such a record out (with a warning)
// rather than failing the broker's start.
func (p Permission) Validate() error {
	for _, f := range []struct{ name, re string }{{"configure", p.Configure}, {"write", p.Write}, {"read", p.Read}} {
		if _, err := regexp.Compile(f.re); err != nil {
			return fmt.Errorf("broker: permission for %q on %q: %s: %w", p.User, p.VHost, f.name, err)
		}
	}
	return nil
}

// ExchangeDef is a durable exchange.
type ExchangeDef struct {
	VHost      string         `json:"vhost"`
	Name       string         `json:"name"`
	Type       string         `json:"type"` // direct, fanout, topic, headers
	Durable    bool           `json:"durable"`
	AutoDelete bool           `json:"auto_delete"`
	Internal   bool           `json:"internal"`
	Arguments  map[string]any `json:"arguments"`
}

// QueueDef is a durable queue.
type QueueDef struct {
	VHost      string         `json:"vhost"`
	Name       string         `json:"name"`
	Durable    bool           `json:"durable"`
	AutoDelete bool           `json:"auto_delete"`
	Arguments  map[string]any `json:"arguments"`
}

// BindingDef binds a queue (DestinationType "queue") or an exchange
// ("exchange") to a source exchange.
type BindingDef struct {
	VHost           string         `json:"vhost"`
	Source          string         `json:"source"`
	Destination     string         `json:"destination"`
	DestinationType string         `json:"destination_type"`
	RoutingKey      string         `json:"routing_key"`
	Arguments       map[string]any `json:"arguments"`
}

// Key identifies the binding (RabbitMQ's "properties key" plus source,
// destination and type). Arguments are part of a binding's identity.
func (b BindingDef) Key() string {
	return b.VHost + "\x00" + b.Source + "\x00" + b.DestinationType + "\x00" + b.Destination + "\x00" + b.RoutingKey + "\x00" + argsKey(b.Arguments)
}

// argsKey renders arguments deterministically for use in keys.
func argsKey(args map[string]any) string {
	if len(args) == 0 {
		return ""
	}
	keys := make([]string, 0, len(args))
	for k := range args {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b bytes.Buffer
	for _, k := range keys {
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(stringify(args[k]))
		b.WriteByte(';')
	}
	return b.String()
}

// ErrNotFound is returned by lookups of entities that do not exist.
var ErrNotFound = errors.New("broker: not found")

// MemDefinitions keeps definitions in memory: for tests, and for a broker
// run without a kvstore. Safe for concurrent use.
type MemDefinitions struct {
	mu          sync.Mutex
	users       map[string]User
	vhosts      map[string]VHost
	permissions map[string]Permission
	exchanges   map[string]ExchangeDef
	queues      map[string]QueueDef
	bindings    map[string]BindingDef
	policies    map[string]Policy // by policyKey
}

// NewMemDefinitions returns an empty store.
func NewMemDefinitions() *MemDefinitions {
	return &MemDefinitions{
		users: map[string]User{}, vhosts: map[string]VHost{}, permissions: map[string]Permission{},
		exchanges: map[string]ExchangeDef{}, queues: map[string]QueueDef{}, bindings: map[string]BindingDef{},
		policies: map[string]Policy{},
	}
}

// policyKey orders policies before operator policies, then by vhost and
// name.
func policyKey(vhost, name string, operator bool) string {
	if operator {
		return "1" + vkey(vhost, name)
	}
	return "0" + vkey(vhost, name)
}

func vkey(vhost, name string) string { return vhost + "\x00" + name }

// Load implements Definitions.
func (m *MemDefinitions) Load(context.Context) (*DefinitionSet, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return &DefinitionSet{
		Users: sortedValues(m.users), VHosts: sortedValues(m.vhosts), Permissions: sortedValues(m.permissions),
		Exchanges: sortedValues(m.exchanges), Queues: sortedValues(m.queues), Bindings: sortedValues(m.bindings),
		Policies: sortedValues(m.policies),
	}, nil
}

func sortedValues[V any](m map[string]V) []V {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]V, len(keys))
	for i, k := range keys {
		out[i] = m[k]
	}
	return out
}

func (m *MemDefinitions) do(f func()) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	f()
	return nil
}

// PutUser implements Definitions.
func (m *MemDefinitions) PutUser(_ context.Context, u User) error {
	return m.do(func() { m.users[u.Name] = u })
}

// DeleteUser implements Definitions.
func (m *MemDefinitions) DeleteUser(_ context.Context, name string) error {
	return m.do(func() {
		delete(m.users, name)
		for k, p := range m.permissions {
			if p.User == name {
				delete(m.permissions, k)
			}
		}
	})
}

// PutVHost implements Definitions.
func (m *MemDefinitions) PutVHost(_ context.Context, v VHost) error {
	v.Limits = v.Limits.clone()
	return m.do(func() { m.vhosts[v.Name] = v })
}

// DeleteVHost implements Definitions.
func (m *MemDefinitions) DeleteVHost(_ context.Context, name string) error {
	return m.do(func() {
		delete(m.vhosts, name)
		for k, p := range m.permissions {
			if p.VHost == name {
				delete(m.permissions, k)
			}
		}
		for k, e := range m.exchanges {
			if e.VHost == name {
				delete(m.exchanges, k)
			}
		}
		for k, q := range m.queues {
			if q.VHost == name {
				delete(m.queues, k)
			}
		}
		for k, b := range m.bindings {
			if b.VHost == name {
				delete(m.bindings, k)
			}
		}
		for k, p := range m.policies {
			if p.VHost == name {
				delete(m.policies, k)
			}
		}
	})
}

// PutPermission implements Definitions.
func (m *MemDefinitions) PutPermission(_ context.Context, p Permission) error {
	return m.do(func() { m.permissions[vkey(p.VHost, p.User)] = p })
}

// DeletePermission implements Definitions.
func (m *MemDefinitions) DeletePermission(_ context.Context, user, vhost string) error {
	return m.do(func() { delete(m.permissions, vkey(vhost, user)) })
}

// PutExchange implements Definitions.
func (m *MemDefinitions) PutExchange(_ context.Context, e ExchangeDef) error {
	return m.do(func() { m.exchanges[vkey(e.VHost, e.Name)] = e })
}

// DeleteExchange implements Definitions.
func (m *MemDefinitions) DeleteExchange(_ context.Context, vhost, name string) error {
	return m.do(func() {
		delete(m.exchanges, vkey(vhost, name))
		for k, b := range m.bindings {
			if b.VHost == vhost && (b.Source == name || b.DestinationType == "exchange" && b.Destination == name) {
				delete(m.bindings, k)
			}
		}
	})
}

// PutQueue implements Definitions.
func (m *MemDefinitions) PutQueue(_ context.Context, q QueueDef) error {
	return m.do(func() { m.queues[vkey(q.VHost, q.Name)] = q })
}

// DeleteQueue implements Definitions.
func (m *MemDefinitions) DeleteQueue(_ context.Context, vhost, name string) error {
	return m.do(func() {
		delete(m.queues, vkey(vhost, name))
		for k, b := range m.bindings {
			if b.VHost == vhost && b.DestinationType == "queue" && b.Destination == name {
				delete(m.bindings, k)
			}
		}
	})
}

// PutBinding implements Definitions.
func (m *MemDefinitions) PutBinding(_ context.Context, b BindingDef) error {
	return m.do(func() { m.bindings[b.Key()] = b })
}

// DeleteBinding implements Definitions.
func (m *MemDefinitions) DeleteBinding(_ context.Context, b BindingDef) error {
	return m.do(func() { delete(m.bindings, b.Key()) })
}

// PutPolicy implements Definitions.
func (m *MemDefinitions) PutPolicy(_ context.Context, p Policy) error {
	p = clonePolicy(p)
	return m.do(func() { m.policies[policyKey(p.VHost, p.Name, p.Operator)] = p })
}

// DeletePolicy implements Definitions.
func (m *MemDefinitions) DeletePolicy(_ context.Context, vhost, name string, operator bool) error {
	return m.do(func() { delete(m.policies, policyKey(vhost, name, operator)) })
}

// stringify renders an argument value deterministically (fmt prints maps
// sorted by key) with its type, so 1 and "1" differ.
func stringify(v any) string { return fmt.Sprintf("%T:%v", v, v) }

// DefaultUser is the user RabbitMQ creates on first boot; like RabbitMQ's
// loopback_users default, it may log in only from a loopback address.
const DefaultUser = "guest"

// EnsureDefaults gives a store with no users and no vhosts what RabbitMQ
// creates on its first boot: vhost "/", and user guest (password guest,
// tag administrator) with all permissions on it. A store that has any user
// or vhost is left alone, so an operator's deletions stick.
func EnsureDefaults(ctx context.Context, d Definitions) error {
	set, err := d.Load(ctx)
	if err != nil {
		return err
	}
	if len(set.Users) > 0 || len(set.VHosts) > 0 {
		return nil
	}
	if err := d.PutVHost(ctx, VHost{Name: "/"}); err != nil {
		return err
	}
	if err := d.PutUser(ctx, User{Name: DefaultUser, PasswordHash: HashPassword("guest"), Tags: []string{"administrator"}}); err != nil {
		return err
	}
	return d.PutPermission(ctx, Permission{User: DefaultUser, VHost: "/", Configure: ".*", Write: ".*", Read: ".*"})
}
