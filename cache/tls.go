package cache

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"substrate/internal/faults"
)

// TLSConfig enables TLS on the TCP listeners (memcached -Z with the -o
// ssl_* suboptions). Unix sockets and UDP never use TLS, as in memcached.
type TLSConfig struct {
	ChainCert string // ssl_chain_cert: PEM certificate chain, server certificate first
	Key       string // ssl_key: the server's private key
	// KeyFormat is ssl_keyformat: 1 PEM (the default, also when 0), 2 DER
	// (PKCS#8, PKCS#1 or SEC 1). memcached refuses other values when it
	// loads the key.
	KeyFormat int
	// CACert is ssl_ca_cert: PEM certificates of the CAs client
	// certificates must chain to. Without it no client certificate
	// verifies (memcached loads no default trust store).
	CACert string
	// VerifyMode is ssl_verify_mode: 0 none, 1 request (verify a client
	// certificate if one is sent), 2 require, 3 once (the same as require
	// here: there is no renegotiation).
	VerifyMode int
	// MinVersion is ssl_min_version: 0 TLS 1.0, 1 TLS 1.1, 2 TLS 1.2 (the
	// default, also when the field is left 0 by NewTLSConfig), 3 TLS 1.3.
	MinVersion int

	// Reported by "stats settings" only: Go's TLS stack picks its own
	// cipher suites, write buffering and session tickets, and has no
	// kernel offload.
	Ciphers      string // ssl_ciphers ("" reports NULL)
	WbufSize     int    // ssl_wbuf_size in bytes (default 16384)
	SessionCache bool   // ssl_session_cache
	KernelTLS    bool   // ssl_kernel_tls
}

// NewTLSConfig returns memcached's TLS defaults for the given certificate
// chain and key files.
func NewTLSConfig(chainCert, key string) *TLSConfig {
	return &TLSConfig{ChainCert: chainCert, Key: key, KeyFormat: 1, MinVersion: 2, WbufSize: 16 << 10}
}

// TLSError is a certificate-loading failure. Msg is the line memcached
// 1.6.18 prints last on stderr (without its "\r\n") before exiting with
// status 64 (EX_USAGE), and the reply refresh_certs sends; memcached also
// prints OpenSSL's error queue before it, which is not reproduced.
type TLSError struct{ Msg string }

func (e *TLSError) Error() string { return "cache: TLS: " + e.Msg }

// OpenSSL 3.0's error strings for the failures memcached reports, as
// "error:<code>:<library>::<reason>".
const (
	sslNoStartLine   = "error:0480006C:PEM routines::no start line"
	sslDecoderUnsupp = "error:1E08010C:DECODER routines::unsupported"
	sslKeyMismatch   = "error:05800074:x509 certificate routines::key values mismatch"
	sslBadFiletype   = "error:0A00007C:SSL routines::bad ssl filetype"
	sslNoCertOrCRL   = "error:05800088:x509 certificate routines::no certificate or crl found"
	sslBadASN1Cert   = "error:0688010A:asn1 encoding routines::nested asn1 error"
	sslNullPath      = "error:8000000E:system library::Bad address" // fopen(NULL)
)

func tlsFail(what, path, reason string) *TLSError {
	if path == "" {
		path = "(null)"
	}
	return &TLSError{Msg: fmt.Sprintf("%s: %s : %s", what, path, reason)}
}

// readTLSFile reads path as OpenSSL's BIO file reader would: a missing or
// unreadable file is a "system library" error carrying errno; a directory
// opens but reads nothing.
func readTLSFile(path string) ([]byte, string) {
	if path == "" {
		return nil, sslNullPath
	}
	data, err := os.ReadFile(path)
	var errno syscall.Errno
	switch {
	case err == nil:
		return data, ""
	case errors.As(err, &errno) && errno == syscall.EISDIR:
		return nil, ""
	case errors.As(err, &errno):
		msg := errno.Error()
		if msg != "" {
			msg = strings.ToUpper(msg[:1]) + msg[1:] // glibc's strerror capitalises
		}
		return nil, fmt.Sprintf("error:%08X:system library::%s", 0x80000000|uint32(errno), msg)
	default:
		return nil, "error:80000005:system library::" + err.Error()
	}
}

// pemCertificates returns the DER certificates of PEM data, as OpenSSL's
// PEM reader finds them (other blocks are skipped).
func pemCertificates(data []byte) [][]byte {
	var out [][]byte
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return out
		}
		switch b.Type {
		case "CERTIFICATE", "X509 CERTIFICATE", "TRUSTED CERTIFICATE":
			out = append(out, b.Bytes)
		}
	}
}

func parsePrivateKey(der []byte) (crypto.PrivateKey, bool) {
	if k, err := x509.ParsePKCS8PrivateKey(der); err == nil {
		return k, true
	}
	if k, err := x509.ParsePKCS1PrivateKey(der); err == nil {
		return k, true
	}
	if k, err := x509.ParseECPrivateKey(der); err == nil {
		return k, true
	}
	return nil, false
}

func publicKeyOf(k crypto.PrivateKey) crypto.PublicKey {
	switch k := k.(type) {
	case *rsa.PrivateKey:
		return &k.PublicKey
	case *ecdsa.PrivateKey:
		return &k.PublicKey
	case ed25519.PrivateKey:
		return k.Public()
	}
	return nil
}

// loadTLS loads the certificate chain, key and CA file the way memcached's
// load_server_certificates does, in its order and with its messages, and
// returns a server configuration.
func loadTLS(tc *TLSConfig) (*tls.Config, *TLSError) {
	const (
		chainWhat = "Error loading the certificate chain"
		keyWhat   = "Error loading the key"
		caWhat    = "Error loading the CA certificate"
	)
	data, reason := readTLSFile(tc.ChainCert)
	if reason != "" {
		return nil, tlsFail(chainWhat, tc.ChainCert, reason)
	}
	ders := pemCertificates(data)
	if len(ders) == 0 {
		return nil, tlsFail(chainWhat, tc.ChainCert, sslNoStartLine)
	}
	leaf, err := x509.ParseCertificate(ders[0])
	if err != nil {
		return nil, tlsFail(chainWhat, tc.ChainCert, sslBadASN1Cert)
	}

	data, reason = readTLSFile(tc.Key)
	if reason != "" {
		return nil, tlsFail(keyWhat, tc.Key, reason)
	}
	var key crypto.PrivateKey
	ok := false
	switch tc.KeyFormat {
	case 0, 1: // SSL_FILETYPE_PEM
		for rest := data; ; {
			var b *pem.Block
			if b, rest = pem.Decode(rest); b == nil {
				break
			}
			if strings.HasSuffix(b.Type, "PRIVATE KEY") {
				key, ok = parsePrivateKey(b.Bytes)
				break
			}
		}
	case 2: // SSL_FILETYPE_ASN1
		key, ok = parsePrivateKey(data)
	default:
		return nil, tlsFail(keyWhat, tc.Key, sslBadFiletype)
	}
	if !ok {
		return nil, tlsFail(keyWhat, tc.Key, sslDecoderUnsupp)
	}
	pub, isEqual := publicKeyOf(key).(interface{ Equal(crypto.PublicKey) bool })
	if !isEqual || !pub.Equal(leaf.PublicKey) {
		return nil, tlsFail(keyWhat, tc.Key, sslKeyMismatch)
	}

	cfg := &tls.Config{
		Certificates: []tls.Certificate{{Certificate: ders, PrivateKey: key, Leaf: leaf}},
		ClientCAs:    x509.NewCertPool(),
		MinVersion:   tlsVersion(tc.MinVersion),
	}
	if tc.CACert != "" {
		data, reason = readTLSFile(tc.CACert)
		if reason != "" {
			return nil, tlsFail(caWhat, tc.CACert, reason)
		}
		cas := pemCertificates(data)
		for _, der := range cas {
			c, err := x509.ParseCertificate(der)
			if err != nil {
				return nil, tlsFail(caWhat, tc.CACert, sslBadASN1Cert)
			}
			cfg.ClientCAs.AddCert(c)
		}
		if len(cas) == 0 {
			return nil, tlsFail(caWhat, tc.CACert, sslNoCertOrCRL)
		}
	}
	switch tc.VerifyMode {
	case 0:
		cfg.ClientAuth = tls.NoClientCert
	case 1:
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
	default:
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// Check loads the files as New would and reports the first problem as a
// *TLSError, so a command line can be refused at memcached's point in its
// start-up (before the privilege checks and binding).
func (tc *TLSConfig) Check() error {
	if _, err := loadTLS(tc); err != nil {
		return err
	}
	return nil
}

// tlsVersion maps ssl_min_version to a Go TLS version.
func tlsVersion(v int) uint16 {
	switch v {
	case 0:
		return tls.VersionTLS10
	case 1:
		return tls.VersionTLS11
	case 3:
		return tls.VersionTLS13
	}
	return tls.VersionTLS12
}

// tlsState is a server's live TLS configuration: refresh_certs swaps cur,
// and every handshake picks up the configuration current at its start.
type tlsState struct {
	cfg             *TLSConfig
	base            *tls.Config // handed to tls.Server; defers to cur
	cur             atomic.Pointer[tls.Config]
	refreshedAt     atomic.Int64 // unix seconds of the last (re)load
	handshakeErrors atomic.Uint64
	newSessions     atomic.Uint64
}

func newTLSState(tc *TLSConfig) (*tlsState, error) {
	cfg, terr := loadTLS(tc)
	if terr != nil {
		return nil, terr
	}
	st := &tlsState{cfg: tc}
	st.cur.Store(cfg)
	st.refreshedAt.Store(time.Now().Unix())
	st.base = &tls.Config{
		MinVersion: cfg.MinVersion,
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			faults.Point(SiteTLS, hello.ServerName)
			return st.cur.Load(), nil
		},
	}
	return st, nil
}

// refresh reloads the certificate files (memcached's refresh_certs);
// connections already established keep their session.
func (st *tlsState) refresh() *TLSError {
	cfg, err := loadTLS(st.cfg)
	if err != nil {
		return err
	}
	st.cur.Store(cfg)
	st.refreshedAt.Store(time.Now().Unix())
	return nil
}

// errTLSNotEnabled is refresh_certs' reply on a server without -Z.
var errTLSNotEnabled = &TLSError{Msg: "Error TLS not enabled"}

// handshake completes the TLS handshake of a new connection and counts
// failures (stats ssl_handshake_errors) and full handshakes
// (ssl_new_sessions, reported with ssl_session_cache).
func (st *tlsState) handshake(tc *tls.Conn) error {
	if err := tc.Handshake(); err != nil {
		st.handshakeErrors.Add(1)
		return err
	}
	if !tc.ConnectionState().DidResume {
		st.newSessions.Add(1)
	}
	return nil
}
