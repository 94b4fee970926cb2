package cache

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// tlsFiles is a throwaway PKI written to a test's temporary directory: a
// CA, a server certificate for 127.0.0.1 signed by it, a client
// certificate signed by it, and a client certificate signed by an
// unrelated CA.
type tlsFiles struct {
	dir                 string
	caCert, caKey       string
	srvCert, srvKey     string
	srvKeyDER           string
	cliCert, cliKey     string
	otherCert, otherKey string
	caPool              *x509.CertPool
	client, otherClient tls.Certificate
}

func newTLSFiles(t testing.TB) *tlsFiles {
	t.Helper()
	dir := t.TempDir()
	f := &tlsFiles{dir: dir}
	serial := int64(1)
	mk := func(name string, tmpl *x509.Certificate, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey, string, string) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		serial++
		tmpl.SerialNumber = big.NewInt(serial)
		tmpl.NotBefore = time.Now().Add(-time.Hour)
		tmpl.NotAfter = time.Now().Add(24 * time.Hour)
		if parent == nil {
			parent, parentKey = tmpl, key
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
		if err != nil {
			t.Fatal(err)
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		kder, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		certPath, keyPath := filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key")
		writeFile(t, certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
		writeFile(t, keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))
		if name == "server" {
			f.srvKeyDER = filepath.Join(dir, name+".der")
			writeFile(t, f.srvKeyDER, kder)
		}
		return cert, key, certPath, keyPath
	}
	caTmpl := func(cn string) *x509.Certificate {
		return &x509.Certificate{Subject: pkix.Name{CommonName: cn}, IsCA: true, BasicConstraintsValid: true,
			KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	}
	leafTmpl := func(cn string, usage x509.ExtKeyUsage) *x509.Certificate {
		return &x509.Certificate{Subject: pkix.Name{CommonName: cn}, KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	}
	ca, caKey, caCert, caKeyPath := mk("ca", caTmpl("substrate test CA"), nil, nil)
	f.caCert, f.caKey = caCert, caKeyPath
	_, _, f.srvCert, f.srvKey = mk("server", leafTmpl("127.0.0.1", x509.ExtKeyUsageServerAuth), ca, caKey)
	_, _, f.cliCert, f.cliKey = mk("client", leafTmpl("client", x509.ExtKeyUsageClientAuth), ca, caKey)
	other, otherKey, _, _ := mk("otherca", caTmpl("unrelated CA"), nil, nil)
	_, _, f.otherCert, f.otherKey = mk("otherclient", leafTmpl("intruder", x509.ExtKeyUsageClientAuth), other, otherKey)
	f.caPool = x509.NewCertPool()
	f.caPool.AddCert(ca)
	var err error
	if f.client, err = tls.LoadX509KeyPair(f.cliCert, f.cliKey); err != nil {
		t.Fatal(err)
	}
	if f.otherClient, err = tls.LoadX509KeyPair(f.otherCert, f.otherKey); err != nil {
		t.Fatal(err)
	}
	return f
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// tlsServerOpts are the -o ssl_* settings of a TLS test server.
type tlsServerOpts struct {
	verifyMode int
	minVersion int // ssl_min_version; 2 (TLS 1.2) by default
	withCA     bool
	keyDER     bool // the key in DER, ssl_keyformat=2
}

// tlsTarget is a TLS server under test: a TLS port and a notls port.
type tlsTarget struct {
	tlsAddr, plainAddr string
}

func startOursTLS(t *testing.T, f *tlsFiles, o tlsServerOpts) tlsTarget {
	t.Helper()
	cfg := NewConfig()
	cfg.Addrs = []string{"127.0.0.1:0"}
	cfg.NoTLSAddrs = []string{"127.0.0.1:0"}
	cfg.TLS = NewTLSConfig(f.srvCert, f.srvKey)
	cfg.TLS.VerifyMode = o.verifyMode
	cfg.TLS.MinVersion = o.minVersion
	if o.withCA {
		cfg.TLS.CACert = f.caCert
	}
	if o.keyDER {
		cfg.TLS.Key, cfg.TLS.KeyFormat = f.srvKeyDER, 2
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	a := s.Addrs()
	return tlsTarget{tlsAddr: a[0].String(), plainAddr: a[1].String()}
}

func sslOptions(f *tlsFiles, o tlsServerOpts) string {
	key := f.srvKey
	if o.keyDER {
		key = f.srvKeyDER + ",ssl_keyformat=2"
	}
	opts := fmt.Sprintf("ssl_chain_cert=%s,ssl_key=%s,ssl_verify_mode=%d,ssl_min_version=%d", f.srvCert, key, o.verifyMode, o.minVersion)
	if o.withCA {
		opts += ",ssl_ca_cert=" + f.caCert
	}
	return opts
}

func startMemcachedTLS(t *testing.T, f *tlsFiles, o tlsServerOpts) tlsTarget {
	t.Helper()
	tt := tlsTarget{
		tlsAddr:   "127.0.0.1:" + strconv.Itoa(freePort(t)),
		plainAddr: "127.0.0.1:" + strconv.Itoa(freePort(t)),
	}
	// -u root: refresh_certs re-reads the files in the test's private
	// temporary directory after memcached has dropped privileges.
	cmd := exec.Command(memcachedBin, "-u", "root", "-U", "0", "-t", "1",
		"-l", tt.tlsAddr, "-l", "notls:"+tt.plainAddr, "-Z", "-o", sslOptions(f, o))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", tt.plainAddr, time.Second)
		if err == nil {
			c.Close()
			return tt
		}
		if time.Now().After(deadline) {
			t.Fatalf("memcached -Z did not start: %v; stderr: %s", err, stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// forEachTLSTarget runs body against our server and Debian's memcached,
// both with TLS on one port and plain text ("notls") on another.
func forEachTLSTarget(t *testing.T, f *tlsFiles, o tlsServerOpts, body func(t *testing.T, tt tlsTarget)) {
	t.Run("ours", func(t *testing.T) { body(t, startOursTLS(t, f, o)) })
	t.Run("memcached", func(t *testing.T) {
		needMemcached(t)
		body(t, startMemcachedTLS(t, f, o))
	})
}

// dialTLS connects with cfg (the CA and server name filled in) and
// completes the client side of the handshake.
func dialTLS(t testing.TB, f *tlsFiles, addr string, cfg *tls.Config) (*client, error) {
	t.Helper()
	if cfg == nil {
		cfg = &tls.Config{}
	}
	cfg.RootCAs = f.caPool
	cfg.ServerName = "127.0.0.1"
	d := &net.Dialer{Timeout: 2 * time.Second}
	nc, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { nc.Close() })
	return &client{t: t, nc: nc, r: bufio.NewReaderSize(nc, 1<<16)}, nil
}

// tlsVersionWorks reports whether a client with cfg can run a command:
// with TLS 1.3 a server rejects a client certificate only after the
// client's side of the handshake is done, so a command must go through.
func tlsVersionWorks(t testing.TB, f *tlsFiles, addr string, cfg *tls.Config) error {
	c, err := dialTLS(t, f, addr, cfg)
	if err != nil {
		return err
	}
	c.nc.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(c.nc, "version\r\n"); err != nil {
		return err
	}
	line, err := c.r.ReadString('\n')
	if err != nil {
		return err
	}
	if line != "VERSION 1.6.18\r\n" {
		return fmt.Errorf("unexpected reply %q", line)
	}
	return nil
}

func TestTLS(t *testing.T) {
	f := newTLSFiles(t)
	o := tlsServerOpts{minVersion: 2, withCA: true}
	forEachTLSTarget(t, f, o, func(t *testing.T, tt tlsTarget) {
		c, err := dialTLS(t, f, tt.tlsAddr, nil)
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		if v := c.nc.(*tls.Conn).ConnectionState().Version; v != tls.VersionTLS13 {
			t.Errorf("negotiated %s, want TLS 1.3", tls.VersionName(v))
		}
		if got, want := c.roundTrip("set k 3 0 5\r\nhello\r\nget k\r\n"), "STORED\r\nVALUE k 3 5\r\nhello\r\nEND\r\n"; got != want {
			t.Errorf("set/get over TLS: %q, want %q", got, want)
		}
		big := value(100000, 'x')
		// Sent alone: memcached 1.6.18 stalls when a command follows a
		// large value in the same TLS write (its event loop waits on the
		// socket while OpenSSL holds the decrypted rest).
		c.send("set big 0 0 100000\r\n" + big + "\r\n")
		c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		if line, err := c.r.ReadString('\n'); line != "STORED\r\n" {
			t.Errorf("100 kB set over TLS: %q, %v", line, err)
		}
		if got, want := c.roundTrip("get big\r\n"), "VALUE big 0 100000\r\n"+big+"\r\nEND\r\n"; got != want {
			t.Errorf("100 kB value over TLS: got %d bytes, want %d", len(got), len(want))
		}
		if got := c.roundTrip("refresh_certs\r\nrefresh_certs noreply\r\n"); got != "OK\r\n" {
			t.Errorf("refresh_certs: %q, want OK once", got)
		}

		// The binary protocol is negotiated inside TLS too.
		b, err := dialTLS(t, f, tt.tlsAddr, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := b.binRoundTrip(binReq(BinGet, "k", "", "", 7, 0)), binRes(BinGet, 0, u32(3), "", "hello", 7, 0); len(got) != len(want) || got[24:] != want[24:] {
			t.Errorf("binary get over TLS: %q, want %q (cas aside)", got, want)
		}

		// A client with only TLS 1.0/1.1 is refused (ssl_min_version tlsv1.2).
		if err := tlsVersionWorks(t, f, tt.tlsAddr, &tls.Config{MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}); err == nil {
			t.Error("a TLS 1.1 client was served")
		}
		// Without ssl_verify_mode no certificate is asked for.
		if err := tlsVersionWorks(t, f, tt.tlsAddr, withCert(f.otherClient)); err != nil {
			t.Errorf("verify mode 0, client with an unknown CA: %v", err)
		}

		// Plain text on the TLS port: no reply, the connection is dropped.
		p := dial(t, tt.tlsAddr)
		p.send("version\r\n")
		p.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		got, err := io.ReadAll(p.r)
		if len(got) != 0 || (err != nil && !errors.Is(err, syscall.ECONNRESET)) {
			t.Errorf("plain text on the TLS port: read %q, %v; want nothing and EOF or a reset", got, err)
		}

		// The notls listener speaks plain text and shares the data.
		n := dial(t, tt.plainAddr)
		if got, want := n.roundTrip("get k\r\n"), "VALUE k 3 5\r\nhello\r\nEND\r\n"; got != want {
			t.Errorf("notls get: %q, want %q", got, want)
		}
		settings := n.stats("settings")
		for k, want := range map[string]string{
			"ssl_enabled": "yes", "ssl_chain_cert": f.srvCert, "ssl_key": f.srvKey, "ssl_verify_mode": "0",
			"ssl_keyformat": "1", "ssl_ciphers": "NULL", "ssl_ca_cert": f.caCert, "ssl_wbuf_size": "16384",
			"ssl_session_cache": "no", "ssl_kernel_tls": "no", "ssl_min_version": "tlsv1.2",
		} {
			if settings[k] != want {
				t.Errorf("stats settings %s = %q, want %q", k, settings[k], want)
			}
		}
		out := n.roundTrip("stats\r\n")
		if !strings.Contains(out, "STAT log_watchers 0\r\nSTAT ssl_handshake_errors ") ||
			!strings.Contains(out, "\r\nSTAT time_since_server_cert_refresh ") ||
			!strings.Contains(out, "\r\nSTAT unexpected_napi_ids 0\r\n") {
			t.Errorf("stats lacks the TLS counters after log_watchers:\n%s", out)
		}
		st := n.stats("")
		if n.statInt(st, "time_since_server_cert_refresh") > 60 {
			t.Errorf("time_since_server_cert_refresh = %s after refresh_certs", st["time_since_server_cert_refresh"])
		}
	})
}

func TestTLSWithoutTLS(t *testing.T) {
	forEachTarget(t, serverOpts{}, func(t *testing.T, addr string) {
		c := dial(t, addr)
		// memcached answers the error even with noreply.
		if got, want := c.roundTrip("refresh_certs\r\nrefresh_certs noreply\r\n"), "Error TLS not enabled\r\nError TLS not enabled\r\n"; got != want {
			t.Errorf("refresh_certs: %q, want %q", got, want)
		}
		st := c.stats("")
		if _, ok := st["ssl_handshake_errors"]; ok {
			t.Error("stats has ssl_handshake_errors without TLS")
		}
		if s := c.stats("settings"); s["ssl_enabled"] != "no" || s["ssl_chain_cert"] != "(null)" || s["ssl_ca_cert"] != "NULL" {
			t.Errorf("stats settings ssl_*: enabled %q chain %q ca %q", s["ssl_enabled"], s["ssl_chain_cert"], s["ssl_ca_cert"])
		}
	})
}

// TestTLSClientVerify checks ssl_verify_mode with an ssl_ca_cert: which
// clients get served with no certificate, one from the CA, and one from
// an unrelated CA.
func TestTLSClientVerify(t *testing.T) {
	f := newTLSFiles(t)
	for _, tc := range []struct {
		mode                    int
		minVersion              int
		noCert, goodCert, other bool // served?
	}{
		{mode: 1, minVersion: 2, noCert: true, goodCert: true},
		{mode: 2, minVersion: 2, goodCert: true},
		{mode: 3, minVersion: 3, goodCert: true},
	} {
		t.Run(fmt.Sprintf("mode%d", tc.mode), func(t *testing.T) {
			o := tlsServerOpts{verifyMode: tc.mode, minVersion: tc.minVersion, withCA: true}
			forEachTLSTarget(t, f, o, func(t *testing.T, tt tlsTarget) {
				check := func(what string, want bool, cfg *tls.Config) {
					t.Helper()
					err := tlsVersionWorks(t, f, tt.tlsAddr, cfg)
					if (err == nil) != want {
						t.Errorf("%s: served %v (%v), want %v", what, err == nil, err, want)
					}
				}
				check("no client certificate", tc.noCert, nil)
				check("certificate from the CA", tc.goodCert, withCert(f.client))
				check("certificate from another CA", tc.other, withCert(f.otherClient))
				if tc.minVersion == 3 {
					cfg := withCert(f.client)
					cfg.MaxVersion = tls.VersionTLS12
					check("TLS 1.2 client on ssl_min_version=3", false, cfg)
				}
				n := dial(t, tt.plainAddr)
				if got, want := n.stats("settings")["ssl_verify_mode"], strconv.Itoa([]int{0, 1, 3, 7}[tc.mode]); got != want {
					t.Errorf("stats settings ssl_verify_mode = %q, want %q", got, want)
				}
			})
		})
	}
}

// withCert sends cert whenever the server asks for one, even when its
// issuer is not among the server's acceptable CAs (Go's client would
// otherwise send none).
func withCert(cert tls.Certificate) *tls.Config {
	return &tls.Config{GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		return &cert, nil
	}}
}

// TestTLSLoadErrorsMatchMemcached starts Debian's memcached -Z with broken
// certificate settings and checks that it exits 64 with the line New's
// *TLSError carries as the last line of its stderr.
func TestTLSLoadErrorsMatchMemcached(t *testing.T) {
	f := newTLSFiles(t)
	empty := filepath.Join(f.dir, "empty")
	writeFile(t, empty, nil)
	missing := filepath.Join(f.dir, "missing.pem")
	type files struct {
		chain, key, ca string
		keyformat      int
	}
	cases := []struct {
		name string
		files
	}{
		{"chain missing", files{chain: missing, key: f.srvKey}},
		{"chain unset", files{key: f.srvKey}},
		{"chain is a directory", files{chain: f.dir, key: f.srvKey}},
		{"chain empty", files{chain: empty, key: f.srvKey}},
		{"chain is a key", files{chain: f.srvKey, key: f.srvKey}},
		{"key unset", files{chain: f.srvCert}},
		{"key missing", files{chain: f.srvCert, key: missing}},
		{"key of another certificate", files{chain: f.srvCert, key: f.caKey}},
		{"key empty", files{chain: f.srvCert, key: empty}},
		{"key is a certificate", files{chain: f.srvCert, key: f.srvCert}},
		{"keyformat 3", files{chain: f.srvCert, key: f.srvKey, keyformat: 3}},
		{"keyformat DER, key PEM", files{chain: f.srvCert, key: f.srvKey, keyformat: 2}},
		{"CA missing", files{chain: f.srvCert, key: f.srvKey, ca: missing}},
		{"CA is a key", files{chain: f.srvCert, key: f.srvKey, ca: f.srvKey}},
		{"CA empty", files{chain: f.srvCert, key: f.srvKey, ca: empty}},
	}
	if os.Geteuid() != 0 {
		unreadable := filepath.Join(f.dir, "unreadable.pem")
		writeFile(t, unreadable, []byte("x"))
		if err := os.Chmod(unreadable, 0); err != nil {
			t.Fatal(err)
		}
		cases = append(cases, struct {
			name string
			files
		}{"chain unreadable", files{chain: unreadable, key: f.srvKey}})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := NewConfig()
			cfg.Addrs = []string{"127.0.0.1:0"}
			cfg.TLS = NewTLSConfig(tc.chain, tc.key)
			cfg.TLS.CACert = tc.ca
			opts := []string{}
			if tc.chain != "" {
				opts = append(opts, "ssl_chain_cert="+tc.chain)
			}
			if tc.key != "" {
				opts = append(opts, "ssl_key="+tc.key)
			}
			if tc.ca != "" {
				opts = append(opts, "ssl_ca_cert="+tc.ca)
			}
			if tc.keyformat != 0 {
				cfg.TLS.KeyFormat = tc.keyformat
				opts = append(opts, "ssl_keyformat="+strconv.Itoa(tc.keyformat))
			}
			_, err := New(cfg)
			var te *TLSError
			if !errors.As(err, &te) {
				t.Fatalf("New: %v, want a *TLSError", err)
			}
			needMemcached(t)
			args := []string{"-u", "nobody", "-l", "127.0.0.1", "-p", strconv.Itoa(freePort(t)), "-U", "0", "-Z"}
			if len(opts) > 0 {
				args = append(args, "-o", strings.Join(opts, ","))
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, memcachedBin, args...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err = cmd.Run()
			if ctx.Err() != nil {
				t.Fatalf("memcached %q started; it should have refused", args)
			}
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 64 {
				t.Fatalf("memcached %q: %v, want exit 64; stderr %q", args, err, stderr.String())
			}
			lines := strings.SplitAfter(strings.TrimSuffix(stderr.String(), "\n"), "\n")
			if last := lines[len(lines)-1]; last+"\n" != te.Msg+"\r\n" {
				t.Errorf("memcached's last stderr line %q, ours %q", last+"\n", te.Msg+"\r\n")
			}
		})
	}
}

// TestTLSKeyFormatDER serves with a DER key (ssl_keyformat=2).
func TestTLSKeyFormatDER(t *testing.T) {
	f := newTLSFiles(t)
	forEachTLSTarget(t, f, tlsServerOpts{minVersion: 2, keyDER: true}, func(t *testing.T, tt tlsTarget) {
		if err := tlsVersionWorks(t, f, tt.tlsAddr, nil); err != nil {
			t.Fatal(err)
		}
		if got := dial(t, tt.plainAddr).stats("settings")["ssl_keyformat"]; got != "2" {
			t.Errorf("stats settings ssl_keyformat = %q, want 2", got)
		}
	})
}
