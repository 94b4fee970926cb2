package tlsutil

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseClientAuth(t *testing.T) {
	for in, want := range map[string]tls.ClientAuthType{"": tls.NoClientCert, "none": tls.NoClientCert,
		"request": tls.VerifyClientCertIfGiven, "Require": tls.RequireAndVerifyClientCert} {
		if got, err := ParseClientAuth(in); err != nil || got != want {
			t.Errorf("%q: %v %v", in, got, err)
		}
	}
	if _, err := ParseClientAuth("optional"); err == nil {
		t.Error("optional accepted")
	}
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := pem.Decode(b)
	c, err := x509.ParseCertificate(p.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestWriteLab: keys 0600, the server certificate names the hosts and
// the loopback names and verifies against the CA for server and client
// use, the client certificate carries the CN, and a second run keeps the
// CA and issues new leaf certificates.
func TestWriteLab(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	f, err := WriteLab(dir, []string{"controller", "10.0.0.11"}, "openstack")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{f.CAKey, f.ServerKey, f.ClientKey} {
		if st, err := os.Stat(k); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v", k, st.Mode(), err)
		}
	}
	if st, _ := os.Stat(dir); st.Mode().Perm() != 0o700 {
		t.Errorf("dir mode %v", st.Mode())
	}
	pool, err := LoadCAs(f.CA)
	if err != nil {
		t.Fatal(err)
	}
	srv := readCert(t, f.Server)
	if !slices.Equal(srv.DNSNames, []string{"controller", "localhost"}) || len(srv.IPAddresses) != 3 {
		t.Errorf("SANs %v %v", srv.DNSNames, srv.IPAddresses)
	}
	for _, host := range []string{"controller", "localhost", "10.0.0.11", "127.0.0.1", "::1"} {
		if _, err := srv.Verify(x509.VerifyOptions{DNSName: host, Roots: pool}); err != nil {
			t.Errorf("server certificate for %s: %v", host, err)
		}
	}
	if _, err := srv.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("server certificate as etcd's peer (client) certificate: %v", err)
	}
	cl := readCert(t, f.Client)
	if cl.Subject.CommonName != "openstack" {
		t.Errorf("client CN %q", cl.Subject.CommonName)
	}
	if _, err := cl.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client certificate: %v", err)
	}
	ca1 := readCert(t, f.CA)
	if _, err := WriteLab(dir, []string{"controller"}, "openstack"); err != nil {
		t.Fatal(err)
	}
	if !readCert(t, f.CA).Equal(ca1) {
		t.Error("a second run replaced the CA")
	}
	if readCert(t, f.Server).SerialNumber.Cmp(srv.SerialNumber) == 0 {
		t.Error("a second run kept the server certificate")
	}
}

// TestNewErrors: each unloadable file gives an error naming it.
func TestNewErrors(t *testing.T) {
	f, err := WriteLab(t.TempDir(), []string{"controller"}, "openstack")
	if err != nil {
		t.Fatal(err)
	}
	other, err := WriteLab(t.TempDir(), []string{"controller"}, "openstack")
	if err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(t.TempDir(), "garbage.pem")
	os.WriteFile(garbage, []byte("-----BEGIN NOTHING-----\n"), 0o600)
	missing := filepath.Join(t.TempDir(), "missing.pem")
	for _, c := range []struct {
		cfg  Config
		name string
	}{
		{Config{CertFile: missing, KeyFile: f.ServerKey}, missing},
		{Config{CertFile: f.Server, KeyFile: missing}, missing},
		{Config{CertFile: garbage, KeyFile: f.ServerKey}, garbage},
		{Config{CertFile: f.Server, KeyFile: other.ServerKey}, f.Server},
		{Config{CertFile: f.Server, KeyFile: f.ServerKey, CAFile: garbage, ClientAuth: tls.RequireAndVerifyClientCert}, garbage},
		{Config{CertFile: f.Server, KeyFile: f.ServerKey, ClientAuth: tls.RequireAndVerifyClientCert}, "CA file"},
	} {
		_, err := New(c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.name) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%+v: %v", c.cfg, err)
		}
	}
	s, err := New(Config{CertFile: f.Server, KeyFile: f.ServerKey, CAFile: f.CA, ClientAuth: tls.RequireAndVerifyClientCert})
	if err != nil {
		t.Fatal(err)
	}
	if s.Info().NotAfter.Before(time.Now().AddDate(1, 0, 0)) || !strings.Contains(s.Info().String(), "CN=controller") {
		t.Errorf("info %v", s.Info())
	}
}
