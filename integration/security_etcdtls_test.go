package integration

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// secCert writes a certificate for cn (valid for 127.0.0.1), signed by ca
// or self-signed, to dir/name.crt and dir/name.key.
func secCert(t *testing.T, dir, name, cn string, ca *x509.Certificate, caKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
	}
	signer, signerKey := tmpl, key
	if ca == nil {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	} else {
		signer, signerKey = ca, caKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	if err := os.WriteFile(filepath.Join(dir, name+".crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return cert, key
}

// TestSecurityFullTLSEtcdConf: an etcd.conf with https client and peer
// URLs and client-certificate auth on both. serve is ready within 10 s
// (substrate's broker no longer dials the client port), etcdctl with a
// certificate works and sees none of the broker's keys, one without is
// refused, and the broker keeps users and durable queues across a
// restart. The data directory, made 0755 beforehand, gets etcd's
// permission warning; a key file readable by others gets one warning.
func TestSecurityFullTLSEtcdConf(t *testing.T) {
	dir := t.TempDir()
	ca, caKey := secCert(t, dir, "ca", "lab CA", nil, nil)
	secCert(t, dir, "server", "controller", ca, caKey)
	secCert(t, dir, "client", "root", ca, caKey)
	secCert(t, dir, "peer", "controller", ca, caKey)
	os.Chmod(filepath.Join(dir, "peer.key"), 0o644)
	f := func(n string) string { return filepath.Join(dir, n) }

	s := newServer(t)
	if err := os.MkdirAll(s.dataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(s.dataDir, 0o755)
	host, _ := os.Hostname()
	client := fmt.Sprintf("https://127.0.0.1:%d", s.clientPort)
	peer := fmt.Sprintf("https://127.0.0.1:%d", s.peerPort)
	conf := filepath.Join(dir, "etcd.conf")
	os.WriteFile(conf, []byte(strings.Join([]string{
		`ETCD_LISTEN_CLIENT_URLS="` + client + `"`,
		`ETCD_ADVERTISE_CLIENT_URLS="` + client + `"`,
		`ETCD_LISTEN_PEER_URLS="` + peer + `"`,
		`ETCD_INITIAL_ADVERTISE_PEER_URLS="` + peer + `"`,
		`ETCD_INITIAL_CLUSTER="` + host + `=` + peer + `"`,
		`ETCD_CERT_FILE="` + f("server.crt") + `"`,
		`ETCD_KEY_FILE="` + f("server.key") + `"`,
		`ETCD_TRUSTED_CA_FILE="` + f("ca.crt") + `"`,
		`ETCD_CLIENT_CERT_AUTH="true"`,
		`ETCD_PEER_CERT_FILE="` + f("peer.crt") + `"`,
		`ETCD_PEER_KEY_FILE="` + f("peer.key") + `"`,
		`ETCD_PEER_TRUSTED_CA_FILE="` + f("ca.crt") + `"`,
		`ETCD_PEER_CLIENT_CERT_AUTH="true"`,
	}, "\n")+"\n"), 0o600)
	t0 := time.Now()
	s.proc = start(t, nil, s.args("--etcd-config", conf)...)
	s.waitReady(10 * time.Second)
	t.Logf("ready in %v", time.Since(t0).Round(time.Millisecond))

	c, err := dialAMQP(s, "guest", "guest")
	if err != nil {
		t.Fatal(err)
	}
	ch, _ := c.Channel()
	if _, err := ch.QueueDeclare("tls-durable", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	c.Close()
	ctlCmd(t, s, "add_user", "nova", "novapw")
	ctlCmd(t, s, "set_permissions", "nova", ".*", ".*", ".*")

	out := s.output()
	if n := strings.Count(out, "check file permission: directory"); n != 1 || !strings.Contains(out, s.dataDir) {
		t.Errorf("%d data directory permission warnings, want 1:\n%s", n, out)
	}
	if n := strings.Count(out, "etcd peer key file "+f("peer.key")); n != 1 {
		t.Errorf("%d warnings about the peer key, want 1:\n%s", n, out)
	}
	if strings.Contains(out, "etcd client key file") {
		t.Errorf("a 0600 key file was warned about:\n%s", out)
	}

	if _, err := os.Stat(etcdctl); err == nil {
		env := []string{"ETCDCTL_API=3"}
		tlsArgs := []string{"--endpoints=" + client, "--cacert=" + f("ca.crt"), "--cert=" + f("client.crt"), "--key=" + f("client.key")}
		run(t, 20*time.Second, env, etcdctl, append(tlsArgs, "put", "/tls/k", "v")...)
		if out := run(t, 20*time.Second, env, etcdctl, append(tlsArgs, "get", "--prefix", "")...); out != "/tls/k\nv\n" {
			t.Errorf("etcdctl with a certificate, every key: %q", out)
		}
		cmd := exec.Command(etcdctl, "--endpoints="+client, "--cacert="+f("ca.crt"), "--dial-timeout=2s", "--command-timeout=3s", "get", "/tls/k")
		cmd.Env = append(os.Environ(), env...)
		if out, err := cmd.CombinedOutput(); err == nil {
			t.Errorf("etcdctl without a client certificate was served: %s", out)
		}
	}

	s.stop(syscall.SIGTERM)
	s.proc = start(t, nil, s.args("--etcd-config", conf)...)
	s.waitReady(10 * time.Second)
	c, err = dialAMQP(s, "nova", "novapw")
	if err != nil {
		t.Fatalf("nova after restart: %v", err)
	}
	defer c.Close()
	g, err := dialAMQP(s, "guest", "guest")
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	gch, _ := g.Channel()
	if _, err := gch.QueueDeclarePassive("tls-durable", true, false, false, false, nil); err != nil {
		t.Errorf("durable queue after restart: %v", err)
	}
}
