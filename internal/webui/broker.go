package webui

import (
	"substrate/broker"
)

// Broker is what the status endpoint reads of the broker when the
// management API (/api/overview, /api/queues, /api/connections) is not
// served by this build: the page then takes the broker's figures from
// the status reply's "broker" member, in the same RabbitMQ shapes (a
// subset: no message_stats, so no rates).
type Broker interface {
	VHosts() []string
	Queues(vhost string) []broker.QueueInfo
	Connections() []broker.ConnectionInfo
}

type brokerStatus struct {
	Overview    brokerOverview `json:"overview"`
	Queues      []queueJSON    `json:"queues"`
	Connections []connJSON     `json:"connections"`
}

type brokerOverview struct {
	ObjectTotals map[string]int `json:"object_totals"`
	QueueTotals  map[string]int `json:"queue_totals"`
}

type queueJSON struct {
	Name                   string         `json:"name"`
	VHost                  string         `json:"vhost"`
	Durable                bool           `json:"durable"`
	AutoDelete             bool           `json:"auto_delete"`
	Exclusive              bool           `json:"exclusive"`
	Type                   string         `json:"type"`
	Arguments              map[string]any `json:"arguments"`
	Messages               int            `json:"messages"`
	MessagesReady          int            `json:"messages_ready"`
	MessagesUnacknowledged int            `json:"messages_unacknowledged"`
	Consumers              int            `json:"consumers"`
}

type connJSON struct {
	Name             string            `json:"name"`
	User             string            `json:"user"`
	VHost            string            `json:"vhost"`
	PeerHost         string            `json:"peer_host"`
	Channels         int               `json:"channels"`
	State            string            `json:"state"`
	ClientProperties map[string]string `json:"client_properties"`
}

// clientStrings are the client properties the page shows; the others
// (capabilities tables, decimals) are left out rather than converted.
var clientStrings = []string{"connection_name", "product", "version", "platform"}

func brokerReply(b Broker) *brokerStatus {
	rep := &brokerStatus{Queues: []queueJSON{}, Connections: []connJSON{}}
	var ready, unacked, consumers int
	for _, vh := range b.VHosts() {
		for _, q := range b.Queues(vh) {
			args := q.Arguments
			if args == nil {
				args = map[string]any{}
			}
			typ := q.Type
			if typ == "" {
				typ = "classic"
			}
			rep.Queues = append(rep.Queues, queueJSON{Name: q.Name, VHost: vh, Durable: q.Durable, AutoDelete: q.AutoDelete,
				Exclusive: q.Exclusive, Type: typ, Arguments: args, Messages: q.Messages, MessagesReady: q.MessagesReady,
				MessagesUnacknowledged: q.MessagesUnacknowledged, Consumers: q.Consumers})
			ready += q.MessagesReady
			unacked += q.MessagesUnacknowledged
			consumers += q.Consumers
		}
	}
	channels := 0
	for _, c := range b.Connections() {
		props := map[string]string{}
		for _, k := range clientStrings {
			if v, ok := c.ClientProperties[k].(string); ok {
				props[k] = v
			}
		}
		host := c.Peer
		rep.Connections = append(rep.Connections, connJSON{Name: c.Name, User: c.User, VHost: c.VHost, PeerHost: host,
			Channels: c.Channels, State: "running", ClientProperties: props})
		channels += c.Channels
	}
	rep.Overview = brokerOverview{
		ObjectTotals: map[string]int{"connections": len(rep.Connections), "channels": channels, "queues": len(rep.Queues), "consumers": consumers},
		QueueTotals:  map[string]int{"messages": ready + unacked, "messages_ready": ready, "messages_unacknowledged": unacked},
	}
	return rep
}
