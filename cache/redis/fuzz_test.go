package redis

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"substrate/internal/faults"
)

func respArray(args ...string) string {
	var b strings.Builder
	b.WriteString("*" + itoa(len(args)) + "\r\n")
	for _, a := range args {
		b.WriteString("$" + itoa(len(a)) + "\r\n" + a + "\r\n")
	}
	return b.String()
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var d []byte
	for ; n > 0; n /= 10 {
		d = append([]byte{byte('0' + n%10)}, d...)
	}
	return string(d)
}

// FuzzConn: arbitrary RESP bytes from one client, served by miniredis
// behind respConn and substrate's guard. An uncontained panic ends the
// fuzzing process (crashers: "*0\r\n" and a bulk length of 2^63-1, see
// resp.go). A panic inside a miniredis command is contained by guard
// (miniredis is a third-party test double; its bugs are not ours to fix),
// but the endpoint must stay usable: the client's connection ends within
// 10 s of its EOF, a new client then gets PONG, and Shutdown completes
// (crasher: KEYS with a non-UTF-8 pattern left miniredis's lock held,
// see releaseAfterPanic).
func FuzzConn(f *testing.F) {
	for _, s := range []string{
		respArray("SET", "k", "v", "EX", "10") + respArray("GET", "k") + respArray("TTL", "k") + respArray("DEL", "k"),
		respArray("HSET", "h", "f", "v") + respArray("HGETALL", "h") + respArray("LPUSH", "l", "a", "b") + respArray("LRANGE", "l", "0", "-1"),
		respArray("ZADD", "z", "1", "a", "2.5", "b") + respArray("ZRANGEBYSCORE", "z", "-inf", "+inf", "WITHSCORES"),
		respArray("MULTI") + respArray("INCR", "n") + respArray("EXEC") + respArray("WATCH", "n") + respArray("DISCARD"),
		respArray("SUBSCRIBE", "c") + respArray("PING") + respArray("UNSUBSCRIBE"),
		respArray("SCAN", "0", "MATCH", "*", "COUNT", "10") + respArray("KEYS", "*") + respArray("FLUSHALL"),
		respArray("CLIENT", "SETNAME", "tooz") + respArray("INFO") + respArray("SELECT", "1") + respArray("QUIT"),
		"PING\r\nSET a b\r\nGET a\r\n",
		"*-1\r\n*1\r\n$-1\r\n*2\r\n$3\r\nGET\r\n$99999999999\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := New(Config{Addrs: []string{"127.0.0.1:0"}})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		shut := false
		defer func() {
			if !shut {
				go s.Shutdown(context.Background()) // a failed check: do not wait for it
			}
		}()
		before := faults.Count(faults.Redis)
		exchange := func(data []byte) ([]byte, bool) {
			fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			conn := func(fd int) net.Conn {
				file := os.NewFile(uintptr(fd), "socketpair")
				defer file.Close()
				c, err := net.FileConn(file)
				if err != nil {
					t.Fatal(err)
				}
				return c
			}
			cl, sv := conn(fds[0]).(*net.UnixConn), conn(fds[1])
			defer cl.Close()
			s.serve(sv)
			read := make(chan struct{})
			var out bytes.Buffer
			go func() {
				defer close(read)
				io.Copy(&out, cl)
			}()
			go func() {
				cl.Write(data)
				cl.CloseWrite()
			}()
			select {
			case <-read:
				return out.Bytes(), true
			case <-time.After(10 * time.Second):
				return nil, false
			}
		}
		if _, ok := exchange(data); !ok {
			t.Fatalf("connection still served 10 s after the client's EOF; input %q", data)
		}
		if n := faults.Count(faults.Redis) - before; n != 0 {
			t.Logf("%d panics contained in miniredis serving %q", n, data)
		}
		if out, ok := exchange([]byte(respArray("PING"))); !ok || string(out) != "+PONG\r\n" {
			t.Fatalf("after %q a new client gets %q (answered: %v)", data, out, ok)
		}
		done := make(chan struct{})
		go func() {
			s.Shutdown(context.Background())
			close(done)
		}()
		select {
		case <-done:
			shut = true
		case <-time.After(10 * time.Second):
			t.Fatalf("Shutdown still waiting 10 s after %q", data)
		}
	})
}

// TestCrashersOverTCP: the requests that crashed the process through
// miniredis are handled on the real listener: an empty command is
// ignored, an oversized bulk length closes only that connection.
func TestCrashersOverTCP(t *testing.T) {
	_, addr := startOnLoopback(t)
	exchange := func(req string) string {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, req)
		c.(*net.TCPConn).CloseWrite()
		b, err := io.ReadAll(c)
		if err != nil {
			t.Fatalf("%q: %v", req, err)
		}
		return string(b)
	}
	for req, want := range map[string]string{
		"*0\r\n*-1\r\n" + respArray("PING"):                               "+PONG\r\n",
		"*1\r\n$9223372036854775807\r\n":                                  "",
		respArray("SET", "k", "v") + "*2\r\n$3\r\nGET\r\n$4000000000\r\n": "+OK\r\n",
	} {
		if got := exchange(req); got != want {
			t.Errorf("%q: got %q, want %q", req, got, want)
		}
	}
	if got := exchange(respArray("GET", "k")); got != "$1\r\nv\r\n" {
		t.Errorf("after the crashers: GET k = %q", got)
	}
}
