package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"substrate/broker"
	"substrate/internal/faults"
)

// FuzzRequest: whatever body a ctl client posts to /run, the transport
// answers 400 (not a JSON array of strings) or 200 with a Result whose
// code is one of rabbitmqctl's, and no command panics (the panic would be
// contained by runSafely, so the target fails on the counter). Each input
// runs against a fresh broker so a crasher replays alone.
func FuzzRequest(f *testing.F) {
	for _, argv := range [][]string{
		{"add_user", "openstack", "RABBIT_PASS"},
		{"set_permissions", "openstack", ".*", ".*", ".*"},
		{"set_permissions", "-p", "/", "guest", "(", ".*", ".*"},
		{"-q", "list_users"},
		{"set_user_tags", "guest", "administrator", "monitoring"},
		{"add_vhost", "nova"},
		{"set_vhost_limits", "-p", "/", `{"max-connections": 10, "max-queues": 2}`},
		{"set_vhost_limits", `{"max-connections": -1}`},
		{"clear_vhost_limits"},
		{"list_queues", "name", "messages", "consumers", "arguments"},
		{"list_exchanges", "name", "type"},
		{"list_bindings"},
		{"list_connections"},
		{"list_user_permissions", "guest"},
		{"close_connection", "127.0.0.1:1 -> 127.0.0.1:5672", "bye"},
		{"close_all_connections", "maintenance"},
		{"change_password", "guest", ""},
		{"delete_vhost", "/"},
		{"delete_user", "guest"},
		{},
	} {
		b, _ := json.Marshal(argv)
		f.Add(b)
	}
	f.Add([]byte(`["add_user", "a\u0000b", "p"]`))
	f.Add([]byte(`{"argv": 1}`))
	f.Add([]byte(`{"tool": "rabbitmq-diagnostics", "argv": ["ping"]}`))
	f.Add([]byte(`{"argv": ["import_definitions", "-"], "stdin": "e30="}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`["list_users"] trailing`))
	f.Add([]byte(`[1, null, true]`))
	f.Add([]byte(``))
	codes := map[int]bool{ExitOK: true, ExitUsage: true, ExitDataErr: true, ExitNoUser: true, ExitUnavail: true, ExitSoftware: true}
	f.Fuzz(func(t *testing.T, body []byte) {
		cfg := broker.NewConfig()
		cfg.Addrs = []string{"127.0.0.1:0"}
		b, err := broker.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		defer b.Shutdown(context.Background())
		s := NewServer(t.TempDir(), b)
		before := faults.Count(faults.Ctl)
		rec := httptest.NewRecorder()
		s.srv.Handler.ServeHTTP(rec, httptest.NewRequest("POST", "/run", bytes.NewReader(body)))
		if n := faults.Count(faults.Ctl) - before; n != 0 {
			t.Fatalf("%q: %d panics contained: %s", body, n, rec.Body)
		}
		// Valid: the first JSON value is an array of strings (a command
		// line) or an object that is a Request.
		valid := false
		var first json.RawMessage
		if json.NewDecoder(bytes.NewReader(body)).Decode(&first) == nil {
			var argv []string
			var req Request
			t := bytes.TrimLeft(first, " \t\r\n")
			valid = len(t) > 0 && (t[0] == '[' && json.Unmarshal(first, &argv) == nil ||
				t[0] == '{' && json.Unmarshal(first, &req) == nil)
		}
		switch {
		case !valid && rec.Code != http.StatusBadRequest:
			t.Fatalf("%q: not an argv, answered %d", body, rec.Code)
		case valid && rec.Code != http.StatusOK:
			t.Fatalf("%q: answered %d %s", body, rec.Code, rec.Body)
		case valid:
			var res Result
			if err := json.Unmarshal(rec.Body.Bytes(), &res); err != nil {
				t.Fatalf("%q: answer %q: %v", body, rec.Body, err)
			}
			if !codes[res.Code] {
				t.Fatalf("%q: exit code %d", body, res.Code)
			}
		}
	})
}
