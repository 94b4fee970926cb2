package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"substrate/internal/logging"
	"substrate/internal/testkit"
	"substrate/internal/tlsutil"
)

// TestTLSFlags: the TLS settings come from flags, SUBSTRATE_* variables
// and the config file like every serve flag; loadTLS refuses incomplete
// or unloadable settings with one line naming the problem, and warns
// about a key readable by others.
func TestTLSFlags(t *testing.T) {
	dir := t.TempDir()
	f, err := tlsutil.WriteLab(filepath.Join(dir, "certs"), []string{"controller"}, "openstack")
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "substrate.yaml")
	os.WriteFile(cfg, []byte("tls-key: "+f.ServerKey+"\ntls-ca: "+f.CA+"\n"), 0o600)
	sf, _, err := parseServe([]string{"--config", cfg, "--amqps-port", "5999"},
		map[string]string{"SUBSTRATE_TLS_CERT": f.Server, "SUBSTRATE_TLS_CLIENT_AUTH": "require"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if sf.tlsCert != f.Server || sf.tlsKey != f.ServerKey || sf.tlsCA != f.CA || sf.tlsClientAuth != "require" || sf.amqpsPort != 5999 || sf.httpsPort != 15671 {
		t.Fatalf("%+v", sf)
	}
	var logs bytes.Buffer
	log := logging.New(&logs, 0)
	store, err := loadTLS(sf, log)
	if err != nil || store == nil {
		t.Fatal(err)
	}
	if logs.Len() != 0 {
		t.Errorf("unexpected warnings: %s", logs.String())
	}
	os.Chmod(f.ServerKey, 0o644)
	if _, err := loadTLS(sf, log); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "TLS key "+f.ServerKey+" is accessible to group or others") {
		t.Errorf("no warning about the key: %s", logs.String())
	}
	for _, c := range []struct {
		mod  func(*serveFlags)
		want string
	}{
		{func(s *serveFlags) { s.tlsKey = "" }, "--tls-cert and --tls-key go together"},
		{func(s *serveFlags) { s.tlsCA = "" }, "needs --tls-ca"},
		{func(s *serveFlags) { s.tlsClientAuth = "maybe" }, "--tls-client-auth"},
		{func(s *serveFlags) { s.tlsCert = filepath.Join(dir, "nope.pem") }, filepath.Join(dir, "nope.pem")},
		{func(s *serveFlags) { s.tlsCert, s.tlsKey = "", "" }, "--tls-ca needs --tls-cert"},
		{func(s *serveFlags) { s.tlsCert, s.tlsKey, s.tlsCA = "", "", "" }, "--tls-client-auth require needs --tls-cert"},
		{func(s *serveFlags) { *s = serveFlags{tlsClientAuth: "none", amqpsPort: 5674} }, "--amqps-port 5674 needs --tls-cert"},
		{func(s *serveFlags) { *s = serveFlags{tlsClientAuth: "none", httpsPort: 15674} }, "--https-port 15674 needs --tls-cert"},
	} {
		s := sf
		c.mod(&s)
		if _, err := loadTLS(s, log); err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("want %q, got %v", c.want, err)
		}
	}
	if store, err := loadTLS(serveFlags{tlsClientAuth: "none", amqpsPort: defaultAMQPSPort, httpsPort: defaultHTTPSPort}, log); store != nil || err != nil {
		t.Errorf("no TLS: %v %v", store, err)
	}
}

// TestCertsCommand: substrate certs writes the lab and prints the lines
// for etcd.conf, substrate.yaml and oslo.messaging with its files.
func TestCertsCommand(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	var out, errb bytes.Buffer
	if code := run(t.Context(), []string{"substrate", "certs", "--host", "controller,10.0.0.11", "--dir", dir}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	f := tlsutil.LabFilesIn(dir)
	for _, want := range []string{
		`ETCD_CERT_FILE="` + f.Server + `"`, `ETCD_TRUSTED_CA_FILE="` + f.CA + `"`, `ETCD_CLIENT_CERT_AUTH="true"`,
		`ETCD_PEER_CLIENT_CERT_AUTH="true"`, `ETCD_LISTEN_CLIENT_URLS="https://10.0.0.11:2379"`,
		"tls-cert: " + f.Server, "tls-key: " + f.ServerKey, "tls-ca: " + f.CA,
		"[oslo_messaging_rabbit]", "ssl = True", "ssl_ca_file = " + f.CA, "ssl_cert_file = " + f.Client, "ssl_key_file = " + f.ClientKey,
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if _, err := tlsutil.New(tlsutil.Config{CertFile: f.Server, KeyFile: f.ServerKey}); err != nil {
		t.Fatal(err)
	}
	if code := run(t.Context(), []string{"substrate", "certs", "--dir", dir}, &out, &errb); code != 2 {
		t.Errorf("no --host: exit %d", code)
	}
}

// TestSIGHUP: SIGHUP reloads the certificates (a new serial in use), and
// without TLS it is logged and ignored instead of ending the process.
func TestSIGHUP(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	f, err := tlsutil.WriteLab(dir, []string{"controller"}, "openstack")
	if err != nil {
		t.Fatal(err)
	}
	store, err := tlsutil.New(tlsutil.Config{CertFile: f.Server, KeyFile: f.ServerKey})
	if err != nil {
		t.Fatal(err)
	}
	var logs testkit.Buffer
	log := logging.New(&logs, 0)
	waitFor := func(what string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !strings.Contains(logs.String(), what) {
			if time.Now().After(deadline) {
				t.Fatalf("no %q in the log:\n%s", what, logs.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	stop := watchSIGHUP(nil, log)
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	waitFor("SIGHUP: no TLS certificates to reload")
	stop()

	before := store.Info().Serial
	if _, err := tlsutil.WriteLab(dir, []string{"controller"}, "openstack"); err != nil {
		t.Fatal(err)
	}
	stop = watchSIGHUP(store, log)
	defer stop()
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	waitFor("TLS certificates reloaded")
	if store.Info().Serial.Cmp(before) == 0 {
		t.Fatal("the serial did not change")
	}
	os.WriteFile(f.ServerKey, []byte("garbage"), 0o600)
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	waitFor("TLS certificate reload failed; the previous certificate stays in use")
}
