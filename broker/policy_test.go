package broker

import (
	"context"
	"fmt"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"substrate/internal/rabbitmqtest"
)

// ---- policies, against substrate and RabbitMQ ----

// policyTarget is a broker with a fresh vhost of the test's own, on
// which policies are set: substrate through the admin API, RabbitMQ
// through rabbitmqctl on the private node.
type policyTarget struct {
	url   string // of the vhost
	set   func(t *testing.T, operator bool, name, pattern, def, applyTo string, priority int)
	clear func(t *testing.T, operator bool, name string)
}

func forPolicyTargets(t *testing.T, body func(t *testing.T, pt *policyTarget)) {
	t.Run("substrate", func(t *testing.T) {
		s := startServer(t)
		ctx := context.Background()
		v := uniq("pol")
		must(t, s.AddVHost(ctx, v))
		must(t, s.SetPermissions(ctx, Permission{User: "guest", VHost: v, Configure: ".*", Write: ".*", Read: ".*"}))
		body(t, &policyTarget{
			url: "amqp://guest:guest@" + addrOf(s) + "/" + url.PathEscape(v),
			set: func(t *testing.T, operator bool, name, pattern, def, applyTo string, priority int) {
				t.Helper()
				d, err := ParsePolicyDefinition([]byte(def))
				must(t, err)
				p := Policy{VHost: v, Name: name, Pattern: pattern, ApplyTo: applyTo, Priority: priority, Definition: d}
				if operator {
					must(t, s.SetOperatorPolicy(ctx, p))
				} else {
					must(t, s.SetPolicy(ctx, p))
				}
			},
			clear: func(t *testing.T, operator bool, name string) {
				t.Helper()
				if operator {
					must(t, s.ClearOperatorPolicy(ctx, v, name))
				} else {
					must(t, s.ClearPolicy(ctx, v, name))
				}
			},
		})
	})
	t.Run("rabbitmq", func(t *testing.T) {
		node := rabbitNode(t)
		ctl := func(t *testing.T, args ...string) {
			t.Helper()
			if out, err := node.Ctl(context.Background(), args...); err != nil {
				t.Fatalf("rabbitmqctl %v: %v\n%s", args, err, out)
			}
		}
		v := uniq("pol")
		ctl(t, "add_vhost", v)
		t.Cleanup(func() { ctl(t, "delete_vhost", v) })
		ctl(t, "set_permissions", "-p", v, "guest", ".*", ".*", ".*")
		body(t, &policyTarget{
			url: strings.TrimSuffix(rabbit.url, "/") + "/" + url.PathEscape(v),
			set: func(t *testing.T, operator bool, name, pattern, def, applyTo string, priority int) {
				t.Helper()
				cmd := "set_policy"
				if operator {
					cmd = "set_operator_policy"
				}
				ctl(t, cmd, "-p", v, "--apply-to", applyTo, "--priority", strconv.Itoa(priority), name, pattern, def)
			},
			clear: func(t *testing.T, operator bool, name string) {
				t.Helper()
				cmd := "clear_policy"
				if operator {
					cmd = "clear_operator_policy"
				}
				ctl(t, cmd, "-p", v, name)
			},
		})
	})
}

// rabbitNode returns the private RabbitMQ node (for rabbitmqctl), waiting
// for it; the test is skipped without one (failed with
// SUBSTRATE_REQUIRE_CLIENTS=1).
func rabbitNode(t *testing.T) *rabbitmqtest.Server {
	t.Helper()
	rabbit.waited.Store(true)
	<-rabbit.ready
	if rabbit.fail != "" {
		t.Fatal(rabbit.fail)
	}
	if rabbit.skip != "" {
		t.Skip(rabbit.skip)
	}
	if rabbit.node == nil {
		if requireClients() {
			t.Fatal("SUBSTRATE_TEST_RABBITMQ: no rabbitmqctl access to the node")
		}
		t.Skip("SUBSTRATE_TEST_RABBITMQ: no rabbitmqctl access to the node")
	}
	return rabbit.node
}

// readyCount returns a queue's ready messages (-1 if it does not exist).
func readyCount(t *testing.T, c *amqp091.Connection, q string) int {
	t.Helper()
	ch, err := c.Channel()
	must(t, err)
	defer ch.Close()
	info, err := ch.QueueDeclarePassive(q, false, false, false, false, nil)
	if isCode(err, 404) {
		return -1
	}
	must(t, err)
	return info.Messages
}

func pubRange(t *testing.T, ch *amqp091.Channel, exchange, key string, from, to int) {
	t.Helper()
	for i := from; i <= to; i++ {
		must(t, ch.Publish(exchange, key, false, false, amqp091.Publishing{Body: []byte(strconv.Itoa(i))}))
	}
}

func getBody(t *testing.T, ch *amqp091.Channel, q string) string {
	t.Helper()
	d, ok, err := ch.Get(q, true)
	must(t, err)
	if !ok {
		t.Fatalf("queue %s is empty", q)
	}
	return string(d.Body)
}

// waitCount polls until queue q has n ready messages.
func waitCount(t *testing.T, c *amqp091.Connection, q string, n int) {
	t.Helper()
	var got int
	eventually(t, 10*time.Second, func() bool { got = readyCount(t, c, q); return got == n },
		fmt.Sprintf("queue %s to hold %d messages", q, n))
}

// A policy applies to queues that exist (a shrinking max-length drops the
// oldest, dead-lettered through the policy's dead-letter-exchange) and is
// lifted when cleared; priorities pick one policy; an operator policy
// caps it; a queue argument beats both.
func TestPolicyMaxLengthMatchRabbitMQ(t *testing.T) {
	forPolicyTargets(t, func(t *testing.T, pt *policyTarget) {
		c := dial(t, pt.url)
		ch := channel091(t, c)
		must(t, ch.ExchangeDeclare("dlx", "fanout", false, false, false, false, nil))
		for _, q := range []string{"work", "dead", "capped", "argq"} {
			_, err := ch.QueueDeclare(q, false, false, false, false, nil)
			if q == "argq" {
				_, err = ch.QueueDeclare(q+"2", false, false, false, false, amqp091.Table{"x-max-length": int32(1)})
			}
			must(t, err)
		}
		must(t, ch.QueueBind("dead", "", "dlx", false, nil))
		pubRange(t, ch, "", "work", 1, 5)
		waitCount(t, c, "work", 5)

		pt.set(t, false, "high", "^work$", `{"max-length":2,"dead-letter-exchange":"dlx"}`, "queues", 5)
		pt.set(t, false, "low", "^work$", `{"max-length":4}`, "queues", 1) // changes nothing
		waitCount(t, c, "work", 2)
		waitCount(t, c, "dead", 3)
		if got := getBody(t, ch, "dead"); got != "1" {
			t.Fatalf("first dead letter %q, want the oldest, 1", got)
		}
		// New publishes keep the limit (drop-head).
		pubRange(t, ch, "", "work", 6, 6)
		waitCount(t, c, "work", 2)
		if got := getBody(t, ch, "work"); got != "5" {
			t.Fatalf("head %q, want 5", got)
		}
		// Cleared: the lower-priority policy (4) applies.
		pt.clear(t, false, "high")
		pubRange(t, ch, "", "work", 7, 10)
		waitCount(t, c, "work", 4)
		pt.clear(t, false, "low")
		pubRange(t, ch, "", "work", 11, 13)
		waitCount(t, c, "work", 7)

		// An operator policy caps a policy's limit.
		pt.set(t, false, "cap-user", "^capped$", `{"max-length":5}`, "queues", 0)
		pt.set(t, true, "cap-op", "^capped$", `{"max-length":2}`, "queues", 0)
		pubRange(t, ch, "", "capped", 1, 4)
		waitCount(t, c, "capped", 2)

		// x-max-length 1 beats the policy's 3.
		pt.set(t, false, "argpol", "^argq", `{"max-length":3}`, "queues", 0)
		pubRange(t, ch, "", "argq", 1, 4)
		pubRange(t, ch, "", "argq2", 1, 4)
		waitCount(t, c, "argq", 3)
		waitCount(t, c, "argq2", 1)
	})
}

// message-ttl applies to messages enqueued after it is set; expires
// deletes an idle queue.
func TestPolicyTTLAndExpiresMatchRabbitMQ(t *testing.T) {
	forPolicyTargets(t, func(t *testing.T, pt *policyTarget) {
		c := dial(t, pt.url)
		ch := channel091(t, c)
		_, err := ch.QueueDeclare("ttl", false, false, false, false, nil)
		must(t, err)
		pubRange(t, ch, "", "ttl", 1, 1)
		waitCount(t, c, "ttl", 1)
		pt.set(t, false, "ttl", "^ttl", `{"message-ttl":50}`, "all", 0)
		// RabbitMQ applies policies asynchronously: publish until one
		// expires (behind the head, which keeps no TTL, expiry waits:
		// both look at the head only, so use a second queue).
		_, err = ch.QueueDeclare("ttl2", false, false, false, false, nil)
		must(t, err)
		eventually(t, 10*time.Second, func() bool {
			pubRange(t, ch, "", "ttl2", 1, 1)
			time.Sleep(100 * time.Millisecond)
			return readyCount(t, c, "ttl2") == 0
		}, "a message to expire under the policy's message-ttl")
		if n := readyCount(t, c, "ttl"); n != 1 {
			t.Fatalf("ttl holds %d, want 1: the message enqueued before the policy stays", n)
		}

		_, err = ch.QueueDeclare("exp", false, false, false, false, nil)
		must(t, err)
		pt.set(t, false, "exp", "^exp$", `{"expires":100}`, "queues", 0)
		// Polled less often than it expires: a (passive) declare is use.
		eventually(t, 10*time.Second, func() bool {
			time.Sleep(300 * time.Millisecond)
			return readyCount(t, c, "exp") == -1
		}, "the idle queue to expire")
	})
}

// overflow reject-publish nacks; a quorum queue's delivery-limit drops a
// message returned too often; an alternate-exchange policy routes what an
// exchange cannot.
func TestPolicyOverflowDeliveryLimitAlternateMatchRabbitMQ(t *testing.T) {
	forPolicyTargets(t, func(t *testing.T, pt *policyTarget) {
		c := dial(t, pt.url)
		ch := channel091(t, c)
		pt.set(t, false, "rej", "^rej$", `{"max-length":1,"overflow":"reject-publish"}`, "queues", 0)
		_, err := ch.QueueDeclare("rej", false, false, false, false, nil)
		must(t, err)
		must(t, ch.Confirm(false))
		confirms := ch.NotifyPublish(make(chan amqp091.Confirmation, 4))
		pubRange(t, ch, "", "rej", 1, 2)
		if a := recvTimeout(t, confirms, 5*time.Second); !a.Ack {
			t.Fatalf("first publish nacked")
		}
		if a := recvTimeout(t, confirms, 5*time.Second); a.Ack {
			t.Fatalf("second publish acked, want a nack (reject-publish)")
		}

		ch2 := channel091(t, c)
		pt.set(t, false, "dl", "^qq$", `{"delivery-limit":1}`, "queues", 0)
		_, err = ch2.QueueDeclare("qq", true, false, false, false, amqp091.Table{"x-queue-type": "quorum"})
		must(t, err)
		pubRange(t, ch2, "", "qq", 1, 1)
		waitCount(t, c, "qq", 1)
		for i := 0; i < 2; i++ {
			d, ok, err := ch2.Get("qq", false)
			must(t, err)
			if !ok {
				t.Fatalf("get %d: empty", i)
			}
			must(t, d.Nack(false, true))
		}
		waitCount(t, c, "qq", 0)

		pt.set(t, false, "ae", "^src$", `{"alternate-exchange":"ae"}`, "exchanges", 0)
		must(t, ch2.ExchangeDeclare("src", "direct", false, false, false, false, nil))
		must(t, ch2.ExchangeDeclare("ae", "fanout", false, false, false, false, nil))
		_, err = ch2.QueueDeclare("unrouted", false, false, false, false, nil)
		must(t, err)
		must(t, ch2.QueueBind("unrouted", "", "ae", false, nil))
		eventually(t, 10*time.Second, func() bool {
			pubRange(t, ch2, "src", "nowhere", 1, 1)
			return readyCount(t, c, "unrouted") > 0
		}, "an unroutable message to reach the alternate exchange")
	})
}

// The texts below were recorded from RabbitMQ 3.10.8's rabbitmqctl
// set_policy and set_operator_policy ("Error:\nValidation failed\n\n"
// + text); the test also checks them against the private node.
var policyValidation = []struct {
	operator bool
	pattern  string
	applyTo  string
	def      string
	want     string
}{
	{false, ".*", "all", `{"foo":1,"bar":"x","max-length":1}`, `[{<<"bar">>,<<"x">>},{<<"foo">>,1}] are not recognised policy settings`},
	{false, ".*", "all", `{"max-length":"x"}`, `<<"x">> is not a valid maximum length`},
	{false, ".*", "all", `{"max-length":1.5}`, `1.5 is not a valid maximum length`},
	{false, ".*", "all", `{"max-length":-1,"expires":0}`, `0 is not a valid queue expiry`},
	{false, ".*", "all", `{"foo":1,"max-length":-1}`, `-1 is not a valid maximum length`},
	{false, ".*", "all", `{"message-ttl":1e3}`, `1.0e3 is not a valid message TTL`},
	{false, ".*", "all", `{"expires":1.0}`, `1.0 is not a valid queue expiry`},
	{false, ".*", "all", `{"expires":"é"}`, `<<"Ã©">> is not a valid queue expiry`},
	{false, ".*", "all", `{"max-length":{"a":1}}`, `#{<<"a">> => 1} is not a valid maximum length`},
	{false, ".*", "all", `{"max-length":null}`, `null is not a valid maximum length`},
	{false, ".*", "all", `{"max-length-bytes":"a"}`, `<<"a">> is not a valid maximum length in bytes`},
	{false, ".*", "all", `{"overflow":"x"}`, `<<"x">> is not a valid overflow value`},
	{false, ".*", "all", `{"queue-mode":"x"}`, `<<"x">> is not a valid queue-mode value`},
	{false, ".*", "all", `{"delivery-limit":-2}`, `-2 is not a valid delivery limit`},
	{false, ".*", "all", `{"dead-letter-exchange":1}`, `1 is not a valid dead letter exchange name`},
	{false, ".*", "all", `{"dead-letter-routing-key":true}`, `true is not a valid dead letter routing key`},
	{false, ".*", "all", `{"alternate-exchange":[1,"a"]}`, `[1,<<"a">>] is not a valid alternate exchange name`},
	{false, ".*", "all", `{"ha-mode":"exactly"}`, `ha-mode="exactly" takes an integer, none given`},
	{false, ".*", "all", `{"ha-mode":"exactly","ha-params":0}`, `ha-mode="exactly" takes an integer, 0 given`},
	{false, ".*", "all", `{"ha-mode":"foo"}`, `<<"foo">> is not a valid ha-mode value`},
	{false, ".*", "all", `{"ha-mode":"all","ha-params":2}`, `ha-mode="all" does not take parameters`},
	{false, ".*", "all", `{"ha-mode":"nodes","ha-params":[]}`, `ha-mode="nodes" list must be non-empty`},
	{false, ".*", "all", `{"ha-mode":"nodes","ha-params":"a"}`, `ha-mode="nodes" takes a list, <<"a">> given`},
	{false, ".*", "all", `{"ha-sync-mode":"x","ha-mode":"all"}`, `ha-sync-mode must be "manual" or "automatic", got <<"x">>`},
	{false, ".*", "all", `{"ha-sync-mode":"automatic"}`, `ha-mode must be specified to specify ha-params, ha-sync-mode or ha-promote-on-shutdown`},
	{false, ".*", "all", `{"ha-mode":"all","ha-promote-on-failure":"x"}`, `ha-promote-on-failure must be "always" or "when-synced", got <<"x">>`},
	{false, ".*", "all", `{"ha-mode":"all","ha-sync-batch-size":0}`, `ha-sync-batch-size takes an integer greater than 0, 0 given`},
	{false, ".*", "all", `{"ha-mode":"foo","max-length":-1}`, `-1 is not a valid maximum length`},
	{false, ".*", "all", `{"queue-master-locator":"balanced"}`, `<<"balanced">> invalid queue-master-locator value`},
	{false, ".*", "all", `{"queue-leader-locator":"x"}`, `<<"x">> is not a valid queue leader locator value`},
	{false, ".*", "all", `{"queue-version":3}`, `3 is not a valid queue-version value`},
	{false, ".*", "all", `{"initial-cluster-size":-1}`, `-1 is not a valid cluster size`},
	{false, ".*", "all", `{"dead-letter-strategy":"x"}`, `<<"x">> is not a valid dead letter strategy`},
	{false, ".*", "all", `{}`, `no policy provided`},
	{false, ".*", "classic_queues", `{"max-length":1}`, `apply-to 'classic_queues' unrecognised; should be 'queues', 'exchanges' or 'all'`},
	{true, ".*", "all", `{"max-length":1,"ha-mode":"all"}`, `[{<<"ha-mode">>,<<"all">>}] are not recognised policy settings`},
	{true, ".*", "all", `{"overflow":"reject-publish"}`, `[{<<"overflow">>,<<"reject-publish">>}] are not recognised policy settings`},
	{true, ".*", "all", `{"max-length":-1}`, `-1 is not a valid maximum length`},
	// accepted
	{false, "^(?!amq\\.).*", "all", `{"ha-mode":"all","ha-sync-mode":"automatic"}`, ``},
	{false, ".*", "all", `{"ha-mode":"exactly","ha-params":2,"ha-sync-mode":"automatic","ha-promote-on-shutdown":"always","ha-promote-on-failure":"when-synced","ha-sync-batch-size":10}`, ``},
	{false, ".*", "queues", `{"queue-mode":"lazy","max-in-memory-length":1,"dead-letter-strategy":"at-least-once","max-age":"1D"}`, ``},
	{true, ".*", "queues", `{"expires":1000,"message-ttl":5,"max-length-bytes":4,"delivery-limit":3,"max-in-memory-length":3,"max-in-memory-bytes":4}`, ``},
}

func TestPolicyValidationMatchRabbitMQ(t *testing.T) {
	s := startServer(t)
	ctx := context.Background()
	for i, c := range policyValidation {
		def, err := ParsePolicyDefinition([]byte(c.def))
		must(t, err)
		p := Policy{VHost: "/", Name: "v" + strconv.Itoa(i), Pattern: c.pattern, ApplyTo: c.applyTo, Definition: def}
		if c.operator {
			err = s.SetOperatorPolicy(ctx, p)
		} else {
			err = s.SetPolicy(ctx, p)
		}
		var got string
		if err != nil {
			ve, ok := err.(*ValidationError)
			if !ok {
				t.Fatalf("%s: error %T %v, want a *ValidationError", c.def, err, err)
			}
			got = ve.Reason
		}
		if got != c.want {
			t.Errorf("%s (operator %v):\n got %q\nwant %q", c.def, c.operator, got, c.want)
		}
	}
	if got := len(s.Policies("/")) + len(s.OperatorPolicies("/")); got != 4 {
		t.Errorf("%d policies stored, want the 4 valid ones", got)
	}
	// The same texts from RabbitMQ's rabbitmqctl, for a sample (each
	// rabbitmqctl costs seconds of CPU): unknown keys, a value, a
	// mirroring key, an operator policy, and one accepted.
	node := rabbitNode(t)
	v := uniq("polval")
	if out, err := node.Ctl(ctx, "add_vhost", v); err != nil {
		t.Fatalf("add_vhost: %v %s", err, out)
	}
	defer node.Ctl(ctx, "delete_vhost", v)
	for _, i := range []int{0, 3, 7, 20, 35, len(policyValidation) - 4} {
		c := policyValidation[i]
		cmd := "set_policy"
		if c.operator {
			cmd = "set_operator_policy"
		}
		_, stderr, code, err := node.CLI(ctx, rabbitmqtest.CtlScript, nil, cmd, "-p", v, "--apply-to", c.applyTo, "v"+strconv.Itoa(i), c.pattern, c.def)
		must(t, err)
		want, wantCode := "", 0
		if c.want != "" {
			want, wantCode = "Error:\nValidation failed\n\n"+c.want+"\n\n", 69
		}
		if stderr != want || code != wantCode {
			t.Errorf("rabbitmqctl %s %s: exit %d, stderr\n%q\nwant %d\n%q", cmd, c.def, code, stderr, wantCode, want)
		}
	}
}

// A queue's info names the policies in effect and their merged
// definition; policies survive a restart on the same Definitions and
// apply to the durable queues restored.
func TestPolicyInfoAndRestart(t *testing.T) {
	defs := NewMemDefinitions()
	dir := t.TempDir()
	s := startServer(t, func(c *Config) { c.Definitions = defs; c.StoreDir = dir })
	ctx := context.Background()
	c := dial(t, urlOf(s))
	ch := channel091(t, c)
	_, err := ch.QueueDeclare("nova.q", true, false, false, false, nil)
	must(t, err)
	_, err = ch.QueueDeclare("reply_x", false, false, true, false, nil) // kolla's ha-all pattern leaves reply_* out
	must(t, err)
	def, _ := ParsePolicyDefinition([]byte(`{"ha-mode":"all","max-length":10,"message-ttl":60000}`))
	must(t, s.SetPolicy(ctx, Policy{VHost: "/", Name: "ha-all", Pattern: `^(?!(amq\.)|(.*_fanout_)|(reply_)).*`, Definition: def}))
	opDef, _ := ParsePolicyDefinition([]byte(`{"max-length":3,"expires":100000}`))
	must(t, s.SetOperatorPolicy(ctx, Policy{VHost: "/", Name: "caps", Pattern: ".*", ApplyTo: "queues", Priority: 1, Definition: opDef}))
	want := map[string]any{"ha-mode": "all", "max-length": int64(3), "message-ttl": int64(60000), "expires": int64(100000)}
	check := func(s *Server) {
		t.Helper()
		var found bool
		for _, q := range s.Queues("/") {
			switch q.Name {
			case "nova.q":
				found = true
				if q.Policy != "ha-all" || q.OperatorPolicy != "caps" || !reflect.DeepEqual(q.EffectivePolicy, want) {
					t.Fatalf("nova.q: policy %q operator %q effective %#v, want ha-all caps %#v", q.Policy, q.OperatorPolicy, q.EffectivePolicy, want)
				}
			case "reply_x":
				if q.Policy != "" || q.OperatorPolicy != "caps" {
					t.Fatalf("reply_x: policy %q operator %q, want none and caps", q.Policy, q.OperatorPolicy)
				}
			}
		}
		if !found {
			t.Fatal("nova.q missing")
		}
	}
	check(s)
	wantPolicies := s.Policies("")
	if len(wantPolicies) != 1 || wantPolicies[0].ApplyTo != ApplyToAll {
		t.Fatalf("Policies = %+v", wantPolicies)
	}
	c.Close()
	must(t, s.Shutdown(ctx))

	s2 := startServer(t, func(c *Config) { c.Definitions = defs; c.StoreDir = dir })
	if got := s2.Policies(""); !reflect.DeepEqual(got, wantPolicies) {
		t.Fatalf("after restart: %+v, want %+v", got, wantPolicies)
	}
	if got := s2.OperatorPolicies("/"); len(got) != 1 || got[0].Name != "caps" || got[0].Priority != 1 {
		t.Fatalf("operator policies after restart: %+v", got)
	}
	// The restored durable queue has the limit: the operator's 3.
	c2 := dial(t, urlOf(s2))
	ch2 := channel091(t, c2)
	pubRange(t, ch2, "", "nova.q", 1, 5)
	waitCount(t, c2, "nova.q", 3)
	for _, q := range s2.Queues("/") {
		if q.Name == "nova.q" && (q.Policy != "ha-all" || q.OperatorPolicy != "caps") {
			t.Fatalf("after restart: %+v", q)
		}
	}
	// Clearing a missing policy is ErrNotFound; a deleted vhost takes its
	// policies along.
	if err := s2.ClearPolicy(ctx, "/", "nope"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("ClearPolicy of a missing policy: %v", err)
	}
	must(t, s2.AddVHost(ctx, "gone"))
	must(t, s2.SetPolicy(ctx, Policy{VHost: "gone", Name: "p", Pattern: ".*", Definition: map[string]any{"max-length": 1}}))
	must(t, s2.DeleteVHost(ctx, "gone"))
	must(t, s2.AddVHost(ctx, "gone"))
	if got := s2.Policies("gone"); len(got) != 0 {
		t.Fatalf("a recreated vhost has its predecessor's policies: %+v", got)
	}
	set, err := defs.Load(ctx)
	must(t, err)
	for _, p := range set.Policies {
		if p.VHost == "gone" {
			t.Fatalf("stored policy of a deleted vhost: %+v", p)
		}
	}
}

func TestErlTerm(t *testing.T) {
	for _, c := range []struct {
		v    any
		want string
	}{
		{1.5, "1.5"}, {1000.0, "1.0e3"}, {100.0, "100.0"}, {0.001, "0.001"}, {1e-4, "0.0001"}, {-2.5, "-2.5"},
		{"a\"b", `<<"a\"b">>`}, {"\x01", "<<1>>"}, {123456789.0, "123456789.0"}, {[]any{}, "[]"}, {map[string]any{"b": true, "a": nil}, `#{<<"a">> => null,<<"b">> => true}`},
	} {
		if got := erlTerm(c.v); got != c.want {
			t.Errorf("erlTerm(%#v) = %s, want %s", c.v, got, c.want)
		}
	}
}

// Which value wins: a classic queue's x-overflow beats the policy's, a
// quorum queue's does not; x-message-ttl and the policy's: the lower; a shrinking max-length
// drops nothing from a reject-publish queue.
func TestPolicyPrecedenceMatchRabbitMQ(t *testing.T) {
	forPolicyTargets(t, func(t *testing.T, pt *policyTarget) {
		c := dial(t, pt.url)
		ch := channel091(t, c)
		pt.set(t, false, "ovf", "^ovf", `{"max-length":1,"overflow":"drop-head"}`, "queues", 0)
		pt.set(t, false, "qovf", "^qovf", `{"max-length":1,"overflow":"reject-publish"}`, "queues", 0)
		pt.set(t, false, "ttl", "^ttl", `{"message-ttl":50}`, "queues", 0)
		_, err := ch.QueueDeclare("ovf", false, false, false, false, amqp091.Table{"x-overflow": "reject-publish"})
		must(t, err)
		_, err = ch.QueueDeclare("qovf", true, false, false, false, amqp091.Table{"x-queue-type": "quorum", "x-overflow": "drop-head"})
		must(t, err)
		_, err = ch.QueueDeclare("qovf2", true, false, false, false, amqp091.Table{"x-queue-type": "quorum"})
		must(t, err)
		_, err = ch.QueueDeclare("ttl", false, false, false, false, amqp091.Table{"x-message-ttl": int32(60000)})
		must(t, err)
		_, err = ch.QueueDeclare("shrink", false, false, false, false, amqp091.Table{"x-overflow": "reject-publish"})
		must(t, err)

		// One publish at a time: RabbitMQ's quorum queues apply the
		// limit asynchronously.
		acks := func(q string, n int) []bool {
			t.Helper()
			cch := channel091(t, c)
			defer cch.Close()
			must(t, cch.Confirm(false))
			confirms := cch.NotifyPublish(make(chan amqp091.Confirmation, n))
			var out []bool
			for i := 1; i <= n; i++ {
				pubRange(t, cch, "", q, i, i)
				out = append(out, recvTimeout(t, confirms, 10*time.Second).Ack)
				time.Sleep(50 * time.Millisecond)
			}
			return out
		}
		if got := acks("ovf", 2); !reflect.DeepEqual(got, []bool{true, false}) {
			t.Errorf("classic queue, x-overflow reject-publish, policy drop-head: acks %v, want [true false]", got)
		}
		if got := acks("qovf", 3); !reflect.DeepEqual(got, []bool{true, true, false}) {
			t.Errorf("quorum queue, x-overflow drop-head, policy reject-publish: acks %v, want [true true false]", got)
		}
		if got := acks("qovf2", 3); !reflect.DeepEqual(got, []bool{true, true, false}) {
			t.Errorf("quorum queue, policy reject-publish: acks %v, want [true true false]", got)
		}
		pubRange(t, ch, "", "ttl", 1, 1)
		waitCount(t, c, "ttl", 0) // 50 ms, not 60 s

		pubRange(t, ch, "", "shrink", 1, 3)
		waitCount(t, c, "shrink", 3)
		pt.set(t, false, "shrink", "^shrink$", `{"max-length":1}`, "queues", 0)
		if got := acks("shrink", 1); !reflect.DeepEqual(got, []bool{false}) { // applied (RabbitMQ: asynchronously)
			t.Errorf("shrink: a publish over the new limit was acked")
		}
		if n := readyCount(t, c, "shrink"); n != 3 {
			t.Errorf("shrink holds %d, want 3: reject-publish drops nothing", n)
		}
	})
}

// Of two policies of one priority, substrate applies the first by name
// (RabbitMQ's choice follows its table's hash order: not compared).
func TestPolicyPriorityTie(t *testing.T) {
	s := startServer(t)
	ctx := context.Background()
	must(t, s.SetPolicy(ctx, Policy{VHost: "/", Name: "tie-b", Pattern: "^tie", Definition: map[string]any{"max-length": 2}}))
	must(t, s.SetPolicy(ctx, Policy{VHost: "/", Name: "tie-a", Pattern: "^tie", Definition: map[string]any{"max-length": 1}}))
	must(t, s.SetPolicy(ctx, Policy{VHost: "/", Name: "other", Pattern: "^tie", ApplyTo: "exchanges", Priority: 9, Definition: map[string]any{"alternate-exchange": "x"}}))
	c := dial(t, urlOf(s))
	ch := channel091(t, c)
	_, err := ch.QueueDeclare("tie", false, false, false, false, nil)
	must(t, err)
	must(t, ch.ExchangeDeclare("tiex", "fanout", false, true, false, false, nil))
	for _, q := range s.Queues("/") {
		if q.Name == "tie" && q.Policy != "tie-a" {
			t.Fatalf("queue tie: policy %q, want tie-a", q.Policy)
		}
	}
	for _, x := range s.Exchanges("/") {
		if x.Name == "tiex" && x.Policy != "other" {
			t.Fatalf("exchange tiex: policy %q, want other (apply-to exchanges, priority 9)", x.Policy)
		}
	}
}

// Policies changing while messages flow, are rejected into a dead-letter
// exchange and expire: no lost lock, no race (run with -race).
func TestPolicyChangesUnderLoad(t *testing.T) {
	s := startServer(t)
	ctx := context.Background()
	c := dial(t, urlOf(s))
	ch := channel091(t, c)
	must(t, ch.ExchangeDeclare("dlx", "fanout", false, false, false, false, nil))
	for _, q := range []string{"load", "dead"} {
		_, err := ch.QueueDeclare(q, false, false, false, false, nil)
		must(t, err)
	}
	must(t, ch.QueueBind("dead", "", "dlx", false, nil))
	closed := c.NotifyClose(make(chan *amqp091.Error, 1))
	cons := channel091(t, c)
	must(t, cons.Qos(10, 0, false))
	ds, err := cons.Consume("load", "c1", false, false, false, false, nil)
	must(t, err)
	done := make(chan struct{})
	go func() {
		defer close(done)
		i := 0
		for d := range ds {
			if i++; i%2 == 0 {
				d.Nack(false, false)
			} else {
				d.Ack(false)
			}
		}
	}()
	pub := channel091(t, c)
	stop := make(chan struct{})
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if pub.Publish("", "load", false, false, amqp091.Publishing{Body: []byte("x")}) != nil {
				return
			}
		}
	}()
	defs := []string{`{"max-length":3,"dead-letter-exchange":"dlx"}`, `{"message-ttl":1,"overflow":"reject-publish","max-length":5}`, `{"expires":60000,"max-length-bytes":10}`}
	for i := 0; i < 60; i++ {
		d, err := ParsePolicyDefinition([]byte(defs[i%len(defs)]))
		must(t, err)
		must(t, s.SetPolicy(ctx, Policy{VHost: "/", Name: "p", Pattern: "^load$", ApplyTo: "queues", Definition: d}))
		if i%7 == 0 {
			must(t, s.SetOperatorPolicy(ctx, Policy{VHost: "/", Name: "op", Pattern: ".*", Definition: map[string]any{"max-length": int64(2 + i%3)}}))
		}
	}
	// The churn above may end before a message was dead-lettered (it
	// takes milliseconds); with the dead-letter policy left in place, the
	// consumer's nacks must reach dlx.
	must(t, s.ClearOperatorPolicy(ctx, "/", "op"))
	d, err := ParsePolicyDefinition([]byte(defs[0]))
	must(t, err)
	must(t, s.SetPolicy(ctx, Policy{VHost: "/", Name: "p", Pattern: "^load$", ApplyTo: "queues", Definition: d}))
	eventually(t, 10*time.Second, func() bool { return readyCount(t, c, "dead") > 0 },
		"dead letters reach the policy's dead-letter exchange")
	must(t, s.ClearPolicy(ctx, "/", "p"))
	close(stop)
	<-pubDone
	must(t, cons.Cancel("c1", false))
	<-done
	select {
	case err := <-closed:
		t.Fatalf("connection closed: %v", err)
	default:
	}
}
