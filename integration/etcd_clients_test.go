package integration

import (
	"bufio"
	"context"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

const etcdctl = "/usr/bin/etcdctl"

func TestEtcdctl(t *testing.T) {
	needCommand(t, etcdctl)
	s := serve(t)
	env := []string{"ETCDCTL_API=3"}
	ctl := func(args ...string) string {
		return run(t, 20*time.Second, env, etcdctl, append([]string{"--endpoints=" + s.endpoint()}, args...)...)
	}
	if out := ctl("put", "foo", "bar"); strings.TrimSpace(out) != "OK" {
		t.Fatalf("put: %q", out)
	}
	if out := ctl("get", "foo"); out != "foo\nbar\n" {
		t.Fatalf("get: %q", out)
	}

	// watch: start etcdctl watch, then put until it reports the event.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	w := exec.CommandContext(ctx, etcdctl, "--endpoints="+s.endpoint(), "watch", "watched")
	w.Env = append(w.Environ(), env...)
	stdout, _ := w.StdoutPipe()
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { w.Process.Kill(); w.Wait() }()
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var seen []string
	deadline := time.After(15 * time.Second)
	for len(seen) < 3 {
		ctl("put", "watched", "v1")
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("etcdctl watch ended early: %v", seen)
			}
			seen = append(seen, l)
			for len(seen) < 3 {
				seen = append(seen, <-lines)
			}
		case <-time.After(300 * time.Millisecond):
		case <-deadline:
			t.Fatal("etcdctl watch saw no event")
		}
	}
	if seen[0] != "PUT" || seen[1] != "watched" || seen[2] != "v1" {
		t.Fatalf("watch output = %q", seen)
	}

	// lease: grant, attach, keep alive once, check ttl, revoke.
	out := ctl("lease", "grant", "60")
	m := regexp.MustCompile(`lease ([0-9a-f]+) granted with TTL\(60s\)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("lease grant: %q", out)
	}
	id := m[1]
	ctl("put", "--lease="+id, "leased", "x")
	if out := ctl("lease", "keep-alive", "--once", id); !strings.Contains(out, "keepalived with TTL(60)") {
		t.Fatalf("keep-alive: %q", out)
	}
	if out := ctl("lease", "timetolive", "--keys", id); !strings.Contains(out, "attached keys([leased])") {
		t.Fatalf("timetolive: %q", out)
	}
	if out := ctl("lease", "revoke", id); !strings.Contains(out, "revoked") {
		t.Fatalf("revoke: %q", out)
	}
	if out := ctl("get", "leased"); out != "" {
		t.Fatalf("leased key survived revoke: %q", out)
	}
	if out := ctl("endpoint", "health"); !strings.Contains(out, "is healthy") {
		t.Fatalf("health: %q", out)
	}
}

func TestEtcd3gwDefaultAPIPath(t *testing.T) {
	needPython(t, "etcd3gw")
	s := serve(t)
	out := run(t, 60*time.Second, nil, python, "py/etcd3gw_client.py", itoa(s.clientPort))
	if !strings.Contains(out, "etcd3gw ok") {
		t.Fatalf("output: %s", out)
	}
}

func TestToozEtcd3Lock(t *testing.T) {
	needPython(t, "tooz", "etcd3")
	s := serve(t)
	out := run(t, 60*time.Second, nil, python, "py/tooz_lock.py", itoa(s.clientPort))
	if !strings.Contains(out, "tooz ok") {
		t.Fatalf("output: %s", out)
	}
}

func TestClientV3(t *testing.T) {
	s := serve(t)
	c := client(t, s.endpoint())
	ctx := ctxT(t, 20*time.Second)
	if _, err := c.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	resp, err := c.Get(ctx, "k")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("get: %v %v", resp, err)
	}
	// txn: compare-and-swap as tooz and oslo use it.
	txn, err := c.Txn(ctx).If(clientv3.Compare(clientv3.Value("k"), "=", "v")).Then(clientv3.OpPut("k", "v2")).Else(clientv3.OpGet("k")).Commit()
	if err != nil || !txn.Succeeded {
		t.Fatalf("txn: %v %v", txn, err)
	}
	// watch from the revision of the swap sees the new value.
	wch := c.Watch(ctx, "k", clientv3.WithRev(txn.Header.Revision))
	ev := <-wch
	if len(ev.Events) != 1 || string(ev.Events[0].Kv.Value) != "v2" {
		t.Fatalf("watch: %+v", ev)
	}
	// lease expiry removes the key.
	lease, err := c.Grant(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(ctx, "ephemeral", "x", clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := c.Get(ctx, "ephemeral")
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("leased key did not expire")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
