package broker

// AMQPS: the TLS listeners (Config.TLSAddrs, RabbitMQ's listeners.ssl),
// the TLS handshake a connection completes before the AMQP protocol
// header, and the EXTERNAL mechanism's name from the client certificate.

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"

	"substrate/internal/tlsutil"
)

// mechExternal is SASL EXTERNAL (rabbitmq_auth_mechanism_ssl): the user
// is the common name of the client's verified certificate.
const mechExternal = "EXTERNAL"

// mechanisms is connection.start's list: EXTERNAL is offered on every TLS
// connection, as rabbit_auth_mechanism_ssl's should_offer/1 does (also
// without a peer certificate, so that a client that tries it learns why it
// is refused), never on plain TCP.
func (c *conn) mechanisms() string {
	if c.offersExternal() {
		return "PLAIN AMQPLAIN " + mechExternal
	}
	return "PLAIN AMQPLAIN"
}

func (c *conn) offersExternal() bool {
	_, ok := c.nc.(*tls.Conn)
	return ok
}

// externalName is the user EXTERNAL logs in as, or why it refuses (the
// reasons rabbit_auth_mechanism_ssl gives).
func (c *conn) externalName() (name, refused string) {
	tc, ok := c.nc.(*tls.Conn)
	if !ok {
		return "", "not a TLS-enabled connection"
	}
	name, ok = tlsutil.PeerName(tc.ConnectionState())
	switch {
	case !ok:
		return "", "connection peer presented no TLS (x.509) certificate"
	case name == "":
		return "", "no common name found in the peer certificate"
	}
	return name, ""
}

// tlsHandshake completes the TLS handshake of a connection accepted on a
// TLS listener, within the AMQP handshake timeout. A failure (a client
// that does not trust our certificate, a client certificate from another
// CA, expired, or missing where required) is logged with the peer,
// rate-limited per peer, and the socket is closed. Plain connections pass.
func (c *conn) tlsHandshake() bool {
	tc, ok := c.nc.(*tls.Conn)
	if !ok {
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		c.logf(slog.LevelWarn, "amqp: TLS handshake failed", "peer", c.peer, "reason", tlsutil.HandshakeReason(err), "err", err)
		return false
	}
	if name, ok := tlsutil.PeerName(tc.ConnectionState()); ok {
		c.logf(slog.LevelDebug, "amqp: TLS client certificate verified", "peer", c.peer, "cn", name)
	}
	return true
}

// TLSAddrs returns the addresses the TLS listeners are bound to (also
// the last entries of Addrs).
func (s *Server) TLSAddrs() []net.Addr {
	s.lnMu.Lock()
	defer s.lnMu.Unlock()
	out := make([]net.Addr, 0, s.nTLS)
	for _, l := range s.listeners[len(s.listeners)-s.nTLS:] {
		out = append(out, l.Addr())
	}
	return out
}
