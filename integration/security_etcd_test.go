package integration

import (
	"encoding/base64"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"substrate/kvstore"
)

// ctlCmd runs `substrate ctl` against s and returns its combined output.
func ctlCmd(t *testing.T, s *server, args ...string) string {
	t.Helper()
	return run(t, 20*time.Second, nil, binary, append([]string{"ctl", "--data-dir", s.dataDir}, args...)...)
}

// TestSecurityBrokerKeysOutOfEtcdClientsReach: etcdctl and the JSON
// gateway on each alias see none of the broker's keys; a user record
// forged through the gateway is refused, so after a restart it does not
// log in.
func TestSecurityBrokerKeysOutOfEtcdClientsReach(t *testing.T) {
	s := serve(t)
	ctx := ctxT(t, 60*time.Second)
	// The broker has stored guest, vhost "/" and guest's permission, and
	// a durable queue.
	conn, err := dialAMQP(s, "guest", "guest")
	if err != nil {
		t.Fatal(err)
	}
	ch, _ := conn.Channel()
	if _, err := ch.QueueDeclare("durable-q", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	conn.Close()

	cli := client(t, s.endpoint())
	if _, err := cli.Put(ctx, "/app/key", "v"); err != nil {
		t.Fatal(err)
	}
	if r, err := cli.Get(ctx, "", clientv3.WithPrefix()); err != nil || r.Count != 1 || len(r.Kvs) != 1 {
		t.Fatalf("clientv3 sees %v %v", r, err)
	}
	if _, err := exec.LookPath(etcdctl); err == nil {
		env := []string{"ETCDCTL_API=3"}
		out := run(t, 20*time.Second, env, etcdctl, "--endpoints="+s.endpoint(), "get", "--prefix", "")
		if out != "/app/key\nv\n" {
			t.Errorf("etcdctl get --prefix \"\": %q", out)
		}
		out = run(t, 20*time.Second, env, etcdctl, "--endpoints="+s.endpoint(), "get", "--prefix", "", "-w", "json")
		if !strings.Contains(out, `"count":1`) || strings.Contains(out, base64.StdEncoding.EncodeToString([]byte(kvstore.ReservedPrefix))[:16]) {
			t.Errorf("etcdctl get -w json: %q", out)
		}
		cmd := exec.CommandContext(ctx, etcdctl, "--endpoints="+s.endpoint(), "put", kvstore.ReservedPrefix+"users/evil", "{}")
		cmd.Env = append(cmd.Environ(), env...)
		if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "permission denied") {
			t.Errorf("etcdctl put under the prefix: %v %s", err, out)
		}
	}

	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	forged := `{"name":"mallory","password_hash":"` + b64("salt0123456789abcdef0123456789abcdef") + `","tags":["administrator"]}`
	for _, alias := range []string{"/v3/", "/v3alpha/", "/v3beta/"} {
		url := "http://" + s.endpoint() + alias
		for _, body := range []string{
			`{"key":"` + b64(kvstore.ReservedPrefix+"users/mallory") + `","value":"` + b64(forged) + `"}`,
		} {
			resp, err := http.Post(url+"kv/put", "application/json", strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusForbidden {
				t.Errorf("%s forged put: %d %s", alias, resp.StatusCode, b)
			}
		}
		txn := `{"success":[{"request_put":{"key":"` + b64(kvstore.ReservedPrefix+"users/mallory") + `","value":"` + b64(forged) + `"}}]}`
		resp, err := http.Post(url+"kv/txn", "application/json", strings.NewReader(txn))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s forged txn: %d", alias, resp.StatusCode)
		}
		resp, err = http.Post(url+"kv/range", "application/json", strings.NewReader(`{"key":"`+b64("\x00")+`","range_end":"`+b64("\x00")+`"}`))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(b), b64(kvstore.ReservedPrefix)[:16]) || !strings.Contains(string(b), `"count":"1"`) {
			t.Errorf("%s range of every key: %s", alias, b)
		}
	}

	s.stop(syscall.SIGTERM)
	s.restart(t)
	if c, err := dialAMQP(s, "mallory", "anything"); err == nil {
		c.Close()
		t.Fatal("a forged user logged in")
	}
	c, err := dialAMQP(s, "guest", "guest")
	if err != nil {
		t.Fatalf("guest after restart: %v", err)
	}
	defer c.Close()
	ch, _ = c.Channel()
	if _, err := ch.QueueDeclarePassive("durable-q", true, false, false, false, nil); err != nil {
		t.Errorf("durable queue after restart: %v", err)
	}
	if out := ctlCmd(t, s, "list_users"); strings.Contains(out, "mallory") {
		t.Errorf("list_users: %s", out)
	}
}

// TestSecurityMalformedRecordIsSkipped: records that do not parse (written
// before the prefix was reserved) are logged, each with its key, and the
// broker starts.
func TestSecurityMalformedRecordIsSkipped(t *testing.T) {
	s := newServer(t)
	// Write the records as an older substrate's clients could: with the
	// member in this test process, on the server's data directory.
	cfg := kvstore.NewConfig()
	// cfg.Name: the host name, as serve's default.
	cfg.DataDir = filepath.Join(s.dataDir, "etcd")
	cfg.Hosts = []string{"127.0.0.1"}
	cfg.ClientPort, cfg.PeerPort = s.clientPort, s.peerPort
	kv, err := kvstore.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t, 60*time.Second)
	if err := kv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	bad := map[string]string{
		kvstore.ReservedPrefix + "permissions/%2F/mallory": `{"user":"mallory","vhost":"/","configure":"(","write":".*","read":".*"}`,
		kvstore.ReservedPrefix + "users/broken":            `{"name":`,
	}
	for k, v := range bad {
		if _, err := kv.KV().Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	if err := kv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	s.proc = start(t, nil, s.args()...)
	s.waitReady(30 * time.Second)
	out := s.output()
	for k := range bad {
		if n := strings.Count(out, k); n != 1 {
			t.Errorf("key %s named %d times:\n%s", k, n, out)
		}
	}
	if n := strings.Count(out, "does not decode"); n != len(bad) {
		t.Errorf("%d warnings, want %d:\n%s", n, len(bad), out)
	}
	c, err := dialAMQP(s, "guest", "guest")
	if err != nil {
		t.Fatalf("guest: %v", err)
	}
	c.Close()
}

// TestSecurityBrokerWorksWithEtcdAuth: an operator turns etcd auth on with
// etcdctl; the broker goes on declaring durable queues and adding and
// logging in users, before and after a restart.
func TestSecurityBrokerWorksWithEtcdAuth(t *testing.T) {
	needCommand(t, etcdctl)
	s := serve(t)
	env := []string{"ETCDCTL_API=3"}
	etcd := func(args ...string) string {
		return run(t, 30*time.Second, env, etcdctl, append([]string{"--endpoints=" + s.endpoint()}, args...)...)
	}
	etcd("user", "add", "root:rootpw")
	etcd("auth", "enable")
	if out := etcd("--user", "root:rootpw", "auth", "status"); !strings.Contains(out, "true") {
		t.Logf("auth status: %s", out)
	}
	use := func(round int) {
		t.Helper()
		user := "u" + strconv.Itoa(round)
		ctlCmd(t, s, "add_user", user, "pw")
		ctlCmd(t, s, "set_permissions", user, ".*", ".*", ".*")
		c, err := dialAMQP(s, user, "pw")
		if err != nil {
			t.Fatalf("round %d login: %v", round, err)
		}
		defer c.Close()
		ch, _ := c.Channel()
		if _, err := ch.QueueDeclare("durable-"+user, true, false, false, false, nil); err != nil {
			t.Fatalf("round %d declare: %v", round, err)
		}
	}
	use(1)
	s.stop(syscall.SIGTERM)
	s.restart(t)
	use(2)
	c, err := dialAMQP(s, "u1", "pw")
	if err != nil {
		t.Fatalf("u1 after restart: %v", err)
	}
	defer c.Close()
	ch, _ := c.Channel()
	if _, err := ch.QueueDeclarePassive("durable-u1", true, false, false, false, nil); err != nil {
		t.Errorf("durable queue after restart: %v", err)
	}
	if out := etcd("--user", "root:rootpw", "get", "--prefix", ""); strings.Contains(out, "substrate/broker") {
		t.Errorf("root sees the broker's keys: %s", out)
	}
}
