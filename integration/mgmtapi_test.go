package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"substrate/internal/rabbitmqtest"
)

// rabbitmqadmin is Debian's client of the management API (package
// rabbitmq-server).
const rabbitmqadmin = "/usr/bin/rabbitmqadmin"

// adminTarget is a management API that rabbitmqadmin talks to.
type adminTarget struct {
	name     string
	httpPort int
	amqpAddr string
}

func (a adminTarget) api() string { return "http://127.0.0.1:" + strconv.Itoa(a.httpPort) + "/api" }

// admin runs rabbitmqadmin against a as guest and returns its output; it
// fails the test on a non-zero exit unless wantFail.
func (a adminTarget) admin(t *testing.T, wantFail bool, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	full := append([]string{"-H", "127.0.0.1", "-P", strconv.Itoa(a.httpPort), "-u", "guest", "-p", "guest"}, args...)
	cmd := exec.CommandContext(ctx, rabbitmqadmin, full...)
	cmd.Env = childEnv()
	out, err := cmd.CombinedOutput()
	if (err != nil) != wantFail {
		t.Errorf("%s: rabbitmqadmin %s: %v\n%s", a.name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// startRabbitMQManagement starts a private RabbitMQ 3.10.8 with the
// management plugin on a private loopback port.
func startRabbitMQManagement(t *testing.T) adminTarget {
	t.Helper()
	why := rabbitmqtest.Available()
	need(t, "rabbitmq-server ("+why+")", why == "")
	port := freePort(t)
	r, err := rabbitmqtest.Start(context.Background(), rabbitmqtest.Options{Name: "mgmtapi", LogLevel: "warning",
		Plugins: []string{"rabbitmq_management"},
		// Statistics every 0.5 s rather than 5 s: listings catch up sooner.
		Conf: fmt.Sprintf("management.tcp.port = %d\nmanagement.tcp.ip = 127.0.0.1\ncollect_statistics_interval = 500\n", port)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Stop() })
	a := adminTarget{name: "rabbitmq", httpPort: port, amqpAddr: r.Addr}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if st, _ := httpDo(t, a, "GET", "/overview", nil); st == 200 {
			return a
		}
		if time.Now().After(deadline) {
			t.Fatal("RabbitMQ's management listener did not answer")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func httpDo(t *testing.T, a adminTarget, method, path string, body []byte) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, a.api()+path, bytes.NewReader(body))
	req.SetBasicAuth("guest", "guest")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// TestMgmtAPI runs Debian's rabbitmqadmin against substrate and against
// RabbitMQ 3.10.8 (one node for the test binary's run of it) and compares
// what it prints; then loads a deployment tool's definitions.json through
// POST /api/definitions on both and logs in with its user over AMQP.
func TestMgmtAPI(t *testing.T) {
	needCommand(t, rabbitmqadmin)
	s := serve(t)
	sub := adminTarget{name: "substrate", httpPort: s.httpPort, amqpAddr: "127.0.0.1:" + strconv.Itoa(s.amqpPort)}
	rmq := startRabbitMQManagement(t)
	targets := []adminTarget{sub, rmq}
	t.Run("rabbitmqadmin", func(t *testing.T) { testRabbitmqadmin(t, targets) })
	t.Run("definitions", func(t *testing.T) { testDefinitionsPost(t, targets) })
}

// steps are rabbitmqadmin commands whose output must be the same on both
// targets (after normalize).
var adminSteps = [][]string{
	{"declare", "vhost", "name=adm"},
	{"declare", "queue", "name=adm.q", "durable=true", "arguments={\"x-max-length\": 10}"},
	{"declare", "queue", "name=adm.q2", "durable=false", "auto_delete=false"},
	{"declare", "exchange", "name=adm.x", "type=fanout"},
	{"declare", "binding", "source=adm.x", "destination=adm.q"},
	{"declare", "binding", "source=adm.x", "destination=adm.q2", "routing_key=k2"},
	{"declare", "user", "name=adm.user", "password=secret", "tags=monitoring"},
	{"declare", "permission", "vhost=adm", "user=adm.user", "configure=.*", "write=.*", "read=.*"},
	{"declare", "policy", "name=adm.p", "pattern=^adm\\.", "definition={\"max-length\": 100}", "apply-to=queues"},
	{"publish", "exchange=adm.x", "routing_key=k", "payload=hello"},
	{"publish", "exchange=amq.default", "routing_key=adm.q2", "payload=second", "properties={\"content_type\": \"text/plain\"}"},
	{"publish", "exchange=amq.default", "routing_key=nowhere", "payload=lost"},
	{"list", "queues", "name", "messages", "durable"},
	{"-f", "tsv", "list", "queues", "name", "policy"},
	{"-f", "tsv", "list", "queues", "name", "messages_ready"},
	{"-f", "raw_json", "list", "queues", "name", "arguments"},
	{"list", "bindings", "source", "destination", "routing_key"},
	{"list", "users", "name", "tags"},
	{"list", "vhosts", "name"},
	{"list", "permissions", "vhost", "user", "configure"},
	{"list", "policies", "name", "pattern", "apply-to", "definition"},
	{"show", "overview", "rabbitmq_version", "object_totals.queues", "queue_totals.messages"},
	{"get", "queue=adm.q2", "ackmode=ack_requeue_true"},
	{"get", "queue=adm.q", "ackmode=ack_requeue_false", "count=2"},
	{"-f", "raw_json", "get", "queue=adm.q2", "ackmode=ack_requeue_false"},
	{"list", "queues", "name", "messages"},
	{"purge", "queue", "name=adm.q2"},
	{"close", "connection", "name=nope"},
	{"delete", "binding", "source=adm.x", "destination_type=queue", "destination=adm.q2", "properties_key=k2"},
	{"delete", "policy", "name=adm.p"},
	{"delete", "queue", "name=adm.q"},
	{"delete", "queue", "name=adm.q2"},
	{"delete", "exchange", "name=adm.x"},
	{"delete", "user", "name=adm.user"},
	{"delete", "vhost", "name=adm"},
	{"list", "queues", "name"},
	{"-f", "tsv", "list", "exchanges", "name", "type"},
}

// failing are the steps rabbitmqadmin reports as errors (exit code 1 and
// the server's reason) on both.
var failing = map[string]bool{"close connection name=nope": true}

// normalize hides what differs between two brokers and is not the
// API's: the order of JSON keys, and the exchange RabbitMQ has that
// substrate does not (amq.rabbitmq.trace).
func normalize(s string) string {
	// -f raw_json: the same JSON, whatever the order of keys.
	var v any
	if json.Unmarshal([]byte(s), &v) == nil {
		b, _ := json.Marshal(v)
		return string(b)
	}
	var lines []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, "amq.rabbitmq.trace") {
			continue
		}
		lines = append(lines, l)
	}
	return strings.Join(lines, "\n")
}

func testRabbitmqadmin(t *testing.T, targets []adminTarget) {
	for _, step := range adminSteps {
		key := strings.Join(step, " ")
		want := normalize(targets[0].admin(t, failing[key], step...))
		// RabbitMQ's listings come from its statistics database, which
		// lags up to 5 s: a list or show (never a get, which takes
		// messages) is retried until it agrees (or 15 s pass).
		deadline := time.Now().Add(15 * time.Second)
		for {
			got := normalize(targets[1].admin(t, failing[key], step...))
			if got == want {
				break
			}
			if !slices.Contains(step, "list") && !slices.Contains(step, "show") || time.Now().After(deadline) {
				t.Errorf("rabbitmqadmin %s:\nsubstrate:\n%s\nrabbitmq:\n%s", key, want, got)
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	// Listings whose values differ between two brokers (names with
	// ports, node names): rabbitmqadmin prints them from substrate.
	c, err := amqp.DialConfig("amqp://guest:guest@"+targets[0].amqpAddr+"/", amqp.Config{Properties: amqp.Table{"connection_name": "nova-compute"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ch, _ := c.Channel()
	ch.QueueDeclare("adm.c", false, true, false, false, nil)
	ch.Consume("adm.c", "ctag-adm", false, false, false, false, nil)
	for _, args := range [][]string{
		{"list", "connections", "name", "user", "channels", "client_properties.connection_name"},
		{"list", "channels", "name", "user", "consumer_count"},
		{"list", "consumers", "queue.name", "consumer_tag"},
		{"list", "nodes", "name", "type", "mem_used"},
		{"list", "exchanges"},
		{"list", "vhost_limits"},
		{"list", "parameters"},
		{"list", "operator_policies"},
		{"show", "overview"},
	} {
		out := targets[0].admin(t, false, args...)
		if strings.Contains(out, "nova-compute") != (args[1] == "connections") {
			t.Errorf("rabbitmqadmin %s:\n%s", strings.Join(args, " "), out)
		}
		if args[1] == "consumers" && !strings.Contains(out, "ctag-adm") {
			t.Errorf("rabbitmqadmin %s: no consumer ctag-adm:\n%s", strings.Join(args, " "), out)
		}
	}

	// export writes a definitions file both can parse with the same
	// sections, and each imports the other's.
	files := map[string]string{}
	for _, a := range targets {
		file := filepath.Join(t.TempDir(), a.name+".json")
		files[a.name] = file
		out := a.admin(t, false, "export", file)
		if !strings.Contains(out, "Exported definitions for") {
			t.Errorf("%s: export: %s", a.name, out)
		}
		var d map[string]any
		b, _ := os.ReadFile(file)
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: exported definitions: %v", a.name, err)
		}
		var keys []string
		for k := range d {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range []string{"bindings", "exchanges", "permissions", "policies", "queues", "users", "vhosts"} {
			if _, ok := d[k]; !ok {
				t.Errorf("%s: exported definitions lack %q (have %v)", a.name, k, keys)
			}
		}
	}
	for i, a := range targets {
		other := targets[1-i]
		out := a.admin(t, false, "import", files[other.name])
		if !strings.Contains(out, "Uploaded definitions from") {
			t.Errorf("%s: import of %s's export: %s", a.name, other.name, out)
		}
	}
}

// rabbitHash is a password hash as RabbitMQ's definitions carry it
// (rabbit_password_hashing_sha256: base64 of 4 salt bytes and
// SHA-256(salt + password)).
func rabbitHash(password string) string {
	salt := make([]byte, 4)
	rand.Read(salt)
	h := sha256.Sum256(append(append([]byte(nil), salt...), password...))
	return base64.StdEncoding.EncodeToString(append(salt, h[:]...))
}

// deploymentDefinitions is the definitions.json a deployment tool (as
// kolla-ansible's rabbitmq role) writes for an OpenStack controller.
func deploymentDefinitions(hash string) []byte {
	return []byte(`{
  "vhosts": [{"name": "/"}, {"name": "openstack"}],
  "users": [
    {"name": "openstack", "password_hash": "` + hash + `", "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": "administrator"},
    {"name": "monitoring", "password_hash": "` + hash + `", "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ["monitoring"]}
  ],
  "permissions": [
    {"user": "openstack", "vhost": "openstack", "configure": ".*", "write": ".*", "read": ".*"},
    {"user": "openstack", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"},
    {"user": "monitoring", "vhost": "openstack", "configure": "^$", "write": "^$", "read": ".*"}
  ],
  "policies": [
    {"vhost": "openstack", "name": "ha-all", "pattern": "^(?!(amq\\.)|(.*_fanout_)|(reply_)).*", "apply-to": "all",
     "definition": {"ha-mode": "all", "ha-sync-mode": "automatic"}, "priority": 0},
    {"vhost": "openstack", "name": "notifications-ttl", "pattern": "^(notifications|versioned_notifications)\\.", "apply-to": "queues",
     "definition": {"message-ttl": 600000, "expires": 1200000}, "priority": 1}
  ],
  "queues": [
    {"name": "versioned_notifications.info", "vhost": "openstack", "durable": true, "auto_delete": false, "arguments": {}}
  ],
  "exchanges": [
    {"name": "nova", "vhost": "openstack", "type": "topic", "durable": true, "auto_delete": false, "internal": false, "arguments": {}}
  ],
  "bindings": [
    {"source": "nova", "vhost": "openstack", "destination": "versioned_notifications.info", "destination_type": "queue", "routing_key": "versioned_notifications.info", "arguments": {}}
  ]
}`)
}

func testDefinitionsPost(t *testing.T, targets []adminTarget) {
	hash := rabbitHash("openstack-secret")
	for _, a := range targets {
		st, body := httpDo(t, a, "POST", "/definitions", deploymentDefinitions(hash))
		if st != http.StatusNoContent && st != http.StatusCreated {
			t.Fatalf("%s: POST /api/definitions: %d %s", a.name, st, body)
		}
		// The user logs in over AMQP with the password behind the hash,
		// and uses the vhost.
		c, err := amqp.Dial("amqp://openstack:openstack-secret@" + a.amqpAddr + "/openstack")
		if err != nil {
			t.Fatalf("%s: AMQP login as the imported user: %v", a.name, err)
		}
		ch, err := c.Channel()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ch.QueueDeclarePassive("versioned_notifications.info", true, false, false, false, nil); err != nil {
			t.Fatalf("%s: imported queue: %v", a.name, err)
		}
		c.Close()
		if _, err := amqp.Dial("amqp://openstack:wrong@" + a.amqpAddr + "/openstack"); err == nil {
			t.Fatalf("%s: a wrong password logs in", a.name)
		}
		// The policies apply: the queue shows ha-all's or the TTL one's
		// (the higher priority), with the definition in effect.
		st, body = httpDo(t, a, "GET", "/queues/openstack/versioned_notifications.info", nil)
		var q map[string]any
		json.Unmarshal(body, &q)
		deadline := time.Now().Add(30 * time.Second)
		for q["policy"] != "notifications-ttl" && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond) // RabbitMQ's statistics lag
			_, body = httpDo(t, a, "GET", "/queues/openstack/versioned_notifications.info", nil)
			json.Unmarshal(body, &q)
		}
		if st != 200 || q["policy"] != "notifications-ttl" {
			t.Errorf("%s: queue after import: %d policy %v", a.name, st, q["policy"])
		}
		var pols []map[string]any
		_, body = httpDo(t, a, "GET", "/policies/openstack", nil)
		json.Unmarshal(body, &pols)
		if len(pols) != 2 {
			t.Errorf("%s: policies after import: %s", a.name, body)
		}
		// The monitoring user reads the overview, and may not write.
		req, _ := http.NewRequest("PUT", a.api()+"/vhosts/x", strings.NewReader("{}"))
		req.SetBasicAuth("monitoring", "openstack-secret")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s: monitoring user PUT /api/vhosts/x: %d", a.name, resp.StatusCode)
		}
	}
}
