package mgmt

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"substrate/internal/testkit"
	"substrate/internal/tlsutil"
)

// TestHTTPS: with TLSAddrs the same handlers answer over HTTPS with the
// store's certificate, TLS 1.2 or later; a client that does not trust the
// certificate fails its handshake, which is logged with its peer.
func TestHTTPS(t *testing.T) {
	f, err := tlsutil.WriteLab(t.TempDir(), []string{"controller"}, "openstack")
	if err != nil {
		t.Fatal(err)
	}
	store, err := tlsutil.New(tlsutil.Config{CertFile: f.Server, KeyFile: f.ServerKey})
	if err != nil {
		t.Fatal(err)
	}
	var logs testkit.Buffer
	s, err := New(Config{Addrs: []string{"127.0.0.1:0"}, TLSAddrs: []string{"127.0.0.1:0"}, TLS: store.ServerConfig(),
		Version: "substrate v-test", Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())
	if p := s.Ports(); len(p) != 2 || p[1].What != "https port" {
		t.Errorf("ports %+v", p)
	}
	pool, err := tlsutil.LoadCAs(f.CA)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	url := "https://" + strings.Replace(s.Addrs()[1].String(), "127.0.0.1", "localhost", 1) + "/healthz"
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "ok\n" || resp.TLS == nil || resp.TLS.Version < tls.VersionTLS12 {
		t.Fatalf("%d %q %+v", resp.StatusCode, body, resp.TLS)
	}
	if _, err := http.Get(url); err == nil { // the system roots do not know the lab CA
		t.Fatal("an untrusting client got an answer")
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(logs.String(), "http: TLS handshake failed") || !strings.Contains(logs.String(), "peer=127.0.0.1:") {
		if time.Now().After(deadline) {
			t.Fatalf("no handshake failure logged:\n%s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
