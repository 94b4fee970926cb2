package mgmtapi

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	amqp "github.com/rabbitmq/amqp091-go"
)

// direct is an AMQP connection to the broker opened for one request as its
// user, as RabbitMQ's management plugin's direct connection.
type direct struct {
	conn *amqp.Connection
	ch   *amqp.Channel
	gone <-chan struct{} // closed when the broker has forgotten the connection
}

// directTimeout bounds one request's AMQP exchange with the broker.
const directTimeout = 30 * time.Second

// openDirect opens a direct connection and a channel on vhost as rq's
// user, from r's peer address (so the default user's loopback rule
// applies as over TCP).
func (a *API) openDirect(r *http.Request, rq *request, vhost string) (*direct, error) {
	peer, _ := net.ResolveTCPAddr("tcp", r.RemoteAddr)
	var local net.Addr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}
	if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		local = la
	}
	if peer == nil {
		peer = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}
	}
	nc, gone, err := a.b.DirectConn(peer, local)
	if err != nil {
		return nil, err
	}
	nc.SetDeadline(time.Now().Add(directTimeout))
	c, err := amqp.Open(nc, amqp.Config{
		SASL:       []amqp.Authentication{&amqp.PlainAuth{Username: rq.user.Name, Password: rq.pass}},
		Vhost:      vhost,
		Heartbeat:  0,
		Locale:     "en_US",
		Properties: amqp.Table{"product": "substrate management API", "connection_name": "management API: " + rq.user.Name},
	})
	if err != nil {
		nc.Close()
		return nil, err
	}
	ch, err := c.Channel()
	if err != nil {
		c.Close()
		return nil, err
	}
	return &direct{conn: c, ch: ch, gone: gone}, nil
}

// close closes the connection and waits (a little) until the broker no
// longer lists it, so that the reply to the request never races its own
// connection into a listing, as RabbitMQ's direct connections do not.
func (d *direct) close() {
	d.conn.Close()
	select {
	case <-d.gone:
	case <-time.After(5 * time.Second):
	}
}

// amqpReason splits a broker reply text "NOT_FOUND - no queue 'q' in
// vhost '/'" into its text after the code name.
func amqpReason(e *amqp.Error) string {
	if _, rest, ok := strings.Cut(e.Reason, " - "); ok {
		return rest
	}
	return e.Reason
}

// directError answers an error of a declare, delete, bind or purge as
// rabbit_mgmt_util:direct_request does: access refused is 401 "Access
// refused.", not found 404 with the broker's text, anything else 400
// with it.
func directError(w http.ResponseWriter, err error) {
	var e *amqp.Error
	if !errors.As(err, &e) {
		badRequest(w, err.Error())
		return
	}
	switch e.Code {
	case amqp.AccessRefused, amqp.NotAllowed:
		notAuthorised(w, "Access refused.")
	case amqp.NotFound:
		writeError(w, http.StatusNotFound, "not_found", amqpReason(e))
	default:
		badRequest(w, amqpReason(e))
	}
}

// channelError answers an error of a get as rabbit_mgmt_util:with_channel
// does: the broker's whole text.
func channelError(w http.ResponseWriter, err error) {
	var e *amqp.Error
	if !errors.As(err, &e) {
		badRequest(w, err.Error())
		return
	}
	switch e.Code {
	case amqp.AccessRefused, amqp.NotAllowed:
		notAuthorised(w, e.Reason)
	case amqp.NotFound:
		writeError(w, http.StatusNotFound, "not_found", e.Reason)
	default:
		badRequest(w, e.Reason)
	}
}

// withDirect runs f on a direct connection to vhost and answers its error
// with onErr; f answers success itself.
//
// The reply is held until the connection is gone, so that a client never
// sees its request's own connection in a listing it makes next.
func (a *API) withDirect(w http.ResponseWriter, r *http.Request, rq *request, vhost string, onErr func(http.ResponseWriter, error), f func(d *direct, w http.ResponseWriter) error) {
	if !a.vhostExists(vhost) {
		writeError(w, http.StatusNotFound, "not_found", "vhost_not_found")
		return
	}
	d, err := a.openDirect(r, rq, vhost)
	if err != nil {
		onErr(w, err)
		return
	}
	rec := &recorder{h: http.Header{}}
	if err := f(d, rec); err != nil {
		onErr(rec, err)
	}
	d.close()
	rec.replay(w)
}

// recorder holds a reply until replay writes it.
type recorder struct {
	h      http.Header
	status int
	body   []byte
}

func (rc *recorder) Header() http.Header { return rc.h }

func (rc *recorder) WriteHeader(status int) {
	if rc.status == 0 {
		rc.status = status
	}
}

func (rc *recorder) Write(b []byte) (int, error) {
	if rc.status == 0 {
		rc.status = http.StatusOK
	}
	rc.body = append(rc.body, b...)
	return len(b), nil
}

func (rc *recorder) replay(w http.ResponseWriter) {
	for k, v := range rc.h {
		w.Header()[k] = v
	}
	if rc.status == 0 {
		rc.status = http.StatusOK
	}
	w.WriteHeader(rc.status)
	w.Write(rc.body)
}

// ---- JSON <-> AMQP values ----

// toAMQP converts a decoded JSON value to an AMQP field value as
// rabbit_mgmt_format does: integers are longs, other numbers doubles,
// objects tables, arrays arrays.
func toAMQP(v any) any {
	switch t := v.(type) {
	case json.Number:
		if i, err := t.Int64(); err == nil {
			return i
		}
		f, _ := t.Float64()
		return f
	case map[string]any:
		out := amqp.Table{}
		for k, e := range t {
			out[k] = toAMQP(e)
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			out[i] = toAMQP(e)
		}
		return out
	}
	return v
}

func toTable(v any) amqp.Table {
	m, ok := v.(map[string]any)
	if !ok {
		return nil
	}
	return toAMQP(m).(amqp.Table)
}

// fromAMQP converts an AMQP field value for JSON (byte arrays as strings,
// decimals as numbers, times as seconds).
func fromAMQP(v any) any {
	switch t := v.(type) {
	case amqp.Table:
		return fromAMQP(map[string]any(t))
	case map[string]any:
		out := obj{}
		for k, e := range t {
			out[k] = fromAMQP(e)
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			out[i] = fromAMQP(e)
		}
		return out
	case []byte:
		return string(t)
	case time.Time:
		return t.Unix()
	case amqp.Decimal:
		f := float64(t.Value)
		for i := uint8(0); i < t.Scale; i++ {
			f /= 10
		}
		return f
	}
	return v
}

// argsObj is an arguments table for JSON: {} when empty.
func argsObj(t map[string]any) obj {
	out := obj{}
	for k, v := range t {
		out[k] = fromAMQP(v)
	}
	return out
}

// ---- publish ----

func intField(v any) (int64, bool) {
	switch t := v.(type) {
	case json.Number:
		i, err := t.Int64()
		return i, err == nil
	case string:
		var i int64
		_, err := fmt.Sscan(t, &i)
		return i, err == nil
	}
	return 0, false
}

// publishing builds a message from the API's properties object (the
// basic properties by their AMQP names).
func publishing(props map[string]any, body []byte) amqp.Publishing {
	p := amqp.Publishing{Body: body}
	s := func(k string) string { v, _ := props[k].(string); return v }
	p.ContentType, p.ContentEncoding = s("content_type"), s("content_encoding")
	p.CorrelationId, p.ReplyTo, p.Expiration = s("correlation_id"), s("reply_to"), s("expiration")
	p.MessageId, p.Type, p.UserId, p.AppId = s("message_id"), s("type"), s("user_id"), s("app_id")
	if n, ok := intField(props["delivery_mode"]); ok {
		p.DeliveryMode = uint8(n)
	}
	if n, ok := intField(props["priority"]); ok {
		p.Priority = uint8(n)
	}
	if n, ok := intField(props["timestamp"]); ok {
		p.Timestamp = time.Unix(n, 0)
	}
	p.Headers = toTable(props["headers"])
	return p
}

// propsObj is a delivery's properties as RabbitMQ's management API shows
// them: only those set; none is [] (an empty Erlang property list).
func propsObj(d amqp.Delivery) any {
	o := obj{}
	set := func(k, v string) {
		if v != "" {
			o[k] = v
		}
	}
	set("content_type", d.ContentType)
	set("content_encoding", d.ContentEncoding)
	set("correlation_id", d.CorrelationId)
	set("reply_to", d.ReplyTo)
	set("expiration", d.Expiration)
	set("message_id", d.MessageId)
	set("type", d.Type)
	set("user_id", d.UserId)
	set("app_id", d.AppId)
	if d.DeliveryMode != 0 {
		o["delivery_mode"] = d.DeliveryMode
	}
	if d.Priority != 0 {
		o["priority"] = d.Priority
	}
	if !d.Timestamp.IsZero() {
		o["timestamp"] = d.Timestamp.Unix()
	}
	if len(d.Headers) > 0 {
		o["headers"] = fromAMQP(d.Headers)
	}
	if len(o) == 0 {
		return []any{}
	}
	return o
}

// publish is POST /api/exchanges/{vhost}/{name}/publish: a mandatory
// publish in confirm mode; "routed" is false when the broker returned
// the message.
func (a *API) publish(w http.ResponseWriter, r *http.Request, rq *request) {
	body, ok := readBody(w, r)
	if !ok || missingKeys(w, body, "routing_key", "properties", "payload", "payload_encoding") {
		return
	}
	payload := strArg(body, "payload")
	var data []byte
	switch enc := strArg(body, "payload_encoding"); enc {
	case "string":
		data = []byte(payload)
	case "base64":
		var err error
		if data, err = base64.StdEncoding.DecodeString(payload); err != nil {
			badRequest(w, []any{"not_base64", payload})
			return
		}
	default:
		badRequest(w, []any{"unsupported_encoding", enc})
		return
	}
	props, _ := body["properties"].(map[string]any)
	x := rq.v("name")
	if x == "amq.default" {
		x = ""
	}
	key := strArg(body, "routing_key")
	a.withDirect(w, r, rq, rq.v("vhost"), publishError, func(d *direct, w http.ResponseWriter) error {
		if err := d.ch.Confirm(false); err != nil {
			return err
		}
		returns := d.ch.NotifyReturn(make(chan amqp.Return, 1))
		confirms := d.ch.NotifyPublish(make(chan amqp.Confirmation, 1))
		closed := d.ch.NotifyClose(make(chan *amqp.Error, 1))
		if err := d.ch.PublishWithContext(r.Context(), x, key, true, false, publishing(props, data)); err != nil {
			return err
		}
		select {
		case c, ok := <-confirms:
			if !ok {
				if e := <-closed; e != nil {
					return e
				}
				return errors.New("channel closed")
			}
			routed := c.Ack
			select {
			case <-returns:
				routed = false
			default:
			}
			writeJSON(w, http.StatusOK, obj{"routed": routed})
			return nil
		case e := <-closed:
			if e != nil {
				return e
			}
			return errors.New("channel closed")
		case <-time.After(directTimeout):
			return errors.New("timed out waiting for the broker's confirm")
		}
	})
}

// publishError answers a failed publish as RabbitMQ's: 400 with the
// reply code and text ("404 NOT_FOUND - no exchange 'x' in vhost '/'").
func publishError(w http.ResponseWriter, err error) {
	var e *amqp.Error
	if errors.As(err, &e) {
		if e.Code == amqp.AccessRefused {
			notAuthorised(w, e.Reason)
			return
		}
		badRequest(w, fmt.Sprintf("%d %s", e.Code, e.Reason))
		return
	}
	badRequest(w, err.Error())
}

// ---- get ----

// getMessages is POST /api/queues/{vhost}/{name}/get: count basic.gets,
// then acked or rejected (requeued or not) as ackmode says.
func (a *API) getMessages(w http.ResponseWriter, r *http.Request, rq *request) {
	body, ok := readBody(w, r)
	if !ok || missingKeys(w, body, "count", "ackmode", "encoding") {
		return
	}
	count, ok1 := intField(body["count"])
	if !ok1 || count < 0 {
		badRequest(w, "count must be a non-negative integer")
		return
	}
	count = min(count, 10000)
	ackmode := strArg(body, "ackmode")
	var ack, requeue bool
	switch ackmode {
	case "ack_requeue_true":
		requeue = true
	case "ack_requeue_false":
		ack = true
	case "reject_requeue_true":
		requeue = true
	case "reject_requeue_false":
	default:
		badRequest(w, []any{"invalid_ackmode", ackmode})
		return
	}
	encoding := strArg(body, "encoding")
	if encoding != "auto" && encoding != "base64" {
		badRequest(w, []any{"unsupported_encoding", encoding})
		return
	}
	truncate := int64(-1)
	if t, ok := intField(body["truncate"]); ok && body["truncate"] != nil {
		truncate = t
	}
	q := rq.v("name")
	a.withDirect(w, r, rq, rq.v("vhost"), channelError, func(d *direct, w http.ResponseWriter) error {
		out := []obj{}
		var last amqp.Delivery
		got := false
		for i := int64(0); i < count; i++ {
			m, ok, err := d.ch.Get(q, false)
			if err != nil {
				return err
			}
			if !ok {
				break
			}
			last, got = m, true
			payload := m.Body
			if truncate >= 0 && int64(len(payload)) > truncate {
				payload = payload[:truncate]
			}
			o := obj{
				"payload_bytes": len(m.Body), "redelivered": m.Redelivered,
				"exchange": m.Exchange, "routing_key": m.RoutingKey,
				"message_count": m.MessageCount, "properties": propsObj(m),
			}
			if encoding == "auto" && utf8.Valid(payload) {
				o["payload"], o["payload_encoding"] = string(payload), "string"
			} else {
				o["payload"], o["payload_encoding"] = base64.StdEncoding.EncodeToString(payload), "base64"
			}
			out = append(out, o)
		}
		if got {
			var err error
			if ack {
				err = d.ch.Ack(last.DeliveryTag, true)
			} else {
				err = d.ch.Nack(last.DeliveryTag, true, requeue)
			}
			if err != nil {
				return err
			}
		}
		// A round trip, so that the acks are done before the reply.
		if _, err := d.ch.QueueDeclarePassive(q, false, false, false, false, nil); err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, out)
		return nil
	})
}
