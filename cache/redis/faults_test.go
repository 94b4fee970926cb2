package redis

import (
	"bufio"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2/server"

	"substrate/internal/faults"
)

// TestPanicClosesOnlyThatClient: a command that panics, at the injection
// site or inside a command's handler, answers that client with an error
// and closes it; the process and other clients go on.
func TestPanicClosesOnlyThatClient(t *testing.T) {
	s, addr := startOnLoopback(t)
	// A handler that panics, as a miniredis bug would.
	if err := s.m.Server().Register("SUBSTRATEPANIC", func(*server.Peer, string, []string) { panic("handler bug") }); err != nil {
		t.Fatal(err)
	}
	defer faults.Arm(SiteCommand, "boom")()

	bystander, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer bystander.Close()
	br := bufio.NewReader(bystander)
	for _, cmd := range [][]string{{"SET", "boom", "v"}, {"SUBSTRATEPANIC"}} {
		before := faults.Count(faults.Redis)
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		r := bufio.NewReader(c)
		if got := resp(t, r, c, cmd...); !strings.HasPrefix(got, "-ERR substrate: internal error") {
			t.Errorf("%v: reply %q", cmd, got)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if rest, err := io.ReadAll(r); err != nil || len(rest) != 0 {
			t.Errorf("%v: not closed: %q %v", cmd, rest, err)
		}
		c.Close()
		if got := faults.Count(faults.Redis) - before; got != 1 {
			t.Errorf("%v: redis panics counted %d, want 1", cmd, got)
		}
		if got := resp(t, br, bystander, "SET", "k", "v"); got != "+OK" {
			t.Fatalf("bystander after %v: %q", cmd, got)
		}
		if got := resp(t, br, bystander, "GET", "k"); got != "v" {
			t.Fatalf("bystander after %v: %q", cmd, got)
		}
	}
}
