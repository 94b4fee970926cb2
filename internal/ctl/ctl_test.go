package ctl

import (
	"context"
	"os"
	"strings"
	"testing"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"substrate/broker"
)

func startBroker(t *testing.T) *broker.Server {
	t.Helper()
	cfg := broker.NewConfig()
	cfg.Addrs = []string{"127.0.0.1:0"}
	b, err := broker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Shutdown(context.Background()) })
	return b
}

func TestCommandsAsRabbitmqctl(t *testing.T) {
	b := startBroker(t)
	ctx := context.Background()
	for _, tc := range []struct {
		argv       string
		code       int
		stdout     string // exact
		stderrPart string
	}{
		{"add_user openstack RABBIT_PASS", 0, "Adding user \"openstack\" ...\nDone. Don't forget to grant the user permissions to some virtual hosts! See 'rabbitmqctl help set_permissions' to learn more.\n", ""},
		{"add_user openstack other", ExitSoftware, "Adding user \"openstack\" ...\n", "Error:\nUser \"openstack\" already exists\n"},
		{"set_permissions openstack .* .* .*", 0, "Setting permissions for user \"openstack\" in vhost \"/\" ...\n", ""},
		{"set_permissions -p nova openstack .* .* .*", ExitDataErr, "Setting permissions for user \"openstack\" in vhost \"nova\" ...\n", "Virtual host \"nova\" does not exist"},
		{"set_permissions nobody .* .* .*", ExitNoUser, "Setting permissions for user \"nobody\" in vhost \"/\" ...\n", "User \"nobody\" does not exist"},
		{"-q list_users", 0, "user\ttags\nguest\t[administrator]\nopenstack\t[]\n", ""},
		{"set_user_tags openstack monitoring", 0, "Setting tags for user \"openstack\" to [monitoring] ...\n", ""},
		{"list_permissions", 0, "Listing permissions for vhost \"/\" ...\nuser\tconfigure\twrite\tread\nguest\t.*\t.*\t.*\nopenstack\t.*\t.*\t.*\n", ""},
		{"add_vhost nova", 0, "Adding vhost \"nova\" ...\n", ""},
		{"list_vhosts", 0, "Listing vhosts ...\nname\n/\nnova\n", ""},
		{"delete_vhost nova", 0, "Deleting vhost \"nova\" ...\n", ""},
		{"list_user_permissions openstack", 0, "Listing permissions for user \"openstack\" ...\nvhost\tconfigure\twrite\tread\n/\t.*\t.*\t.*\n", ""},
		{"clear_permissions openstack", 0, "Clearing permissions for user \"openstack\" in vhost \"/\" ...\n", ""},
		{"change_password openstack NEW", 0, "Changing password for user \"openstack\" ...\n", ""},
		{"close_all_connections maintenance", 0, "Closing all connections\nClosed 0 connections\n", ""},
		{"delete_user openstack", 0, "Deleting user \"openstack\" ...\n", ""},
		{"delete_user openstack", ExitNoUser, "Deleting user \"openstack\" ...\n", "User \"openstack\" does not exist"},
		{"add_user onlyname", ExitUsage, "", "not enough arguments"},
		{"frobnicate", ExitUsage, "", "Command 'frobnicate' not found"},
		{"", ExitUsage, "", "Usage"},
	} {
		res := Run(ctx, b, strings.Fields(tc.argv))
		if res.Code != tc.code || res.Stdout != tc.stdout || !strings.Contains(res.Stderr, tc.stderrPart) {
			t.Errorf("%q:\n got code %d stdout %q stderr %q\nwant code %d stdout %q stderr containing %q", tc.argv, res.Code, res.Stdout, res.Stderr, tc.code, tc.stdout, tc.stderrPart)
		}
	}
	// The password change took effect on the broker itself.
	for _, u := range b.Users() {
		if u.Name == "openstack" {
			t.Fatal("deleted user still listed")
		}
	}
}

func TestSocketRoundTrip(t *testing.T) {
	b := startBroker(t)
	dir := t.TempDir()
	s := NewServer(dir, b)
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := NewServer(dir, b).Start(context.Background()); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second server on the same data dir: %v", err)
	}
	res := Call(context.Background(), dir, Request{Argv: []string{"add_user", "u", "p"}})
	if res.Code != 0 || !strings.HasPrefix(res.Stdout, `Adding user "u" ...`) {
		t.Fatalf("over the socket: %+v", res)
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	res = Call(context.Background(), dir, Request{Argv: []string{"list_users"}})
	if res.Code != ExitUnavailable || !strings.Contains(res.Stderr, "is `substrate serve` running") {
		t.Fatalf("after shutdown: %+v", res)
	}
	// A long data directory still gets a usable socket.
	long := dir + "/" + strings.Repeat("d", 120)
	if p := SocketPath(long); len(p) >= 100 || !strings.Contains(p, "substrate-ctl-") {
		t.Fatalf("long path socket = %q", p)
	}
}

func TestListQueuesColumns(t *testing.T) {
	b := startBroker(t)
	c, err := amqp091.Dial("amqp://guest:guest@" + b.Addrs()[0].String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ch, err := c.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("qq", true, false, false, false, amqp091.Table{"x-queue-type": "quorum"}); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("reply", false, false, false, false, amqp091.Table{"x-expires": int32(1800000)}); err != nil {
		t.Fatal(err)
	}
	if err := ch.Publish("", "qq", false, false, amqp091.Publishing{Body: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	// A round trip on the same channel: the publish is routed by now.
	if _, err := ch.QueueDeclarePassive("qq", true, false, false, false, amqp091.Table{"x-queue-type": "quorum"}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	res := Run(ctx, b, []string{"-q", "list_queues", "name", "durable", "arguments", "type", "messages", "consumers"})
	lines := strings.Split(strings.TrimSpace(res.Stdout), "\n")
	want := map[string]bool{
		"name\tdurable\targuments\ttype\tmessages\tconsumers":     true,
		"qq\ttrue\t[{\"x-queue-type\",\"quorum\"}]\tquorum\t1\t0": true,
		"reply\tfalse\t[{\"x-expires\",1800000}]\tclassic\t0\t0":  true,
	}
	if res.Code != 0 || len(lines) != len(want) {
		t.Fatalf("code %d stdout %q stderr %q", res.Code, res.Stdout, res.Stderr)
	}
	for _, l := range lines {
		if !want[l] {
			t.Errorf("unexpected line %q in\n%s", l, res.Stdout)
		}
	}
	res = Run(ctx, b, []string{"list_queues", "name", "colour"})
	if res.Code != ExitUsage || !strings.Contains(res.Stderr, "Info key(s) colour are not supported") {
		t.Fatalf("bad column: code %d stderr %q", res.Code, res.Stderr)
	}
}

// TestVHostLimitsAsRabbitmqctl: outputs and exit codes recorded from
// rabbitmqctl 3.10.8 (Debian's), with JSON written without spaces.
func TestVHostLimitsAsRabbitmqctl(t *testing.T) {
	b := startBroker(t)
	ctx := context.Background()
	for _, tc := range []struct {
		argv       string
		code       int
		stdout     string // exact
		stderrPart string
	}{
		{"list_vhost_limits", 0, "Listing limits for vhost \"/\" ...\n\n", ""},
		{`set_vhost_limits -p / {"max-connections":2,"max-queues":1}`, 0, "Setting vhost limits to \"{\"max-connections\":2,\"max-queues\":1}\" for vhost \"/\" ...\n", ""},
		{"list_vhost_limits", 0, "Listing limits for vhost \"/\" ...\n{\"max-connections\":2,\"max-queues\":1}\n", ""},
		{"list_vhost_limits --global", 0, "Listing limits for all vhosts ...\nvhost\tlimits\n/\t{\"max-connections\":2,\"max-queues\":1}\n", ""},
		{`set_vhost_limits {"max-connection":2}`, ExitUnavail, "Setting vhost limits to \"{\"max-connection\":2}\" for vhost \"/\" ...\n", "Validation failed\n\nUnrecognised terms [{<<\"max-connection\">>,2}] in limits\n"},
		{`set_vhost_limits {"max-connections":"x"}`, ExitUnavail, "Setting vhost limits to \"{\"max-connections\":\"x\"}\" for vhost \"/\" ...\n", "max-connections should be a number, actually was <<\"x\">>"},
		{`set_vhost_limits nojson`, ExitUnavail, "Setting vhost limits to \"nojson\" for vhost \"/\" ...\n", "JSON decoding error. Reason: badarg"},
		{`set_vhost_limits -p nosuch {"max-queues":1}`, ExitDataErr, "Setting vhost limits to \"{\"max-queues\":1}\" for vhost \"nosuch\" ...\n", "Virtual host 'nosuch' does not exist"},
		{"clear_vhost_limits -p /", 0, "Clearing vhost \"/\" limits ...\n", ""},
		{"clear_vhost_limits -p /", ExitUnavail, "Clearing vhost \"/\" limits ...\n", "Parameter does not exist"},
		{`set_vhost_limits {"max-connections":-1,"max-queues":-1}`, 0, "Setting vhost limits to \"{\"max-connections\":-1,\"max-queues\":-1}\" for vhost \"/\" ...\n", ""},
		{"list_vhost_limits -p /", 0, "Listing limits for vhost \"/\" ...\n{\"max-connections\":-1,\"max-queues\":-1}\n", ""},
	} {
		res := Run(ctx, b, strings.Fields(tc.argv))
		if res.Code != tc.code || res.Stdout != tc.stdout || !strings.Contains(res.Stderr, tc.stderrPart) {
			t.Errorf("%q:\n got code %d stdout %q stderr %q\nwant code %d stdout %q stderr containing %q", tc.argv, res.Code, res.Stdout, res.Stderr, tc.code, tc.stdout, tc.stderrPart)
		}
	}
	if got := b.VHostLimits()["/"]; got[broker.LimitMaxConnections] != -1 || got[broker.LimitMaxQueues] != -1 {
		t.Fatalf("broker holds %v", got)
	}
}

// TestNodeOption: -n reaches this node by its name (as status prints it,
// bare "rabbit", or with the full host name); another node does not
// answer here, as rabbitmqctl says of an unreachable one (exit 69).
func TestNodeOption(t *testing.T) {
	b := startBroker(t)
	ctx := context.Background()
	host, _ := os.Hostname()
	for _, n := range []string{NodeName(), "rabbit", "rabbit@" + host} {
		if res := Run(ctx, b, []string{"-n", n, "-q", "list_vhosts"}); res.Code != ExitOK || res.Stdout != "name\n/\n" {
			t.Errorf("-n %s: %+v", n, res)
		}
	}
	res := Run(ctx, b, []string{"-n", "rabbit@elsewhere", "list_vhosts"})
	if res.Code != ExitUnavailable || !strings.HasPrefix(res.Stderr, "Error: unable to perform an operation on node 'rabbit@elsewhere'.") ||
		!strings.Contains(res.Stderr, "this substrate is node "+NodeName()) {
		t.Errorf("-n rabbit@elsewhere: %+v", res)
	}
}
