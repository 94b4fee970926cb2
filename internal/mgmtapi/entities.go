package mgmtapi

import (
	"encoding/base64"
	"hash/fnv"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"substrate/broker"
)

// ---- exchanges ----

func (a *API) exchangeObj(vhost string, x broker.ExchangeInfo) obj {
	o := obj{
		"name": x.Name, "vhost": vhost, "type": x.Type, "durable": x.Durable,
		"auto_delete": x.AutoDelete, "internal": x.Internal, "arguments": argsObj(x.Arguments),
		"user_who_performed_action": "rmq-internal",
	}
	if x.Policy != "" {
		o["policy"] = x.Policy
	}
	return o
}

func (a *API) exchanges(w http.ResponseWriter, r *http.Request, rq *request) {
	var out []obj
	for _, vh := range a.vhostsOf(rq) {
		for _, x := range a.b.Exchanges(vh) {
			out = append(out, a.exchangeObj(vh, x))
		}
	}
	a.list(w, rq, out)
}

// exchangeName maps the API's name of the default exchange, amq.default,
// to "".
func exchangeName(name string) string {
	if name == "amq.default" {
		return ""
	}
	return name
}

func (a *API) findExchange(vhost, name string) (broker.ExchangeInfo, bool) {
	name = exchangeName(name)
	for _, x := range a.b.Exchanges(vhost) {
		if x.Name == name {
			return x, true
		}
	}
	return broker.ExchangeInfo{}, false
}

func (a *API) exchange(w http.ResponseWriter, r *http.Request, rq *request) {
	x, ok := a.findExchange(rq.v("vhost"), rq.v("name"))
	if !ok {
		notFound(w)
		return
	}
	o := a.exchangeObj(rq.v("vhost"), x)
	o["incoming"], o["outgoing"] = []obj{}, []obj{}
	a.one(w, rq, o)
}

func (a *API) putExchange(w http.ResponseWriter, r *http.Request, rq *request) {
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	kind := strArg(body, "type")
	if kind == "" {
		kind = "direct"
	}
	name := rq.v("name")
	_, existed := a.findExchange(rq.v("vhost"), name)
	a.withDirect(w, r, rq, rq.v("vhost"), directError, func(d *direct, w http.ResponseWriter) error {
		err := d.ch.ExchangeDeclare(name, kind, boolArg(body, "durable", false), boolArg(body, "auto_delete", false),
			boolArg(body, "internal", false), false, toTable(body["arguments"]))
		if err == nil {
			noContent(w, !existed)
		}
		return err
	})
}

func (a *API) deleteExchange(w http.ResponseWriter, r *http.Request, rq *request) {
	name := rq.v("name")
	if _, ok := a.findExchange(rq.v("vhost"), name); !ok {
		notFound(w)
		return
	}
	ifUnused := rq.params.Get("if-unused") == "true"
	a.withDirect(w, r, rq, rq.v("vhost"), directError, func(d *direct, w http.ResponseWriter) error {
		err := d.ch.ExchangeDelete(exchangeName(name), ifUnused, false)
		if err == nil {
			noContent(w, false)
		}
		return err
	})
}

// ---- queues ----

// queueObj is a classic queue as RabbitMQ 3.10's /api/queues shows it.
// Erlang process figures (reductions, garbage_collection,
// backing_queue_status) are approximations: see fields.go.
func (a *API) queueObj(q broker.QueueInfo) obj {
	k := "queue\x00" + q.VHost + "\x00" + q.Name
	policy := func(s string) any {
		if s == "" {
			return nil
		}
		return s
	}
	eff := obj{}
	for key, v := range q.EffectivePolicy {
		eff[key] = v
	}
	var consumerUtil float64
	if q.Consumers > 0 {
		consumerUtil = 1
	}
	o := obj{
		"name": q.Name, "vhost": q.VHost, "durable": q.Durable, "auto_delete": q.AutoDelete,
		"exclusive": q.Exclusive, "arguments": argsObj(q.Arguments), "node": a.cfg.Node,
		"type": q.Type, "state": q.State,
		"policy": policy(q.Policy), "operator_policy": policy(q.OperatorPolicy),
		"effective_policy_definition": eff,
		"exclusive_consumer_tag":      nullStr(q.ExclusiveConsumerTag), "single_active_consumer_tag": nullStr(q.SingleActiveConsumerTag),
		"head_message_timestamp": nil, "recoverable_slaves": nil,
		"consumers": q.Consumers, "consumer_capacity": consumerUtil, "consumer_utilisation": consumerUtil,
		"memory":   q.MemoryBytes,
		"messages": q.Messages, "messages_ready": q.MessagesReady, "messages_unacknowledged": q.MessagesUnacknowledged,
		"messages_details":                a.sampler.details(k, "messages"),
		"messages_ready_details":          a.sampler.details(k, "messages_ready"),
		"messages_unacknowledged_details": a.sampler.details(k, "messages_unacknowledged"),
		"messages_persistent":             q.MessagesPersistent,
		"messages_ram":                    q.Messages, "messages_ready_ram": q.MessagesReady,
		"messages_unacknowledged_ram": q.MessagesUnacknowledged,
		"messages_paged_out":          0,
		"message_bytes":               q.MessageBytes, "message_bytes_ready": q.MessageBytesReady,
		"message_bytes_unacknowledged": q.MessageBytesUnacknowledged,
		"message_bytes_persistent":     q.MessageBytesPersistent, "message_bytes_ram": q.MessageBytesRAM,
		"message_bytes_paged_out": max(0, q.MessageBytes-q.MessageBytesRAM),
		"message_stats":           a.messageStats(k, q.MessageStats, queueStatKeys),
		"reductions":              0, "reductions_details": obj{"rate": 0.0},
		"garbage_collection": gcObj(),
		"backing_queue_status": obj{
			"mode": "default", "version": 1, "len": q.MessagesReady, "q1": 0, "q2": 0, "q3": 0, "q4": q.MessagesReady,
			"delta": []any{"delta", "undefined", 0, 0, "undefined"}, "target_ram_count": "infinity",
			"next_seq_id": q.MessageStats.Publish, "next_deliver_seq_id": q.MessageStats.DeliverGet,
			"avg_ingress_rate": a.sampler.rate(k, "publish"), "avg_egress_rate": a.sampler.rate(k, "deliver_get"),
			"avg_ack_ingress_rate": a.sampler.rate(k, "deliver_get"), "avg_ack_egress_rate": a.sampler.rate(k, "ack"),
		},
	}
	// A classic queue under an ha-mode policy is a mirrored queue in
	// RabbitMQ; substrate has one node, so it has no mirrors.
	if _, ok := q.EffectivePolicy["ha-mode"]; ok {
		o["slave_nodes"], o["synchronised_slave_nodes"] = []string{}, []string{}
		bqs := o["backing_queue_status"].(obj)
		bqs["mirror_seen"], bqs["mirror_senders"] = 0, 0
	}
	if !q.IdleSince.IsZero() {
		o["idle_since"] = formatTime(q.IdleSince)
	}
	if q.Type == "quorum" {
		quorumFields(o, a.cfg.Node)
		o["single_active_consumer_ctag"] = nullStr(q.SingleActiveConsumerTag)
	}
	return o
}

// quorumFields makes o a quorum queue as RabbitMQ shows one: a Raft
// group (here of one member, this node) without a classic backing queue.
func quorumFields(o obj, node string) {
	for _, k := range []string{"backing_queue_status", "messages_paged_out", "message_bytes_paged_out", "recoverable_slaves",
		"exclusive_consumer_tag", "single_active_consumer_tag", "head_message_timestamp", "idle_since",
		"messages_ready_ram", "messages_unacknowledged_ram", "slave_nodes", "synchronised_slave_nodes"} {
		delete(o, k)
	}
	o["leader"], o["members"], o["online"] = node, []string{node}, []string{node}
	o["open_files"] = obj{node: 0}
	o["messages_dlx"], o["message_bytes_dlx"] = 0, 0
}

// formatTime is RabbitMQ's idle_since format.
func formatTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000+00:00") }

// gcObj is garbage_collection of an Erlang process: substrate's objects
// are not processes; the values are Erlang's defaults.
func gcObj() obj {
	return obj{"fullsweep_after": 65535, "max_heap_size": 0, "min_bin_vheap_size": 46422, "min_heap_size": 233, "minor_gcs": 0}
}

func (a *API) queues(w http.ResponseWriter, r *http.Request, rq *request) {
	var out []obj
	for _, vh := range a.vhostsOf(rq) {
		for _, q := range a.b.Queues(vh) {
			out = append(out, a.queueObj(q))
		}
	}
	a.list(w, rq, out)
}

func (a *API) findQueue(vhost, name string) (broker.QueueInfo, bool) {
	return a.b.QueueInfo(vhost, name)
}

func (a *API) queue(w http.ResponseWriter, r *http.Request, rq *request) {
	q, ok := a.findQueue(rq.v("vhost"), rq.v("name"))
	if !ok {
		notFound(w)
		return
	}
	o := a.queueObj(q)
	details := []obj{}
	for _, c := range a.b.Consumers() {
		if c.VHost == q.VHost && c.Queue == q.Name {
			details = append(details, a.consumerObj(c))
		}
	}
	o["consumer_details"], o["deliveries"], o["incoming"] = details, []obj{}, []obj{}
	a.one(w, rq, o)
}

func (a *API) putQueue(w http.ResponseWriter, r *http.Request, rq *request) {
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	name := rq.v("name")
	_, existed := a.findQueue(rq.v("vhost"), name)
	a.withDirect(w, r, rq, rq.v("vhost"), directError, func(d *direct, w http.ResponseWriter) error {
		_, err := d.ch.QueueDeclare(name, boolArg(body, "durable", false), boolArg(body, "auto_delete", false),
			false, false, toTable(body["arguments"]))
		if err == nil {
			noContent(w, !existed)
		}
		return err
	})
}

func (a *API) deleteQueue(w http.ResponseWriter, r *http.Request, rq *request) {
	name := rq.v("name")
	if _, ok := a.findQueue(rq.v("vhost"), name); !ok {
		notFound(w)
		return
	}
	ifUnused, ifEmpty := rq.params.Get("if-unused") == "true", rq.params.Get("if-empty") == "true"
	a.withDirect(w, r, rq, rq.v("vhost"), directError, func(d *direct, w http.ResponseWriter) error {
		_, err := d.ch.QueueDelete(name, ifUnused, ifEmpty, false)
		if err == nil {
			noContent(w, false)
		}
		return err
	})
}

func (a *API) purgeQueue(w http.ResponseWriter, r *http.Request, rq *request) {
	name := rq.v("name")
	if _, ok := a.findQueue(rq.v("vhost"), name); !ok {
		notFound(w)
		return
	}
	a.withDirect(w, r, rq, rq.v("vhost"), directError, func(d *direct, w http.ResponseWriter) error {
		_, err := d.ch.QueuePurge(name, false)
		if err == nil {
			noContent(w, false)
		}
		return err
	})
}

// ---- bindings ----

// propertiesKey is a binding's properties_key, as RabbitMQ forms it: the
// routing key URL-quoted ("~" when empty), and with arguments "~" and a
// hash of them.
func propertiesKey(key string, args map[string]any) string {
	pk := "~"
	if key != "" {
		pk = strings.ReplaceAll(url.QueryEscape(key), "+", "%20")
	}
	if len(args) == 0 {
		return pk
	}
	h := fnv.New32a()
	keys := make([]string, 0, len(args))
	for k := range args {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		h.Write([]byte(k))
		h.Write([]byte{0})
		h.Write([]byte(strconvAny(args[k])))
		h.Write([]byte{0})
	}
	return pk + "~" + strings.TrimRight(base64.URLEncoding.EncodeToString(h.Sum(nil)), "=")
}

func strconvAny(v any) string {
	switch t := v.(type) {
	case string:
		return t
	case int64:
		return strconv.FormatInt(t, 10)
	case bool:
		return strconv.FormatBool(t)
	}
	return ""
}

func bindingObj(b broker.BindingDef) obj {
	return obj{
		"source": b.Source, "vhost": b.VHost, "destination": b.Destination, "destination_type": b.DestinationType,
		"routing_key": b.RoutingKey, "arguments": argsObj(b.Arguments), "properties_key": propertiesKey(b.RoutingKey, b.Arguments),
	}
}

// allBindings lists a vhost's bindings with the default exchange's
// implicit one to each queue first, as RabbitMQ lists them.
func (a *API) allBindings(vhost string) []broker.BindingDef {
	var out []broker.BindingDef
	for _, q := range a.b.Queues(vhost) {
		out = append(out, broker.BindingDef{VHost: vhost, Source: "", Destination: q.Name, DestinationType: "queue", RoutingKey: q.Name})
	}
	return append(out, a.b.Bindings(vhost)...)
}

// bindingList answers bindings unsorted (they have no name): in the
// order allBindings gives.
func (a *API) bindingList(w http.ResponseWriter, rq *request, bs []broker.BindingDef) {
	out := []obj{}
	for _, b := range bs {
		out = append(out, bindingObj(b))
	}
	if rq.params.Has("sort") || rq.params.Has("page") {
		a.list(w, rq, out)
		return
	}
	writeJSON(w, http.StatusOK, columns(out, rq.params.Get("columns")))
}

func (a *API) bindings(w http.ResponseWriter, r *http.Request, rq *request) {
	var bs []broker.BindingDef
	for _, vh := range a.vhostsOf(rq) {
		bs = append(bs, a.allBindings(vh)...)
	}
	a.bindingList(w, rq, bs)
}

func (a *API) filterBindings(vhost string, keep func(broker.BindingDef) bool) []broker.BindingDef {
	var out []broker.BindingDef
	for _, b := range a.allBindings(vhost) {
		if keep(b) {
			out = append(out, b)
		}
	}
	return out
}

func (a *API) exchangeBindings(dir string) handler {
	return func(w http.ResponseWriter, r *http.Request, rq *request) {
		vh, name := rq.v("vhost"), exchangeName(rq.v("name"))
		if _, ok := a.findExchange(vh, name); !ok {
			notFound(w)
			return
		}
		a.bindingList(w, rq, a.filterBindings(vh, func(b broker.BindingDef) bool {
			if dir == "source" {
				return b.Source == name
			}
			return b.DestinationType == "exchange" && b.Destination == name
		}))
	}
}

func (a *API) queueBindings(w http.ResponseWriter, r *http.Request, rq *request) {
	vh, name := rq.v("vhost"), rq.v("name")
	if _, ok := a.findQueue(vh, name); !ok {
		notFound(w)
		return
	}
	a.bindingList(w, rq, a.filterBindings(vh, func(b broker.BindingDef) bool {
		return b.DestinationType == "queue" && b.Destination == name
	}))
}

func destType(t string) string {
	if t == "q" {
		return "queue"
	}
	return "exchange"
}

// endpointsExist answers 404 unless the source exchange and the
// destination exist.
func (a *API) endpointsExist(w http.ResponseWriter, rq *request, t string) bool {
	vh := rq.v("vhost")
	if !a.vhostExists(vh) {
		notFound(w)
		return false
	}
	if _, ok := a.findExchange(vh, rq.v("source")); !ok {
		notFound(w)
		return false
	}
	var ok bool
	if t == "q" {
		_, ok = a.findQueue(vh, rq.v("destination"))
	} else {
		_, ok = a.findExchange(vh, rq.v("destination"))
	}
	if !ok {
		notFound(w)
	}
	return ok
}

func (a *API) between(rq *request, t string) []broker.BindingDef {
	src, dst := exchangeName(rq.v("source")), rq.v("destination")
	return a.filterBindings(rq.v("vhost"), func(b broker.BindingDef) bool {
		return b.Source == src && b.Destination == dst && b.DestinationType == destType(t)
	})
}

func (a *API) bindingsBetween(t string) handler {
	return func(w http.ResponseWriter, r *http.Request, rq *request) {
		if !a.endpointsExist(w, rq, t) {
			return
		}
		a.bindingList(w, rq, a.between(rq, t))
	}
}

func (a *API) findBinding(rq *request, t string) (broker.BindingDef, bool) {
	for _, b := range a.between(rq, t) {
		if propertiesKey(b.RoutingKey, b.Arguments) == rq.v("props") {
			return b, true
		}
	}
	return broker.BindingDef{}, false
}

func (a *API) binding(t string) handler {
	return func(w http.ResponseWriter, r *http.Request, rq *request) {
		b, ok := a.findBinding(rq, t)
		if !ok {
			notFound(w)
			return
		}
		a.one(w, rq, bindingObj(b))
	}
}

// bind is POST /api/bindings/{vhost}/e/{source}/{q|e}/{destination}: 201
// with a Location naming the new binding's properties key.
func (a *API) bind(t string) handler {
	return func(w http.ResponseWriter, r *http.Request, rq *request) {
		body, ok := readBody(w, r)
		if !ok {
			return
		}
		src, dst := exchangeName(rq.v("source")), rq.v("destination")
		key, args := strArg(body, "routing_key"), toTable(body["arguments"])
		a.withDirect(w, r, rq, rq.v("vhost"), directError, func(d *direct, w http.ResponseWriter) error {
			var err error
			if t == "q" {
				err = d.ch.QueueBind(dst, key, src, false, args)
			} else {
				err = d.ch.ExchangeBind(dst, key, src, false, args)
			}
			if err == nil {
				w.Header().Set("Location", url.PathEscape(dst)+"/"+url.PathEscape(propertiesKey(key, fromTable(args))))
				w.WriteHeader(http.StatusCreated)
			}
			return err
		})
	}
}

func fromTable(t amqp.Table) map[string]any {
	if len(t) == 0 {
		return nil
	}
	return map[string]any(t)
}

func (a *API) unbind(t string) handler {
	return func(w http.ResponseWriter, r *http.Request, rq *request) {
		b, ok := a.findBinding(rq, t)
		if !ok {
			notFound(w)
			return
		}
		a.withDirect(w, r, rq, rq.v("vhost"), directError, func(d *direct, w http.ResponseWriter) error {
			var err error
			if t == "q" {
				err = d.ch.QueueUnbind(b.Destination, b.RoutingKey, b.Source, amqp.Table(b.Arguments))
			} else {
				err = d.ch.ExchangeUnbind(b.Destination, b.RoutingKey, b.Source, false, amqp.Table(b.Arguments))
			}
			if err == nil {
				noContent(w, false)
			}
			return err
		})
	}
}
