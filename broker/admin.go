package broker

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"substrate/broker/amqp"
)

// The administration API: vhosts and their limits, and the listings
// (queues, exchanges, bindings, connections) behind `substrate ctl` and
// the management API. Users and permissions are in auth.go.

// ErrExists is returned when creating a user or vhost that exists.
var ErrExists = errors.New("broker: already exists")

// AddVHost creates a vhost with its predefined exchanges.
func (s *Server) AddVHost(ctx context.Context, name string) error {
	if name == "" {
		return errors.New("broker: empty vhost name")
	}
	s.adminMu.Lock()
	defer s.adminMu.Unlock()
	if s.vhost(name) != nil {
		return fmt.Errorf("broker: vhost %q: %w", name, ErrExists)
	}
	if err := s.defs.PutVHost(ctx, VHost{Name: name}); err != nil {
		return err
	}
	s.vhMu.Lock()
	s.vhosts[name] = newVHost(s, name)
	s.vhMu.Unlock()
	return nil
}

// DeleteVHost deletes a vhost with everything in it, closing its
// connections with 320 "CONNECTION_FORCED - vhost 'v' is deleted".
func (s *Server) DeleteVHost(ctx context.Context, name string) error {
	s.adminMu.Lock()
	vh := s.vhost(name)
	if vh == nil {
		s.adminMu.Unlock()
		return fmt.Errorf("broker: vhost %q: %w", name, ErrNotFound)
	}
	if err := s.defs.DeleteVHost(ctx, name); err != nil {
		s.adminMu.Unlock()
		return err
	}
	s.vhMu.Lock()
	delete(s.vhosts, name)
	s.vhMu.Unlock()
	s.authMu.Lock()
	for k, p := range s.perms {
		if p.p.VHost == name {
			delete(s.perms, k)
		}
	}
	s.authMu.Unlock()
	s.permGen.Add(1)
	s.adminMu.Unlock()
	for _, c := range s.connections() {
		if c.vhostName() == name {
			c.forceClose(amqp.ConnectionForced, fmt.Sprintf("CONNECTION_FORCED - vhost '%s' is deleted", name), time.Second)
		}
	}
	vh.destroy()
	return nil
}

// VHosts lists the vhost names, sorted.
func (s *Server) VHosts() []string {
	s.vhMu.RLock()
	defer s.vhMu.RUnlock()
	out := make([]string, 0, len(s.vhosts))
	for n := range s.vhosts {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// SetVHostLimits replaces a vhost's limits, as `rabbitmqctl
// set_vhost_limits` does (keys LimitMaxConnections, LimitMaxQueues;
// negative means no limit). Open connections and existing queues stay:
// the limits apply to the next connection.open and queue.declare.
func (s *Server) SetVHostLimits(ctx context.Context, vhost string, l VHostLimits) error {
	if err := l.Validate(); err != nil {
		return err
	}
	s.adminMu.Lock()
	defer s.adminMu.Unlock()
	vh := s.vhost(vhost)
	if vh == nil {
		return fmt.Errorf("broker: vhost %q: %w", vhost, ErrNotFound)
	}
	l = l.clone()
	if err := s.defs.PutVHost(ctx, VHost{Name: vhost, Limits: l}); err != nil {
		return err
	}
	vh.limits = l
	vh.setLimits(l)
	return nil
}

// ClearVHostLimits removes a vhost's limits (rabbitmqctl
// clear_vhost_limits).
func (s *Server) ClearVHostLimits(ctx context.Context, vhost string) error {
	return s.SetVHostLimits(ctx, vhost, nil)
}

// VHostLimits returns each vhost's limits (only vhosts that have some),
// for rabbitmqctl list_vhost_limits.
func (s *Server) VHostLimits() map[string]VHostLimits {
	s.adminMu.Lock()
	defer s.adminMu.Unlock()
	out := map[string]VHostLimits{}
	s.vhMu.RLock()
	defer s.vhMu.RUnlock()
	for n, vh := range s.vhosts {
		if len(vh.limits) > 0 {
			out[n] = vh.limits.clone()
		}
	}
	return out
}

// QueueInfo describes a queue for the admin API.
type QueueInfo struct {
	Name                   string
	Durable                bool
	AutoDelete             bool
	Exclusive              bool
	Type                   string // x-queue-type: "classic" (also when absent) or "quorum"
	Arguments              map[string]any
	Messages               int // ready + unacknowledged
	MessagesReady          int
	MessagesUnacknowledged int
	Consumers              int
}

// ExchangeInfo describes an exchange for the admin API.
type ExchangeInfo struct {
	Name       string
	Type       string
	Durable    bool
	AutoDelete bool
	Internal   bool
	Arguments  map[string]any
}

// ConnectionInfo describes a client connection for the admin API.
type ConnectionInfo struct {
	Name             string // "127.0.0.1:54321 -> 127.0.0.1:5672"
	User             string
	VHost            string
	Peer             string
	Channels         int
	ClientProperties map[string]any
}

// Queues lists the queues of a vhost, sorted by name.
func (s *Server) Queues(vhost string) []QueueInfo {
	vh := s.vhost(vhost)
	if vh == nil {
		return nil
	}
	vh.mu.RLock()
	qs := make([]*Queue, 0, len(vh.queues))
	for _, q := range vh.queues {
		qs = append(qs, q)
	}
	vh.mu.RUnlock()
	out := make([]QueueInfo, 0, len(qs))
	for _, q := range qs {
		out = append(out, q.Info())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Exchanges lists the exchanges of a vhost (the default one as ""),
// sorted by name.
func (s *Server) Exchanges(vhost string) []ExchangeInfo {
	vh := s.vhost(vhost)
	if vh == nil {
		return nil
	}
	vh.mu.RLock()
	defer vh.mu.RUnlock()
	out := make([]ExchangeInfo, 0, len(vh.exchanges))
	for _, x := range vh.exchanges {
		out = append(out, ExchangeInfo{Name: x.name, Type: x.kind, Durable: x.durable, AutoDelete: x.autoDelete, Internal: x.internal, Arguments: copyArgs(x.args)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Bindings lists a vhost's explicit bindings (not the default exchange's
// implicit ones), sorted by key.
func (s *Server) Bindings(vhost string) []BindingDef {
	vh := s.vhost(vhost)
	if vh == nil {
		return nil
	}
	vh.mu.RLock()
	defer vh.mu.RUnlock()
	var out []BindingDef
	for _, x := range vh.exchanges {
		for _, b := range x.bindings {
			out = append(out, b.def(vhost, x.name))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key() < out[j].Key() })
	return out
}

// Connections lists the client connections that completed the handshake.
func (s *Server) Connections() []ConnectionInfo {
	var out []ConnectionInfo
	for _, c := range s.connections() {
		if info, ok := c.info(); ok {
			out = append(out, info)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// CloseConnection closes the named connection with 320
// "CONNECTION_FORCED - " + reason.
func (s *Server) CloseConnection(name, reason string) error {
	for _, c := range s.connections() {
		if c.name == name {
			c.forceClose(amqp.ConnectionForced, "CONNECTION_FORCED - "+reason, time.Second)
			return nil
		}
	}
	return fmt.Errorf("broker: connection %q: %w", name, ErrNotFound)
}

// CloseAllConnections closes every client connection as CloseConnection
// does and returns how many there were.
func (s *Server) CloseAllConnections(reason string) int {
	cs := s.connections()
	for _, c := range cs {
		c.forceClose(amqp.ConnectionForced, "CONNECTION_FORCED - "+reason, time.Second)
	}
	return len(cs)
}

func copyArgs(t map[string]any) map[string]any {
	if len(t) == 0 {
		return nil
	}
	out := make(map[string]any, len(t))
	for k, v := range t {
		out[k] = v
	}
	return out
}
