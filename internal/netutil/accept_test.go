package netutil

import (
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

func TestAcceptBackoffDoublesToOneSecond(t *testing.T) {
	var b AcceptBackoff
	var got []time.Duration
	for i := 0; i < 12; i++ {
		d, first := b.Next()
		if first != (i == 0) {
			t.Fatalf("failure %d: first=%v", i, first)
		}
		got = append(got, d)
	}
	want := []time.Duration{5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000, 1000}
	for i := range want {
		if got[i] != want[i]*time.Millisecond {
			t.Fatalf("delays %v, want %v ms", got, want)
		}
	}
	if n, _ := b.Reset(); n != 12 {
		t.Fatalf("Reset reported %d failures", n)
	}
	if n, _ := b.Reset(); n != 0 {
		t.Fatalf("a second Reset reported %d failures", n)
	}
	if d, first := b.Next(); d != 5*time.Millisecond || !first {
		t.Fatalf("after Reset: %v %v", d, first)
	}
}

func TestTemporaryAccept(t *testing.T) {
	emfile := &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	for _, err := range []error{emfile, syscall.ENFILE, syscall.ENOBUFS} {
		if !TemporaryAccept(err) {
			t.Errorf("%v is not temporary", err)
		}
	}
	for _, err := range []error{net.ErrClosed, syscall.EBADF} {
		if TemporaryAccept(err) {
			t.Errorf("%v is temporary", err)
		}
	}
}
