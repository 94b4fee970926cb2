package broker

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"substrate/internal/testkit"
)

func TestPermissions(t *testing.T) {
	s := startServer(t)
	ctx := context.Background()
	must(t, s.AddUser(ctx, "u", "pw"))
	must(t, s.SetPermissions(ctx, Permission{User: "u", VHost: "/", Configure: "^u\\.", Write: "^u\\.", Read: "^u\\."}))
	url := "amqp://u:pw@" + addrOf(s) + "/"
	c := dial(t, url)
	refused := func(kind, name string) string {
		return "ACCESS_REFUSED - access to " + kind + " '" + name + "' in vhost '/' refused for user 'u'"
	}
	ch := channel091(t, c)
	_, err := ch.QueueDeclare("u.q", false, false, false, false, nil)
	must(t, err)
	must(t, ch.ExchangeDeclare("u.x", "direct", false, false, false, false, nil))
	must(t, ch.QueueBind("u.q", "k", "u.x", false, nil))
	must(t, ch.Publish("u.x", "k", false, false, amqp091.Publishing{Body: []byte("x")}))
	_, err = ch.Consume("u.q", "", false, false, false, false, nil)
	must(t, err)

	try := func(f func(*amqp091.Channel) error, text string) {
		t.Helper()
		wantAMQPError(t, f(channel091(t, c)), 403, text)
	}
	try(func(ch *amqp091.Channel) error {
		_, err := ch.QueueDeclare("other", false, false, false, false, nil)
		return err
	}, refused("queue", "other"))
	try(func(ch *amqp091.Channel) error {
		return ch.ExchangeDeclare("other", "direct", false, false, false, false, nil)
	}, refused("exchange", "other"))
	try(func(ch *amqp091.Channel) error { return ch.ExchangeDelete("other", false, false) }, refused("exchange", "other"))
	try(func(ch *amqp091.Channel) error { _, err := ch.QueueDelete("other", false, false, false); return err }, refused("queue", "other"))
	try(func(ch *amqp091.Channel) error { _, err := ch.QueuePurge("other", false); return err }, refused("queue", "other"))
	try(func(ch *amqp091.Channel) error { return ch.QueueBind("other", "k", "u.x", false, nil) }, refused("queue", "other"))
	try(func(ch *amqp091.Channel) error { return ch.QueueBind("u.q", "k", "amq.direct", false, nil) }, refused("exchange", "amq.direct"))
	try(func(ch *amqp091.Channel) error {
		_, err := ch.Consume("other", "", false, false, false, false, nil)
		return err
	}, refused("queue", "other"))
	try(func(ch *amqp091.Channel) error { _, _, err := ch.Get("other", false); return err }, refused("queue", "other"))
	// Publishing checks write on the exchange; the default one is "amq.default".
	for _, x := range []string{"", "amq.direct"} {
		ch := channel091(t, c)
		closed := ch.NotifyClose(make(chan *amqp091.Error, 1))
		ch.Publish(x, "u.q", false, false, amqp091.Publishing{})
		name := x
		if x == "" {
			name = "amq.default"
		}
		if e := recvTimeout(t, closed, 2*time.Second); e.Code != 403 || e.Reason != refused("exchange", name) {
			t.Fatalf("publish to %q: %+v", x, e)
		}
	}
	// Server-named queues count as amq.gen-...
	try(func(ch *amqp091.Channel) error {
		_, err := ch.QueueDeclare("", false, false, true, false, nil)
		return err
	}, "")
	// A permission change applies at once (the publish check is cached
	// per channel but invalidated).
	ch = channel091(t, c)
	must(t, ch.Publish("u.x", "k", false, false, amqp091.Publishing{}))
	// A round trip, so the broker has handled that publish (and cached
	// the check) before the change: otherwise, under load, the publish
	// could meet the new permissions and close the channel early.
	_, err = ch.QueueDeclarePassive("u.q", false, false, false, false, nil)
	must(t, err)
	must(t, s.SetPermissions(ctx, Permission{User: "u", VHost: "/", Configure: "^u\\.", Write: "^$", Read: "^u\\."}))
	closed := ch.NotifyClose(make(chan *amqp091.Error, 1))
	ch.Publish("u.x", "k", false, false, amqp091.Publishing{})
	if e := recvTimeout(t, closed, 2*time.Second); e.Code != 403 {
		t.Fatalf("%+v", e)
	}
	must(t, s.ClearPermissions(ctx, "u", "/"))
	_, err = amqp091.Dial(url)
	wantAMQPError(t, err, 530, "NOT_ALLOWED - access to vhost '/' refused for user 'u'")
	if len(s.Permissions("/")) != 1 {
		t.Fatalf("permissions %+v", s.Permissions("/"))
	}
}

func TestUsersAndVHostsAdmin(t *testing.T) {
	defs := NewMemDefinitions()
	s := startServer(t, func(c *Config) { c.Definitions = defs })
	ctx := context.Background()
	must(t, s.AddUser(ctx, "nova", "secret"))
	if err := s.AddUser(ctx, "nova", "x"); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate user: %v", err)
	}
	must(t, s.SetUserTags(ctx, "nova", []string{"administrator"}))
	must(t, s.AddVHost(ctx, "openstack"))
	if err := s.AddVHost(ctx, "openstack"); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate vhost: %v", err)
	}
	must(t, s.SetPermissions(ctx, Permission{User: "nova", VHost: "openstack", Configure: ".*", Write: ".*", Read: ".*"}))
	if err := s.SetPermissions(ctx, Permission{User: "nobody", VHost: "openstack"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("permission for a missing user: %v", err)
	}
	users := s.Users()
	if len(users) != 2 || users[1].Name != "nova" || !users[1].HasTag("administrator") {
		t.Fatalf("users %+v", users)
	}
	if v := s.VHosts(); len(v) != 2 || v[0] != "/" || v[1] != "openstack" {
		t.Fatalf("vhosts %v", v)
	}
	// Written through to the definitions.
	set, _ := defs.Load(ctx)
	if len(set.Users) != 2 || len(set.VHosts) != 2 || len(set.Permissions) != 2 {
		t.Fatalf("definitions %+v", set)
	}
	url := "amqp://nova:secret@" + addrOf(s) + "/openstack"
	c := dial(t, url)
	ch := channel091(t, c)
	_, err := ch.QueueDeclare("q", false, false, false, false, nil)
	must(t, err)
	if len(s.Queues("openstack")) != 1 || len(s.Queues("/")) != 0 {
		t.Fatal("queues not per vhost")
	}
	must(t, s.ChangePassword(ctx, "nova", "new"))
	if _, err := amqp091.Dial(url); err == nil {
		t.Fatal("old password still works")
	}
	c2 := dial(t, "amqp://nova:new@"+addrOf(s)+"/openstack")
	// Deleting the user closes its connections with 320.
	closed := c2.NotifyClose(make(chan *amqp091.Error, 1))
	must(t, s.DeleteUser(ctx, "nova"))
	if e := recvTimeout(t, closed, 3*time.Second); e.Code != 320 || e.Reason != "CONNECTION_FORCED - user 'nova' is deleted" {
		t.Fatalf("%+v", e)
	}
	eventually(t, 3*time.Second, func() bool { return c.IsClosed() }, "first connection closed")
	if len(s.Permissions("openstack")) != 0 {
		t.Fatal("permissions of a deleted user remain")
	}
	// Deleting a vhost closes its connections and drops its queues.
	g := dial(t, urlOf(s))
	must(t, s.SetPermissions(ctx, Permission{User: "guest", VHost: "openstack", Configure: ".*", Write: ".*", Read: ".*"}))
	g2 := dial(t, urlOf(s)+"openstack")
	closed = g2.NotifyClose(make(chan *amqp091.Error, 1))
	must(t, s.DeleteVHost(ctx, "openstack"))
	if e := recvTimeout(t, closed, 3*time.Second); e.Code != 320 || e.Reason != "CONNECTION_FORCED - vhost 'openstack' is deleted" {
		t.Fatalf("%+v", e)
	}
	if g.IsClosed() {
		t.Fatal("a connection to another vhost was closed")
	}
	set, _ = defs.Load(ctx)
	if len(set.VHosts) != 1 || len(set.Users) != 1 {
		t.Fatalf("definitions %+v", set)
	}
	if err := s.DeleteVHost(ctx, "openstack"); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
}

func TestCloseConnectionLongReason(t *testing.T) {
	s := startServer(t)
	c := dial(t, urlOf(s))
	closed := c.NotifyClose(make(chan *amqp091.Error, 1))
	eventually(t, 2*time.Second, func() bool { return len(s.Connections()) == 1 }, "connection")
	must(t, s.CloseConnection(s.Connections()[0].Name, strings.Repeat("x", 400)))
	if e := recvTimeout(t, closed, 3*time.Second); e.Code != 320 || len(e.Reason) != 255 {
		t.Fatalf("%d %d", e.Code, len(e.Reason))
	}
}

// TestLogLinesCarryConnectionName: lines about a connection name the
// client's connection_name, so an operator can tell which service it is.
func TestLogLinesCarryConnectionName(t *testing.T) {
	logs := &testkit.Buffer{}
	s := startServer(t, func(c *Config) { c.Logger = slog.New(slog.NewTextHandler(logs, nil)) })
	c := dialNamed(t, urlOf(s), "neutron-server:77:agent")
	opened := `connection_name=neutron-server:77:agent`
	eventually(t, 3*time.Second, func() bool {
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, "connection opened") && strings.Contains(l, opened) && strings.Contains(l, "conn=\""+c.LocalAddr().String()+" -> ") {
				return true
			}
		}
		return false
	}, "the connection opened line with connection_name:\n"+logs.String())
	must(t, c.Close())
	eventually(t, 3*time.Second, func() bool {
		return strings.Contains(logs.String(), "connection closed") && strings.Count(logs.String(), opened) == 2
	}, "the connection closed line with connection_name")
	// A client without the property gets no empty attribute.
	c2 := dial(t, urlOf(s))
	must(t, c2.Close())
	eventually(t, 3*time.Second, func() bool { return strings.Count(logs.String(), "connection closed") == 2 }, "second close")
	if n := strings.Count(logs.String(), "connection_name="); n != 2 {
		t.Fatalf("%d lines with connection_name, want 2:\n%s", n, logs.String())
	}
}
