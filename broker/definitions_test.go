package broker

import (
	"context"
	"crypto/sha256"
	"testing"
)

func TestPasswordHashIsRabbitMQs(t *testing.T) {
	u := User{Name: "openstack", PasswordHash: HashPassword("RABBIT_PASS")}
	if !u.CheckPassword("RABBIT_PASS") || u.CheckPassword("rabbit_pass") || u.CheckPassword("") {
		t.Fatal("CheckPassword accepts the wrong password or refuses the right one")
	}
	if len(u.PasswordHash) != 36 {
		t.Fatalf("hash is %d bytes, want 4 salt + 32", len(u.PasswordHash))
	}
	// Same layout as rabbit_password_hashing_sha256: salt ++ sha256(salt ++ pw).
	sum := sha256.Sum256(append(append([]byte(nil), u.PasswordHash[:4]...), "RABBIT_PASS"...))
	if string(u.PasswordHash[4:]) != string(sum[:]) {
		t.Fatal("hash layout differs from RabbitMQ's")
	}
	if (User{}).CheckPassword("") {
		t.Fatal("a user without a hash logged in")
	}
	if string(HashPassword("x")) == string(HashPassword("x")) {
		t.Fatal("hashes are not salted")
	}
}

func TestMemDefinitionsCascades(t *testing.T) {
	ctx := context.Background()
	d := NewMemDefinitions()
	if err := EnsureDefaults(ctx, d); err != nil {
		t.Fatal(err)
	}
	set, _ := d.Load(ctx)
	if len(set.Users) != 1 || set.Users[0].Name != "guest" || !set.Users[0].CheckPassword("guest") || !set.Users[0].HasTag("administrator") {
		t.Fatalf("defaults: %+v", set.Users)
	}
	if len(set.VHosts) != 1 || len(set.Permissions) != 1 || set.Permissions[0].Configure != ".*" {
		t.Fatalf("defaults: %+v %+v", set.VHosts, set.Permissions)
	}
	// An operator who deleted guest keeps it deleted.
	d.DeleteUser(ctx, "guest")
	EnsureDefaults(ctx, d)
	if set, _ := d.Load(ctx); len(set.Users) != 0 || len(set.Permissions) != 0 {
		t.Fatalf("guest came back or its permission stayed: %+v", set)
	}

	d.PutExchange(ctx, ExchangeDef{VHost: "/", Name: "nova", Type: "topic", Durable: true})
	d.PutQueue(ctx, QueueDef{VHost: "/", Name: "notifications.info", Durable: true})
	b := BindingDef{VHost: "/", Source: "nova", Destination: "notifications.info", DestinationType: "queue", RoutingKey: "notifications.info"}
	d.PutBinding(ctx, b)
	b2 := b
	b2.Arguments = map[string]any{"x-match": "all"}
	d.PutBinding(ctx, b2)
	if set, _ := d.Load(ctx); len(set.Bindings) != 2 {
		t.Fatalf("bindings differing only in arguments: %d, want 2", len(set.Bindings))
	}
	d.DeleteQueue(ctx, "/", "notifications.info")
	if set, _ := d.Load(ctx); len(set.Bindings) != 0 || len(set.Queues) != 0 || len(set.Exchanges) != 1 {
		t.Fatalf("after queue delete: %+v", set)
	}
	d.PutBinding(ctx, b)
	d.DeleteVHost(ctx, "/")
	if set, _ := d.Load(ctx); len(set.Exchanges)+len(set.Queues)+len(set.Bindings)+len(set.VHosts) != 0 {
		t.Fatalf("after vhost delete: %+v", set)
	}
}
