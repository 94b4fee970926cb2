// Package definitionstest is one test body for every implementation of
// broker.Definitions (STYLE: one test body, many targets): the in-memory
// store and the etcd-backed one must behave alike.
package definitionstest

import (
	"context"
	"fmt"
	"reflect"
	"testing"

	"substrate/broker"
)

// Run checks d, which must be empty.
func Run(t *testing.T, d broker.Definitions) {
	t.Helper()
	ctx := context.Background()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	load := func() *broker.DefinitionSet {
		t.Helper()
		set, err := d.Load(ctx)
		must(err)
		return set
	}

	must(broker.EnsureDefaults(ctx, d))
	set := load()
	if len(set.Users) != 1 || set.Users[0].Name != "guest" || !set.Users[0].CheckPassword("guest") || !set.Users[0].HasTag("administrator") {
		t.Fatalf("defaults: users %+v", set.Users)
	}
	if len(set.VHosts) != 1 || set.VHosts[0].Name != "/" || len(set.Permissions) != 1 || set.Permissions[0] != (broker.Permission{User: "guest", VHost: "/", Configure: ".*", Write: ".*", Read: ".*"}) {
		t.Fatalf("defaults: %+v %+v", set.VHosts, set.Permissions)
	}
	// An operator who deleted guest keeps it deleted.
	must(d.DeleteUser(ctx, "guest"))
	must(broker.EnsureDefaults(ctx, d))
	if set := load(); len(set.Users) != 0 || len(set.Permissions) != 0 {
		t.Fatalf("guest came back or its permission stayed: %+v", set)
	}

	// Names as OpenStack writes them: '@', dots, slashes, any UTF-8.
	must(d.PutVHost(ctx, broker.VHost{Name: "nova/cell1"}))
	must(d.PutUser(ctx, broker.User{Name: "openstack", PasswordHash: broker.HashPassword("pw"), Tags: []string{"monitoring"}}))
	must(d.PutPermission(ctx, broker.Permission{User: "openstack", VHost: "nova/cell1", Configure: ".*", Write: "^nova", Read: ""}))
	must(d.PutPermission(ctx, broker.Permission{User: "openstack", VHost: "/", Configure: ".*", Write: ".*", Read: ".*"}))
	args := map[string]any{"x-expires": int32(1800000), "x-queue-mode": "lazy", "x-ha": true}
	ex := broker.ExchangeDef{VHost: "/", Name: "nova", Type: "topic", Durable: true}
	q := broker.QueueDef{VHost: "/", Name: "compute.host-1@ü", Durable: true, Arguments: args}
	must(d.PutExchange(ctx, ex))
	must(d.PutExchange(ctx, broker.ExchangeDef{VHost: "/", Name: "nova_fanout", Type: "fanout", Durable: true, AutoDelete: true}))
	must(d.PutQueue(ctx, q))
	b := broker.BindingDef{VHost: "/", Source: "nova", Destination: q.Name, DestinationType: "queue", RoutingKey: "compute.host-1"}
	b2 := b
	b2.Arguments = map[string]any{"x-match": "all"}
	e2e := broker.BindingDef{VHost: "/", Source: "nova_fanout", Destination: "nova", DestinationType: "exchange"}
	must(d.PutBinding(ctx, b))
	must(d.PutBinding(ctx, b2))
	must(d.PutBinding(ctx, b)) // idempotent
	must(d.PutBinding(ctx, e2e))

	set = load()
	if len(set.Bindings) != 3 {
		t.Fatalf("bindings = %+v, want 3 (arguments are part of identity)", set.Bindings)
	}
	var gotQ broker.QueueDef
	for _, x := range set.Queues {
		if x.Name == q.Name {
			gotQ = x
		}
	}
	if !reflect.DeepEqual(gotQ, q) {
		t.Fatalf("queue round trip:\n got %#v\nwant %#v", gotQ, q)
	}
	if u := set.Users[0]; u.Name != "openstack" || !u.CheckPassword("pw") || !reflect.DeepEqual(u.Tags, []string{"monitoring"}) {
		t.Fatalf("user round trip: %+v", u)
	}
	if len(set.Permissions) != 2 || len(set.VHosts) != 2 {
		t.Fatalf("permissions %+v vhosts %+v", set.Permissions, set.VHosts)
	}

	// Vhost limits are stored with the vhost: setting them replaces the
	// vhost's record without touching what is in it; clearing them
	// leaves none.
	limited := broker.VHost{Name: "nova/cell1", Limits: broker.VHostLimits{broker.LimitMaxConnections: 10, broker.LimitMaxQueues: -1}}
	must(d.PutVHost(ctx, limited))
	limited.Limits[broker.LimitMaxQueues] = 99 // the store keeps what was put, not the caller's map
	vhostNamed := func(set *broker.DefinitionSet, name string) broker.VHost {
		for _, v := range set.VHosts {
			if v.Name == name {
				return v
			}
		}
		t.Fatalf("vhost %q missing: %+v", name, set.VHosts)
		return broker.VHost{}
	}
	set = load()
	if got, want := vhostNamed(set, "nova/cell1"), (broker.VHost{Name: "nova/cell1", Limits: broker.VHostLimits{broker.LimitMaxConnections: 10, broker.LimitMaxQueues: -1}}); !reflect.DeepEqual(got, want) {
		t.Fatalf("vhost limits round trip:\n got %#v\nwant %#v", got, want)
	}
	if len(set.Permissions) != 2 {
		t.Fatalf("setting limits dropped the vhost's permissions: %+v", set.Permissions)
	}
	must(d.PutVHost(ctx, broker.VHost{Name: "nova/cell1"}))
	if got := vhostNamed(load(), "nova/cell1"); len(got.Limits) != 0 {
		t.Fatalf("cleared limits still stored: %#v", got)
	}

	// Policies and operator policies are apart: one of each may share a
	// name. Definitions come back as JSON numbers do (compare loosely).
	pol := broker.Policy{VHost: "nova/cell1", Name: "ha-all", Pattern: `^(?!amq\.).*`, ApplyTo: "all", Priority: 1,
		Definition: map[string]any{"ha-mode": "all"}}
	op := broker.Policy{VHost: "nova/cell1", Name: "ha-all", Pattern: ".*", ApplyTo: "queues", Operator: true,
		Definition: map[string]any{"max-length": 5}}
	must(d.PutPolicy(ctx, pol))
	must(d.PutPolicy(ctx, op))
	must(d.PutPolicy(ctx, broker.Policy{VHost: "/", Name: "gone", Pattern: ".*", ApplyTo: "all", Definition: map[string]any{"expires": 1}}))
	must(d.DeletePolicy(ctx, "/", "gone", false))
	must(d.DeletePolicy(ctx, "/", "never", true))
	set = load()
	if len(set.Policies) != 2 || !reflect.DeepEqual(set.Policies[0], pol) || set.Policies[1].Operator != true || set.Policies[1].Pattern != ".*" ||
		fmt.Sprint(set.Policies[1].Definition["max-length"]) != "5" {
		t.Fatalf("policies round trip: %+v", set.Policies)
	}

	// Cascades.
	must(d.DeleteQueue(ctx, "/", q.Name))
	if set := load(); len(set.Queues) != 0 || len(set.Bindings) != 1 {
		t.Fatalf("after queue delete: queues %+v bindings %+v", set.Queues, set.Bindings)
	}
	must(d.DeleteExchange(ctx, "/", "nova")) // destination of the e2e binding
	if set := load(); len(set.Bindings) != 0 || len(set.Exchanges) != 1 {
		t.Fatalf("after exchange delete: %+v %+v", set.Exchanges, set.Bindings)
	}
	must(d.DeletePermission(ctx, "openstack", "/"))
	must(d.DeleteVHost(ctx, "nova/cell1"))
	set = load()
	if len(set.VHosts) != 1 || set.VHosts[0].Name != "/" || len(set.Permissions) != 0 || len(set.Users) != 1 || len(set.Policies) != 0 {
		t.Fatalf("after vhost delete: %+v", set)
	}
	must(d.DeleteVHost(ctx, "/"))
	must(d.DeleteUser(ctx, "openstack"))
	must(d.DeleteUser(ctx, "nobody")) // deleting what is not there is fine
	if set := load(); len(set.Users)+len(set.VHosts)+len(set.Permissions)+len(set.Exchanges)+len(set.Queues)+len(set.Bindings) != 0 {
		t.Fatalf("store not empty at the end: %+v", set)
	}
}
