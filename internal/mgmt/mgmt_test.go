package mgmt

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
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
