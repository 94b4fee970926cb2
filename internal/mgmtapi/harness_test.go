package mgmtapi

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"substrate/broker"
	"substrate/internal/rabbitmqtest"
)

var update = flag.Bool("update", false, "record testdata/rabbitmq-3.10.8.json from a private RabbitMQ 3.10.8 with rabbitmq_management (never from substrate)")

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(m.Run())
}

// target is a management API under test: substrate's (in process) or
// RabbitMQ's.
type target struct {
	name  string
	api   string // http://127.0.0.1:port/api
	amqp  string // AMQP host:port
	port  int    // AMQP port
	admin [2]string
	b     *broker.Server // substrate only
	a     *API           // substrate only
}

// startSubstrate starts a broker on a free loopback port with the API
// served by httptest, sampling every interval.
func startSubstrate(t testing.TB, interval time.Duration, mod ...func(*broker.Config)) *target {
	t.Helper()
	cfg := broker.NewConfig()
	cfg.Addrs = []string{"127.0.0.1:0"}
	cfg.StoreDir = t.TempDir() // persistent messages go to the message store, as under serve
	for _, m := range mod {
		m(&cfg)
	}
	b, err := broker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	var srv *httptest.Server
	a := New(Config{Broker: b, SampleInterval: interval, Node: "rabbit@substrate-test", Listeners: func() []Listener {
		out := []Listener{{Protocol: "amqp", Addr: b.Addrs()[0]}}
		if srv != nil {
			out = append(out, Listener{Protocol: "http", Addr: srv.Listener.Addr()})
		}
		return out
	}})
	a.Start()
	srv = httptest.NewServer(a)
	t.Cleanup(func() {
		srv.Close()
		a.Stop()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		b.Shutdown(ctx)
	})
	addr := b.Addrs()[0].(*net.TCPAddr)
	return &target{name: "substrate", api: srv.URL + "/api", amqp: addr.String(), port: addr.Port,
		admin: [2]string{"guest", "guest"}, b: b, a: a}
}

// startRabbitMQ starts a private RabbitMQ 3.10.8 with rabbitmq_management
// listening on a private loopback port.
func startRabbitMQ(t testing.TB, conf ...string) *target {
	t.Helper()
	if why := rabbitmqtest.Available(); why != "" {
		t.Fatalf("-update needs RabbitMQ: %s", why)
	}
	ports, err := rabbitmqtest.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	r, err := rabbitmqtest.Start(context.Background(), rabbitmqtest.Options{Name: "mgmtapi", LogLevel: "warning",
		Plugins: []string{"rabbitmq_management"},
		Conf:    fmt.Sprintf("management.tcp.port = %d\nmanagement.tcp.ip = 127.0.0.1\n%s", ports[0], strings.Join(conf, "\n"))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Stop() })
	api := fmt.Sprintf("http://127.0.0.1:%d/api", ports[0])
	tg := &target{name: "rabbitmq", api: api, amqp: r.Addr, port: r.Port, admin: [2]string{"guest", "guest"}}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if rp := tg.do(t, "GET", "/overview", nil, tg.admin[:]...); rp.Status == 200 {
			return tg
		}
		if time.Now().After(deadline) {
			t.Fatal("RabbitMQ's management listener did not answer")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// reply is one HTTP answer.
type reply struct {
	Status   int
	Header   http.Header
	Raw      []byte
	Body     any // decoded JSON; nil if none
	Location string
}

var client = &http.Client{Timeout: 30 * time.Second}

// do sends one request; cred is user, password (none: no credentials).
func (tg *target) do(t testing.TB, method, path string, body any, cred ...string) reply {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, tg.api+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if len(cred) == 2 {
		req.SetBasicAuth(cred[0], cred[1])
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s on %s: %v", method, path, tg.name, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	rp := reply{Status: resp.StatusCode, Header: resp.Header, Raw: raw, Location: resp.Header.Get("Location")}
	if len(raw) > 0 {
		d := json.NewDecoder(bytes.NewReader(raw))
		d.UseNumber()
		if err := d.Decode(&rp.Body); err != nil {
			rp.Body = nil
		}
	}
	return rp
}

// get is do GET as the administrator, failing unless 200.
func (tg *target) get(t testing.TB, path string) any {
	t.Helper()
	rp := tg.do(t, "GET", path, nil, tg.admin[:]...)
	if rp.Status != 200 {
		t.Fatalf("GET %s on %s: %d %s", path, tg.name, rp.Status, rp.Raw)
	}
	return rp.Body
}

func num(v any) float64 {
	switch n := v.(type) {
	case json.Number:
		f, _ := n.Float64()
		return f
	case float64:
		return n
	}
	return -1
}

func itoa(i int) string { return strconv.Itoa(i) }
