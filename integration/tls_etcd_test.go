package integration

import (
	"crypto/tls"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"substrate/internal/tlsutil"
)

// TestTLSEtcdFromCertsOutput: the lines `substrate certs` prints, used as
// an operator would (only the ports are this test's): its etcd.conf lines
// (https client and peer URLs, client-certificate auth on both) and its
// substrate.yaml lines (AMQPS) in one serve. Ready within 10 s; etcdctl
// with --cacert/--cert/--key works and without a client certificate is
// refused; a client logs in over AMQPS with EXTERNAL as the client
// certificate's CN and declares a durable queue, which is stored: it is
// there after a restart.
func TestTLSEtcdFromCertsOutput(t *testing.T) {
	dir := t.TempDir()
	printed := run(t, 30*time.Second, nil, binary, "certs", "--host", "controller,127.0.0.1", "--dir", filepath.Join(dir, "certs"))
	lab := tlsutil.LabFilesIn(filepath.Join(dir, "certs"))
	s := newServer(t)
	amqps := freePort(t)

	var etcdConf, yaml []string
	for _, l := range strings.Split(printed, "\n") {
		switch {
		case strings.HasPrefix(l, "ETCD_"):
			l = strings.ReplaceAll(l, ":2379", ":"+strconv.Itoa(s.clientPort))
			l = strings.ReplaceAll(l, ":2380", ":"+strconv.Itoa(s.peerPort))
			etcdConf = append(etcdConf, l)
		case strings.HasPrefix(l, "tls-"):
			yaml = append(yaml, l)
		}
	}
	if len(etcdConf) != 12 || len(yaml) != 4 {
		t.Fatalf("substrate certs printed %d etcd.conf and %d substrate.yaml lines:\n%s", len(etcdConf), len(yaml), printed)
	}
	conf := filepath.Join(dir, "etcd.conf")
	os.WriteFile(conf, []byte(strings.Join(etcdConf, "\n")+"\n"), 0o600)
	cfg := filepath.Join(dir, "substrate.yaml")
	os.WriteFile(cfg, []byte(strings.Join(append(yaml, "amqps-port: "+strconv.Itoa(amqps)), "\n")+"\n"), 0o600)
	if err := os.MkdirAll(s.dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	args := s.args("--etcd-config", conf, "--config", cfg, "--services", "etcd,amqp,http")

	t0 := time.Now()
	s.proc = start(t, nil, args...)
	s.waitReady(10 * time.Second)
	t.Logf("ready in %v with a full-TLS etcd.conf", time.Since(t0).Round(time.Millisecond))

	client := fmt.Sprintf("https://127.0.0.1:%d", s.clientPort)
	if _, err := os.Stat(etcdctl); err == nil || os.Getenv("SUBSTRATE_REQUIRE_CLIENTS") == "1" {
		env := []string{"ETCDCTL_API=3"}
		certArgs := []string{"--endpoints=" + client, "--cacert=" + lab.CA, "--cert=" + lab.Client, "--key=" + lab.ClientKey}
		run(t, 20*time.Second, env, etcdctl, append(certArgs, "put", "/tls-from-certs/k", "v")...)
		if out := run(t, 20*time.Second, env, etcdctl, append(certArgs, "get", "/tls-from-certs/k")...); out != "/tls-from-certs/k\nv\n" {
			t.Errorf("etcdctl with the client certificate: %q", out)
		}
		cmd := exec.Command(etcdctl, "--endpoints="+client, "--cacert="+lab.CA, "--dial-timeout=2s", "--command-timeout=3s", "get", "/tls-from-certs/k")
		cmd.Env = append(os.Environ(), env...)
		if out, err := cmd.CombinedOutput(); err == nil {
			t.Errorf("etcdctl without a client certificate was served: %s", out)
		}
	} else {
		t.Log("etcdctl is not installed: its part is skipped")
	}

	ctlCmd(t, s, "add_user", "openstack", "unused-password")
	ctlCmd(t, s, "set_permissions", "openstack", ".*", ".*", ".*")
	pool, err := tlsutil.LoadCAs(lab.CA)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(lab.Client, lab.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	tc := &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}, ServerName: "controller"}
	conn, err := amqp.DialTLS_ExternalAuth(fmt.Sprintf("amqps://127.0.0.1:%d/", amqps), tc)
	if err != nil {
		t.Fatalf("EXTERNAL over AMQPS: %v\n%s", err, s.output())
	}
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("tls-from-certs", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	conn.Close()

	s.stop(syscall.SIGTERM)
	t0 = time.Now()
	s.proc = start(t, nil, args...)
	s.waitReady(10 * time.Second)
	t.Logf("ready again in %v", time.Since(t0).Round(time.Millisecond))
	conn, err = amqp.DialTLS_ExternalAuth(fmt.Sprintf("amqps://127.0.0.1:%d/", amqps), tc)
	if err != nil {
		t.Fatalf("EXTERNAL after the restart: %v", err)
	}
	defer conn.Close()
	ch, _ = conn.Channel()
	if _, err := ch.QueueDeclarePassive("tls-from-certs", true, false, false, false, nil); err != nil {
		t.Errorf("the durable queue after a restart: %v", err)
	}
}
