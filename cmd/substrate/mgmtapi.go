package main

import (
	"log/slog"
	"net"
	"strings"

	"substrate/broker"
	"substrate/internal/mgmt"
	"substrate/internal/mgmtapi"
)

// amqpListeners has the AMQP listeners: the broker's own, or a cluster
// node's (all of them, AMQPS last, and the AMQPS ones).
type amqpListeners interface {
	Addrs() []net.Addr
	TLSAddrs() []net.Addr
}

// newMgmtAPI is RabbitMQ's management API (/api/ on --http-port) over the
// broker. Its listeners are read per request from the broker and from the
// management server srv returns (set once it is built): the first nHTTP
// of that server's addresses are HTTP, the rest HTTPS.
func newMgmtAPI(b *broker.Server, ls amqpListeners, dataDir string, nHTTP int, log *slog.Logger, srv func() *mgmt.Server) *mgmtapi.API {
	product := "dev"
	if f := strings.Fields(versionString()); len(f) > 1 {
		product = f[1]
	}
	return mgmtapi.New(mgmtapi.Config{
		ProductVersion: product,
		Broker:         b,
		DataDir:        dataDir,
		Logger:         log,
		Listeners: func() []mgmtapi.Listener {
			var out []mgmtapi.Listener
			all, tlsAddrs := ls.Addrs(), ls.TLSAddrs()
			for _, a := range all[:len(all)-len(tlsAddrs)] {
				out = append(out, mgmtapi.Listener{Protocol: "amqp", Addr: a})
			}
			for _, a := range tlsAddrs {
				out = append(out, mgmtapi.Listener{Protocol: "amqp/ssl", Addr: a})
			}
			if m := srv(); m != nil {
				for i, a := range m.Addrs() {
					p := "http"
					if i >= nHTTP {
						p = "https"
					}
					out = append(out, mgmtapi.Listener{Protocol: p, Addr: a})
				}
			}
			return out
		},
	})
}
