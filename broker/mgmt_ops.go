package broker

// What the management HTTP API (internal/mgmtapi) needs beyond the admin
// methods: the login check of its basic auth, and direct connections.
// RabbitMQ's management plugin declares, deletes, binds, publishes and
// gets over a direct AMQP connection opened as the requesting user, so
// the user's permissions and the channel's error texts apply as they do
// to any client; DirectConn gives the API the same.

import (
	"context"
	"errors"
	"net"
	"sync"
)

// ErrLoginRefused is CheckLogin's error for an unknown user or a wrong
// password.
var ErrLoginRefused = errors.New("broker: login refused")

// ErrLoopbackOnly is CheckLogin's error for the default user (guest) from a
// non-loopback address, as RabbitMQ's loopback_users.
var ErrLoopbackOnly = errors.New("broker: user can only log in via localhost")

// CheckLogin checks a user's password as an AMQP PLAIN login does,
// including the default user's loopback-only rule (peer is the client's
// address; nil counts as not loopback), and returns the user.
func (s *Server) CheckLogin(name, password string, peer net.Addr) (User, error) {
	u, ok := s.user(name)
	return CheckUserLogin(u, ok, password, peer)
}

// CheckUserLogin is CheckLogin's rule for a user looked up elsewhere
// (found false: no such user): a cluster node without a broker checks a
// management login against the definitions in etcd with it.
func CheckUserLogin(u User, found bool, password string, peer net.Addr) (User, error) {
	if !found || !u.CheckPassword(password) {
		return User{}, ErrLoginRefused
	}
	if u.Name == DefaultUser && !isLoopback(peer) {
		return User{}, ErrLoopbackOnly
	}
	return u, nil
}

// ErrStopped is DirectConn's error once Shutdown has started.
var ErrStopped = errors.New("broker: stopped")

// DirectConn returns the client end of an in-memory connection the broker
// serves as one accepted from peer on local: the client runs the AMQP
// handshake and logs in on it as over TCP, and it is listed, limited and
// closed at Shutdown like any other connection (named "peer -> local").
// The caller closes it; gone is closed once the broker has forgotten the
// connection (it is no longer listed).
func (s *Server) DirectConn(peer, local net.Addr) (nc net.Conn, gone <-chan struct{}, err error) {
	if s.stopping.Load() {
		return nil, nil, ErrStopped
	}
	cli, srv := net.Pipe()
	done := make(chan struct{})
	var once sync.Once
	s.admit(addrConn{Conn: srv, local: local, remote: peer}, func() { once.Do(func() { close(done) }) })
	return cli, done, nil
}

// addrConn is a net.Conn with chosen addresses.
type addrConn struct {
	net.Conn
	local, remote net.Addr
}

func (c addrConn) LocalAddr() net.Addr  { return c.local }
func (c addrConn) RemoteAddr() net.Addr { return c.remote }

// PutUser creates a user or replaces one's password hash and tags, as the
// management API's PUT /api/users/{name} does (the hash may come from a
// client, in User.PasswordHash's format: RabbitMQ's
// rabbit_password_hashing_sha256, 4 bytes of salt then SHA-256).
func (s *Server) PutUser(ctx context.Context, u User) error {
	if u.Name == "" {
		return errors.New("broker: empty user name")
	}
	u.Tags = append([]string(nil), u.Tags...)
	u.PasswordHash = append([]byte(nil), u.PasswordHash...)
	s.adminMu.Lock()
	defer s.adminMu.Unlock()
	if err := s.defs.PutUser(ctx, u); err != nil {
		return err
	}
	s.authMu.Lock()
	s.users[u.Name] = u
	s.authMu.Unlock()
	return nil
}
