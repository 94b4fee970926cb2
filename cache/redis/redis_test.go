package redis

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"substrate/internal/testkit"
)

// resp sends one command and reads one reply line.
func resp(t *testing.T, r *bufio.Reader, c net.Conn, args ...string) string {
	t.Helper()
	fmt.Fprintf(c, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(c, "$%d\r\n%s\r\n", len(a), a)
	}
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasPrefix(line, "$") && line != "$-1\r\n" {
		val, _ := r.ReadString('\n')
		return strings.TrimSpace(val)
	}
	return strings.TrimSpace(line)
}

// startOnLoopback starts a server on one free loopback port and stops
// it when the test ends.
func startOnLoopback(t *testing.T) (*Server, string) {
	t.Helper()
	addr := testkit.FreeAddr(t)
	s, err := New(Config{Addrs: []string{addr}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	return s, addr
}

func TestTwoListenersOneKeyspaceAndRealTimeExpiry(t *testing.T) {
	a, b := testkit.FreeAddr(t), testkit.FreeAddr(t)
	s, err := New(Config{Addrs: []string{a, b}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())
	ca, _ := net.Dial("tcp", a)
	cb, _ := net.Dial("tcp", b)
	ra, rb := bufio.NewReader(ca), bufio.NewReader(cb)
	if got := resp(t, ra, ca, "SET", "k", "v"); got != "+OK" {
		t.Fatalf("SET = %q", got)
	}
	if got := resp(t, rb, cb, "GET", "k"); got != "v" {
		t.Fatalf("GET on the second listener = %q", got)
	}
	if got := resp(t, ra, ca, "SET", "ttl", "x", "PX", "300"); got != "+OK" {
		t.Fatalf("SET PX = %q", got)
	}
	if got := resp(t, ra, ca, "GET", "ttl"); got != "x" {
		t.Fatalf("before expiry: %q", got)
	}
	deadline := time.Now().Add(5 * time.Second)
	for resp(t, ra, ca, "GET", "ttl") != "$-1" {
		if time.Now().After(deadline) {
			t.Fatal("key with a 300 ms TTL still there after 5 s: time does not move")
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.Shutdown(context.Background())
	if _, err := net.DialTimeout("tcp", b, time.Second); err == nil {
		t.Fatal("second listener still accepts after Shutdown")
	}
}
