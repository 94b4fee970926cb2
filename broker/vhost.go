package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"substrate/broker/amqp"
	"substrate/broker/store"
	"substrate/internal/faults"
)

// vhost holds a virtual host's exchanges, queues and bindings.
//
// mu guards the maps and every exchange's and binding's fields, and each
// queue's bindings set; publishers take it for reading only. cfgMu
// serializes structural changes (declare, delete, bind, unbind) together
// with their Definitions writes, which happen without mu held.
type vhost struct {
	srv   *Server
	name  string
	cfgMu sync.Mutex

	mu        sync.RWMutex
	exchanges map[string]*exchange
	queues    map[string]*Queue

	// RabbitMQ's vhost limits (set_vhost_limits): as stored (guarded by
	// Server.adminMu) and as checked (-1 for none), and the open
	// connections counted against max-connections.
	limits              VHostLimits
	maxConns, maxQueues atomic.Int64
	conns               atomic.Int64

	// policies are the vhost's policies and operator policies
	// (policy.go); replaced whole under cfgMu, read without a lock.
	policies atomic.Pointer[policySet]
}

// predefined exchanges of every vhost.
var predefined = []struct{ name, kind string }{
	{"", kindDirect}, {"amq.direct", kindDirect}, {"amq.fanout", kindFanout},
	{"amq.topic", kindTopic}, {"amq.headers", kindHeaders}, {"amq.match", kindHeaders},
}

func newVHost(s *Server, name string) *vhost {
	vh := &vhost{srv: s, name: name, exchanges: map[string]*exchange{}, queues: map[string]*Queue{}}
	vh.maxConns.Store(-1)
	vh.maxQueues.Store(-1)
	for _, p := range predefined {
		vh.exchanges[p.name] = newExchange(p.name, p.kind, true, false, false, nil)
	}
	return vh
}

// admitConn counts a connection opening in vh, or refuses it with
// RabbitMQ's error when that would pass the vhost's max-connections (0
// refuses every connection; negative is no limit).
func (vh *vhost) admitConn(user string) *amqp.Error {
	limit := vh.maxConns.Load()
	if n := vh.conns.Add(1); limit >= 0 && n > limit {
		vh.conns.Add(-1)
		return amqp.NewError(amqp.NotAllowed, amqp.ClassConnection, amqp.MethodConnectionOpen,
			"access to vhost '%s' refused for user '%s': connection limit (%d) is reached", vh.name, user, limit)
	}
	return nil
}

// setLimits applies a vhost's stored limits.
func (vh *vhost) setLimits(l VHostLimits) {
	vh.maxConns.Store(l.get(LimitMaxConnections))
	vh.maxQueues.Store(l.get(LimitMaxQueues))
}

func (vh *vhost) rs(kind, name string) string {
	return fmt.Sprintf("%s '%s' in vhost '%s'", kind, name, vh.name)
}

func (vh *vhost) noExchange(name string, cls, mth uint16) *amqp.Error {
	return amqp.NewError(amqp.NotFound, cls, mth, "no %s", vh.rs("exchange", name))
}

func (vh *vhost) noQueue(name string, cls, mth uint16) *amqp.Error {
	return amqp.NewError(amqp.NotFound, cls, mth, "no %s", vh.rs("queue", name))
}

func (vh *vhost) exchange(name string) *exchange {
	vh.mu.RLock()
	defer vh.mu.RUnlock()
	return vh.exchanges[name]
}

func (vh *vhost) queue(name string) *Queue {
	vh.mu.RLock()
	defer vh.mu.RUnlock()
	return vh.queues[name]
}

// persist runs Definitions writes, reporting a failure as 541.
func (vh *vhost) persist(cls, mth uint16, ops ...func(context.Context, Definitions) error) *amqp.Error {
	for _, op := range ops {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := op(ctx, vh.srv.defs)
		cancel()
		if err != nil {
			vh.srv.log.Error("amqp: storing definitions", "vhost", vh.name, "err", err)
			return amqp.NewError(amqp.InternalError, cls, mth, "cannot store definitions: %v", err)
		}
	}
	return nil
}

type defOp = func(context.Context, Definitions) error

// ---- exchanges ----

func (vh *vhost) declareExchange(m *amqp.ExchangeDeclare) *amqp.Error {
	const cls, mth = amqp.ClassExchange, amqp.MethodExchangeDeclare
	vh.cfgMu.Lock()
	defer vh.cfgMu.Unlock()
	x := vh.exchange(m.Exchange)
	if x == nil {
		if strings.HasPrefix(m.Exchange, "amq.") {
			return amqp.NewError(amqp.AccessRefused, cls, mth, "exchange name '%s' contains reserved prefix 'amq.*'", m.Exchange)
		}
		x = newExchange(m.Exchange, m.Type, m.Durable, m.AutoDelete, m.Internal, m.Arguments)
		setExchangePolicyLocked(vh.policies.Load(), x) // not shared yet
		if x.durable {
			def := ExchangeDef{VHost: vh.name, Name: x.name, Type: x.kind, Durable: true, AutoDelete: x.autoDelete, Internal: x.internal, Arguments: copyArgs(x.args)}
			if err := vh.persist(cls, mth, func(ctx context.Context, d Definitions) error { return d.PutExchange(ctx, def) }); err != nil {
				return err
			}
		}
		vh.mu.Lock()
		vh.exchanges[x.name] = x
		vh.mu.Unlock()
		return nil
	}
	vh.mu.RLock()
	defer vh.mu.RUnlock()
	if err := inequivalent(vh, "exchange", x.name, "type", x.kind, m.Type, cls, mth); err != nil {
		return err
	}
	if err := inequivalent(vh, "exchange", x.name, "durable", x.durable, m.Durable, cls, mth); err != nil {
		return err
	}
	if err := inequivalent(vh, "exchange", x.name, "auto_delete", x.autoDelete, m.AutoDelete, cls, mth); err != nil {
		return err
	}
	if err := inequivalent(vh, "exchange", x.name, "internal", x.internal, m.Internal, cls, mth); err != nil {
		return err
	}
	return argsEquivalent(vh, "exchange", x.name, x.args, m.Arguments, []string{"alternate-exchange"}, cls, mth)
}

func (vh *vhost) deleteExchange(name string, ifUnused bool) *amqp.Error {
	const cls, mth = amqp.ClassExchange, amqp.MethodExchangeDelete
	vh.cfgMu.Lock()
	defer vh.cfgMu.Unlock()
	vh.mu.Lock()
	x := vh.exchanges[name]
	if x == nil {
		vh.mu.Unlock()
		return nil
	}
	if ifUnused && len(x.bindings) > 0 {
		vh.mu.Unlock()
		return amqp.NewError(amqp.PreconditionFailed, cls, mth, "%s in use", vh.rs("exchange", name))
	}
	ops := vh.removeExchangeLocked(x, nil)
	vh.mu.Unlock()
	return vh.persist(cls, mth, ops...)
}

// removeExchangeLocked deletes x with its bindings (both directions) and
// returns the Definitions writes. Auto-delete exchanges left without
// bindings go too.
func (vh *vhost) removeExchangeLocked(x *exchange, ops []defOp) []defOp {
	delete(vh.exchanges, x.name)
	if x.durable {
		name := x.name
		ops = append(ops, func(ctx context.Context, d Definitions) error { return d.DeleteExchange(ctx, vh.name, name) })
	}
	for _, b := range x.bindings {
		if b.queue != nil {
			delete(b.queue.bindings, b)
		} else {
			delete(b.dest.inbound, b)
		}
	}
	for b := range x.inbound {
		ops = vh.removeBindingLocked(b, ops, false)
	}
	return ops
}

// removeBindingLocked removes b; persisted says whether to delete it from
// Definitions (false when a cascade deletes it anyway).
func (vh *vhost) removeBindingLocked(b *binding, ops []defOp, persisted bool) []defOp {
	src := b.src
	src.removeBinding(b)
	if b.queue != nil {
		delete(b.queue.bindings, b)
	} else {
		delete(b.dest.inbound, b)
	}
	if persisted && b.durable() {
		def := b.def(vh.name, src.name)
		ops = append(ops, func(ctx context.Context, d Definitions) error { return d.DeleteBinding(ctx, def) })
	}
	if src.autoDelete && len(src.bindings) == 0 && vh.exchanges[src.name] == src {
		ops = vh.removeExchangeLocked(src, ops)
	}
	return ops
}

// ---- bindings ----

// bind adds a binding from exchange src to a queue or exchange. owner is
// the connection, for exclusive queues.
func (vh *vhost) bind(src, destType, dest, key string, args amqp.Table, owner *conn, cls, mth uint16) *amqp.Error {
	vh.cfgMu.Lock()
	defer vh.cfgMu.Unlock()
	vh.mu.RLock()
	x := vh.exchanges[src]
	q, dx := vh.queues[dest], vh.exchanges[dest]
	var b *binding
	idx := bindingKey(destType, dest, key, args)
	if x != nil {
		b = x.bindings[idx]
	}
	vh.mu.RUnlock()
	if x == nil {
		return vh.noExchange(src, cls, mth)
	}
	if destType == "queue" {
		if q == nil {
			return vh.noQueue(dest, cls, mth)
		}
		if err := vh.checkExclusive(q, owner, cls, mth); err != nil {
			return err
		}
	} else if dx == nil {
		return vh.noExchange(dest, cls, mth)
	}
	if b != nil {
		return nil
	}
	b = &binding{src: x, key: key, args: args, idxKey: idx}
	if destType == "queue" {
		b.queue = q
	} else {
		b.dest = dx
	}
	if b.durable() {
		def := b.def(vh.name, src)
		if err := vh.persist(cls, mth, func(ctx context.Context, d Definitions) error { return d.PutBinding(ctx, def) }); err != nil {
			return err
		}
	}
	vh.mu.Lock()
	defer vh.mu.Unlock()
	if vh.exchanges[src] != x || (q != nil && vh.queues[dest] != q) || (dx != nil && destType == "exchange" && vh.exchanges[dest] != dx) {
		return vh.noExchange(src, cls, mth) // deleted meanwhile (cannot happen under cfgMu)
	}
	x.addBinding(b)
	if q != nil && destType == "queue" {
		q.bindings[b] = struct{}{}
	} else {
		dx.inbound[b] = struct{}{}
	}
	return nil
}

// unbind removes a binding. As in RabbitMQ 3.10, a missing exchange,
// queue or binding is not an error.
func (vh *vhost) unbind(src, destType, dest, key string, args amqp.Table, owner *conn, cls, mth uint16) *amqp.Error {
	vh.cfgMu.Lock()
	defer vh.cfgMu.Unlock()
	vh.mu.Lock()
	x := vh.exchanges[src]
	if x == nil {
		vh.mu.Unlock()
		return nil
	}
	if destType == "queue" {
		if q := vh.queues[dest]; q != nil {
			if err := vh.checkExclusive(q, owner, cls, mth); err != nil {
				vh.mu.Unlock()
				return err
			}
		}
	}
	b := x.bindings[bindingKey(destType, dest, key, args)]
	if b == nil {
		vh.mu.Unlock()
		return nil
	}
	ops := vh.removeBindingLocked(b, nil, true)
	vh.mu.Unlock()
	return vh.persist(cls, mth, ops...)
}

// ---- queues ----

func (vh *vhost) checkExclusive(q *Queue, owner *conn, cls, mth uint16) *amqp.Error {
	if q.owner != nil && q.owner != owner {
		return resourceLocked(vh, q.name, cls, mth)
	}
	return nil
}

func resourceLocked(vh *vhost, name string, cls, mth uint16) *amqp.Error {
	return amqp.NewError(amqp.ResourceLocked, cls, mth,
		"cannot obtain exclusive access to locked %s. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration.",
		vh.rs("queue", name))
}

// queueArgsCompared are the x-arguments RabbitMQ 3.10 checks for
// equivalence on redeclare; others are accepted and not compared.
var queueArgsCompared = []string{
	"x-expires", "x-message-ttl", "x-dead-letter-exchange", "x-dead-letter-routing-key",
	"x-max-length", "x-max-length-bytes", "x-max-in-memory-length", "x-max-in-memory-bytes",
	"x-max-priority", "x-overflow", "x-queue-mode", "x-queue-version", "x-single-active-consumer",
	"x-queue-type", "x-quorum-initial-group-size", "x-delivery-limit", "x-dead-letter-strategy",
	"x-queue-master-locator", "x-queue-leader-locator", "x-initial-cluster-size", "x-max-age",
	"x-stream-max-segment-size-bytes",
}

// queueTypeArgs are the x-arguments each queue type takes
// (rabbit_*_queue:capabilities in RabbitMQ 3.10). An argument another
// type takes is refused; arguments no type knows are accepted.
var queueTypeArgs = map[string][]string{
	"classic": {"x-expires", "x-message-ttl", "x-dead-letter-exchange", "x-dead-letter-routing-key",
		"x-max-length", "x-max-length-bytes", "x-max-priority", "x-overflow", "x-queue-mode",
		"x-single-active-consumer", "x-queue-type", "x-queue-master-locator", "x-queue-version"},
	"quorum": {"x-dead-letter-exchange", "x-dead-letter-routing-key", "x-dead-letter-strategy",
		"x-expires", "x-max-length", "x-max-length-bytes", "x-max-in-memory-length",
		"x-max-in-memory-bytes", "x-overflow", "x-single-active-consumer", "x-queue-type",
		"x-quorum-initial-group-size", "x-delivery-limit", "x-message-ttl", "x-queue-leader-locator"},
	"stream": {"x-queue-type", "x-max-length-bytes", "x-max-age", "x-stream-max-segment-size-bytes",
		"x-initial-cluster-size", "x-queue-leader-locator"},
}

// declareArgs are the arguments RabbitMQ 3.10 checks on declare, in its
// order (rabbit_amqqueue:declare_args); typedOnly are those only a queue
// type checks (after these).
var (
	declareArgs = []string{"x-expires", "x-message-ttl", "x-dead-letter-exchange", "x-dead-letter-routing-key",
		"x-max-length", "x-max-length-bytes", "x-max-in-memory-length", "x-max-in-memory-bytes",
		"x-max-priority", "x-overflow", "x-queue-mode", "x-queue-version", "x-single-active-consumer",
		"x-queue-type", "x-quorum-initial-group-size", "x-max-age", "x-stream-max-segment-size-bytes",
		"x-initial-cluster-size", "x-queue-leader-locator"}
	typedOnlyArgs = []string{"x-delivery-limit", "x-dead-letter-strategy", "x-queue-master-locator"}
)

// queueType returns the x-queue-type argument ("classic" if absent).
func queueType(args amqp.Table) string {
	if t, ok := args["x-queue-type"].(string); ok {
		return t
	}
	return "classic"
}

// checkQueueArgs validates a new queue's arguments as RabbitMQ 3.10 does:
// each known argument in declareArgs order, first whether the queue type
// takes it, then its value; then the type's own checks.
func (vh *vhost) checkQueueArgs(name string, args amqp.Table, durable, exclusive, autoDelete bool) *amqp.Error {
	const cls, mth = amqp.ClassQueue, amqp.MethodQueueDeclare
	bad := func(key, reason string) *amqp.Error {
		return amqp.NewError(amqp.PreconditionFailed, cls, mth, "invalid arg '%s' for %s: %s", key, vh.rs("queue", name), reason)
	}
	unacceptable := func(key string, v any) *amqp.Error {
		return bad(key, fmt.Sprintf("{unacceptable_type,%s}", fieldType(v)))
	}
	intArg := func(key string, v any, min int64) *amqp.Error {
		n, ok := toInt(v)
		if !ok {
			return bad(key, fmt.Sprintf("\"expected integer, got %s\"", fieldType(v)))
		}
		if n < 0 {
			return bad(key, fmt.Sprintf("{value_negative,%d}", n))
		}
		if n < min {
			return bad(key, fmt.Sprintf("{value_zero,%d}", n))
		}
		return nil
	}
	qt := "classic"
	if v, ok := args["x-queue-type"]; ok {
		t, isStr := v.(string)
		if !isStr {
			return unacceptable("x-queue-type", v)
		}
		if _, known := queueTypeArgs[t]; !known || t == "stream" {
			return bad("x-queue-type", fmt.Sprintf("\"unsupported queue type '%s'\"", t))
		}
		qt = t
	}
	supported := queueTypeArgs[qt]
	wrongType := func(key string) *amqp.Error {
		return amqp.NewError(amqp.PreconditionFailed, cls, mth, "invalid arg '%s' for %s of queue type rabbit_%s_queue", key, vh.rs("queue", name), qt)
	}
	for _, k := range declareArgs {
		v, ok := args[k]
		if !ok {
			continue
		}
		if !slices.Contains(supported, k) {
			return wrongType(k)
		}
		var err *amqp.Error
		switch k {
		case "x-expires", "x-quorum-initial-group-size":
			err = intArg(k, v, 1)
		case "x-message-ttl", "x-max-length", "x-max-length-bytes", "x-max-in-memory-length", "x-max-in-memory-bytes":
			err = intArg(k, v, 0)
		case "x-dead-letter-exchange":
			if _, ok := v.(string); !ok {
				err = unacceptable(k, v)
			}
		case "x-dead-letter-routing-key":
			if _, ok := v.(string); !ok {
				err = unacceptable(k, v)
			} else if _, ok := args["x-dead-letter-exchange"]; !ok {
				err = bad(k, "routing_key_but_no_dlx_defined")
			}
		case "x-max-priority":
			if err = intArg(k, v, 0); err == nil {
				if n, _ := toInt(v); n > maxPriority {
					err = bad(k, fmt.Sprintf("{max_value_exceeded,%d}", n))
				}
			}
		case "x-overflow":
			switch s, ok := v.(string); {
			case !ok:
				err = unacceptable(k, v)
			case s != overflowDropHead && s != overflowRejectPublish && s != overflowRejectPublishDLX:
				err = bad(k, "invalid_overflow")
			}
		case "x-queue-mode":
			switch s, ok := v.(string); {
			case !ok:
				err = unacceptable(k, v)
			case s != "default" && s != "lazy":
				err = bad(k, fmt.Sprintf("\"unsupported queue mode '%s'\"", s))
			}
		case "x-queue-version":
			switch n, ok := toInt(v); {
			case !ok:
				err = unacceptable(k, v)
			case n != 1 && n != 2:
				err = bad(k, fmt.Sprintf("\"unsupported queue version '%d'\"", n))
			}
		case "x-single-active-consumer":
			if _, ok := v.(bool); !ok {
				err = unacceptable(k, v)
			}
		}
		if err != nil {
			return err
		}
	}
	for _, k := range typedOnlyArgs {
		if _, ok := args[k]; ok && !slices.Contains(supported, k) {
			return wrongType(k)
		}
	}
	if qt == "quorum" {
		switch {
		case autoDelete:
			return amqp.NewError(amqp.PreconditionFailed, cls, mth, "invalid property 'auto-delete' for %s", vh.rs("queue", name))
		case exclusive:
			return amqp.NewError(amqp.PreconditionFailed, cls, mth, "invalid property 'exclusive-owner' for %s", vh.rs("queue", name))
		case !durable:
			return amqp.NewError(amqp.PreconditionFailed, cls, mth, "invalid property 'non-durable' for %s", vh.rs("queue", name))
		}
		if v, ok := args["x-dead-letter-strategy"]; ok && v != "at-most-once" && v != "at-least-once" {
			return bad("x-dead-letter-strategy", "invalid_dlx_strategy")
		}
	}
	return nil
}

// declareQueue creates a queue or checks an existing one; it returns the
// queue.
func (vh *vhost) declareQueue(m *amqp.QueueDeclare, owner *conn) (*Queue, *amqp.Error) {
	const cls, mth = amqp.ClassQueue, amqp.MethodQueueDeclare
	vh.cfgMu.Lock()
	defer vh.cfgMu.Unlock()
	if m.Exclusive {
		m.Durable = false // RabbitMQ never makes an exclusive queue durable
	}
	q := vh.queue(m.Queue)
	if q != nil {
		if err := inequivalent(vh, "queue", q.name, "durable", q.durable, m.Durable, cls, mth); err != nil {
			return nil, err
		}
		if err := inequivalent(vh, "queue", q.name, "auto_delete", q.autoDelete, m.AutoDelete, cls, mth); err != nil {
			return nil, err
		}
		if err := argsEquivalent(vh, "queue", q.name, q.args, m.Arguments, queueArgsCompared, cls, mth); err != nil {
			return nil, err
		}
		// RabbitMQ's strict exclusive check: the exclusive flag must match,
		// and an exclusive queue must be this connection's.
		if q.owner != nil && (q.owner != owner || !m.Exclusive) || q.owner == nil && m.Exclusive {
			return nil, resourceLocked(vh, q.name, cls, mth)
		}
		q.Touch()
		return q, nil
	}
	// As rabbit_channel: the vhost's queue limit before the arguments.
	if limit := vh.maxQueues.Load(); limit >= 0 {
		vh.mu.RLock()
		n := len(vh.queues)
		vh.mu.RUnlock()
		if n+1 > int(limit) {
			return nil, amqp.NewError(amqp.PreconditionFailed, cls, mth,
				"cannot declare queue '%s': queue limit in vhost '%s' (%d) is reached", m.Queue, vh.name, limit)
		}
	}
	if err := vh.checkQueueArgs(m.Queue, m.Arguments, m.Durable, m.Exclusive, m.AutoDelete); err != nil {
		return nil, err
	}
	var o *conn
	if m.Exclusive {
		o = owner
	}
	q = newQueue(vh, m.Queue, m.Durable, m.Exclusive, m.AutoDelete, m.Arguments, o)
	if q.durable && o == nil {
		def := QueueDef{VHost: vh.name, Name: q.name, Durable: true, AutoDelete: q.autoDelete, Arguments: copyArgs(q.args)}
		if err := vh.persist(cls, mth, func(ctx context.Context, d Definitions) error { return d.PutQueue(ctx, def) }); err != nil {
			return nil, err
		}
	}
	if o != nil && !o.addExclusive(q) {
		return nil, amqp.NewError(amqp.ConnectionForced, cls, mth, "connection is closing")
	}
	vh.mu.Lock()
	vh.queues[q.name] = q
	vh.exchanges[""].exactAdd(&binding{src: vh.exchanges[""], queue: q, key: q.name})
	vh.mu.Unlock()
	q.Touch()
	return q, nil
}

// deleteQueue deletes q (if still there) and returns the message count and
// the consumers to notify. check runs under the vhost lock to apply
// if-unused, if-empty or the auto-delete condition.
func (vh *vhost) deleteQueue(q *Queue, check func() *amqp.Error, cls, mth uint16) (int, []*consumer, *amqp.Error) {
	vh.cfgMu.Lock()
	defer vh.cfgMu.Unlock()
	n, cs, dropped, ops, err := vh.unlinkQueue(q, check)
	if err != nil || ops == nil {
		return 0, nil, err
	}
	if dropped != nil {
		// Still holding cfgMu: a redeclare under the same name waits
		// until a crash can no longer bring these messages back into it.
		dropped.Wait()
	}
	if q.owner != nil {
		q.owner.removeExclusive(q)
	}
	return n, cs, vh.persist(cls, mth, ops...)
}

// unlinkQueue is deleteQueue's part under vh.mu (released by defer, so a
// panic in a check or in the queue leaves no lock held). ops is nil if q
// was already gone, else the Definitions writes to make (maybe none).
func (vh *vhost) unlinkQueue(q *Queue, check func() *amqp.Error) (n int, cs []*consumer, dropped *store.Commit, ops []defOp, err *amqp.Error) {
	vh.mu.Lock()
	defer vh.mu.Unlock()
	if vh.queues[q.name] != q {
		return 0, nil, nil, nil, nil
	}
	if check != nil {
		if err := check(); err != nil {
			return 0, nil, nil, nil, err
		}
	}
	delete(vh.queues, q.name)
	def := vh.exchanges[""]
	for _, b := range def.exact[q.name] {
		if b.queue == q {
			def.exact[q.name] = removePtr(def.exact[q.name], b)
		}
	}
	if len(def.exact[q.name]) == 0 {
		delete(def.exact, q.name)
	}
	ops = []defOp{}
	if q.durable && q.owner == nil {
		name := q.name
		ops = append(ops, func(ctx context.Context, d Definitions) error { return d.DeleteQueue(ctx, vh.name, name) })
	}
	for b := range q.bindings {
		ops = vh.removeBindingLocked(b, ops, false)
	}
	n, cs, dropped = q.markDeleted()
	return n, cs, dropped, ops, nil
}

// expireQueue is the x-expires timer's action. A panic here belongs to
// the queue, not to a connection: it is logged and counted, and this
// expiry is skipped (the next use re-arms the timer).
func (vh *vhost) expireQueue(q *Queue, gen uint64) {
	defer faults.Recover(vh.srv.log, faults.AMQP, vh.rs("queue", q.name), nil)
	if vh.srv.stopping.Load() {
		return
	}
	faults.Point("amqp.queue-expires", q.name)
	_, cs, _ := vh.deleteQueue(q, func() *amqp.Error {
		if !q.expiredGen(gen) {
			return amqp.NewError(amqp.PreconditionFailed, 0, 0, "in use")
		}
		return nil
	}, 0, 0)
	notifyCancelled(cs)
}

// autoDeleteQueue deletes an auto-delete queue whose last consumer went.
func (vh *vhost) autoDeleteQueue(q *Queue) {
	_, cs, _ := vh.deleteQueue(q, func() *amqp.Error {
		if _, n := q.usage(); n > 0 {
			return amqp.NewError(amqp.PreconditionFailed, 0, 0, "in use")
		}
		return nil
	}, 0, 0)
	notifyCancelled(cs)
}

// notifyCancelled tells consumers of a deleted queue (basic.cancel).
func notifyCancelled(cs []*consumer) {
	for _, c := range cs {
		c.ch.serverCancel(c)
	}
}

// ---- routing ----

// route returns the queues a message published to x reaches, following
// exchange-to-exchange bindings and, from an exchange that routes it
// nowhere, its alternate exchange (alternateLocked), each queue once.
func (vh *vhost) route(x *exchange, key string, headers amqp.Table, dst []*Queue) []*Queue {
	vh.mu.RLock()
	defer vh.mu.RUnlock()
	if x.name == "" {
		if q := vh.queues[key]; q != nil {
			dst = append(dst, q)
		}
		return dst
	}
	var bs [8]*binding
	matched := x.match(bs[:0], key, headers)
	if len(matched) == 1 && matched[0].queue != nil {
		return append(dst, matched[0].queue)
	}
	seenX := map[*exchange]bool{x: true}
	seenQ := map[*Queue]bool{}
	if len(matched) == 0 && x.ae != "" {
		matched = vh.alternateLocked(x, matched, 0, seenX, key, headers)
	}
	for i := 0; i < len(matched); i++ {
		b := matched[i]
		if b.queue != nil {
			if !seenQ[b.queue] {
				seenQ[b.queue] = true
				dst = append(dst, b.queue)
			}
		} else if !seenX[b.dest] {
			seenX[b.dest] = true
			n := len(matched)
			matched = b.dest.match(matched, key, headers)
			matched = vh.alternateLocked(b.dest, matched, n, seenX, key, headers)
		}
	}
	return dst
}

// ---- restore and teardown ----

func (vh *vhost) restoreExchange(e ExchangeDef) {
	vh.mu.Lock()
	defer vh.mu.Unlock()
	if _, ok := vh.exchanges[e.Name]; ok || !validKind(e.Type) {
		return
	}
	x := newExchange(e.Name, e.Type, true, e.AutoDelete, e.Internal, normalizeArgs(e.Arguments))
	setExchangePolicyLocked(vh.policies.Load(), x)
	vh.exchanges[e.Name] = x
}

func (vh *vhost) restoreQueue(d QueueDef) {
	vh.mu.Lock()
	defer vh.mu.Unlock()
	if _, ok := vh.queues[d.Name]; ok {
		return
	}
	q := newQueue(vh, d.Name, true, false, d.AutoDelete, normalizeArgs(d.Arguments), nil)
	vh.queues[q.name] = q
	vh.exchanges[""].exactAdd(&binding{src: vh.exchanges[""], queue: q, key: q.name})
	q.Touch()
}

func (vh *vhost) restoreBinding(d BindingDef) {
	vh.mu.Lock()
	defer vh.mu.Unlock()
	x := vh.exchanges[d.Source]
	if x == nil || d.Source == "" {
		return
	}
	args := normalizeArgs(d.Arguments)
	b := &binding{src: x, key: d.RoutingKey, args: args, idxKey: bindingKey(d.DestinationType, d.Destination, d.RoutingKey, args)}
	switch d.DestinationType {
	case "queue":
		if b.queue = vh.queues[d.Destination]; b.queue == nil {
			return
		}
		b.queue.bindings[b] = struct{}{}
	case "exchange":
		if b.dest = vh.exchanges[d.Destination]; b.dest == nil {
			return
		}
		b.dest.inbound[b] = struct{}{}
	default:
		return
	}
	x.addBinding(b)
}

// normalizeArgs undoes what a JSON round trip through a Definitions
// store does to arguments: whole numbers come back as float64 (or
// json.Number) and become int64 again, so x-expires and friends keep
// working and compare equal on redeclare.
func normalizeArgs(m map[string]any) amqp.Table {
	if m == nil {
		return nil
	}
	out := make(amqp.Table, len(m))
	for k, v := range m {
		out[k] = normalizeValue(v)
	}
	return out
}

func normalizeValue(v any) any {
	switch n := v.(type) {
	case float64:
		if n == math.Trunc(n) && math.Abs(n) < 1<<53 {
			return int64(n)
		}
	case json.Number:
		if i, err := n.Int64(); err == nil {
			return i
		}
		if f, err := n.Float64(); err == nil {
			return f
		}
	case map[string]any:
		return normalizeArgs(n)
	case amqp.Table:
		return normalizeArgs(n)
	case []any:
		out := make([]any, len(n))
		for i, e := range n {
			out[i] = normalizeValue(e)
		}
		return out
	}
	return v
}

func (vh *vhost) stopTimers() {
	vh.mu.RLock()
	defer vh.mu.RUnlock()
	for _, q := range vh.queues {
		q.stopTimers()
	}
}

// destroy ends every queue of a deleted vhost.
func (vh *vhost) destroy() {
	vh.mu.Lock()
	qs := vh.queues
	vh.queues = map[string]*Queue{}
	vh.mu.Unlock()
	for _, q := range qs {
		_, cs, dropped := q.markDeleted()
		if dropped != nil {
			dropped.Wait()
		}
		notifyCancelled(cs)
	}
}

// ---- equivalence texts ----

// inequivalent returns RabbitMQ's 406 for a field that differs on
// redeclare: "inequivalent arg 'durable' for queue 'q' in vhost '/':
// received 'true' but current is 'false'".
func inequivalent(vh *vhost, kind, name, field string, current, received any, cls, mth uint16) *amqp.Error {
	if current == received {
		return nil
	}
	return amqp.NewError(amqp.PreconditionFailed, cls, mth, "inequivalent arg '%s' for %s: received '%v' but current is '%v'",
		field, vh.rs(kind, name), received, current)
}

// argsEquivalent compares the listed arguments as RabbitMQ's
// rabbit_misc:assert_args_equivalence does (integers by value).
func argsEquivalent(vh *vhost, kind, name string, current, received amqp.Table, keys []string, cls, mth uint16) *amqp.Error {
	for _, k := range keys {
		cv, cok := current[k]
		rv, rok := received[k]
		if k == "x-queue-type" && cok != rok && (cv == "classic" || rv == "classic") {
			continue // absent equals "classic", and only that
		}
		if cok == rok && (!cok || sameTypeClass(cv, rv) && valueEqual(cv, rv)) {
			continue
		}
		if cok && rok {
			// Both present: RabbitMQ prints the bare values, even when
			// their types differ.
			return amqp.NewError(amqp.PreconditionFailed, cls, mth, "inequivalent arg '%s' for %s: received '%v' but current is '%v'",
				k, vh.rs(kind, name), rv, cv)
		}
		return amqp.NewError(amqp.PreconditionFailed, cls, mth, "inequivalent arg '%s' for %s: received %s but current is %s",
			k, vh.rs(kind, name), argVal(rv, rok), argVal(cv, cok))
	}
	return nil
}

func sameTypeClass(a, b any) bool {
	_, ai := toInt(a)
	_, bi := toInt(b)
	if ai || bi {
		return ai && bi
	}
	return fmt.Sprintf("%T", a) == fmt.Sprintf("%T", b)
}

func argVal(v any, ok bool) string {
	if !ok {
		return "none"
	}
	return fmt.Sprintf("the value '%v' of type '%s'", v, fieldType(v))
}

// fieldType names a table value's type as RabbitMQ does.
func fieldType(v any) string {
	switch v.(type) {
	case bool:
		return "bool"
	case int8:
		return "byte"
	case uint8:
		return "unsignedbyte"
	case int16:
		return "short"
	case uint16:
		return "unsignedshort"
	case int32:
		return "signedint"
	case uint32:
		return "unsignedint"
	case int64, int:
		return "long"
	case float32:
		return "float"
	case float64:
		return "double"
	case string:
		return "longstr"
	case []byte:
		return "binary"
	case amqp.Decimal:
		return "decimal"
	case time.Time:
		return "timestamp"
	case amqp.Table, map[string]any:
		return "table"
	case []any:
		return "array"
	case nil:
		return "void"
	}
	return "unknown"
}
