package mgmtapi

import (
	"math"
	"strconv"
	"sync"
	"time"

	"substrate/broker"
)

// sampler keeps the last two samples of every counter the API shows a
// rate for; a counter is named by its object's key and its field.
type sampler struct {
	mu         sync.Mutex
	prev, last sample
	// active is when each channel's counters last changed (from the
	// samples; first seen counts as a change), for idle_since.
	active map[string]time.Time
}

type sample struct {
	at       time.Time
	vals     map[string]float64
	activity map[string]float64
}

func newSampler() *sampler { return &sampler{active: map[string]time.Time{}} }

// take stores a sample; activity maps each channel's key to the sum of
// its counters, which tells when it was last active.
func (s *sampler) take(vals map[string]float64, activity map[string]float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	prevActivity := s.last.activity
	s.prev, s.last = s.last, sample{at: now, vals: vals, activity: activity}
	for k, v := range activity {
		if old, ok := prevActivity[k]; !ok || old != v {
			s.active[k] = now
		}
	}
	for k := range s.active {
		if _, ok := activity[k]; !ok {
			delete(s.active, k)
		}
	}
}

// idleSince is when the channel was last seen active; zero if it was
// active in the last interval (or is not known yet).
func (s *sampler) idleSince(key string) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.active[key]
	if !ok || !t.Before(s.last.at) {
		return time.Time{}
	}
	return t
}

// rate is the counter's change per second between the last two samples,
// rounded to 0.1 as RabbitMQ's are; 0 until there are two, or when the
// object is new or the counter went back.
func (s *sampler) rate(obj, field string) float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.prev.vals == nil {
		return 0
	}
	k := obj + "\x00" + field
	_, ok1 := s.last.vals[present+obj]
	_, ok0 := s.prev.vals[present+obj]
	v1, v0 := s.last.vals[k], s.prev.vals[k] // absent: 0
	dt := s.last.at.Sub(s.prev.at).Seconds()
	if !ok0 || !ok1 || dt <= 0 {
		return 0
	}
	r := (v1 - v0) / dt
	if r < 0 && !gauges[field] {
		return 0
	}
	return math.Round(r*10) / 10
}

// gauges are the sampled values that may go down (their rate is a
// change, which can be negative).
var gauges = map[string]bool{"messages": true, "messages_ready": true, "messages_unacknowledged": true,
	"mem_used": true, "disk_free": true, "fd_used": true, "proc_used": true, "sockets_used": true}

func (s *sampler) details(obj, field string) map[string]any {
	return map[string]any{"rate": s.rate(obj, field)}
}

// statField is one message_stats key and its counter.
type statField struct {
	name string
	get  func(m broker.MessageStats) uint64
}

var (
	fPublish  = statField{"publish", func(m broker.MessageStats) uint64 { return m.Publish }}
	fConfirm  = statField{"confirm", func(m broker.MessageStats) uint64 { return m.Confirm }}
	fReturn   = statField{"return_unroutable", func(m broker.MessageStats) uint64 { return m.ReturnUnroutable }}
	fDrop     = statField{"drop_unroutable", func(m broker.MessageStats) uint64 { return m.DropUnroutable }}
	fDeliver  = statField{"deliver", func(m broker.MessageStats) uint64 { return m.Deliver }}
	fDelNoAck = statField{"deliver_no_ack", func(m broker.MessageStats) uint64 { return m.DeliverNoAck }}
	fGet      = statField{"get", func(m broker.MessageStats) uint64 { return m.Get }}
	fGetNoAck = statField{"get_no_ack", func(m broker.MessageStats) uint64 { return m.GetNoAck }}
	fGetEmpty = statField{"get_empty", func(m broker.MessageStats) uint64 { return m.GetEmpty }}
	fRedel    = statField{"redeliver", func(m broker.MessageStats) uint64 { return m.Redeliver }}
	fAck      = statField{"ack", func(m broker.MessageStats) uint64 { return m.Ack }}
	fDelGet   = statField{"deliver_get", func(m broker.MessageStats) uint64 { return m.DeliverGet }}
)

// The message_stats keys RabbitMQ 3.10 shows per kind of object.
var (
	queueStatKeys    = []statField{fAck, fDeliver, fDelGet, fDelNoAck, fGet, fGetEmpty, fGetNoAck, fPublish, fRedel}
	channelStatKeys  = []statField{fAck, fConfirm, fDeliver, fDelGet, fDelNoAck, fDrop, fGet, fGetEmpty, fGetNoAck, fPublish, fRedel, fReturn}
	overviewStatKeys = channelStatKeys
)

// messageStats is a message_stats object: each counter and its
// *_details rate.
func (a *API) messageStats(key string, m broker.MessageStats, fields []statField) obj {
	o := obj{}
	for _, f := range fields {
		o[f.name] = f.get(m)
		o[f.name+"_details"] = a.sampler.details(key, f.name)
	}
	return o
}

func putStats(vals map[string]float64, key string, m broker.MessageStats, fields []statField) {
	for _, f := range fields {
		put(vals, key, f.name, float64(f.get(m)))
	}
}

// present prefixes the key that marks an object as sampled; its counters
// are kept only when not 0 (absent reads as 0), so that thousands of idle
// connections, channels and queues cost one entry each per sample.
const present = "\x01"

func put(vals map[string]float64, obj, field string, v float64) {
	vals[present+obj] = 0
	if v != 0 {
		vals[obj+"\x00"+field] = v
	}
}

// collect reads every counter shown with a rate, and each channel's
// activity (the sum of its counters).
func (a *API) collect() (vals, activity map[string]float64) {
	vals, activity = map[string]float64{}, map[string]float64{}
	ov := a.b.Overview()
	putStats(vals, "overview", ov.MessageStats, overviewStatKeys)
	put(vals, "overview", "messages", float64(ov.QueueTotals.Messages))
	put(vals, "overview", "messages_ready", float64(ov.QueueTotals.MessagesReady))
	put(vals, "overview", "messages_unacknowledged", float64(ov.QueueTotals.MessagesUnacknowledged))
	for f, v := range churnFields(ov.Churn) {
		put(vals, "overview", f, float64(v))
		put(vals, "node", f, float64(v))
	}
	for f, v := range nodeGauges(a.b) {
		put(vals, "node", f, v)
	}
	for _, vh := range a.b.VHosts() {
		var msgs, ready, unacked int
		for _, q := range a.b.Queues(vh) {
			k := "queue\x00" + vh + "\x00" + q.Name
			putStats(vals, k, q.MessageStats, queueStatKeys)
			put(vals, k, "messages", float64(q.Messages))
			put(vals, k, "messages_ready", float64(q.MessagesReady))
			put(vals, k, "messages_unacknowledged", float64(q.MessagesUnacknowledged))
			msgs, ready, unacked = msgs+q.Messages, ready+q.MessagesReady, unacked+q.MessagesUnacknowledged
		}
		k := "vhost\x00" + vh
		put(vals, k, "messages", float64(msgs))
		put(vals, k, "messages_ready", float64(ready))
		put(vals, k, "messages_unacknowledged", float64(unacked))
	}
	for _, c := range a.b.ConnectionStats() { // without client properties: no decoding every 5 s
		k := "conn\x00" + strconv.FormatUint(c.ID, 10)
		put(vals, k, "recv_oct", float64(c.RecvOct))
		put(vals, k, "send_oct", float64(c.SendOct))
	}
	for vh, st := range a.b.VHostStats() {
		k := "vhost\x00" + vh
		put(vals, k, "recv_oct", float64(st.Net.RecvOct))
		put(vals, k, "send_oct", float64(st.Net.SendOct))
		putStats(vals, k, st.MessageStats, channelStatKeys)
	}
	for _, ch := range a.b.Channels() {
		putStats(vals, "chan\x00"+ch.Name, ch.MessageStats, channelStatKeys)
		m := ch.MessageStats
		activity["chan\x00"+ch.Name] = float64(m.Publish + m.DeliverGet + m.Ack + m.GetEmpty + m.Confirm)
	}
	return vals, activity
}

// churnFields are overview's churn_rates counters by their keys.
func churnFields(c broker.ChurnStats) map[string]uint64 {
	return map[string]uint64{
		"connection_created": c.ConnectionCreated, "connection_closed": c.ConnectionClosed,
		"channel_created": c.ChannelCreated, "channel_closed": c.ChannelClosed,
		"queue_declared": c.QueueDeclared, "queue_created": c.QueueCreated, "queue_deleted": c.QueueDeleted,
	}
}

// vhostStats adds a vhost's traffic and message_stats (those of its
// connections and channels, the closed ones' included) to o.
func (a *API) vhostStats(o obj, vhost string, st broker.VHostStats) {
	k := "vhost\x00" + vhost
	o["recv_oct"], o["send_oct"] = st.Net.RecvOct, st.Net.SendOct
	o["recv_oct_details"], o["send_oct_details"] = a.sampler.details(k, "recv_oct"), a.sampler.details(k, "send_oct")
	o["message_stats"] = a.messageStats(k, st.MessageStats, channelStatKeys)
}
