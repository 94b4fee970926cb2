package broker

// Users, permissions and authentication: the in-memory copy of the users
// and of each user's compiled permission regular expressions, the admin
// methods that change them (written through to Definitions), the SASL
// mechanisms a connection authenticates with, and the configure / write /
// read check a channel makes before each operation.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"substrate/broker/amqp"
)

// authState is the in-memory copy of users and permissions, embedded in
// Server; the admin methods write it through to the Definitions.
type authState struct {
	authMu  sync.RWMutex
	users   map[string]User
	perms   map[string]*compiledPerm // key vkey(vhost, user)
	permGen atomic.Uint64            // bumped on every permission change
}

// loadAuth installs the users and permissions of a loaded definition set.
func (s *Server) loadAuth(set *DefinitionSet) error {
	s.authMu.Lock()
	defer s.authMu.Unlock()
	for _, u := range set.Users {
		s.users[u.Name] = u
	}
	for _, p := range set.Permissions {
		cp, err := compilePerm(p)
		if err != nil {
			return fmt.Errorf("broker: permission for %q on %q: %w", p.User, p.VHost, err)
		}
		s.perms[vkey(p.VHost, p.User)] = cp
	}
	return nil
}

type compiledPerm struct {
	p                      Permission
	configure, write, read *regexp.Regexp
}

func compilePerm(p Permission) (*compiledPerm, error) {
	// RabbitMQ runs re:run(Name, Regexp) unanchored; "" stands for "^$".
	c := func(re string) (*regexp.Regexp, error) {
		if re == "" {
			re = "^$"
		}
		return regexp.Compile(re)
	}
	cp := &compiledPerm{p: p}
	var err error
	if cp.configure, err = c(p.Configure); err != nil {
		return nil, err
	}
	if cp.write, err = c(p.Write); err != nil {
		return nil, err
	}
	if cp.read, err = c(p.Read); err != nil {
		return nil, err
	}
	return cp, nil
}

func (s *Server) user(name string) (User, bool) {
	s.authMu.RLock()
	defer s.authMu.RUnlock()
	u, ok := s.users[name]
	return u, ok
}

func (s *Server) perm(user, vhost string) *compiledPerm {
	s.authMu.RLock()
	defer s.authMu.RUnlock()
	return s.perms[vkey(vhost, user)]
}

// ---- administration of users and permissions ----

// AddUser creates a user with a password (tags none).
func (s *Server) AddUser(ctx context.Context, name, password string) error {
	if name == "" {
		return errors.New("broker: empty user name")
	}
	s.adminMu.Lock()
	defer s.adminMu.Unlock()
	if _, ok := s.user(name); ok {
		return fmt.Errorf("broker: user %q: %w", name, ErrExists)
	}
	u := User{Name: name, PasswordHash: HashPassword(password)}
	if err := s.defs.PutUser(ctx, u); err != nil {
		return err
	}
	s.authMu.Lock()
	s.users[name] = u
	s.authMu.Unlock()
	return nil
}

// DeleteUser deletes a user and its permissions, and closes its
// connections with 320 "CONNECTION_FORCED - user 'u' is deleted", as
// RabbitMQ does.
func (s *Server) DeleteUser(ctx context.Context, name string) error {
	s.adminMu.Lock()
	if _, ok := s.user(name); !ok {
		s.adminMu.Unlock()
		return fmt.Errorf("broker: user %q: %w", name, ErrNotFound)
	}
	if err := s.defs.DeleteUser(ctx, name); err != nil {
		s.adminMu.Unlock()
		return err
	}
	s.authMu.Lock()
	delete(s.users, name)
	for k, p := range s.perms {
		if p.p.User == name {
			delete(s.perms, k)
		}
	}
	s.authMu.Unlock()
	s.permGen.Add(1)
	s.adminMu.Unlock()
	for _, c := range s.connections() {
		if c.userName() == name {
			c.forceClose(amqp.ConnectionForced, fmt.Sprintf("CONNECTION_FORCED - user '%s' is deleted", name), time.Second)
		}
	}
	return nil
}

// ChangePassword sets a user's password.
func (s *Server) ChangePassword(ctx context.Context, name, password string) error {
	return s.updateUser(ctx, name, func(u *User) { u.PasswordHash = HashPassword(password) })
}

// SetUserTags replaces a user's tags.
func (s *Server) SetUserTags(ctx context.Context, name string, tags []string) error {
	return s.updateUser(ctx, name, func(u *User) { u.Tags = append([]string(nil), tags...) })
}

func (s *Server) updateUser(ctx context.Context, name string, f func(*User)) error {
	s.adminMu.Lock()
	defer s.adminMu.Unlock()
	u, ok := s.user(name)
	if !ok {
		return fmt.Errorf("broker: user %q: %w", name, ErrNotFound)
	}
	f(&u)
	if err := s.defs.PutUser(ctx, u); err != nil {
		return err
	}
	s.authMu.Lock()
	s.users[name] = u
	s.authMu.Unlock()
	return nil
}

// Users lists the users, sorted by name.
func (s *Server) Users() []User {
	s.authMu.RLock()
	defer s.authMu.RUnlock()
	return sortedValues(s.users)
}

// SetPermissions sets a user's permissions on a vhost. The regular
// expressions are Go (RE2) syntax, matched unanchored as RabbitMQ does.
func (s *Server) SetPermissions(ctx context.Context, p Permission) error {
	cp, err := compilePerm(p)
	if err != nil {
		return fmt.Errorf("broker: permission: %w", err)
	}
	s.adminMu.Lock()
	defer s.adminMu.Unlock()
	if _, ok := s.user(p.User); !ok {
		return fmt.Errorf("broker: user %q: %w", p.User, ErrNotFound)
	}
	if s.vhost(p.VHost) == nil {
		return fmt.Errorf("broker: vhost %q: %w", p.VHost, ErrNotFound)
	}
	if err := s.defs.PutPermission(ctx, p); err != nil {
		return err
	}
	s.authMu.Lock()
	s.perms[vkey(p.VHost, p.User)] = cp
	s.authMu.Unlock()
	s.permGen.Add(1)
	return nil
}

// ClearPermissions removes a user's permissions on a vhost.
func (s *Server) ClearPermissions(ctx context.Context, user, vhost string) error {
	s.adminMu.Lock()
	defer s.adminMu.Unlock()
	if err := s.defs.DeletePermission(ctx, user, vhost); err != nil {
		return err
	}
	s.authMu.Lock()
	delete(s.perms, vkey(vhost, user))
	s.authMu.Unlock()
	s.permGen.Add(1)
	return nil
}

// Permissions lists the permissions on a vhost ("" for all), sorted by user.
func (s *Server) Permissions(vhost string) []Permission {
	s.authMu.RLock()
	defer s.authMu.RUnlock()
	var out []Permission
	for _, p := range s.perms {
		if vhost == "" || p.p.VHost == vhost {
			out = append(out, p.p)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].VHost != out[j].VHost {
			return out[i].VHost < out[j].VHost
		}
		return out[i].User < out[j].User
	})
	return out
}

// ---- authentication ----

// authenticate checks start-ok's credentials. A refusal is 403 with
// RabbitMQ's text when the client has authentication_failure_close; the
// socket is just closed otherwise, as RabbitMQ does.
func (c *conn) authenticate(so *amqp.ConnectionStartOk) (string, error) {
	var user, pass string
	switch so.Mechanism {
	case "PLAIN", "AMQPLAIN":
		var err error
		if user, pass, err = credentials(so.Mechanism, so.Response); err != nil {
			return "", silent("%v", err)
		}
	case mechExternal:
		if !c.offersExternal() {
			return "", silent("unknown authentication mechanism '%s'", so.Mechanism)
		}
		name, why := c.externalName()
		if why != "" {
			c.logf(slog.LevelWarn, "amqp: login refused", "peer", c.peer, "mechanism", so.Mechanism, "reason", why)
			return "", c.refuse("", so.Mechanism)
		}
		user = name
	default:
		return "", silent("unknown authentication mechanism '%s'", so.Mechanism)
	}
	u, ok := c.srv.user(user)
	// EXTERNAL: the verified certificate stands for the password, as
	// rabbit_auth_mechanism_ssl's check_user_login(Name, []).
	refused := !ok || (so.Mechanism != mechExternal && !u.CheckPassword(pass))
	if !refused && user == DefaultUser && !isLoopback(c.nc.RemoteAddr()) {
		refused = true
		c.logf(slog.LevelWarn, "amqp: login refused: user can only connect via localhost", "user", user, "peer", c.peer)
	} else if refused {
		c.logf(slog.LevelWarn, "amqp: login refused", "user", user, "peer", c.peer, "mechanism", so.Mechanism)
	}
	if !refused {
		return user, nil
	}
	return "", c.refuse(user, so.Mechanism)
}

// credentials reads the user name and password of a PLAIN response
// (authzid NUL user NUL password, RFC 4616, as rabbit_auth_mechanism_plain
// splits it) or an AMQPLAIN one (a field table without its length, with
// LOGIN and PASSWORD). The error never contains the password.
func credentials(mechanism, response string) (user, pass string, err error) {
	switch mechanism {
	case "PLAIN":
		parts := strings.Split(response, "\x00")
		if len(parts) != 3 {
			return "", "", fmt.Errorf("PLAIN response invalid (%d fields)", len(parts))
		}
		return parts[1], parts[2], nil
	case "AMQPLAIN":
		t, err := amqp.DecodeTableBody([]byte(response))
		if err != nil {
			return "", "", fmt.Errorf("AMQPLAIN response invalid: %v", err)
		}
		user, _ = t["LOGIN"].(string)
		pass, _ = t["PASSWORD"].(string)
		return user, pass, nil
	}
	return "", "", fmt.Errorf("unknown authentication mechanism '%s'", mechanism)
}

// refuse is the error of a refused login, already logged.
func (c *conn) refuse(user, mechanism string) error {
	if !c.authFailure {
		return &handshakeError{err: fmt.Errorf("login refused for user '%s' (mechanism %s)", user, mechanism), logged: true}
	}
	return amqp.NewError(amqp.AccessRefused, 0, 0,
		"Login was refused using authentication mechanism %s. For details see the broker logfile.", mechanism)
}

func isLoopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

// ---- permissions ----

type permKind int

const (
	permConfigure permKind = iota
	permWrite
	permRead
)

// check enforces the user's configure/write/read regular expression on a
// resource, with RabbitMQ's text on refusal. The default exchange is
// checked as "amq.default", as RabbitMQ does.
func (ch *channel) check(kind, name string, pk permKind, cls, mth uint16) *amqp.Error {
	if kind == "exchange" && name == "" {
		name = "amq.default"
	}
	user, vh := ch.c.user, ch.vh()
	p := ch.c.srv.perm(user, vh.name)
	ok := false
	if p != nil {
		switch pk {
		case permConfigure:
			ok = p.configure.MatchString(name)
		case permWrite:
			ok = p.write.MatchString(name)
		case permRead:
			ok = p.read.MatchString(name)
		}
	}
	if !ok {
		return amqp.NewError(amqp.AccessRefused, cls, mth, "access to %s refused for user '%s'", vh.rs(kind, name), user)
	}
	return nil
}

func defaultExchangeRefused(cls, mth uint16) *amqp.Error {
	return amqp.NewError(amqp.AccessRefused, cls, mth, "operation not permitted on the default exchange")
}
