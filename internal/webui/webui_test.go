package webui

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"substrate/cache"
	"substrate/kvstore"
)

func server(t *testing.T, cfg Config) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	New(cfg, time.Unix(1000, 0)).Register(mux)
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	return ts
}

func get(t *testing.T, url string, auth bool) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if auth {
		req.SetBasicAuth("guest", "guest")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// TestServesPageAndAssets: / is the page, its script and style come from
// /ui/ with their types, under a policy that allows nothing from
// elsewhere; nothing else is served.
func TestServesPageAndAssets(t *testing.T) {
	ts := server(t, Config{})
	resp, body := get(t, ts.URL+"/", false)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") ||
		!strings.Contains(body, `src="/ui/app.js"`) || !strings.Contains(body, `href="/ui/style.css"`) {
		t.Fatalf("/: %d %s %.200q", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
		t.Errorf("CSP %q", csp)
	}
	for path, typ := range map[string]string{"/ui/app.js": "text/javascript", "/ui/style.css": "text/css"} {
		resp, body := get(t, ts.URL+path, false)
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), typ) || len(body) < 1000 {
			t.Errorf("%s: %d %q, %d bytes", path, resp.StatusCode, resp.Header.Get("Content-Type"), len(body))
		}
	}
	for _, path := range []string{"/ui/", "/ui/index.html", "/ui/nope.js", "/index.html", "/substrate/nope"} {
		if resp, _ := get(t, ts.URL+path, false); resp.StatusCode != 404 {
			t.Errorf("%s: %d, want 404", path, resp.StatusCode)
		}
	}
	// The page references no other origin.
	for _, path := range []string{"/", "/ui/app.js", "/ui/style.css"} {
		_, body := get(t, ts.URL+path, false)
		if strings.Contains(body, "http://") || strings.Contains(body, "https://") || strings.Contains(body, "//cdn") {
			t.Errorf("%s refers to another origin", path)
		}
	}
}

type status struct {
	Version  string
	User     string
	Services []struct{ Name, State, Detail string }
	Alarms   []Alarm
	Cache    *struct {
		CurrItems     uint64   `json:"curr_items"`
		Evictions     uint64   `json:"evictions"`
		HitRatio      *float64 `json:"hit_ratio"`
		LimitMaxBytes int64    `json:"limit_maxbytes"`
	}
	Etcd *struct {
		Error      string
		Leader     string
		LeaderName string `json:"leader_name"`
		DBSize     int64  `json:"db_size"`
		Members    []struct {
			ID       string
			Name     string
			IsLeader bool `json:"is_leader"`
			IsSelf   bool `json:"is_self"`
		}
	}
}

func readStatus(t *testing.T, ts *httptest.Server) status {
	t.Helper()
	resp, body := get(t, ts.URL+"/substrate/status", true)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("status: %d %s", resp.StatusCode, body)
	}
	var st status
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// TestStatus: every source lands in the reply: health per service (a
// failing check, a passing one, one without a check, a disabled one),
// the broker's alarms and etcd's, the cache's hit ratio, the etcd
// leader by name.
func TestStatus(t *testing.T) {
	ts := server(t, Config{
		Version:  "substrate test",
		Services: []string{"etcd", "amqp", "memcached", "http"},
		Health: func(ctx context.Context) []Check {
			if _, ok := ctx.Deadline(); !ok {
				t.Error("health checks run without a deadline")
			}
			return []Check{{Service: "etcd", OK: true}, {Service: "amqp", OK: false, Detail: "disk alarm in effect"}}
		},
		Alarms: func() []Alarm { return []Alarm{{Service: "amqp", Resource: "disk", Detail: "40 MiB free"}} },
		Cache: func() cache.Stats {
			return cache.Stats{CurrItems: 7, GetHits: 3, GetMisses: 1, Evictions: 2, LimitMaxBytes: 64 << 20}
		},
		Etcd: func() (kvstore.Status, error) {
			return kvstore.Status{ID: 0xa, Leader: 0xb, DBSize: 20480, Alarms: []string{"NOSPACE on b"},
				Members: []kvstore.Member{{ID: 0xa, Name: "ctl1"}, {ID: 0xb, Name: "ctl2"}}}, nil
		},
		Authenticate: func(r *http.Request) (string, error) { return "guest", nil },
	})
	st := readStatus(t, ts)
	states := map[string]string{}
	for _, s := range st.Services {
		states[s.Name] = s.State
	}
	want := map[string]string{"etcd": "ok", "amqp": "failed", "memcached": "running", "http": "running"}
	for k, v := range want {
		if states[k] != v {
			t.Errorf("service %s: %q, want %q (all: %v)", k, states[k], v, states)
		}
	}
	if len(st.Alarms) != 2 || st.Alarms[0].Resource != "disk" || st.Alarms[1] != (Alarm{Service: "etcd", Resource: "NOSPACE", Detail: "raised by member b"}) {
		t.Errorf("alarms %+v", st.Alarms)
	}
	if st.Cache == nil || st.Cache.CurrItems != 7 || st.Cache.HitRatio == nil || *st.Cache.HitRatio != 0.75 || st.Cache.Evictions != 2 {
		t.Errorf("cache %+v", st.Cache)
	}
	if st.Etcd == nil || st.Etcd.Leader != "b" || st.Etcd.LeaderName != "ctl2" || len(st.Etcd.Members) != 2 ||
		!st.Etcd.Members[0].IsSelf || st.Etcd.Members[0].IsLeader || !st.Etcd.Members[1].IsLeader {
		t.Errorf("etcd %+v", st.Etcd)
	}
	if st.User != "guest" || st.Version != "substrate test" {
		t.Errorf("user %q version %q", st.User, st.Version)
	}
}

// TestStatusDisabledServices: what does not run is null or disabled, and
// without a user database (no broker) the endpoint is open.
func TestStatusDisabledServices(t *testing.T) {
	ts := server(t, Config{Services: []string{"etcd", "http"}, Etcd: func() (kvstore.Status, error) {
		return kvstore.Status{}, errors.New("kvstore: etcd member not running")
	}})
	resp, body := get(t, ts.URL+"/substrate/status", false)
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	st := readStatus(t, ts)
	if st.Cache != nil || st.Etcd == nil || st.Etcd.Error == "" || len(st.Alarms) != 0 {
		t.Errorf("%s", body)
	}
	for _, s := range st.Services {
		if want := map[string]string{"etcd": "running", "http": "running"}[s.Name]; want == "" && s.State != "disabled" || want != "" && s.State != want {
			t.Errorf("service %s: %q", s.Name, s.State)
		}
	}
	if !strings.Contains(body, `"alarms":[]`) {
		t.Errorf("alarms not an empty list: %s", body)
	}
}

// TestStatusNeedsLogin: with a user database the endpoint answers 401
// with RabbitMQ's JSON and the reason, and no WWW-Authenticate (the
// page's form asks, not the browser).
func TestStatusNeedsLogin(t *testing.T) {
	ts := server(t, Config{Services: []string{"amqp"}, Authenticate: func(r *http.Request) (string, error) {
		if u, p, _ := r.BasicAuth(); u == "guest" && p == "guest" {
			return u, nil
		}
		return "", errors.New("Login failed")
	}})
	resp, body := get(t, ts.URL+"/substrate/status", false)
	if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") != "" || strings.TrimSpace(body) != `{"error":"not_authorised","reason":"Login failed"}` {
		t.Errorf("%d %q %s", resp.StatusCode, resp.Header.Get("WWW-Authenticate"), body)
	}
	if st := readStatus(t, ts); st.User != "guest" {
		t.Errorf("user %q", st.User)
	}
	// The page itself and its assets need no login: the form is on it.
	if resp, _ := get(t, ts.URL+"/", false); resp.StatusCode != 200 {
		t.Errorf("/: %d", resp.StatusCode)
	}
}

// threeNodes is a cluster seen from ctl2 during a partition: ctl1 leads
// (term 4) and serves clients, ctl2 follows and forwards two connections,
// ctl3 does not answer.
func threeNodes() []ClusterNode {
	return []ClusterNode{
		{Name: "rabbit@ctl1", Reachable: true, Leader: true, Active: true, Term: 4, Commit: 120, Applied: 120},
		{Name: "rabbit@ctl2", Self: true, Reachable: true, Term: 4, Commit: 118, Applied: 117, Forwarded: 2},
		{Name: "rabbit@ctl3", Term: 9, Err: "dial tcp 127.0.0.13:25672: connect: connection refused"},
	}
}

// TestStatusCluster: each node of the broker cluster with its role
// (leader, follower, unreachable), its broker (active, standby, unknown),
// term, indexes and forwarded connections; an unreachable node's figures
// are not reported, and the leader is named.
func TestStatusCluster(t *testing.T) {
	ts := server(t, Config{Services: []string{"amqp"}, Cluster: threeNodes})
	_, body := get(t, ts.URL+"/substrate/status", false)
	var st struct {
		Cluster *struct {
			Leader string
			Nodes  []map[string]any
		}
	}
	if err := json.Unmarshal([]byte(body), &st); err != nil || st.Cluster == nil {
		t.Fatalf("%v: %s", err, body)
	}
	if st.Cluster.Leader != "rabbit@ctl1" || len(st.Cluster.Nodes) != 3 {
		t.Fatalf("cluster %+v", st.Cluster)
	}
	want := []map[string]any{
		{"name": "rabbit@ctl1", "is_self": false, "role": "leader", "broker": "active", "reachable": true, "is_leader": true, "active": true,
			"term": 4.0, "commit_index": 120.0, "applied_index": 120.0, "forwarded_connections": 0.0},
		{"name": "rabbit@ctl2", "is_self": true, "role": "follower", "broker": "standby", "reachable": true, "is_leader": false, "active": false,
			"term": 4.0, "commit_index": 118.0, "applied_index": 117.0, "forwarded_connections": 2.0},
		{"name": "rabbit@ctl3", "is_self": false, "role": "unreachable", "broker": "unknown", "reachable": false, "is_leader": false, "active": false,
			"term": 0.0, "commit_index": 0.0, "applied_index": 0.0, "forwarded_connections": 0.0,
			"error": "dial tcp 127.0.0.13:25672: connect: connection refused"},
	}
	for i, w := range want {
		got := st.Cluster.Nodes[i]
		if len(got) != len(w) {
			t.Errorf("node %d: %v, want %v", i, got, w)
			continue
		}
		for k, v := range w {
			if got[k] != v {
				t.Errorf("node %d %s: %v, want %v", i, k, got[k], v)
			}
		}
	}
}

// TestStatusClusterLeaders: no leader (an election under way) is "",
// and of two nodes that both say leader (a deposed one that has not yet
// heard of the new term) the higher term's is named.
func TestStatusClusterLeaders(t *testing.T) {
	nodes := []ClusterNode{{Name: "rabbit@a", Reachable: true, Term: 5}, {Name: "rabbit@b", Reachable: true, Term: 5}}
	ts := server(t, Config{Cluster: func() []ClusterNode { return nodes }})
	_, body := get(t, ts.URL+"/substrate/status", false)
	if !strings.Contains(body, `"cluster":{"leader":"",`) {
		t.Errorf("no leader: %s", body)
	}
	nodes = []ClusterNode{{Name: "rabbit@a", Reachable: true, Leader: true, Term: 6}, {Name: "rabbit@b", Reachable: true, Leader: true, Term: 5},
		{Name: "rabbit@c", Reachable: true, Leader: false, Term: 6}}
	_, body = get(t, ts.URL+"/substrate/status", false)
	if !strings.Contains(body, `"cluster":{"leader":"rabbit@a",`) {
		t.Errorf("two leaders: %s", body)
	}
	nodes[0], nodes[1] = nodes[1], nodes[0]
	_, body = get(t, ts.URL+"/substrate/status", false)
	if !strings.Contains(body, `"cluster":{"leader":"rabbit@a",`) {
		t.Errorf("two leaders, the older first: %s", body)
	}
}

// TestStatusClusterLearner: a member being added is role "learner".
func TestStatusClusterLearner(t *testing.T) {
	nodes := []ClusterNode{{Name: "rabbit@a", Reachable: true, Leader: true, Active: true, Term: 5},
		{Name: "rabbit@d", Reachable: true, Learner: true, Term: 5}}
	ts := server(t, Config{Cluster: func() []ClusterNode { return nodes }})
	_, body := get(t, ts.URL+"/substrate/status", false)
	if !strings.Contains(body, `"name":"rabbit@d","is_self":false,"role":"learner","broker":"standby"`) {
		t.Errorf("learner: %s", body)
	}
}

// TestStatusNotClustered: without Config.Cluster the reply's cluster is
// null, and the page's cluster panel is in the markup but hidden until
// the script sees a cluster.
func TestStatusNotClustered(t *testing.T) {
	ts := server(t, Config{Services: []string{"amqp"}})
	_, body := get(t, ts.URL+"/substrate/status", false)
	if !strings.Contains(body, `"cluster":null`) {
		t.Errorf("cluster not null: %s", body)
	}
	_, page := get(t, ts.URL+"/", false)
	if !strings.Contains(page, `<section id="cluster" class="card" hidden>`) || !strings.Contains(page, `<table id="cluster-nodes"`) {
		t.Errorf("the page has no hidden cluster panel")
	}
	_, js := get(t, ts.URL+"/ui/app.js", false)
	if !strings.Contains(js, "renderCluster(st.cluster)") {
		t.Errorf("app.js does not draw the cluster")
	}
}

// domNode is an element of testdata/render.js's stand-in DOM: a kid is
// a string (text) or an element.
type domNode struct {
	Tag    string
	ID     string
	Class  string
	Hidden bool
	Attrs  map[string]string
	Kids   []json.RawMessage
}

func (n *domNode) elems() []*domNode {
	var out []*domNode
	for _, k := range n.Kids {
		var e domNode
		if json.Unmarshal(k, &e) == nil {
			out = append(out, &e)
		}
	}
	return out
}

func (n *domNode) text() string {
	var b strings.Builder
	for _, k := range n.Kids {
		var s string
		if json.Unmarshal(k, &s) == nil {
			b.WriteString(s)
			continue
		}
		var e domNode
		if json.Unmarshal(k, &e) == nil {
			b.WriteString(e.text())
		}
	}
	return b.String()
}

// find returns the elements under n (n included) whose class list has c.
func (n *domNode) find(c string) []*domNode {
	var out []*domNode
	if slices.Contains(strings.Fields(n.Class), c) {
		out = append(out, n)
	}
	for _, e := range n.elems() {
		out = append(out, e.find(c)...)
	}
	return out
}

type rendered struct {
	Loaded  bool
	Banner  string
	Cluster *domNode
	Summary *domNode
	Nodes   *domNode
}

// render runs the page's script under node (testdata/render.js) against
// ts until its first poll is drawn.
func render(t *testing.T, ts *httptest.Server) rendered {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		if node, err = exec.LookPath("nodejs"); err != nil {
			if os.Getenv("SUBSTRATE_REQUIRE_CLIENTS") == "1" {
				t.Fatal("node (Debian's nodejs) is not installed: cannot run the page's script (SUBSTRATE_REQUIRE_CLIENTS=1)")
			}
			t.Skip("node (Debian's nodejs) is not installed: the page's script is not run")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, node, "testdata/render.js", ts.URL).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("node: %v\n%s", err, stderr)
	}
	var r rendered
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if !r.Loaded || r.Banner != "" {
		t.Fatalf("the page did not draw its first poll: banner %q", r.Banner)
	}
	return r
}

// TestPageDrawsCluster: the page's own script, fed the status endpoint
// of a cluster node, shows the Broker cluster panel: the leader and how
// many nodes answer, then one row per node with its role, its broker,
// term, commit and applied index and forwarded connections, the leader's
// row marked (highlighted by style.css), an unreachable node's figures
// as "–" with its error.
func TestPageDrawsCluster(t *testing.T) {
	r := render(t, server(t, Config{Services: []string{"etcd"}, Cluster: threeNodes}))
	if r.Cluster == nil || r.Cluster.Hidden {
		t.Fatalf("cluster panel not shown: %+v", r.Cluster)
	}
	stats := map[string]string{}
	for _, s := range r.Summary.find("stat") {
		stats[s.Attrs["id"]] = s.text()
	}
	if stats["cluster-leader"] != "rabbit@ctl1Leader" || stats["cluster-reachable"] != "2 of 3Nodes reachable" || stats["cluster-term"] != "4Raft term" {
		t.Errorf("summary %q", stats)
	}
	var rows []*domNode
	for _, b := range r.Nodes.elems() {
		if b.Tag == "tbody" {
			rows = b.elems()
		}
	}
	want := [][]string{
		{"rabbit@ctl1", "leader", "active", "4", "120", "120", "0"},
		{"rabbit@ctl2this node", "follower", "standby", "4", "118", "117", "2"},
		{"rabbit@ctl3dial tcp 127.0.0.13:25672: connect: connection refused", "unreachable", "unknown", "–", "–", "–", "–"},
	}
	if len(rows) != len(want) {
		t.Fatalf("%d rows, want %d", len(rows), len(want))
	}
	for i, row := range rows {
		var cells []string
		for _, td := range row.elems() {
			cells = append(cells, td.text())
		}
		if strings.Join(cells, "|") != strings.Join(want[i], "|") {
			t.Errorf("row %d: %q, want %q", i, cells, want[i])
		}
		if leader := slices.Contains(strings.Fields(row.Class), "leader"); leader != (i == 0) {
			t.Errorf("row %d (%s): leader class %v", i, row.Attrs["data-node"], leader)
		}
		badges := row.find("badge")
		wantBadges := [][2]string{{"badge ok", "badge ok"}, {"badge info", "badge off"}, {"badge bad", "badge off"}}[i]
		if len(badges) != 2 || badges[0].Class != wantBadges[0] || badges[1].Class != wantBadges[1] {
			t.Errorf("row %d: badges %+v", i, badges)
		}
	}
	if len(rows[2].find("error")) != 1 {
		t.Errorf("the unreachable node's error is not marked as one")
	}
}

// TestPageNoCluster: not clustered, the script hides the panel.
func TestPageNoCluster(t *testing.T) {
	r := render(t, server(t, Config{Services: []string{"etcd"}}))
	if r.Cluster == nil || !r.Cluster.Hidden {
		t.Errorf("cluster panel shown: %+v", r.Cluster)
	}
}
