package integration

import (
	"bufio"
	"context"
	"crypto/tls"
	encbin "encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	wire "substrate/broker/amqp"
)

// TestPanicAtEachSiteIsContained (issue 9, panic containment): a binary
// built with -tags faultinject, every injection site armed through
// SUBSTRATE_TEST_FAULTS with its own marker. One offender per site sends
// a request whose subject carries the marker (a queue name, a
// connection_name, a cache key, a URL path, a ctl command, a client
// port), so that the server panics where it handles it. Meanwhile three
// clients of the other services, and of the same ones, keep working:
//
//   - an oslo.messaging RPC server and a client calling it in a loop
//     (py/reliability_loops.py oslo): no failed call, and no warning or
//     error logged by oslo.messaging, kombu or py-amqp (a reconnect would
//     be one);
//   - etcdctl put in a loop: every put exits 0;
//   - pymemcache set/get in a loop: every get returns what was set.
//
// For each site: the offender gets what the site promises (AMQP:
// connection.close 541 INTERNAL_ERROR; memcached and Redis: its socket
// closed; etcd: codes.Internal for that request; HTTP: 500; ctl: exit
// status 70), substrate_panics_total{service} goes up, and each of the
// three loops makes progress afterwards. At the end the loops stop
// cleanly, nothing else was logged at ERROR but the recovered panics, and
// the process is still up.
//
// The sites are the faults.Point calls in the tree; a new site without a
// case here fails the test (sitesInTree). SUBSTRATE_FAULTS_BIN names a
// prebuilt -tags faultinject binary; otherwise the test builds one (about
// 30 s the first time).
func TestPanicAtEachSiteIsContained(t *testing.T) {
	needPython(t, "oslo_messaging", "pymemcache")
	needCommand(t, "/usr/bin/etcdctl")
	bin := faultsBinary(t)

	// The accept site's subject is the client's address: the offender
	// dials from a port chosen now (5 digits, so no other port contains it).
	acceptPort := freePort(t)
	for acceptPort < 10000 {
		acceptPort = freePort(t)
	}
	acceptMarker := fmt.Sprintf("127.0.0.1:%d", acceptPort)

	cases := []faultCase{
		{site: "amqp.reader", service: "amqp", marker: "zq-reader", offend: offendAMQPReader},
		{site: "amqp.writer", service: "amqp", marker: "zq-writer", offend: offendAMQPWriter},
		{site: "amqp.confirm", service: "amqp", marker: "zq-confirm", offend: offendAMQPConfirm},
		{site: "amqp.close-timer", service: "amqp", marker: "zq-closetimer", offend: offendAMQPCloseTimer},
		{site: "amqp.park-wake", service: "amqp", marker: "zq-parkwake", offend: offendAMQPParkWake},
		{site: "amqp.accept", service: "amqp", marker: acceptMarker, offend: func(t *testing.T, o *offense) {
			offendAMQPAccept(t, o.s, acceptPort)
		}},
		{site: "amqp.queue-ttl", service: "amqp", marker: "zq-ttl", offend: offendAMQPQueueTTL},
		{site: "amqp.queue-expires", service: "amqp", marker: "zq-expires", offend: offendAMQPQueueExpires},
		{site: "amqp.deadletter", service: "amqp", marker: "zq-deadletter", offend: offendAMQPDeadLetter},
		{site: "memcached.conn", service: "memcached", marker: "zq-mctext", offend: offendMemcachedText},
		{site: "memcached.meta", service: "memcached", marker: "zq-mcmeta", offend: offendMemcachedMeta},
		{site: "memcached.binary", service: "memcached", marker: "zq-mcbin", offend: offendMemcachedBinary},
		{site: "etcd.request", service: "etcd", marker: "zq-etcd", offend: offendEtcd},
		{site: "redis.command", service: "redis", marker: "zq-redis", offend: offendRedis},
		{site: "ctl.run", service: "ctl", marker: "zq-ctl", offend: offendCtl},
		{site: "http.handler", service: "http", marker: "zq-http", offend: offendHTTP},
	}
	// memcached.tls needs the cache on TLS: TestPanicInTLSHandshakeIsContained.
	// A site added to the tree without a case fails.
	covered := map[string]bool{"memcached.tls": true}
	var spec []string
	for _, c := range cases {
		covered[c.site] = true
		spec = append(spec, c.site+"="+c.marker)
	}
	for _, site := range sitesInTree(t) {
		if !covered[site] {
			t.Errorf("injection site %s has no case in this test", site)
		}
	}

	s := newServer(t)
	redisPort := freePort(t)
	s.proc = startBinary(t, bin, []string{"SUBSTRATE_TEST_FAULTS=" + strings.Join(spec, ",")},
		s.args("--redis-port", fmt.Sprint(redisPort))...)
	s.waitReady(30 * time.Second)

	loops := []*clientLoop{
		startPyLoop(t, "oslo", "oslo", fmt.Sprintf("rabbit://guest:guest@127.0.0.1:%d/", s.amqpPort)),
		startPyLoop(t, "pymemcache", "memcache", "127.0.0.1", fmt.Sprint(s.memcachedPort)),
		startEtcdctlLoop(t, s.endpoint()),
	}
	for _, l := range loops {
		l.waitProgress(t, 1, 60*time.Second)
	}

	for _, c := range cases {
		t.Run(c.site, func(t *testing.T) {
			before := panicCount(t, s, c.service)
			marks := make([]int64, len(loops))
			for i, l := range loops {
				marks[i] = l.progress.Load()
			}
			t0 := time.Now()
			c.offend(t, &offense{s: s, redisPort: redisPort, marker: c.marker, service: c.service, before: before})
			var n float64
			if !poll(15*time.Second, 50*time.Millisecond, func() bool {
				n = panicCount(t, s, c.service)
				return n > before
			}) {
				t.Errorf("substrate_panics_total{service=%q} stayed at %v", c.service, n)
			}
			for i, l := range loops {
				l.waitProgress(t, marks[i]+1, 30*time.Second)
			}
			t.Logf("contained in %v; substrate_panics_total{service=%q} %v -> %v",
				time.Since(t0).Round(time.Millisecond), c.service, before, n)
		})
	}

	for _, l := range loops {
		l.finish(t)
	}
	select {
	case <-s.exited:
		t.Fatalf("substrate exited: %v", s.err)
	default:
	}
	// The only ERROR lines are the recovered panics (one each, with its
	// stack): nothing else broke. (etcd's own lines are left out: it may
	// log one about its storage version at first start, unrelated.)
	for _, line := range logLines(s.output(), "level=ERROR") {
		if !strings.Contains(line, "panic") && !strings.Contains(line, "logger=etcd") {
			t.Errorf("unexpected ERROR line: %s", line)
		}
	}
	m := metrics(t, s)
	for _, svc := range []string{"amqp", "memcached", "etcd", "redis", "ctl", "http"} {
		t.Logf("substrate_panics_total{service=%q} %v", svc, m[fmt.Sprintf("substrate_panics_total{service=%q}", svc)])
	}
}

type faultCase struct {
	site, service, marker string
	offend                func(t *testing.T, o *offense)
}

// offense is what an offender needs: the server, its marker, and the
// service's panic count before it ran.
type offense struct {
	s               *server
	redisPort       int
	marker, service string
	before          float64
}

// waitPanic waits until a panic has been counted for the offense's
// service since it began, for offenders whose site is not a connection's
// (queue timers) and that check what comes after.
func (o *offense) waitPanic(t *testing.T) {
	t.Helper()
	if !poll(15*time.Second, 20*time.Millisecond, func() bool { return panicCount(t, o.s, o.service) > o.before }) {
		t.Fatalf("no panic counted for %s within 15 s", o.service)
	}
}

func panicCount(t *testing.T, s *server, service string) float64 {
	t.Helper()
	v, ok := metricOK(t, s, fmt.Sprintf("substrate_panics_total{service=%q}", service))
	if !ok {
		t.Fatalf("/metrics has no substrate_panics_total{service=%q}", service)
	}
	return v
}

// faultsBinary is SUBSTRATE_FAULTS_BIN or a substrate built with -tags
// faultinject into the test's temporary directory.
func faultsBinary(t *testing.T) string {
	t.Helper()
	if b := os.Getenv("SUBSTRATE_FAULTS_BIN"); b != "" {
		return b
	}
	bin := filepath.Join(t.TempDir(), "substrate-faults")
	cmd := exec.Command("go", "build", "-tags", "faultinject", "-o", bin, "../cmd/substrate")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build -tags faultinject: %v\n%s", err, out)
	}
	return bin
}

// startBinary is start for another binary than the one under test.
// The package's tests do not run in parallel, so the swap is seen by this
// start call only.
func startBinary(t *testing.T, bin string, env []string, args ...string) *proc {
	t.Helper()
	saved := binary
	binary = bin
	defer func() { binary = saved }()
	return start(t, env, args...)
}

// sitesInTree lists the injection sites named in the repository's
// non-test Go files: faults.Point("site", ...) literals and Site*
// constants passed to it.
func sitesInTree(t *testing.T) []string {
	t.Helper()
	var sites []string
	seen := map[string]bool{}
	filepath.WalkDir("..", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "integration" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil || !strings.Contains(string(data), "faults.Point(") {
			return nil
		}
		for _, line := range strings.Split(string(data), "\n") {
			line = strings.TrimSpace(line)
			var site string
			if i := strings.Index(line, `faults.Point("`); i >= 0 {
				site, _, _ = strings.Cut(line[i+len(`faults.Point("`):], `"`)
			} else if strings.HasPrefix(line, "Site") && strings.Contains(line, `= "`) {
				_, rest, _ := strings.Cut(line, `= "`)
				site, _, _ = strings.Cut(rest, `"`)
			}
			if site != "" && strings.Contains(site, ".") && !seen[site] {
				seen[site] = true
				sites = append(sites, site)
			}
		}
		return nil
	})
	if len(sites) == 0 {
		t.Fatal("no faults.Point sites found in the tree")
	}
	return sites
}

// ---- the loops that must not notice ----

// clientLoop is a client running in the background, reporting progress.
type clientLoop struct {
	name     string
	progress atomic.Int64
	stop     func() error // ends the loop and returns its failure
	mu       sync.Mutex
	log      strings.Builder
	failed   chan struct{} // closed on the first failure
	fail     error
}

func (l *clientLoop) failWith(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fail == nil {
		l.fail = err
		close(l.failed)
	}
}

// waitProgress waits until the loop has done at least n units.
func (l *clientLoop) waitProgress(t *testing.T, n int64, d time.Duration) {
	t.Helper()
	if !poll(d, 20*time.Millisecond, func() bool {
		select {
		case <-l.failed:
			return true
		default:
		}
		return l.progress.Load() >= n
	}) {
		t.Fatalf("%s loop stalled at %d (want %d) for %v", l.name, l.progress.Load(), n, d)
	}
	select {
	case <-l.failed:
		l.mu.Lock()
		defer l.mu.Unlock()
		t.Fatalf("%s loop failed: %v\n%s", l.name, l.fail, l.log.String())
	default:
	}
}

func (l *clientLoop) finish(t *testing.T) {
	t.Helper()
	if err := l.stop(); err != nil {
		l.mu.Lock()
		defer l.mu.Unlock()
		t.Errorf("%s loop: %v\n%s", l.name, err, l.log.String())
		return
	}
	t.Logf("%s loop: %d iterations, no error", l.name, l.progress.Load())
}

// startPyLoop runs py/reliability_loops.py ARGS; its "progress N" lines
// count 20 iterations each, so progress is kept in those units.
func startPyLoop(t *testing.T, name string, args ...string) *clientLoop {
	t.Helper()
	l := &clientLoop{name: name, failed: make(chan struct{})}
	cmd := exec.Command(python, append([]string{filepath.Join("py", "reliability_loops.py")}, args...)...)
	cmd.Env = append(os.Environ(), "PYTHONUNBUFFERED=1", "PYTHONDONTWRITEBYTECODE=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = &lockedWriter{l: l}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan struct{})
	var last string
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			last = line
			l.mu.Lock()
			l.log.WriteString(line + "\n")
			l.mu.Unlock()
			var n int64
			if _, err := fmt.Sscanf(line, "progress %d", &n); err == nil {
				l.progress.Store(n / 20)
			} else if strings.HasPrefix(line, "FAIL:") {
				l.failWith(errors.New(line))
			}
		}
	}()
	var once sync.Once
	var stopErr error
	l.stop = func() error {
		once.Do(func() {
			stdin.Close()
			done := make(chan error, 1)
			go func() { <-lines; done <- cmd.Wait() }()
			select {
			case err := <-done:
				if err != nil {
					stopErr = fmt.Errorf("exit: %v", err)
				} else if last != "ok" {
					stopErr = fmt.Errorf("last line %q, want ok", last)
				}
			case <-time.After(60 * time.Second):
				cmd.Process.Kill()
				stopErr = errors.New("did not stop within 60 s")
			}
		})
		return stopErr
	}
	t.Cleanup(func() { l.stop() })
	return l
}

type lockedWriter struct{ l *clientLoop }

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.l.mu.Lock()
	defer w.l.mu.Unlock()
	if w.l.log.Len() < 1<<20 {
		w.l.log.Write(p)
	}
	return len(p), nil
}

// startEtcdctlLoop runs Debian's etcdctl put in a loop; each put must
// exit 0 within 10 s.
func startEtcdctlLoop(t *testing.T, endpoint string) *clientLoop {
	t.Helper()
	l := &clientLoop{name: "etcdctl", failed: make(chan struct{})}
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-quit:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			out, err := exec.CommandContext(ctx, "/usr/bin/etcdctl", "--endpoints", endpoint,
				"put", fmt.Sprintf("reliability/loop/%d", i), fmt.Sprintf("v%d", i)).CombinedOutput()
			cancel()
			if err != nil || strings.TrimSpace(string(out)) != "OK" {
				l.failWith(fmt.Errorf("etcdctl put %d: %v: %s", i, err, out))
				return
			}
			l.progress.Add(1)
		}
	}()
	var once sync.Once
	l.stop = func() error {
		once.Do(func() { close(quit); <-done })
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.fail
	}
	t.Cleanup(func() { l.stop() })
	return l
}

// ---- the offenders ----

// want541 checks that err (from a dial or a call) or the connection's
// close notification is connection.close 541.
func want541(t *testing.T, err error, closed <-chan *amqp.Error) {
	t.Helper()
	var ae *amqp.Error
	if errors.As(err, &ae) && ae.Code == amqp.InternalError {
		return
	}
	if closed != nil {
		select {
		case e := <-closed:
			if e != nil && e.Code == amqp.InternalError {
				return
			}
			t.Errorf("connection closed with %v (call: %v), want 541 INTERNAL_ERROR", e, err)
			return
		case <-time.After(10 * time.Second):
		}
	}
	t.Errorf("no connection.close 541 (call: %v)", err)
}

func dialNamed(s *server, name, pass string) (*amqp.Connection, error) {
	return amqp.DialConfig(fmt.Sprintf("amqp://guest:%s@127.0.0.1:%d/", pass, s.amqpPort), amqp.Config{
		Dial:       amqp.DefaultDial(5 * time.Second),
		Properties: amqp.Table{"connection_name": name},
	})
}

func offendAMQPReader(t *testing.T, o *offense) {
	s, marker := o.s, o.marker
	conn, err := dialAMQP(s, "guest", "guest")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	_, err = ch.QueueDeclare(marker, false, true, false, false, nil)
	want541(t, err, closed)
}

func offendAMQPWriter(t *testing.T, o *offense) {
	s, marker := o.s, o.marker
	// The writer panics at its first write once the connection is named:
	// the handshake itself ends with 541.
	conn, err := dialNamed(s, marker, "guest")
	if err == nil {
		defer conn.Close()
		closed := conn.NotifyClose(make(chan *amqp.Error, 1))
		_, err = conn.Channel()
		want541(t, err, closed)
		return
	}
	if !strings.Contains(err.Error(), "541") && !strings.Contains(err.Error(), "INTERNAL_ERROR") {
		t.Errorf("dial as %s: %v, want connection.close 541", marker, err)
	}
}

func offendAMQPConfirm(t *testing.T, o *offense) {
	s, marker := o.s, o.marker
	conn, err := dialNamed(s, marker, "guest")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("rel.fault.confirm", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	dc, err := ch.PublishWithDeferredConfirm("", "rel.fault.confirm", false, false,
		amqp.Publishing{DeliveryMode: amqp.Persistent, Body: []byte("x")})
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var ack bool
		ack, err = dc.WaitContext(ctx)
		cancel()
		if ack {
			t.Errorf("the publish was confirmed; the confirm site did not run")
		}
	}
	want541(t, nil, closed)
}

func offendAMQPCloseTimer(t *testing.T, o *offense) {
	// A connection error makes the server send connection.close and arm
	// its close timer (2 s for close-ok); this client never answers, so
	// the timer fires, and panics.
	r := dialRawNamed(t, o.s.amqpPort, o.marker)
	r.send(7, &wire.BasicQos{PrefetchCount: 1}) // channel 7 was never opened: 504
	m := r.expect(0)
	if cl, ok := m.(*wire.ConnectionClose); !ok || cl.ReplyCode != 504 {
		t.Fatalf("got %v, want connection.close 504", m)
	}
	o.waitPanic(t)
	r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, r.c); err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("the connection whose close timer panicked: %v, want it closed", err)
	}
}

func offendAMQPParkWake(t *testing.T, o *offense) {
	// Silent for a second, the connection's reader parks; the client's
	// heartbeat (every 4 s when idle) wakes it, and the wake panics. The
	// client waits for that, sending nothing else.
	conn, err := amqp.DialConfig(fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", o.s.amqpPort), amqp.Config{
		Dial:       amqp.DefaultDial(5 * time.Second),
		Heartbeat:  4 * time.Second,
		Properties: amqp.Table{"connection_name": o.marker},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	want541(t, nil, conn.NotifyClose(make(chan *amqp.Error, 1)))
}

func offendAMQPAccept(t *testing.T, s *server, port int) {
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}}
	c, err := d.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", s.amqpPort))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "AMQP\x00\x00\x09\x01")
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := io.Copy(io.Discard, c)
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("the refused socket: %v after %d bytes, want it closed", err, n)
	} else if n > 0 {
		t.Errorf("the connection whose accept panicked got %d bytes (a connection.start?)", n)
	}
}

// queueOffender declares queue marker with args on a fresh connection and
// returns the channel; the connection must stay open (a queue's panic is
// not a connection's).
func queueOffender(t *testing.T, s *server, marker string, args amqp.Table) (*amqp.Channel, <-chan *amqp.Error) {
	conn, err := dialAMQP(s, "guest", "guest")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(marker, false, false, false, false, args); err != nil {
		t.Fatal(err)
	}
	return ch, closed
}

func offendAMQPQueueTTL(t *testing.T, o *offense) {
	s, marker := o.s, o.marker
	ch, closed := queueOffender(t, s, marker, amqp.Table{"x-message-ttl": int32(20)})
	if err := ch.Publish("", marker, false, false, amqp.Publishing{Body: []byte("expires")}); err != nil {
		t.Fatal(err)
	}
	o.waitPanic(t)
	// Not wedged: the queue answers, and the publisher's connection is open.
	if _, err := ch.QueueDeclarePassive(marker, false, false, false, false, amqp.Table{"x-message-ttl": int32(20)}); err != nil {
		t.Errorf("the queue whose TTL timer panicked: %v", err)
	}
	select {
	case e := <-closed:
		t.Errorf("the publisher's connection was closed: %v", e)
	default:
	}
}

func offendAMQPQueueExpires(t *testing.T, o *offense) {
	s, marker := o.s, o.marker
	queueOffender(t, s, marker, amqp.Table{"x-expires": int32(200)})
}

// offendAMQPDeadLetter reaches the amqp.deadletter site where dead
// letters are routed (vhost.publishDead): a message rejected without
// requeue from a queue with a dead-letter exchange. The panic is the
// queue's: the rejecting client's connection stays open and its channel
// goes on.
func offendAMQPDeadLetter(t *testing.T, o *offense) {
	s, marker := o.s, o.marker
	ch, closed := queueOffender(t, s, marker, amqp.Table{
		"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "rel.fault.dead"})
	if _, err := ch.QueueDeclare("rel.fault.dead", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.Publish("", marker, false, false, amqp.Publishing{Body: []byte("rejected, then dead-lettered")}); err != nil {
		t.Fatal(err)
	}
	var d amqp.Delivery
	if !poll(10*time.Second, 20*time.Millisecond, func() bool {
		var ok bool
		var err error
		d, ok, err = ch.Get(marker, false)
		if err != nil {
			t.Fatalf("basic.get: %v", err)
		}
		return ok
	}) {
		t.Fatal("basic.get: the message never arrived")
	}
	if err := d.Reject(false); err != nil {
		t.Fatal(err)
	}
	o.waitPanic(t)
	site := "injected panic at amqp.deadletter"
	if !poll(15*time.Second, 20*time.Millisecond, func() bool { return len(logLines(s.output(), site)) > 0 }) {
		t.Errorf("no %q logged", site)
	}
	if _, err := ch.QueueDeclarePassive(marker, false, false, false, false, nil); err != nil {
		t.Errorf("the rejecting channel after the panic: %v", err)
	}
	select {
	case e := <-closed:
		t.Errorf("the rejecting connection was closed: %v", e)
	default:
	}
}

// wantClosed reads from c until EOF or a reset within 10 s.
func wantClosed(t *testing.T, c net.Conn, what string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.Copy(io.Discard, c)
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("%s: %v, want the connection closed", what, err)
	}
}

func offendMemcachedText(t *testing.T, o *offense) {
	s, marker := o.s, o.marker
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", s.memcachedPort))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "get %s\r\n", marker)
	wantClosed(t, c, "memcached text get")
}

func offendMemcachedMeta(t *testing.T, o *offense) {
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", o.s.memcachedPort))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "mg %s v\r\n", o.marker)
	wantClosed(t, c, "memcached meta get")
}

func offendMemcachedBinary(t *testing.T, o *offense) {
	s, marker := o.s, o.marker
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", s.memcachedPort))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// A binary-protocol GET: magic 0x80, opcode 0x00, key length, no
	// extras, total body = the key.
	req := make([]byte, 24+len(marker))
	req[0] = 0x80
	encbin.BigEndian.PutUint16(req[2:], uint16(len(marker)))
	encbin.BigEndian.PutUint32(req[8:], uint32(len(marker)))
	copy(req[24:], marker)
	c.Write(req)
	wantClosed(t, c, "memcached binary get")
}

func offendEtcd(t *testing.T, o *offense) {
	s, marker := o.s, o.marker
	c := client(t, s.endpoint())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := c.Put(ctx, marker, "v")
	if status.Code(err) != codes.Internal {
		t.Errorf("put %s: %v, want codes.Internal", marker, err)
	}
	// The same client goes on.
	if _, err := c.Put(ctx, "rel.fault.after", "v"); err != nil {
		t.Errorf("the next put on the same client: %v", err)
	}
}

func offendRedis(t *testing.T, o *offense) {
	marker := o.marker
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", o.redisPort))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$1\r\n1\r\n", len(marker), marker)
	wantClosed(t, c, "redis SET")
}

func offendCtl(t *testing.T, o *offense) {
	s, marker := o.s, o.marker
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, "ctl", "--data-dir", s.dataDir, "list_queues", marker)
	cmd.Env = childEnv()
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 70 || !strings.Contains(string(out), "internal error") {
		t.Errorf("ctl list_queues %s: %v, want exit status 70 and an internal error:\n%s", marker, err, out)
	}
}

func offendHTTP(t *testing.T, o *offense) {
	s, marker := o.s, o.marker
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/%s", s.httpPort, marker))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 500 {
		t.Errorf("GET /%s: %s, want 500", marker, resp.Status)
	}
	resp, err = http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", s.httpPort))
	if err != nil || resp.StatusCode != 200 {
		t.Errorf("GET /healthz after the panic: %v %v", resp, err)
	}
	if resp != nil {
		resp.Body.Close()
	}
}

// TestPanicInTLSHandshakeIsContained is TestPanicAtEachSiteIsContained for
// the memcached.tls site, which needs the cache on TLS (serve with
// --memcached-options "-Z ..."): the pymemcache loop speaks TLS, and the
// offender's ClientHello names the marker as its server name (SNI). It
// gets its handshake refused; the loops go on.
func TestPanicInTLSHandshakeIsContained(t *testing.T) {
	needPython(t, "oslo_messaging", "pymemcache")
	needCommand(t, "/usr/bin/etcdctl")
	bin := faultsBinary(t)
	caFile, certFile, keyFile := writeTestPKI(t, t.TempDir())
	const marker = "zq-tls.example"
	s := newServer(t)
	s.proc = startBinary(t, bin, []string{"SUBSTRATE_TEST_FAULTS=memcached.tls=" + marker},
		s.args("--memcached-options", "-Z -o ssl_chain_cert="+certFile+",ssl_key="+keyFile)...)
	s.waitReady(30 * time.Second)
	loops := []*clientLoop{
		startPyLoop(t, "oslo", "oslo", fmt.Sprintf("rabbit://guest:guest@127.0.0.1:%d/", s.amqpPort)),
		startPyLoop(t, "pymemcache over TLS", "memcache", "127.0.0.1", fmt.Sprint(s.memcachedPort), caFile),
		startEtcdctlLoop(t, s.endpoint()),
	}
	for _, l := range loops {
		l.waitProgress(t, 1, 60*time.Second)
	}
	before := panicCount(t, s, "memcached")
	marks := make([]int64, len(loops))
	for i, l := range loops {
		marks[i] = l.progress.Load()
	}
	t0 := time.Now()
	// The certificate is not for the marker's name: only the server's
	// side of the handshake matters here.
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", fmt.Sprintf("127.0.0.1:%d", s.memcachedPort),
		&tls.Config{ServerName: marker, InsecureSkipVerify: true})
	if err == nil {
		c.Close()
		t.Errorf("the handshake naming %s succeeded; the site did not run", marker)
	}
	var n float64
	if !poll(15*time.Second, 50*time.Millisecond, func() bool {
		n = panicCount(t, s, "memcached")
		return n > before
	}) {
		t.Errorf("substrate_panics_total{service=\"memcached\"} stayed at %v", n)
	}
	for i, l := range loops {
		l.waitProgress(t, marks[i]+1, 30*time.Second)
	}
	t.Logf("contained in %v (the offender: %v); substrate_panics_total{service=\"memcached\"} %v -> %v",
		time.Since(t0).Round(time.Millisecond), err, before, n)
	for _, l := range loops {
		l.finish(t)
	}
}
