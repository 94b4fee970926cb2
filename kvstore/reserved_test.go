package kvstore

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3election/v3electionpb"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// startMember runs a member on loopback for a test; vars are added to
// the etcd.conf-style variables.
func startMember(t *testing.T, name string, vars map[string]string) *Store {
	t.Helper()
	cfg := NewConfig()
	cfg.Name = name
	cfg.DataDir = filepath.Join(t.TempDir(), "etcd")
	cfg.Hosts = []string{"127.0.0.1"}
	cfg.ClientPort, cfg.PeerPort = freePort(t), freePort(t)
	cfg.Vars = map[string]string{"ETCD_UNSAFE_NO_FSYNC": "true"}
	for k, v := range vars {
		cfg.Vars[k] = v
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	return s
}

func publicClient(t *testing.T, s *Store) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: s.ClientURLs(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// Keys either side of the reserved prefix, and in it.
var (
	publicKeys   = []string{"/a", "/substrate/", "/substrate/brokeR", "/substrate/broker", "/substrate/broker0", "/substrate/other/x", "/tooz/g/m", "z", "zz"}
	reservedKeys = []string{"/substrate/broker/users/guest", "/substrate/broker/vhosts/%2F", "/substrate/broker/permissions/%2F/guest"}
)

func mustDenied(t *testing.T, what string, err error) {
	t.Helper()
	if status.Code(err) != codes.PermissionDenied && rpctypes.Error(err) != rpctypes.ErrPermissionDenied {
		t.Errorf("%s: %v, want permission denied", what, err)
	}
}

// TestReservedKeysHiddenFromClients compares every kind of range on a
// member holding the broker's keys with the same range on a member that
// never held them: the public client port must not tell them apart.
func TestReservedKeysHiddenFromClients(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	withBroker := startMember(t, "with", nil)
	plain := startMember(t, "plain", nil)
	for i, k := range publicKeys {
		// The broker's keys interleave with the others' revisions.
		if i < len(reservedKeys) {
			if _, err := withBroker.KV().Put(ctx, reservedKeys[i], `{"secret":"hash"}`); err != nil {
				t.Fatal(err)
			}
		}
		for _, s := range []*Store{withBroker, plain} {
			if _, err := s.KV().Put(ctx, k, "v"+k); err != nil {
				t.Fatal(err)
			}
		}
	}
	got, want := publicClient(t, withBroker), publicClient(t, plain)

	type get struct {
		key  string
		opts []clientv3.OpOption
	}
	all := []clientv3.OpOption{clientv3.WithPrefix()}
	cases := map[string]get{
		"reserved key":          {reservedKeys[0], nil},
		"elsewhere":             {"/tooz/", all},
		"reserved prefix":       {"/substrate/broker/", all},
		"prefix /substrate/":    {"/substrate/", all},
		"every key":             {"", all},
		"every key, limit 1":    {"", []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithLimit(1)}},
		"every key, limit 5":    {"", []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithLimit(5)}},
		"every key, limit 99":   {"", []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithLimit(99)}},
		"from /substrate/b, 2":  {"/substrate/b", []clientv3.OpOption{clientv3.WithFromKey(), clientv3.WithLimit(2)}},
		"from key":              {"/substrate/broker/", []clientv3.OpOption{clientv3.WithFromKey()}},
		"range across":          {"/b", []clientv3.OpOption{clientv3.WithRange("/substrate/broker/u")}},
		"count only":            {"", []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithCountOnly()}},
		"keys only":             {"", []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithKeysOnly()}},
		"sorted by value, desc": {"", []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByValue, clientv3.SortDescend), clientv3.WithLimit(3)}},
		"sorted by key, desc":   {"", []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(2)}},
		"serializable":          {"", []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithSerializable(), clientv3.WithLimit(4)}},
	}
	for name, c := range cases {
		g, err := got.Get(ctx, c.key, c.opts...)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		w, err := want.Get(ctx, c.key, c.opts...)
		if err != nil {
			t.Fatalf("%s (plain): %v", name, err)
		}
		if g.Count != w.Count || g.More != w.More || !slices.Equal(kvStrings(g), kvStrings(w)) {
			t.Errorf("%s: got count=%d more=%v %q, want count=%d more=%v %q", name, g.Count, g.More, kvStrings(g), w.Count, w.More, kvStrings(w))
		}
		// RangeStream (etcd 3.7) gives the same as Range.
		if opts := c.opts; !strings.Contains(name, "sorted") {
			st, err := got.GetStream(ctx, c.key, opts...)
			if err != nil {
				t.Fatalf("%s stream: %v", name, err)
			}
			sr, err := clientv3.GetStreamToGetResponse(st)
			if err != nil {
				t.Fatalf("%s stream: %v", name, err)
			}
			if sr.Count != w.Count || sr.More != w.More || !slices.Equal(kvStrings(sr), kvStrings(w)) {
				t.Errorf("%s stream: got count=%d more=%v %q, want count=%d more=%v %q", name, sr.Count, sr.More, kvStrings(sr), w.Count, w.More, kvStrings(w))
			}
		}
	}

	// Paging through every key with limit 1, as etcdctl --from-key does.
	var paged []string
	for key := "\x00"; ; {
		r, err := got.Get(ctx, key, clientv3.WithFromKey(), clientv3.WithLimit(1))
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Kvs) == 0 {
			break
		}
		paged = append(paged, string(r.Kvs[0].Key))
		key = string(r.Kvs[0].Key) + "\x00"
	}
	if !slices.Equal(paged, publicKeys) {
		t.Errorf("paged: %q, want %q", paged, publicKeys)
	}

	// Writes, deletes and transactions that touch the reserved keys are
	// refused; the keys are still there.
	_, err := got.Put(ctx, reservedKeys[0], `{"name":"guest","tags":["administrator"]}`)
	mustDenied(t, "put", err)
	_, err = got.Put(ctx, "/substrate/broker/users/evil", "{}")
	mustDenied(t, "put new", err)
	_, err = got.Delete(ctx, reservedKeys[1])
	mustDenied(t, "delete", err)
	_, err = got.Delete(ctx, "", clientv3.WithPrefix())
	mustDenied(t, "delete every key", err)
	_, err = got.Delete(ctx, "/substrate/", clientv3.WithPrefix())
	mustDenied(t, "delete /substrate/", err)
	_, err = got.Txn(ctx).If(clientv3.Compare(clientv3.Version(reservedKeys[0]), ">", 0)).Then(clientv3.OpPut("/a", "x")).Commit()
	mustDenied(t, "txn compare", err)
	_, err = got.Txn(ctx).If(clientv3.Compare(clientv3.Version("/substrate/"), ">", 0).WithPrefix()).Commit()
	mustDenied(t, "txn compare over a prefix", err)
	_, err = got.Txn(ctx).Then(clientv3.OpGet(reservedKeys[0])).Commit()
	mustDenied(t, "txn get", err)
	_, err = got.Txn(ctx).Else(clientv3.OpGet("", clientv3.WithPrefix())).Commit()
	mustDenied(t, "txn get every key", err)
	_, err = got.Txn(ctx).Then(clientv3.OpTxn(nil, []clientv3.Op{clientv3.OpTxn(nil, nil, []clientv3.Op{clientv3.OpPut(reservedKeys[2], "x")})}, nil)).Commit()
	mustDenied(t, "nested txn put", err)
	_, err = got.Txn(ctx).Then(clientv3.OpDelete("/substrate/broker/", clientv3.WithPrefix())).Commit()
	mustDenied(t, "txn delete", err)
	if r, err := withBroker.KV().Get(ctx, "/substrate/broker/", clientv3.WithPrefix()); err != nil || len(r.Kvs) != len(reservedKeys) {
		t.Fatalf("the broker's keys after refused writes: %v %v", r, err)
	}
	for _, k := range reservedKeys {
		if r, _ := withBroker.KV().Get(ctx, k); len(r.Kvs) != 1 || string(r.Kvs[0].Value) != `{"secret":"hash"}` {
			t.Errorf("%s changed: %v", k, r.Kvs)
		}
	}
	// Other keys behave as in etcd, transactions included.
	if _, err := got.Put(ctx, "/substrate/broker0", "w"); err != nil {
		t.Fatal(err)
	}
	tr, err := got.Txn(ctx).If(clientv3.Compare(clientv3.Value("/a"), "=", "v/a")).Then(clientv3.OpPut("/a", "w"), clientv3.OpGet("/substrate/other/", clientv3.WithPrefix())).Commit()
	if err != nil || !tr.Succeeded {
		t.Fatalf("public txn: %v %v", tr, err)
	}
	if r, err := got.Delete(ctx, "/substrate/other/", clientv3.WithPrefix()); err != nil || r.Deleted != 1 {
		t.Fatalf("public delete: %v %v", r, err)
	}

	// Lock and election names that would create keys under the prefix.
	lease, err := got.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	_, err = v3lockpb.NewLockClient(got.ActiveConnection()).Lock(ctx, &v3lockpb.LockRequest{Name: []byte("/substrate/broker/users/evil"), Lease: int64(lease.ID)})
	mustDenied(t, "lock", err)
	el := v3electionpb.NewElectionClient(got.ActiveConnection())
	_, err = el.Campaign(ctx, &v3electionpb.CampaignRequest{Name: []byte("/substrate/broker/users"), Lease: int64(lease.ID), Value: []byte(`{"name":"evil"}`)})
	mustDenied(t, "campaign", err)
	_, err = el.Leader(ctx, &v3electionpb.LeaderRequest{Name: []byte("/substrate/broker/users")})
	mustDenied(t, "leader", err)
	if ok, err := v3lockpb.NewLockClient(got.ActiveConnection()).Lock(ctx, &v3lockpb.LockRequest{Name: []byte("/tooz/lock"), Lease: int64(lease.ID)}); err != nil {
		t.Fatalf("public lock: %v %v", ok, err)
	}
	// A snapshot holds every key: refused while auth is off.
	if rc, err := got.Snapshot(ctx); err == nil {
		_, err = io.Copy(io.Discard, rc)
		rc.Close()
		mustDenied(t, "snapshot", err)
	} else {
		mustDenied(t, "snapshot", err)
	}
}

func kvStrings(r *clientv3.GetResponse) []string {
	var out []string
	for _, kv := range r.Kvs {
		out = append(out, string(kv.Key)+"="+string(kv.Value))
	}
	return out
}

// TestWatchSeesNoBrokerEvents: a watch on every key, from the first
// revision and live, never carries a reserved key.
func TestWatchSeesNoBrokerEvents(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := startMember(t, "w", nil)
	if _, err := s.KV().Put(ctx, reservedKeys[0], "old"); err != nil {
		t.Fatal(err)
	}
	cli := publicClient(t, s)
	if _, err := cli.Put(ctx, "/before", "1"); err != nil {
		t.Fatal(err)
	}
	all := cli.Watch(ctx, "", clientv3.WithPrefix(), clientv3.WithRev(1), clientv3.WithPrevKV())
	sub := cli.Watch(ctx, "/substrate/", clientv3.WithPrefix(), clientv3.WithRev(1))
	one := cli.Watch(ctx, reservedKeys[0], clientv3.WithRev(1))
	// Broker writes and deletes interleaved with public ones; "/substrate/end" last.
	for i := range 5 {
		s.KV().Put(ctx, reservedKeys[1], fmt.Sprint(i))
		cli.Put(ctx, fmt.Sprintf("/substrate/p%d", i), "x")
	}
	s.KV().Delete(ctx, reservedKeys[0])
	s.KV().Txn(ctx).Then(clientv3.OpPut(reservedKeys[2], "t"), clientv3.OpPut("/substrate/mixed", "m")).Commit()
	cli.Put(ctx, "/substrate/end", "e")

	collect := func(name string, wc clientv3.WatchChan, stop string) []string {
		var keys []string
		for {
			select {
			case wr, ok := <-wc:
				if !ok {
					t.Fatalf("%s: watch closed", name)
				}
				if err := wr.Err(); err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				for _, ev := range wr.Events {
					keys = append(keys, string(ev.Kv.Key))
					if ev.PrevKv != nil && strings.HasPrefix(string(ev.PrevKv.Key), ReservedPrefix) {
						t.Errorf("%s: prev kv %s", name, ev.PrevKv.Key)
					}
					if string(ev.Kv.Key) == stop {
						return keys
					}
				}
			case <-ctx.Done():
				t.Fatalf("%s: no %s event; got %q", name, stop, keys)
			}
		}
	}
	for name, wc := range map[string]clientv3.WatchChan{"every key": all, "/substrate/": sub} {
		keys := collect(name, wc, "/substrate/end")
		for _, k := range keys {
			if strings.HasPrefix(k, ReservedPrefix) {
				t.Errorf("%s watch saw %s", name, k)
			}
		}
		if !slices.Contains(keys, "/substrate/mixed") || !slices.Contains(keys, "/substrate/p4") {
			t.Errorf("%s watch missed public events: %q", name, keys)
		}
	}
	select {
	case wr := <-one:
		t.Errorf("watch on a reserved key got %+v", wr)
	default:
	}
}

// TestReservedKeysHiddenFromGateway: the JSON gateway on each alias reads,
// watches and writes through the filtered gRPC server.
func TestReservedKeysHiddenFromGateway(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := startMember(t, "gw", nil)
	for _, k := range reservedKeys {
		if _, err := s.KV().Put(ctx, k, `{"name":"guest"}`); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.KV().Put(ctx, "/public", "p"); err != nil {
		t.Fatal(err)
	}
	base := s.ClientURLs()[0]
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	post := func(path, body string) (int, string) {
		req, _ := http.NewRequestWithContext(ctx, "POST", base+path, strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, alias := range []string{"/v3/", "/v3alpha/", "/v3beta/"} {
		code, body := post(alias+"kv/range", `{"key":"`+b64("\x00")+`","range_end":"`+b64("\x00")+`"}`)
		var rr struct {
			Kvs []struct {
				Key string `json:"key"`
			} `json:"kvs"`
			Count string `json:"count"`
		}
		if err := json.Unmarshal([]byte(body), &rr); err != nil || code != 200 {
			t.Fatalf("%s range: %d %s", alias, code, body)
		}
		if len(rr.Kvs) == 0 || rr.Kvs[len(rr.Kvs)-1].Key != b64("/public") || rr.Count != fmt.Sprint(len(rr.Kvs)) {
			t.Errorf("%s range of every key: %s", alias, body) // /public and earlier aliases' markers
		}
		for _, kv := range rr.Kvs {
			if k, _ := base64.StdEncoding.DecodeString(kv.Key); strings.HasPrefix(string(k), ReservedPrefix) {
				t.Errorf("%s range shows %s", alias, k)
			}
		}
		if code, body := post(alias+"kv/range", `{"key":"`+b64(reservedKeys[0])+`"}`); code != 200 || strings.Contains(body, "kvs") || strings.Contains(body, b64(`{"name":"guest"}`)) {
			t.Errorf("%s range of a reserved key: %d %s", alias, code, body)
		}
		for what, req := range map[string][2]string{
			"put":    {"kv/put", `{"key":"` + b64("/substrate/broker/users/evil") + `","value":"` + b64(`{"name":"evil","tags":["administrator"]}`) + `"}`},
			"delete": {"kv/deleterange", `{"key":"` + b64("\x00") + `","range_end":"` + b64("\x00") + `"}`},
			"txn":    {"kv/txn", `{"compare":[{"key":"` + b64(reservedKeys[0]) + `","target":"VALUE","value":"` + b64("x") + `"}],"success":[{"request_put":{"key":"` + b64("/public") + `","value":"` + b64("y") + `"}}]}`},
		} {
			code, body := post(alias+req[0], req[1])
			if code != http.StatusForbidden || !strings.Contains(body, "permission denied") {
				t.Errorf("%s %s: %d %s, want 403 permission denied", alias, what, code, body)
			}
		}
		// A watch on every key from revision 1 shows /public and the
		// marker written after it, nothing of the broker's.
		marker := "/marker" + strings.Trim(alias, "/")
		wctx, wcancel := context.WithCancel(ctx)
		req, _ := http.NewRequestWithContext(wctx, "POST", base+alias+"watch",
			strings.NewReader(`{"create_request":{"key":"`+b64("\x00")+`","range_end":"`+b64("\x00")+`","start_revision":"1"}}`))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		s.KV().Put(ctx, reservedKeys[1], "changed")
		if _, err := s.KV().Put(ctx, marker, "m"); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<20)
		var seen string
		for sc.Scan() {
			seen += sc.Text() + "\n"
			if strings.Contains(sc.Text(), b64(marker)) {
				break
			}
		}
		wcancel()
		resp.Body.Close()
		if !strings.Contains(seen, b64(marker)) || !strings.Contains(seen, b64("/public")) {
			t.Errorf("%s watch: no public events:\n%s", alias, seen)
		}
		for _, k := range reservedKeys {
			if strings.Contains(seen, b64(k)) {
				t.Errorf("%s watch shows %s:\n%s", alias, k, seen)
			}
		}
	}
	if r, err := s.KV().Get(ctx, "/substrate/broker/users/evil"); err != nil || len(r.Kvs) != 0 {
		t.Errorf("forged user stored: %v %v", r, err)
	}
}

// TestKVWorksWithEtcdAuth: an operator turns etcd auth on through the
// client port; the broker's in-process KV goes on working, and root on
// the client port still cannot see the broker's keys.
func TestKVWorksWithEtcdAuth(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := startMember(t, "auth", nil)
	cli := publicClient(t, s)
	if _, err := s.KV().Put(ctx, reservedKeys[0], "before"); err != nil {
		t.Fatal(err)
	}
	for _, step := range []func() error{
		func() error { _, err := cli.UserAdd(ctx, "root", "rootpw"); return err },
		func() error { _, err := cli.RoleAdd(ctx, "root"); return err },
		func() error { _, err := cli.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := cli.AuthEnable(ctx); return err },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cli.Put(ctx, "/anon", "x"); err == nil {
		t.Fatal("anonymous put accepted with auth on")
	}
	for i := range 3 {
		if _, err := s.KV().Put(ctx, reservedKeys[1], fmt.Sprint(i)); err != nil {
			t.Fatalf("in-process put with auth on: %v", err)
		}
		r, err := s.KV().Get(ctx, ReservedPrefix, clientv3.WithPrefix())
		if err != nil || len(r.Kvs) != 2 {
			t.Fatalf("in-process get with auth on: %v %v", r, err)
		}
		// Changing auth (a new user) outdates tokens' auth revision.
		if _, err := rootClient(t, s).UserAdd(ctx, fmt.Sprint("u", i), "pw"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.KV().Txn(ctx).Then(clientv3.OpDelete(reservedKeys[0])).Commit(); err != nil {
		t.Fatalf("in-process txn with auth on: %v", err)
	}
	root := rootClient(t, s)
	if r, err := root.Get(ctx, "", clientv3.WithPrefix()); err != nil || len(r.Kvs) != 0 || r.Count != 0 {
		t.Errorf("root sees %v %v", r, err)
	}
	_, err := root.Put(ctx, reservedKeys[0], "forged")
	mustDenied(t, "root put", err)
	if _, err := root.AuthDisable(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.KV().Put(ctx, reservedKeys[1], "after"); err != nil {
		t.Fatalf("in-process put once auth is off again: %v", err)
	}
}

func rootClient(t *testing.T, s *Store) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: s.ClientURLs(), DialTimeout: 5 * time.Second, Logger: zap.NewNop(), Username: "root", Password: "rootpw"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func TestOverlaps(t *testing.T) {
	r := newReserved("/p/", nil)
	for _, c := range []struct {
		key, end string
		want     bool
	}{
		{"/p/x", "", true},
		{"/p/", "", true},
		{"/p", "", false},
		{"/p0", "", false},
		{"\x00", "\x00", true},
		{"/p/z", "\x00", true},
		{"/p0", "\x00", false},
		{"/a", "/p/", false},    // ends where the prefix starts
		{"/a", "/p/\x00", true}, // takes its first key
		{"/p0", "/q", false},
		{"/p/a", "/p/b", true},
		{"/q", "/a", false}, // empty range
		{"/p", "/p0", true},
	} {
		if got := r.overlaps([]byte(c.key), []byte(c.end)); got != c.want {
			t.Errorf("overlaps(%q, %q) = %v, want %v", c.key, c.end, got, c.want)
		}
	}
	if lo, hi := r.intersection([]byte("/a"), []byte("\x00")); string(lo) != "/p/" || string(hi) != "/p0" {
		t.Errorf("intersection of every key: %q %q", lo, hi)
	}
	if lo, hi := r.intersection([]byte("/p/m"), []byte("/p/n")); string(lo) != "/p/m" || string(hi) != "/p/n" {
		t.Errorf("intersection inside: %q %q", lo, hi)
	}
	if !r.group([]byte("/p")) || r.group([]byte("/q")) || !r.group([]byte("/p/users")) {
		t.Error("group")
	}
}
