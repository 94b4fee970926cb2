package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	"github.com/chromedp/chromedp"
	amqp "github.com/rabbitmq/amqp091-go"
)

// chromium is Debian's browser (package chromium); SUBSTRATE_CHROMIUM
// names another.
func chromium(t *testing.T) string {
	t.Helper()
	path := os.Getenv("SUBSTRATE_CHROMIUM")
	if path == "" {
		path = "/usr/bin/chromium"
	}
	needCommand(t, path)
	return path
}

// browser starts a headless chromium for the test; its first Run starts
// the process, which the returned context's cancel (at cleanup) stops.
func browser(t *testing.T, path string) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox,
		chromedp.DisableGPU, chromedp.WindowSize(1440, 1000), chromedp.UserDataDir(t.TempDir()))
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelA() })
	if err := chromedp.Do(ctx); err != nil { // start the browser without a deadline (see chromedp.Run)
		t.Fatalf("starting %s: %v", path, err)
	}
	return ctx
}

// pageState is what the dashboard shows, read from its DOM.
type pageState struct {
	Loaded  string            `json:"loaded"` // set after each complete render
	Login   bool              `json:"login"`  // the login form is shown
	Queues  map[string]string `json:"queues"` // "vhost/name" -> Total column
	Conns   []string          `json:"conns"`  // connection_name of each row
	Items   string            `json:"items"`  // cache items
	Hit     string            `json:"hit"`    // cache hit ratio
	Leader  string            `json:"leader"` // etcd leader
	Members string            `json:"members"`
	Health  map[string]string `json:"health"` // service -> state
	Notes   []string          `json:"notes"`  // "does not run" notes
	Banner  string            `json:"banner"`
	Samples int               `json:"samples"` // polls in the page's history
}

const readPage = `JSON.stringify((() => {
  const txt = (sel) => { const e = document.querySelector(sel); return e ? e.textContent : ""; };
  const queues = {};
  document.querySelectorAll("#queues tbody tr[data-queue]").forEach((tr) => { queues[tr.dataset.vhost + "/" + tr.dataset.queue] = tr.querySelector(".depth").textContent; });
  const health = {};
  document.querySelectorAll("#health .tile").forEach((d) => { health[d.dataset.service] = d.dataset.state; });
  return {
    loaded: document.body.dataset.loaded || "",
    login: !document.getElementById("login").hidden,
    queues,
    conns: [...document.querySelectorAll("#connections tbody tr[data-connection]")].map((tr) => tr.dataset.connectionName),
    items: txt("#cache-items .v"), hit: txt("#cache-hit-ratio .v"),
    leader: txt("#etcd-leader .v"), members: txt("#etcd-members .v"),
    health,
    notes: [...document.querySelectorAll(".disabled-note")].filter((e) => e.offsetParent !== null).map((e) => e.textContent),
    banner: document.getElementById("banner").hidden ? "" : txt("#banner"),
    samples: JSON.parse(sessionStorage.getItem("substrate.history") || "[]").length,
  };
})())`

func readState(ctx context.Context) (pageState, error) {
	var st pageState
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](readPage))
	if err == nil {
		err = json.Unmarshal([]byte(s), &st)
	}
	return st, err
}

// waitPage polls the page until ok says it shows what is expected, or
// fails after the deadline with the last state.
func waitPage(t *testing.T, ctx context.Context, d time.Duration, ok func(pageState) bool) pageState {
	t.Helper()
	var st pageState
	var err error
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if st, err = readState(ctx); err == nil && ok(st) {
			return st
		}
		time.Sleep(100 * time.Millisecond) // a poll interval, not a synchronization
	}
	t.Fatalf("page did not show the expected state within %v: last %+v (err %v)", d, st, err)
	return st
}

// screenshot writes the page as PNG to $SUBSTRATE_ARTIFACTS (CI keeps it)
// or the test's temporary directory.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	dir := os.Getenv("SUBSTRATE_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", path, len(png))
}

// apiGet reads JSON from the management port as guest; ok false on 404.
func apiGet(t *testing.T, port int, path string, v any) bool {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://127.0.0.1:"+strconv.Itoa(port)+path, nil)
	req.SetBasicAuth("guest", "guest")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusNotFound {
		return false
	}
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("GET %s: %v in %s", path, err, b)
	}
	return true
}

type apiQueue struct {
	Name, VHost string
	Messages    int
}

type apiConn struct {
	ClientProperties map[string]any `json:"client_properties"`
}

// brokerLists reads the queues and connections from the management API.
func brokerLists(t *testing.T, port int) (queues []apiQueue, conns []apiConn) {
	t.Helper()
	if !apiGet(t, port, "/api/queues", &queues) || !apiGet(t, port, "/api/connections", &conns) {
		t.Fatal("no management API (/api/queues, /api/connections)")
	}
	return queues, conns
}

// memcachedStat reads one "stats" value over the text protocol.
func memcachedStat(t *testing.T, port int, key string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprint(c, "stats\r\n")
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 3 && f[1] == key {
			return f[2]
		}
		if sc.Text() == "END" {
			break
		}
	}
	t.Fatalf("stats has no %s", key)
	return ""
}

// TestWebUI loads the dashboard in a real headless chromium: it logs in
// through the page's form, and the page shows the broker's queues and
// named connections, the cache and etcd as the management API, the
// memcached protocol and the status endpoint report them; then with the
// broker and cache disabled it still loads, with no login (no user
// database), and says what does not run. Screenshots of both are kept.
func TestWebUI(t *testing.T) {
	path := chromium(t)
	s := serve(t)

	// Two named connections (oslo.messaging names them after the
	// service), a queue holding 7 messages and one with a consumer.
	named := func(name string) *amqp.Connection {
		c, err := amqp.DialConfig(fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", s.amqpPort), amqp.Config{
			Dial: amqp.DefaultDial(5 * time.Second), Properties: amqp.Table{"connection_name": name}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	pub, cons := named("nova-compute:webui-test"), named("neutron-server:webui-test")
	ch, err := pub.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("webui.work", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	const published = 7
	for i := range published {
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctxT(t, 10*time.Second), "", "webui.work", false, false, amqp.Publishing{Body: []byte("m" + strconv.Itoa(i))})
		if err != nil {
			t.Fatal(err)
		}
		if !dc.Wait() {
			t.Fatal("publish nacked")
		}
	}
	cch, err := cons.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cch.QueueDeclare("webui.idle", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := cch.Consume("webui.idle", "", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}

	// The cache: 5 keys, 3 hits and 1 miss.
	mc := memcache.New("127.0.0.1:" + strconv.Itoa(s.memcachedPort))
	for i := range 5 {
		if err := mc.Set(&memcache.Item{Key: "webui" + strconv.Itoa(i), Value: []byte("v")}); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range []string{"webui0", "webui1", "webui2", "nope"} {
		mc.Get(k)
	}

	ctx := browser(t, path)
	base := "http://127.0.0.1:" + strconv.Itoa(s.httpPort) + "/?refresh=1" // poll every second
	if err := chromedp.Do(ctx, chromedp.Navigate(base)); err != nil {
		t.Fatal(err)
	}
	waitPage(t, ctx, 10*time.Second, func(p pageState) bool { return p.Login })
	if err := chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.ID("username"), "guest"),
		chromedp.SendKeys(chromedp.ID("password"), "guest"),
		chromedp.Click(chromedp.CSS("#login-form button[type=submit]"))); err != nil {
		t.Fatal(err)
	}
	wantItems := memcachedStat(t, s.memcachedPort, "curr_items")
	p := waitPage(t, ctx, 15*time.Second, func(p pageState) bool {
		return p.Loaded != "" && !p.Login && p.Queues["//webui.work"] == strconv.Itoa(published) && len(p.Conns) == 2 && p.Items == wantItems
	})

	// The numbers the page shows are the API's.
	queues, conns := brokerLists(t, s.httpPort)
	for _, q := range queues {
		if got := p.Queues[q.VHost+"/"+q.Name]; got != strconv.Itoa(q.Messages) {
			t.Errorf("queue %s/%s: page shows %q, API %d", q.VHost, q.Name, got, q.Messages)
		}
	}
	if len(queues) != len(p.Queues) {
		t.Errorf("page shows %d queues, API %d", len(p.Queues), len(queues))
	}
	var apiNames []string
	for _, c := range conns {
		n, _ := c.ClientProperties["connection_name"].(string)
		apiNames = append(apiNames, n)
	}
	if strings.Join(p.Conns, ",") != "neutron-server:webui-test,nova-compute:webui-test" || len(apiNames) != 2 {
		t.Errorf("connections: page %q, API %q", p.Conns, apiNames)
	}
	for _, n := range apiNames {
		if !strings.Contains(strings.Join(p.Conns, ","), n) {
			t.Errorf("connection %q of the API not on the page %q", n, p.Conns)
		}
	}
	if p.Items != "5" || p.Hit != "75.0%" {
		t.Errorf("cache: page shows %s items (stats: %s), hit ratio %s (want 75.0%%)", p.Items, wantItems, p.Hit)
	}
	var st struct {
		Etcd struct {
			LeaderName string `json:"leader_name"`
			Members    []any
		}
	}
	apiGet(t, s.httpPort, "/substrate/status", &st)
	if st.Etcd.LeaderName == "" || p.Leader != st.Etcd.LeaderName || p.Members != "1" {
		t.Errorf("etcd: page shows leader %q, %s members; status says %q, %d", p.Leader, p.Members, st.Etcd.LeaderName, len(st.Etcd.Members))
	}
	for _, svc := range []string{"etcd", "amqp", "memcached"} {
		if p.Health[svc] != "ok" && p.Health[svc] != "running" {
			t.Errorf("health of %s: %q", svc, p.Health[svc])
		}
	}

	// It refreshes itself: more messages, and the page follows (and its
	// charts get a few samples for the screenshot).
	for i := range 3 {
		if err := ch.PublishWithContext(ctxT(t, 5*time.Second), "", "webui.work", false, false, amqp.Publishing{Body: []byte("more" + strconv.Itoa(i))}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(700 * time.Millisecond) // traffic spread over several polls, for the chart
	}
	samples := p.Samples
	p = waitPage(t, ctx, 10*time.Second, func(p pageState) bool {
		return p.Queues["//webui.work"] == strconv.Itoa(published+3) && p.Samples >= samples+3
	})
	queues, _ = brokerLists(t, s.httpPort)
	for _, q := range queues {
		if q.Name == "webui.work" && q.Messages != published+3 {
			t.Errorf("API: %d messages in webui.work, want %d (page %s)", q.Messages, published+3, p.Queues["//webui.work"])
		}
	}
	screenshot(t, ctx, "webui.png")

	// Without the broker and the cache: no login, and the page says what
	// does not run.
	s2 := serve(t, "--services", "etcd,http")
	if err := chromedp.Do(ctx, chromedp.Navigate("http://127.0.0.1:"+strconv.Itoa(s2.httpPort)+"/")); err != nil {
		t.Fatal(err)
	}
	p = waitPage(t, ctx, 10*time.Second, func(p pageState) bool { return p.Loaded != "" && p.Leader != "" })
	if p.Login || p.Health["amqp"] != "disabled" || p.Health["memcached"] != "disabled" || len(p.Notes) != 2 || p.Banner != "" {
		t.Errorf("etcd only: %+v", p)
	}
	screenshot(t, ctx, "webui-etcd-only.png")
}
