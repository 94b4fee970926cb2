package broker

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"time"
	"unsafe"

	"substrate/broker/amqp"
)

// The administration API: vhosts and their limits, and the listings
// (queues, exchanges, bindings, connections) behind `substrate ctl` and
// the management API. Users and permissions are in auth.go.

// ErrExists is returned when creating a user or vhost that exists.
var ErrExists = errors.New("broker: already exists")

// AddVHost creates a vhost with its predefined exchanges.
func (s *Server) AddVHost(ctx context.Context, name string) error {
	if name == "" {
		return errors.New("broker: empty vhost name")
	}
	s.adminMu.Lock()
	defer s.adminMu.Unlock()
	if s.vhost(name) != nil {
		return fmt.Errorf("broker: vhost %q: %w", name, ErrExists)
	}
	if err := s.defs.PutVHost(ctx, VHost{Name: name}); err != nil {
		return err
	}
	s.vhMu.Lock()
	s.vhosts[name] = newVHost(s, name)
	s.vhMu.Unlock()
	return nil
}

// DeleteVHost deletes a vhost with everything in it, closing its
// connections with 320 "CONNECTION_FORCED - vhost 'v' is deleted".
func (s *Server) DeleteVHost(ctx context.Context, name string) error {
	s.adminMu.Lock()
	vh := s.vhost(name)
	if vh == nil {
		s.adminMu.Unlock()
		return fmt.Errorf("broker: vhost %q: %w", name, ErrNotFound)
	}
	if err := s.defs.DeleteVHost(ctx, name); err != nil {
		s.adminMu.Unlock()
		return err
	}
	s.vhMu.Lock()
	delete(s.vhosts, name)
	s.vhMu.Unlock()
	s.connMu.Lock()
	delete(s.retiredVH, vh)
	s.connMu.Unlock()
	s.authMu.Lock()
	for k, p := range s.perms {
		if p.p.VHost == name {
			delete(s.perms, k)
		}
	}
	s.authMu.Unlock()
	s.permGen.Add(1)
	s.adminMu.Unlock()
	for _, c := range s.connections() {
		if c.vhostName() == name {
			c.forceClose(amqp.ConnectionForced, fmt.Sprintf("CONNECTION_FORCED - vhost '%s' is deleted", name), time.Second)
		}
	}
	vh.destroy()
	return nil
}

// VHosts lists the vhost names, sorted.
func (s *Server) VHosts() []string {
	s.vhMu.RLock()
	names := slices.Collect(maps.Keys(s.vhosts))
	s.vhMu.RUnlock()
	return listing(names, same, cmp.Compare[string])
}

// SetVHostLimits replaces a vhost's limits, as `rabbitmqctl
// set_vhost_limits` does (keys LimitMaxConnections, LimitMaxQueues;
// negative means no limit). Open connections and existing queues stay:
// the limits apply to the next connection.open and queue.declare.
func (s *Server) SetVHostLimits(ctx context.Context, vhost string, l VHostLimits) error {
	if err := l.Validate(); err != nil {
		return err
	}
	s.adminMu.Lock()
	defer s.adminMu.Unlock()
	vh := s.vhost(vhost)
	if vh == nil {
		return fmt.Errorf("broker: vhost %q: %w", vhost, ErrNotFound)
	}
	l = l.clone()
	if err := s.defs.PutVHost(ctx, VHost{Name: vhost, Limits: l}); err != nil {
		return err
	}
	vh.limits = l
	vh.setLimits(l)
	return nil
}

// ClearVHostLimits removes a vhost's limits (rabbitmqctl
// clear_vhost_limits).
func (s *Server) ClearVHostLimits(ctx context.Context, vhost string) error {
	return s.SetVHostLimits(ctx, vhost, nil)
}

// VHostLimits returns each vhost's limits (only vhosts that have some),
// for rabbitmqctl list_vhost_limits.
func (s *Server) VHostLimits() map[string]VHostLimits {
	s.adminMu.Lock()
	defer s.adminMu.Unlock()
	out := map[string]VHostLimits{}
	s.vhMu.RLock()
	defer s.vhMu.RUnlock()
	for n, vh := range s.vhosts {
		if len(vh.limits) > 0 {
			out[n] = vh.limits.clone()
		}
	}
	return out
}

// ---- listings ----

// listing is the shape of every list method: objs is a snapshot taken
// under the lock that guards the collection (a vhost's maps, the server's
// connections, a connection's channels); describe runs on each without
// that lock, taking the object's own, and leaves out those it returns
// false for (gone meanwhile, not open yet); the result is sorted by cmp
// (nil: the caller sorts).
func listing[T, I any](objs []T, describe func(T) (I, bool), cmp func(a, b I) int) []I {
	out := make([]I, 0, len(objs))
	for _, o := range objs {
		if i, ok := describe(o); ok {
			out = append(out, i)
		}
	}
	if cmp != nil {
		slices.SortFunc(out, cmp)
	}
	return out
}

// same is describe for objects already described in the snapshot.
func same[T any](v T) (T, bool) { return v, true }

func byName[I interface{ name() string }](a, b I) int { return cmp.Compare(a.name(), b.name()) }

func (i QueueInfo) name() string      { return i.Name }
func (i ExchangeInfo) name() string   { return i.Name }
func (i ConnectionInfo) name() string { return i.Name }

// vhostList returns the vhosts.
func (s *Server) vhostList() []*vhost {
	s.vhMu.RLock()
	defer s.vhMu.RUnlock()
	return slices.Collect(maps.Values(s.vhosts))
}

// queueList returns the vhost's queues.
func (vh *vhost) queueList() []*Queue {
	vh.mu.RLock()
	defer vh.mu.RUnlock()
	return slices.Collect(maps.Values(vh.queues))
}

// channelList returns the connection's channels (the reader may open or
// close channels meanwhile: conn.mu).
func (c *conn) channelList() []*channel {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Collect(maps.Values(c.channels))
}

// consumerList returns the connection's consumers.
func (c *conn) consumerList() []*consumer {
	c.consMu.Lock()
	defer c.consMu.Unlock()
	return slices.Clone(c.consumers)
}

// ---- queues ----

// QueueInfo describes a queue for the admin API (rabbitmqctl
// list_queues, /api/queues, rabbitmq_prometheus's per-queue metrics).
type QueueInfo struct {
	Name                   string
	VHost                  string
	Durable                bool
	AutoDelete             bool
	Exclusive              bool
	Owner                  string // the owning connection's name (exclusive queues), else ""
	Type                   string // x-queue-type: "classic" (also when absent) or "quorum"
	State                  string // "running"
	Arguments              map[string]any
	Policy                 string         // the policy that applies, "" if none (set by the policy code)
	OperatorPolicy         string         // the operator policy that applies, "" if none
	EffectivePolicy        map[string]any // the definition in effect (effective_policy_definition); nil if none
	Messages               int            // ready + unacknowledged
	MessagesReady          int
	MessagesUnacknowledged int
	MessagesPersistent     int // kept in the message store (persistent messages of durable queues)
	// Body bytes of the messages, as RabbitMQ's message_bytes*.
	MessageBytes               int64
	MessageBytesReady          int64
	MessageBytesUnacknowledged int64
	MessageBytesPersistent     int64
	MessageBytesRAM            int64 // ready ones not paged out, and the unacknowledged
	Consumers                  int
	ActiveConsumers            int       // consumers that get messages (1 with x-single-active-consumer)
	SingleActiveConsumerTag    string    // x-single-active-consumer: the active consumer's tag
	ExclusiveConsumerTag       string    // the tag of an exclusive consumer (basic.consume exclusive=true)
	MemoryBytes                int64     // approximate: bodies in memory and per-message bookkeeping
	IdleSince                  time.Time // last publish, get, ack or consume
	MessageStats               MessageStats
}

// entryCost is a ready message's bookkeeping in memory, beyond its body.
const entryCost = int64(unsafe.Sizeof(entry{}))

// Info returns the queue's description and counters.
func (q *Queue) Info() QueueInfo {
	q.mu.Lock()
	defer q.unlock()
	q.dropExpiredLocked(time.Now().UnixNano())
	ready, readyBytes := q.msgs.len(), q.msgs.bytes()
	pers, persBytes := q.msgs.persistent()
	ram := q.msgs.resident() + q.unackedBytes
	active := len(q.consumers)
	var sacTag, exclTag string
	if q.sac {
		active = 0
		if q.active != nil {
			active, sacTag = 1, q.active.tag
		}
	}
	if q.exclusiveConsumer && len(q.consumers) > 0 {
		exclTag = q.consumers[0].tag
	}
	info := QueueInfo{Name: q.name, VHost: q.vh.name, Durable: q.durable, AutoDelete: q.autoDelete, Exclusive: q.exclusive,
		Type: queueType(q.args), State: "running", Arguments: copyArgs(q.args),
		Messages: ready + q.unacked, MessagesReady: ready, MessagesUnacknowledged: q.unacked,
		MessagesPersistent:         pers + int(q.unackedPers),
		MessageBytes:               readyBytes + q.unackedBytes,
		MessageBytesReady:          readyBytes,
		MessageBytesUnacknowledged: q.unackedBytes,
		MessageBytesPersistent:     persBytes + q.unackedPersLen,
		MessageBytesRAM:            ram,
		Consumers:                  len(q.consumers), ActiveConsumers: active,
		SingleActiveConsumerTag: sacTag, ExclusiveConsumerTag: exclTag,
		MemoryBytes:  ram + int64(ready+q.unacked)*entryCost,
		IdleSince:    time.Unix(0, q.lastUsed),
		MessageStats: q.stats.public(),
	}
	if q.owner != nil {
		info.Owner = q.owner.name
	}
	info.Policy, info.OperatorPolicy, info.EffectivePolicy = q.pol.name, q.pol.operator, copyArgs(q.pol.def)
	return info
}

// totals returns the queue's message counts and consumers, for Overview.
func (q *Queue) totals() (ready, unacked, consumers int) {
	q.mu.Lock()
	defer q.unlock()
	return q.msgs.len(), q.unacked, len(q.consumers)
}

// Queues lists the queues of a vhost, sorted by name.
func (s *Server) Queues(vhost string) []QueueInfo {
	vh := s.vhost(vhost)
	if vh == nil {
		return nil
	}
	return listing(vh.queueList(), func(q *Queue) (QueueInfo, bool) { return q.Info(), true }, byName)
}

// QueueInfo describes one queue of a vhost (what Queues lists), without
// listing the others.
func (s *Server) QueueInfo(vhost, name string) (QueueInfo, bool) {
	vh := s.vhost(vhost)
	if vh == nil {
		return QueueInfo{}, false
	}
	q := vh.queue(name)
	if q == nil {
		return QueueInfo{}, false
	}
	return q.Info(), true
}

// ---- exchanges and bindings ----

// ExchangeInfo describes an exchange for the admin API.
type ExchangeInfo struct {
	Name       string
	Type       string
	Durable    bool
	AutoDelete bool
	Internal   bool
	Arguments  map[string]any
	Policy     string // the policy in effect, "" if none
}

// Exchanges lists the exchanges of a vhost (the default one as ""),
// sorted by name.
func (s *Server) Exchanges(vhost string) []ExchangeInfo {
	vh := s.vhost(vhost)
	if vh == nil {
		return nil
	}
	vh.mu.RLock() // exchanges' fields are guarded by vh.mu: described in the snapshot
	snap := make([]ExchangeInfo, 0, len(vh.exchanges))
	for _, x := range vh.exchanges {
		snap = append(snap, ExchangeInfo{Name: x.name, Type: x.kind, Durable: x.durable, AutoDelete: x.autoDelete, Internal: x.internal, Arguments: copyArgs(x.args), Policy: x.policy})
	}
	vh.mu.RUnlock()
	return listing(snap, same, byName)
}

// Bindings lists a vhost's explicit bindings (not the default exchange's
// implicit ones), sorted by key.
func (s *Server) Bindings(vhost string) []BindingDef {
	vh := s.vhost(vhost)
	if vh == nil {
		return nil
	}
	vh.mu.RLock()
	var snap []BindingDef
	for _, x := range vh.exchanges {
		for _, b := range x.bindings {
			snap = append(snap, b.def(vhost, x.name))
		}
	}
	vh.mu.RUnlock()
	return listing(snap, same, func(a, b BindingDef) int { return cmp.Compare(a.Key(), b.Key()) })
}

// ---- connections ----

// ConnectionInfo describes a client connection for the admin API
// (rabbitmqctl list_connections, /api/connections).
type ConnectionInfo struct {
	ID               uint64 // unique while the server runs; CloseConnectionByID
	Name             string // "127.0.0.1:54321 -> 127.0.0.1:5672", as RabbitMQ names it; CloseConnection
	ConnectionName   string // the client's connection_name property, "" if it sent none
	User             string
	VHost            string
	Peer             string // "127.0.0.1:54321"
	PeerHost         string
	PeerPort         int
	Host             string // the broker's side
	Port             int
	SSL              bool
	SSLProtocol      string // "tlsv1.3", as RabbitMQ's ssl_protocol; "" without TLS
	SSLCipher        string // Go's name of the cipher suite
	Protocol         string // "AMQP 0-9-1"
	AuthMechanism    string // "PLAIN", "AMQPLAIN", "EXTERNAL"
	State            string // "running", "blocking" (an alarm is on), "blocked" (held after publishing), "closing"
	Channels         int
	ChannelMax       int
	FrameMax         int
	Timeout          int // heartbeat, seconds; 0: none
	ConnectedAt      time.Time
	ClientProperties map[string]any
	NetStats         // bytes received and sent, and the socket reads and writes
}

func (c *conn) info(props bool) (ConnectionInfo, bool) {
	c.mu.Lock()
	if !c.open {
		c.mu.Unlock()
		return ConnectionInfo{}, false
	}
	info := ConnectionInfo{ID: c.id, Name: c.name, User: c.user, VHost: c.vh.name, Peer: c.peer,
		Protocol: "AMQP 0-9-1", AuthMechanism: authMechanisms[c.mechanism], Channels: int(c.nchannels.Load()),
		ChannelMax: int(c.channelMax), FrameMax: int(c.frameMax), Timeout: int(c.heartbeat),
		ConnectedAt: time.Unix(0, c.created), NetStats: c.netStats()}
	if props {
		info.ClientProperties = c.clientProperties()
	}
	c.mu.Unlock()
	if l := c.label.Load(); l != &c.peer {
		info.ConnectionName = *l
	}
	info.PeerHost, info.PeerPort = splitAddr(c.nc.RemoteAddr())
	info.Host, info.Port = splitAddr(c.nc.LocalAddr())
	if tc, ok := c.nc.(*tls.Conn); ok {
		st := tc.ConnectionState()
		info.SSL = true
		info.SSLProtocol = tlsVersionName(st.Version)
		info.SSLCipher = tls.CipherSuiteName(st.CipherSuite)
	}
	info.State = c.state()
	return info, true
}

// authMechanisms are the SASL mechanisms a login can pass with
// (conn.mechanism is an index; 0: none yet).
var authMechanisms = [...]string{"", "PLAIN", "AMQPLAIN", mechExternal}

func mechanismIndex(m string) uint8 {
	for i, x := range authMechanisms {
		if x == m {
			return uint8(i)
		}
	}
	return 0
}

// state is RabbitMQ's connection state.
func (c *conn) state() string {
	switch {
	case c.closing.Load():
		return "closing"
	case c.blocked.Load():
		return "blocked"
	case c.srv.alarm.active.Load():
		return "blocking"
	}
	return "running"
}

// splitAddr returns the host and port of a TCP address.
func splitAddr(a net.Addr) (string, int) {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String(), ta.Port
	}
	h, p, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String(), 0
	}
	n, _ := strconv.Atoi(p)
	return h, n
}

// tlsVersionName is RabbitMQ's (Erlang ssl's) name of a TLS version.
func tlsVersionName(v uint16) string {
	switch v {
	case tls.VersionTLS10:
		return "tlsv1"
	case tls.VersionTLS11:
		return "tlsv1.1"
	case tls.VersionTLS12:
		return "tlsv1.2"
	case tls.VersionTLS13:
		return "tlsv1.3"
	}
	return tls.VersionName(v)
}

// Connections lists the client connections that completed the handshake,
// sorted by name.
func (s *Server) Connections() []ConnectionInfo {
	return listing(s.connections(), func(c *conn) (ConnectionInfo, bool) { return c.info(true) }, byName)
}

// ConnectionStats is Connections without ClientProperties, which are
// decoded for each listing: what a metrics scrape needs, at a fraction of
// the garbage with thousands of connections.
func (s *Server) ConnectionStats() []ConnectionInfo {
	return listing(s.connections(), func(c *conn) (ConnectionInfo, bool) { return c.info(false) }, byName)
}

// ---- channels ----

// ChannelInfo describes a channel for the admin API (rabbitmqctl
// list_channels, /api/channels).
type ChannelInfo struct {
	Name                   string // "127.0.0.1:54321 -> 127.0.0.1:5672 (1)", as RabbitMQ
	Number                 int
	ConnectionID           uint64
	ConnectionName         string // ConnectionInfo.Name
	ClientConnectionName   string // the connection's connection_name property
	PeerHost               string
	PeerPort               int
	User                   string
	VHost                  string
	State                  string // "running", "closing"
	Transactional          bool
	Confirm                bool
	ConsumerCount          int
	MessagesUnacknowledged int
	MessagesUnconfirmed    int // published in confirm mode, not yet confirmed
	MessagesUncommitted    int // published in the open transaction
	AcksUncommitted        int // acks in the open transaction
	PrefetchCount          int // basic.qos global=false: for new consumers
	GlobalPrefetchCount    int // basic.qos global=true
	MessageStats           MessageStats
}

func (ch *channel) info(ci *ConnectionInfo) ChannelInfo {
	info := ChannelInfo{Name: fmt.Sprintf("%s (%d)", ci.Name, ch.id), Number: int(ch.id),
		ConnectionID: ci.ID, ConnectionName: ci.Name, ClientConnectionName: ci.ConnectionName,
		PeerHost: ci.PeerHost, PeerPort: ci.PeerPort, User: ci.User, VHost: ci.VHost, State: "running",
		Transactional: ch.modes.Load()&modeTx != 0, Confirm: ch.modes.Load()&modeConfirm != 0,
		MessagesUncommitted: int(ch.txMsgs.Load()), AcksUncommitted: int(ch.txAckCount.Load()),
		PrefetchCount: int(ch.qos.Load())}
	v := ch.counters()
	info.MessageStats = v.public()
	ch.mu.Lock()
	info.ConsumerCount = len(ch.consumers)
	info.MessagesUnacknowledged = len(ch.unacked)
	info.GlobalPrefetchCount = ch.globalPrefetch
	closed := ch.closed
	ch.mu.Unlock()
	if closed || ci.State == "closing" {
		info.State = "closing"
	}
	cf := &ch.conf
	cf.mu.Lock()
	info.MessagesUnconfirmed = int(cf.published.Load() - cf.confirmed)
	cf.mu.Unlock()
	return info
}

// Channels lists the channels of every open connection, sorted by
// connection name and number.
func (s *Server) Channels() []ChannelInfo {
	var out []ChannelInfo
	for _, c := range s.connections() {
		ci, ok := c.info(false)
		if !ok {
			continue
		}
		out = append(out, listing(c.channelList(), func(ch *channel) (ChannelInfo, bool) { return ch.info(&ci), true }, nil)...)
	}
	slices.SortFunc(out, func(a, b ChannelInfo) int {
		return cmp.Or(cmp.Compare(a.ConnectionName, b.ConnectionName), cmp.Compare(a.Number, b.Number))
	})
	return out
}

// ---- consumers ----

// ConsumerInfo describes a consumer for the admin API (rabbitmqctl
// list_consumers, /api/consumers).
type ConsumerInfo struct {
	Queue                string
	VHost                string
	ConsumerTag          string
	ChannelName          string // ChannelInfo.Name
	ChannelNumber        int
	ConnectionID         uint64
	ConnectionName       string // ConnectionInfo.Name
	ClientConnectionName string // the connection's connection_name property
	PeerHost             string
	PeerPort             int
	User                 string
	AckRequired          bool
	Exclusive            bool
	PrefetchCount        int
	Priority             int64  // x-priority
	Active               bool   // gets messages (false: waiting as a single active consumer's successor)
	ActivityStatus       string // "up"; with x-single-active-consumer "single_active" or "waiting"
	Arguments            map[string]any
}

// Consumers lists the consumers of every open connection, sorted by
// vhost, queue and tag.
func (s *Server) Consumers() []ConsumerInfo {
	var out []ConsumerInfo
	for _, c := range s.connections() {
		ci, ok := c.info(false)
		if !ok {
			continue
		}
		out = append(out, listing(c.consumerList(), func(cs *consumer) (ConsumerInfo, bool) { return cs.info(&ci) }, nil)...)
	}
	slices.SortFunc(out, func(a, b ConsumerInfo) int {
		return cmp.Or(cmp.Compare(a.VHost, b.VHost), cmp.Compare(a.Queue, b.Queue), cmp.Compare(a.ConsumerTag, b.ConsumerTag))
	})
	return out
}

// info describes cs; false if it was cancelled meanwhile.
func (cs *consumer) info(ci *ConnectionInfo) (ConsumerInfo, bool) {
	q := cs.q
	q.mu.Lock()
	registered := slices.Contains(q.consumers, cs)
	active, status := true, "up"
	if q.sac {
		active = q.active == cs
		status = "waiting"
		if active {
			status = "single_active"
		}
	}
	prefetch := cs.prefetch
	q.mu.Unlock()
	if !registered {
		return ConsumerInfo{}, false
	}
	return ConsumerInfo{Queue: q.name, VHost: q.vh.name, ConsumerTag: cs.tag,
		ChannelName: fmt.Sprintf("%s (%d)", ci.Name, cs.ch.id), ChannelNumber: int(cs.ch.id),
		ConnectionID: ci.ID, ConnectionName: ci.Name, ClientConnectionName: ci.ConnectionName,
		PeerHost: ci.PeerHost, PeerPort: ci.PeerPort, User: ci.User,
		AckRequired: !cs.noAck, Exclusive: cs.exclusive, PrefetchCount: prefetch, Priority: cs.priority,
		Active: active, ActivityStatus: status, Arguments: copyArgs(cs.args)}, true
}

// ---- overview ----

// Overview is the broker-wide summary behind /api/overview and
// rabbitmq_prometheus's global metrics. Counters are monotonic.
type Overview struct {
	ObjectTotals ObjectTotals
	QueueTotals  QueueTotals
	MessageStats MessageStats // every channel's, the closed ones' included
	Churn        ChurnStats
	Net          NetStats // every connection's traffic, the closed ones' included
}

// ObjectTotals counts the broker's objects (object_totals).
type ObjectTotals struct {
	Connections int // open (handshake complete)
	Channels    int
	Exchanges   int
	Queues      int
	Consumers   int
	VHosts      int
}

// QueueTotals sums the messages in queues (queue_totals).
type QueueTotals struct {
	Messages               int
	MessagesReady          int
	MessagesUnacknowledged int
}

// Overview returns the broker-wide counts and counters.
func (s *Server) Overview() Overview {
	var o Overview
	var stats statValues
	s.connMu.Lock() // with removeConn's folding into retired: sums never go back
	stats = s.retired
	o.Net = s.retiredNet
	for c := range s.conns {
		v, n := c.totals()
		stats.addAll(&v)
		o.Net.add(n)
		c.mu.Lock()
		open := c.open
		c.mu.Unlock()
		if open {
			o.ObjectTotals.Connections++
			o.ObjectTotals.Channels += int(c.nchannels.Load())
		}
	}
	s.connMu.Unlock()
	o.MessageStats = stats.public()
	o.Churn = s.churn.public()
	vhs := s.vhostList()
	o.ObjectTotals.VHosts = len(vhs)
	for _, vh := range vhs {
		vh.mu.RLock()
		o.ObjectTotals.Exchanges += len(vh.exchanges)
		vh.mu.RUnlock()
		for _, q := range vh.queueList() {
			ready, unacked, cons := q.totals()
			o.ObjectTotals.Queues++
			o.ObjectTotals.Consumers += cons
			o.QueueTotals.MessagesReady += ready
			o.QueueTotals.MessagesUnacknowledged += unacked
		}
	}
	o.QueueTotals.Messages = o.QueueTotals.MessagesReady + o.QueueTotals.MessagesUnacknowledged
	return o
}

// VHostStats is a vhost's message counters and traffic, those of its
// connections that ended included (the management API's per-vhost
// message_stats, recv_oct, send_oct).
type VHostStats struct {
	MessageStats MessageStats
	Net          NetStats
}

// VHostStats returns each vhost's counters, by name. A deleted vhost's
// counters go with it.
func (s *Server) VHostStats() map[string]VHostStats {
	sums := map[*vhost]*vhostTotals{}
	for _, vh := range s.vhostList() {
		sums[vh] = new(vhostTotals)
	}
	s.connMu.Lock() // with removeConn's folding into retiredVH: sums never go back
	for vh, t := range s.retiredVH {
		if sum := sums[vh]; sum != nil {
			sum.stats.addAll(&t.stats)
			sum.net.add(t.net)
		}
	}
	for c := range s.conns {
		c.mu.Lock()
		vh := c.vh
		c.mu.Unlock()
		if sum := sums[vh]; sum != nil {
			v, n := c.totals()
			sum.stats.addAll(&v)
			sum.net.add(n)
		}
	}
	s.connMu.Unlock()
	out := make(map[string]VHostStats, len(sums))
	for vh, t := range sums {
		out[vh.name] = VHostStats{MessageStats: t.stats.public(), Net: t.net}
	}
	return out
}

// ---- closing connections ----

// CloseConnectionByID closes the connection with that ID as
// CloseConnection does.
func (s *Server) CloseConnectionByID(id uint64, reason string) error {
	for _, c := range s.connections() {
		if c.id == id {
			c.forceClose(amqp.ConnectionForced, "CONNECTION_FORCED - "+reason, time.Second)
			return nil
		}
	}
	return fmt.Errorf("broker: connection %d: %w", id, ErrNotFound)
}

// CloseConnection closes the named connection with 320
// "CONNECTION_FORCED - " + reason.
func (s *Server) CloseConnection(name, reason string) error {
	for _, c := range s.connections() {
		if c.name == name {
			c.forceClose(amqp.ConnectionForced, "CONNECTION_FORCED - "+reason, time.Second)
			return nil
		}
	}
	return fmt.Errorf("broker: connection %q: %w", name, ErrNotFound)
}

// CloseAllConnections closes every client connection as CloseConnection
// does and returns how many there were.
func (s *Server) CloseAllConnections(reason string) int {
	cs := s.connections()
	for _, c := range cs {
		c.forceClose(amqp.ConnectionForced, "CONNECTION_FORCED - "+reason, time.Second)
	}
	return len(cs)
}

func copyArgs(t map[string]any) map[string]any {
	if len(t) == 0 {
		return nil
	}
	out := make(map[string]any, len(t))
	for k, v := range t {
		out[k] = v
	}
	return out
}
