package kvstore

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"substrate/internal/faults"
	"substrate/internal/testkit"
)

// TestPanicFailsOnlyThatRequest: a request whose handler panics gets
// codes.Internal; the member and its other clients go on.
func TestPanicFailsOnlyThatRequest(t *testing.T) {
	var logs testkit.Buffer
	cfg := NewConfig()
	cfg.Name = "t1"
	cfg.DataDir = filepath.Join(t.TempDir(), "etcd")
	cfg.Hosts = []string{"127.0.0.1"}
	cfg.ClientPort, cfg.PeerPort = freePort(t), freePort(t)
	cfg.Vars = map[string]string{"ETCD_UNSAFE_NO_FSYNC": "true"}
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())
	cli, err := clientv3.New(clientv3.Config{Endpoints: s.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	disarm := faults.Arm(SiteRequest, "boom")
	defer disarm()
	before := faults.Count(faults.Etcd)

	_, err = cli.Put(ctx, "boom-key", "v")
	if status.Code(err) != codes.Internal {
		t.Fatalf("armed put: %v, want Internal", err)
	}
	if got := faults.Count(faults.Etcd) - before; got != 1 {
		t.Errorf("etcd panics counted %d, want 1", got)
	}
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "/etcdserverpb.KV/Put") {
		t.Errorf("no ERROR line naming the method:\n%s", logs.String())
	}
	if _, err := cli.Put(ctx, "fine", "v"); err != nil {
		t.Fatalf("next put: %v", err)
	}
	resp, err := cli.Get(ctx, "fine")
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("get: %v %v", resp, err)
	}
	disarm()
	if resp, err := cli.Get(ctx, "boom-key"); err != nil || len(resp.Kvs) != 0 {
		t.Errorf("the panicking put: %v %v, want not applied", resp, err)
	}
}
