package kvstore

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// writeCert writes a certificate for cn signed by ca (self-signed when ca
// is nil) and its key to dir/name.{crt,key}.
func writeCert(t *testing.T, dir, name, cn string, ca *x509.Certificate, caKey *ecdsa.PrivateKey, isCA bool) (*x509.Certificate, *ecdsa.PrivateKey) {
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
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:     []string{"localhost"},
	}
	if isCA {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	}
	signer, signerKey := tmpl, key
	if ca != nil {
		signer, signerKey = ca, caKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, name+".crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(filepath.Join(dir, name+".key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	return cert, key
}

// TestFullTLSStartsAndServesTheBroker: an etcd.conf with https client and
// peer URLs and client-certificate auth. Startup used to hang (substrate's
// own client had no certificate); it completes within 10 s, the broker's
// in-process KV works, and a client with a certificate works while one
// without is refused.
func TestFullTLSStartsAndServesTheBroker(t *testing.T) {
	dir := t.TempDir()
	ca, caKey := writeCert(t, dir, "ca", "substrate test CA", nil, nil, true)
	writeCert(t, dir, "server", "controller", ca, caKey, false)
	writeCert(t, dir, "client", "root", ca, caKey, false)
	f := func(n string) string { return filepath.Join(dir, n) }
	cp, pp := freePort(t), freePort(t)
	cfg := NewConfig()
	cfg.Name = "tls"
	cfg.DataDir = filepath.Join(dir, "etcd")
	cfg.Vars = map[string]string{
		"ETCD_UNSAFE_NO_FSYNC":             "true",
		"ETCD_LISTEN_CLIENT_URLS":          fmt.Sprintf("https://127.0.0.1:%d", cp),
		"ETCD_ADVERTISE_CLIENT_URLS":       fmt.Sprintf("https://127.0.0.1:%d", cp),
		"ETCD_LISTEN_PEER_URLS":            fmt.Sprintf("https://127.0.0.1:%d", pp),
		"ETCD_INITIAL_ADVERTISE_PEER_URLS": fmt.Sprintf("https://127.0.0.1:%d", pp),
		"ETCD_INITIAL_CLUSTER":             fmt.Sprintf("tls=https://127.0.0.1:%d", pp),
		"ETCD_CERT_FILE":                   f("server.crt"),
		"ETCD_KEY_FILE":                    f("server.key"),
		"ETCD_TRUSTED_CA_FILE":             f("ca.crt"),
		"ETCD_CLIENT_CERT_AUTH":            "true",
		"ETCD_PEER_CERT_FILE":              f("server.crt"),
		"ETCD_PEER_KEY_FILE":               f("server.key"),
		"ETCD_PEER_TRUSTED_CA_FILE":        f("ca.crt"),
		"ETCD_PEER_CLIENT_CERT_AUTH":       "true",
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	t0 := time.Now()
	if err := s.Start(ctx); err != nil {
		t.Fatalf("start: %v", err)
	}
	defer s.Shutdown(context.Background())
	t.Logf("full-TLS member ready in %v", time.Since(t0).Round(time.Millisecond))
	if _, err := s.KV().Put(ctx, reservedKeys[0], "u"); err != nil {
		t.Fatalf("in-process put: %v", err)
	}

	pool := x509.NewCertPool()
	pool.AddCert(ca)
	pair, err := tls.LoadX509KeyPair(f("client.crt"), f("client.key"))
	if err != nil {
		t.Fatal(err)
	}
	endpoint := fmt.Sprintf("https://127.0.0.1:%d", cp)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
		TLS: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}}})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Put(ctx, "/k", "v"); err != nil {
		t.Fatalf("client with a certificate: %v", err)
	}
	if r, err := cli.Get(ctx, "", clientv3.WithPrefix()); err != nil || r.Count != 1 {
		t.Fatalf("client with a certificate, every key: %v %v", r, err)
	}
	nocert, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
		TLS: &tls.Config{RootCAs: pool}})
	if err != nil {
		t.Fatal(err)
	}
	defer nocert.Close()
	short, cancel2 := context.WithTimeout(ctx, 2*time.Second)
	defer cancel2()
	if _, err := nocert.Get(short, "/k"); err == nil {
		t.Error("a client without a certificate was served")
	}
}
