// Package testkit holds small helpers that tests of several packages share:
// a log sink they can read while servers write it, a socket pair, and
// free ports for the servers they start.
package testkit

import (
	"bytes"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"

	"substrate/internal/freeport"
)

// Buffer is a log sink that the server's goroutines write while a test
// reads it: a bytes.Buffer behind a mutex.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *Buffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *Buffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// SocketPair returns the two ends of a connected unix stream socket: a
// real kernel socket (so a server's raw read and write paths run) whose
// client end can half-close, letting the server answer everything it
// read before it sees EOF.
func SocketPair(t testing.TB) (client *net.UnixConn, server net.Conn) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) net.Conn {
		f := os.NewFile(uintptr(fd), "socketpair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	return conn(fds[0]).(*net.UnixConn), conn(fds[1])
}

// FreePort returns a loopback TCP port for a server the test starts (see
// package freeport: not from the kernel's ephemeral range, never twice in
// one process).
func FreePort(t testing.TB) int {
	t.Helper()
	p, err := freeport.Port()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// FreeAddr is FreePort as "127.0.0.1:port".
func FreeAddr(t testing.TB) string {
	t.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t)))
}
