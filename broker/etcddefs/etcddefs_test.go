package etcddefs

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"substrate/broker"
	"substrate/broker/definitionstest"
	"substrate/internal/testkit"
	"substrate/kvstore"
)

// startEtcd runs an embedded member for the test (the broker itself reaches
// etcd only through clientv3; the test needs a server to talk to).
func startEtcd(t *testing.T) *clientv3.Client {
	t.Helper()
	free := func() int { return testkit.FreePort(t) }
	cfg := kvstore.NewConfig()
	cfg.Name = "defs-test"
	cfg.DataDir = filepath.Join(t.TempDir(), "etcd")
	cfg.Hosts = []string{"127.0.0.1"}
	cfg.ClientPort, cfg.PeerPort = free(), free()
	cfg.Vars = map[string]string{"ETCD_UNSAFE_NO_FSYNC": "true"}
	kv, err := kvstore.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := kv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kv.Shutdown(context.Background()) })
	c, err := clientv3.New(clientv3.Config{Endpoints: kv.ClientURLs(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestStoreBehavesLikeMemDefinitions(t *testing.T) {
	c := startEtcd(t)
	definitionstest.Run(t, New(c, "/test-a/"))

	// Two stores on one etcd under different prefixes do not see each other,
	// and a second Store on the same prefix (another node, or a restart)
	// sees the first one's writes, AMQP argument types included.
	ctx := context.Background()
	a, b := New(c, "/test-b/"), New(c, "/test-b/")
	q := broker.QueueDef{VHost: "/", Name: "reply_abc", Durable: true, Arguments: map[string]any{"x-expires": int32(1800000), "x-max-length": int64(1 << 40)}}
	if err := a.PutQueue(ctx, q); err != nil {
		t.Fatal(err)
	}
	set, err := b.Load(ctx)
	if err != nil || len(set.Queues) != 1 || set.Queues[0].Arguments["x-expires"] != int32(1800000) || set.Queues[0].Arguments["x-max-length"] != int64(1<<40) {
		t.Fatalf("second store: %+v %v", set, err)
	}
	other, _ := New(c, "/test-a/").Load(ctx)
	if len(other.Queues) != 0 {
		t.Fatalf("prefixes leak: %+v", other.Queues)
	}
	resp, err := c.Get(ctx, "/test-b/queues/%2F/reply_abc")
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("layout: vhost '/' must be escaped as one key component: %v %v", resp, err)
	}
}

// TestBadRecordsAreSkipped: records that do not decode (written by an
// older version, by hand, or by a client before the prefix was reserved)
// are logged once each, naming the key, and left out; the rest loads.
func TestBadRecordsAreSkipped(t *testing.T) {
	c := startEtcd(t)
	ctx := context.Background()
	var logs bytes.Buffer
	s := New(c, "/test-bad/").WithLogger(slog.New(slog.NewTextHandler(&logs, nil)))
	if err := broker.EnsureDefaults(ctx, s); err != nil {
		t.Fatal(err)
	}
	bad := map[string]string{
		"/test-bad/users/mallory":           `{"name":"mallory","tags":["administrator"]`,
		"/test-bad/permissions/%2F/mallory": `{"user":"mallory","vhost":"/","configure":"(","write":".*","read":".*"}`,
		"/test-bad/queues/%2F/q":            `{"vhost":"/","name":"q","durable":true,"arguments":"AAAA/w=="}`,
	}
	for k, v := range bad {
		if _, err := c.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	set, err := s.Load(ctx)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if len(set.Users) != 1 || set.Users[0].Name != broker.DefaultUser || len(set.Permissions) != 1 || len(set.VHosts) != 1 || len(set.Queues) != 0 {
		t.Errorf("loaded %+v", set)
	}
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != len(bad) {
		t.Errorf("want one warning per bad record, got:\n%s", logs.String())
	}
	for k := range bad {
		if n := strings.Count(logs.String(), "key="+k+" "); n != 1 {
			t.Errorf("%s named %d times in:\n%s", k, n, logs.String())
		}
	}
	// The broker starts on such a store.
	cfg := broker.NewConfig()
	cfg.Addrs = []string{"127.0.0.1:0"}
	cfg.Definitions = s
	b, err := broker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(ctx); err != nil {
		t.Fatalf("broker start with bad records: %v", err)
	}
	b.Shutdown(ctx)
}
