package amqpit

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"substrate/internal/rabbitmqtest"
	"substrate/internal/tlsutil"
)

// tlsSubstrate is a `substrate serve` with AMQPS and HTTPS on the
// certificates `substrate certs` wrote.
type tlsSubstrate struct {
	*substrate
	lab       tlsutil.LabFiles
	otherLab  tlsutil.LabFiles // another CA's
	certs     string           // the directory of lab
	certsOut  string           // what `substrate certs` printed
	expired   string           // a client certificate of lab's CA that has expired
	expKey    string
	amqps     int // ports
	https     int
	amqpsAddr string
	tg        *target // the AMQPS port, for runPy
}

// startTLSSubstrate runs `substrate certs --host controller,127.0.0.1`,
// then serve with --tls-cert, --tls-key, --tls-ca and --tls-client-auth
// request, and creates the user openstack (the client certificate's CN).
func startTLSSubstrate(t *testing.T) *tlsSubstrate {
	t.Helper()
	tmp := t.TempDir()
	bin, err := substrateBinary(tmp)
	if err != nil {
		t.Fatal(err)
	}
	ts := &tlsSubstrate{substrate: &substrate{bin: bin, tmp: tmp, dataDir: filepath.Join(tmp, "data")}}
	ts.certs = filepath.Join(tmp, "certs")
	out, err := exec.Command(bin, "certs", "--host", "controller,127.0.0.1", "--dir", ts.certs).CombinedOutput()
	if err != nil {
		t.Fatalf("substrate certs: %v\n%s", err, out)
	}
	ts.certsOut = string(out)
	ts.lab = tlsutil.LabFilesIn(ts.certs)
	if ts.otherLab, err = tlsutil.WriteLab(filepath.Join(tmp, "other"), []string{"controller"}, amqpUser); err != nil {
		t.Fatal(err)
	}
	ca, err := tlsutil.LoadAuthority(ts.lab.CA, ts.lab.CAKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := ca.Issue(tlsutil.Request{CommonName: amqpUser, Client: true,
		NotBefore: time.Now().Add(-72 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	ts.expired, ts.expKey = filepath.Join(tmp, "expired.pem"), filepath.Join(tmp, "expired-key.pem")
	os.WriteFile(ts.expired, cert, 0o644)
	os.WriteFile(ts.expKey, key, 0o600)

	ports, err := rabbitmqtest.FreePorts(6)
	if err != nil {
		t.Fatal(err)
	}
	ts.ports = map[string]int{"amqp": ports[0], "etcd-client": ports[1], "etcd-peer": ports[2], "http": ports[3]}
	ts.amqps, ts.https = ports[4], ports[5]
	ts.args = []string{"serve", "--services", "amqp,etcd,http", "--host", "127.0.0.1", "--data-dir", ts.dataDir,
		"--amqp-port", strconv.Itoa(ports[0]), "--etcd-client-port", strconv.Itoa(ports[1]),
		"--etcd-peer-port", strconv.Itoa(ports[2]), "--http-port", strconv.Itoa(ports[3]),
		"--amqps-port", strconv.Itoa(ts.amqps), "--https-port", strconv.Itoa(ts.https),
		"--tls-cert", ts.lab.Server, "--tls-key", ts.lab.ServerKey, "--tls-ca", ts.lab.CA, "--tls-client-auth", "request"}
	t.Cleanup(ts.stop)
	if err := ts.launch(fmt.Sprintf("127.0.0.1:%d", ports[0])); err != nil {
		t.Fatal(err)
	}
	ts.amqpsAddr = fmt.Sprintf("127.0.0.1:%d", ts.amqps)
	ts.tg = &target{name: "substrate-tls", host: "127.0.0.1", port: ts.amqps, user: amqpUser, password: "pw" + rabbitmqtest.RandomHex(8)}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, args := range [][]string{{"add_user", amqpUser, ts.tg.password}, {"set_permissions", amqpUser, ".*", ".*", ".*"}} {
		if out, err := ts.ctl(ctx, args...); err != nil {
			t.Fatalf("substrate ctl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	return ts
}

// serial is the serial number (hex) of the certificate a new handshake on
// addr gets.
func (ts *tlsSubstrate) serial(t *testing.T, addr string) string {
	t.Helper()
	pool, err := tlsutil.LoadCAs(ts.lab.CA)
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.Text(16)
}

// waitLog polls the server's output for a line holding every needle.
func (ts *tlsSubstrate) waitLog(t *testing.T, what string, needles ...string) string {
	t.Helper()
	line, ok := ts.findLog(10*time.Second, needles...)
	if !ok {
		t.Fatalf("no log line for %s (%q)\n%s", what, needles, rabbitmqtest.LastLines(ts.out.String(), 40))
	}
	return line
}

// findLog polls the server's output for up to d for a line holding every
// needle.
func (ts *tlsSubstrate) findLog(d time.Duration, needles ...string) (string, bool) {
	deadline := time.Now().Add(d)
	for {
		for _, line := range strings.Split(ts.out.String(), "\n") {
			ok := true
			for _, n := range needles {
				ok = ok && strings.Contains(line, n)
			}
			if ok {
				return line, true
			}
		}
		if time.Now().After(deadline) {
			return "", false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// tlsClients is what both targets get: the CA and the certificates of
// `substrate certs`, another lab's, and an expired client certificate.
type tlsClients struct {
	lab, otherLab   tlsutil.LabFiles
	expired, expKey string
}

// TestTLS runs oslo.messaging (RPC and notifications), kombu and pika over
// AMQPS with the certificates of `substrate certs`, pika with SASL
// EXTERNAL, and checks that a client trusting another CA, a client
// certificate of another CA and an expired one are refused. The same
// body runs against RabbitMQ 3.10 (listeners.ssl, verify_peer without
// fail_if_no_peer_cert, rabbitmq_auth_mechanism_ssl with
// ssl_cert_login_from = common_name), which proves it. On substrate it
// also checks the server's log line for each refusal (peer and reason),
// management HTTPS, and that SIGHUP and `substrate ctl
// reload_certificates` put new certificates in use for new handshakes on
// AMQPS and HTTPS without a restart.
func TestTLS(t *testing.T) {
	needPython(t, "oslo_messaging", "kombu", "pika")
	ts := startTLSSubstrate(t)
	for _, want := range []string{"ssl = True", "ssl_ca_file = " + ts.lab.CA, "tls-cert: " + ts.lab.Server, `ETCD_CLIENT_CERT_AUTH="true"`} {
		if !strings.Contains(ts.certsOut, want) {
			t.Errorf("substrate certs printed no %q", want)
		}
	}
	cl := &tlsClients{lab: ts.lab, otherLab: ts.otherLab, expired: ts.expired, expKey: ts.expKey}
	t.Run("substrate", func(t *testing.T) { tlsClientChecks(t, ts.tg, cl, ts.findLog) })
	t.Run("rabbitmq", func(t *testing.T) { tlsClientChecks(t, startTLSRabbit(t, cl), cl, nil) })
	// Last: it rewrites the lab's files.
	t.Run("substrate-reload", func(t *testing.T) { ts.httpsAndReload(t, cl) })
}

// startTLSRabbit starts a private rabbitmq-server with an AMQPS listener
// on the lab's server certificate and the EXTERNAL plugin, and the user
// openstack.
func startTLSRabbit(t *testing.T, cl *tlsClients) *target {
	t.Helper()
	if why := rabbitmqtest.Available(); why != "" {
		missing(t, why)
	}
	files := map[string][]byte{}
	for name, path := range map[string]string{"ca.pem": cl.lab.CA, "server.pem": cl.lab.Server, "server-key.pem": cl.lab.ServerKey} {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		files[name] = b
	}
	ports, err := rabbitmqtest.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	tg := &target{name: "rabbitmq-tls", host: "127.0.0.1", port: ports[0], user: amqpUser, password: "pw" + rabbitmqtest.RandomHex(8)}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	r, err := rabbitmqtest.Start(ctx, rabbitmqtest.Options{
		Name: "amqpit-tls", LogLevel: "info", Poll: 250 * time.Millisecond,
		Files:   files,
		Plugins: []string{"rabbitmq_auth_mechanism_ssl"},
		Conf: strings.Join([]string{
			"listeners.ssl.default = 127.0.0.1:" + strconv.Itoa(tg.port),
			"ssl_options.cacertfile = {dir}/ca.pem",
			"ssl_options.certfile = {dir}/server.pem",
			"ssl_options.keyfile = {dir}/server-key.pem",
			"ssl_options.verify = verify_peer",
			"ssl_options.fail_if_no_peer_cert = false",
			"auth_mechanisms.1 = PLAIN",
			"auth_mechanisms.2 = AMQPLAIN",
			"auth_mechanisms.3 = EXTERNAL",
			"ssl_cert_login_from = common_name",
		}, "\n"),
		Ctl: [][]string{{"add_user", amqpUser, tg.password}, {"set_permissions", amqpUser, ".*", ".*", ".*"}},
	})
	if err != nil {
		t.Fatalf("rabbitmq-server with TLS: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("rabbitmq-server's log:\n%s", r.Logs(60))
		}
		r.Stop()
	})
	return tg
}

// tlsClientChecks is the body both targets run. findLog, when not nil,
// polls the server's log for a line holding every needle.
func tlsClientChecks(t *testing.T, tg *target, cl *tlsClients, findLog func(d time.Duration, needles ...string) (string, bool)) {
	lab, other := cl.lab, cl.otherLab
	run := func(t *testing.T, ca, cert, key, scenario string) *pyResult {
		t.Helper()
		return runPy(t, tg, 60*time.Second, "tls_clients.py", ca, cert, key, scenario)
	}
	// refused runs a scenario that must fail on the client and, on
	// substrate, finds the server's line about it. The server rate-limits
	// its lines per peer IP and every client here is 127.0.0.1, so a line
	// may be suppressed after a busy second: then the scenario runs again,
	// within 30 s.
	refused := func(t *testing.T, ca, cert, key, scenario string, needles ...string) {
		t.Helper()
		t.Logf("client: %s", run(t, ca, cert, key, scenario).str(t, "error"))
		if findLog == nil {
			return
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			if line, ok := findLog(2*time.Second, needles...); ok {
				t.Logf("server: %s", line)
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("no server log line with %q", needles)
			}
			run(t, ca, cert, key, scenario)
		}
	}
	t.Run("oslo-rpc", func(t *testing.T) {
		if r := run(t, lab.CA, lab.Client, lab.ClientKey, "oslo-rpc"); r.float(t, "casts") != 5 {
			t.Errorf("casts %v", r.results)
		}
	})
	t.Run("oslo-notify", func(t *testing.T) {
		if n := run(t, lab.CA, lab.Client, lab.ClientKey, "oslo-notify").float(t, "notifications"); n != 3 {
			t.Errorf("%v notifications", n)
		}
	})
	t.Run("kombu", func(t *testing.T) {
		r := run(t, lab.CA, "-", "-", "kombu")
		if v := r.str(t, "tls_version"); v != "TLSv1.3" && v != "TLSv1.2" {
			t.Errorf("TLS version %q", v)
		}
		// EXTERNAL is offered on TLS connections, also to a client that
		// sent no certificate (rabbit_auth_mechanism_ssl's should_offer/1).
		if m := r.str(t, "mechanisms"); m != "AMQPLAIN,EXTERNAL,PLAIN" {
			t.Errorf("connection.start mechanisms %q", m)
		}
	})
	t.Run("pika", func(t *testing.T) { run(t, lab.CA, lab.Client, lab.ClientKey, "pika") })
	t.Run("pika-external", func(t *testing.T) {
		run(t, lab.CA, lab.Client, lab.ClientKey, "pika-external")
	})
	t.Run("external-without-certificate", func(t *testing.T) {
		refused(t, lab.CA, "-", "-", "external-refused", `msg="amqp: login refused"`, "mechanism=EXTERNAL",
			`reason="connection peer presented no TLS (x.509) certificate"`)
	})
	t.Run("client-trusts-another-CA", func(t *testing.T) {
		refused(t, other.CA, "-", "-", "refused", `msg="amqp: TLS handshake failed"`, "peer=127.0.0.1:",
			`reason="the client ended the handshake: does it trust the server certificate's CA?"`)
	})
	t.Run("client-certificate-of-another-CA", func(t *testing.T) {
		refused(t, lab.CA, other.Client, other.ClientKey, "refused", `msg="amqp: TLS handshake failed"`, "peer=127.0.0.1:",
			`reason="the client certificate is not signed by a CA of the CA file"`, "certificate signed by unknown authority")
	})
	t.Run("expired-client-certificate", func(t *testing.T) {
		refused(t, lab.CA, cl.expired, cl.expKey, "refused", `msg="amqp: TLS handshake failed"`, "peer=127.0.0.1:",
			`reason="the client certificate has expired or is not valid yet"`, "expired")
	})
}

// httpsAndReload checks management HTTPS, then reloads: new files and
// SIGHUP, new files and `substrate ctl reload_certificates`, a broken
// file (refused, the certificate in use stays).
func (ts *tlsSubstrate) httpsAndReload(t *testing.T, cl *tlsClients) {
	lab := cl.lab
	t.Run("https", func(t *testing.T) {
		pool, err := tlsutil.LoadCAs(lab.CA)
		if err != nil {
			t.Fatal(err)
		}
		c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
		resp, err := c.Get(fmt.Sprintf("https://localhost:%d/healthz", ts.https))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "ok\n" {
			t.Fatalf("%d %q", resp.StatusCode, b)
		}
	})
	t.Run("reload", func(t *testing.T) {
		httpsAddr := fmt.Sprintf("127.0.0.1:%d", ts.https)
		before := ts.serial(t, ts.amqpsAddr)
		// New files, as an operator would write them, then SIGHUP.
		if out, err := exec.Command(ts.bin, "certs", "--host", "controller,127.0.0.1", "--dir", ts.certs).CombinedOutput(); err != nil {
			t.Fatalf("substrate certs: %v\n%s", err, out)
		}
		if got := ts.serial(t, ts.amqpsAddr); got != before {
			t.Fatalf("serial changed to %s before any reload", got)
		}
		ts.mu.Lock()
		proc := ts.cur.cmd.Process
		ts.mu.Unlock()
		if err := proc.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		ts.waitLog(t, "the SIGHUP reload", `msg="TLS certificates reloaded"`, "trigger=SIGHUP")
		afterHUP := ts.serial(t, ts.amqpsAddr)
		if afterHUP == before || ts.serial(t, httpsAddr) != afterHUP {
			t.Fatalf("serial before %s, after SIGHUP %s on AMQPS, %s on HTTPS", before, afterHUP, ts.serial(t, httpsAddr))
		}
		// The clients still work on the new certificate (same CA).
		runPy(t, ts.tg, 60*time.Second, "tls_clients.py", lab.CA, lab.Client, lab.ClientKey, "pika-external")

		if out, err := exec.Command(ts.bin, "certs", "--host", "controller,127.0.0.1", "--dir", ts.certs).CombinedOutput(); err != nil {
			t.Fatalf("substrate certs: %v\n%s", err, out)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := ts.ctl(ctx, "reload_certificates")
		if err != nil {
			t.Fatalf("ctl reload_certificates: %v\n%s", err, out)
		}
		afterCtl := ts.serial(t, ts.amqpsAddr)
		if afterCtl == afterHUP || !strings.Contains(out, "serial "+afterCtl) {
			t.Fatalf("after ctl reload: serial %s (was %s); ctl said %q", afterCtl, afterHUP, out)
		}
		// A broken file: the reload fails naming it, the certificate stays.
		os.WriteFile(ts.lab.Server, []byte("garbage"), 0o644)
		out, err = ts.ctl(ctx, "reload_certificates")
		if err == nil || !strings.Contains(out, ts.lab.Server) {
			t.Fatalf("reload of a broken file: %v\n%s", err, out)
		}
		if got := ts.serial(t, ts.amqpsAddr); got != afterCtl {
			t.Fatalf("a failed reload changed the serial to %s", got)
		}
	})
}
