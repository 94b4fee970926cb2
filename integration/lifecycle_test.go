package integration

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestBadConfiguration: each mistake ends startup with one line naming the
// culprit and a non-zero status, before anything listens.
func TestBadConfiguration(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyPort := strconv.Itoa(busy.Addr().(*net.TCPAddr).Port)

	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	notDir := write("plain-file", "")
	badYAML := write("bad.yaml", "host: [127.0.0.1\n")
	unknownKey := write("unknown.yaml", "amqp_port: 5672\n")
	badURL := write("etcd.conf", "ETCD_NAME=\"controller\"\nETCD_LISTEN_CLIENT_URLS=\"http//10.0.0.11:2379\"\n")
	badLine := write("etcd-line.conf", "ETCD_NAME controller\n")

	for _, tc := range []struct {
		name     string
		env      []string
		args     []string // after serve's port/data-dir flags
		status   int
		want     string
		httpBusy bool // the http port (started last) is the busy one
		bare     bool // no port flags: the environment must not be shadowed
	}{
		{name: "unknown flag", args: []string{"--bogus"}, status: 2, want: "flag provided but not defined: -bogus"},
		{name: "stray argument", args: []string{"now"}, status: 2, want: `unexpected argument "now"`},
		{name: "port in use", httpBusy: true, status: 1, want: "http port: listen tcp 127.0.0.1:" + busyPort + ": bind: address already in use"},
		{name: "unreadable config", args: []string{"--config", filepath.Join(dir, "missing.yaml")}, status: 1, want: "missing.yaml: no such file or directory"},
		{name: "malformed config", args: []string{"--config", badYAML}, status: 1, want: "bad.yaml"},
		{name: "unknown config key", args: []string{"--config", unknownKey}, status: 1, want: `unknown key "amqp_port"`},
		{name: "malformed etcd.conf URL", args: []string{"--etcd-config", badURL}, status: 1, want: "ETCD_LISTEN_CLIENT_URLS"},
		{name: "malformed etcd.conf line", args: []string{"--etcd-config", badLine}, status: 1, want: "etcd-line.conf:1:"},
		{name: "unreadable etcd.conf", args: []string{"--etcd-config", filepath.Join(dir, "nope.conf")}, status: 1, want: "nope.conf: no such file"},
		{name: "data dir not writable", args: []string{"--data-dir", filepath.Join(notDir, "data")}, status: 1, want: "not a directory"},
		{name: "unknown service", args: []string{"--services", "etcd,kafka"}, status: 1, want: `unknown service "kafka"`},
		{name: "bad env value", env: []string{"SUBSTRATE_AMQP_PORT=lots"}, bare: true, status: 1, want: `invalid value "lots" for SUBSTRATE_AMQP_PORT`},
		{name: "bad log level", args: []string{"--log-level", "loud"}, status: 1, want: `--log-level: unknown log level "loud"`},
		{name: "bad memcached option", args: []string{"--memcached-options", "-c 0"}, status: 1, want: "Maximum connections must be greater than 0"},
		{name: "memcached TLS without a certificate", args: []string{"--memcached-options", "-Z"}, status: 1, want: "TLS: Error loading the certificate chain"},
		{name: "memcached TLS with a missing certificate file", args: []string{"--memcached-options", "-Z -o ssl_chain_cert=" + filepath.Join(dir, "nope.pem")}, status: 1, want: "TLS: Error loading the certificate chain"},
		{name: "sasl without password file", args: []string{"--memcached-options", "-S"}, status: 1, want: "MEMCACHED_SASL_PWDB"},
		{name: "unreadable memcached config", args: []string{"--memcached-config", filepath.Join(dir, "nope")}, status: 1, want: "--memcached-config"},
		{name: "unresolvable host", args: []string{"--host", "no!such!host"}, status: 1, want: "no!such!host"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t)
			if tc.httpBusy {
				s.httpPort, _ = strconv.Atoi(busyPort)
			}
			args := s.args(tc.args...)
			if tc.bare {
				args = append([]string{"serve", "--data-dir", s.dataDir}, tc.args...)
			}
			p := start(t, tc.env, args...)
			if code := p.wait(10 * time.Second); code != tc.status {
				t.Errorf("exit status %d, want %d", code, tc.status)
			}
			out := p.output()
			if strings.Count(out, "\n") != 1 || !strings.HasPrefix(out, "substrate serve: ") || !strings.Contains(out, tc.want) {
				t.Errorf("want one line naming %q, got:\n%s", tc.want, out)
			}
			// Nothing was started: etcd (first in order) never created its member.
			if _, err := os.Stat(filepath.Join(s.dataDir, "etcd", "member")); err == nil {
				t.Error("etcd started before the configuration error was found")
			}
		})
	}

	t.Run("etcd subcommand bad flag", func(t *testing.T) {
		p := start(t, nil, "etcd", "--no-such-flag")
		if code := p.wait(10 * time.Second); code != 2 {
			t.Errorf("exit status %d, want 2", code)
		}
		if out := p.output(); strings.Count(out, "\n") != 1 || !strings.Contains(out, "no-such-flag") {
			t.Errorf("output:\n%s", out)
		}
	})
}

// TestSignalsShutDownGracefully: SIGTERM and SIGINT stop every service in
// reverse order well within 10 s and exit 0.
func TestSignalsShutDownGracefully(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			s := serve(t)
			t0 := time.Now()
			s.cmd.Process.Signal(sig)
			if code := s.wait(10 * time.Second); code != 0 {
				t.Fatalf("exit status %d:\n%s", code, s.output())
			}
			if d := time.Since(t0); d > 10*time.Second {
				t.Fatalf("shutdown took %v", d)
			}
			out := s.output()
			if !strings.Contains(out, `msg="shutting down"`) || !strings.Contains(out, "msg=stopped") {
				t.Fatalf("output:\n%s", out)
			}
			// quiet by default: etcd's normal-shutdown error lines are demoted.
			if strings.Contains(out, "level=ERROR") || strings.Contains(out, "level=WARN") {
				t.Fatalf("noise in a normal start and stop:\n%s", out)
			}
			for _, port := range []int{s.clientPort, s.peerPort, s.httpPort} {
				l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
				if err != nil {
					t.Fatalf("port %d still bound after exit: %v", port, err)
				}
				l.Close()
			}
		})
	}
}

// TestRestartKeepsData: a restart with the same data dir serves what was
// written before it.
func TestRestartKeepsData(t *testing.T) {
	s := serve(t)
	c := client(t, s.endpoint())
	if _, err := c.Put(ctxT(t, 10*time.Second), "survivor", "yes"); err != nil {
		t.Fatal(err)
	}
	c.Close()
	s.cmd.Process.Signal(syscall.SIGTERM)
	if code := s.wait(10 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	s.restart(t)
	c = client(t, s.endpoint())
	resp, err := c.Get(ctxT(t, 10*time.Second), "survivor")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "yes" {
		t.Fatalf("after restart: %v %v", resp, err)
	}
}

// TestSettingsPrecedence: flag over SUBSTRATE_* over config file over default.
func TestSettingsPrecedence(t *testing.T) {
	s := newServer(t)
	fileHTTP, envHTTP, envClient := freePort(t), freePort(t), freePort(t)
	cfg := filepath.Join(t.TempDir(), "substrate.yaml")
	body := fmt.Sprintf("# substrate config\nhost: [127.0.0.1]\ndata-dir: %s\nhttp-port: %d\netcd-client-port: %d\netcd-peer-port: %d\nservices: etcd,http\n", s.dataDir, fileHTTP, s.clientPort, s.peerPort)
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	flagHTTP := s.httpPort
	env := []string{
		"SUBSTRATE_CONFIG=" + cfg,
		fmt.Sprintf("SUBSTRATE_ETCD_CLIENT_PORT=%d", envClient), // beats the file
		fmt.Sprintf("SUBSTRATE_HTTP_PORT=%d", envHTTP),          // loses to the flag
	}
	p := start(t, env, "serve", "--http-port", strconv.Itoa(flagHTTP))
	p.waitReady(30 * time.Second)
	for port, want := range map[int]bool{flagHTTP: true, envHTTP: false, fileHTTP: false} {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", port))
		if err == nil {
			resp.Body.Close()
		}
		if (err == nil) != want {
			t.Errorf("http on %d: err=%v, want listening=%v", port, err, want)
		}
	}
	c := client(t, fmt.Sprintf("127.0.0.1:%d", envClient))
	if _, err := c.Put(ctxT(t, 10*time.Second), "k", "v"); err != nil {
		t.Fatalf("etcd not on the env's port: %v", err)
	}
}

// TestServicesSelection: --services runs what it names and nothing else.
func TestServicesSelection(t *testing.T) {
	s := serve(t, "--services", "etcd,memcached")
	if !strings.Contains(s.output(), "services=etcd,memcached ") {
		t.Errorf("ready line does not list exactly etcd,memcached:\n%s", s.output())
	}
	for _, port := range []int{s.httpPort, s.amqpPort} {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			t.Errorf("port %d accepts although --services left its service out", port)
		}
	}
}

// TestSystemdNotify: a unit of Type=notify (Debian's etcd.service) hears
// READY=1 once every listener accepts, and STOPPING=1 at shutdown.
func TestSystemdNotify(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	s := newServer(t)
	s.proc = start(t, []string{"NOTIFY_SOCKET=" + sock}, s.args()...)
	buf := make([]byte, 256)
	read := func() string {
		conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("no notification: %v\n%s", err, s.output())
		}
		return string(buf[:n])
	}
	if msg := read(); msg != "READY=1" {
		t.Fatalf("first notification %q", msg)
	}
	s.waitReady(5 * time.Second)
	s.cmd.Process.Signal(syscall.SIGTERM)
	if msg := read(); msg != "STOPPING=1" {
		t.Fatalf("second notification %q", msg)
	}
	if code := s.wait(10 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

// TestSecondServeOnBusyDataDir: a second serve (or `substrate etcd`) on a
// data directory in use exits non-zero within 2 s with one line naming
// the holder's PID, before binding anything.
func TestSecondServeOnBusyDataDir(t *testing.T) {
	first := serve(t)
	holder := fmt.Sprintf("in use by substrate pid %d", first.cmd.Process.Pid)

	second := newServer(t)
	second.dataDir = first.dataDir
	t0 := time.Now()
	p := start(t, nil, second.args()...)
	code := p.wait(10 * time.Second)
	if d := time.Since(t0); d > 2*time.Second {
		t.Errorf("second serve took %v to exit", d)
	}
	out := p.output()
	if code == 0 || strings.Count(out, "\n") != 1 || !strings.Contains(out, "data directory "+first.dataDir+" is "+holder) {
		t.Errorf("exit %d, want non-zero and one line naming %q:\n%s", code, holder, out)
	}
	for _, port := range []int{second.clientPort, second.peerPort, second.httpPort, second.amqpPort, second.memcachedPort} {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Errorf("port %d bound by the refused serve: %v", port, err)
			continue
		}
		l.Close()
	}

	// etcd alone on serve's etcd directory.
	p = start(t, nil, "etcd", "--data-dir", filepath.Join(first.dataDir, "etcd"),
		"--listen-client-urls", fmt.Sprintf("http://127.0.0.1:%d", freePort(t)),
		"--advertise-client-urls", fmt.Sprintf("http://127.0.0.1:%d", freePort(t)),
		"--listen-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", freePort(t)))
	code = p.wait(10 * time.Second)
	if out := p.output(); code == 0 || !strings.Contains(out, holder) {
		t.Errorf("substrate etcd on serve's etcd dir: exit %d:\n%s", code, out)
	}

	// The first one still serves, and a stopped holder frees the directory.
	c := client(t, first.endpoint())
	if _, err := c.Put(ctxT(t, 10*time.Second), "still", "here"); err != nil {
		t.Fatal(err)
	}
	first.cmd.Process.Signal(syscall.SIGTERM)
	if code := first.wait(10 * time.Second); code != 0 {
		t.Fatalf("first serve exit %d", code)
	}
	second.proc = start(t, nil, second.args()...)
	second.waitReady(30 * time.Second)
}

// TestSigtermWhileWaitingForQuorum: a member of a three-member cluster
// whose peers do not exist waits for quorum at startup; SIGTERM ends it
// within 10 s.
func TestSigtermWhileWaitingForQuorum(t *testing.T) {
	s := newServer(t)
	conf := filepath.Join(t.TempDir(), "etcd.conf")
	// b and c on their own addresses: a broker cluster needs one per member.
	body := fmt.Sprintf("ETCD_NAME=\"a\"\nETCD_INITIAL_CLUSTER=\"a=http://127.0.0.1:%d,b=http://127.0.0.12:%d,c=http://127.0.0.13:%d\"\n",
		s.peerPort, freePort(t), freePort(t))
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	s.proc = start(t, nil, s.args("--etcd-config", conf)...)
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(s.output(), "waiting for its cluster to reach quorum") {
		if time.Now().After(deadline) {
			t.Fatalf("no quorum wait:\n%s", s.output())
		}
		select {
		case <-s.exited:
			t.Fatalf("exited while waiting for quorum:\n%s", s.output())
		case <-time.After(20 * time.Millisecond):
		}
	}
	t0 := time.Now()
	s.cmd.Process.Signal(syscall.SIGTERM)
	s.wait(15 * time.Second)
	if d := time.Since(t0); d > 10*time.Second {
		t.Errorf("SIGTERM during the quorum wait took %v", d)
	}
	t.Logf("exit %d after %v", s.cmd.ProcessState.ExitCode(), time.Since(t0).Round(time.Millisecond))
}
