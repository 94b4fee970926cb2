package cache

import "net"

// ProbeTarget is where a health check can reach the server (after Start):
// a plain-text listener when there is one (the unix socket, a notls
// address, or a TCP address without TLS), else a TLS listener (tls true).
// binary says that the listener only speaks the binary protocol (-B
// binary, or SASL); ok is false when nothing listens (not started, shut
// down, or UDP only).
func (s *Server) ProbeTarget() (addr net.Addr, tls, binary, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.started || s.closed || len(s.listeners) == 0 {
		return nil, false, false, false
	}
	binary = s.cfg.binaryOnly()
	for i, l := range s.listeners {
		// Start's order: Addrs (TLS when configured), NoTLSAddrs, the socket.
		if s.tls == nil || i >= len(s.cfg.Addrs) {
			return l.Addr(), false, binary, true
		}
	}
	return s.listeners[0].Addr(), true, binary, true
}
