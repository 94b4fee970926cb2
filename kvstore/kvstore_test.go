package kvstore

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"substrate/internal/testkit"
)

func TestSeedEtcdConfValidatesWithoutBinding(t *testing.T) {
	vars, err := ReadEnvFile("testdata/etcd.conf") // verbatim copy of the manual install's file
	if err != nil {
		t.Fatal(err)
	}
	cfg := NewConfig()
	cfg.Vars = vars
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ec := s.EtcdConfig()
	checks := map[string][2]string{
		"name":            {ec.Name, "controller"},
		"data dir":        {ec.Dir, "/var/lib/etcd/default.etcd"},
		"listen client":   {ec.ListenClientUrls[0].String(), "http://10.0.0.11:2379"},
		"advertise":       {ec.AdvertiseClientUrls[0].String(), "http://10.0.0.11:2379"},
		"listen peer":     {ec.ListenPeerUrls[0].String(), "http://10.0.0.11:2380"},
		"advertise peer":  {ec.AdvertisePeerUrls[0].String(), "http://10.0.0.11:2380"},
		"initial cluster": {ec.InitialCluster, "controller=http://10.0.0.11:2380"},
		"token":           {ec.InitialClusterToken, "etcd-cluster-01"},
		"state":           {ec.ClusterState, "new"},
		"compaction":      {ec.AutoCompactionMode + "/" + ec.AutoCompactionRetention, "periodic/1h"},
	}
	for what, c := range checks {
		if c[0] != c[1] {
			t.Errorf("%s = %q, want %q", what, c[0], c[1])
		}
	}
	if got := s.Endpoints(); len(got) != 1 || got[0] != "http://10.0.0.11:2379" {
		t.Errorf("Endpoints = %v", got)
	}
	if len(ec.ListenClientUrls) != 1 || len(ec.ListenPeerUrls) != 1 {
		t.Errorf("listeners = %v / %v, want only the file's", ec.ListenClientUrls, ec.ListenPeerUrls)
	}
	if got := s.Ports(); len(got) != 2 || got[0].Addr != "10.0.0.11:2379" || got[1].Addr != "10.0.0.11:2380" {
		t.Errorf("Ports = %v", got)
	}
}

func TestDefaults(t *testing.T) {
	cfg := NewConfig()
	cfg.Name = "ctl1"
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ec := s.EtcdConfig()
	if got := urlsString(ec.ListenClientUrls); got != "http://127.0.0.1:2379,http://[::1]:2379" {
		t.Errorf("client urls = %s", got)
	}
	if got := urlsString(ec.AdvertiseClientUrls); got != "http://127.0.0.1:2379" {
		t.Errorf("advertise = %s", got)
	}
	if got := strings.Join(s.Endpoints(), ","); got != "http://127.0.0.1:2379,http://[::1]:2379" {
		t.Errorf("Endpoints = %s", got)
	}
	cfg.Args = []string{"--listen-client-urls", "http://0.0.0.0:2379", "--advertise-client-urls", "http://127.0.0.1:2379"}
	if s2, err := New(cfg); err != nil || strings.Join(s2.Endpoints(), ",") != "http://127.0.0.1:2379" {
		t.Errorf("unspecified listen address: %v %v", s2, err)
	}
	if ec.InitialCluster != "ctl1=http://127.0.0.1:2380" || ec.AutoCompactionRetention != "1h" || ec.LogLevel != "info" {
		t.Errorf("initial cluster %q, retention %q, level %q", ec.InitialCluster, ec.AutoCompactionRetention, ec.LogLevel)
	}
}

func TestBadConfigs(t *testing.T) {
	for name, tc := range map[string]struct {
		args []string
		vars map[string]string
		want string
	}{
		"malformed url":     {vars: map[string]string{"ETCD_LISTEN_CLIENT_URLS": "http//10.0.0.11:2379"}, want: "ETCD_LISTEN_CLIENT_URLS"},
		"url without port":  {vars: map[string]string{"ETCD_LISTEN_PEER_URLS": "http://10.0.0.11"}, want: "ETCD_LISTEN_PEER_URLS"},
		"bad state":         {vars: map[string]string{"ETCD_INITIAL_CLUSTER_STATE": "old"}, want: "ETCD_INITIAL_CLUSTER_STATE"},
		"flag and env":      {args: []string{"--name", "a"}, vars: map[string]string{"ETCD_NAME": "b"}, want: "ETCD_NAME is shadowed"},
		"unknown flag":      {args: []string{"--no-such-flag"}, want: "no-such-flag"},
		"stray word":        {args: []string{"--name", "a", "stray"}, want: `"stray" is not a valid flag`},
		"listen no adverts": {args: []string{"--listen-client-urls", "http://127.0.0.1:2379"}, want: "advertise-client-urls"},
		"bad log level":     {args: []string{"--log-level", "loud"}, want: "log-level"},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := NewConfig()
			cfg.Args, cfg.Vars = tc.args, tc.vars
			_, err := New(cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestEnvFileSyntax(t *testing.T) {
	vars, err := parseEnvFile("f", []byte("# c\n\nexport ETCD_NAME='a b'\nETCD_DATA_DIR=/x # not a comment in etcd.conf either\n #[Member]\nETCD_X=\"\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if vars["ETCD_NAME"] != "a b" || vars["ETCD_DATA_DIR"] != "/x # not a comment in etcd.conf either" || vars["ETCD_X"] != "" {
		t.Fatalf("vars = %q", vars)
	}
	for _, bad := range []string{"ETCD_NAME\n", "ETCD_NAME=\"open\n", "BAD KEY=1\n"} {
		if _, err := parseEnvFile("f", []byte(bad)); err == nil || !strings.Contains(err.Error(), "f:1:") {
			t.Errorf("%q: err = %v", bad, err)
		}
	}
}

// TestServesGatewayAliasesAndNoDebug starts a real member on loopback.
func TestServesGatewayAliasesAndNoDebug(t *testing.T) {
	cfg := NewConfig()
	cfg.Name = "t1"
	cfg.DataDir = filepath.Join(t.TempDir(), "etcd")
	cfg.Hosts = []string{"127.0.0.1"}
	cfg.ClientPort, cfg.PeerPort = freePort(t), freePort(t)
	cfg.Vars = map[string]string{"ETCD_UNSAFE_NO_FSYNC": "true"}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := s.Shutdown(context.Background()); err != nil {
			t.Error(err)
		}
		if err := s.Shutdown(context.Background()); err != nil { // idempotent
			t.Error(err)
		}
	}()
	base := s.ClientURLs()[0]
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	post := func(path, body string) (int, string) {
		resp, err := http.Post(base+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, prefix := range []string{"/v3/", "/v3alpha/", "/v3beta/"} {
		key := "k" + strings.Trim(prefix, "/")
		if code, body := post(prefix+"kv/put", `{"key":"`+b64(key)+`","value":"`+b64("v")+`"}`); code != 200 {
			t.Fatalf("%s put: %d %s", prefix, code, body)
		}
		code, body := post(prefix+"kv/range", `{"key":"`+b64(key)+`"}`)
		var rr struct {
			Kvs []struct{ Value string } `json:"kvs"`
		}
		json.Unmarshal([]byte(body), &rr)
		if code != 200 || len(rr.Kvs) != 1 || rr.Kvs[0].Value != b64("v") {
			t.Fatalf("%s range: %d %s", prefix, code, body)
		}
	}
	for path, want := range map[string]int{"/debug/pprof/": 404, "/debug/vars": 404, "/debug/requests": 404, "/health": 200, "/version": 200} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s = %d, want %d", path, resp.StatusCode, want)
		}
	}
}

func urlsString(us []url.URL) string {
	var s []string
	for _, u := range us {
		s = append(s, u.String())
	}
	return strings.Join(s, ",")
}

// freePort returns a loopback port that was free a moment ago (the gateway
// dials the configured client URL, so port 0 cannot be used).
func freePort(t *testing.T) int {
	return testkit.FreePort(t)
}
