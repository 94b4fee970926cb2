package logging

import (
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"substrate/internal/testkit"
)

func testLimiter(burst int, period time.Duration) (*Limiter, *testkit.Buffer, *time.Time) {
	var buf testkit.Buffer
	l := NewLimiter(New(&buf, slog.LevelInfo), "amqp", burst, period)
	now := time.Unix(1000, 0)
	l.now = func() time.Time { return now }
	return l, &buf, &now
}

func countLines(out, substr string) int {
	n := 0
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, substr) {
			n++
		}
	}
	return n
}

func TestLimiterPerPeerBudgetAndReport(t *testing.T) {
	l, buf, now := testLimiter(3, time.Second)
	for i := 0; i < 100; i++ {
		l.Log("10.0.0.1", slog.LevelInfo, "amqp: connection opened", "i", i)
	}
	// A flood from one peer does not take the budget of another.
	l.Log("10.0.0.2", slog.LevelWarn, "amqp: login refused", "user", "bob")
	out := buf.String()
	if n := countLines(out, "connection opened"); n != 3 {
		t.Fatalf("peer 1 wrote %d lines, want 3:\n%s", n, out)
	}
	if !strings.Contains(out, "login refused") {
		t.Fatalf("peer 2's line was suppressed by peer 1's flood:\n%s", out)
	}
	*now = now.Add(time.Second)
	l.Log("10.0.0.1", slog.LevelInfo, "amqp: connection opened", "i", "next")
	out = buf.String()
	want := `level=INFO msg="amqp: log lines suppressed" peer=10.0.0.1 count=97 period=1s`
	if !strings.Contains(out, want) {
		t.Fatalf("no report %q:\n%s", want, out)
	}
	if countLines(out, "suppressed") != 1 {
		t.Fatalf("want exactly one report (peer 2 lost nothing):\n%s", out)
	}
	if !strings.Contains(out, "i=next") {
		t.Fatalf("the new period's line is missing:\n%s", out)
	}
}

func TestLimiterReportHasSeverestDroppedLevel(t *testing.T) {
	l, buf, now := testLimiter(1, time.Second)
	l.Log("p", slog.LevelInfo, "first")
	l.Log("p", slog.LevelInfo, "routine")
	l.Log("p", slog.LevelWarn, "worse")
	l.Log("p", slog.LevelInfo, "routine")
	*now = now.Add(2 * time.Second)
	l.Log("q", slog.LevelInfo, "other peer") // the sweep reports p
	if want := `level=WARN msg="amqp: log lines suppressed" peer=p count=3`; !strings.Contains(buf.String(), want) {
		t.Fatalf("no %q:\n%s", want, buf.String())
	}
	// A routine flood reports at its own level.
	l.Log("r", slog.LevelInfo, "a")
	l.Log("r", slog.LevelInfo, "b")
	*now = now.Add(2 * time.Second)
	l.Log("r", slog.LevelInfo, "c")
	if want := `level=INFO msg="amqp: log lines suppressed" peer=r count=1`; !strings.Contains(buf.String(), want) {
		t.Fatalf("no %q:\n%s", want, buf.String())
	}
}

func TestLimiterBoundedKeys(t *testing.T) {
	l, buf, now := testLimiter(1, time.Second)
	l.maxKeys = 8
	for i := 0; i < 10000; i++ {
		l.Log(fmt.Sprintf("10.1.%d.%d", i/256, i%256), slog.LevelInfo, "line")
	}
	if k := l.Keys(); k > 8 {
		t.Fatalf("tracks %d keys, bound is 8", k)
	}
	// 8 peers got their line, the rest share one bucket with budget 1.
	if n := countLines(buf.String(), "msg=line"); n != 9 {
		t.Fatalf("wrote %d lines, want 9", n)
	}
	*now = now.Add(time.Second)
	l.Log("10.9.9.9", slog.LevelInfo, "line")
	if want := "peer=other count=9991"; !strings.Contains(buf.String(), want) {
		t.Fatalf("no %q:\n%s", want, buf.String())
	}
	// The sweep forgot the old peers: the table holds only the new one.
	if k := l.Keys(); k != 1 {
		t.Fatalf("tracks %d keys after the period, want 1", k)
	}
}

func TestLimiterReportsWithoutFurtherLines(t *testing.T) {
	var buf testkit.Buffer
	l := NewLimiter(New(&buf, slog.LevelInfo), "memcached", 1, 20*time.Millisecond)
	for i := 0; i < 5; i++ {
		l.Log("192.0.2.1", slog.LevelWarn, "refused")
	}
	deadline := time.Now().Add(5 * time.Second)
	want := `msg="memcached: log lines suppressed" peer=192.0.2.1 count=4`
	for !strings.Contains(buf.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("no report %q from the timer:\n%s", want, buf.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if countLines(buf.String(), "suppressed") != 1 {
		t.Fatalf("reported twice:\n%s", buf.String())
	}
}

func TestLimiterBelowLevelCostsNothing(t *testing.T) {
	l, buf, _ := testLimiter(1, time.Second)
	for i := 0; i < 10; i++ {
		l.Log("p", slog.LevelDebug, "debug")
	}
	l.Log("p", slog.LevelInfo, "info")
	if !strings.Contains(buf.String(), "msg=info") || strings.Contains(buf.String(), "debug") {
		t.Fatalf("debug lines used the budget or were written:\n%s", buf.String())
	}
}

func TestPeerKey(t *testing.T) {
	for _, c := range []struct {
		a    net.Addr
		want string
	}{
		{&net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 5672}, "127.0.0.1"},
		{&net.TCPAddr{IP: net.ParseIP("::1"), Port: 1}, "::1"},
		{&net.UDPAddr{IP: net.ParseIP("10.0.0.1"), Port: 11211}, "10.0.0.1"},
		{&net.UnixAddr{Name: "/run/x.sock", Net: "unix"}, "unix"},
	} {
		if got := PeerKey(c.a); got != c.want {
			t.Errorf("PeerKey(%v) = %q, want %q", c.a, got, c.want)
		}
	}
	if got := PeerKeyString("[::1]:5672"); got != "::1" {
		t.Errorf("PeerKeyString = %q", got)
	}
}
