package mgmtapi

import (
	"errors"
	"net/http"
	"strconv"

	"substrate/broker"
)

// sees reports whether u may see an object of user owner: monitors all,
// others only their own (RabbitMQ's filter_user).
func sees(u broker.User, owner string) bool {
	return isMonitor(u) || u.Name == owner
}

func nullStr(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// connectionObj is a connection as /api/connections lists it; single:
// as /api/connections/{name} shows it, where RabbitMQ has "" rather than
// null for the TLS fields of a plain connection.
func (a *API) connectionObj(c broker.ConnectionInfo, single bool) obj {
	k := "conn\x00" + strconv.FormatUint(c.ID, 10)
	props := argsObj(c.ClientProperties)
	o := obj{
		"name": c.Name, "node": a.cfg.Node, "type": "network", "protocol": c.Protocol,
		"user": c.User, "user_who_performed_action": c.User, "vhost": c.VHost,
		"host": c.Host, "port": c.Port, "peer_host": c.PeerHost, "peer_port": c.PeerPort,
		"auth_mechanism": c.AuthMechanism, "state": c.State, "channels": c.Channels,
		"channel_max": c.ChannelMax, "frame_max": c.FrameMax, "timeout": c.Timeout,
		"connected_at":      c.ConnectedAt.UnixMilli(),
		"client_properties": props,
		"ssl":               c.SSL, "ssl_protocol": nullStr(c.SSLProtocol), "ssl_cipher": nullStr(c.SSLCipher),
		"ssl_key_exchange": nil, "ssl_hash": nil,
		"peer_cert_issuer": nil, "peer_cert_subject": nil, "peer_cert_validity": nil,
		"recv_oct": c.RecvOct, "send_oct": c.SendOct, "recv_cnt": c.RecvCnt, "send_cnt": c.SendCnt,
		"recv_oct_details": a.sampler.details(k, "recv_oct"), "send_oct_details": a.sampler.details(k, "send_oct"),
		"send_pend": 0, "reductions": 0, "reductions_details": obj{"rate": 0.0},
		"garbage_collection": gcObj(),
	}
	if c.ConnectionName != "" {
		o["user_provided_name"] = c.ConnectionName
	}
	if single {
		for _, k := range []string{"ssl_protocol", "ssl_cipher", "ssl_key_exchange", "ssl_hash", "peer_cert_issuer", "peer_cert_subject", "peer_cert_validity"} {
			if o[k] == nil {
				o[k] = ""
			}
		}
	}
	return o
}

func (a *API) visibleConnections(rq *request) []broker.ConnectionInfo {
	return visible(rq, a.b.Connections(), func(c broker.ConnectionInfo) (string, string) { return c.VHost, c.User })
}

// visible keeps the items of the path's vhost (if it names one) that the
// requesting user sees; owner gives an item's vhost and user.
func visible[T any](rq *request, items []T, owner func(T) (vhost, user string)) []T {
	var out []T
	vh, byVHost := rq.vars["vhost"]
	for _, it := range items {
		v, u := owner(it)
		if byVHost && v != vh {
			continue
		}
		if sees(rq.user, u) {
			out = append(out, it)
		}
	}
	return out
}

func (a *API) connections(w http.ResponseWriter, r *http.Request, rq *request) {
	var out []obj
	for _, c := range a.visibleConnections(rq) {
		out = append(out, a.connectionObj(c, false))
	}
	a.list(w, rq, out)
}

func (a *API) findConnection(rq *request) (broker.ConnectionInfo, bool) {
	for _, c := range a.visibleConnections(rq) {
		if c.Name == rq.v("name") {
			return c, true
		}
	}
	return broker.ConnectionInfo{}, false
}

func (a *API) connection(w http.ResponseWriter, r *http.Request, rq *request) {
	c, ok := a.findConnection(rq)
	if !ok {
		notFound(w)
		return
	}
	a.one(w, rq, a.connectionObj(c, true))
}

// closeConnection is DELETE /api/connections/{name}: 320
// CONNECTION_FORCED with the X-Reason header's text (RabbitMQ's default
// "Closed via management plugin").
func (a *API) closeConnection(w http.ResponseWriter, r *http.Request, rq *request) {
	c, ok := a.findConnection(rq)
	if !ok {
		notFound(w)
		return
	}
	reason := r.Header.Get("X-Reason")
	if reason == "" {
		reason = "Closed via management plugin"
	}
	if err := a.b.CloseConnectionByID(c.ID, reason); err != nil {
		if errors.Is(err, broker.ErrNotFound) {
			notFound(w)
			return
		}
		badRequest(w, err.Error())
		return
	}
	noContent(w, false)
}

// ---- channels ----

func (a *API) channelObj(ch broker.ChannelInfo) obj {
	k := "chan\x00" + ch.Name
	o := obj{
		"name": ch.Name, "number": ch.Number, "node": a.cfg.Node, "user": ch.User,
		"user_who_performed_action": ch.User, "vhost": ch.VHost, "state": ch.State,
		"connection_details": obj{"name": ch.ConnectionName, "peer_host": ch.PeerHost, "peer_port": ch.PeerPort},
		"transactional":      ch.Transactional, "confirm": ch.Confirm, "consumer_count": ch.ConsumerCount,
		"messages_unacknowledged": ch.MessagesUnacknowledged, "messages_unconfirmed": ch.MessagesUnconfirmed,
		"messages_uncommitted": ch.MessagesUncommitted, "acks_uncommitted": ch.AcksUncommitted,
		"prefetch_count": ch.PrefetchCount, "global_prefetch_count": ch.GlobalPrefetchCount,
		"pending_raft_commands": 0, "reductions": 0, "reductions_details": obj{"rate": 0.0},
		"garbage_collection": gcObj(),
		"message_stats":      a.messageStats(k, ch.MessageStats, channelStatKeys),
	}
	if t := a.sampler.idleSince(k); !t.IsZero() {
		o["idle_since"] = formatTime(t)
	}
	return o
}

func (a *API) visibleChannels(rq *request) []broker.ChannelInfo {
	return visible(rq, a.b.Channels(), func(ch broker.ChannelInfo) (string, string) { return ch.VHost, ch.User })
}

func (a *API) channels(w http.ResponseWriter, r *http.Request, rq *request) {
	var out []obj
	for _, ch := range a.visibleChannels(rq) {
		out = append(out, a.channelObj(ch))
	}
	a.list(w, rq, out)
}

func (a *API) channel(w http.ResponseWriter, r *http.Request, rq *request) {
	for _, ch := range a.visibleChannels(rq) {
		if ch.Name == rq.v("name") {
			o := a.channelObj(ch)
			var cs []obj
			for _, c := range a.b.Consumers() {
				if c.ChannelName == ch.Name {
					cs = append(cs, a.consumerObj(c))
				}
			}
			if cs == nil {
				cs = []obj{}
			}
			o["consumer_details"], o["deliveries"], o["publishes"] = cs, []obj{}, []obj{}
			a.one(w, rq, o)
			return
		}
	}
	notFound(w)
}

func (a *API) connectionChannels(w http.ResponseWriter, r *http.Request, rq *request) {
	c, ok := a.findConnection(rq)
	if !ok {
		notFound(w)
		return
	}
	var out []obj
	for _, ch := range a.b.Channels() {
		if ch.ConnectionID == c.ID {
			out = append(out, a.channelObj(ch))
		}
	}
	a.list(w, rq, out)
}

// ---- consumers ----

func (a *API) consumerObj(c broker.ConsumerInfo) obj {
	return obj{
		"consumer_tag": c.ConsumerTag, "exclusive": c.Exclusive, "ack_required": c.AckRequired,
		"prefetch_count": c.PrefetchCount, "active": c.Active, "activity_status": c.ActivityStatus,
		"arguments": argsObj(c.Arguments),
		"queue":     obj{"name": c.Queue, "vhost": c.VHost},
		"channel_details": obj{
			"name": c.ChannelName, "number": c.ChannelNumber, "node": a.cfg.Node,
			"connection_name": c.ConnectionName, "peer_host": c.PeerHost, "peer_port": c.PeerPort, "user": c.User,
		},
	}
}

func (a *API) consumers(w http.ResponseWriter, r *http.Request, rq *request) {
	visible := map[string]bool{}
	for _, vh := range a.vhostsOf(rq) {
		visible[vh] = true
	}
	var out []obj
	for _, c := range a.b.Consumers() {
		if visible[c.VHost] {
			out = append(out, a.consumerObj(c))
		}
	}
	a.list(w, rq, out)
}
