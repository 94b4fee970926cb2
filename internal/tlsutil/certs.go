package tlsutil

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// A lab certificate authority for `substrate certs`: ECDSA P-256 keys,
// a CA valid ten years, leaf certificates valid two years.

// Authority is a CA that issues certificates.
type Authority struct {
	Cert *x509.Certificate
	key  crypto.Signer
}

// Request describes a certificate to issue.
type Request struct {
	CommonName string
	// Hosts are the subject alternative names: each an IP address or a
	// DNS name.
	Hosts     []string
	Server    bool      // extended key usage serverAuth
	Client    bool      // extended key usage clientAuth
	NotBefore time.Time // zero: an hour ago
	NotAfter  time.Time // zero: NotBefore plus two years
}

// NewAuthority makes a self-signed CA named name.
func NewAuthority(name string) (*Authority, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"substrate lab CA"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &Authority{Cert: cert, key: key}, nil
}

// LoadAuthority reads a CA certificate and its key written by
// WriteAuthority.
func LoadAuthority(certFile, keyFile string) (*Authority, error) {
	cb, err := os.ReadFile(certFile)
	if err != nil {
		return nil, err
	}
	kb, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, err
	}
	b, _ := pem.Decode(cb)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s: no PEM certificate", certFile)
	}
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", certFile, err)
	}
	k, _ := pem.Decode(kb)
	if k == nil {
		return nil, fmt.Errorf("%s: no PEM key", keyFile)
	}
	key, err := x509.ParsePKCS8PrivateKey(k.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", keyFile, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s: not a signing key", keyFile)
	}
	return &Authority{Cert: cert, key: signer}, nil
}

// CertPEM is the CA certificate in PEM.
func (a *Authority) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.Cert.Raw})
}

// KeyPEM is the CA's private key in PEM (PKCS#8).
func (a *Authority) KeyPEM() ([]byte, error) { return keyPEM(a.key) }

// Issue signs a new key pair for req and returns the certificate and the
// key in PEM.
func (a *Authority) Issue(req Request) (certPEM, keyPEMBytes []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	nb := req.NotBefore
	if nb.IsZero() {
		nb = time.Now().Add(-time.Hour)
	}
	na := req.NotAfter
	if na.IsZero() {
		na = nb.AddDate(2, 0, 0)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: req.CommonName},
		NotBefore:             nb,
		NotAfter:              na,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		BasicConstraintsValid: true,
	}
	if req.Server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if req.Client {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	for _, h := range req.Hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.Cert, key.Public(), a.key)
	if err != nil {
		return nil, nil, err
	}
	kp, err := keyPEM(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), kp, nil
}

func keyPEM(k crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return n.Add(n, big.NewInt(1))
}

// LabFiles are the files WriteLab writes, as absolute paths.
type LabFiles struct {
	CA, CAKey         string // ca.pem, ca-key.pem
	Server, ServerKey string // server.pem, server-key.pem
	Client, ClientKey string // client.pem, client-key.pem
}

// LabFilesIn names the files of a lab in dir.
func LabFilesIn(dir string) LabFiles {
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	j := func(n string) string { return filepath.Join(dir, n) }
	return LabFiles{CA: j("ca.pem"), CAKey: j("ca-key.pem"), Server: j("server.pem"), ServerKey: j("server-key.pem"),
		Client: j("client.pem"), ClientKey: j("client-key.pem")}
}

// LocalHosts are the names every lab server certificate carries besides
// the ones asked for.
var LocalHosts = []string{"localhost", "127.0.0.1", "::1"}

// WriteLab writes a lab CA (kept if dir already has one, so that
// clients trusting it keep working), a server certificate for hosts plus
// LocalHosts, usable as etcd's peer certificate too (serverAuth and
// clientAuth), and a client certificate whose common name is clientCN,
// for the EXTERNAL mechanism and etcd's client-certificate auth. Keys are
// written 0600, certificates 0644, the directory 0700 when created.
func WriteLab(dir string, hosts []string, clientCN string) (LabFiles, error) {
	f := LabFilesIn(dir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return f, err
	}
	var names []string
	for _, h := range append(slices.Clone(hosts), LocalHosts...) {
		h = strings.TrimSpace(h)
		if h != "" && !slices.Contains(names, h) {
			names = append(names, h)
		}
	}
	if len(names) == len(LocalHosts) && len(hosts) == 0 {
		return f, errors.New("no host name given")
	}
	ca, err := LoadAuthority(f.CA, f.CAKey)
	if errors.Is(err, fs.ErrNotExist) {
		if ca, err = NewAuthority("substrate lab CA " + names[0]); err != nil {
			return f, err
		}
		kp, err := ca.KeyPEM()
		if err != nil {
			return f, err
		}
		if err := writeFile(f.CAKey, kp, 0o600); err != nil {
			return f, err
		}
		if err := writeFile(f.CA, ca.CertPEM(), 0o644); err != nil {
			return f, err
		}
	} else if err != nil {
		return f, err
	}
	cert, key, err := ca.Issue(Request{CommonName: names[0], Hosts: names, Server: true, Client: true})
	if err != nil {
		return f, err
	}
	if err := writePair(f.Server, cert, f.ServerKey, key); err != nil {
		return f, err
	}
	cert, key, err = ca.Issue(Request{CommonName: clientCN, Client: true})
	if err != nil {
		return f, err
	}
	return f, writePair(f.Client, cert, f.ClientKey, key)
}

func writePair(certFile string, cert []byte, keyFile string, key []byte) error {
	if err := writeFile(keyFile, key, 0o600); err != nil {
		return err
	}
	return writeFile(certFile, cert, 0o644)
}

// writeFile replaces path atomically with data at mode perm (a reload
// never sees half a file).
func writeFile(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
