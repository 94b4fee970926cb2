package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"substrate/broker"
)

// TestClusterRefusals: a broker cluster that substrate cannot run as
// configured stops startup with one line naming the problem.
func TestClusterRefusals(t *testing.T) {
	peer1, peer2 := freePort(t), freePort(t)
	for _, c := range []struct{ name, extra, want string }{
		// ETCD_INITIAL_CLUSTER_STATE=existing is a member joining a running
		// cluster: the broker's group takes it (integration
		// TestBrokerClusterReplaceMember).
		{"shared host", "", "share the host"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			second := fmt.Sprintf("http://127.0.0.12:%d", peer2)
			if c.name == "shared host" {
				second = fmt.Sprintf("http://127.0.0.11:%d", peer2)
			}
			conf := fmt.Sprintf("ETCD_NAME=\"ctl1\"\nETCD_LISTEN_PEER_URLS=\"http://127.0.0.11:%d\"\nETCD_INITIAL_ADVERTISE_PEER_URLS=\"http://127.0.0.11:%d\"\nETCD_INITIAL_CLUSTER=\"ctl1=http://127.0.0.11:%d,ctl2=%s\"\n%s",
				peer1, peer1, peer1, second, c.extra)
			path := filepath.Join(dir, "etcd.conf")
			if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var out bytes.Buffer
			args := []string{"--services", "etcd,amqp", "--host", "127.0.0.11", "--data-dir", filepath.Join(dir, "data"),
				"--etcd-config", path, "--etcd-client-port", strconv.Itoa(freePort(t)), "--amqp-port", strconv.Itoa(freePort(t))}
			err := serve(ctx, args, &out, &out)
			if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("serve: %v, want one line with %q\n%s", err, c.want, out.String())
			}
		})
	}
	var out bytes.Buffer
	err := serve(context.Background(), []string{"--broker-snapshot-entries", "10", "--data-dir", t.TempDir()}, &out, &out)
	if err == nil || !strings.Contains(err.Error(), "--broker-snapshot-entries") {
		t.Fatalf("--broker-snapshot-entries 10: %v", err)
	}
}

// TestLocalLoginDuringElection: with no broker leader to ask, a node
// checks a UI login against the users in etcd with the leader's rules:
// the password, guest from loopback only, a management tag.
func TestLocalLoginDuringElection(t *testing.T) {
	defs := broker.NewMemDefinitions()
	ctx := context.Background()
	for _, u := range []broker.User{
		{Name: "guest", PasswordHash: broker.HashPassword("guest"), Tags: []string{"administrator"}},
		{Name: "ops", PasswordHash: broker.HashPassword("s3cret"), Tags: []string{"monitoring"}},
		{Name: "app", PasswordHash: broker.HashPassword("app"), Tags: nil},
	} {
		if err := defs.PutUser(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	cs := &clusterService{defs: defs}
	for _, c := range []struct{ user, pass, from, want, err string }{
		{"guest", "guest", "127.0.0.1:40000", "guest", ""},
		{"guest", "guest", "10.1.2.3:40000", "", "User can only log in via localhost"},
		{"ops", "s3cret", "10.1.2.3:40000", "ops", ""},
		{"ops", "wrong", "127.0.0.1:40000", "", "Login failed"},
		{"nobody", "x", "127.0.0.1:40000", "", "Login failed"},
		{"app", "app", "127.0.0.1:40000", "", "Not management user"},
	} {
		r := httptest.NewRequest("GET", "/substrate/status", nil)
		r.RemoteAddr = c.from
		r.SetBasicAuth(c.user, c.pass)
		got, err := cs.localLogin(r)
		if got != c.want || (err == nil) != (c.err == "") || (err != nil && err.Error() != c.err) {
			t.Errorf("%s/%s from %s: %q, %v; want %q, %q", c.user, c.pass, c.from, got, err, c.want, c.err)
		}
	}
}
