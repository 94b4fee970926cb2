// Package tlsutil is the server certificate store shared by the AMQPS
// listener and the management HTTPS listener: the files named by
// --tls-cert, --tls-key and --tls-ca, loaded once at startup and again on
// Reload (SIGHUP, `substrate ctl reload_certificates`). Every TLS
// handshake takes the configuration current when it starts
// (tls.Config.GetConfigForClient over an atomically swapped pointer), so a
// reload needs no restart and leaves established connections alone.
package tlsutil

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Config names the files of a Store and how client certificates are
// treated.
type Config struct {
	CertFile string // PEM certificate chain, the server's certificate first
	KeyFile  string // PEM private key of the first certificate
	// CAFile holds the PEM certificates of the CAs a client certificate
	// must chain to (RabbitMQ's cacertfile). Required unless ClientAuth
	// is tls.NoClientCert; no system trust store is used for clients.
	CAFile string
	// ClientAuth is NoClientCert ("none"), VerifyClientCertIfGiven
	// ("request": RabbitMQ's verify_peer with fail_if_no_peer_cert false)
	// or RequireAndVerifyClientCert ("require": fail_if_no_peer_cert
	// true). A client certificate that is sent is always verified.
	ClientAuth tls.ClientAuthType
}

// ParseClientAuth maps --tls-client-auth's value to a tls.ClientAuthType.
func ParseClientAuth(s string) (tls.ClientAuthType, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "none":
		return tls.NoClientCert, nil
	case "request":
		return tls.VerifyClientCertIfGiven, nil
	case "require":
		return tls.RequireAndVerifyClientCert, nil
	}
	return 0, fmt.Errorf("%q is not one of none, request, require", s)
}

// Validate reports the first inconsistent field.
func (c Config) Validate() error {
	switch {
	case c.CertFile == "":
		return errors.New("tls: no certificate file")
	case c.KeyFile == "":
		return errors.New("tls: no key file")
	case c.ClientAuth != tls.NoClientCert && c.CAFile == "":
		return errors.New("tls: verifying client certificates needs a CA file")
	}
	switch c.ClientAuth {
	case tls.NoClientCert, tls.VerifyClientCertIfGiven, tls.RequireAndVerifyClientCert:
		return nil
	}
	return fmt.Errorf("tls: unsupported client auth mode %v", c.ClientAuth)
}

// Info describes the server certificate in use.
type Info struct {
	Subject  string
	Serial   *big.Int
	NotAfter time.Time
	DNSNames []string
	IPs      []string
}

// String is a one-line summary for a log line or ctl's output.
func (i Info) String() string {
	return fmt.Sprintf("subject %q serial %s expires %s", i.Subject, i.Serial.Text(16), i.NotAfter.UTC().Format(time.RFC3339))
}

// Store holds the current TLS configuration.
type Store struct {
	cfg  Config
	mu   sync.Mutex // serializes Reload
	cur  atomic.Pointer[loaded]
	base *tls.Config
}

type loaded struct {
	tc   *tls.Config
	info Info
}

// New loads the files. Its error names the file that failed.
func New(cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	l, err := load(cfg)
	if err != nil {
		return nil, err
	}
	s := &Store{cfg: cfg}
	s.cur.Store(l)
	s.base = &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return s.cur.Load().tc, nil
		},
	}
	return s, nil
}

// ServerConfig is the tls.Config to hand to tls.NewListener or
// http.Server: every handshake uses the certificate and CAs current when
// it starts. Callers must not modify it.
func (s *Store) ServerConfig() *tls.Config { return s.base }

// Info describes the certificate in use.
func (s *Store) Info() Info { return s.cur.Load().info }

// Reload reads the files again. On success new handshakes use them; on
// failure the previous certificate stays in use and the error names the
// file.
func (s *Store) Reload() (Info, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, err := load(s.cfg)
	if err != nil {
		return s.cur.Load().info, err
	}
	s.cur.Store(l)
	return l.info, nil
}

func load(cfg Config) (*loaded, error) {
	certPEM, err := os.ReadFile(cfg.CertFile)
	if err != nil {
		return nil, fmt.Errorf("tls: certificate %w", err)
	}
	keyPEM, err := os.ReadFile(cfg.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: key %w", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("tls: certificate %s with key %s: %w", cfg.CertFile, cfg.KeyFile, err)
	}
	leaf := pair.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, fmt.Errorf("tls: certificate %s: %w", cfg.CertFile, err)
		}
		pair.Leaf = leaf
	}
	tc := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{pair},
		ClientAuth:   cfg.ClientAuth,
	}
	if cfg.CAFile != "" {
		pool, err := LoadCAs(cfg.CAFile)
		if err != nil {
			return nil, err
		}
		tc.ClientCAs = pool
	}
	info := Info{Subject: leaf.Subject.String(), Serial: leaf.SerialNumber, NotAfter: leaf.NotAfter, DNSNames: leaf.DNSNames}
	for _, ip := range leaf.IPAddresses {
		info.IPs = append(info.IPs, ip.String())
	}
	return &loaded{tc: tc, info: info}, nil
}

// LoadCAs reads a PEM bundle of CA certificates; a file without one is an
// error naming the file.
func LoadCAs(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tls: CA %w", err)
	}
	pool := x509.NewCertPool()
	n := 0
	for rest := data; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("tls: CA file %s: %w", path, err)
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return nil, fmt.Errorf("tls: CA file %s: no PEM certificate found", path)
	}
	return pool, nil
}

// HandshakeReason explains a failed server-side handshake for a log
// line: what the operator should look at. "" when there is nothing to add
// to the error's own text.
func HandshakeReason(err error) string {
	var unknown x509.UnknownAuthorityError
	var invalid x509.CertificateInvalidError
	var alert tls.AlertError
	switch {
	case errors.As(err, &unknown):
		return "the client certificate is not signed by a CA of the CA file"
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return "the client certificate has expired or is not valid yet"
	case errors.As(err, &invalid):
		return "the client certificate is not valid for client authentication"
	case strings.Contains(err.Error(), "client didn't provide a certificate"):
		return "no client certificate, and client certificates are required"
	case errors.As(err, &alert), strings.Contains(err.Error(), "bad record MAC"):
		// OpenSSL clients that refuse our certificate in TLS 1.3 end the
		// handshake with an alert Go reads as a bad record MAC.
		return "the client ended the handshake: does it trust the server certificate's CA?"
	case strings.Contains(err.Error(), "protocol version"):
		return "the client offers only TLS versions before 1.2"
	}
	return ""
}

// PeerName is the name EXTERNAL authentication takes from a verified
// client certificate: its subject's common name (RabbitMQ's
// rabbitmq_auth_mechanism_ssl with ssl_cert_login_from = common_name).
// ok is false when the connection has no verified client certificate.
func PeerName(cs tls.ConnectionState) (name string, ok bool) {
	if len(cs.VerifiedChains) == 0 || len(cs.PeerCertificates) == 0 {
		return "", false
	}
	return cs.PeerCertificates[0].Subject.CommonName, true
}
