package broker

import (
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"substrate/internal/rabbitmqtest"
)

// kollaDefinitions is shaped as kolla-ansible's and openstack-ansible's
// definitions.json: a sha256 hash made by RabbitMQ (salt 0x01020304,
// password "s3cret"), a plain password, tags as a string, the ha-all
// policy with its negative lookahead.
func kollaDefinitions() string {
	salt := []byte{1, 2, 3, 4}
	sum := sha256.Sum256(append(append([]byte(nil), salt...), "s3cret"...))
	hash := base64.StdEncoding.EncodeToString(append(salt, sum[:]...))
	md := md5.Sum(append(append([]byte(nil), salt...), "old"...))
	md5Hash := base64.StdEncoding.EncodeToString(append(append([]byte(nil), salt...), md[:]...))
	return `{
  "vhosts": [{"name": "/"}, {"name": "nova"}],
  "users": [
    {"name": "openstack", "password_hash": "` + hash + `", "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": "administrator"},
    {"name": "monitor", "password": "watch", "tags": "monitoring,management"},
    {"name": "legacy", "password_hash": "` + md5Hash + `", "hashing_algorithm": "rabbit_password_hashing_md5", "tags": []}
  ],
  "permissions": [
    {"user": "openstack", "vhost": "nova", "configure": ".*", "write": ".*", "read": ".*"}
  ],
  "policies": [
    {"vhost": "nova", "name": "ha-all", "pattern": "^(?!(amq\\.)|(.*_fanout_)|(reply_)).*", "apply-to": "all", "definition": {"ha-mode": "all"}, "priority": 0},
    {"vhost": "nova", "name": "limit", "pattern": "^limited$", "apply-to": "queues", "definition": {"max-length": 1}, "priority": 5}
  ],
  "parameters": [
    {"vhost": "nova", "component": "vhost-limits", "name": "limits", "value": {"max-queues": 100}},
    {"vhost": "nova", "component": "operator_policy", "name": "op", "value": {"pattern": ".*", "apply-to": "queues", "priority": 0, "definition": [["message-ttl", 3600000]]}}
  ],
  "exchanges": [{"name": "nova", "vhost": "nova", "type": "topic", "durable": true, "auto_delete": false, "internal": false, "arguments": {}}],
  "queues": [
    {"name": "compute", "vhost": "nova", "durable": true, "auto_delete": false, "arguments": {"x-expires": 1800000}},
    {"name": "limited", "vhost": "nova", "durable": true, "auto_delete": false, "arguments": {}},
    {"name": "reply_abc", "vhost": "nova", "durable": false, "auto_delete": false, "arguments": {}}
  ],
  "bindings": [{"source": "nova", "vhost": "nova", "destination": "compute", "destination_type": "queue", "routing_key": "compute.host1", "arguments": {}}]
}`
}

func importJSON(t *testing.T, s *Server, js string) error {
	t.Helper()
	var d RabbitDefinitions
	must(t, json.Unmarshal([]byte(js), &d))
	return s.ImportDefinitions(context.Background(), d)
}

func TestImportDeploymentDefinitions(t *testing.T) {
	s := startServer(t)
	must(t, importJSON(t, s, kollaDefinitions()))

	// The imported hash logs in with the original password, and routes.
	u := "amqp://openstack:s3cret@" + addrOf(s) + "/" + url.PathEscape("nova")
	c := dial(t, u)
	ch := channel091(t, c)
	must(t, ch.Publish("nova", "compute.host1", false, false, amqp091.Publishing{Body: []byte("x")}))
	waitCount(t, c, "compute", 1)
	if _, err := amqp091.Dial("amqp://openstack:wrong@" + addrOf(s) + "/nova"); err == nil {
		t.Fatal("a wrong password logged in")
	}
	var monitor, legacy User
	for _, x := range s.Users() {
		switch x.Name {
		case "monitor":
			monitor = x
		case "legacy":
			legacy = x
		}
	}
	if !legacy.CheckPassword("old") || legacy.CheckPassword("s3cret") || legacy.HashingAlgorithm() != HashMD5 {
		t.Fatalf("legacy (md5): %+v", legacy)
	}
	if !monitor.CheckPassword("watch") || !reflect.DeepEqual(monitor.Tags, []string{"monitoring", "management"}) {
		t.Fatalf("monitor: %+v", monitor)
	}
	pol := map[string]string{}
	for _, q := range s.Queues("nova") {
		pol[q.Name] = q.Policy + "/" + q.OperatorPolicy
	}
	if want := map[string]string{"compute": "ha-all/op", "limited": "limit/op", "reply_abc": "/op"}; !reflect.DeepEqual(pol, want) {
		t.Fatalf("policies in effect %v, want %v", pol, want)
	}
	if l := s.VHostLimits()["nova"]; l[LimitMaxQueues] != 100 {
		t.Fatalf("vhost limits %v", l)
	}
	pubRange(t, ch, "", "limited", 1, 3)
	waitCount(t, c, "limited", 1)

	// Export, then import into a fresh broker: the same export.
	exp := s.ExportDefinitions()
	b, err := json.Marshal(exp)
	must(t, err)
	for _, want := range []string{`"rabbit_version":"3.10.8"`, `"definition":{"message-ttl":3600000}`, `"component":"vhost-limits"`, `"hashing_algorithm":"rabbit_password_hashing_sha256"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("export lacks %s:\n%s", want, b)
		}
	}
	s2 := startServer(t)
	must(t, importJSON(t, s2, string(b)))
	exp2 := s2.ExportDefinitions()
	b2, _ := json.Marshal(exp2)
	if string(b) != string(b2) {
		t.Fatalf("round trip differs:\n%s\n%s", b, b2)
	}
	c2 := dial(t, "amqp://openstack:s3cret@"+addrOf(s2)+"/nova")
	c2.Close()
}

// A part substrate cannot honour refuses the whole import: nothing is
// changed.
func TestImportRefusals(t *testing.T) {
	s := startServer(t)
	for _, c := range []struct{ js, want string }{
		{`{"users":[{"name":"u","password_hash":"abc","tags":[]}]}`, `{:not_base64, "abc"}`},
		{`{"users":[{"name":"u","password_hash":"YWJjZA==","hashing_algorithm":"rabbit_password_hashing_md5","tags":[]}]}`, "password_hash is 4 bytes, not a rabbit_password_hashing_md5 hash (20)"},
		{`{"users":[{"name":"u","password_hash":"YWJjZA==","hashing_algorithm":"bcrypt","tags":[]}]}`, "unknown hashing algorithm bcrypt"},
		{`{"vhosts":[{"name":"x"}],"policies":[{"vhost":"x","name":"p","pattern":".*","definition":{"max-length":-1}}]}`, "-1 is not a valid maximum length"},
		{`{"vhosts":[{"name":"x"}],"parameters":[{"vhost":"x","component":"operator_policy","name":"op","value":{"pattern":".*","definition":[["ha-mode","all"]]}}],"policies":[]}`, `[{<<"ha-mode">>,<<"all">>}] are not recognised policy settings`},
		{`{"vhosts":[{"name":"x"}],"topic_permissions":[{"user":"guest","vhost":"x","exchange":"amq.topic","write":".*","read":".*"}]}`, "topic permissions are not supported"},
		{`{"vhosts":[{"name":"x"}],"parameters":[{"vhost":"x","component":"federation-upstream","name":"u","value":{}}]}`, `component "federation-upstream" are not supported`},
	} {
		err := importJSON(t, s, c.js)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.js, err, c.want)
		}
		var ve *ValidationError
		if strings.Contains(c.js, "policies") != errors.As(err, &ve) {
			t.Errorf("%s: %v: a policy's refusal is a *ValidationError, nothing else is", c.js, err)
		}
	}
	if len(s.Users()) != 1 || len(s.VHosts()) != 1 {
		t.Fatalf("a refused import changed something: %v %v", s.Users(), s.VHosts())
	}
}

// substrate's export loads into RabbitMQ 3.10.8 (rabbitmqctl
// import_definitions), and RabbitMQ then exports the same objects as
// substrate did.
func TestExportImportsIntoRabbitMQ(t *testing.T) {
	s := startServer(t)
	ctx := context.Background()
	v, user := uniq("exp"), uniq("expuser")
	must(t, s.AddVHost(ctx, v))
	must(t, s.AddUser(ctx, user, "pw1"))
	must(t, s.SetUserTags(ctx, user, []string{"monitoring"}))
	must(t, s.SetPermissions(ctx, Permission{User: user, VHost: v, Configure: ".*", Write: "^nova", Read: ""}))
	must(t, s.SetPermissions(ctx, Permission{User: "guest", VHost: v, Configure: ".*", Write: ".*", Read: ".*"}))
	must(t, s.SetVHostLimits(ctx, v, VHostLimits{LimitMaxQueues: 50}))
	def, _ := ParsePolicyDefinition([]byte(`{"ha-mode":"all","ha-sync-mode":"automatic","max-length":10}`))
	must(t, s.SetPolicy(ctx, Policy{VHost: v, Name: "ha-all", Pattern: `^(?!amq\.).*`, ApplyTo: "all", Priority: 2, Definition: def}))
	opDef, _ := ParsePolicyDefinition([]byte(`{"message-ttl":60000}`))
	must(t, s.SetOperatorPolicy(ctx, Policy{VHost: v, Name: "ttl-cap", Pattern: ".*", ApplyTo: "queues", Definition: opDef}))
	c := dial(t, "amqp://guest:guest@"+addrOf(s)+"/"+url.PathEscape(v))
	ch := channel091(t, c)
	must(t, ch.ExchangeDeclare("nova", "topic", true, false, false, false, amqp091.Table{"alternate-exchange": "ae"}))
	_, err := ch.QueueDeclare("compute", true, false, false, false, amqp091.Table{"x-expires": int32(1800000)})
	must(t, err)
	_, err = ch.QueueDeclare("qq", true, false, false, false, amqp091.Table{"x-queue-type": "quorum"})
	must(t, err)
	must(t, ch.QueueBind("compute", "compute.*", "nova", false, nil))

	exp := s.ExportDefinitions()
	body, err := json.Marshal(exp)
	must(t, err)

	node := rabbitNode(t)
	defer node.Ctl(ctx, "delete_vhost", v)
	defer node.Ctl(ctx, "delete_user", user)
	stdout, stderr, code, err := node.CLI(ctx, rabbitmqtest.CtlScript, strings.NewReader(string(body)), "import_definitions")
	must(t, err)
	if code != 0 {
		t.Fatalf("rabbitmqctl import_definitions: exit %d\n%s%s", code, stdout, stderr)
	}
	// Import is asynchronous in 3.10: poll its export.
	var theirs map[string]any
	eventually(t, 60*time.Second, func() bool {
		out, stderr, code, err := node.CLI(ctx, rabbitmqtest.CtlScript, nil, "export_definitions", "-")
		if err != nil || code != 0 {
			t.Fatalf("export_definitions: %v exit %d %s", err, code, stderr)
		}
		theirs = nil
		must(t, json.Unmarshal([]byte(out), &theirs))
		return len(objectsIn(theirs, "bindings", v)) == 1
	}, "RabbitMQ to have imported the binding")
	var ours map[string]any
	must(t, json.Unmarshal(body, &ours))
	for _, kind := range []string{"policies", "queues", "exchanges", "bindings", "permissions", "parameters"} {
		a, b := objectsIn(ours, kind, v), objectsIn(theirs, kind, v)
		if !reflect.DeepEqual(a, b) {
			t.Errorf("%s of vhost %s:\nsubstrate %v\n rabbitmq %v", kind, v, a, b)
		}
	}
	if a, b := userNamed(ours, user), userNamed(theirs, user); !reflect.DeepEqual(a, b) || a == nil {
		t.Errorf("user:\nsubstrate %v\n rabbitmq %v", a, b)
	}
	if out, err := node.Ctl(ctx, "authenticate_user", user, "pw1"); err != nil {
		t.Errorf("authenticate_user with the exported hash: %v\n%s", err, out)
	}
}

// objectsIn returns the definitions of one kind in vhost v, sorted by
// their JSON.
func objectsIn(d map[string]any, kind, v string) []string {
	var out []string
	list, _ := d[kind].([]any)
	for _, o := range list {
		if m, ok := o.(map[string]any); ok && m["vhost"] == v {
			// RabbitMQ exports an operator policy's definition as
			// [[key, value]]; substrate as an object (see rabbitdefs.go).
			if val, ok := m["value"].(map[string]any); ok {
				if pairs, ok := val["definition"].([]any); ok {
					obj := map[string]any{}
					for _, p := range pairs {
						if kv, ok := p.([]any); ok && len(kv) == 2 {
							obj[fmt.Sprint(kv[0])] = kv[1]
						}
					}
					val["definition"] = obj
				}
			}
			b, _ := json.Marshal(m)
			out = append(out, string(b))
		}
	}
	sort.Strings(out)
	return out
}

func userNamed(d map[string]any, name string) map[string]any {
	list, _ := d["users"].([]any)
	for _, o := range list {
		if m, ok := o.(map[string]any); ok && m["name"] == name {
			return m
		}
	}
	return nil
}
