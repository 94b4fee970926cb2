package mgmt

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"substrate/internal/faults"
	"substrate/internal/testkit"
)

func TestServesMetricsHealthStatusAndNothingElse(t *testing.T) {
	s, err := New(Config{Addrs: []string{"127.0.0.1:0"}, Version: "substrate v-test", Services: []string{"etcd", "http"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())
	base := "http://" + s.Addrs()[0].String()
	get := func(path string) (int, string) {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, "go_goroutines") {
		t.Errorf("/metrics: %d", code)
	}
	if code, body := get("/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	if code, body := get("/"); code != 200 || !strings.Contains(body, "substrate v-test") || !strings.Contains(body, "services: etcd http") {
		t.Errorf("/: %d %q", code, body)
	}
	for _, p := range []string{"/debug/pprof/", "/debug/vars", "/nope"} {
		if code, _ := get(p); code != 404 {
			t.Errorf("%s: %d, want 404", p, code)
		}
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal("second Shutdown:", err)
	}
}

// TestPanicAnswers500: a handler that panics answers 500, is counted for
// "http" and logged once; the server goes on serving.
func TestPanicAnswers500(t *testing.T) {
	var logs testkit.Buffer
	s, err := New(Config{Addrs: []string{"127.0.0.1:0"}, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())
	defer faults.Arm(SiteHandler, "/healthz")()
	base := "http://" + s.Addrs()[0].String()
	before := faults.Count(faults.HTTP)
	resp, err := http.Get(base + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusInternalServerError {
		t.Errorf("armed /healthz: %d, want 500", resp.StatusCode)
	}
	if got := faults.Count(faults.HTTP) - before; got != 1 {
		t.Errorf("http panics counted: %d, want 1", got)
	}
	if n := strings.Count(logs.String(), "level=ERROR"); n != 1 || !strings.Contains(logs.String(), "/healthz") {
		t.Errorf("want one ERROR line naming the path:\n%s", logs.String())
	}
	resp, err = http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "go_goroutines") {
		t.Errorf("/metrics after the panic: %d", resp.StatusCode)
	}
}
