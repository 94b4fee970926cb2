package broker

import (
	"encoding/binary"
	"math"
	"slices"
	"time"

	"substrate/broker/amqp"
	"substrate/internal/faults"
)

// Dead-lettering, as RabbitMQ 3.10's rabbit_dead_letter: a message a
// queue rejects (basic.reject or basic.nack with requeue=false), expires
// (x-message-ttl or the expiration property), drops for x-max-length or
// x-max-length-bytes, or drops after x-delivery-limit deliveries goes to
// the queue's x-dead-letter-exchange, with x-dead-letter-routing-key or
// its own routing key, as a new message:
//
//   - the expiration property is removed (its value is kept in the death
//     record as original-expiration);
//   - the headers get an x-death array, newest death first, with one table
//     per (queue, reason): count, reason, queue, time, exchange,
//     routing-keys[, original-expiration]; a death for a (queue, reason)
//     already there increments its count and moves it to the front;
//   - the first death also sets x-first-death-reason, -queue and
//     -exchange, which later deaths leave alone.
//
// Cycles: except for reason "rejected", a dead letter is not delivered to
// a queue it already died in unless a rejection happened on the way
// (rabbit_dead_letter:is_cycle), so a queue whose messages expire into
// itself drops them instead of looping.
//
// A queue collects its dead letters under its lock (Queue.dead) and
// publishes them after releasing it (Queue.unlock), since routing takes
// vhost.mu and the target queues' locks, which rank above and beside it.

// Death reasons, as RabbitMQ writes them.
const (
	reasonRejected      = "rejected"
	reasonExpired       = "expired"
	reasonMaxlen        = "maxlen"
	reasonDeliveryLimit = "delivery_limit"
)

// deadLetter is a message that left a queue for its dead-letter exchange.
// It carries the dead-letter exchange and routing key in effect when it
// died (a policy may change them later).
type deadLetter struct {
	m      *message
	reason string
	dlx    string
	dlrk   *string
}

// unlock releases q.mu and publishes the dead letters collected under it.
func (q *Queue) unlock() {
	dead := q.dead
	q.dead = nil
	q.mu.Unlock()
	if len(dead) > 0 {
		q.vh.publishDead(q, dead)
	}
}

// flushDeadLater publishes collected dead letters from a fresh goroutine,
// for callers that hold vhost.mu and so cannot route. Caller holds q.mu.
func (q *Queue) flushDeadLater() {
	if len(q.dead) == 0 {
		return
	}
	time.AfterFunc(0, func() {
		// publishDead recovers its own panics; this is for the rest.
		defer faults.Recover(q.vh.srv.log, faults.AMQP, q.vh.rs("queue", q.name), nil)
		q.mu.Lock()
		q.unlock()
	})
}

// dropLocked removes e from the queue for reason, dead-lettering it if the
// queue has a dead-letter exchange. Caller holds q.mu.
func (q *Queue) dropLocked(e entry, reason string) {
	if q.dlx != nil {
		if m, ok := q.messageLocked(e); ok {
			q.dead = append(q.dead, deadLetter{m: m, reason: reason, dlx: *q.dlx, dlrk: q.dlrk})
		}
	}
	q.forgetLocked(e)
}

// publishDead routes dead letters of q through its dead-letter exchange.
// It runs with no lock held, on whatever goroutine released the queue's
// lock: a rejecting client's reader, a TTL timer, a publisher whose
// message pushed the queue over x-max-length, flushDeadLater's timer.
//
// A panic while routing dead letters is the queue's, not that
// goroutine's: logged and counted (site amqp.deadletter, subject: the
// queue name); the letters not yet routed go back to q.dead for the
// queue's next unlock, and the one being routed is dropped (some of its
// target queues may already have it).
func (vh *vhost) publishDead(q *Queue, dead []deadLetter) {
	if vh.srv.stopping.Load() {
		return
	}
	next := 0 // the first letter not yet handed to any queue
	defer func() {
		if v := recover(); v != nil {
			faults.Handle(vh.srv.log, faults.AMQP, vh.rs("queue", q.name), v, func(any) {
				q.mu.Lock()
				q.dead = append(dead[next:len(dead):len(dead)], q.dead...)
				q.mu.Unlock()
			})
		}
	}()
	faults.Point("amqp.deadletter", q.name)
	now := time.Now()
	var buf [4]*Queue
	var x *exchange
	for i, d := range dead {
		next = i + 1
		if x == nil || x.name != d.dlx {
			x = vh.exchange(d.dlx)
		}
		if x == nil {
			continue // RabbitMQ drops dead letters to a missing exchange
		}
		m, headers, deaths := deadLetterMessage(d.m, d.reason, q.name, x.name, d.dlrk, now)
		qs := vh.route(x, m.routingKey, headers, buf[:0])
		for _, t := range qs {
			if d.reason != reasonRejected && isDeathCycle(t.name, deaths) {
				vh.srv.log.Debug("amqp: dead letter dropped: cycle", "vhost", vh.name, "queue", t.name)
				continue
			}
			t.Publish(m, now.UnixNano(), nil) // a refusal (reject-publish) drops it; no confirm waits
		}
	}
}

// deadLetterMessage builds the message q dead-letters: new routing, the
// x-death headers and no expiration. It returns the message with its
// headers and the x-death array (for cycle detection).
func deadLetterMessage(old *message, reason, queue, dlx string, dlrk *string, now time.Time) (*message, amqp.Table, []any) {
	p, err := amqp.DecodeProperties(old.props)
	if err != nil { // cannot happen: the properties were decoded on publish
		p = amqp.Properties{}
	}
	rk := old.routingKey
	if dlrk != nil {
		rk = *dlrk
	}
	info := orderedTable{
		{"count", int64(1)},
		{"reason", reason},
		{"queue", queue},
		{"time", now.Truncate(time.Second)},
		{"exchange", old.exchange},
		{"routing-keys", []any{old.routingKey}},
	}
	if p.Has(amqp.FlagExpiration) {
		info = append(info, orderedField{"original-expiration", p.Expiration})
	}
	// Headers we do not change are forwarded byte for byte; the others
	// are built from their decoded values.
	headers := amqp.Table{}
	raw := rawHeaders(old.props)
	for k, v := range p.Headers {
		if r, ok := raw[k]; ok {
			headers[k] = r
		} else {
			headers[k] = v
		}
	}
	var deaths []any
	if prior, ok := p.Headers["x-death"].([]any); ok {
		priorRaw := rawArray(raw["x-death"])
		if len(priorRaw) != len(prior) {
			priorRaw = nil
		}
		var match amqp.Table
		others := make([]any, 0, len(prior))    // as encoded
		othersDec := make([]any, 0, len(prior)) // decoded, for cycle detection
		for i, d := range prior {
			t, ok := d.(amqp.Table)
			if match == nil && ok && t["queue"] == queue && t["reason"] == reason {
				match = t
				continue
			}
			othersDec = append(othersDec, d)
			if priorRaw != nil {
				others = append(others, priorRaw[i])
			} else {
				others = append(others, d)
			}
		}
		if match != nil {
			// RabbitMQ bumps the count of the matching record and keeps its
			// time, exchange and routing keys; the table comes out sorted.
			inc := make(amqp.Table, len(match))
			for k, v := range match {
				inc[k] = v
			}
			switch n := inc["count"].(type) {
			case int64:
				inc["count"] = n + 1
			case int32:
				inc["count"] = n + 1
			default:
				inc["count"] = int64(1)
			}
			headers["x-death"] = append([]any{inc}, others...)
			deaths = append([]any{inc}, othersDec...)
		} else {
			// A record added to an existing x-death comes out sorted.
			headers["x-death"] = append([]any{sortedTable(info.table())}, others...)
			deaths = append([]any{info}, othersDec...)
		}
	} else {
		deaths = []any{info}
		headers["x-death"] = deaths
		headers["x-first-death-reason"] = reason
		headers["x-first-death-queue"] = queue
		headers["x-first-death-exchange"] = old.exchange
	}
	routeHeaders := amqp.Table{}
	for k, v := range p.Headers {
		routeHeaders[k] = v
	}
	routeHeaders["x-death"] = deaths
	for _, k := range []string{"x-first-death-reason", "x-first-death-queue", "x-first-death-exchange"} {
		if v, ok := headers[k]; ok {
			routeHeaders[k] = v
		}
	}
	p.Headers = nil
	p.Flags &^= amqp.FlagHeaders | amqp.FlagExpiration
	p.Expiration = ""
	props, err := p.Append(nil)
	if err != nil {
		props = []byte{0, 0}
	}
	props = spliceHeaders(props, headers)
	m := &message{exchange: dlx, routingKey: rk, props: props, body: old.body, ttl: -1, priority: old.priority, persistent: old.persistent}
	return m, routeHeaders, deaths
}

// isDeathCycle reports whether delivering a dead letter with these deaths
// (newest first) to queue would close a cycle with no rejection in it.
func isDeathCycle(queue string, deaths []any) bool {
	for i, d := range deaths {
		if q, ok := deathField(d, "queue"); !ok || q != queue {
			continue
		}
		for _, e := range deaths[:i+1] {
			if r, ok := deathField(e, "reason"); !ok || r == reasonRejected {
				return false
			}
		}
		return true
	}
	return false
}

// deathField returns a death record's field: records are amqp.Table when
// decoded from a message and orderedTable when new.
func deathField(d any, key string) (any, bool) {
	switch t := d.(type) {
	case amqp.Table:
		v, ok := t[key]
		return v, ok
	case orderedTable:
		for _, f := range t {
			if f.key == key {
				return f.val, true
			}
		}
	}
	return nil, false
}

// spliceHeaders inserts the encoded headers into raw properties p encoded
// without them: the headers come third, after content-type and
// content-encoding.
func spliceHeaders(raw []byte, headers amqp.Table) []byte {
	off := 2
	if raw[0]&0x80 != 0 { // content-type
		off += 1 + int(raw[off])
	}
	if raw[0]&0x40 != 0 { // content-encoding
		off += 1 + int(raw[off])
	}
	enc := appendFieldTable(nil, sortedTable(headers))
	out := make([]byte, 0, len(raw)+len(enc))
	out = append(out, raw[:off]...)
	out = append(out, enc...)
	out = append(out, raw[off:]...)
	binary.BigEndian.PutUint16(out, binary.BigEndian.Uint16(out)|amqp.FlagHeaders)
	return out
}

// orderedTable is a field table whose keys are written in the given order:
// RabbitMQ writes a new death record unsorted (count first).
type orderedTable []orderedField

type orderedField struct {
	key string
	val any
}

func (t orderedTable) table() amqp.Table {
	m := make(amqp.Table, len(t))
	for _, f := range t {
		m[f.key] = f.val
	}
	return m
}

func sortedTable(t amqp.Table) orderedTable {
	keys := make([]string, 0, len(t))
	for k := range t {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make(orderedTable, len(keys))
	for i, k := range keys {
		out[i] = orderedField{k, t[k]}
	}
	return out
}

// appendFieldTable encodes t keeping each value's AMQP type as decoded
// (int64 stays a long 'l', int32 a signed int 'I', and so on), unlike
// amqp.AppendTable, which narrows integers: RabbitMQ writes x-death's
// count as a long and forwards other headers with their types.
func appendFieldTable(dst []byte, t orderedTable) []byte {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0)
	for _, f := range t {
		k := f.key
		if len(k) > 255 {
			k = k[:255]
		}
		dst = append(dst, byte(len(k)))
		dst = append(dst, k...)
		dst = appendFieldValue(dst, f.val)
	}
	binary.BigEndian.PutUint32(dst[start:], uint32(len(dst)-start-4))
	return dst
}

func appendFieldValue(dst []byte, v any) []byte {
	be := binary.BigEndian
	switch v := v.(type) {
	case nil:
		return append(dst, 'V')
	case bool:
		if v {
			return append(dst, 't', 1)
		}
		return append(dst, 't', 0)
	case int8:
		return append(dst, 'b', byte(v))
	case uint8:
		return append(dst, 'B', v)
	case int16:
		return be.AppendUint16(append(dst, 's'), uint16(v))
	case uint16:
		return be.AppendUint16(append(dst, 'u'), v)
	case int32:
		return be.AppendUint32(append(dst, 'I'), uint32(v))
	case uint32:
		return be.AppendUint32(append(dst, 'i'), v)
	case int64:
		return be.AppendUint64(append(dst, 'l'), uint64(v))
	case int:
		return be.AppendUint64(append(dst, 'l'), uint64(v))
	case float32:
		return be.AppendUint32(append(dst, 'f'), math.Float32bits(v))
	case float64:
		return be.AppendUint64(append(dst, 'd'), math.Float64bits(v))
	case amqp.Decimal:
		return be.AppendUint32(append(dst, 'D', v.Scale), uint32(v.Value))
	case string:
		dst = be.AppendUint32(append(dst, 'S'), uint32(len(v)))
		return append(dst, v...)
	case []byte:
		dst = be.AppendUint32(append(dst, 'x'), uint32(len(v)))
		return append(dst, v...)
	case time.Time:
		return be.AppendUint64(append(dst, 'T'), uint64(v.Unix()))
	case rawValue:
		return append(dst, v...)
	case orderedTable:
		return appendFieldTable(append(dst, 'F'), v)
	case amqp.Table:
		return appendFieldTable(append(dst, 'F'), sortedTable(v))
	case map[string]any:
		return appendFieldTable(append(dst, 'F'), sortedTable(v))
	case []any:
		dst = append(dst, 'A', 0, 0, 0, 0)
		start := len(dst)
		for _, e := range v {
			dst = appendFieldValue(dst, e)
		}
		be.PutUint32(dst[start-4:], uint32(len(dst)-start))
		return dst
	}
	return append(dst, 'V') // no AMQP type: cannot come from a decoded table
}

// withHeader returns a copy of m whose headers property has key set to v
// (encoded with its type kept, so an int64 is a long), the other
// properties and headers unchanged byte for byte.
func (m *message) withHeader(key string, v any) *message {
	p, err := amqp.DecodeProperties(m.props)
	if err != nil {
		return m
	}
	headers := amqp.Table{}
	raw := rawHeaders(m.props)
	for k, hv := range p.Headers {
		if r, ok := raw[k]; ok {
			headers[k] = r
		} else {
			headers[k] = hv
		}
	}
	headers[key] = v
	p.Headers = nil
	p.Flags &^= amqp.FlagHeaders
	props, err := p.Append(nil)
	if err != nil {
		return m
	}
	return &message{exchange: m.exchange, routingKey: m.routingKey, props: spliceHeaders(props, headers), body: m.body,
		ttl: m.ttl, priority: m.priority, persistent: m.persistent} // a fresh message: refs starts at 0
}

// rawValue is an encoded field value (type letter and value), written as
// is.
type rawValue []byte

// rawHeaders returns the encoded values of the headers property of raw
// content properties, by key; nil if absent or malformed.
func rawHeaders(props []byte) map[string]rawValue {
	if len(props) < 2 {
		return nil
	}
	flags := binary.BigEndian.Uint16(props)
	if flags&amqp.FlagHeaders == 0 || flags&1 != 0 {
		return nil
	}
	b := props[2:]
	for _, f := range []uint16{amqp.FlagContentType, amqp.FlagContentEncoding} {
		if flags&f != 0 {
			if len(b) < 1 || len(b) < 1+int(b[0]) {
				return nil
			}
			b = b[1+int(b[0]):]
		}
	}
	if len(b) < 4 {
		return nil
	}
	n := binary.BigEndian.Uint32(b)
	if uint64(n) > uint64(len(b)-4) {
		return nil
	}
	b = b[4 : 4+n]
	out := map[string]rawValue{}
	for len(b) > 0 {
		kl := int(b[0])
		if len(b) < 1+kl {
			return nil
		}
		k := string(b[1 : 1+kl])
		b = b[1+kl:]
		vl := fieldValueLen(b)
		if vl < 0 {
			return nil
		}
		out[k] = rawValue(b[:vl])
		b = b[vl:]
	}
	return out
}

// rawArray splits an encoded array value ('A') into its encoded elements;
// nil if v is not a well-formed array.
func rawArray(v rawValue) []any {
	if len(v) < 5 || v[0] != 'A' {
		return nil
	}
	b := v[5:]
	if uint64(binary.BigEndian.Uint32(v[1:])) != uint64(len(b)) {
		return nil
	}
	var out []any
	for len(b) > 0 {
		n := fieldValueLen(b)
		if n < 0 {
			return nil
		}
		out = append(out, rawValue(b[:n]))
		b = b[n:]
	}
	return out
}

// fieldValueLen is the encoded length of the field value (type letter
// included) at the start of b, or -1 if it is malformed.
func fieldValueLen(b []byte) int {
	if len(b) < 1 {
		return -1
	}
	n := 0
	switch b[0] {
	case 'V':
	case 't', 'b', 'B':
		n = 1
	case 's', 'u':
		n = 2
	case 'I', 'i', 'f':
		n = 4
	case 'D':
		n = 5
	case 'l', 'L', 'd', 'T':
		n = 8
	case 'S', 'x', 'A', 'F':
		if len(b) < 5 {
			return -1
		}
		l := binary.BigEndian.Uint32(b[1:])
		if uint64(l) > uint64(len(b)-5) {
			return -1
		}
		n = 4 + int(l)
	default:
		return -1
	}
	if len(b) < 1+n {
		return -1
	}
	return 1 + n
}
