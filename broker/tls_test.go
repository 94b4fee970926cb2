package broker

import (
	"context"
	"crypto/tls"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"substrate/broker/amqp"
	"substrate/internal/testkit"
	"substrate/internal/tlsutil"
)

// tlsLab writes a lab CA with server and client ("openstack")
// certificates in a temp dir and returns their files.
func tlsLab(t testing.TB) tlsutil.LabFiles {
	t.Helper()
	f, err := tlsutil.WriteLab(t.TempDir(), []string{"controller"}, "openstack")
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// tlsServer starts a broker with a plain and a TLS listener on the lab's
// server certificate, client certificates verified when given.
func tlsServer(t *testing.T, f tlsutil.LabFiles) (*Server, *tlsutil.Store, *testkit.Buffer) {
	t.Helper()
	store, err := tlsutil.New(tlsutil.Config{CertFile: f.Server, KeyFile: f.ServerKey, CAFile: f.CA, ClientAuth: tls.VerifyClientCertIfGiven})
	if err != nil {
		t.Fatal(err)
	}
	logs := &testkit.Buffer{}
	s := startServer(t, func(c *Config) {
		c.TLSAddrs = []string{"127.0.0.1:0"}
		c.TLS = store.ServerConfig()
		c.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	return s, store, logs
}

// clientTLS trusts the lab CA and presents certFile/keyFile when given.
func clientTLS(t testing.TB, caFile, certFile, keyFile string) *tls.Config {
	t.Helper()
	pool, err := tlsutil.LoadCAs(caFile)
	if err != nil {
		t.Fatal(err)
	}
	c := &tls.Config{RootCAs: pool, ServerName: "localhost"}
	if certFile != "" {
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		c.Certificates = []tls.Certificate{pair}
	}
	return c
}

func tlsURL(s *Server, userinfo string) string {
	return "amqps://" + userinfo + s.TLSAddrs()[0].String() + "/"
}

// rawTLS dials the TLS listener and returns a raw client on the TLS
// connection, with the handshake done.
func rawTLS(t *testing.T, s *Server, cfg *tls.Config) (*rawClient, *tls.Conn) {
	t.Helper()
	tc, err := tls.Dial("tcp", s.TLSAddrs()[0].String(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tc.Close() })
	return &rawClient{t: t, nc: tc, fr: amqp.NewFrameReader(tc)}, tc
}

// TestTLSListener: a client trusting the lab CA publishes and gets a
// message over AMQPS with PLAIN; the negotiated version is TLS 1.2 or
// later; connection.start offers EXTERNAL on TLS only.
func TestTLSListener(t *testing.T) {
	f := tlsLab(t)
	s, _, _ := tlsServer(t, f)
	conn, err := amqp091.DialTLS(tlsURL(s, "guest:guest@"), clientTLS(t, f.CA, "", ""))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if v := conn.ConnectionState().Version; v < tls.VersionTLS12 {
		t.Fatalf("TLS version %x", v)
	}
	ch := channel091(t, conn)
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Publish("", q.Name, false, false, amqp091.Publishing{Body: []byte("over tls")}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, func() bool {
		d, ok, err := ch.Get(q.Name, true)
		return err == nil && ok && string(d.Body) == "over tls"
	}, "message over TLS")

	r, _ := rawTLS(t, s, clientTLS(t, f.CA, "", ""))
	r.write([]byte(amqp.ProtocolHeader))
	if st := expect[*amqp.ConnectionStart](r, 0); st.Mechanisms != "PLAIN AMQPLAIN EXTERNAL" {
		t.Errorf("TLS mechanisms %q", st.Mechanisms)
	}
	p := rawDial(t, addrOf(s))
	p.write([]byte(amqp.ProtocolHeader))
	if st := expect[*amqp.ConnectionStart](p, 0); st.Mechanisms != "PLAIN AMQPLAIN" {
		t.Errorf("plain mechanisms %q", st.Mechanisms)
	}
	// TLS 1.1 is refused.
	old := clientTLS(t, f.CA, "", "")
	old.MaxVersion = tls.VersionTLS11
	if c, err := tls.Dial("tcp", s.TLSAddrs()[0].String(), old); err == nil {
		c.Close()
		t.Fatal("TLS 1.1 handshake succeeded")
	}
}

// TestTLSExternal: EXTERNAL logs in as the client certificate's CN with
// no password; the user must exist; without a client certificate, or on
// a user that does not exist, the login is refused (403 with
// authentication_failure_close) with the reason in the log.
func TestTLSExternal(t *testing.T) {
	f := tlsLab(t)
	s, _, logs := tlsServer(t, f)
	ctx := context.Background()
	url := tlsURL(s, "")

	// No such user yet.
	_, err := amqp091.DialTLS_ExternalAuth(url, clientTLS(t, f.CA, f.Client, f.ClientKey))
	wantAMQPError(t, err, amqp.AccessRefused, "") // amqp091-go replaces the text
	eventually(t, 5*time.Second, func() bool {
		return strings.Contains(logs.String(), `msg="amqp: login refused" conn=`) && strings.Contains(logs.String(), "user=openstack")
	}, "the refused login of a user that does not exist in the log")

	if err := s.AddUser(ctx, "openstack", "some password"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetPermissions(ctx, Permission{User: "openstack", VHost: "/", Configure: ".*", Write: ".*", Read: ".*"}); err != nil {
		t.Fatal(err)
	}
	conn, err := amqp091.DialTLS_ExternalAuth(url, clientTLS(t, f.CA, f.Client, f.ClientKey))
	if err != nil {
		t.Fatal(err)
	}
	ch := channel091(t, conn)
	if _, err := ch.QueueDeclare("ext", false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	infos := s.Connections()
	if len(infos) != 1 || infos[0].User != "openstack" {
		t.Fatalf("connections %+v", infos)
	}
	conn.Close()

	// No client certificate: refused with RabbitMQ's reason.
	_, err = amqp091.DialTLS_ExternalAuth(url, clientTLS(t, f.CA, "", ""))
	wantAMQPError(t, err, amqp.AccessRefused, "") // amqp091-go replaces the text
	eventually(t, 5*time.Second, func() bool {
		return strings.Contains(logs.String(), "connection peer presented no TLS (x.509) certificate")
	}, "the refusal's reason in the log")
	r0, _ := rawTLS(t, s, clientTLS(t, f.CA, "", ""))
	m, _ := r0.handshake(rawOpts{mechanism: "EXTERNAL"})
	wantConnClose(t, m, 403, "ACCESS_REFUSED - Login was refused using authentication mechanism EXTERNAL. For details see the broker logfile.", 0, 0)

	// EXTERNAL on plain TCP: not offered, the socket is closed.
	r := rawDial(t, addrOf(s))
	r.write([]byte(amqp.ProtocolHeader))
	expect[*amqp.ConnectionStart](r, 0)
	r.send(0, &amqp.ConnectionStartOk{ClientProperties: amqp.Table{}, Mechanism: "EXTERNAL", Locale: "en_US"})
	if _, err := r.fr.ReadFrame(); err == nil {
		t.Fatal("EXTERNAL on plain TCP got a reply")
	}
}

// TestTLSHandshakeRefused: a client certificate from another CA, an
// expired one, and a client that does not trust the server's CA are
// refused in the TLS handshake, and the server logs each with the peer
// and the reason.
func TestTLSHandshakeRefused(t *testing.T) {
	f := tlsLab(t)
	s, _, logs := tlsServer(t, f)
	addr := s.TLSAddrs()[0].String()
	handshake := func(cfg *tls.Config) error {
		c, err := tls.Dial("tcp", addr, cfg)
		if err != nil {
			return err
		}
		defer c.Close()
		// TLS 1.3: the server checks the client certificate after the
		// client's handshake returned; the refusal arrives on read.
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write([]byte(amqp.ProtocolHeader))
		_, err = c.Read(make([]byte, 1))
		return err
	}

	other := tlsLab(t) // another CA
	if err := handshake(clientTLS(t, f.CA, other.Client, other.ClientKey)); err == nil {
		t.Fatal("a client certificate of another CA was accepted")
	}
	eventually(t, 5*time.Second, func() bool {
		return strings.Contains(logs.String(), "TLS handshake failed") && strings.Contains(logs.String(), "unknown authority") &&
			strings.Contains(logs.String(), `reason="the client certificate is not signed by a CA of the CA file"`)
	}, "a log line for the certificate of another CA")

	ca, err := tlsutil.LoadAuthority(f.CA, f.CAKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := ca.Issue(tlsutil.Request{CommonName: "openstack", Client: true,
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "expired.pem"), filepath.Join(dir, "expired-key.pem")
	os.WriteFile(certFile, cert, 0o644)
	os.WriteFile(keyFile, key, 0o600)
	if err := handshake(clientTLS(t, f.CA, certFile, keyFile)); err == nil {
		t.Fatal("an expired client certificate was accepted")
	}
	eventually(t, 5*time.Second, func() bool {
		return strings.Contains(logs.String(), `reason="the client certificate has expired or is not valid yet"`)
	},
		"a log line for the expired certificate")

	if err := handshake(clientTLS(t, other.CA, "", "")); err == nil {
		t.Fatal("a client trusting another CA completed the handshake")
	}
	eventually(t, 5*time.Second, func() bool { return strings.Contains(logs.String(), "bad certificate") },
		"a log line for a client that does not trust us")
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "TLS handshake failed") && !strings.Contains(l, "peer=127.0.0.1:") {
			t.Errorf("no peer in %q", l)
		}
	}
}

// TestTLSReload: after the files are replaced and Reload is called, new
// handshakes see the new certificate's serial; a connection made before
// goes on working.
func TestTLSReload(t *testing.T) {
	f := tlsLab(t)
	s, store, _ := tlsServer(t, f)
	serial := func() string {
		c, err := tls.Dial("tcp", s.TLSAddrs()[0].String(), clientTLS(t, f.CA, "", ""))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	before := serial()
	if before != store.Info().Serial.String() {
		t.Fatalf("serial %s, store says %s", before, store.Info().Serial)
	}
	conn, err := amqp091.DialTLS(tlsURL(s, "guest:guest@"), clientTLS(t, f.CA, "", ""))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := tlsutil.WriteLab(filepath.Dir(f.CA), []string{"controller"}, "openstack"); err != nil {
		t.Fatal(err)
	}
	if serial() != before {
		t.Fatal("the new certificate is used before Reload")
	}
	info, err := store.Reload()
	if err != nil {
		t.Fatal(err)
	}
	if after := serial(); after == before || after != info.Serial.String() {
		t.Fatalf("serial before %s, after reload %s, store %s", before, after, info.Serial)
	}
	ch := channel091(t, conn)
	if _, err := ch.QueueDeclare("", false, true, true, false, nil); err != nil {
		t.Fatalf("the connection made before the reload: %v", err)
	}
	// A broken file: Reload fails naming it, the certificate in use stays.
	os.WriteFile(f.Server, []byte("not a certificate"), 0o644)
	if _, err := store.Reload(); err == nil || !strings.Contains(err.Error(), f.Server) {
		t.Fatalf("reload of a broken file: %v", err)
	}
	if serial() != info.Serial.String() {
		t.Fatal("a failed reload changed the certificate")
	}
}

// TestTLSHandshakeFailuresRateLimited: a storm of failed handshakes from
// one peer writes at most the limiter's burst of lines, then one
// "log lines suppressed" report with the count.
func TestTLSHandshakeFailuresRateLimited(t *testing.T) {
	f := tlsLab(t)
	s, _, logs := tlsServer(t, f)
	other := tlsLab(t)
	const n = 60
	for range n {
		c, err := tls.Dial("tcp", s.TLSAddrs()[0].String(), clientTLS(t, other.CA, "", ""))
		if err == nil {
			c.Close()
			t.Fatal("a client trusting another CA completed its handshake")
		}
	}
	eventually(t, 5*time.Second, func() bool {
		return strings.Contains(logs.String(), `msg="amqp: log lines suppressed"`)
	}, "the suppressed-lines report")
	if got := strings.Count(logs.String(), `msg="amqp: TLS handshake failed"`); got < 1 || got > n/2 {
		t.Fatalf("%d handshake failure lines for %d failures:\n%s", got, n, logs.String())
	}
}
