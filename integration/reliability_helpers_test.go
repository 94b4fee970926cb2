package integration

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	wire "substrate/broker/amqp"
)

// Helpers of the reliability tests (reliability_*_test.go, issue 9): the
// server's memory and goroutines as the OS and /metrics see them, file
// descriptor limits, polling, and a raw AMQP client for what no client
// library will send (a content header and then nothing).

// metrics scrapes the server's /metrics and returns every sample by its
// name with labels as written, e.g. `substrate_panics_total{service="amqp"}`.
func metrics(t *testing.T, s *server) map[string]float64 {
	t.Helper()
	m, err := scrape(s.httpPort)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func scrape(port int) (map[string]float64, error) {
	// No keep-alive: a pooled connection would be a server goroutine of
	// the test's own making in go_goroutines.
	c := http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("/metrics: %s", resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out, sc.Err()
}

// metricOK returns one sample and whether /metrics has it.
func metricOK(t *testing.T, s *server, name string) (float64, bool) {
	t.Helper()
	v, ok := metrics(t, s)[name]
	return v, ok
}

// goroutines is the server's go_goroutines.
func goroutines(t *testing.T, s *server) int {
	t.Helper()
	v, ok := metricOK(t, s, "go_goroutines")
	if !ok {
		t.Fatal("/metrics has no go_goroutines")
	}
	return int(v)
}

// raiseNoFile raises this process's soft RLIMIT_NOFILE to at least n (up
// to the hard limit) and fails if that is not enough. Children started
// afterwards inherit it.
func raiseNoFile(t *testing.T, n uint64) {
	t.Helper()
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	if rl.Cur >= n {
		return
	}
	if rl.Max < n {
		rl.Max = n // root may raise the hard limit too
	}
	rl.Cur = n
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatalf("RLIMIT_NOFILE to %d: %v", n, err)
	}
}

// childNoFile is the soft "Max open files" of a running process.
func childNoFile(t *testing.T, pid int) uint64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "Max open files") {
			f := strings.Fields(strings.TrimPrefix(line, "Max open files"))
			if len(f) > 0 {
				if f[0] == "unlimited" {
					return 1 << 62
				}
				n, err := strconv.ParseUint(f[0], 10, 64)
				if err == nil {
					return n
				}
			}
		}
	}
	t.Fatalf("no Max open files in /proc/%d/limits", pid)
	return 0
}

// poll calls cond every interval until it returns true or d has passed;
// it returns cond's last answer.
func poll(d, interval time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(interval)
	}
}

// rawConn is an AMQP 0-9-1 client written frame by frame with the
// broker's codec, for sequences a client library does not send.
type rawConn struct {
	t        *testing.T
	c        net.Conn
	fr       *wire.FrameReader
	frameMax uint32
	out      []byte
}

// dialRaw connects as guest to vhost "/" and finishes the handshake with
// heartbeats off.
func dialRaw(t *testing.T, port int) *rawConn {
	t.Helper()
	return dialRawNamed(t, port, "")
}

// dialRawNamed is dialRaw with a connection_name client property (when
// not empty).
func dialRawNamed(t *testing.T, port int, name string) *rawConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	r := &rawConn{t: t, c: c, fr: wire.NewFrameReader(c)}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, wire.ProtocolHeader); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.expect(0).(*wire.ConnectionStart); !ok {
		t.Fatal("no connection.start")
	}
	props := wire.Table{"product": "reliability raw"}
	if name != "" {
		props["connection_name"] = name
	}
	r.send(0, &wire.ConnectionStartOk{ClientProperties: props,
		Mechanism: "PLAIN", Response: "\x00guest\x00guest", Locale: "en_US"})
	tune, ok := r.expect(0).(*wire.ConnectionTune)
	if !ok {
		t.Fatal("no connection.tune")
	}
	r.frameMax = tune.FrameMax
	r.fr.SetFrameMax(tune.FrameMax)
	r.send(0, &wire.ConnectionTuneOk{ChannelMax: tune.ChannelMax, FrameMax: tune.FrameMax})
	r.send(0, &wire.ConnectionOpen{VirtualHost: "/"})
	if _, ok := r.expect(0).(*wire.ConnectionOpenOk); !ok {
		t.Fatal("no connection.open-ok")
	}
	c.SetDeadline(time.Time{})
	return r
}

// send writes one method frame.
func (r *rawConn) send(ch uint16, m wire.Method) {
	r.t.Helper()
	b, err := wire.AppendMethodFrame(r.out[:0], ch, m)
	if err != nil {
		r.t.Fatal(err)
	}
	r.out = b
	if _, err := r.c.Write(b); err != nil {
		r.t.Fatalf("sending %T: %v", m, err)
	}
}

// header writes a basic.publish to the default exchange with routing key
// key and a content header declaring size bytes, and no body.
func (r *rawConn) header(ch uint16, key string, size uint64) {
	r.t.Helper()
	b, err := wire.AppendMethodFrame(r.out[:0], ch, &wire.BasicPublish{RoutingKey: key})
	if err != nil {
		r.t.Fatal(err)
	}
	b, err = wire.AppendHeaderFrame(b, ch, 60, size, &wire.Properties{})
	if err != nil {
		r.t.Fatal(err)
	}
	r.out = b
	if _, err := r.c.Write(b); err != nil {
		r.t.Fatalf("sending a content header: %v", err)
	}
}

// expect reads frames until a method frame on ch and returns its method;
// heartbeats are skipped.
func (r *rawConn) expect(ch uint16) wire.Method {
	r.t.Helper()
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			r.t.Fatalf("reading a frame: %v", err)
		}
		if f.Type != wire.FrameMethod {
			continue
		}
		m, err := wire.DecodeMethod(f.Payload)
		if err != nil {
			r.t.Fatal(err)
		}
		if f.Channel != ch {
			if cl, ok := m.(*wire.ConnectionClose); ok {
				r.t.Fatalf("connection closed: %d %s", cl.ReplyCode, cl.ReplyText)
			}
			continue
		}
		return m
	}
}

// openChannel opens channel ch.
func (r *rawConn) openChannel(ch uint16) {
	r.t.Helper()
	r.send(ch, &wire.ChannelOpen{})
	if _, ok := r.expect(ch).(*wire.ChannelOpenOk); !ok {
		r.t.Fatalf("channel %d: no channel.open-ok", ch)
	}
}

// alive reports whether the server still answers on the connection: a
// channel.open on a fresh channel gets its open-ok within d (or the
// connection turned out closed).
func (r *rawConn) alive(ch uint16, d time.Duration) error {
	r.c.SetDeadline(time.Now().Add(d))
	defer r.c.SetDeadline(time.Time{})
	b, _ := wire.AppendMethodFrame(nil, ch, &wire.ChannelOpen{})
	if _, err := r.c.Write(b); err != nil {
		return err
	}
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			return err
		}
		if f.Type != wire.FrameMethod {
			continue
		}
		m, err := wire.DecodeMethod(f.Payload)
		if err != nil {
			return err
		}
		switch m := m.(type) {
		case *wire.ChannelOpenOk:
			if f.Channel == ch {
				return nil
			}
		case *wire.ConnectionClose:
			return fmt.Errorf("connection.close %d %s", m.ReplyCode, m.ReplyText)
		}
	}
}
